"""Which nodes of a graph with data-dependent sizes XLA can run padded, and why the others not.

XLA compiles static shapes.  A dim the data decides (an unbacked dim, accelir/unbacked.py) is
held on XLA as a buffer of the dim's upper bound plus a valid length, a traced scalar: the
first ``length`` entries along that axis are the value, the rest is padding whose contents
are unspecified.  A node is lowered on such buffers only where that is provably right:

- *producers* (``PRODUCERS``) compute the padded buffer and the length; their bound comes from
  their input shapes (NonZero: the element count; Compress, TopK and Slice: the axis size; ...);
  a ConstantOfShape carries its own (``bound``: the range torch.export recorded for an ``.item()``);
- *transparent* nodes work on the padded buffer as they are: each valid output entry reads
  only valid input entries (elementwise ops, transposes, a gather whose indices are padded);
- *masked* nodes (``MASKED``) mix entries along an unbacked axis (a reduction over it, a top-k
  along it, a gather reading it): their padded rule masks the padding first;
- *deriving* nodes (``DERIVING``) give an axis whose size is an expression of unbacked dims (a
  slice from or to one, a join of padded parts, a padded axis merged with static ones): their
  padded rule packs the valid entries to the front of a buffer of the expression's upper bound
  (lowering/jax/padded_dims.py), and later nodes treat that dim as they treat an unbacked one;
- where an elementwise op, a broadcast or a concat (off its axis) takes a static size to be a
  padded one (a join of a split's parts against the whole), the padded rule checks the two agree
  at run time and cuts or pads the buffer to the output's (lowering/jax/padded_shape.py).

Everything else that meets an unbacked dim is refused before tracing, naming the node and
the dim, with ``backend="onnxruntime"`` as the remedy: a node is either padded-correct or
refused, never silently wrong.  At the graph outputs the runner slices each buffer to its
length, outside jit, so one compiled program serves every length.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from accelir import dims as D
from accelir.errors import LoweringError
from accelir.ir import Graph, Node, TensorType
from accelir.ops import registry
from accelir.ops.dynamic import DATA_DEPENDENT_OPS
from accelir.unbacked import Unbacked, introduced, unbacked_dims, why_data_dependent

from .padded_dims import dim_range, mentions, run_time_value

__all__ = ["PRODUCERS", "MASKED", "DERIVING", "bounded", "check_padding", "output_symbols", "introduced_sizes",
           "unbacked_axes", "refusal", "no_bound", "note_lengths", "meets_padding"]

# data-dependent ops whose output size has an upper bound given their input shapes
PRODUCERS = frozenset({"nonzero", "compress", "unique", "non_max_suppression", "topk_dynamic", "slice_dynamic"})
# ops whose padded rule masks the padding of an axis it mixes (reduced, sorted, indexed)
MASKED = frozenset({"reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod", "reduce_any",
                    "reduce_all", "argmax", "argmin", "topk", "sort", "gather", "softmax", "log_softmax", "cumsum",
                    "cumprod", "cummax", "cummin"})
# ops whose padded rule gives an axis sized by an expression of data-dependent dims (padded_dims.py)
DERIVING = frozenset({"slice", "concat", "reshape"})
# ops that move entries without mixing them along any axis
_MOVERS = frozenset({"transpose", "squeeze", "unsqueeze", "iota", "constant"})
# ops that mix entries along the axes ``_mixed_axes`` names; fine where none of those is unbacked
_AXIS_OPS = frozenset({"layer_norm", "rms_norm", "concat", "take_along_axis", "matmul", "linear", "slice", "reverse"})

REMEDY = 'compile with backend="onnxruntime", which runs data-dependent sizes as they come'


def unbacked_axes(t: TensorType, syms: Any) -> dict[int, str]:
    """The axes of ``t`` whose dim is exactly one of the unbacked symbols ``syms``."""
    return {k: d for k, d in enumerate(t.shape) if isinstance(d, str) and d in syms}


def _mentions(d: Any, syms: Any) -> set[str]:
    return set(D.symbols(d)) & set(syms) if isinstance(d, str) else set()


def refusal(node: Node, why: str) -> LoweringError:
    """The one-line refusal of ``node`` on XLA: what it does with the data-dependent dim, and the remedy."""
    return LoweringError(f"{node.describe()}: {why}; the XLA lowering pads data-dependent sizes only where the "
                         f"result is provably the same; {REMEDY}")


def no_bound(node: Node) -> LoweringError:
    """The refusal of a data-dependent op whose size has no upper bound to pad to."""
    return LoweringError(why_data_dependent(node).replace(
        "and this backend needs static sizes", "it has no upper bound, and XLA needs static sizes"))


def _touched(node: Node, syms: Any) -> set[str]:
    """The unbacked symbols in ``node``'s input / output types and its dims attributes."""
    found: set[str] = set()
    for v in (*node.inputs, *node.outputs):
        for d in v.shape:
            found |= _mentions(d, syms)
    for k, spec in registry.get(node.op).attrs.items():
        if spec.kind == "dims":
            for d in node.attrs.get(k) or ():
                found |= _mentions(d, syms)
    return found


def meets_padding(node: Node, lengths: Mapping[str, Any]) -> bool:
    """Whether ``node`` introduces a data-dependent dim or meets one already lowered (``lengths``): only such a
    node needs its padded rule; any other lowers by its own, which keeps the layouts of a conv's values."""
    return bool(introduced(node)) or bool(_touched(node, lengths))


def _mixed_axes(node: Node) -> list[tuple[int, int]]:
    """(input index, axis) pairs along which ``node`` mixes entries (an op of ``_AXIS_OPS``)."""
    x = node.inputs[0]
    if node.op in ("matmul", "linear"):  # linear's w is [K, N] as matmul's
        w = node.inputs[1]
        return [(0, x.rank - 1), (1, max(w.rank - 2, 0))]
    if node.op == "concat":
        return [(i, node.attrs["axis"] % x.rank) for i in range(len(node.inputs))]
    if node.op == "slice":
        return [(0, a % x.rank) for a in node.attrs["axes"]]
    if node.op == "reverse":
        return [(0, a % x.rank) for a in node.attrs["axes"]]
    if node.op in ("layer_norm", "rms_norm"):
        return [(0, a) for a in range(node.attrs["axis"] % x.rank, x.rank)]
    return [(0, node.attrs["axis"] % x.rank)]


def _bare(node: Node, syms: Any) -> str | None:
    """Why a value of ``node`` holds an unbacked symbol other than as a whole dim, or None."""
    for v in node.outputs:
        for d in v.shape:
            if _mentions(d, syms) and d not in syms:
                return f"its output dim {d} is computed from a data-dependent dim"
    return None


def _why_aligned(shapes: Sequence[Sequence[Any]], out: Sequence[Any], syms: Any, broadcasts: bool,
                 skip: int | None = None) -> str | None:
    """Why a type rule took a dim of ``shapes`` (each right-aligned with ``out``; axis ``skip`` aside) to equal
    the output's where one of the two is a data-dependent dim and they differ, or None.  The rule assumes the
    sizes agree at run time; on padded buffers they do not line up, or the padding is read as values, so
    each data-dependent dim must reach the output as itself (a broadcast 1 aside)."""
    for i, shape in enumerate(shapes):
        for k, d in enumerate(shape):
            j = len(out) - len(shape) + k
            o = out[j]
            if j == skip or d == o or (broadcasts and d == 1) or not (d in syms or o in syms):
                continue
            if d in syms:
                return f"it broadcasts the data-dependent dim {d} against size {o}"
            return f"it takes dim {j} of input {i} ({d}) to be the data-dependent dim {o}"
    return None


def _why_assumed_equal(node: Node, syms: Any) -> str | None:
    """Matmul's batch dims are taken equal across inputs by the type rule (concat's dims off its axis too,
    but its padded rule checks them at run time and aligns the buffers)."""
    out = node.outputs[0].shape
    if node.op == "matmul" and min(v.rank for v in node.inputs[:2]) >= 2:
        return _why_aligned([v.shape[:-2] for v in node.inputs[:2]], out[:-2], syms, broadcasts=True)
    return None


def _reshape_keeps_axes(node: Node, syms: Any) -> bool:
    """A reshape keeps padding right when each padded dim stays one dim, alone or merged with the
    static dims right after it (or split into a padded dim and static dims after it), with the same
    extent before and after it: the valid entries are then the front of the merged axis (the first
    ``n * 64`` of ``[n, 64]`` flattened), and the padded buffer reshapes as the value does."""
    src, dst = node.inputs[0].shape, node.outputs[0].shape
    held: set[int] = set()
    for i, s in enumerate(src):
        if s not in syms:
            continue
        j = _merged_at(src, dst, i) if list(src).count(s) == 1 else None
        if j is None:  # or split into a padded axis and static axes after it: the merge read backwards
            j = next((k for k, d in enumerate(dst) if _mentions(d, syms) and _merged_at(dst, src, k) == i), None)
        if j is None:
            return False
        held.add(j)
    return all(j in held for j, d in enumerate(dst) if _mentions(d, syms))


def _merged_at(src: Sequence[Any], dst: Sequence[Any], i: int) -> int | None:
    """The output axis holding input axis ``i`` merged with the static axes right after it (none to all
    of them), the extents before and after it unchanged; None if there is none."""
    for m in range(len(src) - i):
        inner = src[i + 1:i + 1 + m]
        if any(type(d) is not int for d in inner):
            return None
        want = D.dim_mul(src[i], D.dim_prod(inner))
        for j, d in enumerate(dst):
            if d == want and D.dim_prod(src[:i]) == D.dim_prod(dst[:j]) \
                    and D.dim_prod(src[i + 1 + m:]) == D.dim_prod(dst[j + 1:]):
                return j
    return None


def _why_not(node: Node, syms: Any, in_region: bool) -> str | None:
    """Why ``node`` cannot run on padded buffers, or None when it can."""
    op = node.op
    opdef = registry.get(op)
    if op in DATA_DEPENDENT_OPS and not bounded(node):
        return None  # _check refuses it first (no_bound)
    if in_region and bounded(node):
        return "a data-dependent size inside a region (loop or branch body)"
    bare = None if op in DERIVING else _bare(node, syms)
    if bare is not None:
        return bare
    if bounded(node):
        if op == "unique" and unbacked_axes(node.inputs[0].type, syms) and (
                node.attrs["axis"] is not None or node.inputs[0].rank > 1):
            return "unique of slices or of a flattened value whose size is itself data-dependent"
        if op == "compress" and node.attrs["axis"] is None and node.inputs[0].rank > 1 \
                and unbacked_axes(node.inputs[0].type, syms):
            return "compress of a flattened value with a data-dependent dim"
        if op == "non_max_suppression":
            boxes, scores = node.inputs[0].type, node.inputs[1].type
            if set(unbacked_axes(boxes, syms)) - {1} or set(unbacked_axes(scores, syms)) - {2}:
                return "non_max_suppression with a data-dependent batch or class count"
        return None
    if opdef.elementwise or op == "broadcast_to":
        return None  # a size taken equal to a padded one is checked and aligned at run time (padded_shape.py)
    if op == "scatter_elements":
        return _why_scatter(node, syms)
    if op in _MOVERS or op in MASKED:
        return None
    if op == "take_along_axis":  # the rule cuts x to the indices' other dims: those must be x's own
        x, idx = node.inputs[0].shape, node.inputs[1].shape
        ax = node.attrs["axis"] % len(x)
        if any(d in syms and x[k] != d for k, d in enumerate(idx) if k != ax):
            return "a take_along_axis whose indices have a data-dependent dim the value lacks"
    if op == "gather_nd":  # each output entry reads one row of indices; negative ones count from a static end
        return "a gather_nd from a value whose size is data-dependent" \
            if unbacked_axes(node.inputs[0].type, syms) else None
    if op == "reshape":
        return None if _reshape_keeps_axes(node, syms) else \
            "a reshape that merges or splits a data-dependent dim with others"
    if op == "fusion":
        inner = [n.op for r in node.regions for n in r.nodes]
        ok = all(registry.get(o).elementwise or o == "constant" for o in inner)
        # its nodes lower by their own padded rules, which check and align a size taken equal to a padded one
        return None if ok else "a fusion region that is not elementwise"
    if op in _AXIS_OPS:
        assumed = _why_assumed_equal(node, syms)
        if assumed is not None:
            return assumed
        for i, ax in _mixed_axes(node):
            if i < len(node.inputs) and ax < node.inputs[i].rank and node.inputs[i].shape[ax] in syms:
                if op == "concat" or op == "slice" and (_full_slice(node, ax) or _run_time_bounds(node, ax, syms)):
                    continue  # their padded rules pack the valid entries (lowering/jax/padded_shape.py)
                return f"it mixes entries along axis {ax} of input {i}, whose size is data-dependent"
        return None
    return "its lowering is not known to be right on a padded buffer"


def _why_scatter(node: Node, syms: Any) -> str | None:
    """A scatter's indices and updates must share their padded axes (the padding of the indices is dropped),
    and off the scatter axis match the value's where either is padded."""
    x, idx, upd = (v.shape for v in node.inputs)
    ax = node.attrs["axis"] % len(x)
    for k, (a, b) in enumerate(zip(idx, upd)):
        if a != b and (a in syms or b in syms):
            return f"its indices and updates differ on axis {k} ({a}, {b}), one of them data-dependent"
        if k != ax and a != x[k] and (a in syms or x[k] in syms):
            return f"its indices take axis {k} of size {a} to be the value's {x[k]}, one of them data-dependent"
    return None


def _run_time_bounds(node: Node, axis: int, syms: Any) -> bool:
    """Whether a slice's start or stop on ``axis`` is computed from a data-dependent dim: its padded
    rule then reads the bounds at run time, from the valid lengths."""
    a, rank = node.attrs, node.inputs[0].rank
    return any(ax % rank == axis and (_mentions(a["starts"][k], syms) or _mentions(a["stops"][k], syms))
               for k, ax in enumerate(a["axes"]))


def _derive(node: Node, syms: dict[str, Unbacked]) -> None:
    """Record each output dim of a deriving node that is an expression of data-dependent dims as a padded
    dim of its own (``syms``), with its range where the dims it is computed from have one."""
    for v in node.outputs:
        for d in v.shape:
            if _mentions(d, syms) and d not in syms:
                base = {s: syms[s] for s in D.symbols(d) if s in syms}
                found = dim_range(d, lambda s: (base[s].low, base[s].high)
                                  if s in base and base[s].high is not None else None)
                syms[d] = Unbacked(d, node, *(found or (0, None)))


def _full_slice(node: Node, axis: int) -> bool:
    a = node.attrs
    rank = node.inputs[0].rank
    for k, ax in enumerate(a["axes"]):
        if ax % rank == axis:
            step = a["steps"][k] if a["steps"] else 1
            return a["starts"][k] == 0 and a["stops"][k] == node.inputs[0].shape[axis] and step == 1
    return True


def check_padding(graph: Graph) -> None:
    """Raise a LoweringError naming the first node that meets a data-dependent dim in a way XLA cannot
    pad (or a data-dependent op with no upper bound); nothing for a graph without unbacked dims."""
    syms = unbacked_dims(graph)  # each with its bound: a slice to one must stay within its axis
    if not syms:
        return
    _check(graph, syms, in_region=False)
    for v in graph.outputs:
        for d in v.shape:
            if _mentions(d, syms) and d not in syms:
                raise LoweringError(f"graph output {v.name or '?'} has dim {d}, computed from a data-dependent dim; "
                                    f"the XLA lowering slices outputs only to a whole data-dependent dim; {REMEDY}")


def bounded(node: Node) -> bool:
    """Whether a data-dependent ``node`` has an upper bound to pad its sizes to."""
    return node.op in PRODUCERS or (node.op == "constant_of_shape" and node.attrs["bound"] is not None)


def _check(graph: Graph, syms: Any, in_region: bool) -> None:
    for node in graph.nodes:
        if node.op in DATA_DEPENDENT_OPS and not bounded(node):
            raise no_bound(node)
        if _touched(node, syms) or bounded(node):
            why = _why_not(node, syms, in_region)
            if why is not None:
                raise refusal(node, why)
            if node.op in DERIVING:
                _derive(node, syms)
        for region in node.regions:
            _check(region, syms, in_region=True)


def output_symbols(graph: Graph) -> tuple[str, ...]:
    """The data-dependent dims the graph's outputs carry (unbacked symbols and dims derived from them,
    ``check_padding`` refuses others), in order of first appearance: the lengths the padded program
    returns after its outputs."""
    syms = set(unbacked_dims(graph))
    out: list[str] = []
    for v in graph.outputs:
        for d in v.shape:
            if _mentions(d, syms) and d not in out:
                out.append(d)
    return tuple(out)


def note_lengths(lengths: dict[str, Any], node: Node, bindings: Mapping[str, Any]) -> None:
    """Record the valid length of each output dim of ``node`` computed from data-dependent dims that has
    none yet (a derived dim: ``u0+u1``, ``u0//64+1``): the expression on the valid lengths."""
    for v in node.outputs:
        for d in v.shape:
            if type(d) is not int and d not in lengths and mentions(d, lengths):
                lengths[d] = run_time_value(d, lengths, bindings)


def introduced_sizes(node: Node, shapes: Sequence[Sequence[int]]) -> dict[str, int]:
    """The padded size of each unbacked dim ``node`` introduces, read off its outputs' ``shapes``."""
    syms = set(introduced(node))
    out: dict[str, int] = {}
    for v, shape in zip(node.outputs, shapes):
        for d, n in zip(v.shape, shape):
            if isinstance(d, str) and d in syms:
                out[d] = int(n)
    return out
