"""Lowering to XLA through JAX: Graph -> a function over ``jax.numpy`` / ``jax.lax``.

Each op has one rule in ``JAX_RULES`` (filled by ``register_lowering``), as jax
registers one lowering per primitive.  A rule is ``rule(ctx, *arrays, **attrs)`` and
returns an array or a list of arrays; ``ctx`` gives the node, its regions as
callables and the graph's constants.

* ``to_jax(graph)`` -> a :class:`JaxFunction`: call it on arrays in graph input order
  to get a list of jax arrays; ``.apply(params, *inputs)`` is the pure, traceable form.
* :class:`JaxModule` jit-compiles it and takes numpy arrays, jax arrays or torch
  tensors (CPU tensors as numpy views, others through DLPack: no copies on the same
  device); results come back in the caller's framework.
* ``stablehlo`` / ``hlo`` give the module text, ``export_jax`` / ``load_exported`` a
  serialized ``jax.export`` artifact (symbolic dims become jax shape polymorphism).

Symbolic dims are bound at trace time to the dims of the inputs, so shape-valued
attributes (a reshape target over ``batch``) follow the traced shapes.  f16 / bf16 math
computes in f32 and rounds once, like the reference interpreter.  Graphs with i64 /
f64 values run inside ``jax.enable_x64``; the global setting is never changed.
Large constants are passed to the compiled function as arguments instead of being
baked into the module, so compiling a model with big weights stays fast; convolution
weights are the exception (below).

Convolutions run channels-last, as XLA's CPU backend runs them best (the IR is
channels-first): values may be held transposed (:class:`Permuted`), layout-aware rules
work on them in that layout and ``transpose`` only relabels, so a conv chain has no
transposes between its convs.  Convolution weights are held channels-last and baked
into the module: XLA's CPU conv kernels pack constant weights once, at compile time,
where weights passed as arguments are packed on every call.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from accelir import dims
from accelir.errors import AccelirError, LoweringError
from accelir.interpreter import to_numpy
from accelir.ir import DType, Graph, Node, TensorType
from accelir.ops import registry
from accelir.ops.linalg import conv_params, pool_output_dim
from accelir.ops.shape import inverse_perm

__all__ = [
    "JAX_RULES",
    "RuleContext",
    "register_lowering",
    "to_jax",
    "JaxFunction",
    "JaxModule",
    "Permuted",
    "stablehlo",
    "hlo",
    "export_jax",
    "load_exported",
    "x64_scope",
    "jax_device",
    "check_lowerable",
    "PARAM_MIN_ELEMENTS",
]

Rule = Callable[..., Any]

JAX_RULES: dict[str, Rule] = {}
_UPCAST: set[str] = set()
_LAYOUT_AWARE: set[str] = set()

# Constants with more elements than this become arguments of the compiled function;
# smaller ones are inlined so XLA can fold them.
PARAM_MIN_ELEMENTS = 64

_JAX_DTYPES: dict[DType, Any] = {
    DType.f16: jnp.float16,
    DType.bf16: jnp.bfloat16,
    DType.f32: jnp.float32,
    DType.f64: jnp.float64,
    DType.i8: jnp.int8,
    DType.i16: jnp.int16,
    DType.i32: jnp.int32,
    DType.i64: jnp.int64,
    DType.u8: jnp.uint8,
    DType.bool: jnp.bool_,
}
_WIDE = (DType.i64, DType.f64)
# composites lowered through their decomposition: gathers at computed indices, no jax.image / lax counterpart
_DECOMPOSED = ("grid_sample", "roi_align", "deform_conv")
_HALF = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))


def register_lowering(op: str, *, upcast: bool = False, layout: bool = False) -> Callable[[Rule], Rule]:
    """Register ``rule(ctx, *arrays, **attrs)`` as the lowering of ``op``.

    ``upcast=True`` hands f16 / bf16 inputs to the rule as f32; the results are
    rounded back to the node's dtypes once.  ``layout=True`` hands the rule values held
    transposed (:class:`Permuted`) as they are; other rules see every input in the
    IR's own layout.  Any rule may return Permuted values.
    """
    def deco(rule: Rule) -> Rule:
        JAX_RULES[op] = rule
        for flag, table in ((upcast, _UPCAST), (layout, _LAYOUT_AWARE)):
            if flag:
                table.add(op)
            else:
                table.discard(op)
        return rule
    return deco


def x64_scope(enabled: bool) -> contextlib.AbstractContextManager:
    """A context with 64-bit jax types when ``enabled``; the global config is untouched."""
    return jax.enable_x64(True) if enabled else contextlib.nullcontext()


# ----- layouts -----------------------------------------------------------------------

class Permuted:
    """A value held transposed: ``data`` is ``jnp.transpose(value, perm)``.

    The IR is channels-first, but XLA's CPU convolutions (and its fused conv chains) run
    channels-last.  So convolutions take and give channels-last data, ``transpose`` only
    relabels, and layout-aware rules (elementwise, pooling, reductions, batch norm,
    concat, fusion bodies) work on the data in whatever layout it is held; other rules
    see the value itself, made by one transpose.  A chain of convs then runs without
    transposes between them.  ``shape`` / ``ndim`` / ``dtype`` are the value's own.
    """

    __slots__ = ("data", "perm")

    def __init__(self, data: Any, perm: tuple[int, ...]):
        self.data = data
        self.perm = perm

    @property
    def dtype(self) -> Any:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape[k] for k in inverse_perm(self.perm))


def _held(data: Any, perm: tuple[int, ...]) -> Any:
    """``data`` as held under ``perm`` (a plain array when perm is the identity)."""
    return data if perm == tuple(range(len(perm))) else Permuted(data, perm)


def _parts(a: Any) -> tuple[Any, tuple[int, ...]]:
    return (a.data, a.perm) if isinstance(a, Permuted) else (a, tuple(range(a.ndim)))


def _moved(data: Any, axes: Sequence[int]) -> Any:
    """``jnp.transpose(data, axes)``; a plain reshape when only unit dims move."""
    kept = [a for a in axes if not (type(data.shape[a]) is int and data.shape[a] == 1)]
    if kept == sorted(kept):
        return jnp.reshape(data, tuple(data.shape[a] for a in axes))
    return jnp.transpose(data, axes)


def _logical(a: Any) -> Any:
    """The value itself, in the IR's layout."""
    return _moved(a.data, inverse_perm(a.perm)) if isinstance(a, Permuted) else a


def _in_layout(a: Any, perm: tuple[int, ...]) -> Any:
    """The data of ``a`` held under ``perm``; a lower-rank operand is first given the leading
    unit dims that broadcasting would give it."""
    data, have = _parts(a)
    if len(have) < len(perm):
        data = jnp.reshape(data, (1,) * (len(perm) - len(have)) + tuple(data.shape))
        have = tuple(range(len(perm)))
    if have == perm:
        return data
    inv = inverse_perm(have)
    return _moved(data, tuple(inv[p] for p in perm))


def _with_data(a: Any, fn: Callable[[Any], Any]) -> Any:
    data, perm = _parts(a)
    return _held(fn(data), perm)


def _physical(t: Sequence[Any], perm: Sequence[int]) -> tuple:
    """A per-axis tuple of the value (window sizes, pads, limits) in the order of its data."""
    return tuple(t[p] for p in perm)


def _channels_last(rank: int) -> tuple[int, ...]:
    return (0, *range(2, rank), 1)


def _kernel_last(rank: int) -> tuple[int, ...]:
    """A conv weight's [O, I, *spatial] as [*spatial, I, O], the layout the channels-last convs read."""
    return (*range(2, rank), 1, 0)


def _broadcasts(a: Any, ref: Any) -> bool:
    """Whether ``a`` is broadcast against the same-or-higher-rank ``ref`` (a bias, a scale)."""
    if a.ndim < ref.ndim:
        return True
    return any(type(d) is int and d == 1 and not (type(r) is int and r == 1) for d, r in zip(a.shape, ref.shape))


def _common_layout(args: Sequence[Any]) -> tuple[int, ...] | None:
    """The layout a pointwise op over ``args`` computes in: that of its transposed operands
    when they agree and every other operand is broadcast against them (re-laying that out
    costs little); else None, and the op computes in the IR's layout."""
    held = [a for a in args if isinstance(a, Permuted)]
    perms = {a.perm for a in held}
    if len(perms) != 1:
        return None
    ref = max(held, key=lambda a: a.ndim)
    if any(a.ndim > ref.ndim or (not isinstance(a, Permuted) and not _broadcasts(a, ref)) for a in args):
        return None
    return ref.perm


def _pointwise(rule: Rule) -> Rule:
    """``rule`` of an op that treats every element alike, run in the common layout of its operands."""
    def layout_rule(ctx: RuleContext, *args: Any, **attrs: Any) -> Any:
        perm = _common_layout(args)
        if perm is None:
            return rule(ctx, *[_logical(a) for a in args], **attrs)
        return _held(rule(ctx, *[_in_layout(a, perm) for a in args], **attrs), perm)
    return layout_rule


# ----- symbolic dims ------------------------------------------------------------------

_DIM_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
            ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}


def _eval_dim(d: Any, bindings: Mapping[str, Any]) -> Any:
    """The value of dim ``d`` with its symbols bound to traced dims.

    Unlike ``accelir.dims.evaluate`` the bound values need not be ints: under shape
    polymorphism they are jax symbolic dims, which support the same arithmetic.
    """
    if type(d) is int:
        return d

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.Name):
            return bindings[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _DIM_OPS:
            return _DIM_OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        raise ValueError(f"not a dimension expression: {d!r}")

    return ev(ast.parse(d, mode="eval").body)


# ----- checking a graph before lowering ----------------------------------------------

def _walk(graph: Graph):
    for node in graph.nodes:
        yield node
        for region in node.regions:
            yield from _walk(region)


def _graphs(graph: Graph) -> list[Graph]:
    out = [graph]
    for node in graph.nodes:
        for region in node.regions:
            out.extend(_graphs(region))
    return out


def _all_types(graph: Graph):
    """Every value's type with the node making it (None for graph inputs); nodes first,
    so an error can name the node that produces an inexpressible dtype."""
    graphs = _graphs(graph)
    for g in graphs:
        for node in g.nodes:
            for o in node.outputs:
                yield o.type, node
    for g in graphs:
        for v in g.inputs:
            yield v.type, None


def check_lowerable(graph: Graph) -> None:
    """Raise a LoweringError naming the first node JAX cannot express, before tracing."""
    missing = [n for n in _walk(graph) if n.op not in JAX_RULES]
    if missing:
        ops = sorted({n.op for n in missing})
        raise LoweringError(
            f"the jax lowering has no rule for {', '.join(ops)} (first: {missing[0].describe()}); "
            "register one with accelir.lowering.jax.register_lowering(op) or rewrite the op into "
            "ops that have one")
    for t, node in _all_types(graph):
        if t.dtype not in _JAX_DTYPES:
            where = node.describe() if node is not None else f"a graph input of type {t}"
            raise LoweringError(f"the jax lowering cannot express dtype {t.dtype} ({where}); cast it to a "
                                "supported dtype first")


def _needs_x64(graph: Graph) -> bool:
    # decompositions index with i64, and their values are not the graph's own
    return any(t.dtype in _WIDE for t, _ in _all_types(graph)) or any(n.op in _DECOMPOSED for n in _walk(graph))


# ----- the lowering ------------------------------------------------------------------

@dataclass
class RuleContext:
    """What a rule may ask about the node it lowers."""

    node: Node
    lowering: _Lowering
    bindings: Mapping[str, Any]

    @property
    def out_types(self) -> tuple[TensorType, ...]:
        return tuple(o.type for o in self.node.outputs)

    def region(self, index: int, *, keep_layout: bool = False) -> Callable[..., list]:
        """Region ``index`` as a function of jax arrays returning a list of arrays;
        ``keep_layout`` lets its outputs come back as Permuted values."""
        graph = self.node.regions[index]
        return functools.partial(self.lowering.run, graph, bindings=self.bindings, keep_layout=keep_layout)

    def constant(self, name: str) -> Any:
        return self.lowering.constant(self.node.graph, name)


def _key(prefix: str, name: str) -> str:
    return f"{prefix}/{name}"


@dataclass
class _Lowering:
    """One trace of a graph: its parameters (arrays or tracers) and graph ids."""

    prefixes: Mapping[int, str]
    params: Mapping[str, Any]
    small: Mapping[str, np.ndarray] = field(default_factory=dict)
    layouts: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def constant(self, graph: Graph, name: str) -> Any:
        key = _key(self.prefixes[id(graph)], name)
        value = self.params[key] if key in self.params else jnp.asarray(self.small[key])
        return Permuted(value, self.layouts[key]) if key in self.layouts else value

    def bind_inputs(self, graph: Graph, args: Sequence[Any], bindings: dict[str, Any]) -> None:
        if len(args) != len(graph.inputs):
            raise LoweringError(f"graph {graph.name!r} takes {len(graph.inputs)} inputs, got {len(args)}")
        for i, (v, a) in enumerate(zip(graph.inputs, args)):
            label = f"graph {graph.name!r} input {i}" + (f" ({v.name})" if v.name else "")
            want = jnp.dtype(_JAX_DTYPES[v.dtype])
            if jnp.dtype(a.dtype) != want or len(a.shape) != v.rank:
                raise LoweringError(f"{label}: expected {v.type}, got {jnp.dtype(a.dtype).name}"
                                    f"[{','.join(str(d) for d in a.shape)}]; convert the input to the captured "
                                    "dtype and rank")
            for k, (d, n) in enumerate(zip(v.shape, a.shape)):
                if type(d) is int:
                    if type(n) is not int or n != d:
                        raise LoweringError(f"{label}: dim {k} is {n}, the graph was captured with {d} ({v.type}); "
                                            "declare it dynamic to vary it")
                elif d.isidentifier():
                    old = bindings.get(d)
                    if old is not None and type(old) is int and type(n) is int and old != n:
                        raise LoweringError(f"{label}: dim {k} ({d}) is {n}, but {d} = {old} elsewhere")
                    bindings.setdefault(d, n)

    def resolve_attrs(self, node: Node, bindings: Mapping[str, Any]) -> dict[str, Any]:
        attrs = dict(node.attrs)
        for k, spec in registry.get(node.op).attrs.items():
            if spec.kind == "dims" and any(type(d) is not int for d in attrs[k]):
                try:
                    attrs[k] = tuple(_eval_dim(d, bindings) for d in attrs[k])
                except KeyError as e:
                    raise LoweringError(f"{node.describe()}: attribute {k}={list(attrs[k])} uses symbolic dim "
                                        f"{e.args[0]!r}, which no input of the graph carries") from None
        return attrs

    def run(self, graph: Graph, *args: Any, bindings: Mapping[str, Any] | None = None,
            keep_layout: bool = False) -> list:
        b = dict(bindings or {})
        self.bind_inputs(graph, args, b)
        env: dict[int, Any] = {id(v): a for v, a in zip(graph.inputs, args)}
        for node in graph.nodes:
            outs = self.lower_node(node, [env[id(v)] for v in node.inputs], b)
            for v, o in zip(node.outputs, outs):
                env[id(v)] = o
        outs = [env[id(v)] for v in graph.outputs]
        return outs if keep_layout else [_logical(o) for o in outs]

    def lower_node(self, node: Node, args: list, bindings: Mapping[str, Any]) -> list:
        rule = JAX_RULES[node.op]
        attrs = self.resolve_attrs(node, bindings)
        if node.op not in _LAYOUT_AWARE:
            args = [_logical(a) for a in args]
        if node.op in _UPCAST:
            args = [_with_data(a, lambda d: d.astype(jnp.float32)) if jnp.dtype(a.dtype) in _HALF else a
                    for a in args]
        ctx = RuleContext(node, self, bindings)
        scope = str(node.meta.get("module") or node.op)
        try:
            with jax.named_scope(scope):
                result = rule(ctx, *args, **attrs)
        except AccelirError:
            raise
        except Exception as e:
            raise LoweringError(f"lowering {node.describe()} to jax failed: {type(e).__name__}: {e}") from e
        outs = list(result) if isinstance(result, (list, tuple)) else [result]
        if len(outs) != len(node.outputs):
            raise LoweringError(f"the jax rule of {node.describe()} gave {len(outs)} results, "
                                f"the node has {len(node.outputs)}")
        fixed = []
        for v, o in zip(node.outputs, outs):
            want = jnp.dtype(_JAX_DTYPES[v.dtype])
            if jnp.dtype(o.dtype) != want:
                o = _with_data(o, lambda d: lax.convert_element_type(d, want))
            static_mismatch = any(type(d) is int and type(n) is int and d != n for d, n in zip(v.shape, o.shape))
            if len(o.shape) != v.rank or static_mismatch:
                raise LoweringError(f"the jax rule of {node.describe()} gave shape {tuple(o.shape)}, the node "
                                    f"says {v.type}")
            fixed.append(o)
        return fixed


_CONVS = ("conv", "fused_conv")


def _weight_layouts(graphs: Sequence[Graph], prefixes: Mapping[int, str]) -> dict[str, tuple[int, ...]]:
    """Constant keys whose every read is a convolution's weight, with the channels-last
    permutation they are best held in (OIHW -> HWIO)."""
    verdict: dict[str, bool] = {}
    ranks: dict[str, int] = {}
    for g in graphs:
        for node in g.nodes:
            if node.op != "constant":
                continue
            key = _key(prefixes[id(g)], node.attrs["name"])
            out = node.outputs[0]
            as_weight = bool(out.uses()) and all(user.op in _CONVS and i == 1 for user, i in out.uses())
            verdict[key] = verdict.get(key, True) and as_weight
            ranks[key] = out.rank
    return {k: _kernel_last(ranks[k]) for k, ok in verdict.items() if ok}


class JaxFunction:
    """A graph as a jax function.  Call it on arrays in graph input order.

    ``apply(params, *inputs)`` is pure and traceable (jit it, export it); ``params``
    maps names to the large constants (``self.params`` holds them as numpy arrays).
    Constants read only as convolution weights are held channels-last (kernel dims,
    input channels, output channels; ``layouts`` maps their names to that permutation)
    and inlined with the small constants, so no call transposes or repacks them.
    """

    def __init__(self, graph: Graph):
        check_lowerable(graph)
        self.graph = graph
        self.needs_x64 = _needs_x64(graph)
        graphs = _graphs(graph)
        self._prefixes = {id(g): str(i) for i, g in enumerate(graphs)}
        self.layouts = _weight_layouts(graphs, self._prefixes)
        self.params: dict[str, np.ndarray] = {}
        self._small: dict[str, np.ndarray] = {}
        for g in graphs:
            for name, arr in g.constants.items():
                key = _key(self._prefixes[id(g)], name)
                if key in self.layouts:
                    self._small[key] = np.transpose(arr, self.layouts[key])
                else:
                    (self.params if arr.size > PARAM_MIN_ELEMENTS else self._small)[key] = arr
        self._device_params: dict[Any, dict[str, Any]] = {}

    def apply(self, params: Mapping[str, Any], *inputs: Any) -> list:
        return _Lowering(self._prefixes, params, self._small, self.layouts).run(self.graph, *inputs)

    def embedded(self, *inputs: Any) -> list:
        """``apply`` with the constants baked in: a self-contained function for export."""
        return self.apply(self.params, *inputs)

    def device_params(self, device: Any = None) -> dict[str, Any]:
        """The large constants as jax arrays on ``device`` (default: jax's first device), made once."""
        device = device or jax.devices()[0]
        if device not in self._device_params:
            with x64_scope(self.needs_x64):
                self._device_params[device] = {k: jax.device_put(v, device) for k, v in self.params.items()}
        return self._device_params[device]

    def __call__(self, *inputs: Any) -> list:
        with x64_scope(self.needs_x64):
            return self.apply(self.device_params(), *[_to_jax(x) for x in inputs])


def to_jax(graph: Graph) -> JaxFunction:
    """``graph`` as a callable over jax arrays (a LoweringError first if it cannot be expressed)."""
    return JaxFunction(graph)


# ----- the runner --------------------------------------------------------------------

def _framework(x: Any) -> str:
    mod = type(x).__module__
    if mod.startswith("torch"):
        return "torch"
    if isinstance(x, jax.Array):
        return "jax"
    return "numpy"


def _to_jax(x: Any, device: Any = None) -> Any:
    """A jax array of x, sharing memory where it can; moved only if it is on another
    device than ``device``.

    A torch CPU tensor goes in as its numpy view, like a numpy array, not through DLPack:
    the owner of a DLPack buffer is released by torch's deleter on whichever XLA thread
    drops the buffer last, and that deleter takes the GIL; at interpreter exit the thread
    cannot have it, exits inside XLA's C++ frames and aborts the process ("terminate
    called without an active exception").  jax releases the numpy owner of the host
    buffers it aliases on a Python thread.  Tensors on other devices go through DLPack.
    """
    kind = _framework(x)
    if kind == "torch" and x.device.type == "cpu":
        return jax.device_put(to_numpy(x), device)
    if kind == "torch":
        t = x.detach()
        a = jax.dlpack.from_dlpack(t if t.is_contiguous() else t.contiguous())
    elif kind == "jax":
        a = x
    else:
        return jax.device_put(np.asarray(x), device) if device is not None else jnp.asarray(np.asarray(x))
    if device is not None and a.devices() != {device}:
        a = jax.device_put(a, device)
    return a


def _from_jax(x: Any, kind: str) -> Any:
    if kind == "torch":
        import torch
        return torch.from_dlpack(x)
    if kind == "numpy":
        return np.asarray(x)
    return x


_PLATFORMS = {"cpu": "cpu", "cuda": "gpu", "gpu": "gpu", "tpu": "tpu"}


def jax_device(device: str | None) -> Any:
    """The jax device for "cpu" / "cuda" (or "gpu", "tpu"); None is jax's default device."""
    if device is None:
        return jax.devices()[0]
    if device not in _PLATFORMS:
        raise LoweringError(f"unknown device {device!r}; choose one of {', '.join(_PLATFORMS)}")
    try:
        return jax.devices(_PLATFORMS[device])[0]
    except RuntimeError:
        have = ", ".join(sorted({d.platform for d in jax.devices()}))
        raise LoweringError(f"jax has no {device} device here (it has: {have}); install a jax build for it "
                            "(for CUDA: pip install 'jax[cuda12]') or use device='cpu'") from None


def _one_list(inputs: tuple) -> tuple:
    """The inputs of a call given either as arguments or as one list of them."""
    return tuple(inputs[0]) if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)) else inputs


# XLA's CPU backend hands these fusions, and reductions, to YNNPACK by default.  Its
# reduce fusion gets reduce(dot or conv(x, broadcast(w))) wrong, as a network with
# constant-filled weights makes it: NaN or 1e34 where XLA's own emitters give the sum,
# different from one process to the next, as from reading memory it does not own.
# accelir keeps the default set but the reduce fusion; XLA's emitters run reductions.
_YNN_FUSIONS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
_YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"


@functools.cache
def _cpu_compiler_options() -> dict[str, Any]:
    """The XLA options accelir compiles with on CPU; empty where this jaxlib lacks them."""
    options = {_YNN_OPTION: _YNN_FUSIONS}
    try:
        jax.jit(lambda x: x + 1, compiler_options=options).lower(np.float32(0)).compile()
    except Exception:  # an XLA without YNNPACK fusions (or with other names) rejects the option
        return {}
    return options


def _compiler_options(device: Any, user: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """accelir's XLA options for ``device`` under the caller's ``compiler_options``."""
    base = _cpu_compiler_options() if device.platform == "cpu" else {}
    return {**base, **dict(user or {})} or None


class JaxModule:
    """A jit-compiled graph on one jax device.

    Call it with the inputs in graph input order, or with one list of them; each is a
    numpy array, a jax array or a torch tensor (no copy on the same device: CPU tensors
    as numpy views, others through DLPack).  Outputs come back as a list in the caller's framework: torch if any
    input is a torch tensor, else jax if any is a jax array, else numpy.
    ``compiler_options`` go to XLA (e.g. ``{"xla_backend_optimization_level": 0}`` to
    compile faster), over accelir's own on CPU (``_cpu_compiler_options``).
    """

    def __init__(self, graph: Graph, device: str | None = None, compiler_options: Mapping[str, Any] | None = None):
        self.function = to_jax(graph)
        self.graph = graph
        self.device = jax_device(device)
        keys = tuple(self.function.params)

        def run(values: tuple, *inputs: Any) -> list:
            return self.function.apply(dict(zip(keys, values)), *inputs)

        # the parameters go in as one tuple made once: a dict argument is flattened, key-sorted, on every call
        self._jitted = jax.jit(run, compiler_options=_compiler_options(self.device, compiler_options))
        params = self.function.device_params(self.device)
        self._values = tuple(params[k] for k in keys)

    def _arguments(self, inputs: tuple) -> list:
        return [self._values] + [_to_jax(x, self.device) for x in inputs]

    def __call__(self, *inputs: Any) -> list:
        inputs = _one_list(inputs)
        kinds = {_framework(x) for x in inputs}
        kind = "torch" if "torch" in kinds else "jax" if "jax" in kinds else "numpy"
        with x64_scope(self.function.needs_x64):
            outs = self._jitted(*self._arguments(inputs))
            return [_from_jax(o, kind) for o in outs]

    def lower(self, *example_inputs: Any):
        """The ``jax.stages.Lowered`` of the compiled function for these inputs."""
        with x64_scope(self.function.needs_x64):
            return self._jitted.lower(*self._arguments(_one_list(example_inputs)))


# ----- export ------------------------------------------------------------------------

def _input_specs(graph: Graph, example_inputs: Sequence[Any] | None, symbolic: bool) -> list:
    """ShapeDtypeStructs for the graph inputs: symbolic dims as jax symbolic shapes,
    or the example inputs' concrete shapes."""
    if example_inputs is not None and len(example_inputs) != len(graph.inputs):
        raise LoweringError(f"graph {graph.name!r} takes {len(graph.inputs)} inputs, got {len(example_inputs)} "
                            "example inputs")
    if symbolic:
        scope = jax.export.SymbolicScope()
        names = sorted({s for v in graph.inputs for d in v.shape if type(d) is not int
                        for s in dims.symbols(d)})
        symbols = {n: jax.export.symbolic_shape(n, scope=scope)[0] for n in names}
        return [jax.ShapeDtypeStruct(tuple(_eval_dim(d, symbols) for d in v.shape), _JAX_DTYPES[v.dtype])
                for v in graph.inputs]
    if example_inputs is None:
        if all(v.type.is_static for v in graph.inputs):
            return [jax.ShapeDtypeStruct(v.shape, _JAX_DTYPES[v.dtype]) for v in graph.inputs]
        raise LoweringError(f"graph {graph.name!r} has symbolic input dims: give example inputs for concrete "
                            "shapes, or pass symbolic=True")
    return [jax.ShapeDtypeStruct(tuple(x.shape) if hasattr(x, "shape") else np.shape(x), _JAX_DTYPES[v.dtype])
            for v, x in zip(graph.inputs, example_inputs)]


def _lowered(graph: Graph, example_inputs: Sequence[Any] | None, symbolic: bool):
    fn = to_jax(graph)
    with x64_scope(fn.needs_x64):
        return jax.jit(fn.embedded).lower(*_input_specs(graph, example_inputs, symbolic))


def stablehlo(graph: Graph, example_inputs: Sequence[Any] | None = None, *, symbolic: bool = False,
              debug_info: bool = False) -> str:
    """The StableHLO module text (``jax.jit(...).lower(...).as_text()``), constants inlined.

    Shapes come from ``example_inputs`` (arrays or ShapeDtypeStructs), or from the
    graph's symbolic dims when ``symbolic`` (dynamic dims in the module).
    ``debug_info`` adds locations: each op's name scope is its node's module path.
    """
    return _lowered(graph, example_inputs, symbolic).as_text(debug_info=debug_info)


def hlo(graph: Graph, example_inputs: Sequence[Any] | None = None, *, debug_info: bool = False) -> str:
    """The HLO module text for the example inputs' shapes, constants inlined; ``debug_info``
    adds op metadata naming each node's module path."""
    return _lowered(graph, example_inputs, False).as_text(dialect="hlo", debug_info=debug_info)


def export_jax(graph: Graph, example_inputs: Sequence[Any] | None = None, symbolic: bool = True) -> bytes:
    """A serialized ``jax.export`` artifact of the graph (constants inlined).

    With ``symbolic`` the graph's symbolic dims stay dynamic (jax shape polymorphism);
    otherwise the example inputs fix the shapes.
    """
    fn = to_jax(graph)
    with x64_scope(fn.needs_x64):
        specs = _input_specs(graph, example_inputs, symbolic)
        exported = jax.export.export(jax.jit(fn.embedded))(*specs)
        return bytes(exported.serialize())


def load_exported(data: bytes) -> Callable[..., list]:
    """Load an ``export_jax`` artifact; the callable takes arrays and returns a list of jax arrays."""
    exported = jax.export.deserialize(bytearray(data))
    wide = {jnp.dtype(jnp.int64), jnp.dtype(jnp.float64), jnp.dtype(jnp.uint64)}
    needs = any(jnp.dtype(a.dtype) in wide for a in (*exported.in_avals, *exported.out_avals))

    def call(*inputs: Any) -> list:
        with x64_scope(needs):
            return list(exported.call(*[_to_jax(x) for x in inputs]))

    call.exported = exported  # type: ignore[attr-defined]
    return call


# ----- rules: elementwise ------------------------------------------------------------

def _is_int(x: Any) -> bool:
    return jnp.issubdtype(x.dtype, jnp.integer)


def _relu(x):
    return jnp.maximum(x, jnp.zeros((), x.dtype))


def _div(a, b):
    if not _is_int(a):
        return jnp.true_divide(a, b)
    a, b = jnp.broadcast_arrays(a, b)
    zero = b == 0
    q = lax.div(a, jnp.where(zero, jnp.ones_like(b), b))
    return jnp.where(zero, jnp.zeros_like(q), q)


def _rem(a, b):
    a, b = jnp.broadcast_arrays(a, b)
    if not _is_int(a):
        return lax.rem(a, b)
    zero = b == 0
    r = lax.rem(a, jnp.where(zero, jnp.ones_like(b), b))
    return jnp.where(zero, jnp.zeros_like(r), r)


def _pow(a, b):
    if jnp.issubdtype(b.dtype, jnp.signedinteger):
        b = jnp.where(b < 0, jnp.zeros_like(b), b)
    return jnp.power(a, b)


_ELEMENTWISE: dict[str, Callable] = {
    "neg": jnp.negative, "abs": jnp.abs, "exp": jnp.exp, "log": jnp.log, "log1p": jnp.log1p,
    "expm1": jnp.expm1, "sqrt": jnp.sqrt, "rsqrt": lax.rsqrt, "sin": jnp.sin, "cos": jnp.cos, "tan": jnp.tan,
    "asin": jnp.arcsin, "acos": jnp.arccos, "atan": jnp.arctan, "sinh": jnp.sinh, "cosh": jnp.cosh,
    "asinh": jnp.arcsinh, "acosh": jnp.arccosh, "atanh": jnp.arctanh, "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid, "erf": lax.erf, "floor": jnp.floor, "ceil": jnp.ceil, "round": jnp.round,
    "sign": jnp.sign, "reciprocal": jnp.reciprocal, "relu": _relu, "not": jnp.invert,
    "isnan": jnp.isnan, "isinf": jnp.isinf,
    "add": jnp.add, "sub": jnp.subtract, "mul": jnp.multiply, "div": _div, "pow": _pow,
    "max": jnp.maximum, "min": jnp.minimum, "rem": _rem, "atan2": jnp.arctan2,
    "and": jnp.bitwise_and, "or": jnp.bitwise_or, "xor": jnp.bitwise_xor,
    "eq": jnp.equal, "ne": jnp.not_equal, "lt": jnp.less, "le": jnp.less_equal, "gt": jnp.greater,
    "ge": jnp.greater_equal,
    "where": jnp.where,
}


def _elementwise_rule(fn: Callable) -> Rule:
    def rule(ctx: RuleContext, *args):
        return fn(*args)
    return rule


for _name, _fn in _ELEMENTWISE.items():
    register_lowering(_name, upcast=True, layout=True)(_pointwise(_elementwise_rule(_fn)))


@register_lowering("cast", layout=True)
@_pointwise
def _cast(ctx, x, *, dtype):
    to = jnp.dtype(_JAX_DTYPES[dtype])
    if dtype is DType.bool:
        return x != jnp.zeros((), x.dtype)
    if dtype.is_int and jnp.issubdtype(x.dtype, jnp.floating):
        # float -> int truncates toward zero; NaN -> 0 and out-of-range values saturate,
        # matching the reference rather than the platform's convert.
        info = jnp.iinfo(to)
        t = jnp.clip(jnp.trunc(x), info.min, info.max)
        return lax.convert_element_type(jnp.where(jnp.isnan(x), jnp.zeros_like(t), t), to)
    return lax.convert_element_type(x, to)


# ----- rules: reductions, scans, sort ------------------------------------------------

def _axes(axes: Sequence[int], rank: int) -> tuple[int, ...]:
    return tuple(sorted({a % rank for a in axes})) if rank else ()


_REDUCTIONS = {"reduce_sum": jnp.sum, "reduce_mean": jnp.mean, "reduce_max": jnp.max, "reduce_min": jnp.min,
               "reduce_prod": jnp.prod, "reduce_any": jnp.any, "reduce_all": jnp.all}


def _reduce_rule(fn: Callable) -> Rule:
    def rule(ctx, x, *, axes, keepdims):
        data, perm = _parts(x)
        logical = _axes(axes, x.ndim)
        inv = inverse_perm(perm)
        y = fn(data, axis=tuple(sorted(inv[a] for a in logical)), keepdims=keepdims)
        if keepdims:
            return _held(y, perm)
        # the kept axes stay in the order the data holds them
        kept = [p for p in perm if p not in logical]
        order = sorted(kept)
        return _held(y, tuple(order.index(p) for p in kept))
    return rule


for _name, _fn in _REDUCTIONS.items():
    register_lowering(_name, upcast=True, layout=True)(_reduce_rule(_fn))


def _arg_rule(fn: Callable) -> Rule:
    def rule(ctx, x, *, axis, keepdims, select_last_index):
        ax = axis % x.ndim
        if select_last_index:
            idx = (x.shape[ax] - 1) - fn(jnp.flip(x, ax), axis=ax).astype(jnp.int64)
        else:
            idx = fn(x, axis=ax).astype(jnp.int64)
        return jnp.expand_dims(idx, ax) if keepdims else idx
    return rule


register_lowering("argmax", upcast=True)(_arg_rule(jnp.argmax))
register_lowering("argmin", upcast=True)(_arg_rule(jnp.argmin))

_CUMULATIVE = {"cumsum": (lax.cumsum, 0), "cumprod": (lax.cumprod, 1), "cummax": (lax.cummax, None),
               "cummin": (lax.cummin, None)}


def _cum_rule(fn: Callable, identity: int | None) -> Rule:
    def rule(ctx, x, *, axis, reverse, exclusive=False):
        if x.ndim == 0:
            return x
        ax = axis % x.ndim
        y = jnp.flip(x, ax) if reverse else x
        y = fn(y, axis=ax)
        if exclusive:
            # shift right by one along ax, filling with the identity
            config = [(0, 0, 0)] * x.ndim
            config[ax] = (1, -1, 0)
            y = lax.pad(y, jnp.asarray(identity, y.dtype), config)
        return jnp.flip(y, ax) if reverse else y
    return rule


for _name, (_fn, _ident) in _CUMULATIVE.items():
    register_lowering(_name, upcast=True)(_cum_rule(_fn, _ident))


def _stable_order(x, axis: int, descending: bool):
    """Stable sort permutation along axis (i64); descending puts NaN first and keeps ties in index order."""
    keys = x.astype(jnp.uint8) if x.dtype == jnp.bool_ else x
    iota = lax.broadcasted_iota(jnp.int64, x.shape, axis)
    if descending:
        # ascending with ties by falling index, reversed: descending with ties by rising index
        _, perm = lax.sort((keys, -iota), dimension=axis, num_keys=2)
        return -jnp.flip(perm, axis)
    _, perm = lax.sort((keys, iota), dimension=axis, num_keys=1, is_stable=True)
    return perm


@register_lowering("sort")
def _sort(ctx, x, *, axis, descending):
    ax = axis % x.ndim
    perm = _stable_order(x, ax, descending)
    return [jnp.take_along_axis(x, perm, ax), perm]


@register_lowering("topk")
def _topk(ctx, x, *, k, axis, largest):
    ax = axis % x.ndim
    perm = lax.slice_in_dim(_stable_order(x, ax, largest), 0, k, axis=ax)
    return [jnp.take_along_axis(x, perm, ax), perm]


# ----- rules: contractions, conv, pooling --------------------------------------------

def _accumulator(dtype) -> Any:
    return jnp.float32 if jnp.dtype(dtype) in _HALF else None


@register_lowering("matmul")
def _matmul(ctx, a, b):
    return jnp.matmul(a, b, preferred_element_type=_accumulator(a.dtype))


@register_lowering("dot_general")
def _dot_general(ctx, a, b, *, lhs_contracting, rhs_contracting, lhs_batch, rhs_batch):
    return lax.dot_general(a, b, ((lhs_contracting, rhs_contracting), (lhs_batch, rhs_batch)),
                           preferred_element_type=_accumulator(a.dtype))


_ACTIVATIONS: dict[str, Callable] = {
    "none": lambda x: x,
    "relu": _relu,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "silu": jax.nn.silu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
}


def _conv(x, w, bias, attrs: Mapping[str, Any]) -> Permuted:
    """The conv channels-last: data [N, *S, C] and kernel [*K, I, O], which is how XLA's
    CPU backend runs it; the result is held channels-last for the next layout-aware op."""
    n = x.ndim - 2
    stride, padding, dilation, lhs_dilation = conv_params("conv", attrs, n)
    spatial = tuple(range(1, n + 1))
    numbers = lax.ConvDimensionNumbers(lhs_spec=(0, n + 1, *spatial), rhs_spec=(n + 1, n, *range(n)),
                                       out_spec=(0, n + 1, *spatial))
    last = _channels_last(n + 2)
    y = lax.conv_general_dilated(_in_layout(x, last), _in_layout(w, _kernel_last(n + 2)), window_strides=stride,
                                 padding=padding, lhs_dilation=lhs_dilation, rhs_dilation=dilation,
                                 dimension_numbers=numbers, feature_group_count=attrs["groups"],
                                 preferred_element_type=_accumulator(x.dtype))
    if bias is not None:
        y = y + _logical(bias).astype(y.dtype)
    return Permuted(y, last)


@register_lowering("conv", layout=True)
def _conv_rule(ctx, x, w, bias=None, **attrs):
    return _conv(x, w, bias, attrs)


@register_lowering("fused_conv", upcast=True, layout=True)
def _fused_conv(ctx, x, w, bias=None, *, activation, **attrs):
    return _with_data(_conv(x, w, bias, attrs), _ACTIVATIONS[activation])


def _pool_window(x, kernel, stride, padding, dilation, ceil_mode):
    """reduce_window geometry in [N, C, *S] order: window, strides, padding (ceil mode's
    extra on the high side), dilation, and the output shape when ceil mode needs the result cut."""
    n = len(kernel)
    stride = stride or (1,) * n
    padding = padding or ((0, 0),) * n
    dilation = dilation or (1,) * n
    extra = [0] * n
    cut = None
    if ceil_mode:
        cut = []
        for i, k in enumerate(kernel):
            size = x.shape[2 + i]
            lo, hi = padding[i]
            out = pool_output_dim(size, k, stride[i], lo, hi, dilation[i], True)
            extra[i] = max(0, (out - 1) * stride[i] + dilation[i] * (k - 1) + 1 - (size + lo + hi))
            cut.append(out)
        cut = tuple(x.shape[:2]) + tuple(cut)
    pads = ((0, 0), (0, 0)) + tuple((lo, hi + e) for (lo, hi), e in zip(padding, extra))
    return (1, 1) + tuple(kernel), (1, 1) + tuple(stride), pads, (1, 1) + tuple(dilation), padding, extra, cut


def _cut(y, cut, perm):
    if cut is None:
        return y
    return lax.slice(y, (0,) * y.ndim, _physical(cut, perm))


@register_lowering("max_pool", layout=True)
def _max_pool(ctx, x, *, kernel, stride, padding, dilation, ceil_mode):
    data, perm = _parts(x)
    window, strides, pads, dil, _, _, cut = _pool_window(x, kernel, stride, padding, dilation, ceil_mode)
    low = -jnp.inf if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min
    window, strides, pads, dil = (_physical(t, perm) for t in (window, strides, pads, dil))
    y = lax.reduce_window(data, jnp.asarray(low, x.dtype), lax.max, window, strides, pads, window_dilation=dil)
    return _held(_cut(y, cut, perm), perm)


@register_lowering("avg_pool", upcast=True, layout=True)
def _avg_pool(ctx, x, *, kernel, stride, padding, dilation, ceil_mode, count_include_pad):
    data, perm = _parts(x)
    window, strides, pads, dil, padding, extra, cut = _pool_window(x, kernel, stride, padding, dilation, ceil_mode)
    window, strides, dil = (_physical(t, perm) for t in (window, strides, dil))
    zero = jnp.zeros((), x.dtype)
    total = lax.reduce_window(data, zero, lax.add, window, strides, _physical(pads, perm), window_dilation=dil)
    spatial = tuple(x.shape[2:])
    if count_include_pad:
        # the zero padding counts, the ceil-mode overhang does not
        ones = (1, 1) + tuple(s + lo + hi for s, (lo, hi) in zip(spatial, padding))
        count_pads = ((0, 0), (0, 0)) + tuple((0, e) for e in extra)
    else:
        ones = (1, 1) + spatial
        count_pads = pads
    count = lax.reduce_window(jnp.ones(_physical(ones, perm), x.dtype), zero, lax.add, window, strides,
                              _physical(count_pads, perm), window_dilation=dil)
    return _held(_cut(total / count, cut, perm), perm)


# ----- rules: shape and data movement ------------------------------------------------

@register_lowering("constant")
def _constant(ctx, *, name):
    return ctx.constant(name)


register_lowering("reshape")(lambda ctx, x, *, shape: jnp.reshape(x, shape))


@register_lowering("transpose", layout=True)
def _transpose(ctx, x, *, perm):
    # no data moves: the same data is held under the composed permutation
    data, held = _parts(x)
    inv = inverse_perm(perm)
    return _held(data, tuple(inv[p] for p in held))


register_lowering("broadcast_to")(lambda ctx, x, *, shape: jnp.broadcast_to(x, shape))
register_lowering("squeeze")(lambda ctx, x, *, axes: jnp.squeeze(x, _axes(axes, x.ndim)))
register_lowering("reverse")(lambda ctx, x, *, axes: jnp.flip(x, _axes(axes, x.ndim)))


@register_lowering("concat", layout=True)
def _concat(ctx, *xs, axis):
    perms = {_parts(x)[1] for x in xs}
    if len(perms) != 1:
        return jnp.concatenate([_logical(x) for x in xs], axis=axis)
    perm = perms.pop()
    return _held(jnp.concatenate([_parts(x)[0] for x in xs], axis=inverse_perm(perm)[axis % len(perm)]), perm)


@register_lowering("unsqueeze")
def _unsqueeze(ctx, x, *, axes):
    return jnp.expand_dims(x, _axes(axes, x.ndim + len(axes)))


@register_lowering("slice")
def _slice(ctx, x, *, starts, stops, steps, axes):
    start = [0] * x.ndim
    limit = list(x.shape)
    stride = [1] * x.ndim
    for k, ax in enumerate(axes):
        ax %= x.ndim
        start[ax], limit[ax] = starts[k], stops[k]
        stride[ax] = steps[k] if steps else 1
    return lax.slice(x, tuple(start), tuple(limit), tuple(stride))


@register_lowering("pad")
def _pad(ctx, x, *, pads, mode, value):
    if mode == "constant":
        fill = jnp.asarray(np.asarray(value).astype(jnp.dtype(x.dtype)))
        return lax.pad(x, fill, [(lo, hi, 0) for lo, hi in pads])
    return jnp.pad(x, pads, mode=mode)


def _index(idx, size):
    """Indices as a signed type wide enough to add the dim size, negatives counted from the end."""
    wide = jax.dtypes.canonicalize_dtype(jnp.int64)
    idx = idx.astype(wide)
    return jnp.where(idx < 0, idx + size, idx)


@register_lowering("gather")
def _gather(ctx, x, idx, *, axis):
    ax = axis % x.ndim
    return jnp.take(x, _index(idx, x.shape[ax]), axis=ax, mode="clip")


@register_lowering("take_along_axis")
def _take_along_axis(ctx, x, idx, *, axis):
    ax = axis % x.ndim
    # the result has the indices' shape (torch.gather): x's other dims are cut to match
    limit = tuple(x.shape[i] if i == ax else idx.shape[i] for i in range(x.ndim))
    if limit != tuple(x.shape):
        x = lax.slice(x, (0,) * x.ndim, limit)
    return jnp.take_along_axis(x, _index(idx, x.shape[ax]), axis=ax, mode="clip")


@register_lowering("gather_nd")
def _gather_nd(ctx, x, idx, *, batch_dims):
    k = idx.shape[-1]

    def one(xb, ib):
        if k == 0:
            return jnp.broadcast_to(xb, tuple(ib.shape[:-1]) + tuple(xb.shape))
        return xb[tuple(_index(ib[..., d], xb.shape[d]) for d in range(k))]

    for _ in range(batch_dims):
        one = jax.vmap(one)
    return one(x, idx)


_SCATTER = {"none": lambda ref, u: ref.set(u), "add": lambda ref, u: ref.add(u),
            "mul": lambda ref, u: ref.multiply(u), "max": lambda ref, u: ref.max(u),
            "min": lambda ref, u: ref.min(u)}
# jax has no bool add / multiply; on bools they are logical or / and, i.e. max / min
_BOOL_SCATTER = {"add": "max", "mul": "min"}


def _scatter(x, where, upd, reduction: str):
    if x.dtype == jnp.bool_:
        reduction = _BOOL_SCATTER.get(reduction, reduction)
    return _SCATTER[reduction](x.at[where], upd)


@register_lowering("scatter_elements")
def _scatter_elements(ctx, x, idx, upd, *, axis, reduction):
    ax = axis % x.ndim
    if tuple(upd.shape) != tuple(idx.shape):
        upd = lax.slice(upd, (0,) * upd.ndim, tuple(idx.shape))
    where = [lax.broadcasted_iota(jnp.int32, idx.shape, d) for d in range(x.ndim)]
    where[ax] = _index(idx, x.shape[ax])
    return _scatter(x, tuple(where), upd, reduction)


@register_lowering("scatter_nd")
def _scatter_nd(ctx, x, idx, upd, *, reduction):
    k = idx.shape[-1]
    where = tuple(_index(idx[..., d], x.shape[d]) for d in range(k))
    return _scatter(x, where, upd, reduction)


def _starts(starts) -> list:
    # lax counts negative starts from the end; the IR (like XLA) clamps them to 0
    wide = jax.dtypes.canonicalize_dtype(jnp.int64)
    return [jnp.maximum(s.astype(wide), 0) for s in starts]


@register_lowering("dynamic_slice")
def _dynamic_slice(ctx, x, *starts, sizes):
    return lax.dynamic_slice(x, _starts(starts), sizes)


@register_lowering("dynamic_update_slice")
def _dynamic_update_slice(ctx, x, upd, *starts):
    return lax.dynamic_update_slice(x, upd, _starts(starts))


@register_lowering("iota")
def _iota(ctx, *, shape, axis, dtype):
    return lax.broadcasted_iota(_JAX_DTYPES[dtype], shape, axis % len(shape))


# ----- rules: composites -------------------------------------------------------------

register_lowering("gelu", upcast=True, layout=True)(
    _pointwise(lambda ctx, x, *, approximate: jax.nn.gelu(x, approximate=approximate == "tanh")))
register_lowering("silu", upcast=True, layout=True)(_pointwise(lambda ctx, x: jax.nn.silu(x)))
def _settled(x):
    """``x``, computed once for all its readers.

    XLA copies a cheap producer (a mean's scaling, attention's ``* scale``) into every
    fusion that reads it and there may contract it with the next op into one FMA; a
    softmax then takes its max over one rounding of x and subtracts it from another,
    and where x is large (|x| > 1e9 or so the two differ by more than exp's range) every
    exponent overflows or underflows: NaN.  A division is too costly for XLA to copy, so
    it is computed once; it divides by an exact 1 that XLA cannot fold (0 for NaN, which
    stays NaN).  optimization_barrier would say this, but XLA's CPU pipeline drops it.
    """
    return x / (x == x).astype(x.dtype)


def _softmax(x, axis: int):
    return jax.nn.softmax(_settled(x), axis=axis)


register_lowering("softmax", upcast=True)(lambda ctx, x, *, axis: _softmax(x, axis))
register_lowering("log_softmax", upcast=True)(lambda ctx, x, *, axis: jax.nn.log_softmax(_settled(x), axis=axis))


def _norm_axes(x, axis: int) -> tuple[int, ...]:
    return tuple(range(axis % x.ndim, x.ndim))


def _layer_norm_math(x, scale, bias, axis, epsilon):
    axes = _norm_axes(x, axis)
    d = x - jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean(d * d, axis=axes, keepdims=True)
    y = d * lax.rsqrt(var + jnp.asarray(epsilon, x.dtype))
    if scale is not None:
        y = y * scale
    return y + bias if bias is not None else y


def _rms_norm_math(x, scale, axis, epsilon):
    ms = jnp.mean(x * x, axis=_norm_axes(x, axis), keepdims=True)
    y = x * lax.rsqrt(ms + jnp.asarray(epsilon, x.dtype))
    return y * scale if scale is not None else y


@register_lowering("layer_norm", upcast=True)
def _layer_norm(ctx, x, scale=None, bias=None, *, axis, epsilon):
    return _layer_norm_math(x, scale, bias, axis, epsilon)


@register_lowering("rms_norm", upcast=True)
def _rms_norm(ctx, x, scale=None, *, axis, epsilon):
    return _rms_norm_math(x, scale, axis, epsilon)


@register_lowering("skip_layer_norm", upcast=True)
def _skip_layer_norm(ctx, x, skip, scale=None, bias=None, *, axis, epsilon):
    s = x + skip
    return [_layer_norm_math(s, scale, bias, axis, epsilon), s]


@register_lowering("skip_rms_norm", upcast=True)
def _skip_rms_norm(ctx, x, skip, scale=None, *, axis, epsilon):
    s = x + skip
    return [_rms_norm_math(s, scale, axis, epsilon), s]


@register_lowering("batch_norm", upcast=True, layout=True)
def _batch_norm(ctx, x, scale, bias, mean, var, *, epsilon):
    data, perm = _parts(x)
    # per-channel vectors along the axis where the data holds the channels
    shape = [1] * x.ndim
    shape[inverse_perm(perm)[1]] = -1
    scale, bias, mean, var = (_logical(a).reshape(shape) for a in (scale, bias, mean, var))
    k = lax.rsqrt(var + jnp.asarray(epsilon, var.dtype)) * scale
    return _held((data - mean) * k + bias, perm)


@register_lowering("attention", upcast=True)
def _attention(ctx, q, k, v, mask=None, *, scale, causal):
    if scale is None:
        d = q.shape[-1]
        scale = 1.0 / np.sqrt(d) if type(d) is int else lax.rsqrt(jnp.asarray(d, q.dtype))
    s = jnp.matmul(q, jnp.swapaxes(k, -1, -2)) * jnp.asarray(scale, q.dtype)
    neg = jnp.asarray(-jnp.inf, s.dtype)
    if causal:
        shape = (q.shape[-2], k.shape[-2])
        keep = lax.broadcasted_iota(jnp.int32, shape, 0) >= lax.broadcasted_iota(jnp.int32, shape, 1)
        s = jnp.where(keep, s, neg)
    if mask is not None:
        s = jnp.where(mask, s, neg) if mask.dtype == jnp.bool_ else s + mask
    return jnp.matmul(_softmax(s, -1), v)


@register_lowering("linear", upcast=True)
def _linear(ctx, x, w, bias=None, *, activation):
    y = jnp.matmul(x, w)
    if bias is not None:
        y = y + bias
    return _ACTIVATIONS[activation](y)


def _via_decomposition(ctx, *args, **attrs):
    """Lower a composite that jax has no kernel for through its decomposition into core ops."""
    node = ctx.node
    try:
        scratch = registry.decomposition_graph(node.op, [v.type for v in node.inputs], node.attrs, node.meta,
                                               [v.name for v in node.inputs])
    except registry.TypeRuleError as e:
        raise LoweringError(f"jax lowering of {node.describe()}: {e}") from None
    prefix = f"{node.op}_decomposition"
    sub = _Lowering({id(scratch): prefix}, {}, {_key(prefix, k): v for k, v in scratch.constants.items()})
    return sub.run(scratch, *args, bindings=ctx.bindings)


for _op in _DECOMPOSED:
    register_lowering(_op)(_via_decomposition)


# ----- rules: regions ----------------------------------------------------------------

@register_lowering("fusion", layout=True)
def _fusion(ctx, *args, kind):
    return ctx.region(0, keep_layout=True)(*args)


@register_lowering("cond")
def _cond(ctx, index, *operands):
    branches = [ctx.region(i) for i in range(len(ctx.node.regions))]
    if index.dtype == jnp.bool_:
        return lax.cond(index, branches[1], branches[0], *operands)
    # clamp in the index's own type first so a wide index cannot wrap when narrowed
    clamped = jnp.clip(index, 0, len(branches) - 1).astype(jnp.int32)
    return lax.switch(clamped, branches, *operands)


@register_lowering("while_loop")
def _while_loop(ctx, *init):
    cond, body = ctx.region(0), ctx.region(1)
    return list(lax.while_loop(lambda s: cond(*s)[0], lambda s: tuple(body(*s)), tuple(init)))


@register_lowering("scan")
def _scan(ctx, *args, num_consts, num_carry, length, reverse):
    consts, carry, xs = args[:num_consts], args[num_consts:num_consts + num_carry], args[num_consts + num_carry:]
    body = ctx.region(0)

    def step(c, x):
        out = body(*consts, *c, *x)
        return tuple(out[:num_carry]), tuple(out[num_carry:])

    final, ys = lax.scan(step, tuple(carry), tuple(xs), length=length, reverse=reverse)
    return list(final) + list(ys)
