"""JAX reduction rules: reduce_*, argmax / argmin, cumulative ops, reduce_window, sort and top_k."""

from __future__ import annotations

import math
from typing import Any, Sequence

from ... import dims as D
from ...ir import DType, Value
from ...ops.shape import inverse_perm
from .context import RULES, EqnContext, Unsupported, jax_dtype, rule, static_pads, transpose

__all__: list[str] = []


# ----- reductions --------------------------------------------------------------------

_REDUCE = {"reduce_sum": "reduce_sum", "reduce_max": "reduce_max", "reduce_min": "reduce_min",
           "reduce_prod": "reduce_prod", "reduce_and": "reduce_all", "reduce_or": "reduce_any"}
_BOOL_REDUCE = {"reduce_max": "reduce_any", "reduce_min": "reduce_all"}


def _reduce(name: str, op: str):
    def rule(cx: EqnContext, x: Value, *, axes: Sequence[int], **p: Any) -> Value:
        axes = tuple(int(a) for a in axes)
        if not axes:
            return x
        if x.dtype is DType.bool:
            return cx.op(_BOOL_REDUCE.get(name, op), x, axes=axes)
        return cx.op(op, x, axes=axes)
    return rule


for _name, _op in _REDUCE.items():
    RULES.add(_reduce(_name, _op), _name)


def _arg(op: str):
    def rule(cx: EqnContext, x: Value, *, axes: Sequence[int], index_dtype: Any, **p: Any) -> Value:
        if x.dtype is DType.bool:  # the IR arg-reductions take numbers; False < True as 0 < 1
            x = cx.op("cast", x, dtype=DType.i8)
        return cx.cast(cx.op(op, x, axis=int(axes[0])), jax_dtype(index_dtype))
    return rule


def _cumulative(op: str):
    def rule(cx: EqnContext, x: Value, *, axis: int, reverse: bool, **p: Any) -> Value:
        return cx.op(op, x, axis=int(axis), reverse=bool(reverse))
    return rule


RULES.add(_arg("argmax"), "argmax")
RULES.add(_arg("argmin"), "argmin")
for _kind in ("sum", "prod", "max", "min"):
    RULES.add(_cumulative(f"cum{_kind}"), f"cum{_kind}")


def _window(kind: str):
    def rule(cx: EqnContext, x: Value, *, window_dimensions, window_strides, padding, base_dilation,
             window_dilation, **p: Any) -> Value:
        return _reduce_window(cx, x, kind, window_dimensions, window_strides, padding, base_dilation,
                              window_dilation)
    return rule


def _reduce_window(cx: EqnContext, x: Value, kind: str, window, strides, padding, base_dilation,
                   window_dilation) -> Value:
    """Pooling: move the dims the window touches last, fold the others into [N, C], pool, undo."""
    if any(int(d) != 1 for d in base_dilation):
        raise Unsupported("base_dilation != 1 has no IR pooling form")
    pads = static_pads(padding)
    if any(lo < 0 or hi < 0 for lo, hi in pads):
        raise Unsupported("negative window padding")
    if kind == "sum" and not x.dtype.is_float:
        raise Unsupported(f"a summing window over {x.dtype} (the IR avg_pool is float only)")
    r = x.rank
    spatial = [d for d in range(r) if (int(window[d]), int(strides[d]), pads[d], int(window_dilation[d]))
               != (1, 1, (0, 0), 1)]
    if not spatial:
        return x
    rest = [d for d in range(r) if d not in spatial]
    perm = rest + spatial
    xt = transpose(cx, x, perm)
    lead = [x.shape[d] for d in rest]
    folded = ([1, 1] if not lead else [1, lead[0]] if len(lead) == 1
              else [D.dim_prod(lead[:-1]), lead[-1]])
    xs = cx.op("reshape", xt, shape=tuple(folded) + tuple(x.shape[d] for d in spatial)) \
        if len(lead) != 2 else xt
    attrs = dict(kernel=tuple(int(window[d]) for d in spatial), stride=tuple(int(strides[d]) for d in spatial),
                 padding=tuple(pads[d] for d in spatial), dilation=tuple(int(window_dilation[d]) for d in spatial))
    if kind == "max":
        y = cx.op("max_pool", xs, **attrs)
    elif kind == "min":
        y = cx.op("neg", cx.op("max_pool", cx.op("neg", xs), **attrs))
    else:
        y = cx.op("mul", cx.op("avg_pool", xs, count_include_pad=True, **attrs),
                  cx.scalar(math.prod(attrs["kernel"]), xs))
    if len(lead) != 2:
        y = cx.op("reshape", y, shape=tuple(lead) + y.shape[2:])
    return transpose(cx, y, inverse_perm(perm))


for _kind in ("max", "min", "sum"):
    RULES.add(_window(_kind), f"reduce_window_{_kind}")


# ----- sort / top_k ------------------------------------------------------------------

def _is_iota_along(v: Value, axis: int, shape: tuple) -> bool:
    node = v.producer
    return (node is not None and node.op == "iota" and node.attrs["axis"] % max(len(shape), 1) == axis
            and tuple(node.attrs["shape"]) == tuple(shape))


@rule("sort")
def _sort(cx, *xs, dimension, is_stable, num_keys, **p):
    if num_keys != 1:
        raise Unsupported(f"a sort on {num_keys} keys (lexicographic) has no IR form")
    axis = int(dimension)
    values, order = cx.ops("sort", xs[0], axis=axis)
    outs = [values]
    for other in xs[1:]:
        if _is_iota_along(other, axis, tuple(xs[0].shape)):
            outs.append(cx.cast(order, other.dtype))  # argsort
        else:
            outs.append(cx.op("take_along_axis", other, order, axis=axis))
    return outs


@rule("top_k")
def _top_k(cx, x, *, k, axis=-1, **p):
    values, idx = cx.ops("topk", x, k=int(k), axis=int(axis), largest=True)
    return [values, cx.cast(idx, cx.out_types[1].dtype)]


