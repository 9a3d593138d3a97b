"""JAX contraction rules: dot_general (as matmul where it is one) and conv_general_dilated."""

from __future__ import annotations

from typing import Any

from ... import dims as D
from ...ir import Value
from ...ops.shape import inverse_perm
from ..decompositions import crop_negative_pads
from .context import EqnContext, Unsupported, rule, static_pads, transpose

__all__: list[str] = []


# ----- contractions ------------------------------------------------------------------

@rule("dot_general")
def _dot_general(cx, a, b, *, dimension_numbers: Any, **p):
    (lc, rc), (lb, rb) = dimension_numbers
    lc, rc, lb, rb = (tuple(int(i) for i in t) for t in (lc, rc, lb, rb))
    dt = cx.out_types[0].dtype
    a, b = cx.cast(a, dt), cx.cast(b, dt)
    n = len(lb)
    batched = (n > 0 and lb == rb == tuple(range(n)) and a.rank == b.rank == n + 2
               and lc == (n + 1,) and rc == (n,))
    if batched:
        return cx.op("matmul", a, b)
    k = len(lc)
    if not lb and k and lc == tuple(range(a.rank - k, a.rank)) and rc == tuple(range(k)):
        return _flat_matmul(cx, a, b, k)
    return cx.op("dot_general", a, b, lhs_contracting=lc, rhs_contracting=rc, lhs_batch=lb, rhs_batch=rb)


def _flat_matmul(cx: EqnContext, a: Value, b: Value, k: int) -> Value:
    """x[..., *K] . w[*K, *N] as a matmul of [..., prod K] by [prod K, prod N] (flax Dense and
    DenseGeneral), so the matmul + bias fusions see it; the weight reshapes fold as constants."""
    lfree, rfree = a.shape[:a.rank - k], b.shape[k:]
    contract = D.dim_prod(a.shape[a.rank - k:])
    x = a if k == 1 else cx.op("reshape", a, shape=lfree + (contract,))
    wshape = (contract,) if not rfree else (contract, D.dim_prod(rfree))
    w = b if tuple(b.shape) == wshape else cx.op("reshape", b, shape=wshape)
    y = cx.op("matmul", x, w)
    return y if len(rfree) == 1 or not rfree else cx.op("reshape", y, shape=lfree + tuple(rfree))


@rule("conv_general_dilated")
def _conv(cx, lhs, rhs, *, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
          feature_group_count, batch_group_count, **p):
    if batch_group_count != 1:
        raise Unsupported("batch_group_count != 1 (a convolution's weight gradient) has no IR conv form")
    dt = cx.out_types[0].dtype
    lhs, rhs = cx.cast(lhs, dt), cx.cast(rhs, dt)
    # the IR conv is channels-first: x [N, C, *S], w [O, I/groups, *K]
    x = transpose(cx, lhs, dimension_numbers.lhs_spec)
    w = transpose(cx, rhs, dimension_numbers.rhs_spec)
    pads = static_pads(padding)
    lhs_dil = tuple(int(d) for d in lhs_dilation)
    if any(lo < 0 or hi < 0 for lo, hi in pads):
        if any(d != 1 for d in lhs_dilation):
            raise Unsupported("negative padding together with lhs_dilation")
        x = crop_negative_pads(cx.b, x, pads, first_axis=2)
        pads = [(max(lo, 0), max(hi, 0)) for lo, hi in pads]
    y = cx.op("conv", x, w, stride=tuple(int(s) for s in window_strides), padding=tuple(pads),
              dilation=tuple(int(d) for d in rhs_dilation), groups=int(feature_group_count), lhs_dilation=lhs_dil)
    return transpose(cx, y, inverse_perm(dimension_numbers.out_spec))


