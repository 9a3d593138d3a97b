"""ONNX rules for the decode-step composites: ``rotary_embedding`` and ``group_query_attention``.

On onnxruntime they become its com.microsoft kernels, elsewhere (or where the kernel's
contract does not fit) their decompositions:

* ``rotary_embedding`` -> ``RotaryEmbedding``.  The kernel gathers cos / sin rows from a cache by
  position id; the IR hands it the rows already gathered, so the cache is those rows flattened to
  [B * S, rotary_dim / 2] and the position ids are 0 .. B * S - 1: whatever computed cos / sin (a
  cache gathered by position, or ``cos(position * inv_freq)``) stays in the graph, and the kernel
  does the rotation.  Where the [B, N, S, H] input's heads were split from a [B, S, N * H] value (a
  projection's output), the kernel rotates that value as it lies (its 3-D form, ``num_heads``
  giving the heads) and a GroupQueryAttention reading the rotated heads takes the 3-D result: no
  Transpose to the heads and back around the kernel (a Qwen2 decode step: eight nodes a layer).
* ``group_query_attention`` -> ``GroupQueryAttention`` for one new token (S == 1), or for S new
  tokens of symbolic count: one step of generation, or the whole prompt over an empty past, so one
  session runs both.  Every row's ``seqlens_k`` is P + S - 1 (the kernel's "total length - 1"), so
  the kernel appends the new keys at P, as the IR's concat does, and left padding is the mask,
  passed as ``attention_bias``.  The kernel's own causal mask agrees with the IR's (each query sees
  the keys up to its own position), and is trivially true for one new token; a left pad's query,
  which sees no key, stays finite.  The kernel takes S > 1 over a non-empty past for a batch of
  one only (onnxruntime's "subsequent prompt"): the generation loop never asks for it.  q, k and v
  go in as the [B, S, heads * H] values their heads were split from, where they have one, and as
  one packed query where those were sliced in order from one projection (GPT-2's c_attn).

The rotary embedding of q and k stays a RotaryEmbedding before the GroupQueryAttention rather
than the latter's ``do_rotary``: with an empty past, onnxruntime 1.32's kernel takes the new
token for a prompt and reads only the first row's position id, which rotates the keys of the
other rows at the wrong position (and it needs rotary_dim / 2 to be a multiple of 8).
"""

from __future__ import annotations

import numpy as np

from accelir import dims as D
from accelir.ir import DType, Value
from accelir.ops.nn import split_heads

from .context import lower_via_decomposition, register_lowering
from .kernels import MS_DOMAIN, supported_dtypes
from .nn import attention_bias, heads_of


def _fits(ctx, dtype: DType, op_type: str) -> bool:
    return ctx.target == "onnxruntime" and dtype in supported_dtypes(op_type, MS_DOMAIN, ctx.opset)


def _cache_rows(ctx, t, t_batch, b, s, half: int):
    """A [b or 1, S, half] table as the kernel's cache rows [b * S, half], one per (row, position)."""
    if t_batch != b:
        t = ctx.op("Expand", t, ctx.dims((b, s, half)))
    return ctx.op("Reshape", t, ctx.ints([-1, half]))


@register_lowering("rotary_embedding")
def _lower_rotary(ctx, node, xs):
    x_t = node.inputs[0].type
    b, n, s, h = x_t.shape
    r = node.attrs["rotary_dim"] or h
    if not _fits(ctx, x_t.dtype, "RotaryEmbedding") or type(n) is not int or type(h) is not int:
        return lower_via_decomposition(ctx, node, xs)
    split = split_heads(node.inputs[0])
    packed = ctx.value_of(split[0]) if split is not None and split[1] == n else None
    cos, sin = (_cache_rows(ctx, t, v.type.shape[0], b, s, r // 2) for t, v in zip(xs[1:], node.inputs[1:]))
    n_rows = D.dim_mul(b, s)
    if type(n_rows) is int:
        positions = ctx.const(np.arange(n_rows, dtype=np.int64).reshape(b, s))
    else:
        zero, one = (ctx.const(np.asarray(i, np.int64)) for i in (0, 1))
        positions = ctx.op("Reshape", ctx.op("Range", zero, ctx.scalar_dim(n_rows), one), ctx.dims((b, s)))
    rotated = ctx.op("RotaryEmbedding", xs[0] if packed is None else packed, positions, cos, sin, domain=MS_DOMAIN,
                     num_heads=n, rotary_embedding_dim=r, interleaved=int(node.attrs["interleaved"]))
    if packed is None:
        return [rotated]
    ctx.packed_heads[id(node.outputs[0])] = (node.outputs[0], rotated)
    # the [B, N, S, H] heads, for a reader that wants them (none where an attention kernel takes the 3-D form)
    return [heads_of(ctx, rotated, n, h)]


def _packed(ctx, v: Value, lowered, heads: int, head_dim: int):
    """The IR's [B, heads, S, H] ``v`` (lowered to ``lowered``) as the kernel's [B, S, heads * H]: the
    value its heads were split from where it has one (or the 3-D form a rule made of it), else a
    transpose and a reshape."""
    known = ctx.packed_heads.get(id(v))
    if known is not None and known[0] is v:  # the value itself, not one that reused a freed value's id
        return known[1]
    split = split_heads(v)
    if split is not None and split[1] == heads:
        packed = ctx.value_of(split[0])
        if packed is not None:
            return packed
    return ctx.op("Reshape", ctx.op("Transpose", lowered, perm=[0, 2, 1, 3]), ctx.ints([0, 0, heads * head_dim]))


def _packed_qkv(ctx, q: Value, k: Value, v: Value, heads: int, kv: int, head_dim: int):
    """The [B, S, (heads + 2 kv) * H] value q, k and v were sliced from, in that order along its last
    axis (one projection, as GPT-2's), lowered; else None.  The kernel takes it as its packed query,
    so the three slices (a Split onnxruntime runs each step) are not made."""
    parts = [split_heads(x) for x in (q, k, v)]
    if any(p is None for p in parts) or [p[1] for p in parts] != [heads, kv, kv]:
        return None
    slices = [p[0].producer for p in parts]
    if any(s is None or s.op != "slice" for s in slices):
        return None
    x = slices[0].inputs[0]
    widths, start = (heads * head_dim, kv * head_dim, kv * head_dim), 0
    for s, width in zip(slices, widths):
        a = s.attrs
        if s.inputs[0] is not x or tuple(a["axes"]) not in ((2,), (-1,)) or tuple(a["steps"]) not in ((), (1,)) \
                or tuple(a["starts"]) != (start,) or tuple(a["stops"]) != (start + width,):
            return None
        start += width
    if x.rank != 3 or x.shape[2] != start:
        return None
    return ctx.value_of(x)


@register_lowering("group_query_attention")
def _lower_gqa(ctx, node, xs):
    q_t, k_t, v_t, pk_t = (v.type for v in node.inputs[:4])
    b, n, s, h = q_t.shape
    kv = k_t.shape[1]
    if not _fits(ctx, q_t.dtype, "GroupQueryAttention") or (type(s) is int and s != 1) or v_t.shape[3] != h \
            or type(h) is not int:
        return lower_via_decomposition(ctx, node, xs)
    past = pk_t.shape[2]
    total = D.dim_add(past, s)
    seqlens = ctx.cast(ctx.op("Expand", ctx.dim(D.dim_sub(total, 1)), ctx.dims((b,))), DType.i32)
    total_len = ctx.cast(ctx.scalar_dim(total), DType.i32)
    bias = attention_bias(ctx, node.inputs[5].type, xs[5], (b, n, s, total)) if len(xs) == 6 else None
    scale = node.attrs["scale"]
    scale = float(scale if scale is not None else 1.0 / np.sqrt(h))
    qkv = _packed_qkv(ctx, *node.inputs[:3], n, kv, h)
    if qkv is not None:
        q, k, v = qkv, None, None
    else:
        q, k, v = (_packed(ctx, node.inputs[i], xs[i], heads, h) for i, heads in enumerate((n, kv, kv)))
    y, present_k, present_v = ctx.op(
        "GroupQueryAttention", q, k, v, xs[3], xs[4], seqlens, total_len, None, None, None, bias,
        out_dtypes=[q_t.dtype] * 3, domain=MS_DOMAIN, num_heads=n, kv_num_heads=kv, scale=scale)
    return [heads_of(ctx, y, n, h), present_k, present_v]
