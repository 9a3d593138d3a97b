"""Contractions and windowed ops: matmul, dot_general, conv (N-d), max / avg pooling.

Layouts are channels-first, as in torch and ONNX: x is ``[N, C, *spatial]`` and a
conv weight is ``[O, C / groups, *kernel]``.  Spatial sizes may be symbolic.
"""

from __future__ import annotations

import string

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import dims as D
from ..types import DType, TensorType
from .registry import AttrSpec, OpDef, TypeRuleError, broadcast_shapes, np_dtype_compute, register, same_dtype

__all__ = ["conv_output_dim", "pool_output_dim", "conv_reference", "conv_type_rule"]


def _dims_match(a, b) -> bool:
    return a == b or type(a) is not int or type(b) is not int


# ----- matmul ------------------------------------------------------------------------

def _matmul_rule(types, attrs):
    a, b = types
    dt = same_dtype("matmul", types)
    if dt is DType.bool:
        raise TypeRuleError("matmul: bool operands are not supported")
    if a.rank == 0 or b.rank == 0:
        raise TypeRuleError("matmul: operands must have rank >= 1")
    ash = a.shape if a.rank > 1 else (1,) + a.shape
    bsh = b.shape if b.rank > 1 else b.shape + (1,)
    if not _dims_match(ash[-1], bsh[-2]):
        raise TypeRuleError(f"matmul: contracting dims differ ({ash[-1]} vs {bsh[-2]})")
    batch = broadcast_shapes(ash[:-2], bsh[:-2], op="matmul")
    out = batch + ((ash[-2],) if a.rank > 1 else ()) + ((bsh[-1],) if b.rank > 1 else ())
    return [TensorType(dt, out)]


def _matmul_ref(inputs, attrs, regions):
    a, b = inputs
    cdt = np_dtype_compute(a.dtype)
    return [np.asarray(np.matmul(a.astype(cdt, copy=False), b.astype(cdt, copy=False))).astype(a.dtype,
                                                                                                  copy=False)]


register(OpDef("matmul", _matmul_rule, _matmul_ref, min_inputs=2, max_inputs=2,
               doc="numpy matmul: batched, broadcasting batch dims, 1-D operands promoted and squeezed"))


# ----- dot_general -------------------------------------------------------------------

_DOT_ATTRS = {"lhs_contracting": AttrSpec("ints"), "rhs_contracting": AttrSpec("ints"),
              "lhs_batch": AttrSpec("ints", ()), "rhs_batch": AttrSpec("ints", ())}


def _dot_general_rule(types, attrs):
    a, b = types
    dt = same_dtype("dot_general", types)
    if dt is DType.bool:
        raise TypeRuleError("dot_general: bool operands are not supported")
    lc, rc, lb, rb = (attrs[k] for k in ("lhs_contracting", "rhs_contracting", "lhs_batch", "rhs_batch"))
    if len(lc) != len(rc) or len(lb) != len(rb):
        raise TypeRuleError("dot_general: contracting / batch dim lists differ in length")
    for name, axes, t in (("lhs", lc + lb, a), ("rhs", rc + rb, b)):
        if len(set(axes)) != len(axes) or any(not 0 <= x < t.rank for x in axes):
            raise TypeRuleError(f"dot_general: bad {name} dims {axes} for rank {t.rank}")
    for x, y in zip(lc + lb, rc + rb):
        if not _dims_match(a.shape[x], b.shape[y]):
            raise TypeRuleError(f"dot_general: dims differ: lhs[{x}]={a.shape[x]} vs rhs[{y}]={b.shape[y]}")
    batch = tuple(a.shape[x] for x in lb)
    lfree = tuple(d for i, d in enumerate(a.shape) if i not in lc and i not in lb)
    rfree = tuple(d for i, d in enumerate(b.shape) if i not in rc and i not in rb)
    return [TensorType(dt, batch + lfree + rfree)]


def _dot_general_ref(inputs, attrs, regions):
    a, b = inputs
    lc, rc, lb, rb = (attrs[k] for k in ("lhs_contracting", "rhs_contracting", "lhs_batch", "rhs_batch"))
    letters = iter(string.ascii_letters)
    la = [None] * a.ndim
    ra = [None] * b.ndim
    for x, y in zip(lb, rb):
        la[x] = ra[y] = next(letters)
    for x, y in zip(lc, rc):
        la[x] = ra[y] = next(letters)
    for i in range(a.ndim):
        if la[i] is None:
            la[i] = next(letters)
    for i in range(b.ndim):
        if ra[i] is None:
            ra[i] = next(letters)
    out = [la[x] for x in lb] + [la[i] for i in range(a.ndim) if i not in lc and i not in lb] + \
          [ra[i] for i in range(b.ndim) if i not in rc and i not in rb]
    cdt = np_dtype_compute(a.dtype)
    spec = f"{''.join(la)},{''.join(ra)}->{''.join(out)}"
    res = np.einsum(spec, a.astype(cdt, copy=False), b.astype(cdt, copy=False), optimize=True)
    return [np.asarray(res).astype(a.dtype, copy=False)]


register(OpDef("dot_general", _dot_general_rule, _dot_general_ref, min_inputs=2, max_inputs=2,
               attrs=_DOT_ATTRS, doc="lax.dot_general: output is batch dims, lhs free dims, rhs free dims"))


# ----- conv --------------------------------------------------------------------------

def conv_output_dim(size, k, stride, lo, hi, dilation, lhs_dilation=1):
    """floor((size' + lo + hi - dilation * (k - 1) - 1) / stride) + 1, size' the lhs-dilated size."""
    eff = size if lhs_dilation == 1 else D.dim_add(D.dim_mul(D.dim_sub(size, 1), lhs_dilation), 1)
    span = dilation * (k - 1) + 1
    num = D.dim_sub(D.dim_add(eff, lo + hi), span)
    return D.dim_add(D.dim_floordiv(num, stride), 1)


def _spatial_attrs(op, attrs, n):
    def get(name, default):
        v = attrs.get(name, ())
        if v == ():
            return default
        if len(v) != n:
            raise TypeRuleError(f"{op}: attribute {name!r} needs {n} entries, got {len(v)}")
        return v
    return get


CONV_ATTRS = {"stride": AttrSpec("ints", ()), "padding": AttrSpec("pairs", ()),
              "dilation": AttrSpec("ints", ()), "groups": AttrSpec("int", 1),
              "lhs_dilation": AttrSpec("ints", ())}


def conv_params(op, attrs, n):
    get = _spatial_attrs(op, attrs, n)
    return (get("stride", (1,) * n), get("padding", ((0, 0),) * n), get("dilation", (1,) * n),
            get("lhs_dilation", (1,) * n))


def conv_type_rule(types, attrs, op="conv"):
    """The type rule of conv, shared by the ops that convolve (fused_conv, deform_conv) under their own name."""
    x, w = types[0], types[1]
    dt = same_dtype(op, types)
    if not dt.is_float:
        raise TypeRuleError(f"{op}: dtype {dt} is not supported (needs float)")
    if x.rank < 3 or w.rank != x.rank:
        raise TypeRuleError(f"{op}: x must be [N, C, *spatial] and w [O, C/groups, *kernel] of the same rank")
    n = x.rank - 2
    stride, padding, dilation, lhs_dil = conv_params(op, attrs, n)
    g = attrs["groups"]
    if g < 1:
        raise TypeRuleError(f"{op}: groups must be >= 1")
    cin = x.shape[1]
    if type(cin) is int and type(w.shape[1]) is int and cin != w.shape[1] * g:
        raise TypeRuleError(f"{op}: input has {cin} channels but weight expects {w.shape[1]} x {g} groups")
    if type(w.shape[0]) is int and w.shape[0] % g:
        raise TypeRuleError(f"{op}: {w.shape[0]} output channels do not split into {g} groups")
    if len(types) == 3 and (types[2].rank != 1 or not _dims_match(types[2].shape[0], w.shape[0])):
        raise TypeRuleError(f"{op}: bias must be [{w.shape[0]}], got {types[2]}")
    for k in w.shape[2:]:
        if type(k) is not int:
            raise TypeRuleError(f"{op}: kernel dims must be static")
    spatial = tuple(conv_output_dim(x.shape[2 + i], w.shape[2 + i], stride[i], padding[i][0], padding[i][1],
                                    dilation[i], lhs_dil[i]) for i in range(n))
    for s in spatial:
        if type(s) is int and s <= 0:
            raise TypeRuleError(f"{op}: output spatial size {s} is not positive")
    return [TensorType(dt, (x.shape[0], w.shape[0]) + spatial)]


def _windows(x, kernel, stride, padding, dilation, pad_value, extra_hi=None):
    """Sliding windows over the spatial dims of x ([N, C, *S]) -> [N, C, *O, *K]."""
    n = len(kernel)
    extra_hi = extra_hi or (0,) * n
    pads = [(0, 0), (0, 0)] + [(lo, hi + e) for (lo, hi), e in zip(padding, extra_hi)]
    neg = [p for p in pads if p[0] < 0 or p[1] < 0]
    if neg:
        raise ValueError("negative padding is not supported")
    xp = np.pad(x, pads, constant_values=pad_value) if any(p != (0, 0) for p in pads) else x
    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    win = sliding_window_view(xp, spans, axis=tuple(range(2, 2 + n)))
    idx = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in stride) + \
        tuple(slice(None, None, d) for d in dilation)
    return win[idx]


def conv_reference(x, w, b, stride, padding, dilation, groups, lhs_dilation):
    n = x.ndim - 2
    out_dtype = x.dtype
    cdt = np_dtype_compute(x.dtype)
    x = x.astype(cdt, copy=False)
    w = w.astype(cdt, copy=False)
    if any(d != 1 for d in lhs_dilation):
        shape = x.shape[:2] + tuple((s - 1) * d + 1 for s, d in zip(x.shape[2:], lhs_dilation))
        xd = np.zeros(shape, dtype=cdt)
        xd[(slice(None), slice(None)) + tuple(slice(None, None, d) for d in lhs_dilation)] = x
        x = xd
    win = _windows(x, w.shape[2:], stride, padding, dilation, 0)  # [N, C, *O, *K]
    N, C = x.shape[:2]
    O = w.shape[0]
    g = groups
    win = win.reshape((N, g, C // g) + win.shape[2:])
    wg = w.reshape((g, O // g, C // g) + w.shape[2:])
    letters = "pqrstuvw"[:n]
    kletters = "hijklmyz"[:n]
    spec = f"ngc{letters}{kletters},goc{kletters}->ngo{letters}"
    out = np.einsum(spec, win, wg, optimize=True)
    out = out.reshape((N, O) + out.shape[3:])
    if b is not None:
        out = out + b.astype(cdt, copy=False).reshape((1, O) + (1,) * n)
    return np.ascontiguousarray(out).astype(out_dtype, copy=False)


def _conv_ref(inputs, attrs, regions):
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) == 3 else None
    stride, padding, dilation, lhs_dil = conv_params("conv", attrs, x.ndim - 2)
    return [conv_reference(x, w, b, stride, padding, dilation, attrs["groups"], lhs_dil)]


register(OpDef("conv", conv_type_rule, _conv_ref, min_inputs=2, max_inputs=3, attrs=dict(CONV_ATTRS),
               doc="N-d convolution (cross-correlation) of x [N, C, *S] with w [O, C/groups, *K], optional "
                   "bias [O]; padding is ((lo, hi), ...) per spatial dim; lhs_dilation dilates the input"))


# ----- pooling -----------------------------------------------------------------------

def pool_output_dim(size, k, stride, lo, hi, dilation, ceil_mode):
    span = dilation * (k - 1) + 1
    num = D.dim_sub(D.dim_add(size, lo + hi), span)
    if not ceil_mode:
        return D.dim_add(D.dim_floordiv(num, stride), 1)
    if type(size) is not int:
        raise TypeRuleError("pool: ceil_mode needs static spatial dims")
    out = -(-num // stride) + 1
    # the last window must start inside the input or the left padding (torch / ONNX rule)
    if (out - 1) * stride >= size + lo:
        out -= 1
    return out


POOL_ATTRS = {"kernel": AttrSpec("ints"), "stride": AttrSpec("ints", ()), "padding": AttrSpec("pairs", ()),
              "dilation": AttrSpec("ints", ()), "ceil_mode": AttrSpec("bool", False)}


def _pool_params(op, attrs, n):
    if len(attrs["kernel"]) != n:
        raise TypeRuleError(f"{op}: kernel needs {n} entries (one per spatial dim), got {len(attrs['kernel'])}")
    get = _spatial_attrs(op, attrs, n)
    return attrs["kernel"], get("stride", (1,) * n), get("padding", ((0, 0),) * n), get("dilation", (1,) * n)


def _pool_rule(op):
    def rule(types, attrs):
        (x,) = types
        if x.rank < 3:
            raise TypeRuleError(f"{op}: x must be [N, C, *spatial]")
        if op == "avg_pool" and not x.dtype.is_float:
            raise TypeRuleError(f"{op}: dtype {x.dtype} is not supported (needs float)")
        if x.dtype is DType.bool:
            raise TypeRuleError(f"{op}: bool is not supported")
        n = x.rank - 2
        kernel, stride, padding, dilation = _pool_params(op, attrs, n)
        spatial = tuple(pool_output_dim(x.shape[2 + i], kernel[i], stride[i], padding[i][0], padding[i][1],
                                        dilation[i], attrs["ceil_mode"]) for i in range(n))
        return [TensorType(x.dtype, x.shape[:2] + spatial)]
    return rule


def _ceil_extra(x, kernel, stride, padding, dilation, out_sizes):
    extra = []
    for i, k in enumerate(kernel):
        need = (out_sizes[i] - 1) * stride[i] + dilation[i] * (k - 1) + 1
        have = x.shape[2 + i] + padding[i][0] + padding[i][1]
        extra.append(max(0, need - have))
    return tuple(extra)


def _pool_ref(op):
    def ref(inputs, attrs, regions):
        (x,) = inputs
        n = x.ndim - 2
        kernel, stride, padding, dilation = _pool_params(op, attrs, n)
        out_sizes = [pool_output_dim(x.shape[2 + i], kernel[i], stride[i], padding[i][0], padding[i][1],
                                     dilation[i], attrs["ceil_mode"]) for i in range(n)]
        extra = _ceil_extra(x, kernel, stride, padding, dilation, out_sizes)
        cdt = np_dtype_compute(x.dtype)
        xc = x.astype(cdt, copy=False)
        sl = (slice(None), slice(None)) + tuple(slice(0, o) for o in out_sizes)
        if op == "max_pool":
            low = -np.inf if xc.dtype.kind == "f" else np.iinfo(xc.dtype).min
            win = _windows(xc, kernel, stride, padding, dilation, low, extra)[sl]
            axes = tuple(range(2 + n, 2 + 2 * n))
            out = win.max(axis=axes)
            if xc.dtype.kind == "f":
                nan = np.isnan(win).any(axis=axes)
                out = np.where(nan, np.nan, out)
            return [out.astype(x.dtype)]
        win = _windows(xc, kernel, stride, padding, dilation, 0, extra)[sl]
        axes = tuple(range(2 + n, 2 + 2 * n))
        total = win.sum(axis=axes)
        ones = np.ones((1, 1) + x.shape[2:], dtype=cdt)
        fill = 1.0 if attrs["count_include_pad"] else 0.0
        ones = np.pad(ones, [(0, 0), (0, 0)] + list(padding), constant_values=fill)
        ones = np.pad(ones, [(0, 0), (0, 0)] + [(0, e) for e in extra], constant_values=0)
        count = _windows(ones, kernel, stride, ((0, 0),) * n, dilation, 0)[sl].sum(axis=axes)
        with np.errstate(all="ignore"):
            return [(total / count).astype(x.dtype)]
    return ref


register(OpDef("max_pool", _pool_rule("max_pool"), _pool_ref("max_pool"), attrs=dict(POOL_ATTRS),
               doc="max over windows of the spatial dims; padding never wins; NaN propagates"))
register(OpDef("avg_pool", _pool_rule("avg_pool"), _pool_ref("avg_pool"),
               attrs={**POOL_ATTRS, "count_include_pad": AttrSpec("bool", True)},
               doc="mean over windows of the spatial dims; count_include_pad counts the zero padding"))
