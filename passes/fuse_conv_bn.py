"""Fold inference batch norm (and per-channel affine constants) into conv weights.

Rewrites, when the conv weight, its bias and the folded parameters are constants::

    batch_norm(conv(x, W, b), scale, bias, mean, var)  -> conv(x, W * k, (b - mean) * k + bias)
                                                          with k = scale / sqrt(var + eps) per channel
    mul(conv(x, W, b), c)                              -> conv(x, W * c, b * c)
    add(conv(x, W, b), c) / sub(conv(x, W, b), c)      -> conv(x, W, b +/- c)

``c`` varies only along the output channels (``[O, 1, 1]``, ``[1, O, 1, 1]``, a
scalar), which is what a jax batch norm becomes once its statistics are folded.  The
new weights are computed in float64 and rounded once to the weight's dtype.  A
``fused_conv`` folds the same way while its activation is "none".
"""

from __future__ import annotations

import re

import numpy as np

from accelir.ir import Builder, Node, Value

from .pattern import P, Const, Match, Op, Rule, RulePass
from .recognizers import channel_vector, param_shape_ok
from .registry import register_pass

__all__ = ["fuse_conv_bn", "CONV_BN_RULES"]


def _weights(m: Match, conv: Node) -> tuple[np.ndarray, np.ndarray] | None:
    """The conv's weight (as stored) and bias (float64, zeros when absent), or None."""
    if conv.op == "fused_conv" and conv.attrs["activation"] != "none":
        return None
    w = conv.inputs[1].const_value
    if w is None:
        return m.reject(f"{conv.op}: the weight is not a constant")
    if len(conv.inputs) == 3:
        bias = conv.inputs[2].const_value
        if bias is None:
            return m.reject(f"{conv.op}: the bias is not a constant")
        bias = bias.astype(np.float64)
    else:
        bias = np.zeros(w.shape[0], np.float64)
    return w, bias


CHUNK_BYTES = 1 << 18  # float64 products per step: a cache-sized scratch, never a float64 copy of the weight


def _scaled(w: np.ndarray, k: np.ndarray, dt: np.dtype) -> np.ndarray:
    """``w * k`` per output channel (``k`` float64, one per row of ``w``), each product taken in
    float64 and rounded once to ``dt``, a few rows at a time."""
    out = np.empty(w.shape, dt)
    step = max(1, CHUNK_BYTES // (8 * max(1, int(np.prod(w.shape[1:])))))
    k = k.reshape((-1,) + (1,) * (w.ndim - 1))
    scratch = np.empty((min(step, w.shape[0]),) + w.shape[1:], np.float64)
    for i in range(0, w.shape[0], step):
        j = min(i + step, w.shape[0])
        out[i:j] = np.multiply(w[i:j], k[i:j], out=scratch[:j - i])
    return out


def _rebuild(b: Builder, conv: Node, w: np.ndarray, bias: np.ndarray, k: np.ndarray | None = None) -> Value:
    """The conv with weight ``w`` (scaled by ``k`` per output channel where given) and ``bias``."""
    dt = conv.inputs[1].dtype.numpy
    name = re.sub(r"_folded(_\d+)?$", "", conv.inputs[1].producer.attrs["name"])
    # an unscaled weight (a bias-only fold) stays the constant it was
    new_w = conv.inputs[1] if k is None else b.const(_scaled(w, k, dt), name=f"{name}_folded")
    new_b = b.const(bias.astype(dt), name=f"{name}_folded_bias")
    return b.node(conv.op, [conv.inputs[0], new_w, new_b], conv.attrs).output


def _batch_norm(m: Match, b: Builder) -> Value | None:
    conv = m.node("conv")
    got = _weights(m, conv)
    if got is None:
        return None
    w, bias = got
    scale, shift, mean, var = (m.const(k).astype(np.float64) for k in ("scale", "shift", "mean", "var"))
    k = scale / np.sqrt(var + m.root.attrs["epsilon"])
    return _rebuild(b, conv, w, (bias - mean) * k + shift, k)


def _affine(m: Match, b: Builder) -> Value | None:
    conv = m.node("conv")
    y = conv.output
    c = m["c"]
    if m.root.output.type != y.type or not param_shape_ok(c, y, (1,)):
        return m.reject(f"{conv.op}: the {m.root.op} operand {c.type} is not per output channel")
    got = _weights(m, conv)
    if got is None:
        return None
    w, bias = got
    vec = channel_vector(m.const("c").astype(np.float64), w.shape[0])
    if m.root.op == "mul":
        return _rebuild(b, conv, w, bias * vec, vec)
    if m.root.op == "sub" and m.root.inputs[0] is not y:
        return None  # c - conv negates the conv: not a bias shift
    return _rebuild(b, conv, w, bias + vec if m.root.op == "add" else bias - vec)


_CONV = Op(("conv", "fused_conv"), any_operands=True, name="conv", single_use=True)

CONV_BN_RULES = (
    Rule("conv_batch_norm", P.batch_norm(_CONV, Const(name="scale"), Const(name="shift"), Const(name="mean"),
                                         Const(name="var")), _batch_norm),
    Rule("conv_affine", Op(("mul", "add", "sub"), _CONV, Const(name="c"), commutative=True), _affine),
)

fuse_conv_bn = register_pass("fuse_conv_bn")(RulePass("fuse_conv_bn", CONV_BN_RULES))
