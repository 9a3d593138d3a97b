"""Grouped-query attention without repeating the key / value heads (the XLA decode step's form).

transformers' grouped-query models (Llama, Qwen2, Mistral with fewer kv heads than query heads)
repeat each kv head for its group of query heads before the attention (``repeat_kv``: unsqueeze,
broadcast_to, reshape).  Over the XLA step's fixed-capacity cache buffers that repeat is a copy of
the whole cache at every query head each step: XLA:CPU materialises the broadcast as the dot's
operand, so the step's time grew with the capacity, a group's worth more than attention's own
reads.  Grouped, a kv head's query heads become rows of one query that the kv head serves::

    attention(q [B, N, S, H], repeat_kv(k [B, KV, T, H]), repeat_kv(v), mask)
      -> reshape(attention(reshape(q, [B, KV, G*S, H]), k, v, mask'), [B, N, S, H])      G = N / KV

The reshape of q is a view (query head ``kv * G + g`` is row ``g * S + s`` of kv head ``kv``, the
order repeat_kv gives the heads), k and v are read where they lie, and ``mask'`` is the mask over
``[.., KV, G*S, T]`` (a mask of one head row repeated G times along the rows, one of N heads split
into KV x G): a mask-sized tensor, not a cache-sized one.
"""

from __future__ import annotations

from accelir.ir import Graph, Node, Value
from accelir.passes.fuse_decode_attention import repeated_kv
from accelir.passes.pattern import provenance, remove_dead

from .dims import dim_mul

__all__ = ["group_attention_heads"]


def group_attention_heads(graph: Graph) -> bool:
    """Rewrite each attention over repeated kv heads (4-d, no causal flag, one repeat factor for
    the keys and the values) into its grouped form, in place; True when one changed.  Others stay."""
    changed = False
    for node in list(graph.nodes):
        if node.graph is graph and node.op == "attention" and _regroup(graph, node):
            changed = True
    return changed


def _regroup(graph: Graph, node: Node) -> bool:
    q, k, v = node.inputs[:3]
    if node.attrs["causal"] or q.rank != 4:
        return False  # a causal flag masks by row index, which grouping changes
    heads = q.shape[1]
    keys, k_repeat = repeated_kv(k, heads)
    values, v_repeat = repeated_kv(v, heads)
    if not k_repeat or not v_repeat or keys.shape[1] != values.shape[1]:
        return False
    batch, _, seq, dim = q.shape
    kv = keys.shape[1]
    groups = heads // kv
    mask = node.inputs[3] if len(node.inputs) == 4 else None
    b = graph.builder(before=node, meta=provenance(node, "group_attention_heads", None))
    if mask is not None:
        mask = _grouped_mask(b, mask, node, kv, groups)
        if mask is None:
            return False
    rows = dim_mul(groups, seq)
    grouped = b.op("reshape", q, shape=(batch, kv, rows, dim))
    y = b.op("attention", grouped, keys, values, *([mask] if mask is not None else []), scale=node.attrs["scale"],
             causal=False)
    node.output.replace_all_uses_with(b.op("reshape", y, shape=tuple(node.output.shape)))
    remove_dead(graph, [node])  # with the repeats, where nothing else reads them
    return True


def _grouped_mask(b, mask: Value, node: Node, kv: int, groups: int) -> Value | None:
    """``mask`` (broadcasting to the scores ``[B, N, S, T]``) over the grouped scores ``[B, KV, G*S, T]``,
    or None for a mask of another form (the attention then stays as it was)."""
    heads, seq = node.inputs[0].shape[1:3]
    if mask.rank > 4:
        return None
    mb, mh, ms, mt = (1,) * (4 - mask.rank) + tuple(mask.shape)
    per_head = mh == heads and heads != 1
    if ms not in (1, seq) or not per_head and mh != 1:
        return None
    m = mask if mask.rank == 4 else b.op("reshape", mask, shape=(mb, mh, ms, mt))
    rows = dim_mul(groups, seq)
    if per_head:  # a mask per query head: split the heads into kv heads and their groups' rows
        if ms != seq:
            m = b.op("broadcast_to", m, shape=(mb, mh, seq, mt))
        return b.op("reshape", m, shape=(mb, kv, rows, mt))
    if ms == 1:  # one row for all: it broadcasts over the grouped rows as it did over the heads
        return m
    m = b.op("broadcast_to", b.op("unsqueeze", m, axes=(2,)), shape=(mb, 1, groups, seq, mt))
    return b.op("reshape", m, shape=(mb, 1, rows, mt))
