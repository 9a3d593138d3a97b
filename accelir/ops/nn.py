"""Composite ops that fusion targets: gelu, silu, softmax, log_softmax, layer_norm,
rms_norm, batch_norm (inference), attention, linear, fused_conv, skip_layer_norm,
skip_rms_norm.

Each has a numpy reference (computing f16 / bf16 in f32) and a decomposition into
core ops, used by backends without a fused kernel and checked against the reference
in the tests.
"""

from __future__ import annotations

import numpy as np
import scipy.special

from ..ir import Builder, DType, TensorType, Value
from .linalg import CONV_ATTRS, _conv_rule, conv_params, conv_reference
from .registry import (ACTIVATIONS, AttrSpec, OpDef, TypeRuleError, broadcast_shapes, norm_axis,
                       np_dtype_compute, register, same_dtype)

__all__ = ["activation_reference", "decompose_activation"]


def _float_only(op: str, t: TensorType) -> None:
    if not t.dtype.is_float:
        raise TypeRuleError(f"{op}: dtype {t.dtype} is not supported (needs float)")


def _in_compute(x: np.ndarray) -> np.ndarray:
    return x.astype(np_dtype_compute(x.dtype), copy=False)


def _gelu_ref(x):
    return 0.5 * x * (1.0 + scipy.special.erf(x * np.asarray(1.0 / np.sqrt(2.0), x.dtype)))


def _gelu_tanh_ref(x):
    c = np.asarray(np.sqrt(2.0 / np.pi), x.dtype)
    return 0.5 * x * (1.0 + np.tanh(c * (x + np.asarray(0.044715, x.dtype) * x * x * x)))


def activation_reference(x: np.ndarray, act: str) -> np.ndarray:
    """Apply a named activation to an array already in its compute dtype."""
    if act == "none":
        return x
    if act == "relu":
        return np.where(x > 0, x, np.where(np.isnan(x), x, np.zeros((), x.dtype)))
    if act == "gelu":
        return _gelu_ref(x)
    if act == "gelu_tanh":
        return _gelu_tanh_ref(x)
    if act == "silu":
        return x * scipy.special.expit(x)
    if act == "sigmoid":
        return scipy.special.expit(x)
    if act == "tanh":
        return np.tanh(x)
    raise ValueError(f"unknown activation {act!r}")


def decompose_activation(b: Builder, x: Value, act: str) -> Value:
    if act == "none":
        return x
    if act in ("relu", "sigmoid", "tanh"):
        return b.op(act, x)
    if act == "gelu":
        return b.op("gelu", x, approximate="none")
    if act == "gelu_tanh":
        return b.op("gelu", x, approximate="tanh")
    if act == "silu":
        return b.op("silu", x)
    raise ValueError(f"unknown activation {act!r}")


def _unary_float_rule(op):
    def rule(types, attrs):
        _float_only(op, types[0])
        return [types[0]]
    return rule


def _wrap(fn):
    """Reference helper: compute in f32 for f16 / bf16 and round back once."""
    def ref(inputs, attrs, regions):
        dt = inputs[0].dtype
        with np.errstate(all="ignore"):
            out = fn([_in_compute(x) for x in inputs], attrs)
        if isinstance(out, tuple):
            return [np.asarray(o).astype(dt, copy=False) for o in out]
        return [np.asarray(out).astype(dt, copy=False)]
    return ref


# ----- gelu / silu -------------------------------------------------------------------

def _gelu_decompose(b, inputs, attrs):
    (x,) = inputs
    half = b.scalar(0.5, x)
    one = b.scalar(1.0, x)
    if attrs["approximate"] == "none":
        inner = b.op("erf", b.op("mul", x, b.scalar(1.0 / np.sqrt(2.0), x)))
    else:
        cube = b.op("mul", b.op("mul", x, x), x)
        poly = b.op("add", x, b.op("mul", b.scalar(0.044715, x), cube))
        inner = b.op("tanh", b.op("mul", b.scalar(np.sqrt(2.0 / np.pi), x), poly))
    return [b.op("mul", b.op("mul", half, x), b.op("add", one, inner))]


register(OpDef("gelu", _unary_float_rule("gelu"),
               _wrap(lambda xs, a: activation_reference(xs[0], "gelu" if a["approximate"] == "none" else "gelu_tanh")),
               attrs={"approximate": AttrSpec("str", "none", ("none", "tanh"))}, composite=True, elementwise=True,
               decompose=_gelu_decompose,
               doc="0.5 x (1 + erf(x / sqrt 2)); approximate='tanh': 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))"))


def _silu_decompose(b, inputs, attrs):
    (x,) = inputs
    return [b.op("mul", x, b.op("sigmoid", x))]


register(OpDef("silu", _unary_float_rule("silu"), _wrap(lambda xs, a: activation_reference(xs[0], "silu")),
               composite=True, elementwise=True, decompose=_silu_decompose, doc="x * sigmoid(x)"))


# ----- softmax -----------------------------------------------------------------------

def _softmax_rule(op):
    def rule(types, attrs):
        (t,) = types
        _float_only(op, t)
        norm_axis(op, attrs["axis"], t.rank)
        return [t]
    return rule


def _softmax_ref(xs, attrs):
    x = xs[0]
    m = np.max(x, axis=attrs["axis"], keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=attrs["axis"], keepdims=True)


def _log_softmax_ref(xs, attrs):
    x = xs[0]
    m = np.max(x, axis=attrs["axis"], keepdims=True)
    s = x - m
    return s - np.log(np.sum(np.exp(s), axis=attrs["axis"], keepdims=True))


def _softmax_decompose(b, inputs, attrs):
    (x,) = inputs
    ax = attrs["axis"]
    m = b.op("reduce_max", x, axes=(ax,), keepdims=True)
    e = b.op("exp", b.op("sub", x, m))
    return [b.op("div", e, b.op("reduce_sum", e, axes=(ax,), keepdims=True))]


def _log_softmax_decompose(b, inputs, attrs):
    (x,) = inputs
    ax = attrs["axis"]
    s = b.op("sub", x, b.op("reduce_max", x, axes=(ax,), keepdims=True))
    return [b.op("sub", s, b.op("log", b.op("reduce_sum", b.op("exp", s), axes=(ax,), keepdims=True)))]


register(OpDef("softmax", _softmax_rule("softmax"), _wrap(_softmax_ref), attrs={"axis": AttrSpec("int", -1)},
               composite=True, decompose=_softmax_decompose, doc="exp(x - max) / sum(exp(x - max)) along axis"))
register(OpDef("log_softmax", _softmax_rule("log_softmax"), _wrap(_log_softmax_ref),
               attrs={"axis": AttrSpec("int", -1)}, composite=True, decompose=_log_softmax_decompose,
               doc="x - max - log(sum(exp(x - max))) along axis"))


# ----- normalisation -----------------------------------------------------------------

_NORM_ATTRS = {"axis": AttrSpec("int", -1), "epsilon": AttrSpec("float", 1e-5)}


def _norm_rule(op, max_params):
    def rule(types, attrs):
        x = types[0]
        _float_only(op, x)
        same_dtype(op, types)
        ax = norm_axis(op, attrs["axis"], x.rank)
        norm_shape = x.shape[ax:]
        for p in types[1:]:
            if p.rank > len(norm_shape) or broadcast_shapes(p.shape, norm_shape, op=op) != tuple(norm_shape):
                raise TypeRuleError(f"{op}: scale / bias {p} must broadcast to the normalised shape {list(norm_shape)}")
        return [x]
    return rule


def _axes_from(attrs, ndim):
    return tuple(range(attrs["axis"] % ndim, ndim))


def _layer_norm_math(x, scale, bias, attrs):
    axes = _axes_from(attrs, x.ndim)
    mean = np.mean(x, axis=axes, keepdims=True)
    var = np.mean(np.square(x - mean), axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + np.asarray(attrs["epsilon"], x.dtype))
    if scale is not None:
        y = y * scale
    if bias is not None:
        y = y + bias
    return y


def _rms_norm_math(x, scale, attrs):
    axes = _axes_from(attrs, x.ndim)
    ms = np.mean(np.square(x), axis=axes, keepdims=True)
    y = x / np.sqrt(ms + np.asarray(attrs["epsilon"], x.dtype))
    return y * scale if scale is not None else y


def _opt(xs, i):
    return xs[i] if len(xs) > i else None


def _layer_norm_decompose_values(b, x, scale, bias, attrs):
    axes = tuple(range(attrs["axis"] % x.rank, x.rank))
    mean = b.op("reduce_mean", x, axes=axes, keepdims=True)
    d = b.op("sub", x, mean)
    var = b.op("reduce_mean", b.op("mul", d, d), axes=axes, keepdims=True)
    y = b.op("mul", d, b.op("rsqrt", b.op("add", var, b.scalar(attrs["epsilon"], x))))
    if scale is not None:
        y = b.op("mul", y, scale)
    if bias is not None:
        y = b.op("add", y, bias)
    return y


def _rms_norm_decompose_values(b, x, scale, attrs):
    axes = tuple(range(attrs["axis"] % x.rank, x.rank))
    ms = b.op("reduce_mean", b.op("mul", x, x), axes=axes, keepdims=True)
    y = b.op("mul", x, b.op("rsqrt", b.op("add", ms, b.scalar(attrs["epsilon"], x))))
    return b.op("mul", y, scale) if scale is not None else y


register(OpDef("layer_norm", _norm_rule("layer_norm", 2),
               _wrap(lambda xs, a: _layer_norm_math(xs[0], _opt(xs, 1), _opt(xs, 2), a)),
               min_inputs=1, max_inputs=3, attrs=dict(_NORM_ATTRS), composite=True,
               decompose=lambda b, i, a: [_layer_norm_decompose_values(b, i[0], _opt(i, 1), _opt(i, 2), a)],
               doc="(x - mean) / sqrt(var + eps) * scale + bias over dims axis..rank-1 (biased variance)"))
register(OpDef("rms_norm", _norm_rule("rms_norm", 1),
               _wrap(lambda xs, a: _rms_norm_math(xs[0], _opt(xs, 1), a)),
               min_inputs=1, max_inputs=2, attrs={"axis": AttrSpec("int", -1), "epsilon": AttrSpec("float", 1e-6)},
               composite=True, decompose=lambda b, i, a: [_rms_norm_decompose_values(b, i[0], _opt(i, 1), a)],
               doc="x / sqrt(mean(x^2) + eps) * scale over dims axis..rank-1"))


def _skip_norm_rule(op):
    inner = _norm_rule(op, 2)

    def rule(types, attrs):
        x, skip = types[0], types[1]
        same_dtype(op, types)
        if broadcast_shapes(x.shape, skip.shape, op=op) != x.shape:
            raise TypeRuleError(f"{op}: skip {skip} must broadcast to x {x}")
        (out,) = inner([x] + list(types[2:]), attrs)
        return [out, out]
    return rule


def _skip_ln_ref(xs, a):
    s = xs[0] + xs[1]
    return _layer_norm_math(s, _opt(xs, 2), _opt(xs, 3), a), s


def _skip_rms_ref(xs, a):
    s = xs[0] + xs[1]
    return _rms_norm_math(s, _opt(xs, 2), a), s


def _skip_ln_decompose(b, i, a):
    s = b.op("add", i[0], i[1])
    return [_layer_norm_decompose_values(b, s, _opt(i, 2), _opt(i, 3), a), s]


def _skip_rms_decompose(b, i, a):
    s = b.op("add", i[0], i[1])
    return [_rms_norm_decompose_values(b, s, _opt(i, 2), a), s]


register(OpDef("skip_layer_norm", _skip_norm_rule("skip_layer_norm"), _wrap(_skip_ln_ref), min_inputs=2,
               max_inputs=4, attrs=dict(_NORM_ATTRS), composite=True, decompose=_skip_ln_decompose,
               doc="s = x + skip; (layer_norm(s) * scale + bias, s): residual add fused with layer norm"))
register(OpDef("skip_rms_norm", _skip_norm_rule("skip_rms_norm"), _wrap(_skip_rms_ref), min_inputs=2,
               max_inputs=3, attrs={"axis": AttrSpec("int", -1), "epsilon": AttrSpec("float", 1e-6)},
               composite=True, decompose=_skip_rms_decompose,
               doc="s = x + skip; (rms_norm(s) * scale, s): residual add fused with RMS norm"))


def _batch_norm_rule(types, attrs):
    x = types[0]
    _float_only("batch_norm", x)
    same_dtype("batch_norm", types)
    if x.rank < 2:
        raise TypeRuleError("batch_norm: x must be [N, C, ...]")
    for p in types[1:]:
        if p.rank != 1:
            raise TypeRuleError(f"batch_norm: scale, bias, mean and var must be [C], got {p}")
    return [x]


def _bn_shape(x, p):
    return p.reshape((1, -1) + (1,) * (x.ndim - 2))


def _batch_norm_ref(xs, a):
    x, scale, bias, mean, var = xs
    inv = 1.0 / np.sqrt(var + np.asarray(a["epsilon"], var.dtype))
    return (x - _bn_shape(x, mean)) * _bn_shape(x, inv * scale) + _bn_shape(x, bias)


def _batch_norm_decompose(b, inputs, attrs):
    x, scale, bias, mean, var = inputs
    shape = (1, var.shape[0]) + (1,) * (x.rank - 2)
    inv = b.op("rsqrt", b.op("add", var, b.scalar(attrs["epsilon"], var)))
    k = b.op("reshape", b.op("mul", inv, scale), shape=shape)
    y = b.op("mul", b.op("sub", x, b.op("reshape", mean, shape=shape)), k)
    return [b.op("add", y, b.op("reshape", bias, shape=shape))]


register(OpDef("batch_norm", _batch_norm_rule, _wrap(_batch_norm_ref), min_inputs=5, max_inputs=5,
               attrs={"epsilon": AttrSpec("float", 1e-5)}, composite=True, decompose=_batch_norm_decompose,
               doc="inference batch norm over channel dim 1: (x - mean) / sqrt(var + eps) * scale + bias"))


# ----- attention ---------------------------------------------------------------------

def _attention_rule(types, attrs):
    q, k, v = types[:3]
    _float_only("attention", q)
    same_dtype("attention", [q, k, v])
    if q.rank < 2 or k.rank != q.rank or v.rank != q.rank:
        raise TypeRuleError("attention: q, k, v must be [..., L, D] of the same rank")
    if q.shape[-1] != k.shape[-1] and type(q.shape[-1]) is int and type(k.shape[-1]) is int:
        raise TypeRuleError(f"attention: q and k head dims differ ({q.shape[-1]} vs {k.shape[-1]})")
    batch = broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2], op="attention")
    if len(types) == 4:
        m = types[3]
        if m.dtype is not DType.bool and m.dtype != q.dtype:
            raise TypeRuleError(f"attention: mask must be bool or {q.dtype}, got {m.dtype}")
        broadcast_shapes(m.shape, batch + (q.shape[-2], k.shape[-2]), op="attention mask")
    return [TensorType(q.dtype, batch + (q.shape[-2], v.shape[-1]))]


def _attention_ref(xs, a):
    q, k, v = xs[:3]
    mask = xs[3] if len(xs) == 4 else None
    scale = a["scale"] if a["scale"] is not None else 1.0 / np.sqrt(q.shape[-1])
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * np.asarray(scale, q.dtype)
    if a["causal"]:
        lq, lk = q.shape[-2], k.shape[-2]
        keep = np.tril(np.ones((lq, lk), dtype=bool))
        s = np.where(keep, s, -np.inf)
    if mask is not None:
        if mask.dtype == np.bool_:
            s = np.where(mask, s, -np.inf)
        else:
            s = s + mask
    m = np.max(s, axis=-1, keepdims=True)
    e = np.exp(s - m)
    p = e / np.sum(e, axis=-1, keepdims=True)
    return np.matmul(p, v)


def _attention_ref_outer(inputs, attrs, regions):
    # the bool mask must not be cast to the compute dtype
    dt = inputs[0].dtype
    xs = [_in_compute(x) for x in inputs[:3]] + [m if m.dtype == np.bool_ else _in_compute(m) for m in inputs[3:]]
    with np.errstate(all="ignore"):
        return [np.asarray(_attention_ref(xs, attrs)).astype(dt, copy=False)]


def _attention_decompose(b, inputs, attrs):
    q, k, v = inputs[:3]
    mask = inputs[3] if len(inputs) == 4 else None
    r = q.rank
    perm = tuple(range(r - 2)) + (r - 1, r - 2)
    scale = attrs["scale"]
    if scale is None:
        d = q.shape[-1]
        if type(d) is not int:
            raise TypeRuleError("attention: a symbolic head dim needs an explicit scale")
        scale = 1.0 / np.sqrt(d)
    s = b.op("mul", b.op("matmul", q, b.op("transpose", k, perm=perm)), b.scalar(scale, q))
    neg = b.scalar(-np.inf, q)
    if attrs["causal"]:
        lq, lk = q.shape[-2], k.shape[-2]
        rows = b.op("iota", shape=(lq, lk), axis=0, dtype=DType.i64)
        cols = b.op("iota", shape=(lq, lk), axis=1, dtype=DType.i64)
        s = b.op("where", b.op("ge", rows, cols), s, neg)
    if mask is not None:
        s = b.op("where", mask, s, neg) if mask.dtype is DType.bool else b.op("add", s, mask)
    p = b.op("softmax", s, axis=-1)
    return [b.op("matmul", p, v)]


register(OpDef("attention", _attention_rule, _attention_ref_outer, min_inputs=3, max_inputs=4,
               attrs={"scale": AttrSpec("optional_float", None), "causal": AttrSpec("bool", False)},
               composite=True, decompose=_attention_decompose,
               doc="softmax(q k^T * scale + mask) v over [..., L, D]; scale defaults to 1/sqrt(D); bool mask "
                   "True keeps; causal keeps j <= i (top-left aligned, as torch sdpa)"))


# ----- linear / fused_conv -----------------------------------------------------------

def _linear_rule(types, attrs):
    x, w = types[0], types[1]
    dt = same_dtype("linear", types)
    if dt is DType.bool:
        raise TypeRuleError("linear: bool is not supported")
    if w.rank != 2 or x.rank < 1:
        raise TypeRuleError(f"linear: w must be [K, N] and x [..., K], got {x} and {w}")
    if x.shape[-1] != w.shape[0] and type(x.shape[-1]) is int and type(w.shape[0]) is int:
        raise TypeRuleError(f"linear: x [..., {x.shape[-1]}] does not match w [{w.shape[0]}, {w.shape[1]}]")
    if len(types) == 3:
        b = types[2]
        if b.rank > 1 or (b.rank == 1 and b.shape[0] != w.shape[1] and b.shape[0] != 1):
            raise TypeRuleError(f"linear: bias must be [N] with N={w.shape[1]}, got {b}")
    if attrs["activation"] != "none" and not dt.is_float:
        raise TypeRuleError("linear: activations need a float dtype")
    return [TensorType(dt, x.shape[:-1] + (w.shape[1],))]


def _linear_ref(xs, a):
    y = np.matmul(xs[0], xs[1])
    if len(xs) == 3:
        y = y + xs[2]
    return activation_reference(y, a["activation"])


def _linear_decompose(b, inputs, attrs):
    y = b.op("matmul", inputs[0], inputs[1])
    if len(inputs) == 3:
        y = b.op("add", y, inputs[2])
    return [decompose_activation(b, y, attrs["activation"])]


register(OpDef("linear", _linear_rule, _wrap(_linear_ref), min_inputs=2, max_inputs=3,
               attrs={"activation": AttrSpec("str", "none", ACTIVATIONS)}, composite=True,
               decompose=_linear_decompose, doc="activation(x @ w + b) with w [K, N]"))


def _fused_conv_rule(types, attrs):
    out = _conv_rule(types, attrs, op="fused_conv")
    return out


def _fused_conv_ref(inputs, attrs, regions):
    x, w = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) == 3 else None
    stride, padding, dilation, lhs = conv_params("fused_conv", attrs, x.ndim - 2)
    y = conv_reference(x, w, bias, stride, padding, dilation, attrs["groups"], lhs)
    with np.errstate(all="ignore"):
        return [activation_reference(_in_compute(y), attrs["activation"]).astype(x.dtype, copy=False)]


def _fused_conv_decompose(b, inputs, attrs):
    conv_attrs = {k: v for k, v in attrs.items() if k != "activation"}
    y = b.node("conv", inputs, conv_attrs).output
    return [decompose_activation(b, y, attrs["activation"])]


register(OpDef("fused_conv", _fused_conv_rule, _fused_conv_ref, min_inputs=2, max_inputs=3,
               attrs={**CONV_ATTRS, "activation": AttrSpec("str", "none", ACTIVATIONS)}, composite=True,
               decompose=_fused_conv_decompose, doc="activation(conv(x, w) + b)"))
