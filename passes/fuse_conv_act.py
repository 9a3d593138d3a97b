"""Fuse conv + bias + activation into ``conv`` with a bias and ``fused_conv``.

Rewrites::

    add(conv(x, w), b)       -> conv(x, w, b')               (b varies only along output channels)
    act(conv(x, w, b))       -> fused_conv(x, w, b) {activation=act}

``b'`` is ``b`` as a ``[O]`` vector (a constant is reshaped, anything else gets a
``reshape``).  ``act`` is relu, gelu (erf or tanh), silu, sigmoid or tanh.  Run after
``fuse_conv_bn`` so a batch norm is folded before the activation closes the conv.
"""

from __future__ import annotations

from accelir.ir import Builder, Value

from .pattern import P, Match, Op, Rule, RulePass, Var
from .recognizers import ACTIVATION_OF, channel_vector, param_shape_ok
from .registry import register_pass

__all__ = ["fuse_conv_act", "CONV_ACT_RULES"]


def _bias(m: Match, b: Builder) -> Value | None:
    conv = m.node("conv")
    y = conv.output
    bias = m["bias"]
    if len(conv.inputs) != 2:
        return None
    if m.root.output.type != y.type or not param_shape_ok(bias, y, (1,)):
        return m.reject(f"conv: the added {bias.type} is not per output channel")
    channels = y.shape[1]
    arr = bias.const_value
    pos = bias.rank - y.rank + 1
    if arr is not None and type(channels) is int:
        vec = b.const(channel_vector(arr, channels), name=bias.producer.attrs["name"])
    elif pos >= 0 and bias.shape[pos] == channels:
        src = bias.producer.inputs[0] if bias.producer is not None and bias.producer.op == "reshape" else None
        vec = src if src is not None and tuple(src.shape) == (channels,) else b.op("reshape", bias, shape=(channels,))
    else:
        # one value for every channel
        one = bias if bias.rank == 0 else b.op("reshape", bias, shape=())
        vec = b.op("broadcast_to", one, shape=(channels,))
    return b.node("conv", [*conv.inputs, vec], conv.attrs).output


def _activation(m: Match, b: Builder) -> Value | None:
    act = ACTIVATION_OF.get((m.root.op, tuple(sorted(m.root.attrs.items()))))
    conv = m.node("conv")
    if act is None or conv.op == "fused_conv" and conv.attrs["activation"] != "none":
        return None
    attrs = {k: v for k, v in conv.attrs.items() if k != "activation"}
    return b.node("fused_conv", conv.inputs, {**attrs, "activation": act}).output


_ACTIVATIONS = tuple(sorted({op for op, _ in ACTIVATION_OF}))

CONV_ACT_RULES = (
    Rule("conv_bias", P.add(Op("conv", any_operands=True, name="conv", single_use=True), Var("bias")), _bias),
    Rule("conv_activation", Op(_ACTIVATIONS, Op(("conv", "fused_conv"), any_operands=True, name="conv",
                                                single_use=True)), _activation),
)

fuse_conv_act = register_pass("fuse_conv_act")(RulePass("fuse_conv_act", CONV_ACT_RULES))
