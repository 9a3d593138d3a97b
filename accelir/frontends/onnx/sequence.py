"""ONNX sequence rules: sequences of a length known at import are unrolled.

The IR holds tensors only.  A sequence whose length the importer can tell (SequenceConstruct,
SequenceEmpty followed by SequenceInsert, SplitToSequence of a static dim or with a split of
known length) is kept at import as a :class:`StaticSequence`, one Value per item, and each
sequence op rewrites that list: SequenceAt and SequenceErase / SequenceInsert at positions
known at import pick and edit items, SequenceLength is a constant, ConcatFromSequence
concatenates (or stacks, ``new_axis``) the items and SequenceMap applies its body item by
item.  No sequence node reaches the graph, so both backends run the result as plain tensor ops.
What cannot be unrolled is refused at the node, saying why: a length or position known only at
run time, an empty sequence concatenated, mixed element types, more items or unrolled nodes
than ``MAX_UNROLLED_NODES`` (the import's time and memory stay bounded).  A sequence as a graph input or
output is refused by the driver; Loop and If carry static sequences (control_flow.py).
"""

from __future__ import annotations

from typing import Sequence

from ... import dims as D
from ...ir import DType, Value
from .context import (MAX_UNROLLED_NODES, DynamicValueError, ImportScope, NodeContext, OnnxImportError,
                      StaticSequence, check_unrolled, norm_axis, onnx_dtype, rule)

__all__: list[str] = []

# the ops whose inputs may be sequences; any other op given one is refused by the driver
TAKES_SEQUENCES = frozenset({"SequenceAt", "SequenceLength", "SequenceInsert", "SequenceErase", "ConcatFromSequence",
                             "SequenceMap", "Identity", "Loop", "If"})


def sequence_input(ctx: NodeContext, i: int) -> StaticSequence:
    """Input ``i``, which must be a sequence."""
    s = ctx.input(i)
    if not isinstance(s, StaticSequence):
        raise OnnxImportError(f"{ctx.label}: input {i} must be a sequence, got a tensor"
                              + (f" {s.type}" if isinstance(s, Value) else ""))
    return s


def _tensors(ctx: NodeContext, values: Sequence[Value], what: str) -> DType:
    """The one dtype of ``values`` (the items of a new sequence), or the error naming the mismatch."""
    dtypes = sorted({v.dtype.name for v in values})
    if len(dtypes) != 1:
        raise OnnxImportError(f"{ctx.label}: {what} mix element types {dtypes}; a sequence holds one type")
    return values[0].dtype


def _position(ctx: NodeContext, i: int, n: int, high: int, default: int) -> int:
    """Input ``i`` (a position into a sequence of ``n`` items, ``default`` when absent), which must
    be known at import and within [-n, high]: negative counts from the back, as in Python's list."""
    pos: tuple = (default,)
    if ctx.input(i) is not None:
        pos = ctx.ints(i, "position")
        if len(pos) != 1 or type(pos[0]) is not int:
            raise OnnxImportError(f"{ctx.label}: its position (input {i}) must be one integer, got {list(pos)}")
    if not -n <= pos[0] <= high:
        raise OnnxImportError(f"{ctx.label}: position {pos[0]} is out of range [{-n}, {high}] for a sequence of "
                              f"{n} items")
    return int(pos[0])


@rule("SequenceEmpty")
def _sequence_empty(ctx: NodeContext):
    dtype = onnx_dtype(ctx.attr("dtype", 1), f"{ctx.label} dtype")
    return [StaticSequence((), dtype)]


@rule("SequenceConstruct")
def _sequence_construct(ctx: NodeContext):
    items = [v for v in ctx.inputs if v is not None]
    if not items:
        raise OnnxImportError(f"{ctx.label}: SequenceConstruct needs at least one tensor (SequenceEmpty makes "
                              "an empty sequence)")
    return [StaticSequence(tuple(items), _tensors(ctx, items, "its inputs"))]


@rule("SequenceLength")
def _sequence_length(ctx: NodeContext):
    return [ctx.scalar(len(sequence_input(ctx, 0).items), DType.i64)]


@rule("SequenceAt")
def _sequence_at(ctx: NodeContext):
    s = sequence_input(ctx, 0)
    n = len(s.items)
    return [s.items[_position(ctx, 1, n, n - 1, 0)]]


@rule("SequenceInsert")
def _sequence_insert(ctx: NodeContext):
    s = sequence_input(ctx, 0)
    t = ctx.input(1)
    if isinstance(t, StaticSequence):
        raise OnnxImportError(f"{ctx.label}: inserts a sequence into a sequence; sequences of sequences are out "
                              "of scope")
    if t.dtype is not s.dtype:
        raise OnnxImportError(f"{ctx.label}: inserts a {t.dtype} tensor into {s.describe()}; a sequence holds "
                              "one type")
    n = len(s.items)
    items = list(s.items)
    items.insert(_position(ctx, 2, n, n, n), t)
    return [StaticSequence(tuple(items), s.dtype)]


@rule("SequenceErase")
def _sequence_erase(ctx: NodeContext):
    s = sequence_input(ctx, 0)
    n = len(s.items)
    items = list(s.items)
    del items[_position(ctx, 1, n, n - 1, -1)]
    return [StaticSequence(tuple(items), s.dtype)]


@rule("SplitToSequence")
def _split_to_sequence(ctx: NodeContext):
    x = ctx.input(0)
    ax = norm_axis(ctx, ctx.attr("axis", 0), x.rank)
    dim = x.shape[ax]
    split = ctx.input(1)
    if split is not None and split.rank == 1 and type(split.shape[0]) is int and ctx.dynamic(1):
        # sizes known only at run time, but how many: the pieces' extents are data-dependent dims
        _check_items(ctx, split.shape[0])
        items = ctx.ops("split_dynamic", x, split, axis=ax, outputs=split.shape[0])
        return [StaticSequence(tuple(items), x.dtype)]
    if split is None:
        if type(dim) is not int:
            raise _unknown_length(ctx, f"it splits symbolic dim {dim!r} of {x.type} into pieces of 1")
        _check_items(ctx, dim)
        pieces = [ctx.op("slice", x, starts=(i,), stops=(i + 1,), axes=(ax,)) for i in range(dim)]
        if not ctx.attr("keepdims", 1):
            pieces = [ctx.op("squeeze", p, axes=(ax,)) for p in pieces]
        return [StaticSequence(tuple(pieces), x.dtype)]
    if split.rank == 0:
        if ctx.dynamic(1):
            raise _unknown_length(ctx, "its split (input 1) is a size known only at run time")
        size = ctx.ints(1, "split")[0]
        if type(size) is not int or type(dim) is not int:
            raise _unknown_length(ctx, f"it splits dim {dim!r} of {x.type} into pieces of {size!r}")
        if size <= 0:
            raise OnnxImportError(f"{ctx.label}: split size {size} must be positive")
        _check_items(ctx, -(-dim // size))
        sizes: list[D.Dim] = [min(size, dim - start) for start in range(0, dim, size)]
    else:
        _check_items(ctx, split.shape[0] if split.rank == 1 and type(split.shape[0]) is int else 0)
        sizes = list(ctx.ints(1, "split"))
        if any(type(s) is int and s < 0 for s in sizes):
            raise OnnxImportError(f"{ctx.label}: split sizes {sizes} must not be negative")
    pieces: list[Value] = []
    start: D.Dim = 0
    for size in sizes:
        stop = D.dim_add(start, size)
        pieces.append(ctx.op("slice", x, starts=(start,), stops=(stop,), axes=(ax,)))
        start = stop
    if type(start) is int and type(dim) is int and start != dim:
        raise OnnxImportError(f"{ctx.label}: split sizes {sizes} add up to {start}, not to dim {ax}'s {dim}")
    return [StaticSequence(tuple(pieces), x.dtype)]


def _check_items(ctx: NodeContext, n: int) -> None:
    """Refuse, before building them, more items than one unrolling may build nodes: one slice each."""
    if n > MAX_UNROLLED_NODES:
        raise ctx.unsupported(f"it splits into {n:,} items, over the {MAX_UNROLLED_NODES:,} that a sequence unrolled "
                              "at import may hold (one node each); split into fewer, larger pieces")


def _unknown_length(ctx: NodeContext, why: str) -> DynamicValueError:
    return DynamicValueError(f"{ctx.label}: the sequence's length is not known at import ({why}); accelir unrolls "
                             "sequences of a static length only: fix the dim in the model, or bind the inputs "
                             "it comes from with import_onnx(..., static_inputs=...)",
                             ctx.imp.graph_inputs_behind(ctx.input(0)))


@rule("ConcatFromSequence")
def _concat_from_sequence(ctx: NodeContext):
    s = sequence_input(ctx, 0)
    if not s.items:
        raise OnnxImportError(f"{ctx.label}: concatenates an empty sequence, whose result has no shape to take")
    new_axis = bool(ctx.attr("new_axis", 0))
    rank = s.items[0].rank
    ax = norm_axis(ctx, ctx.attr("axis"), rank + new_axis)
    items = [ctx.op("unsqueeze", v, axes=(ax,)) for v in s.items] if new_axis else list(s.items)
    return [items[0] if len(items) == 1 else ctx.op("concat", *items, axis=ax)]


@rule("SequenceMap")
def _sequence_map(ctx: NodeContext):
    """The body applied to each item (a sequence input gives its item, a tensor input itself),
    its outputs gathered into sequences."""
    body = ctx.attrs["body"]
    first = sequence_input(ctx, 0)
    n = len(first.items)
    for i, v in enumerate(ctx.inputs):
        if isinstance(v, StaticSequence) and len(v.items) != n:
            raise OnnxImportError(f"{ctx.label}: its sequences differ in length ({n} and {len(v.items)} at input "
                                  f"{i})")
    outs: list[list[Value]] = [[] for _ in body.output]
    start = ctx.graph.num_nodes(recursive=False)
    for k in range(n):
        check_unrolled(ctx, start, k, "its body is imported once per item", "map over fewer, larger items")
        scope = ImportScope(ctx.imp, ctx.graph, ctx.scope, ctx.scope.opsets, closed=False,
                            origin_prefix=f"{ctx.scope.origin_prefix}{ctx.node.name or 'SequenceMap'}/{k}/")
        for vi, v in zip(body.input, ctx.inputs):
            scope.define(vi.name, v.items[k] if isinstance(v, StaticSequence) else v)
        for j, v in enumerate(ctx.imp.translate(body, scope, None, f"body of {ctx.label}, item {k}")):
            outs[j].append(v)
    dtypes = [onnx_dtype(vi.type.tensor_type.elem_type, f"{ctx.label} output {j}")
              if not outs[j] else _tensors(ctx, outs[j], f"the body's output {j}") for j, vi in enumerate(body.output)]
    return [StaticSequence(tuple(items), dt) for items, dt in zip(outs, dtypes)]
