"""group_attention_heads: attention over repeated kv heads (transformers' repeat_kv) rewritten to read the kv
heads as they are, a kv head's query heads as rows of one query; checked against numpy's attention over
``np.repeat``-ed heads for each mask form a model gives (none, one row for all heads, per head, lower rank),
on the interpreter and on XLA."""

from __future__ import annotations

import numpy as np
import pytest

from accelir.grouped_attention import group_attention_heads
from accelir.interpreter import interpret
from accelir.lowering.jax import to_jax
from accelir.testing import assert_close
from accelir.text import parse


def _graph(mask_type: str | None, causal: bool = False) -> str:
    mask_in = f", %m: {mask_type}" if mask_type else ""
    mask_arg = ", %m" if mask_type else ""
    repeat = "".join(f"""
  %{t}u = unsqueeze(%{t}) {{axes=[2]}} : f32[2,2,1,5,8]
  %{t}b = broadcast_to(%{t}u) {{shape=[2, 2, 3, 5, 8]}} : f32[2,2,3,5,8]
  %{t}r = reshape(%{t}b) {{shape=[2, 6, 5, 8]}} : f32[2,6,5,8]""" for t in ("k", "v"))
    return f"""
graph main(%q: f32[2,6,4,8], %k: f32[2,2,5,8], %v: f32[2,2,5,8]{mask_in}) -> (f32[2,6,4,8]) {{{repeat}
  %y = attention(%q, %kr, %vr{mask_arg}) {{scale=none, causal={str(causal).lower()}}} : f32[2,6,4,8]
  return %y
}}
"""


def _oracle(q, k, v, m=None):
    """Attention over the kv heads repeated to every query head (each kv head 3 times in a row)."""
    k, v = np.repeat(k, 3, axis=1), np.repeat(v, 3, axis=1)
    s = q.astype(np.float64) @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if m is not None:
        s = np.where(m, s, -np.inf) if m.dtype == np.bool_ else s + m
    p = np.exp(s - s.max(-1, keepdims=True))
    return ((p / p.sum(-1, keepdims=True)) @ v).astype(np.float32)


def _mask(shape: tuple[int, ...], boolean: bool, rng: np.random.Generator) -> np.ndarray:
    if boolean:
        m = rng.random(shape) < 0.6
        m[..., 0] = True  # every row sees a key
        return m
    return rng.normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("shape,boolean", [
    (None, False),
    ((2, 1, 4, 5), True),    # transformers' padding / causal mask: one row set for all heads
    ((2, 6, 4, 5), False),   # a mask per query head
    ((2, 1, 1, 5), True),    # one row for all rows and heads
    ((2, 6, 1, 5), True),    # per head, one row for all rows
    ((4, 5), False),         # a lower-rank additive mask
])
def test_grouped_attention_reads_the_kv_heads_unrepeated_and_gives_the_same_attention(shape, boolean):
    rng = np.random.default_rng(0)
    dtype = "bool" if boolean else "f32"
    g = parse(_graph(f"{dtype}[{','.join(map(str, shape))}]" if shape else None))
    xs = [rng.normal(size=s).astype(np.float32) for s in ((2, 6, 4, 8), (2, 2, 5, 8), (2, 2, 5, 8))]
    if shape:
        xs.append(_mask(shape, boolean, rng))
    assert group_attention_heads(g)
    ops = g.op_histogram()
    # no cache-sized repeat is left: the attention reads %k and %v themselves
    attention = next(n for n in g.nodes if n.op == "attention")
    assert [x.name for x in attention.inputs[1:3]] == ["k", "v"] and ops.get("attention") == 1
    assert not any(n.op == "broadcast_to" and n.output.shape[-1] == 8 for n in g.nodes)
    want = _oracle(*xs)
    assert_close(interpret(g, *xs), [want])
    fn = to_jax(g)
    assert_close([np.asarray(fn.apply(fn.params, *xs)[0])], [want])  # XLA


def test_a_causal_attention_or_unrepeated_heads_stay_as_they_are():
    g = parse(_graph(None, causal=True))  # the causal flag masks by row index, which grouping would move
    before = str(g)
    assert not group_attention_heads(g) and str(g) == before
    plain = parse("""
graph main(%q: f32[2,2,4,8], %k: f32[2,2,5,8], %v: f32[2,2,5,8]) -> (f32[2,2,4,8]) {
  %y = attention(%q, %k, %v) {scale=none, causal=false} : f32[2,2,4,8]
  return %y
}
""")
    assert not group_attention_heads(plain)
