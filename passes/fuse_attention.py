"""Fuse scaled-dot-product attention into the ``attention`` composite.

Rewrites (``softmax`` over the key axis, as ``fuse_softmax`` leaves it)::

    matmul(softmax(mask(scale * matmul(q, transpose(k)))), v)   -> attention(q, k, v, mask) {scale}
    dot_general(softmax(..(dot_general(q, k))..), v)             -> attention(transpose(q), ..)   (jax)
    dot_general(v, softmax(..))                                  -> transpose(attention(..))      (flax)

where ``scale`` is any chain of ``mul`` / ``div`` by scalars on the scores, on q or on
k (``q / sqrt(d)``), and ``mask`` is an additive mask (``add``), a bool mask
(``where(m, s, -inf)``), or a ``where`` with a finite fill, which becomes the additive
mask ``where(m, 0, fill)``.  A mask must come after the scale unless it is a bool
mask and the scale is positive.  The head layout is read from the contractions: the
q, k, v operands get the transposes that bring them to ``[..., L, D]`` (composed
with transposes already there), and a ``dot_general`` with v on the left gets its
output transposed back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from accelir.errors import VerificationError
from accelir.ir import Builder, Node, Value

from .pattern import Match, Op, Rule, RulePass
from .recognizers import scalar
from .registry import register_pass

__all__ = ["fuse_attention", "ATTENTION_RULES"]


def _additive_fill(fill: float, dtype: np.dtype) -> float:
    """A where-mask's fill as an additive mask's, raised to a quarter of the dtype's minimum where it lies
    below (flax and transformers fill with ``finfo.min``): the weights stay the same, exp of either is 0 next
    to an unmasked score and a row masked everywhere still has equal weights, but onnxruntime's Attention
    overflows a bias of ``finfo.min`` to -inf and gives such a row zeros instead of the mean of v."""
    if not np.issubdtype(dtype, np.floating):
        return fill
    return max(fill, float(np.finfo(dtype).min) / 4)


class _Reject(Exception):
    """A near match: the message says which check failed."""


@dataclass
class _Operand:
    """A value that must be transposed by ``perm`` (None: as is) to get the [..., L, D] layout."""

    value: Value
    perm: tuple[int, ...] | None = None


@dataclass
class _Scores:
    q: _Operand | None = None
    k: _Operand | None = None
    scale: float = 1.0
    mask: Value | None = None
    fill: float | None = None  # a where-mask's finite fill value
    scaled_after_mask: bool = False
    nodes: list[Node] = field(default_factory=list)


def _single_use(v: Value) -> bool:
    return v.num_uses == 1 and not v.is_graph_output


def _peel_scale(v: Value, sc: _Scores) -> Value:
    """Strip single-use ``mul`` / ``div`` by scalars, folding them into ``sc.scale``."""
    while v.producer is not None and v.producer.op in ("mul", "div") and _single_use(v):
        node = v.producer
        a, b = node.inputs
        c = scalar(b)
        if c is None and node.op == "mul":
            c, b, a = scalar(a), a, b
        if c is None or c == 0.0 or b.rank > a.rank or any(d != 1 for d in b.shape):
            return v
        sc.scale *= c if node.op == "mul" else 1.0 / c
        sc.nodes.append(node)
        v = a
    return v


def _contraction(node: Node, sc: _Scores) -> None:
    """q and k of the product ``q @ k^T`` that ``node`` computes, in [..., L, D] layout."""
    a, b = node.inputs
    if node.op == "matmul":
        if a.rank < 2 or b.rank != a.rank:
            raise _Reject("q and k of the scores matmul differ in rank")
        r = a.rank
        sc.q = _Operand(_peel_scale(a, sc))
        sc.k = _Operand(_peel_scale(b, sc), tuple(range(r - 2)) + (r - 1, r - 2))
        return
    at = node.attrs
    lc, rc, lb, rb = at["lhs_contracting"], at["rhs_contracting"], at["lhs_batch"], at["rhs_batch"]
    if len(lc) != 1:
        raise _Reject("the scores contract more than one dim")
    free_a = [i for i in range(a.rank) if i not in lc and i not in lb]
    free_b = [i for i in range(b.rank) if i not in rc and i not in rb]
    if len(free_a) != 1 or len(free_b) != 1:
        raise _Reject("the scores have more than one query or key dim")
    sc.q = _Operand(_peel_scale(a, sc), tuple(lb) + tuple(free_a) + tuple(lc))
    sc.k = _Operand(_peel_scale(b, sc), tuple(rb) + tuple(free_b) + tuple(rc))


def _scores(s: Value) -> _Scores:
    """Read the softmax input back to the q k^T product."""
    sc = _Scores()
    seen_mask = False
    scaled = False  # a scale was read before any mask: it applies after the mask
    while True:
        node = s.producer
        if node is None:
            raise _Reject("the scores are not a product of q and k")
        if not _single_use(s):
            raise _Reject(f"the scores' {node.op} has other users")
        if node.op in ("matmul", "dot_general"):
            sc.nodes.append(node)
            _contraction(node, sc)
            return sc
        if node.op in ("mul", "div"):
            before = sc.scale
            rest = _peel_scale(s, sc)
            if rest is s:
                raise _Reject(f"the scores are scaled by a non-scalar {node.op}")
            scaled |= not seen_mask and sc.scale != before
            s = rest
            continue
        if seen_mask:
            raise _Reject("more than one mask")
        if node.op == "add":
            a, b = node.inputs
            s, sc.mask = (a, b) if _leads_to_product(a) else (b, a)
        elif node.op == "where":
            cond, a, fill = node.inputs
            f = scalar(fill)
            if f is None and fill.producer is not None and fill.producer.op == "broadcast_to":
                f = scalar(fill.producer.inputs[0])  # a scalar broadcast to a shape with symbolic dims (jax's)
            if f is None:
                raise _Reject("the where-mask fill is not a scalar constant")
            s, sc.mask = a, cond
            sc.fill = None if f == -np.inf else f
        else:
            raise _Reject(f"the scores pass through {node.op}")
        sc.nodes.append(node)
        seen_mask = True
        sc.scaled_after_mask = scaled


def _leads_to_product(v: Value, depth: int = 6) -> bool:
    for _ in range(depth):
        node = v.producer
        if node is None:
            return False
        if node.op in ("matmul", "dot_general"):
            return True
        v = node.inputs[1] if node.op == "where" else node.inputs[0]
    return False


def _transposed(b: Builder, op: _Operand) -> Value:
    """``op.value`` transposed by ``op.perm``, composed with a transpose it already is."""
    v, perm = op.value, op.perm
    if perm is None:
        return v
    if v.producer is not None and v.producer.op == "transpose":
        inner = v.producer.attrs["perm"]
        v, perm = v.producer.inputs[0], tuple(inner[p] for p in perm)
    if perm == tuple(range(len(perm))):
        return v
    return b.op("transpose", v, perm=perm)


def _values(node: Node, p: Value) -> tuple[_Operand, tuple[int, ...] | None]:
    """v (to transpose into [..., Lk, Dv]) of the output product, and the perm to apply to the result."""
    a, b = node.inputs
    if node.op == "matmul":
        if a is not p or b.rank != p.rank:
            raise _Reject("the probabilities are not the left operand of a matmul of equal rank")
        return _Operand(b), None
    at = node.attrs
    lc, rc, lb, rb = at["lhs_contracting"], at["rhs_contracting"], at["lhs_batch"], at["rhs_batch"]
    nb = p.rank - 2
    pc, pb, vc, vb = (lc, lb, rc, rb) if a is p else (rc, rb, lc, lb)
    v = b if a is p else a
    if pc != (p.rank - 1,) or pb != tuple(range(nb)):
        raise _Reject("the output product does not contract the key axis with the batch dims in order")
    free = [i for i in range(v.rank) if i not in vc and i not in vb]
    if len(free) != 1 or v.rank != p.rank:
        raise _Reject("v does not have one value dim")
    out_perm = None if a is p else tuple(range(nb)) + (nb + 1, nb)
    return _Operand(v, tuple(vb) + tuple(vc) + tuple(free)), out_perm


def _attention(m: Match, b: Builder) -> Value | None:
    root = m.root
    soft = next((v for v in root.inputs if v.producer is not None and v.producer.op == "softmax"), None)
    if soft is None or not _single_use(soft):
        return None
    if soft.producer.attrs["axis"] % soft.rank != soft.rank - 1:
        return m.reject("attention: the softmax is not over the last (key) axis")
    try:
        v, out_perm = _values(root, soft)
        sc = _scores(soft.producer.inputs[0])
    except _Reject as e:
        return m.reject(f"attention: {e}")
    if sc.scaled_after_mask and (sc.fill is not None or sc.mask.dtype.is_float or sc.scale <= 0):
        return m.reject("attention: the mask is added before the scale")
    q, k, vv = (_transposed(b, o) for o in (sc.q, sc.k, v))
    inputs = [q, k, vv]
    if sc.mask is not None:
        mask = sc.mask
        if sc.fill is not None:
            mask = b.op("where", mask, b.scalar(0.0, q), b.scalar(_additive_fill(sc.fill, q.dtype.numpy), q))
        inputs.append(mask)
    try:
        y = b.op("attention", *inputs, scale=sc.scale)
        if out_perm is not None:
            y = b.op("transpose", y, perm=out_perm)
    except VerificationError as e:
        return m.reject(f"attention: the operands do not fit the composite ({e})")
    if y.type != root.output.type:
        return m.reject(f"attention: the fused result {y.type} differs from {root.output.type}")
    return y


ATTENTION_RULES = (Rule("attention", Op(("matmul", "dot_general"), any_operands=True), _attention,
                        near_miss_depth=1),)

fuse_attention = register_pass("fuse_attention")(
    RulePass("fuse_attention", ATTENTION_RULES))
