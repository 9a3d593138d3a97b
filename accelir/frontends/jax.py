"""The JAX frontend: ``jax.make_jaxpr`` of a jax callable, turned into an accelir Graph.

Each jaxpr equation is mapped by one rule in :mod:`accelir.frontends.jax_rules` (gather
and scatter in :mod:`accelir.frontends.jax_indexing`).  Calls (``jit``, ``custom_jvp_call``,
``custom_vjp_call``, ``remat``, ``closed_call``) are inlined; ``cond``, ``while`` and
``scan`` become IR nodes with closed regions.  Literals and closed-over arrays become
constants.  Pytree inputs are flattened and the output structure is kept in
``graph.meta["signature"]``, so a compiled graph returns what the function returns.

Every node carries its provenance in ``node.meta``: ``origin`` (the jax primitive),
``source`` (``file.py:LINE`` of the user's code) and ``module`` (the jax name stack,
which is the flax module path).
"""

from __future__ import annotations

import ast
import functools
import gc
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .. import dims as D
from ..errors import AccelirError, UnsupportedOpError, VerificationError
from ..ir import Builder, DType, Graph, TensorType, Value
from ..ops import registry

__all__ = ["capture_jax", "JaxSignature", "Unsupported", "EqnContext", "static_value", "to_dim", "to_dims"]


class Unsupported(Exception):
    """Raised by a rule for a form of a primitive it cannot map; collected, then reported at once."""


@dataclass(frozen=True)
class JaxSignature:
    """How to flatten a call's pytree arguments into graph inputs and rebuild its output pytree.

    ``keep`` marks the leaves that are graph inputs (frozen parameters are not: the graph
    holds their captured values); ``dtypes`` are the graph inputs' dtypes, which python
    scalars among the arguments take, as jax would give them."""

    in_tree: Any
    keep: tuple[bool, ...]
    out_tree: Any
    dtypes: tuple[np.dtype, ...] = ()

    def flatten(self, *args: Any, **kwargs: Any) -> list:
        import jax
        leaves, tree = jax.tree_util.tree_flatten((args, kwargs))
        if tree != self.in_tree:
            raise TypeError(f"arguments do not match the captured structure: got {tree}, captured {self.in_tree}")
        flat = [leaf for leaf, k in zip(leaves, self.keep) if k]
        return [np.asarray(x, dtype=dt) if isinstance(x, (bool, int, float)) else x
                for x, dt in zip(flat, self.dtypes)] if self.dtypes else flat

    def unflatten(self, flat_outputs: list) -> Any:
        import jax
        return jax.tree_util.tree_unflatten(self.out_tree, list(flat_outputs))


# ----- dtypes, dims and provenance ---------------------------------------------------

@functools.lru_cache(maxsize=None)
def _dtype(dt: Any) -> DType:
    try:
        return DType.from_numpy(dt)
    except TypeError:
        raise Unsupported(f"dtype {np.dtype(dt).name} has no accelir DType") from None


_DIM_CALLS = {"floordiv": ast.FloorDiv, "mod": ast.Mod}


def _is_zero(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value == 0


def _dim_ast(node: ast.AST) -> ast.AST:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _DIM_CALLS \
            and len(node.args) == 2:
        return ast.BinOp(_dim_ast(node.args[0]), _DIM_CALLS[node.func.id](), _dim_ast(node.args[1]))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "max" \
            and len(node.args) == 2 and any(_is_zero(a) for a in node.args):
        # jax clamps computed sizes at 0 (e.g. a conv's output); in a run where every dim is
        # valid the other operand is already >= 0
        return _dim_ast(node.args[1] if _is_zero(node.args[0]) else node.args[0])
    if isinstance(node, ast.Call):
        raise Unsupported(f"symbolic dim operation {ast.unparse(node)!r} has no accelir form")
    for name, value in ast.iter_fields(node):
        if isinstance(value, ast.AST):
            setattr(node, name, _dim_ast(value))
    return node


@functools.lru_cache(maxsize=4096)
def _symbolic_dim(text: str) -> int | str:
    tree = _dim_ast(ast.parse(text, mode="eval"))
    return D.canonical(ast.unparse(tree))


def to_dim(d: Any) -> int | str:
    """An accelir dim from a jax dim (an int or a symbolic ``_DimExpr``)."""
    if isinstance(d, (int, np.integer)):
        return int(d)
    return _symbolic_dim(str(d))


def to_dims(shape: Sequence[Any]) -> tuple:
    return tuple(to_dim(d) for d in shape)


def aval_type(aval: Any) -> TensorType:
    return TensorType(_dtype(aval.dtype), to_dims(aval.shape))


_UNKNOWN_DIM = "unknown_dim"


def _loose_type(aval: Any) -> TensorType:
    """aval_type, with a placeholder for a dim or dtype accelir cannot spell (types to check against and
    stand-ins for the results of unsupported equations)."""
    try:
        dt = _dtype(aval.dtype)
    except Unsupported:
        dt = DType.f32
    dims = []
    for d in aval.shape:
        try:
            dims.append(to_dim(d))
        except Unsupported:
            dims.append(_UNKNOWN_DIM)
    return TensorType(dt, tuple(dims))


@functools.lru_cache(maxsize=None)
def _library_dirs() -> tuple[str, ...]:
    dirs = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
    try:
        import flax
        dirs.append(os.path.dirname(os.path.abspath(flax.__file__)))
    except ImportError:
        pass
    return tuple(d + os.sep for d in dirs)


@functools.lru_cache(maxsize=4096)
def _is_user_file(filename: str) -> bool:
    from jax._src import source_info_util
    # flax and accelir frames say where the library is, not where the model is
    return source_info_util.is_user_filename(filename) and not filename.startswith(_library_dirs())


@functools.lru_cache(maxsize=65536)
def _frame_text(code: Any, lasti: int) -> str:
    from jax._src import source_info_util
    frame = source_info_util.raw_frame_to_frame(code, lasti)
    return f"{os.path.basename(frame.file_name)}:{frame.start_line}"


def _source_line(traceback: Any) -> str | None:
    if traceback is None:
        return None
    codes, lastis = traceback.raw_frames()
    for code, lasti in zip(codes, lastis):
        if _is_user_file(code.co_filename):
            return _frame_text(code, lasti)
    return None


def _short_params(params: dict) -> str:
    parts = []
    for k, v in params.items():
        if hasattr(v, "eqns") or hasattr(v, "jaxpr") or callable(v):
            continue
        text = repr(v)
        parts.append(f"{k}={text if len(text) <= 80 else text[:77] + '...'}")
    return ", ".join(parts)


def static_value(v: Value, limit: int = 64) -> np.ndarray | None:
    """The value of ``v`` when it is computed from constants alone (small results only), else None."""
    arr = v.const_value
    if arr is not None:
        return arr
    node = v.producer
    if node is None or node.regions or not v.type.is_static or v.type.numel > limit:
        return None
    opdef = registry.get(node.op)
    if not opdef.pure or opdef.has_regions:
        return None
    args = []
    for x in node.inputs:
        a = static_value(x, limit)
        if a is None:
            return None
        args.append(a)
    try:
        return np.asarray(opdef.reference(args, dict(node.attrs), ())[v.index])
    except Exception:  # a reference that rejects these operands: the value is just not known here
        return None


# ----- the converter -----------------------------------------------------------------

@dataclass
class _Problem:
    primitive: str
    params: str
    source: str | None
    reason: str

    def __str__(self) -> str:
        where = f" at {self.source}" if self.source else ""
        why = f": {self.reason}" if self.reason else ""
        return f"  {self.primitive}{where} [{self.params}]{why}"


class EqnContext:
    """What a rule sees: a builder carrying the equation's provenance, its output types and helpers."""

    __slots__ = ("conv", "eqn", "b", "out_types")

    def __init__(self, conv: _Converter, eqn: Any, b: Builder, out_types: list[TensorType]):
        self.conv = conv
        self.eqn = eqn
        self.b = b
        self.out_types = out_types

    def op(self, op: str, *inputs: Value, **attrs: Any) -> Value:
        return self.b.op(op, *inputs, **attrs)

    def ops(self, op: str, *inputs: Value, **attrs: Any) -> tuple[Value, ...]:
        return self.b.ops(op, *inputs, **attrs)

    def const(self, value: Any, dtype: DType | None = None) -> Value:
        return self.conv.constant(np.asarray(value, dtype=dtype.numpy if dtype else None), self.b)

    def scalar(self, value: Any, like: Value | DType) -> Value:
        dt = like if isinstance(like, DType) else like.dtype
        return self.conv.constant(np.asarray(value, dtype=dt.numpy), self.b)

    def region(self, closed_jaxpr: Any, input_types: Sequence[TensorType], name: str,
               closure: Sequence[Value] = ()) -> Graph:
        return self.conv.region(closed_jaxpr, input_types, name, closure)

    def inline(self, jaxpr: Any, consts: Sequence[Any], args: Sequence[Value]) -> list[Value]:
        return self.conv.inline(jaxpr, consts, args)


Rule = Callable[..., Any]


class _Converter:
    """Walks one jaxpr into one graph; regions get a converter of their own."""

    def __init__(self, graph: Graph, problems: list[_Problem], rules: dict[str, Rule]):
        self.graph = graph
        self.problems = problems
        self.rules = rules
        self._literals: dict[tuple, Value] = {}
        self._module_names: dict[Any, str] = {}
        self._stack: Any = None
        self._source: str | None = None

    # values
    def constant(self, arr: np.ndarray, b: Builder | None = None, name: str = "c") -> Value:
        if arr.ndim == 0 or arr.size <= 1:
            key = (arr.dtype.str, arr.shape, arr.tobytes())
            hit = self._literals.get(key)
            if hit is not None:
                return hit
        if b is not None:
            v = self.graph.const(arr, name=name, before=b.before, meta=b.meta)
            b.created.append(v.producer)
        else:
            v = self.graph.const(arr, name=name)
        if arr.ndim == 0 or arr.size <= 1:
            self._literals[key] = v
        return v

    def _literal(self, lit: Any) -> Value:
        arr = np.asarray(lit.val, dtype=lit.aval.dtype)
        _dtype(arr.dtype)
        return self.constant(arr)

    def _read(self, env: dict, atom: Any) -> Value:
        from jax._src import core
        if isinstance(atom, core.Literal):
            return self._literal(atom)
        return env[atom]

    def _module(self, stack: Any) -> str:
        text = self._module_names.get(stack)
        if text is None:
            text = self._module_names[stack] = str(stack)
        return text

    # walking
    @property
    def caller(self) -> tuple[Any, str | None]:
        """(name stack, source line) of the equation being converted, for the jaxprs it calls."""
        return self._stack, self._source

    def run(self, jaxpr: Any, consts: Sequence[Any], args: Sequence[Value],
            caller: tuple[Any, str | None] = (None, None)) -> list[Value]:
        """Convert ``jaxpr`` with its constvars bound to ``consts`` (arrays or Values) and invars to ``args``;
        equations of a called jaxpr nest under the ``caller``'s name stack and fall back to its source line."""
        prefix, source = caller
        # closed-over arrays become constants when first read, so unused ones leave no node
        pending = {var: c for var, c in zip(jaxpr.constvars, consts)}
        env = _LazyEnv(pending, self)
        for var, a in zip(jaxpr.invars, args):
            env[var] = a
        for eqn in _live_equations(jaxpr):
            stack = eqn.source_info.name_stack if prefix is None else prefix + eqn.source_info.name_stack
            ins = [self._read(env, a) for a in eqn.invars]
            outs = self._equation(eqn, ins, stack, source)
            for var, v in zip(eqn.outvars, outs):
                env[var] = v
        return [self._read(env, a) for a in jaxpr.outvars]

    def _equation(self, eqn: Any, ins: list[Value], stack: Any, caller_source: str | None) -> list[Value]:
        name = eqn.primitive.name
        meta: dict[str, Any] = {"origin": name}
        module = self._module(stack)
        if module:
            meta["module"] = module
        # jax's own jitted helpers (jnp.take, _where, ...) carry no user frame: use the caller's line
        src = _source_line(eqn.source_info.traceback) or caller_source
        if src:
            meta["source"] = src
        out_types = [_loose_type(v.aval) for v in eqn.outvars]
        try:
            rule = self.rules.get(name)
            if rule is None:
                raise Unsupported("")
            self._stack, self._source = stack, src
            cx = EqnContext(self, eqn, Builder(self.graph, None, meta), out_types)
            outs = rule(cx, *ins, **eqn.params)
        except (Unsupported, VerificationError) as e:
            # VerificationError: an IR type rule refused the operands (a dtype or form the op lacks)
            self.problems.append(_Problem(name, _short_params(eqn.params), src, str(e)))
            return [Value(t) for t in out_types]
        if isinstance(outs, Value):
            outs = [outs]
        outs = list(outs)
        self._check(name, meta, outs, out_types)
        return outs

    @staticmethod
    def _check(name: str, meta: dict, outs: list[Value], want: list[TensorType]) -> None:
        bad = len(outs) != len(want)
        for v, t in zip(outs, want):
            got = v.type
            if got.dtype != t.dtype or got.rank != t.rank or any(
                    type(a) is int and type(b) is int and a != b for a, b in zip(got.shape, t.shape)):
                bad = True
        if bad:
            where = "; ".join(str(meta[k]) for k in ("module", "source") if k in meta)
            raise VerificationError(
                f"jax frontend: the rule for {name!r} made {[str(v.type) for v in outs]} where jax has "
                f"{[str(t) for t in want]} [{where}]; this is a frontend bug, please report it")

    # calls and regions
    def inline(self, jaxpr: Any, consts: Sequence[Any], args: Sequence[Value]) -> list[Value]:
        """Convert a called jaxpr in place, its name stack under the calling equation's."""
        return self.run(jaxpr, consts, args, self.caller)

    def region(self, closed_jaxpr: Any, input_types: Sequence[TensorType], name: str,
               closure: Sequence[Value]) -> Graph:
        """A closed region graph for ``closed_jaxpr``: its leading invars read ``closure`` values
        (constants, copied into the region), the rest are region inputs of ``input_types``."""
        jaxpr, consts = _open(closed_jaxpr)
        region = Graph(name)
        sub = _Converter(region, self.problems, self.rules)
        bound = []
        for v in closure:
            arr = v.const_value
            bound.append(sub.constant(arr, name="const"))
        args = bound + [region.add_input(t) for t in input_types]
        region.set_outputs(sub.run(jaxpr, consts, args, self.caller))
        return region


class _LazyEnv(dict):
    """jaxpr var -> Value; constvars turn into constant nodes on first read."""

    def __init__(self, pending: dict, conv: _Converter):
        super().__init__()
        self.pending = pending
        self.conv = conv

    def __missing__(self, var: Any) -> Value:
        c = self.pending.pop(var)
        v = c if isinstance(c, Value) else self.conv.constant(np.asarray(c), name="const")
        self[var] = v
        return v


def _live_equations(jaxpr: Any) -> list:
    """The equations whose results reach an output (or that have effects), in order."""
    from jax._src import core
    live = {v for v in jaxpr.outvars if not isinstance(v, core.Literal)}
    keep = []
    for eqn in reversed(jaxpr.eqns):
        if eqn.effects or any(v in live for v in eqn.outvars):
            keep.append(eqn)
            live.update(v for v in eqn.invars if not isinstance(v, core.Literal))
    keep.reverse()
    return keep


def _open(j: Any) -> tuple[Any, list]:
    """(jaxpr, consts) of a ClosedJaxpr or an open Jaxpr."""
    if hasattr(j, "consts"):
        return j.jaxpr, list(j.consts)
    return j, []


# ----- entry point -------------------------------------------------------------------

@functools.lru_cache(maxsize=256)
def _symbolic_shape(spec: str) -> tuple:
    # one scope for every capture: the same spec gives the same dim objects, so jax's trace
    # caches of inner jitted functions hit as they do for a plain make_jaxpr
    import jax
    return tuple(jax.export.symbolic_shape(spec, scope=_scope()))


@functools.lru_cache(maxsize=1)
def _scope() -> Any:
    import jax
    return jax.export.SymbolicScope()


def _abstract_args(args: tuple, symbolic_shapes: Sequence[Any] | None) -> tuple:
    """Replace the arrays that have a shape spec by ShapeDtypeStructs with symbolic dims."""
    if symbolic_shapes is None:
        return args
    import jax
    if len(symbolic_shapes) != len(args):
        raise ValueError(f"symbolic_shapes needs one entry per positional argument ({len(args)}), "
                         f"got {len(symbolic_shapes)}")
    def leaf(spec: Any, arr: Any) -> Any:
        if spec is None:
            return arr
        shape = _symbolic_shape(spec)
        if len(shape) != np.ndim(arr):
            raise ValueError(f"shape spec {spec!r} has rank {len(shape)}, the example array has shape "
                             f"{np.shape(arr)}")
        return jax.ShapeDtypeStruct(shape, arr.dtype)

    def is_spec(s: Any) -> bool:
        return s is None or isinstance(s, str)

    return tuple(jax.tree_util.tree_map(leaf, spec, arg, is_leaf=is_spec) if spec is not None else arg
                 for spec, arg in zip(symbolic_shapes, args))


def _leaf_names(tree: Any) -> list[str]:
    import jax
    out = []
    for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
        out.append(_path_name(path))
    return out


def _path_name(path: Sequence[Any]) -> str:
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return ".".join(parts)


def capture_jax(fn: Callable, example_args: Sequence[Any], *, example_kwargs: dict | None = None,
                params_as_constants: bool = False, symbolic_shapes: Sequence[Any] | None = None) -> Graph:
    """Capture ``fn(*example_args, **example_kwargs)`` as an accelir Graph.

    ``params_as_constants`` freezes the leaves of the first argument (a parameter
    pytree) as named constants instead of graph inputs, which lets constant folding
    see them; the graph then keeps the captured values whatever params a later call
    passes.  ``symbolic_shapes`` has one entry per positional argument: None (static),
    a ``jax.export.symbolic_shape`` spec string such as ``"batch, 128"``, or a pytree of
    such strings matching the argument; dims named alike are the same symbol.
    """
    import jax
    from .jax_rules import RULES

    args = tuple(example_args)
    kwargs = dict(example_kwargs or {})
    traced_args = _abstract_args(args, symbolic_shapes)
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*traced_args, **kwargs)
    leaves, in_tree = jax.tree_util.tree_flatten((args, kwargs))
    names = _leaf_names((args, kwargs))
    n_params = len(jax.tree_util.tree_leaves(args[0])) if params_as_constants and args else 0
    keep = tuple(i >= n_params for i in range(len(leaves)))
    jaxpr = closed.jaxpr
    if len(jaxpr.invars) != len(leaves):
        raise AccelirError(f"jax traced {len(jaxpr.invars)} inputs but the arguments have {len(leaves)} leaves")

    graph = Graph(_graph_name(fn))
    problems: list[_Problem] = []
    conv = _Converter(graph, problems, RULES)
    # the conversion only allocates objects that stay alive; cyclic GC passes over jax's large
    # heap would cost more than the conversion itself
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        inputs: list[Value] = []
        for i, (var, leaf, name) in enumerate(zip(jaxpr.invars, leaves, names)):
            pretty = _input_name(name)
            if keep[i]:
                try:
                    t = aval_type(var.aval)
                except Unsupported as e:
                    raise UnsupportedOpError(f"jax frontend: input {pretty!r} ({var.aval}): {e}") from None
                inputs.append(graph.add_input(t, pretty))
            else:
                inputs.append(conv.constant(np.asarray(leaf), name=pretty))
        outputs = conv.run(jaxpr, closed.consts, inputs)
    finally:
        if gc_was_enabled:
            gc.enable()
    if problems:
        ops = sorted({p.primitive for p in problems})
        raise UnsupportedOpError(
            f"jax frontend: {len(problems)} equation(s) of {graph.name!r} cannot be mapped "
            f"(unsupported: {', '.join(ops)}):\n" + "\n".join(str(p) for p in problems)
            + "\nRewrite these parts with supported jax.numpy / lax operations, or add a rule in "
              "accelir/frontends/jax_rules.py.", ops)
    graph.set_outputs(outputs)
    graph.meta["frontend"] = "jax"
    graph.meta["signature"] = JaxSignature(in_tree, keep, jax.tree_util.tree_structure(out_shape),
                                           tuple(v.type.dtype.numpy for v in graph.inputs))
    return graph


def _graph_name(fn: Any) -> str:
    name = re.sub(r"\W", "", getattr(fn, "__name__", None) or type(fn).__name__)
    return name if name and not name[0].isdigit() else f"fn_{name}"


def _input_name(path: str) -> str:
    # drop the "(args, kwargs)" wrapper: "0.1.w" -> "arg1.w", "1.x" -> "x"
    head, _, rest = path.partition(".")
    if head == "0":
        idx, _, tail = rest.partition(".")
        return f"arg{idx}" + (f".{tail}" if tail else "")
    return rest
