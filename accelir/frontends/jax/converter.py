"""The jaxpr walker of the JAX frontend: equations in order (dead ones dropped), each
through its rule with its provenance, literals and closed-over arrays as constants,
calls inlined, control-flow bodies as closed regions; equations no rule maps are
collected as problems and reported together.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ...errors import VerificationError
from ...ir import Builder, DType, Graph, TensorType, Value
from .context import EqnContext, Rule, Unsupported, jax_dtype, open_jaxpr, rule, to_dim

__all__ = ["Converter", "Problem"]


_UNKNOWN_DIM = "unknown_dim"


def _loose_type(aval: Any) -> TensorType:
    """aval_type, with a placeholder for a dim or dtype accelir cannot spell (types to check against and
    stand-ins for the results of unsupported equations)."""
    try:
        dt = jax_dtype(aval.dtype)
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
    dirs = [os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))]  # the accelir package
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


@dataclass
class Problem:
    primitive: str
    params: str
    source: str | None
    reason: str

    def __str__(self) -> str:
        where = f" at {self.source}" if self.source else ""
        why = f": {self.reason}" if self.reason else ""
        return f"  {self.primitive}{where} [{self.params}]{why}"


class Converter:
    """Walks one jaxpr into one graph; regions get a converter of their own."""

    def __init__(self, graph: Graph, problems: list[Problem], rules: dict[str, Rule]):
        self.graph = graph
        self.problems = problems
        self.rules = rules
        self._literals: dict[tuple, Value] = {}
        self._module_names: dict[Any, str] = {}
        self._stack: Any = None
        self._source: str | None = None

    # values
    def child(self, graph: Graph) -> Converter:
        """A converter that fills ``graph`` (a region) with the same rules, reporting into the same problems."""
        return Converter(graph, self.problems, self.rules)

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
        jax_dtype(arr.dtype)
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
            self.problems.append(Problem(name, _short_params(eqn.params), src, str(e)))
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
        jaxpr, consts = open_jaxpr(closed_jaxpr)
        region = Graph(name)
        sub = self.child(region)
        bound = []
        for v in closure:
            arr = v.const_value
            bound.append(sub.constant(arr, name="const"))
        args = bound + [region.add_input(t) for t in input_types]
        region.set_outputs(sub.run(jaxpr, consts, args, self.caller))
        return region


class _LazyEnv(dict):
    """jaxpr var -> Value; constvars turn into constant nodes on first read."""

    def __init__(self, pending: dict, conv: Converter):
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
