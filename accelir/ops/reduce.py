"""Reductions, arg-reductions, cumulative ops, sort and top-k.

Float reductions of f16 / bf16 accumulate in f32 and round once, like torch and XLA.
"""

from __future__ import annotations

import numpy as np

from ..types import DType, TensorType
from .registry import AttrSpec, OpDef, TypeRuleError, norm_axis, np_dtype_compute, register

__all__ = ["REDUCTIONS", "reduced_shape", "stable_order"]


def reduced_shape(op: str, shape, axes, keepdims: bool):
    rank = len(shape)
    ax = sorted({norm_axis(op, a, rank) for a in axes})
    if keepdims:
        return tuple(1 if i in ax else d for i, d in enumerate(shape)), tuple(ax)
    return tuple(d for i, d in enumerate(shape) if i not in ax), tuple(ax)


def _mean(x, axis, keepdims):
    return np.mean(x, axis=axis, keepdims=keepdims)


# name -> (numpy function, allowed dtypes predicate, doc)
REDUCTIONS = {
    "reduce_sum": (np.sum, lambda d: d is not DType.bool, "sum over axes"),
    "reduce_mean": (_mean, lambda d: d.is_float, "mean over axes"),
    "reduce_max": (np.max, lambda d: d is not DType.bool, "maximum over axes (NaN propagates)"),
    "reduce_min": (np.min, lambda d: d is not DType.bool, "minimum over axes (NaN propagates)"),
    "reduce_prod": (np.prod, lambda d: d is not DType.bool, "product over axes"),
    "reduce_any": (np.any, lambda d: d is DType.bool, "logical or over axes"),
    "reduce_all": (np.all, lambda d: d is DType.bool, "logical and over axes"),
}

_REDUCE_ATTRS = {"axes": AttrSpec("ints"), "keepdims": AttrSpec("bool", False)}


def _reduce_rule(name, allowed):
    def rule(types, attrs):
        (t,) = types
        if not allowed(t.dtype):
            raise TypeRuleError(f"{name}: dtype {t.dtype} is not supported")
        shape, _ = reduced_shape(name, t.shape, attrs["axes"], attrs["keepdims"])
        return [TensorType(t.dtype, shape)]
    return rule


def _reduce_ref(name, fn):
    def ref(inputs, attrs, regions):
        (x,) = inputs
        axes = tuple(sorted({a % max(x.ndim, 1) for a in attrs["axes"]})) if x.ndim else ()
        cdt = np_dtype_compute(x.dtype)
        if name in ("reduce_max", "reduce_min") and x.size == 0:
            raise ValueError(f"{name} of an empty tensor has no identity")
        with np.errstate(all="ignore"):
            if name in ("reduce_sum", "reduce_prod") and x.dtype.kind in "iu":
                out = fn(x, axis=axes, keepdims=attrs["keepdims"], dtype=x.dtype)
            else:
                out = fn(x.astype(cdt, copy=False), axis=axes, keepdims=attrs["keepdims"])
        return [np.asarray(out).astype(x.dtype, copy=False)]
    return ref


for _name, (_fn, _allowed, _doc) in REDUCTIONS.items():
    register(OpDef(_name, _reduce_rule(_name, _allowed), _reduce_ref(_name, _fn), attrs=dict(_REDUCE_ATTRS),
                   doc=_doc))


def _arg_rule(name):
    def rule(types, attrs):
        (t,) = types
        if t.dtype is DType.bool:
            raise TypeRuleError(f"{name}: bool input is not supported")
        if t.rank == 0:
            raise TypeRuleError(f"{name}: input must have rank >= 1")
        shape, _ = reduced_shape(name, t.shape, (attrs["axis"],), attrs["keepdims"])
        return [TensorType(DType.i64, shape)]
    return rule


def _arg_ref(fn):
    def ref(inputs, attrs, regions):
        (x,) = inputs
        axis = attrs["axis"] % x.ndim
        xc = x.astype(np_dtype_compute(x.dtype), copy=False)
        if attrs["select_last_index"]:
            flipped = np.flip(xc, axis)
            idx = x.shape[axis] - 1 - fn(flipped, axis=axis)
        else:
            idx = fn(xc, axis=axis)
        idx = np.asarray(idx, dtype=np.int64)
        if attrs["keepdims"]:
            idx = np.expand_dims(idx, axis)
        return [idx]
    return ref


_ARG_ATTRS = {"axis": AttrSpec("int"), "keepdims": AttrSpec("bool", False),
              "select_last_index": AttrSpec("bool", False)}
register(OpDef("argmax", _arg_rule("argmax"), _arg_ref(np.argmax), attrs=dict(_ARG_ATTRS),
               doc="index of the maximum along axis (first NaN counts as the maximum), i64"))
register(OpDef("argmin", _arg_rule("argmin"), _arg_ref(np.argmin), attrs=dict(_ARG_ATTRS),
               doc="index of the minimum along axis, i64"))


def _cum_rule(name):
    def rule(types, attrs):
        (t,) = types
        if t.dtype is DType.bool:
            raise TypeRuleError(f"{name}: bool input is not supported")
        norm_axis(name, attrs["axis"], t.rank)
        return [t]
    return rule


def _cum_ref(kind):
    def ref(inputs, attrs, regions):
        (x,) = inputs
        axis = attrs["axis"] % max(x.ndim, 1)
        if x.ndim == 0:
            return [x.copy()]
        cdt = np_dtype_compute(x.dtype)
        xc = x.astype(cdt, copy=False)
        if attrs["reverse"]:
            xc = np.flip(xc, axis)
        if kind == "sum":
            out = np.cumsum(xc, axis=axis, dtype=cdt)
        elif kind == "prod":
            out = np.cumprod(xc, axis=axis, dtype=cdt)
        elif kind == "max":
            out = np.maximum.accumulate(xc, axis=axis)
        else:
            out = np.minimum.accumulate(xc, axis=axis)
        if attrs.get("exclusive"):
            ident = {"sum": 0, "prod": 1}[kind]
            pad = [(0, 0)] * x.ndim
            pad[axis] = (1, 0)
            out = np.pad(out, pad, constant_values=ident)
            out = np.take(out, np.arange(x.shape[axis]), axis=axis)
        if attrs["reverse"]:
            out = np.flip(out, axis)
        return [np.ascontiguousarray(out).astype(x.dtype, copy=False)]
    return ref


for _kind in ("sum", "prod", "max", "min"):
    _attrs = {"axis": AttrSpec("int"), "reverse": AttrSpec("bool", False)}
    if _kind in ("sum", "prod"):
        _attrs["exclusive"] = AttrSpec("bool", False)
    register(OpDef(f"cum{_kind}", _cum_rule(f"cum{_kind}"), _cum_ref(_kind), attrs=_attrs,
                   doc=f"cumulative {_kind} along axis"))


def _sort_rule(types, attrs):
    (t,) = types
    if t.rank == 0:
        raise TypeRuleError("sort: input must have rank >= 1")
    norm_axis("sort", attrs["axis"], t.rank)
    return [t, TensorType(DType.i64, t.shape)]


def stable_order(x, axis, descending):
    xc = x.astype(np_dtype_compute(x.dtype), copy=False)
    if descending:
        # stable descending order: sort the negated keys; NaN goes first like torch
        if xc.dtype.kind == "f":
            key = np.where(np.isnan(xc), -np.inf, -xc)
            return np.argsort(key, axis=axis, kind="stable")
        if xc.dtype == np.bool_:
            xc = xc.astype(np.int8)
        # ~x reverses the order of any integer dtype without the overflow of -x at the minimum
        return np.argsort(~xc, axis=axis, kind="stable")
    return np.argsort(xc, axis=axis, kind="stable")


def _sort_ref(inputs, attrs, regions):
    (x,) = inputs
    axis = attrs["axis"] % x.ndim
    order = stable_order(x, axis, attrs["descending"])
    return [np.take_along_axis(x, order, axis), order.astype(np.int64)]


register(OpDef("sort", _sort_rule, _sort_ref, attrs={"axis": AttrSpec("int", -1),
                                                     "descending": AttrSpec("bool", False)},
               doc="stable sort along axis; returns (values, i64 indices)"))


def _topk_rule(types, attrs):
    (t,) = types
    if t.rank == 0:
        raise TypeRuleError("topk: input must have rank >= 1")
    ax = norm_axis("topk", attrs["axis"], t.rank)
    k = attrs["k"]
    d = t.shape[ax]
    if k < 0 or (type(d) is int and k > d):
        raise TypeRuleError(f"topk: k={k} out of range for dim {d}")
    shape = tuple(k if i == ax else s for i, s in enumerate(t.shape))
    return [TensorType(t.dtype, shape), TensorType(DType.i64, shape)]


def _topk_ref(inputs, attrs, regions):
    (x,) = inputs
    axis = attrs["axis"] % x.ndim
    order = stable_order(x, axis, attrs["largest"])
    order = np.take(order, np.arange(attrs["k"]), axis=axis)
    return [np.take_along_axis(x, order, axis), order.astype(np.int64)]


register(OpDef("topk", _topk_rule, _topk_ref, attrs={"k": AttrSpec("int"), "axis": AttrSpec("int", -1),
                                                     "largest": AttrSpec("bool", True)},
               doc="the k largest (or smallest) along axis, sorted, ties by lower index; (values, i64 indices)"))
