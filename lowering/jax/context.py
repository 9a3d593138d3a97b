"""The jax lowering itself: the rule table, the rule context, one trace of a graph, and ``to_jax``.

A rule is ``rule(ctx, *arrays, **attrs)`` registered with ``register_lowering``; a composite op with
no rule lowers through its decomposition into core ops.  Symbolic dims are bound at trace time to
the dims of the inputs.  Also the conversions between numpy / torch / jax arrays the runner and
export share.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from accelir import dims
from accelir.errors import AccelirError, InputError, LoweringError
from accelir.unbacked import unbacked_dims
from accelir.arrays import memory_key, to_numpy
from accelir.ir import DType, Graph, Node, TensorType
from accelir.ops import registry
from accelir.ops.activations import activation
from accelir.splat import splat_scalar

from .layout import Permuted, common_layout, held, in_layout, kernel_last, logical, with_data
from .padded_dims import buffer_size
from .padding import check_padding, introduced_sizes, meets_padding, note_lengths, output_symbols

Rule = Callable[..., Any]

JAX_RULES: dict[str, Rule] = {}
# rules of the ops ``padding.MASKED`` names, used in graphs with data-dependent sizes (lowering/jax/padding.py)
PADDED_RULES: dict[str, Rule] = {}
_UPCAST: set[str] = set()
_LAYOUT_AWARE: set[str] = set()

# Constants with more elements than this become arguments of the compiled function;
# smaller ones are inlined so XLA can fold them.
PARAM_MIN_ELEMENTS = 64

JAX_DTYPES: dict[DType, Any] = {
    DType.f16: jnp.float16,
    DType.bf16: jnp.bfloat16,
    DType.f32: jnp.float32,
    DType.f64: jnp.float64,
    DType.i8: jnp.int8,
    DType.i16: jnp.int16,
    DType.i32: jnp.int32,
    DType.i64: jnp.int64,
    DType.u8: jnp.uint8,
    DType.u16: jnp.uint16,
    DType.u32: jnp.uint32,
    DType.u64: jnp.uint64,
    DType.bool: jnp.bool_,
}
_WIDE = (DType.i64, DType.f64)
HALF_DTYPES = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))


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


def register_padded(op: str) -> Callable[[Rule], Rule]:
    """Register the rule of ``op`` in graphs with data-dependent sizes: it masks the padding of the
    axes it mixes (``RuleContext.length`` gives an unbacked dim's valid length)."""
    def deco(rule: Rule) -> Rule:
        PADDED_RULES[op] = rule
        return rule
    return deco


def rule_for(op: str) -> Rule | None:
    """The rule that lowers ``op``: its own, else for a composite its decomposition (a composite
    needs a rule only where jax has a better kernel); None when there is neither."""
    return registry.rule_or_decomposition(JAX_RULES, op, lower_via_decomposition)


def apply_activation(ctx: RuleContext, x: Any, act: str) -> Any:
    """``x`` through activation ``act`` (the ``activation`` attribute of linear / fused_conv): the rule
    of the IR op that the activation table names for it."""
    a = activation(act)
    return x if a.op is None else JAX_RULES[a.op](ctx, x, **dict(a.attrs))


def x64_scope(enabled: bool) -> contextlib.AbstractContextManager:
    """A context with 64-bit jax types when ``enabled``; the global config is untouched."""
    return jax.enable_x64(True) if enabled else contextlib.nullcontext()


def pointwise(rule: Rule) -> Rule:
    """``rule`` of an op that treats every element alike, run in the common layout of its operands."""
    def layout_rule(ctx: RuleContext, *args: Any, **attrs: Any) -> Any:
        perm = common_layout(args)
        if perm is None:
            return rule(ctx, *[logical(a) for a in args], **attrs)
        return held(rule(ctx, *[in_layout(a, perm) for a in args], **attrs), perm)
    return layout_rule


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
    check_padding(graph)
    missing = [n for n in _walk(graph) if rule_for(n.op) is None]
    if missing:
        ops = sorted({n.op for n in missing})
        raise LoweringError(
            f"the jax lowering has no rule for {', '.join(ops)} (first: {missing[0].describe()}); "
            "register one with accelir.lowering.jax.register_lowering(op) or rewrite the op into "
            "ops that have one")
    for t, node in _all_types(graph):
        if t.dtype not in JAX_DTYPES:
            where = node.describe() if node is not None else f"a graph input of type {t}"
            raise LoweringError(f"the jax lowering cannot express dtype {t.dtype} ({where}); cast it to a "
                                "supported dtype first")


def _needs_x64(graph: Graph) -> bool:
    # decompositions index with i64, and their values are not the graph's own
    return any(t.dtype in _WIDE for t, _ in _all_types(graph)) or \
        any(rule_for(n.op) is lower_via_decomposition for n in _walk(graph))


# ----- the lowering ------------------------------------------------------------------

@dataclass
class RuleContext:
    """What a rule may ask about the node it lowers."""

    node: Node
    lowering: Lowering
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

    def length(self, sym: str) -> Any:
        """The valid length of unbacked dim ``sym`` (a traced i64 scalar); its padded size is ``bindings[sym]``."""
        return self.lowering.lengths[sym]

    def set_length(self, sym: str, length: Any) -> None:
        """Record the valid length of an unbacked dim the node introduces."""
        self.lowering.lengths[sym] = length

    def require(self, ok: Any, message: str) -> None:
        """A run-time condition of the node's inputs (a traced bool) that the original op would raise on.

        Nothing can raise inside a jitted program, so the condition is returned beside the outputs and
        checked once the program has run: a failed one is an InputError naming this node, never padding or
        clamped values passed off as a result. Only graphs with data-dependent sizes carry them."""
        if self.lowering.checks is None:
            raise LoweringError(f"{self.node.op}: a run-time check outside a graph with data-dependent sizes")
        self.lowering.checks.append((jnp.asarray(ok, bool).reshape(()), f"{self.node.describe()}: {message}"))


def constant_key(prefix: str, name: str) -> str:
    return f"{prefix}/{name}"


@dataclass
class Lowering:
    """One trace of a graph: its parameters (arrays or tracers) and graph ids."""

    prefixes: Mapping[int, str]
    params: Mapping[str, Any]
    small: Mapping[str, np.ndarray] = field(default_factory=dict)
    layouts: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    splats: Mapping[str, tuple[np.ndarray, tuple[int, ...]]] = field(default_factory=dict)
    # a graph with data-dependent sizes: each unbacked dim's valid length (None: a graph without them)
    lengths: dict[str, Any] | None = None
    # and its run-time checks: (traced bool, message) for inputs the original op refuses (RuleContext.require)
    checks: list[tuple[Any, str]] | None = None

    def constant(self, graph: Graph, name: str) -> Any:
        key = constant_key(self.prefixes[id(graph)], name)
        if key in self.splats:  # a broadcast of one scalar in the program, not a big device constant
            scalar, shape = self.splats[key]
            value = jnp.broadcast_to(jnp.asarray(scalar), shape)
        else:
            value = self.params[key] if key in self.params else jnp.asarray(self.small[key])
        return Permuted(value, self.layouts[key]) if key in self.layouts else value

    def bind_inputs(self, graph: Graph, args: Sequence[Any], bindings: dict[str, Any]) -> None:
        if len(args) != len(graph.inputs):
            raise LoweringError(f"graph {graph.name!r} takes {len(graph.inputs)} inputs, got {len(args)}")
        for i, (v, a) in enumerate(zip(graph.inputs, args)):
            label = f"graph {graph.name!r} input {i}" + (f" ({v.name})" if v.name else "")
            want = jnp.dtype(JAX_DTYPES[v.dtype])
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
                    if self.lengths is not None:  # a dim computed from data-dependent dims: its buffer's size
                        attrs[k] = tuple(buffer_size(d, self.lengths, bindings) for d in attrs[k])
                        continue
                    # bound values may be jax symbolic dims (shape polymorphism): they have the same arithmetic
                    attrs[k] = tuple(dims.evaluate_with(d, bindings.__getitem__) for d in attrs[k])
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
            if self.lengths is not None:  # the padded size of a data-dependent dim, for the attributes naming it
                b.update(introduced_sizes(node, [o.shape for o in outs]))
                note_lengths(self.lengths, node, b)
            for v, o in zip(node.outputs, outs):
                env[id(v)] = o
        outs = [env[id(v)] for v in graph.outputs]
        return outs if keep_layout else [logical(o) for o in outs]

    def lower_node(self, node: Node, args: list, bindings: Mapping[str, Any]) -> list:
        padded = self.lengths is not None and node.op in PADDED_RULES and meets_padding(node, self.lengths)
        rule = PADDED_RULES[node.op] if padded else rule_for(node.op)
        attrs = self.resolve_attrs(node, bindings)
        if node.op not in _LAYOUT_AWARE or padded:
            args = [logical(a) for a in args]
        if node.op in _UPCAST:
            args = [with_data(a, lambda d: d.astype(jnp.float32)) if jnp.dtype(a.dtype) in HALF_DTYPES else a
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
            want = jnp.dtype(JAX_DTYPES[v.dtype])
            if jnp.dtype(o.dtype) != want:
                o = with_data(o, lambda d: lax.convert_element_type(d, want))
            static_mismatch = any(type(d) is int and type(n) is int and d != n for d, n in zip(v.shape, o.shape))
            if len(o.shape) != v.rank or static_mismatch:
                raise LoweringError(f"the jax rule of {node.describe()} gave shape {tuple(o.shape)}, the node "
                                    f"says {v.type}")
            fixed.append(o)
        return fixed


_CONVS = ("conv", "fused_conv")


def _read_only_as(graphs: Sequence[Graph], prefixes: Mapping[int, str],
                  weight: Callable[[Node, int], bool]) -> dict[str, int]:
    """The rank of each constant (by key) that is read, and read only where ``weight(user, slot)`` holds."""
    verdict: dict[str, bool] = {}
    ranks: dict[str, int] = {}
    for g in graphs:
        for node in g.nodes:
            if node.op != "constant":
                continue
            key = constant_key(prefixes[id(g)], node.attrs["name"])
            out = node.outputs[0]
            as_weight = bool(out.uses()) and all(weight(user, i) for user, i in out.uses())
            verdict[key] = verdict.get(key, True) and as_weight
            ranks[key] = out.rank
    return {k: ranks[k] for k, ok in verdict.items() if ok}


def _weight_layouts(graphs: Sequence[Graph], prefixes: Mapping[int, str]) -> dict[str, tuple[int, ...]]:
    """Constant keys whose every read is a convolution's weight, with the channels-last
    permutation they are best held in (OIHW -> HWIO)."""
    weights = _read_only_as(graphs, prefixes, lambda user, i: user.op in _CONVS and i == 1)
    return {k: kernel_last(rank) for k, rank in weights.items()}


def _linear_weight_layouts(graphs: Sequence[Graph], prefixes: Mapping[int, str]) -> dict[str, tuple[int, ...]]:
    """Constant keys whose every read is a ``linear``'s two-dimensional weight (``[K, N]`` in the IR), with the
    permutation that holds them ``[N, K]``: each output feature's weights one contiguous row."""
    weights = _read_only_as(graphs, prefixes, lambda user, i: user.op == "linear" and i == 1)
    return {k: (1, 0) for k, rank in weights.items() if rank == 2}


class JaxFunction:
    """A graph as a jax function.  Call it on arrays in graph input order.

    ``apply(params, *inputs)`` is pure and traceable (jit it, export it); ``params``
    maps names to the large constants (``self.params`` holds them as numpy arrays).
    Constants read only as convolution weights are held channels-last (kernel dims,
    input channels, output channels; ``layouts`` maps their names to that permutation)
    and inlined with the small constants, so no call transposes or repacks them.

    ``rows_of_outputs=True`` holds the constants read only as ``linear`` weights ``[N, K]`` (in
    ``params``, the same permutation in ``layouts``): a matrix-vector product (one token's decode
    step) then reads each output's weights as one contiguous row, which XLA:CPU's dot kernels stream
    faster than the ``[K, N]`` the IR holds (GPT-2 small's layer weights: 12.1 against 13.9 ms a
    step, one thread); the layout-aware ``linear`` rule contracts the held weight's dim 1 where it
    lies.  A torch ``nn.Linear``'s weight is ``[N, K]`` already, its IR constant a
    transposed view of it: held so, it goes to the device as it lies.  The price is in the
    matrix-matrix products of a prompt, which XLA:CPU runs slower over ``[N, K]`` (GPT-2 small's
    32-token prefill: 143 against 125 ms CPU), once per generation against every token's gain.

    A graph with data-dependent sizes (lowering/jax/padding.py) runs on padded buffers: ``apply``
    returns its outputs padded, then the valid length of each unbacked dim in ``lengths_out``;
    ``crop`` slices them to those lengths, outside any jit.
    """

    def __init__(self, graph: Graph, *, rows_of_outputs: bool = False):
        check_lowerable(graph)
        self.graph = graph
        self.padded = bool(unbacked_dims(graph))
        self.needs_x64 = _needs_x64(graph) or self.padded  # lengths and indices are i64
        self.lengths_out = output_symbols(graph)
        graphs = _graphs(graph)
        self._prefixes = {id(g): str(i) for i, g in enumerate(graphs)}
        conv_layouts = _weight_layouts(graphs, self._prefixes)
        rows = _linear_weight_layouts(graphs, self._prefixes) if rows_of_outputs else {}
        self.layouts = {**rows, **conv_layouts}
        self.params: dict[str, np.ndarray] = {}
        self._small: dict[str, np.ndarray] = {}
        self._splats: dict[str, tuple[np.ndarray, tuple[int, ...]]] = {}  # key -> (scalar, shape held in)
        for g in graphs:
            for name, arr in g.constants.items():
                key = constant_key(self._prefixes[id(g)], name)
                held = np.transpose(arr, self.layouts[key]) if key in self.layouts else arr
                scalar = splat_scalar(held)
                if scalar is not None:
                    self._splats[key] = (scalar, held.shape)
                elif key in conv_layouts:
                    self._small[key] = held
                else:
                    (self.params if arr.size > PARAM_MIN_ELEMENTS else self._small)[key] = held
        self._device_params: dict[Any, dict[str, Any]] = {}
        self.check_messages: list[str] = []  # the messages of the checks ``apply`` returns last, in order

    def apply(self, params: Mapping[str, Any], *inputs: Any) -> list:
        lowering = Lowering(self._prefixes, params, self._small, self.layouts, self._splats,
                            lengths={} if self.padded else None, checks=[] if self.padded else None)
        outs = lowering.run(self.graph, *inputs)
        if not self.padded:
            return outs
        self.check_messages = [message for _, message in lowering.checks]
        return (outs + [jnp.asarray(lowering.lengths[s], jnp.int64) for s in self.lengths_out]
                + [ok for ok, _ in lowering.checks])

    def crop(self, results: Sequence[Any]) -> list:
        """``apply``'s results as the graph's outputs: each padded buffer sliced to its valid lengths."""
        if not self.padded:
            return list(results)
        n, m = len(self.graph.outputs), len(self.lengths_out)
        for ok, message in zip(jax.device_get(list(results[n + m:])), self.check_messages):
            if not bool(ok):
                raise InputError(message)
        lengths = dict(zip(self.lengths_out, (int(k) for k in jax.device_get(list(results[n:n + m])))))
        outs = []
        for v, o in zip(self.graph.outputs, results[:n]):
            cut = tuple(slice(0, lengths[d]) if d in lengths else slice(None) for d in v.shape)
            outs.append(o[cut] if any(c.stop is not None for c in cut) else o)
        return outs

    def embedded(self, *inputs: Any) -> list:
        """``apply`` with the constants baked in: a self-contained function for export."""
        return self.apply(self.params, *inputs)

    def device_params(self, device: Any = None) -> dict[str, Any]:
        """The large constants as jax arrays on ``device`` (default: jax's first device), made once."""
        device = device or jax.devices()[0]
        if device not in self._device_params:
            placed: dict[tuple, Any] = {}  # one device array for constants that are the same memory (a tied
            # embedding and the lm head's weight held by rows)

            def put(a: np.ndarray) -> Any:
                where = memory_key(a)
                if where not in placed:
                    placed[where] = jax.device_put(a, device)
                return placed[where]
            with x64_scope(self.needs_x64):
                self._device_params[device] = {k: put(v) for k, v in self.params.items()}
        return self._device_params[device]

    def __call__(self, *inputs: Any) -> list:
        with x64_scope(self.needs_x64):
            return self.crop(self.apply(self.device_params(), *[to_jax_array(x) for x in inputs]))


def to_jax(graph: Graph, *, rows_of_outputs: bool = False) -> JaxFunction:
    """``graph`` as a callable over jax arrays (a LoweringError first if it cannot be expressed);
    ``rows_of_outputs``: see :class:`JaxFunction`."""
    return JaxFunction(graph, rows_of_outputs=rows_of_outputs)


def framework_of(x: Any) -> str:
    mod = type(x).__module__
    if mod.startswith("torch"):
        return "torch"
    if isinstance(x, jax.Array):
        return "jax"
    return "numpy"


def to_jax_array(x: Any, device: Any = None) -> Any:
    """A jax array of x, sharing memory where it can; moved only if it is on another
    device than ``device``.

    A torch CPU tensor goes in as its numpy view, like a numpy array, not through DLPack:
    the owner of a DLPack buffer is released by torch's deleter on whichever XLA thread
    drops the buffer last, and that deleter takes the GIL; at interpreter exit the thread
    cannot have it, exits inside XLA's C++ frames and aborts the process ("terminate
    called without an active exception").  jax releases the numpy owner of the host
    buffers it aliases on a Python thread.  Tensors on other devices go through DLPack.
    """
    kind = framework_of(x)
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


def from_jax_array(x: Any, kind: str) -> Any:
    if kind == "torch":
        import torch
        return torch.from_dlpack(x)
    if kind == "numpy":
        return np.asarray(x)
    return x


def lower_via_decomposition(ctx, *args, **attrs):
    """Lower a composite that has no rule of its own through its decomposition into core ops."""
    node = ctx.node
    try:
        scratch = Graph.decomposition(node.op, [v.type for v in node.inputs], node.attrs, node.meta,
                                      [v.name for v in node.inputs])
    except registry.TypeRuleError as e:
        raise LoweringError(f"jax lowering of {node.describe()}: {e}") from None
    prefix = f"{node.op}_decomposition"
    sub = Lowering({id(scratch): prefix}, {}, {constant_key(prefix, k): v for k, v in scratch.constants.items()})
    return sub.run(scratch, *args, bindings=ctx.bindings)
