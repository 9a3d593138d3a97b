"""Fuse attention over a key / value cache into the ``group_query_attention`` composite.

Rewrites, for q [B, N, S, H] and the cache's past keys / values [B, KV, P, H]::

    keys   = concat(past_k, k, axis=2)          (a graph output: the present keys)
    values = concat(past_v, v, axis=2)
    attention(q, repeat_kv(keys), repeat_kv(values), mask)
        -> y, keys', values' = group_query_attention(q, k, v, past_k, past_v, mask)

where ``repeat_kv`` is the grouped-head repeat ``reshape(broadcast_to(unsqueeze(t, 2), [B, KV,
N / KV, T, H]), [B, N, T, H])`` (transformers' repeat_kv; jax's ``jnp.repeat`` inserts the unit
dim with a reshape), absent where KV == N or where one kv head broadcasts, and the concats'
other readers (the present keys and values the step returns) read the composite's outputs
instead.  The mask (causal and padding, built from the attention mask) stays an input: the
composite applies no mask of its own.  On onnxruntime the composite is one
GroupQueryAttention kernel that appends the new keys to the cache and attends over it;
elsewhere it decomposes back into the concat, the repeat and the attention.

A concat read by anything else than the repeat and graph outputs is left alone (the
present value would be needed before the composite that makes it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from accelir.errors import VerificationError
from accelir.ir import Graph, Node, Value
from accelir.ops import TypeRuleError, infer_types, normalize_attrs

from .pattern import NearMiss, provenance, remove_dead, rewrite_budget
from .registry import register_pass

__all__ = ["fuse_decode_attention", "FuseDecodeAttention", "repeated_kv"]


class _Reject(Exception):
    """A near match: the message says which check failed."""


def repeated_kv(v: Value, heads: int) -> tuple[Value, list[Node]]:
    """``(t, nodes)`` where ``v`` is ``repeat_kv(t)`` up to ``heads`` heads (``nodes``: the repeat),
    or ``(v, [])`` when ``v`` is not a repeat."""
    r = v.producer
    if r is None or r.op != "reshape" or v.rank != 4:
        return v, []
    bc = r.inputs[0].producer
    if bc is None or bc.op != "broadcast_to" or bc.output.rank != 5:
        return v, []
    un = bc.inputs[0].producer  # the unit dim the heads are broadcast along: unsqueeze (torch), reshape (jax)
    if un is None or un.op not in ("unsqueeze", "reshape"):
        return v, []
    t = un.inputs[0]
    bsz, kv, rep, length, d = bc.output.shape
    if tuple(t.shape) != (bsz, kv, length, d) or tuple(un.output.shape) != (bsz, kv, 1, length, d) \
            or type(kv) is not int or type(rep) is not int or kv * rep != heads \
            or tuple(v.shape) != (bsz, heads, length, d):
        return v, []
    return t, [r, bc, un]


def _cache(v: Value, attention: Node) -> tuple[Value, Value, Value]:
    """``(past, new, present)`` of a key or value operand ``v`` of ``attention``."""
    t, repeat = repeated_kv(v, attention.inputs[0].shape[1])
    node = t.producer
    if node is None or node.op != "concat" or len(node.inputs) != 2 or node.attrs["axis"] % 4 != 2:
        raise _Reject("the keys / values are not concat(past, new) on the length axis")
    for n in repeat:
        if n.output.num_uses != 1 or n.output.is_graph_output:
            raise _Reject(f"the grouped-head repeat's {n.op} has other readers")
    reader = repeat[-1] if repeat else attention
    others = [u for u in t.users() if u is not reader]
    if others:
        raise _Reject(f"the present keys / values are also read by {others[0].op}")
    past, new = node.inputs
    return past, new, t


@dataclass(frozen=True)
class FuseDecodeAttention:
    """The pass: ``FuseDecodeAttention()(graph) -> changed``; ``verbose`` records near misses."""

    name: str = "fuse_decode_attention"
    verbose: bool = False
    near_misses: list[NearMiss] = field(default_factory=list, compare=False, hash=False, repr=False)

    @property
    def __name__(self) -> str:
        return self.name

    def __call__(self, graph: Graph) -> bool:
        self.near_misses.clear()
        changed = False
        for node in list(graph.nodes):
            if node.graph is not graph or node.op != "attention":
                continue
            try:
                parts = self._match(node)
            except _Reject as e:
                if self.verbose:
                    self.near_misses.append(NearMiss(self.name, f"decode attention: {e}", node))
                continue
            if not rewrite_budget.allow(lambda n=node: f"{self.name}: {n.describe()}"):
                return changed
            self._rewrite(graph, node, *parts)
            changed = True
        return changed

    def _match(self, node: Node):
        q, k, v = node.inputs[:3]
        if node.attrs["causal"]:
            raise _Reject("the attention applies its own causal mask")
        if q.rank != 4:
            raise _Reject("q is not [B, N, S, H]")
        pk, nk, keys = _cache(k, node)
        pv, nv, values = _cache(v, node)
        if keys is values:
            raise _Reject("the keys and the values are one value")
        attrs = normalize_attrs("group_query_attention", {"scale": node.attrs["scale"]})
        try:
            infer_types("group_query_attention", [x.type for x in (q, nk, nv, pk, pv, *node.inputs[3:])], attrs)
        except (TypeRuleError, VerificationError) as e:  # infer_types reports a type rule's refusal as the latter
            raise _Reject(f"the operands do not fit the composite ({e})") from None
        return pk, nk, keys, pv, nv, values

    def _rewrite(self, graph: Graph, node: Node, pk: Value, nk: Value, keys: Value, pv: Value, nv: Value,
                 values: Value) -> None:
        b = graph.builder(before=node, meta=provenance(node, self.name, "group_query_attention"))
        y, present_k, present_v = b.ops("group_query_attention", node.inputs[0], nk, nv, pk, pv, *node.inputs[3:],
                                        scale=node.attrs["scale"])
        node.output.replace_all_uses_with(y)
        remove_dead(graph, [node])  # with the grouped-head repeats: the concats now feed only the outputs
        keys.replace_all_uses_with(present_k)
        values.replace_all_uses_with(present_v)
        remove_dead(graph, [keys.producer, values.producer])


fuse_decode_attention = register_pass("fuse_decode_attention")(FuseDecodeAttention())
