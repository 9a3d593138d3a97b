"""com.microsoft rules: the contrib ops that accelir's own ONNX lowering emits."""

from __future__ import annotations

from typing import Sequence

from ... import dims as D
from ...ir import Value
from .context import MS_RULES, NodeContext, conv_attrs, norm_axis

__all__: list[str] = []


@MS_RULES.rule("Gelu")
def _ms_gelu(ctx: NodeContext):
    return [ctx.op("gelu", ctx.input(0))]


@MS_RULES.rule("FastGelu", "BiasGelu")
def _ms_bias_gelu(ctx: NodeContext):
    x = ctx.input(0)
    if ctx.input(1) is not None:
        x = ctx.op("add", x, ctx.input(1))
    return [ctx.op("gelu", x, approximate="tanh" if ctx.node.op_type == "FastGelu" else "none")]


@MS_RULES.rule("SkipLayerNormalization", "SkipSimplifiedLayerNormalization")
def _ms_skip_norm(ctx: NodeContext):
    x, skip = ctx.input(0), ctx.input(1)
    rms = ctx.node.op_type == "SkipSimplifiedLayerNormalization"
    bias_index = 3 if rms else 4
    if ctx.input(bias_index) is not None:
        skip = ctx.op("add", skip, ctx.input(bias_index))
    params = [ctx.input(2)] if rms else [ctx.input(2)] + ([ctx.input(3)] if ctx.input(3) is not None else [])
    y, s = ctx.ops("skip_rms_norm" if rms else "skip_layer_norm", x, skip, *params,
                   epsilon=ctx.attr("epsilon", 1e-5 if not rms else 1e-6))
    if ctx.wants(1) or ctx.wants(2):
        raise ctx.unsupported("the mean / inv_std_var outputs")
    return [y, None, None, s]


@MS_RULES.rule("SimplifiedLayerNormalization")
def _ms_rms_norm(ctx: NodeContext):
    x = ctx.input(0)
    return [ctx.op("rms_norm", x, ctx.input(1), axis=norm_axis(ctx, ctx.attr("axis", -1), x.rank),
                   epsilon=ctx.attr("epsilon", 1e-5))]


@MS_RULES.rule("FusedMatMul")
def _ms_fused_matmul(ctx: NodeContext):
    a, b = ctx.input(0), ctx.input(1)
    for flag, i in (("transA", 0), ("transB", 1)):
        if ctx.attr(flag, 0):
            v = a if i == 0 else b
            perm = tuple(range(v.rank - 2)) + (v.rank - 1, v.rank - 2)
            v = ctx.op("transpose", v, perm=perm)
            a, b = (v, b) if i == 0 else (a, v)
    y = ctx.op("matmul", a, b)
    alpha = ctx.attr("alpha", 1.0)
    return [y if alpha == 1.0 else ctx.op("mul", y, ctx.scalar(alpha, y))]


_MS_ACTIVATIONS = {"": "none", "Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh"}


@MS_RULES.rule("FusedConv")
def _ms_fused_conv(ctx: NodeContext):
    x, w, b = ctx.input(0), ctx.input(1), ctx.input(2)
    if ctx.input(3) is not None:
        raise ctx.unsupported("the Z (sum) input of FusedConv")
    act = _MS_ACTIVATIONS.get(ctx.attr("activation", ""))
    if act is None:
        raise ctx.unsupported(f"FusedConv activation {ctx.attr('activation')!r}")
    attrs = conv_attrs(ctx, x, w.shape[2:])
    ins = [x, w] + ([b] if b is not None else [])
    return [ctx.op("fused_conv", *ins, groups=ctx.attr("group", 1), activation=act, **attrs)]


def _heads(ctx: NodeContext, x: Value, n: int) -> Value:
    """[B, S, N * H] -> [B, N, S, H]."""
    b, seq, d = x.shape
    if type(d) is not int or d % n:
        raise ctx.unsupported(f"hidden size {d} that does not split into {n} heads")
    return ctx.op("transpose", ctx.op("reshape", x, shape=(b, seq, n, d // n)), perm=(0, 2, 1, 3))


def _ms_attention_core(ctx: NodeContext, q: Value, k: Value, v: Value, bias_index: int,
                       unsupported: Sequence[tuple[int, str]]) -> list[Value]:
    """MultiHeadAttention / Attention over [B, S, N * H] q, k, v with an optional additive
    attention_bias [B or 1, N or 1, S, T], as the IR's attention on [B, N, S, H] heads."""
    for i, what in unsupported:
        if ctx.input(i) is not None:
            raise ctx.unsupported(f"the {what} input")
    if ctx.attr("do_rotary", 0) or ctx.attr("past_present_share_buffer", 0):
        raise ctx.unsupported("rotary embedding / shared past buffers")
    n = ctx.attr("num_heads")
    qh, kh, vh = (_heads(ctx, x, n) for x in (q, k, v))
    scale = ctx.attr("scale", 0.0)
    causal = bool(ctx.attr("unidirectional", 0))
    if causal and qh.shape[2] != kh.shape[2]:
        # ORT aligns its causal mask bottom-right, the IR top-left: they agree on square scores only
        raise ctx.unsupported("unidirectional attention over different query and key lengths")
    ins = [qh, kh, vh] + ([ctx.input(bias_index)] if ctx.input(bias_index) is not None else [])
    y = ctx.op("attention", *ins, scale=float(scale) if scale else None, causal=causal)
    y = ctx.op("transpose", y, perm=(0, 2, 1, 3))
    b, seq, heads, h = y.shape
    return [ctx.op("reshape", y, shape=(b, seq, D.dim_mul(heads, h)))]


@MS_RULES.rule("MultiHeadAttention")
def _ms_multi_head_attention(ctx: NodeContext):
    q, k, v = ctx.input(0), ctx.input(1), ctx.input(2)
    if k is None or v is None or q.rank != 3 or k.rank != 3 or v.rank != 3:
        raise ctx.unsupported("packed or BNSH-layout query / key / value (accelir reads [B, S, N * H] q, k, v)")
    if ctx.input(3) is not None:
        d = q.shape[2]
        parts = [ctx.op("slice", ctx.input(3), starts=(i * d,), stops=((i + 1) * d,), steps=(1,), axes=(0,))
                 for i in range(3)]
        q, k, v = (ctx.op("add", x, p) for x, p in zip((q, k, v), parts))
    if ctx.wants(1) or ctx.wants(2):
        raise ctx.unsupported("the present_key / present_value outputs")
    return _ms_attention_core(ctx, q, k, v, 5, ((4, "key_padding_mask"), (6, "past_key"), (7, "past_value")))


@MS_RULES.rule("Attention")
def _ms_attention(ctx: NodeContext):
    x, w, bias = ctx.input(0), ctx.input(1), ctx.input(2)
    sizes = ctx.attr("qkv_hidden_sizes")
    if sizes and len(set(sizes)) != 1:
        raise ctx.unsupported("unequal qkv_hidden_sizes")
    if ctx.wants(1):
        raise ctx.unsupported("the present output")
    qkv = ctx.op("matmul", x, w)
    if bias is not None:
        qkv = ctx.op("add", qkv, bias)
    d = qkv.shape[2] // 3
    q, k, v = (ctx.op("slice", qkv, starts=(i * d,), stops=((i + 1) * d,), steps=(1,), axes=(2,)) for i in range(3))
    return _ms_attention_core(ctx, q, k, v, 5, ((3, "mask_index"), (4, "past"), (6, "past_sequence_length")))
