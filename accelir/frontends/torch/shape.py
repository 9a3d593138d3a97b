"""aten shape rules: view / reshape, permute, slicing, split / cat / stack, flip / roll, pad."""

from __future__ import annotations

from ... import dims as D
from ...ir import DType, Value
from ..decompositions import crop_negative_pads, wrap_pad
from .context import RULES, NodeContext, rule, slice_bounds, wrap_axis

__all__: list[str] = []


# ----- shape ops ---------------------------------------------------------------------

def _to_out_shape(ir_op: str):
    """A rule that gives ``self`` the node's output shape through ``ir_op`` (nothing when it has it)."""
    def to_out_shape(ctx, a):
        x = ctx.value(a["self"])
        shape = ctx.out_shape
        return x if x.shape == shape else ctx.b.op(ir_op, x, shape=shape)
    return to_out_shape


RULES.add(_to_out_shape("reshape"), "view", "_unsafe_view", "reshape", "flatten", "unflatten", "view_copy",
          "_reshape_alias", "squeeze", "squeeze_copy", "ravel", "atleast_1d", "atleast_2d", "atleast_3d",
          "reshape_as")
RULES.add(_to_out_shape("broadcast_to"), "expand", "expand_as", "broadcast_to", "expand_copy")


@rule("unsqueeze", "unsqueeze_copy")
def _unsqueeze(ctx, a):
    x = ctx.value(a["self"])
    return ctx.b.op("unsqueeze", x, axes=(wrap_axis(a["dim"], x.rank + 1),))


@rule("permute", "permute_copy")
def _permute(ctx, a):
    x = ctx.value(a["self"])
    perm = tuple(wrap_axis(d, x.rank) for d in a["dims"])
    return x if perm == tuple(range(x.rank)) else ctx.b.op("transpose", x, perm=perm)


@rule("transpose", "swapaxes", "swapdims", "transpose_copy")
def _transpose(ctx, a):
    x = ctx.value(a["self"])
    d0, d1 = (wrap_axis(a[k], x.rank) for k in (("dim0", "dim1") if "dim0" in a else ("axis0", "axis1")))
    perm = list(range(x.rank))
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return x if d0 == d1 else ctx.b.op("transpose", x, perm=tuple(perm))


@rule("t", "numpy_T", "mT")
def _t(ctx, a):
    x = ctx.value(a["self"])
    if x.rank < 2:
        return x
    perm = list(range(x.rank))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    if ctx.name in ("t", "numpy_T"):
        perm = list(reversed(range(x.rank)))
    return ctx.b.op("transpose", x, perm=tuple(perm))


@rule("slice", "slice_copy")
def _slice(ctx, a):
    x = ctx.value(a["self"])
    ax = wrap_axis(a["dim"], x.rank)
    step = ctx.scalar_of(a["step"])
    start, end = ctx.scalar_of(a["start"]), ctx.scalar_of(a["end"])
    lo, hi = slice_bounds(x.shape[ax], start, end, step)
    if lo == 0 and hi == x.shape[ax] and step == 1:
        return x
    return ctx.b.op("slice", x, starts=(lo,), stops=(hi,), steps=(step,), axes=(ax,))


@rule("diff")
def _diff(ctx, a):
    """diff(x, n, dim, prepend, append): n times x[1:] - x[:-1] along dim (xor for bool)."""
    dt = ctx.out_dtype
    x = ctx.cast(ctx.value(a["self"]), dt)
    ax = wrap_axis(a["dim"], x.rank)
    pre, post = a.get("prepend"), a.get("append")
    parts = ([ctx.cast(ctx.value(pre), dt)] if pre is not None else []) + [x] + \
        ([ctx.cast(ctx.value(post), dt)] if post is not None else [])
    if len(parts) > 1:
        x = ctx.b.op("concat", *parts, axis=ax)
    for _ in range(a["n"]):
        size = x.shape[ax]
        hi = ctx.b.op("slice", x, starts=(1,), stops=(size,), steps=(1,), axes=(ax,))
        lo = ctx.b.op("slice", x, starts=(0,), stops=(D.dim_sub(size, 1),), steps=(1,), axes=(ax,))
        x = ctx.b.op("ne" if dt is DType.bool else "sub", hi, lo)
    return x


@rule("narrow", "narrow_copy")
def _narrow(ctx, a):
    x = ctx.value(a["self"])
    ax = wrap_axis(a["dim"], x.rank)
    start = ctx.scalar_of(a["start"])
    if type(start) is int and start < 0:
        start = D.dim_add(x.shape[ax], start)
    stop = D.dim_add(start, ctx.scalar_of(a["length"]))
    return ctx.b.op("slice", x, starts=(start,), stops=(stop,), steps=(1,), axes=(ax,))


@rule("select", "select_copy")
def _select(ctx, a):
    x = ctx.value(a["self"])
    ax = wrap_axis(a["dim"], x.rank)
    index = ctx.scalar_of(a["index"])
    if isinstance(index, str) or type(x.shape[ax]) is not int:
        idx = ctx.dim_value(index) if isinstance(index, str) else ctx.const(index, DType.i64)
        return ctx.b.op("gather", x, idx, axis=ax)
    index = index % x.shape[ax]
    s = ctx.b.op("slice", x, starts=(index,), stops=(index + 1,), steps=(1,), axes=(ax,))
    return ctx.b.op("squeeze", s, axes=(ax,))


def _pieces(ctx: NodeContext, x: Value, ax: int, sizes: list[D.Dim]) -> tuple[Value, ...]:
    outs, start = [], 0
    for size in sizes:
        stop = D.dim_add(start, size)
        outs.append(ctx.b.op("slice", x, starts=(start,), stops=(stop,), steps=(1,), axes=(ax,)))
        start = stop
    return tuple(outs)


@rule("split", "split_with_sizes", "chunk", "tensor_split", "unsafe_split", "split_copy",
      "split_with_sizes_copy", "unsafe_chunk")
def _split(ctx, a):
    """Split along a dim; the piece sizes are read from torch's results."""
    x = ctx.value(a["self"])
    ax = wrap_axis(a["dim"], x.rank)
    sizes = [t.shape[ax] for t in ctx.out_types()]
    return _pieces(ctx, x, ax, sizes)


@rule("unbind", "unbind_copy")
def _unbind(ctx, a):
    x = ctx.value(a["self"])
    ax = wrap_axis(a["dim"], x.rank)
    return tuple(ctx.b.op("squeeze", p, axes=(ax,)) for p in _pieces(ctx, x, ax, [1] * x.shape[ax]))


@rule("cat", "concat", "concatenate")
def _cat(ctx, a):
    dt = ctx.out_dtype
    vals = [ctx.cast(ctx.value(t), dt) for t in a["tensors"]]
    # torch lets legacy 1-D empty tensors join any cat
    vals = [v for v in vals if not (v.rank == 1 and v.shape[0] == 0)] or vals[:1]
    if len(vals) == 1:
        return vals[0]
    return ctx.b.op("concat", *vals, axis=wrap_axis(a["dim"], vals[0].rank))


@rule("stack")
def _stack(ctx, a):
    dt = ctx.out_dtype
    vals = [ctx.cast(ctx.value(t), dt) for t in a["tensors"]]
    ax = wrap_axis(a["dim"], vals[0].rank + 1)
    vals = [ctx.b.op("unsqueeze", v, axes=(ax,)) for v in vals]
    return vals[0] if len(vals) == 1 else ctx.b.op("concat", *vals, axis=ax)


@rule("meshgrid")
def _meshgrid(ctx, a):
    """Each 0-d / 1-d tensor laid along its own axis and broadcast to the common grid; "xy"
    indexing swaps the first two axes (the cartesian convention)."""
    indexing = a.get("indexing") or "ij"
    if indexing not in ("ij", "xy"):
        raise ctx.unsupported(f"meshgrid indexing {indexing!r} is not supported ('ij' and 'xy' are)")
    vals = [ctx.value(t) for t in a["tensors"]]
    grid = ctx.out_types()[0].shape
    outs = []
    for i, v in enumerate(vals):
        ax = {0: 1, 1: 0}.get(i, i) if indexing == "xy" and len(vals) > 1 else i
        shape = tuple(grid[ax] if k == ax else 1 for k in range(len(grid)))
        outs.append(ctx.b.op("broadcast_to", ctx.b.op("reshape", v, shape=shape), shape=grid))
    return tuple(outs)


@rule("flip")
def _flip(ctx, a):
    x = ctx.value(a["self"])
    return ctx.b.op("reverse", x, axes=tuple(sorted({wrap_axis(d, x.rank) for d in a["dims"]})))


@rule("roll")
def _roll(ctx, a):
    x = ctx.value(a["self"])
    shifts, dims = list(a["shifts"]), list(a["dims"])
    if not dims:
        flat = ctx.b.op("reshape", x, shape=(x.type.numel,))
        return ctx.b.op("reshape", _roll_axis(ctx, flat, shifts[0], 0), shape=x.shape)
    for s, d in zip(shifts, dims):
        x = _roll_axis(ctx, x, s, wrap_axis(d, x.rank))
    return x


def _roll_axis(ctx: NodeContext, x: Value, shift: int, ax: int) -> Value:
    n = x.shape[ax]
    if type(n) is not int:
        raise ctx.unsupported("roll along a symbolic dim is not supported")
    k = shift % n if n else 0
    if k == 0:
        return x
    tail = ctx.b.op("slice", x, starts=(n - k,), stops=(n,), steps=(1,), axes=(ax,))
    head = ctx.b.op("slice", x, starts=(0,), stops=(n - k,), steps=(1,), axes=(ax,))
    return ctx.b.op("concat", tail, head, axis=ax)


@rule("repeat", "tile")
def _repeat(ctx, a):
    x = ctx.value(a["self"])
    reps = ctx.dims(a["repeats"] if "repeats" in a else a["dims"])
    if ctx.name == "tile" and len(reps) < x.rank:
        reps = [1] * (x.rank - len(reps)) + reps
    shape = [1] * (len(reps) - x.rank) + list(x.shape)
    if len(shape) != x.rank:
        x = ctx.b.op("reshape", x, shape=tuple(shape))
    inter = tuple(d for pair in zip([1] * len(shape), shape) for d in pair)
    wide = tuple(d for pair in zip(reps, shape) for d in pair)
    y = ctx.b.op("broadcast_to", ctx.b.op("reshape", x, shape=inter), shape=wide)
    return ctx.b.op("reshape", y, shape=ctx.out_shape)


@rule("repeat_interleave")
def _repeat_interleave(ctx, a):
    if ctx.is_tensor(a["repeats"]) or a.get("dim") is None:
        raise ctx.unsupported("repeat_interleave with tensor repeats or without dim is not supported")
    x = ctx.value(a["self"])
    ax, rep = wrap_axis(a["dim"], x.rank), ctx.dim(a["repeats"])
    u = ctx.b.op("unsqueeze", x, axes=(ax + 1,))
    shape = x.shape[:ax + 1] + (rep,) + x.shape[ax + 1:]
    return ctx.b.op("reshape", ctx.b.op("broadcast_to", u, shape=shape), shape=ctx.out_shape)


@rule("constant_pad_nd", "pad")
def _pad(ctx, a):
    x = ctx.value(a["self"])
    pad = list(a["pad"])
    mode = a.get("mode", "constant")
    value = a.get("value") or 0.0
    pairs = [(0, 0)] * x.rank
    for i in range(len(pad) // 2):
        pairs[x.rank - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    x = crop_negative_pads(ctx.b, x, pairs)
    pairs = tuple((max(lo, 0), max(hi, 0)) for lo, hi in pairs)
    if mode == "circular":
        return wrap_pad(ctx.b, x, pairs)
    ir_mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}.get(mode)
    if ir_mode is None:
        raise ctx.unsupported(f"pad mode {mode!r} is not supported (constant, reflect, replicate, circular are)")
    if all(p == (0, 0) for p in pairs):
        return x
    return ctx.b.op("pad", x, pads=pairs, mode=ir_mode, value=float(value))


@rule("reflection_pad1d", "reflection_pad2d", "reflection_pad3d", "replication_pad1d", "replication_pad2d",
      "replication_pad3d")
def _pad_mode(ctx, a):
    mode = "reflect" if ctx.name.startswith("reflection") else "replicate"
    return _pad(ctx, {"self": a["self"], "pad": a["padding"], "mode": mode, "value": 0.0})
