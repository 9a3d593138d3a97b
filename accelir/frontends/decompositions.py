"""IR idioms that several frontends need, written once.

Each function takes an :class:`~accelir.ir.Builder` (every frontend's rule context
carries one) and builds the IR for one framework idiom that has no IR op of its own.
"""

from __future__ import annotations

from typing import Sequence

from .. import dims as D
from ..ir import Builder, DType, Value

__all__ = ["python_mod", "floor_div", "triangle", "crop_negative_pads", "wrap_pad", "instance_norm", "einsum",
           "parse_einsum", "conv_transpose"]


def _remainder_fix(b: Builder, r: Value, y: Value) -> Value:
    """Where the IR's truncating remainder ``r`` of a division by ``y`` differs in sign from
    Python's: nonzero, and of the other sign than the divisor."""
    zero = b.scalar(0, r)
    return b.op("and", b.op("ne", r, zero), b.op("ne", b.op("lt", r, zero), b.op("lt", y, zero)))


def python_mod(b: Builder, x: Value, y: Value) -> Value:
    """``x % y`` as Python, torch.remainder and ONNX Mod (fmod=0) define it: the result takes
    the divisor's sign.  The IR's ``rem`` truncates (C fmod), so add ``y`` where they differ."""
    r = b.op("rem", x, y)
    return b.op("where", _remainder_fix(b, r, y), b.op("add", r, y), r)


def floor_div(b: Builder, x: Value, y: Value) -> Value:
    """``x // y`` as Python and torch.floor_divide define it.  The IR's integer ``div``
    truncates toward zero, so step the quotient down where the remainder is nonzero and the
    signs differ; floats floor the true quotient."""
    if x.dtype.is_float:
        return b.op("floor", b.op("div", x, y))
    q = b.op("div", x, y)
    fix = _remainder_fix(b, b.op("rem", x, y), y)
    return b.op("sub", q, b.op("cast", fix, dtype=x.dtype))


def triangle(b: Builder, x: Value, k: int | Value, upper: bool) -> Value:
    """``x`` with the elements off its upper (``triu``) or lower (``tril``) triangle set to
    zero, over its last two dims; ``k`` shifts the diagonal (positive: above the main one),
    an int or a run-time i64 scalar."""
    shape2 = tuple(x.shape[-2:])
    rows = b.op("iota", shape=shape2, axis=0, dtype=DType.i64)
    cols = b.op("iota", shape=shape2, axis=1, dtype=DType.i64)
    kv = b.scalar(k, DType.i64) if isinstance(k, int) else k
    keep = b.op("ge" if upper else "le", b.op("sub", cols, rows), kv)
    return b.op("where", keep, x, b.scalar(0, x))


def crop_negative_pads(b: Builder, x: Value, pads: Sequence[tuple[D.Dim, D.Dim]], first_axis: int = 0) -> Value:
    """``x`` with the elements a negative (lo, hi) padding removes dropped, on the axes from
    ``first_axis`` on (the IR's pad takes non-negative amounts only)."""
    starts, stops, axes = [], [], []
    for k, (lo, hi) in enumerate(pads):
        if lo < 0 or hi < 0:
            ax = first_axis + k
            starts.append(-lo if lo < 0 else 0)
            stops.append(D.dim_add(x.shape[ax], hi) if hi < 0 else x.shape[ax])
            axes.append(ax)
    if not axes:
        return x
    return b.op("slice", x, starts=tuple(starts), stops=tuple(stops), axes=tuple(axes))


def wrap_pad(b: Builder, x: Value, pads: Sequence[tuple[int, int]]) -> Value:
    """Wrap-around padding (torch's circular, ONNX Pad's wrap): ``concat(x[-lo:], x, x[:hi])``
    on each padded dim; ``pads`` has one non-negative (lo, hi) pair per dim."""
    for ax, (lo, hi) in enumerate(pads):
        n = x.shape[ax]
        parts = []
        if lo:
            parts.append(b.op("slice", x, starts=(D.dim_sub(n, lo),), stops=(n,), axes=(ax,)))
        parts.append(x)
        if hi:
            parts.append(b.op("slice", x, starts=(0,), stops=(hi,), axes=(ax,)))
        if len(parts) > 1:
            x = b.op("concat", *parts, axis=ax)
    return x


def instance_norm(b: Builder, x: Value, scale: Value, bias: Value, eps: float) -> Value:
    """Instance normalisation of ``x`` [N, C, *spatial]: each (n, c) slice normalised over
    its spatial dims (the layer_norm composite from axis 2, so the fusions and lowerings
    see it), then scaled and shifted per channel by ``scale`` and ``bias`` [C]."""
    y = b.op("layer_norm", x, axis=2, epsilon=eps)
    shape = (scale.shape[0],) + (1,) * (x.rank - 2)
    return b.op("add", b.op("mul", y, b.op("reshape", scale, shape=shape)), b.op("reshape", bias, shape=shape))


def conv_transpose(b: Builder, x: Value, w: Value, stride: Sequence[int], padding: Sequence[int],
                   dilation: Sequence[int], output_padding: Sequence[int], groups: int) -> Value:
    """A transposed convolution (torch's conv_transpose, Caffe's Deconvolution; weight [C_in, C_out / groups,
    *kernel]) as a conv over the stride-dilated input with the flipped, swapped kernel.  Padding beyond
    the kernel span is a NotImplementedError."""
    n = w.rank - 2
    cin, cout_g = w.shape[0], w.shape[1]
    ks = w.shape[2:]
    wg = b.op("reshape", w, shape=(groups, cin // groups, cout_g) + tuple(ks))
    wg = b.op("transpose", wg, perm=(0, 2, 1) + tuple(range(3, 3 + n)))
    wf = b.op("reshape", wg, shape=(groups * cout_g, cin // groups) + tuple(ks))
    wf = b.op("reverse", wf, axes=tuple(range(2, 2 + n)))
    pads = []
    for k, p, d, op in zip(ks, padding, dilation, output_padding):
        lo = d * (k - 1) - p
        pads.append((lo, lo + op))
    if any(lo < 0 or hi < 0 for lo, hi in pads):
        raise NotImplementedError("conv_transpose with padding larger than the kernel span is not supported")
    return b.op("conv", x, wf, stride=(1,) * n, padding=tuple(pads), dilation=tuple(dilation), groups=groups,
                lhs_dilation=tuple(stride))


# ----- einsum (ONNX Einsum, torch.einsum) ---------------------------------------------

Term = list[str]


def parse_einsum(equation: str, ranks: Sequence[int]) -> tuple[list[Term], Term]:
    """Index tokens of each operand and of the output; ``...`` expands to tokens ``.0``, ``.1``, ..."""
    eq = "".join(equation.split())
    lhs, arrow, rhs = eq.partition("->")
    parts = lhs.split(",")
    if len(parts) != len(ranks):
        raise ValueError(f"equation {equation!r} names {len(parts)} operands, the node has {len(ranks)}")
    n_ell = 0
    for p, r in zip(parts, ranks):
        if "..." in p:
            n_ell = max(n_ell, r - len(p.replace("...", "")))
    ell = [f".{i}" for i in range(n_ell)]

    def tokens(text: str, rank: int | None) -> Term:
        if text.count("...") > 1 or any(not (c.isalpha() or c == ".") for c in text):
            raise ValueError(f"malformed term {text!r} in {equation!r}")
        head, dots, tail = text.partition("...")
        k = (rank - len(head) - len(tail)) if rank is not None else n_ell
        if dots and k < 0:
            raise ValueError(f"term {text!r} has more indices than its operand's rank {rank}")
        out = list(head) + (ell[n_ell - k:] if dots else []) + list(tail)
        if rank is not None and len(out) != rank:
            raise ValueError(f"term {text!r} does not match its operand's rank {rank}")
        return out
    terms = [tokens(p, r) for p, r in zip(parts, ranks)]
    if arrow:
        out = tokens(rhs, None)
    else:
        counts: dict[str, int] = {}
        for t in terms:
            for x in t:
                counts[x] = counts.get(x, 0) + 1
        out = ell + sorted(x for x, c in counts.items() if c == 1 and not x.startswith("."))
    if len(set(out)) != len(out) or any(x not in {y for t in terms for y in t} for x in out):
        raise ValueError(f"output of {equation!r} repeats an index or names one no operand has")
    return terms, out


def _diagonals(b: Builder, x: Value, term: Term) -> tuple[Value, Term]:
    """Takes the diagonal for each index an operand repeats (``ii`` -> ``i``)."""
    while len(set(term)) != len(term):
        tok = next(t for t in term if term.count(t) > 1)
        p = term.index(tok)
        q = term.index(tok, p + 1)
        n = x.shape[p]
        if type(n) is not int or x.shape[q] != n:
            raise NotImplementedError(f"a diagonal over dims {x.shape[p]} and {x.shape[q]} (static and equal only)")
        rest = [i for i in range(x.rank) if i not in (p, q)]
        y = b.op("transpose", x, perm=tuple(rest) + (p, q))
        shape = tuple(x.shape[i] for i in rest) + (n * n,)
        y = y if tuple(y.shape) == shape else b.op("reshape", y, shape=shape)
        diagonal = b.op("mul", b.op("iota", shape=(n,), axis=0, dtype=DType.i64), b.scalar(n + 1, DType.i64))
        x = b.op("gather", y, diagonal, axis=len(rest))
        term = [term[i] for i in rest] + [tok]
    return x, term


def _sum_out(b: Builder, x: Value, term: Term, keep: set[str]) -> tuple[Value, Term]:
    axes = tuple(i for i, t in enumerate(term) if t not in keep)
    if not axes:
        return x, term
    return b.op("reduce_sum", x, axes=axes, keepdims=False), [t for t in term if t in keep]


def _broadcast_shared(b: Builder, u: Value, tu: Term, v: Value, tv: Term) -> tuple[Value, Value]:
    """Broadcasts size-1 dims of indices both operands carry (``...`` dims) to the other's size."""
    def grow(x: Value, tx: Term, other: Value, to: Term) -> Value:
        shape = list(x.shape)
        for i, t in enumerate(tx):
            if t in to and shape[i] == 1 and other.shape[to.index(t)] != 1:
                shape[i] = other.shape[to.index(t)]
        return x if tuple(shape) == tuple(x.shape) else b.op("broadcast_to", x, shape=tuple(shape))
    return grow(u, tu, v, tv), grow(v, tv, u, tu)


def einsum(b: Builder, equation: str, operands: Sequence[Value]) -> Value:
    """``einsum(equation, *operands)`` as ONNX Einsum and torch.einsum define it: diagonals become
    gathers, indices that only one operand carries are summed away, operands are contracted
    left to right with ``dot_general`` (shared indices still needed later are batch dims, the
    others are contracted), and a final transpose puts the result in the output's order.
    A malformed equation is a ValueError, a diagonal over dynamic dims a NotImplementedError."""
    terms, out = parse_einsum(equation, [v.rank for v in operands])
    ready = [_diagonals(b, v, t) for v, t in zip(operands, terms)]
    for k, (v, t) in enumerate(ready):
        others = {x for j, (_, tj) in enumerate(ready) if j != k for x in tj}
        ready[k] = _sum_out(b, v, t, others | set(out))
    cur, ct = ready[0]
    for j in range(1, len(ready)):
        nxt, nt = ready[j]
        later = {x for _, tl in ready[j + 1:] for x in tl} | set(out)
        cur, nxt = _broadcast_shared(b, cur, ct, nxt, nt)
        batch = [t for t in ct if t in nt and t in later]
        contract = [t for t in ct if t in nt and t not in later]
        cur = b.op("dot_general", cur, nxt,
                   lhs_batch=tuple(ct.index(t) for t in batch), rhs_batch=tuple(nt.index(t) for t in batch),
                   lhs_contracting=tuple(ct.index(t) for t in contract),
                   rhs_contracting=tuple(nt.index(t) for t in contract))
        ct = batch + [t for t in ct if t not in nt] + [t for t in nt if t not in ct]
    cur, ct = _sum_out(b, cur, ct, set(out))
    perm = tuple(ct.index(t) for t in out)
    if perm != tuple(range(len(perm))):
        cur = b.op("transpose", cur, perm=perm)
    return cur
