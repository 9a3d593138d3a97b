"""ONNX ``Einsum`` decomposed into IR ops: diagonals become gathers, indices that only one
operand carries are summed away, operands are contracted left to right with
``dot_general`` (shared indices still needed later are batch dims, the others are
contracted), and a final transpose puts the result in the output's order.  ``...``
stands for right-aligned broadcast dims, as in numpy.
"""

from __future__ import annotations

from typing import Sequence

from ...ir import DType, Value
from .context import NodeContext, OnnxImportError, reshape, rule

__all__ = ["parse_einsum"]

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


def _diagonals(ctx: NodeContext, x: Value, term: Term) -> tuple[Value, Term]:
    """Takes the diagonal for each index an operand repeats (``ii`` -> ``i``)."""
    while len(set(term)) != len(term):
        tok = next(t for t in term if term.count(t) > 1)
        p = term.index(tok)
        q = term.index(tok, p + 1)
        n = x.shape[p]
        if type(n) is not int or x.shape[q] != n:
            raise ctx.unsupported(f"a diagonal over dims {x.shape[p]} and {x.shape[q]} (static and equal only)")
        rest = [i for i in range(x.rank) if i not in (p, q)]
        y = ctx.op("transpose", x, perm=tuple(rest) + (p, q))
        y = reshape(ctx, y, tuple(x.shape[i] for i in rest) + (n * n,))
        diagonal = ctx.op("mul", ctx.op("iota", shape=(n,), axis=0, dtype=DType.i64), ctx.scalar(n + 1, DType.i64))
        x = ctx.op("gather", y, diagonal, axis=len(rest))
        term = [term[i] for i in rest] + [tok]
    return x, term


def _sum_out(ctx: NodeContext, x: Value, term: Term, keep: set[str]) -> tuple[Value, Term]:
    axes = tuple(i for i, t in enumerate(term) if t not in keep)
    if not axes:
        return x, term
    return ctx.op("reduce_sum", x, axes=axes, keepdims=False), [t for t in term if t in keep]


def _broadcast_shared(ctx: NodeContext, a: Value, ta: Term, b: Value, tb: Term) -> tuple[Value, Value]:
    """Broadcasts size-1 dims of indices both operands carry (``...`` dims) to the other's size."""
    def grow(x: Value, tx: Term, other: Value, to: Term) -> Value:
        shape = list(x.shape)
        for i, t in enumerate(tx):
            if t in to and shape[i] == 1 and other.shape[to.index(t)] != 1:
                shape[i] = other.shape[to.index(t)]
        return x if tuple(shape) == tuple(x.shape) else ctx.op("broadcast_to", x, shape=tuple(shape))
    return grow(a, ta, b, tb), grow(b, tb, a, ta)


@rule("Einsum")
def _einsum(ctx: NodeContext):
    ops = [v for v in ctx.inputs if v is not None]
    try:
        terms, out = parse_einsum(ctx.attr("equation"), [v.rank for v in ops])
    except ValueError as e:
        raise OnnxImportError(f"{ctx.label}: {e}") from None
    ready = [_diagonals(ctx, v, t) for v, t in zip(ops, terms)]
    for k, (v, t) in enumerate(ready):
        others = {x for j, (_, tj) in enumerate(ready) if j != k for x in tj}
        ready[k] = _sum_out(ctx, v, t, others | set(out))
    cur, ct = ready[0]
    for j in range(1, len(ready)):
        nxt, nt = ready[j]
        later = {x for _, tl in ready[j + 1:] for x in tl} | set(out)
        cur, nxt = _broadcast_shared(ctx, cur, ct, nxt, nt)
        batch = [t for t in ct if t in nt and t in later]
        contract = [t for t in ct if t in nt and t not in later]
        cur = ctx.op("dot_general", cur, nxt,
                     lhs_batch=tuple(ct.index(t) for t in batch), rhs_batch=tuple(nt.index(t) for t in batch),
                     lhs_contracting=tuple(ct.index(t) for t in contract),
                     rhs_contracting=tuple(nt.index(t) for t in contract))
        ct = batch + [t for t in ct if t not in nt] + [t for t in nt if t not in ct]
    cur, ct = _sum_out(ctx, cur, ct, set(out))
    perm = tuple(ct.index(t) for t in out)
    if perm != tuple(range(len(perm))):
        cur = ctx.op("transpose", cur, perm=perm)
    return [cur]
