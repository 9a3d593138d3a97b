"""Composite ops that fusion targets: gelu, silu, softmax, log_softmax, layer_norm,
rms_norm, batch_norm (inference), attention, group_query_attention (decode attention over
a key / value cache), rotary_embedding, linear, fused_conv, skip_layer_norm,
skip_rms_norm; and the sampling ops grid_sample, roi_align and deform_conv (ONNX
GridSample, RoiAlign and DeformConv, decomposed into gathers at computed indices).

Each has a numpy reference (computing f16 / bf16 in f32) and a decomposition into
core ops, used by backends without a fused kernel and checked against the reference
in the tests.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .. import dims as _dims
from ..types import DType, TensorType
from .activations import ACTIVATIONS, activation
from .linalg import CONV_ATTRS, conv_type_rule, conv_params, conv_reference
from .registry import AttrSpec, OpDef, TypeRuleError, broadcast_shapes, norm_axis, np_dtype_compute, register, same_dtype

if TYPE_CHECKING:  # decompositions are handed a Builder; ir imports the ops, not the reverse
    from ..ir import Builder, Value

__all__ = ["activation_reference", "decompose_activation", "split_heads", "repeat_kv", "GRID_MODE_OLD_NAMES",
           "gather_taps"]


def _float_only(op: str, t: TensorType) -> None:
    if not t.dtype.is_float:
        raise TypeRuleError(f"{op}: dtype {t.dtype} is not supported (needs float)")


def _in_compute(x: np.ndarray) -> np.ndarray:
    return x.astype(np_dtype_compute(x.dtype), copy=False)


def activation_reference(x: np.ndarray, act: str) -> np.ndarray:
    """Apply a named activation (a row of ``activations.ACTIVATION_TABLE``) to an array already in its
    compute dtype."""
    return activation(act).reference(x)


def decompose_activation(b: Builder, x: Value, act: str) -> Value:
    """The IR op of activation ``act`` applied to ``x`` (``x`` itself for "none")."""
    a = activation(act)
    return x if a.op is None else b.op(a.op, x, **dict(a.attrs))


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
        scores = batch + (q.shape[-2], k.shape[-2])
        full = broadcast_shapes(m.shape, scores, op="attention mask")
        if len(full) > len(scores) or any(type(s) is int and d != s for d, s in zip(full[-len(scores):], scores)):
            raise TypeRuleError(f"attention: the mask {m} broadcasts the scores {list(scores)} to {list(full)}, "
                                "beyond them; give the mask the scores' shape or one that broadcasts into it")
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

# ----- rotary embedding / decode attention ---------------------------------------------


def _rotary_dim(op: str, x: TensorType, attrs) -> int:
    h = x.shape[-1]
    r = attrs["rotary_dim"] if attrs["rotary_dim"] is not None else h
    if type(r) is not int or r <= 0 or r % 2 or (type(h) is int and r > h):
        raise TypeRuleError(f"{op}: rotary_dim must be even, positive and at most the head dim {h}, got {r}")
    return r


def _rotary_rule(types, attrs):
    x, cos, sin = types
    _float_only("rotary_embedding", x)
    same_dtype("rotary_embedding", [x, cos, sin])
    if x.rank != 4 or cos.rank != 3 or sin.rank != 3:
        raise TypeRuleError("rotary_embedding: x must be [B, N, S, H] and cos / sin [B, S, rotary_dim / 2]")
    r = _rotary_dim("rotary_embedding", x, attrs)
    want = (x.shape[0], x.shape[2], r // 2)
    for name, t in (("cos", cos), ("sin", sin)):
        if t.shape[-1] != r // 2:
            raise TypeRuleError(f"rotary_embedding: {name} must end in rotary_dim / 2 = {r // 2}, got {t.shape}")
        broadcast_shapes(t.shape, want, op=f"rotary_embedding {name}")
    return [x]


def _rotary_halves(x, r: int, interleaved: bool):
    """The two rotated components of ``x``'s first ``r`` features (even / odd, or first / second half)."""
    if interleaved:
        return x[..., 0:r:2], x[..., 1:r:2]
    return x[..., : r // 2], x[..., r // 2 : r]


def _rotary_ref(xs, a):
    x, cos, sin = xs
    r = a["rotary_dim"] or x.shape[-1]
    c, s = cos[:, None], sin[:, None]
    x1, x2 = _rotary_halves(x, r, a["interleaved"])
    y1, y2 = x1 * c - x2 * s, x2 * c + x1 * s
    rot = np.stack([y1, y2], -1).reshape(*y1.shape[:-1], r) if a["interleaved"] else np.concatenate([y1, y2], -1)
    return np.concatenate([rot, x[..., r:]], -1)


def _rotary_decompose(b, inputs, attrs):
    x, cos, sin = inputs
    r = _rotary_dim("rotary_embedding", x.type, attrs)
    c, s = (b.op("unsqueeze", t, axes=(1,)) for t in (cos, sin))
    if attrs["interleaved"]:
        x1, x2 = (b.op("slice", x, starts=(i,), stops=(r,), steps=(2,), axes=(3,)) for i in (0, 1))
    else:
        x1, x2 = (b.op("slice", x, starts=(i,), stops=(i + r // 2,), axes=(3,)) for i in (0, r // 2))
    y1 = b.op("sub", b.op("mul", x1, c), b.op("mul", x2, s))
    y2 = b.op("add", b.op("mul", x2, c), b.op("mul", x1, s))
    if attrs["interleaved"]:
        pairs = b.op("concat", *(b.op("unsqueeze", y, axes=(4,)) for y in (y1, y2)), axis=4)
        rot = b.op("reshape", pairs, shape=tuple(x.shape[:3]) + (r,))
    else:
        rot = b.op("concat", y1, y2, axis=3)
    if x.shape[-1] == r:
        return [rot]
    rest = b.op("slice", x, starts=(r,), stops=(x.shape[-1],), axes=(3,))
    return [b.op("concat", rot, rest, axis=3)]


register(OpDef("rotary_embedding", _rotary_rule, _wrap(_rotary_ref), min_inputs=3, max_inputs=3,
               attrs={"interleaved": AttrSpec("bool", False), "rotary_dim": AttrSpec("optional_int", None)},
               composite=True, decompose=_rotary_decompose,
               doc="rotary position embedding of x [B, N, S, H] by cos / sin [B, S, rotary_dim / 2]: each pair "
                   "(x1, x2) of the first rotary_dim features (halves, or even / odd when interleaved) becomes "
                   "(x1 cos - x2 sin, x2 cos + x1 sin); the rest pass through"))


def _gqa_rule(types, attrs):
    q, k, v, pk, pv = types[:5]
    _float_only("group_query_attention", q)
    same_dtype("group_query_attention", [q, k, v, pk, pv])
    if any(t.rank != 4 for t in (q, k, v, pk, pv)):
        raise TypeRuleError("group_query_attention: q [B, N, S, H], k / v [B, KV, S, H] and past k / v "
                            "[B, KV, P, H] must all be rank 4")
    n, kv = q.shape[1], k.shape[1]
    if type(n) is not int or type(kv) is not int or n % kv or kv != pk.shape[1] or v.shape[1] != kv \
            or pv.shape[1] != kv:
        raise TypeRuleError(f"group_query_attention: {n} query heads do not group into {kv} kv heads "
                            f"(k {k.shape}, past k {pk.shape}, past v {pv.shape})")
    if q.shape[3] != k.shape[3] or pk.shape[3] != k.shape[3] or pv.shape[3] != v.shape[3] \
            or pk.shape[2] != pv.shape[2] or k.shape[2] != q.shape[2] or v.shape[2] != q.shape[2]:
        raise TypeRuleError(f"group_query_attention: the head dims or lengths of q {q.shape}, k {k.shape}, "
                            f"v {v.shape}, past k {pk.shape}, past v {pv.shape} do not fit")
    total = _dims.dim_add(pk.shape[2], k.shape[2])
    batch = broadcast_shapes(q.shape[:1], k.shape[:1], pk.shape[:1], op="group_query_attention")
    if len(types) == 6:
        m = types[5]
        if m.dtype is not DType.bool and m.dtype != q.dtype:
            raise TypeRuleError(f"group_query_attention: mask must be bool or {q.dtype}, got {m.dtype}")
        broadcast_shapes(m.shape, batch + (n, q.shape[2], total), op="group_query_attention mask")
    return [TensorType(q.dtype, batch + (n, q.shape[2], v.shape[3])),
            TensorType(q.dtype, batch + (kv, total, k.shape[3])),
            TensorType(q.dtype, batch + (kv, total, v.shape[3]))]


def _gqa_ref(inputs, attrs, regions):
    q, k, v, pk, pv = inputs[:5]
    keys, values = np.concatenate([pk, k], 2), np.concatenate([pv, v], 2)
    rep = q.shape[1] // k.shape[1]
    y = _attention_ref_outer([q, np.repeat(keys, rep, 1), np.repeat(values, rep, 1), *inputs[5:]],
                             {"scale": attrs["scale"], "causal": False}, regions)[0]
    return [y, keys, values]


def repeat_kv(b: Builder, t: Value, rep: int) -> Value:
    """Grouped-query attention's head repeat: [..., KV, L, H] -> [..., KV * rep, L, H], each kv head
    ``rep`` times in a row (``unsqueeze``, ``broadcast_to``, ``reshape``, as transformers' repeat_kv)."""
    if rep == 1:
        return t
    *batch, kv, length, d = t.shape
    u = b.op("broadcast_to", b.op("unsqueeze", t, axes=(t.rank - 2,)), shape=(*batch, kv, rep, length, d))
    return b.op("reshape", u, shape=(*batch, kv * rep, length, d))


def _gqa_decompose(b, inputs, attrs):
    q, k, v, pk, pv = inputs[:5]
    keys, values = b.op("concat", pk, k, axis=2), b.op("concat", pv, v, axis=2)
    rep = q.shape[1] // k.shape[1]
    y = b.op("attention", q, repeat_kv(b, keys, rep), repeat_kv(b, values, rep), *inputs[5:],
             scale=attrs["scale"])
    return [y, keys, values]


register(OpDef("group_query_attention", _gqa_rule, _gqa_ref, min_inputs=5, max_inputs=6,
               attrs={"scale": AttrSpec("optional_float", None)}, composite=True, decompose=_gqa_decompose,
               doc="attention of q [B, N, S, H] over the kv heads [B, KV, P + S, H] = concat(past, new) on the "
                   "length axis, each kv head serving N / KV query heads, with an optional mask over [.., S, P + S]; "
                   "outputs the attention [B, N, S, Hv] and the present keys and values"))


def split_heads(v: Value) -> tuple[Value, int] | None:
    """``(x, N)`` where ``v = transpose(reshape(x, [B, S, N, H]), (0, 2, 1, 3))`` splits the
    [B, S, N * H] value ``x`` into the [B, N, S, H] heads an ``attention`` reads; else None."""
    t = v.producer
    if t is None or t.op != "transpose" or tuple(t.attrs["perm"]) != (0, 2, 1, 3):
        return None
    r = t.inputs[0].producer
    if r is None or r.op != "reshape":
        return None
    x = r.inputs[0]
    b, s, n, h = r.outputs[0].shape
    if x.rank != 3 or tuple(x.shape[:2]) != (b, s) or type(n) is not int or type(h) is not int \
            or x.shape[2] != n * h:
        return None
    return x, n


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
    out = conv_type_rule(types, attrs, op="fused_conv")
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


# ----- grid_sample / roi_align ---------------------------------------------------------

_CUBIC_A = -0.75  # Keys' cubic convolution coefficient, as ONNX GridSample and torch use
_GRID_MODES = ("linear", "nearest", "cubic")
# each mode's name in torch's grid_sample and in ONNX GridSample before opset 20
GRID_MODE_OLD_NAMES = {"linear": "bilinear", "nearest": "nearest", "cubic": "bicubic"}
_GRID_PADDING = ("zeros", "border", "reflection")


def _static_dims(op: str, dims, what: str) -> tuple[int, ...]:
    if not all(type(d) is int for d in dims):
        raise TypeRuleError(f"{op}: the decomposition needs static {what}, got {list(dims)}")
    return tuple(dims)


def _grid_sample_rule(types, attrs):
    x, grid = types
    _float_only("grid_sample", x)
    same_dtype("grid_sample", types)
    r = x.rank - 2
    if r < 1 or grid.rank != x.rank or grid.shape[-1] != r:
        raise TypeRuleError(f"grid_sample: x must be [N, C, *spatial] and grid [N, *out, {max(r, 1)}] of the "
                            f"same rank, got {x} and {grid}")
    if x.shape[0] != grid.shape[0]:
        raise TypeRuleError(f"grid_sample: batch dims differ ({x.shape[0]} vs {grid.shape[0]})")
    return [TensorType(x.dtype, tuple(x.shape[:2]) + tuple(grid.shape[1:-1]))]


def _gs_bounds(size: int, align_corners: bool) -> tuple[float, float]:
    return (0.0, size - 1.0) if align_corners else (-0.5, size - 0.5)


def _gs_reflect_np(x, lo: float, hi: float):
    """Fold x into [lo, hi] by reflecting at the nearer border until it lies inside."""
    span = hi - lo
    if span <= 0:
        return np.full_like(x, lo)
    below = x < lo
    d = np.where(below, lo - x, x - hi)
    k = np.floor(d / span)
    r = d - k * span
    toward_lo = below == (np.mod(k, 2) == 0)
    return np.where((x < lo) | (x > hi), np.where(toward_lo, lo + r, hi - r), x).astype(x.dtype)


def _cubic_coeffs(t):
    """Keys' cubic weights of the taps at -1, 0, 1, 2 for a fraction t in [0, 1)."""
    a = _CUBIC_A
    s, u, v = t + 1, 1 - t, 2 - t
    return [((a * s - 5 * a) * s + 8 * a) * s - 4 * a, ((a + 2) * t - (a + 3)) * t * t + 1,
            ((a + 2) * u - (a + 3)) * u * u + 1, ((a * v - 5 * a) * v + 8 * a) * v - 4 * a]


def _gs_taps_np(x, size: int, attrs):
    """Per spatial dim: [(integer index, weight, in bounds)] for the taps of one source coordinate."""
    lo, hi = _gs_bounds(size, attrs["align_corners"])
    mode, pad = attrs["mode"], attrs["padding_mode"]
    if mode == "nearest":
        taps = [(np.rint(x), np.ones_like(x))]
    else:
        base = np.floor(x)
        t = x - base
        if mode == "linear":
            taps = [(base, 1 - t), (base + 1, t)]
        else:
            taps = [(base + k - 1, w) for k, w in enumerate(_cubic_coeffs(t))]
    out = []
    for i, w in taps:
        if mode == "nearest" and pad == "border":
            i = np.where((i < lo) | (i > hi), np.clip(i, 0, size - 1), i)
        if pad == "reflection":
            i = _gs_reflect_np(i, lo, hi)
        ok = (i >= 0) & (i <= size - 1) if pad == "zeros" else np.ones(i.shape, bool)
        out.append((np.clip(i, 0, size - 1).astype(np.int64), w, ok))
    return out


def _gs_source_np(g, size: int, attrs):
    """The source coordinate of normalised grid values g along a dim of this size, padded as ONNX
    GridSample pads coordinates (before the taps)."""
    if attrs["align_corners"]:
        x = (g + 1) / 2 * (size - 1)
    else:
        x = ((g + 1) * size - 1) / 2
    if attrs["mode"] == "nearest":
        return x  # nearest pads the rounded coordinate (see _gs_taps_np)
    lo, hi = _gs_bounds(size, attrs["align_corners"])
    if attrs["padding_mode"] == "border":
        x = np.where((x < lo) | (x > hi), np.clip(x, 0, size - 1), x)
    elif attrs["padding_mode"] == "reflection":
        x = _gs_reflect_np(x, lo, hi)
    return x


def _grid_sample_ref(xs, a):
    x, grid = xs
    n, c, sizes = x.shape[0], x.shape[1], x.shape[2:]
    r = len(sizes)
    out_sp = grid.shape[1:-1]
    total = int(np.prod(sizes, dtype=np.int64))
    rows = np.moveaxis(x, 1, -1).reshape(n * total, c)
    # grid's last dim lists coordinates innermost first (x = width, y = height, ...)
    taps = [_gs_taps_np(_gs_source_np(grid[..., r - 1 - d], sizes[d], a), sizes[d], a) for d in range(r)]
    strides = [int(np.prod(sizes[d + 1:], dtype=np.int64)) for d in range(r)]
    batch = np.arange(n).reshape((n,) + (1,) * len(out_sp)) * total
    return np.moveaxis(_sum_taps_np(rows, batch, taps, strides).astype(x.dtype), -1, 1)


def _sum_taps_np(rows: np.ndarray, base: np.ndarray, taps, strides) -> np.ndarray:
    """Over every combination of one tap per dim (``taps[d]``: [(index, weight, in bounds)]): the sum of
    ``rows[base + sum_d index_d * strides[d]] * prod_d weight_d``, zero for a tap out of bounds."""
    out = 0
    for combo in itertools.product(*taps):
        idx, w, ok = base, 1, True
        for (i, w_d, ok_d), stride in zip(combo, strides):
            idx, w, ok = idx + i * stride, w * w_d, ok & ok_d
        out = out + np.where(np.asarray(ok)[..., None], rows[idx], 0) * np.asarray(w)[..., None]
    return out


def _gs_reflect_ir(b: Builder, x: Value, lo: float, hi: float) -> Value:
    span = hi - lo
    if span <= 0:
        return b.op("broadcast_to", b.scalar(lo, x), shape=x.shape)
    lo_c, hi_c = b.scalar(lo, x), b.scalar(hi, x)
    below, above = b.op("lt", x, lo_c), b.op("gt", x, hi_c)
    d = b.op("where", below, b.op("sub", lo_c, x), b.op("sub", x, hi_c))
    k = b.op("floor", b.op("div", d, b.scalar(span, x)))
    r = b.op("sub", d, b.op("mul", k, b.scalar(span, x)))
    even = b.op("eq", b.op("rem", k, b.scalar(2.0, x)), b.scalar(0.0, x))
    folded = b.op("where", b.op("eq", below, even), b.op("add", lo_c, r), b.op("sub", hi_c, r))
    return b.op("where", b.op("or", below, above), folded, x)


def _clip_ir(b: Builder, x: Value, lo: float, hi: float) -> Value:
    return b.op("min", b.op("max", x, b.scalar(lo, x)), b.scalar(hi, x))


def _pad_outside_ir(b: Builder, x: Value, size: int, attrs) -> Value:
    """border: clamp coordinates outside [lo, hi] to [0, size - 1]; reflection: fold them in."""
    lo, hi = _gs_bounds(size, attrs["align_corners"])
    if attrs["padding_mode"] == "border":
        outside = b.op("or", b.op("lt", x, b.scalar(lo, x)), b.op("gt", x, b.scalar(hi, x)))
        return b.op("where", outside, _clip_ir(b, x, 0.0, size - 1.0), x)
    if attrs["padding_mode"] == "reflection":
        return _gs_reflect_ir(b, x, lo, hi)
    return x


def _gs_source_ir(b: Builder, g: Value, size: int, align_corners: bool) -> Value:
    """The decomposition's _gs_source_np before padding: normalised g to a pixel coordinate."""
    one = b.scalar(1.0, g)
    if align_corners:
        return b.op("mul", b.op("mul", b.op("add", g, one), b.scalar(0.5, g)), b.scalar(size - 1.0, g))
    return b.op("mul", b.op("sub", b.op("mul", b.op("add", g, one), b.scalar(float(size), g)), one),
                b.scalar(0.5, g))


def _pixel_taps_ir(b: Builder, x: Value, size: int, attrs) -> tuple[Value, Value | None, Value | None]:
    """The taps that sample pixel coordinate ``x`` along a dim of ``size`` (_gs_taps_np's), stacked on a
    new last axis: (i64 index, weight or None, in-bounds or None), each ``x.shape + [T]``."""
    mode = attrs["mode"]
    if mode == "nearest":
        i, w = b.op("unsqueeze", b.op("round", x), axes=(-1,)), None
    else:
        x = _pad_outside_ir(b, x, size, attrs)
        offsets = (0.0, 1.0) if mode == "linear" else (-1.0, 0.0, 1.0, 2.0)
        i = b.op("add", b.op("unsqueeze", b.op("floor", x), axes=(-1,)), b.const(np.array(offsets, x.dtype.numpy)))
        dist = b.op("abs", b.op("sub", b.op("unsqueeze", x, axes=(-1,)), i))  # in [0, 2)
        w = b.op("sub", b.scalar(1.0, x), dist) if mode == "linear" else _cubic_weight_ir(b, dist)
    ok = None
    if mode == "nearest" and attrs["padding_mode"] != "zeros":
        i = _pad_outside_ir(b, i, size, attrs)
    elif attrs["padding_mode"] == "reflection":
        i = _gs_reflect_ir(b, i, *_gs_bounds(size, attrs["align_corners"]))
    if attrs["padding_mode"] == "zeros":
        ok = b.op("and", b.op("ge", i, b.scalar(0.0, i)), b.op("le", i, b.scalar(size - 1.0, i)))
    return b.op("cast", _clip_ir(b, i, 0.0, size - 1.0), dtype=DType.i64), w, ok


def _cubic_weight_ir(b: Builder, s: Value) -> Value:
    """Keys' cubic kernel at distance s in [0, 2): the weights _cubic_coeffs gives its four taps."""
    a = _CUBIC_A

    def poly(c3: float, c2: float, c1: float, c0: float) -> Value:
        acc = b.op("add", b.op("mul", b.scalar(c3, s), s), b.scalar(c2, s))
        acc = b.op("add", b.op("mul", acc, s), b.scalar(c1, s))
        return b.op("add", b.op("mul", acc, s), b.scalar(c0, s))

    near = poly(a + 2, -(a + 3), 0.0, 1.0)  # s in [0, 1)
    far = poly(a, -5 * a, 8 * a, -4 * a)  # s in [1, 2)
    return b.op("where", b.op("lt", s, b.scalar(1.0, s)), near, far)


def gather_taps(b: Builder, flat: Value, base: Value, taps: Sequence[tuple[Value, Value | None, Value | None]],
                 strides: Sequence[int], combine: str = "add") -> Value:
    """Rows of ``flat`` [rows, C] read at every combination of one tap per dim, and combined.

    ``taps[d]`` holds dim d's taps on a last axis of their own: (i64 index ``[..., T_d]``, weight or
    None (1), in-bounds or None (always)), the leading dims of all dims' taps and ``base`` broadcasting
    together.  Returns ``[..., C]``: over the combinations, the sum (``combine="add"``) or the max of
    ``flat[base + sum_d index_d * strides[d]] * prod_d weight_d``, a tap out of bounds reading zero.

    The indices and weights of all combinations are computed at once (they have no C axis); the
    rows are then gathered one combination at a time, so no more than one output's worth of them
    is held at a time.  An out-of-bounds combination reads a row of zeros put in front of ``flat``
    (a weight of zero would turn an infinite pixel into NaN).
    """
    r = len(taps)
    lead = max([base.rank] + [t[0].rank - 1 for t in taps])

    def spread(v: Value, d: int) -> Value:
        """``[..., T_d]`` -> ``[..., 1 (d times), T_d, 1 (r - 1 - d times)]`` at rank ``lead + r``."""
        if v.rank - 1 < lead:
            v = b.op("unsqueeze", v, axes=tuple(range(lead - v.rank + 1)))
        axes = tuple(range(lead, lead + d)) + tuple(range(lead + d + 1, lead + r))
        return b.op("unsqueeze", v, axes=axes) if axes else v

    padded = any(ok is not None for _, _, ok in taps)
    if padded:  # row 0 reads zeros, the others shift by one
        flat = b.op("concat", b.op("broadcast_to", b.scalar(0.0, flat), shape=(1, flat.shape[1])), flat, axis=0)
        base = b.op("add", base, b.scalar(1, DType.i64))
    if base.rank < lead:
        base = b.op("unsqueeze", base, axes=tuple(range(lead - base.rank)))
    idx = b.op("unsqueeze", base, axes=tuple(range(lead, lead + r)))
    weight = inside = None
    for d, (i, w, ok) in enumerate(taps):
        i = b.op("mul", i, b.scalar(strides[d], DType.i64)) if strides[d] != 1 else i
        idx = b.op("add", idx, spread(i, d))
        if w is not None:
            weight = spread(w, d) if weight is None else b.op("mul", weight, spread(w, d))
        if ok is not None:
            inside = spread(ok, d) if inside is None else b.op("and", inside, spread(ok, d))
    if padded:
        idx = b.op("where", inside, idx, b.scalar(0, DType.i64))
    if weight is not None:
        weight = b.op("unsqueeze", weight, axes=(-1,))
    tap_axes = tuple(range(lead, lead + r))
    counts = [t[0].shape[-1] for t in taps]
    acc = None
    for combo in np.ndindex(*counts):
        def pick(v: Value) -> Value:
            """Combination ``combo`` of ``v``, whose tap axes may be 1 (the dim has no weights)."""
            at = [(k if v.shape[a] != 1 else 0) for k, a in zip(combo, tap_axes)]
            if v.shape[lead:lead + r] == (1,) * r:
                return v
            return b.op("slice", v, starts=at, stops=[k + 1 for k in at], axes=tap_axes)
        v = b.op("gather", flat, pick(idx), axis=0)  # [..., 1 (r times), C]
        if weight is not None:
            v = b.op("mul", v, pick(weight))
        acc = v if acc is None else b.op(combine, acc, v)
    return b.op("squeeze", acc, axes=tap_axes)


def _low_precision_in_f32(b: Builder, inputs: list[Value]) -> tuple[list[Value], DType]:
    """The inputs of the first input's dtype cast to the dtype references compute it in
    (``np_dtype_compute``: f32 for f16 / bf16), and that first dtype."""
    dt = inputs[0].dtype
    compute = DType.from_numpy(np_dtype_compute(dt.numpy))
    if compute is dt:
        return list(inputs), dt
    return [b.op("cast", v, dtype=compute) if v.dtype is dt else v for v in inputs], dt


def _grid_sample_decompose(b, inputs, attrs):
    (x, grid), dt = _low_precision_in_f32(b, inputs)
    n, c = x.shape[0], x.shape[1]
    sizes = _static_dims("grid_sample", x.shape[2:], "spatial dims of x")
    r = len(sizes)
    out_sp = tuple(grid.shape[1:-1])
    taps = []
    for d in range(r):
        g = b.op("squeeze", b.op("slice", grid, starts=(r - 1 - d,), stops=(r - d,), axes=(grid.rank - 1,)),
                 axes=(grid.rank - 1,))
        taps.append(_pixel_taps_ir(b, _gs_source_ir(b, g, sizes[d], attrs["align_corners"]), sizes[d], attrs))
    total = int(np.prod(sizes))
    strides = [int(np.prod(sizes[d + 1:], dtype=np.int64)) for d in range(r)]
    flat = b.op("reshape", b.op("transpose", x, perm=(0,) + tuple(range(2, r + 2)) + (1,)),
                shape=(_dims.dim_mul(n, total), c))
    batch = b.op("mul", b.op("iota", shape=(n,) + out_sp, axis=0, dtype=DType.i64), b.scalar(total, DType.i64))
    y = gather_taps(b, flat, batch, taps, strides)
    y = b.op("transpose", y, perm=(0, r + 1) + tuple(range(1, r + 1)))
    return [b.op("cast", y, dtype=dt) if y.dtype is not dt else y]


register(OpDef("grid_sample", _grid_sample_rule, _wrap(_grid_sample_ref), min_inputs=2, max_inputs=2,
               attrs={"mode": AttrSpec("str", "linear", _GRID_MODES),
                      "padding_mode": AttrSpec("str", "zeros", _GRID_PADDING),
                      "align_corners": AttrSpec("bool", False)},
               composite=True, decompose=_grid_sample_decompose,
               doc="ONNX GridSample: y[n, c, *o] samples x[n, c] at grid[n, *o] (normalised to [-1, 1], the "
                   "innermost spatial dim first) by nearest (round half to even), linear or cubic (Keys, "
                   "a=-0.75) interpolation; padding_mode zeros / border / reflection; align_corners maps -1 and "
                   "1 to the corner pixels' centres instead of their outer edges"))


_ROI_COORDS = ("half_pixel", "output_half_pixel")


def _roi_align_rule(types, attrs):
    x, rois, idx = types
    _float_only("roi_align", x)
    same_dtype("roi_align", [x, rois])
    if not idx.dtype.is_int:
        raise TypeRuleError(f"roi_align: batch_indices must be an integer tensor, got {idx.dtype}")
    if x.rank != 4 or rois.rank != 2 or idx.rank != 1 or (type(rois.shape[1]) is int and rois.shape[1] != 4):
        raise TypeRuleError(f"roi_align: x must be [N, C, H, W], rois [R, 4] and batch_indices [R], got {x}, "
                            f"{rois} and {idx}")
    if rois.shape[0] != idx.shape[0]:
        raise TypeRuleError(f"roi_align: rois and batch_indices count different rois ({rois.shape[0]} vs "
                            f"{idx.shape[0]})")
    if attrs["output_height"] < 1 or attrs["output_width"] < 1 or attrs["sampling_ratio"] < 0:
        raise TypeRuleError("roi_align: output_height and output_width must be >= 1 and sampling_ratio >= 0")
    return [TensorType(x.dtype, (rois.shape[0], x.shape[1], attrs["output_height"], attrs["output_width"]))]


def _roi_axis_np(start, length, pooled: int, grid: int, size: int):
    """The sample rows (or columns) of one roi: low / high indices [pooled, grid] and their weights, zero for
    samples outside [-1, size]."""
    bin_ = length / pooled
    p = np.arange(pooled, dtype=length.dtype)[:, None]
    i = np.arange(grid, dtype=length.dtype)[None, :] + np.asarray(0.5, length.dtype)
    y = start + p * bin_ + i * bin_ / grid
    valid = ((y >= -1) & (y <= size)).astype(y.dtype)
    y = np.maximum(y, 0)
    low = np.floor(y)
    edge = low >= size - 1
    low = np.where(edge, size - 1, low)
    frac = np.where(edge, 0, y - low).astype(y.dtype)
    high = np.where(edge, size - 1, low + 1)
    return [(low.astype(np.int64), (1 - frac) * valid), (high.astype(np.int64), frac * valid)]


def _roi_align_ref(xs, a):
    x, rois, batch = xs
    c, h, w = x.shape[1:]
    oh, ow, sr = a["output_height"], a["output_width"], a["sampling_ratio"]
    half = a["coordinate_transformation_mode"] == "half_pixel"
    box = rois * np.asarray(a["spatial_scale"], x.dtype) - np.asarray(0.5 if half else 0.0, x.dtype)
    out = np.zeros((rois.shape[0], c, oh, ow), x.dtype)
    for r in range(rois.shape[0]):
        x1, y1, x2, y2 = box[r]
        rh, rw = (y2 - y1, x2 - x1) if half else (max(y2 - y1, x.dtype.type(1)), max(x2 - x1, x.dtype.type(1)))
        gh, gw = (sr, sr) if sr > 0 else (int(np.ceil(rh / oh)), int(np.ceil(rw / ow)))
        if gh <= 0 or gw <= 0:
            continue
        img = x[batch[r]]
        terms = [img[:, yi[:, :, None, None], xi[None, None]] * (wy[:, :, None, None] * wx[None, None])
                 for yi, wy in _roi_axis_np(y1, rh, oh, gh, h) for xi, wx in _roi_axis_np(x1, rw, ow, gw, w)]
        if a["mode"] == "avg":
            out[r] = np.sum(terms, axis=0).sum(axis=(2, 4)) / (gh * gw)
        else:
            out[r] = np.max(terms, axis=0).max(axis=(2, 4))
    return out


def _roi_axis_ir(b: Builder, start: Value, end: Value, pooled: int, grid: int, size: int, half: bool
                 ) -> tuple[Value, Value]:
    """_roi_axis_np's low and high taps stacked on a last axis: i64 indices and weights [R, pooled * grid, 2]."""
    length = b.op("sub", end, start)
    if not half:
        length = b.op("max", length, b.scalar(1.0, length))
    bin_ = b.op("unsqueeze", b.op("div", length, b.scalar(float(pooled), length)), axes=(1,))
    dt = start.dtype.numpy
    p = b.const(np.repeat(np.arange(pooled), grid).astype(dt))
    i = b.const(np.tile(np.arange(grid) + 0.5, pooled).astype(dt))
    y = b.op("add", b.op("add", b.op("unsqueeze", start, axes=(1,)), b.op("mul", p, bin_)),
             b.op("div", b.op("mul", i, bin_), b.scalar(float(grid), start)))
    valid = b.op("and", b.op("ge", y, b.scalar(-1.0, y)), b.op("le", y, b.scalar(float(size), y)))
    y = b.op("max", y, b.scalar(0.0, y))
    low = b.op("floor", y)
    last = b.scalar(size - 1.0, y)
    edge = b.op("ge", low, last)
    low = b.op("where", edge, last, low)
    frac = b.op("where", edge, b.scalar(0.0, y), b.op("sub", y, low))
    high = b.op("where", edge, last, b.op("add", low, b.scalar(1.0, y)))
    vf = b.op("unsqueeze", b.op("cast", valid, dtype=y.dtype), axes=(-1,))
    index = b.op("concat", *(b.op("unsqueeze", v, axes=(-1,)) for v in (low, high)), axis=-1)
    frac = b.op("unsqueeze", frac, axes=(-1,))
    weight = b.op("concat", b.op("sub", b.scalar(1.0, y), frac), frac, axis=-1)
    return b.op("cast", index, dtype=DType.i64), b.op("mul", weight, vf)


def _roi_align_decompose(b, inputs, attrs):
    (x, rois, batch), dt = _low_precision_in_f32(b, inputs)
    sr = attrs["sampling_ratio"]
    if sr <= 0:
        raise TypeRuleError("roi_align: the decomposition needs sampling_ratio > 0; adaptive sampling (0) takes a "
                            "data-dependent number of samples per bin: set sampling_ratio or use a backend with a "
                            "RoiAlign kernel (ONNX Runtime)")
    n, c = x.shape[:2]
    h, w = _static_dims("roi_align", x.shape[2:], "spatial dims of x")
    oh, ow = attrs["output_height"], attrs["output_width"]
    half = attrs["coordinate_transformation_mode"] == "half_pixel"
    box = b.op("mul", rois, b.scalar(attrs["spatial_scale"], rois))
    if half:
        box = b.op("sub", box, b.scalar(0.5, rois))
    x1, y1, x2, y2 = (b.op("squeeze", b.op("slice", box, starts=(k,), stops=(k + 1,), axes=(1,)), axes=(1,))
                      for k in range(4))
    rows = _roi_axis_ir(b, y1, y2, oh, sr, h, half)
    cols = _roi_axis_ir(b, x1, x2, ow, sr, w, half)
    base = b.op("reshape", b.op("mul", b.op("cast", batch, dtype=DType.i64), b.scalar(h * w, DType.i64)),
                shape=(rois.shape[0], 1, 1))
    flat = b.op("reshape", b.op("transpose", x, perm=(0, 2, 3, 1)), shape=(_dims.dim_mul(n, h * w), c))
    # rows [R, oh * sr] against columns [R, ow * sr]: every bilinear sample, weighted corners summed
    # (avg) or their max taken (max, as ONNX Runtime does)
    taps = [(b.op("unsqueeze", i, axes=(axis,)), b.op("unsqueeze", wt, axes=(axis,)), None)
            for (i, wt), axis in ((rows, 2), (cols, 1))]
    acc = gather_taps(b, flat, base, taps, (w, 1), "add" if attrs["mode"] == "avg" else "max")
    acc = b.op("reshape", acc, shape=(rois.shape[0], oh, sr, ow, sr, c))
    y = b.op("reduce_mean" if attrs["mode"] == "avg" else "reduce_max", acc, axes=(2, 4))
    y = b.op("transpose", y, perm=(0, 3, 1, 2))
    return [b.op("cast", y, dtype=dt) if y.dtype is not dt else y]


register(OpDef("roi_align", _roi_align_rule, _wrap(_roi_align_ref), min_inputs=3, max_inputs=3,
               attrs={"mode": AttrSpec("str", "avg", ("avg", "max")),
                      "output_height": AttrSpec("int", 1), "output_width": AttrSpec("int", 1),
                      "sampling_ratio": AttrSpec("int", 0), "spatial_scale": AttrSpec("float", 1.0),
                      "coordinate_transformation_mode": AttrSpec("str", "half_pixel", _ROI_COORDS)},
               composite=True, decompose=_roi_align_decompose,
               doc="ONNX RoiAlign: y[r, c] pools x[batch_indices[r], c] over roi r = (x1, y1, x2, y2) * "
                   "spatial_scale (less 0.5 for half_pixel) cut into output_height x output_width bins, each "
                   "the avg or max of sampling_ratio^2 bilinear samples (0: ceil(bin size) per dim); samples "
                   "outside [-1, size] count as 0"))


_DEFORM_ATTRS = {"stride": AttrSpec("ints", ()), "padding": AttrSpec("pairs", ()), "dilation": AttrSpec("ints", ()),
                 "groups": AttrSpec("int", 1), "offset_groups": AttrSpec("int", 1)}


def _deform_conv_rule(types, attrs):
    x, w, offset = types[:3]
    if x.rank != 4:
        raise TypeRuleError(f"deform_conv: x must be [N, C, H, W] (2-d only), got {x}")
    same_dtype("deform_conv", types)
    (out,) = conv_type_rule([x, w] + list(types[3:4]), attrs, op="deform_conv")
    og, (kh, kw) = attrs["offset_groups"], w.shape[2:]
    if og < 1 or (type(x.shape[1]) is int and x.shape[1] % og):
        raise TypeRuleError(f"deform_conv: {x.shape[1]} channels do not split into {og} offset groups")
    for t, per, what in ((offset, 2, "offset"), *((m, 1, "mask") for m in types[4:])):
        want = (out.shape[0], og * kh * kw * per) + tuple(out.shape[2:])
        if t.rank != 4 or any(type(a) is int and type(b) is int and a != b for a, b in zip(t.shape, want)):
            raise TypeRuleError(f"deform_conv: {what} must be {list(want)}, got {t}")
    return [out]


def _deform_conv_geometry(w_shape, attrs):
    stride, padding, dilation, _ = conv_params("deform_conv", attrs, 2)
    return stride, tuple(lo for lo, _ in padding), dilation, tuple(w_shape[2:])


_BILINEAR_ZEROS = {"mode": "linear", "padding_mode": "zeros", "align_corners": False}


def _deform_conv_ref(xs, a):
    x, w, offset = xs[:3]
    n, c, h, wd = x.shape
    o, oh, ow = w.shape[0], offset.shape[2], offset.shape[3]
    g, og = a["groups"], a["offset_groups"]
    stride, pad, dil, (kh, kw) = _deform_conv_geometry(w.shape, a)
    off = offset.reshape(n, og, kh, kw, 2, oh, ow)
    # sample rows / columns: the plain conv's tap position plus the learned offset
    rows = (np.arange(kh) * dil[0])[:, None, None, None] + (np.arange(oh) * stride[0] - pad[0])[:, None]
    cols = (np.arange(kw) * dil[1])[:, None, None] + (np.arange(ow) * stride[1] - pad[1])
    py, px = rows + off[:, :, :, :, 0], cols + off[:, :, :, :, 1]
    pixels = np.moveaxis(x.reshape(n, og, c // og, h * wd), 2, -1).reshape(n * og * h * wd, c // og)
    image = np.arange(n * og).reshape(n, og, 1, 1, 1, 1) * (h * wd)
    taps = [_gs_taps_np(p, size, _BILINEAR_ZEROS) for p, size in ((py, h), (px, wd))]
    sampled = _sum_taps_np(pixels, image, taps, (wd, 1))
    if len(xs) == 5:
        sampled = sampled * xs[4].reshape(n, og, kh, kw, oh, ow)[..., None]
    patches = np.moveaxis(sampled, -1, 2).reshape(n, g, (c // g) * kh * kw, oh * ow)
    y = np.matmul(w.reshape(1, g, o // g, -1), patches).reshape(n, o, oh, ow)
    return y + xs[3].reshape(1, o, 1, 1) if len(xs) > 3 else y


def _deform_conv_decompose(b, inputs, attrs):
    ins, dt = _low_precision_in_f32(b, inputs)
    x, w, offset = ins[:3]
    n, c = x.shape[:2]
    h, wd = _static_dims("deform_conv", x.shape[2:], "spatial dims of x")
    oh, ow = _static_dims("deform_conv", offset.shape[2:], "output dims of offset")
    _static_dims("deform_conv", w.shape[2:], "kernel dims of w")
    o = w.shape[0]
    g, og = attrs["groups"], attrs["offset_groups"]
    stride, pad, dil, (kh, kw) = _deform_conv_geometry(w.shape, attrs)
    cg = _dims.dim_floordiv(c, og)
    off = b.op("reshape", offset, shape=(n, og, kh, kw, 2, oh, ow))
    f = x.dtype.numpy
    rows = b.const(((np.arange(kh) * dil[0])[:, None, None, None] + (np.arange(oh) * stride[0] - pad[0])[:, None])
                   .astype(f))
    cols = b.const(((np.arange(kw) * dil[1])[:, None, None] + (np.arange(ow) * stride[1] - pad[1])).astype(f))
    py, px = (b.op("add", base, b.op("squeeze", b.op("slice", off, starts=(k,), stops=(k + 1,), axes=(4,)),
                                     axes=(4,))) for k, base in ((0, rows), (1, cols)))
    flat = b.op("reshape", b.op("transpose", b.op("reshape", x, shape=(n, og, cg, h, wd)), perm=(0, 1, 3, 4, 2)),
                shape=(_dims.dim_mul(n, og * h * wd), cg))
    image = b.op("add", b.op("mul", b.op("iota", shape=(n, og, 1, 1, 1, 1), axis=0, dtype=DType.i64),
                             b.scalar(og, DType.i64)),
                 b.op("iota", shape=(n, og, 1, 1, 1, 1), axis=1, dtype=DType.i64))
    base = b.op("mul", image, b.scalar(h * wd, DType.i64))
    taps = [_pixel_taps_ir(b, p, size, _BILINEAR_ZEROS) for p, size in ((py, h), (px, wd))]
    sampled = gather_taps(b, flat, base, taps, (wd, 1))
    if len(ins) == 5:
        mask = b.op("reshape", ins[4], shape=(n, og, kh, kw, oh, ow, 1))
        sampled = b.op("mul", sampled, mask)
    patches = b.op("reshape", b.op("transpose", sampled, perm=(0, 1, 6, 2, 3, 4, 5)),
                   shape=(n, g, _dims.dim_mul(_dims.dim_floordiv(c, g), kh * kw), _dims.dim_mul(oh, ow)))
    kernel = b.op("reshape", w, shape=(1, g, _dims.dim_floordiv(o, g), _dims.dim_mul(_dims.dim_floordiv(c, g),
                                                                                      kh * kw)))
    y = b.op("reshape", b.op("matmul", kernel, patches), shape=(n, o, oh, ow))
    if len(ins) > 3:
        y = b.op("add", y, b.op("reshape", ins[3], shape=(1, o, 1, 1)))
    return [b.op("cast", y, dtype=dt) if y.dtype is not dt else y]


register(OpDef("deform_conv", _deform_conv_rule, _wrap(_deform_conv_ref), min_inputs=3, max_inputs=5,
               attrs=dict(_DEFORM_ATTRS), composite=True, decompose=_deform_conv_decompose,
               doc="ONNX DeformConv (2-d): conv of x [N, C, H, W] with w [O, C/groups, kH, kW] where each tap reads "
                   "x bilinearly (zeros outside) at its position plus offset [N, offset_groups*kH*kW*2, oH, oW] "
                   "((dy, dx) per tap), times mask [N, offset_groups*kH*kW, oH, oW] when given, plus bias [O]; "
                   "offset groups split the channels of x"))
