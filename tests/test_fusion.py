"""Fusion passes: each rewrite as IR text in, IR text out (exact), plus the interpreter
on random inputs before and after; near matches stay unchanged and say why."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest

import accelir
from accelir import DType, TensorType
from accelir.testing import assert_close, random_inputs
from accelir.ops import registry
from accelir.passes import get_pass, pipeline, pass_name, rewrite_limit
from accelir.passes.fuse_conv_bn import CHUNK_BYTES

UNCHANGED = None
TOL = {DType.f32: 2e-5, DType.f16: 2e-3, DType.bf16: 2e-2}


@dataclass(frozen=True)
class Case:
    name: str
    pass_name: str
    src: str
    expected: str | None  # None: the pass must leave the graph as it is
    why: str | None = None  # a near miss must give this reason


def _inputs(g: accelir.Graph, seed: int = 0) -> list[np.ndarray]:
    """Random inputs; a bool input is a mask in which every query keeps a key."""
    return random_inputs(g, seed, true_fraction=0.7, keep_first=True)


def _run(p, g: accelir.Graph):
    """Run pass ``p`` (verbose where it can be) on ``g``; returns (changed, near misses)."""
    if hasattr(p, "verbose"):
        p = dataclasses.replace(p, verbose=True)
    changed = p(g)
    return changed, list(getattr(p, "near_misses", []))


_HEADS_SRC = """
graph main(%x: f32[1,3,4]) -> (f32[1,2,3,2]) {
  %wq = constant() {name="wq", value=[[-0.75, -0.5, -0.25, 0.0], [0.25, 0.5, 0.75, -0.75], [-0.5, -0.25, 0.0, 0.25], [0.5, 0.75, -0.75, -0.5]]} : f32[4,4]
  %wk = constant() {name="wk", value=[[-0.75, -0.25, 0.25, 0.75], [-0.5, 0.0, 0.5, -0.75], [-0.25, 0.25, 0.75, -0.5], [0.0, 0.5, -0.75, -0.25]]} : f32[4,4]
  %wv = constant() {name="wv", value=[[-0.75, 0.0, 0.75, -0.25], [0.5, -0.5, 0.25, -0.75], [0.0, 0.75, -0.25, 0.5], [-0.5, 0.25, -0.75, 0.0]]} : f32[4,4]
  %q = linear(%x, %wq) {activation="none"} : f32[1,3,4]
  %k = linear(%x, %wk) {activation="none"} : f32[1,3,4]
  %v = linear(%x, %wv) {activation="none"} : f32[1,3,4]
  %q1 = reshape(%q) {shape=[1, 3, 2, 2]} : f32[1,3,2,2]
  %k1 = reshape(%k) {shape=[1, 3, 2, 2]} : f32[1,3,2,2]
  %v1 = reshape(%v) {shape=[1, 3, 2, 2]} : f32[1,3,2,2]
  %q2 = transpose(%q1) {perm=[0, 2, 1, 3]} : f32[1,2,3,2]
  %k2 = transpose(%k1) {perm=[0, 2, 1, 3]} : f32[1,2,3,2]
  %v2 = transpose(%v1) {perm=[0, 2, 1, 3]} : f32[1,2,3,2]
  %0 = attention(%q2, %k2, %v2) {scale=0.5, causal=false} : f32[1,2,3,2]
  return %0
}
"""  # q, k, v projections split into heads the way the ONNX lowering reads them

CASES = [
    Case("gelu_erf_torch", "fuse_gelu", """
graph main(%x: f32[2,8]) -> (f32[2,8]) {
  %h = constant() {name="h", value=0.5} : f32[]
  %one = constant() {name="one", value=1.0} : f32[]
  %k = constant() {name="k", value=0.7071067811865476} : f32[]
  %0 = mul(%x, %h) : f32[2,8]
  %1 = mul(%x, %k) : f32[2,8]
  %2 = erf(%1) : f32[2,8]
  %3 = add(%2, %one) : f32[2,8]
  %4 = mul(%0, %3) : f32[2,8]
  return %4
}
""",
         """
graph main(%x: f32[2,8]) -> (f32[2,8]) {
  %0 = gelu(%x) {approximate="none"} : f32[2,8]
  return %0
}
"""),
    Case("gelu_erfc_jax", "fuse_gelu", """
graph main(%x: f32[2,8]) -> (f32[2,8]) {
  %h = constant() {name="h", value=0.5} : f32[]
  %one = constant() {name="one", value=1.0} : f32[]
  %k = constant() {name="k", value=0.7071067690849304} : f32[]
  %0 = mul(%h, %x) : f32[2,8]
  %1 = neg(%x) : f32[2,8]
  %2 = mul(%1, %k) : f32[2,8]
  %3 = erf(%2) : f32[2,8]
  %4 = sub(%one, %3) : f32[2,8]
  %5 = mul(%0, %4) : f32[2,8]
  return %5
}
""",
         """
graph main(%x: f32[2,8]) -> (f32[2,8]) {
  %0 = gelu(%x) {approximate="none"} : f32[2,8]
  return %0
}
"""),
    Case("gelu_tanh_gpt2", "fuse_gelu", """
graph main(%x: f32[2,8]) -> (f32[2,8]) {
  %h = constant() {name="h", value=0.5} : f32[]
  %three = constant() {name="three", value=3.0} : f32[]
  %c = constant() {name="c", value=0.044715} : f32[]
  %s = constant() {name="s", value=0.7978845608028654} : f32[]
  %one = constant() {name="one", value=1.0} : f32[]
  %0 = mul(%x, %h) : f32[2,8]
  %1 = pow(%x, %three) : f32[2,8]
  %2 = mul(%1, %c) : f32[2,8]
  %3 = add(%x, %2) : f32[2,8]
  %4 = mul(%3, %s) : f32[2,8]
  %5 = tanh(%4) : f32[2,8]
  %6 = add(%5, %one) : f32[2,8]
  %7 = mul(%0, %6) : f32[2,8]
  return %7
}
""",
         """
graph main(%x: f32[2,8]) -> (f32[2,8]) {
  %0 = gelu(%x) {approximate="tanh"} : f32[2,8]
  return %0
}
"""),
    Case("gelu_tanh_jax_integer_pow", "fuse_gelu", """
graph main(%x: f32[2,8]) -> (f32[2,8]) {
  %h = constant() {name="h", value=0.5} : f32[]
  %c = constant() {name="c", value=0.044714998453855515} : f32[]
  %s = constant() {name="s", value=0.7978845834732056} : f32[]
  %one = constant() {name="one", value=1.0} : f32[]
  %0 = mul(%x, %x) : f32[2,8]
  %1 = mul(%0, %x) : f32[2,8]
  %2 = mul(%c, %1) : f32[2,8]
  %3 = add(%x, %2) : f32[2,8]
  %4 = mul(%s, %3) : f32[2,8]
  %5 = tanh(%4) : f32[2,8]
  %6 = add(%one, %5) : f32[2,8]
  %7 = mul(%h, %6) : f32[2,8]
  %8 = mul(%x, %7) : f32[2,8]
  return %8
}
""",
         """
graph main(%x: f32[2,8]) -> (f32[2,8]) {
  %0 = gelu(%x) {approximate="tanh"} : f32[2,8]
  return %0
}
"""),
    Case("gelu_wrong_constant", "fuse_gelu", """
graph main(%x: f32[2,8]) -> (f32[2,8]) {
  %h = constant() {name="h", value=0.5} : f32[]
  %c = constant() {name="c", value=0.044} : f32[]
  %s = constant() {name="s", value=0.7978845834732056} : f32[]
  %one = constant() {name="one", value=1.0} : f32[]
  %0 = mul(%x, %x) : f32[2,8]
  %1 = mul(%0, %x) : f32[2,8]
  %2 = mul(%c, %1) : f32[2,8]
  %3 = add(%x, %2) : f32[2,8]
  %4 = mul(%s, %3) : f32[2,8]
  %5 = tanh(%4) : f32[2,8]
  %6 = add(%one, %5) : f32[2,8]
  %7 = mul(%h, %6) : f32[2,8]
  %8 = mul(%x, %7) : f32[2,8]
  return %8
}
""",
         UNCHANGED, why="coefficient of x^3"),
    Case("silu_jax", "fuse_silu", """
graph main(%x: f32[2,8]) -> (f32[2,8]) {
  %0 = sigmoid(%x) : f32[2,8]
  %1 = mul(%x, %0) : f32[2,8]
  return %1
}
""",
         """
graph main(%x: f32[2,8]) -> (f32[2,8]) {
  %0 = silu(%x) : f32[2,8]
  return %0
}
"""),
    Case("silu_exp_form", "fuse_silu", """
graph main(%x: f32[2,8]) -> (f32[2,8]) {
  %one = constant() {name="one", value=1.0} : f32[]
  %0 = neg(%x) : f32[2,8]
  %1 = exp(%0) : f32[2,8]
  %2 = add(%one, %1) : f32[2,8]
  %3 = div(%x, %2) : f32[2,8]
  return %3
}
""",
         """
graph main(%x: f32[2,8]) -> (f32[2,8]) {
  %0 = silu(%x) : f32[2,8]
  return %0
}
"""),
    Case("silu_other_input", "fuse_silu", """
graph main(%x: f32[2,8], %y: f32[2,8]) -> (f32[2,8]) {
  %0 = sigmoid(%y) : f32[2,8]
  %1 = mul(%x, %0) : f32[2,8]
  return %1
}
""",
         UNCHANGED, why="sigmoid reads a different value"),
    Case("softmax_jax", "fuse_softmax", """
graph main(%a: f32[2,4,8]) -> (f32[2,4,8]) {
  %ninf = constant() {name="ninf", value=-inf} : f32[]
  %b = reduce_max(%a) {axes=[2]} : f32[2,4]
  %c = max(%ninf, %b) : f32[2,4]
  %d = reshape(%c) {shape=[2,4,1]} : f32[2,4,1]
  %f = sub(%a, %d) : f32[2,4,8]
  %g = exp(%f) : f32[2,4,8]
  %h = reduce_sum(%g) {axes=[2]} : f32[2,4]
  %i = reshape(%h) {shape=[2,4,1]} : f32[2,4,1]
  %j = div(%g, %i) : f32[2,4,8]
  return %j
}
""",
         """
graph main(%a: f32[2,4,8]) -> (f32[2,4,8]) {
  %0 = softmax(%a) {axis=-1} : f32[2,4,8]
  return %0
}
"""),
    Case("log_softmax", "fuse_softmax", """
graph main(%a: f32[2,4,8]) -> (f32[2,4,8]) {
  %b = reduce_max(%a) {axes=[-1], keepdims=true} : f32[2,4,1]
  %f = sub(%a, %b) : f32[2,4,8]
  %g = exp(%f) : f32[2,4,8]
  %h = reduce_sum(%g) {axes=[2], keepdims=true} : f32[2,4,1]
  %l = log(%h) : f32[2,4,1]
  %j = sub(%f, %l) : f32[2,4,8]
  return %j
}
""",
         """
graph main(%a: f32[2,4,8]) -> (f32[2,4,8]) {
  %0 = log_softmax(%a) {axis=-1} : f32[2,4,8]
  return %0
}
"""),
    Case("softmax_plain_axis0", "fuse_softmax", """
graph main(%x: f32[4,3]) -> (f32[4,3]) {
  %0 = exp(%x) : f32[4,3]
  %1 = reduce_sum(%0) {axes=[0], keepdims=true} : f32[1,3]
  %2 = reciprocal(%1) : f32[1,3]
  %3 = mul(%0, %2) : f32[4,3]
  return %3
}
""",
         """
graph main(%x: f32[4,3]) -> (f32[4,3]) {
  %0 = softmax(%x) {axis=-2} : f32[4,3]
  return %0
}
"""),
    Case("softmax_two_axes", "fuse_softmax", """
graph main(%x: f32[2,4,3]) -> (f32[2,4,3]) {
  %0 = exp(%x) : f32[2,4,3]
  %1 = reduce_sum(%0) {axes=[1, 2], keepdims=true} : f32[2,1,1]
  %2 = div(%0, %1) : f32[2,4,3]
  return %2
}
""",
         UNCHANGED, why="not one axis"),
    Case("layer_norm_flax", "fuse_layer_norm", """
graph main(%a: f32[8], %b: f32[8], %c: f32[2,4,8]) -> (f32[2,4,8]) {
  %n8 = constant() {name="n8", value=8.0} : f32[]
  %z = constant() {name="z", value=0.0} : f32[]
  %eps = constant() {name="eps", value=9.999999974752427e-07} : f32[]
  %d = mul(%c, %c) : f32[2,4,8]
  %e = reduce_sum(%c) {axes=[2]} : f32[2,4]
  %f = div(%e, %n8) : f32[2,4]
  %g = reduce_sum(%d) {axes=[2]} : f32[2,4]
  %h = div(%g, %n8) : f32[2,4]
  %i = mul(%f, %f) : f32[2,4]
  %j = sub(%h, %i) : f32[2,4]
  %k = max(%z, %j) : f32[2,4]
  %l = reshape(%f) {shape=[2,4,1]} : f32[2,4,1]
  %m = reshape(%k) {shape=[2,4,1]} : f32[2,4,1]
  %nn = sub(%c, %l) : f32[2,4,8]
  %o = add(%m, %eps) : f32[2,4,1]
  %p = rsqrt(%o) : f32[2,4,1]
  %q = reshape(%b) {shape=[1,1,8]} : f32[1,1,8]
  %r = mul(%p, %q) : f32[2,4,8]
  %s = mul(%nn, %r) : f32[2,4,8]
  %t = reshape(%a) {shape=[1,1,8]} : f32[1,1,8]
  %u = add(%s, %t) : f32[2,4,8]
  return %u
}
""",
         """
graph main(%a: f32[8], %b: f32[8], %c: f32[2,4,8]) -> (f32[2,4,8]) {
  %0 = layer_norm(%c, %b, %a) {axis=-1, epsilon=9.999999974752427e-07} : f32[2,4,8]
  return %0
}
"""),
    Case("layer_norm_torch_style", "fuse_layer_norm", """
graph main(%x: f32[2,4,8], %w: f32[8], %b: f32[8]) -> (f32[2,4,8]) {
  %two = constant() {name="two", value=2.0} : f32[]
  %eps = constant() {name="eps", value=1e-05} : f32[]
  %0 = reduce_mean(%x) {axes=[-1], keepdims=true} : f32[2,4,1]
  %1 = sub(%x, %0) : f32[2,4,8]
  %2 = pow(%1, %two) : f32[2,4,8]
  %3 = reduce_mean(%2) {axes=[-1], keepdims=true} : f32[2,4,1]
  %4 = add(%3, %eps) : f32[2,4,1]
  %5 = sqrt(%4) : f32[2,4,1]
  %6 = div(%1, %5) : f32[2,4,8]
  %7 = mul(%6, %w) : f32[2,4,8]
  %8 = add(%7, %b) : f32[2,4,8]
  return %8
}
""",
         """
graph main(%x: f32[2,4,8], %w: f32[8], %b: f32[8]) -> (f32[2,4,8]) {
  %0 = layer_norm(%x, %w, %b) {axis=-1, epsilon=9.999999747378752e-06} : f32[2,4,8]
  return %0
}
"""),
    Case("layer_norm_uniform_scale", "fuse_layer_norm", """
graph main(%x: f32[2,4,8]) -> (f32[2,4,8]) {
  %eps = constant() {name="eps", value=1e-05} : f32[]
  %w = constant() {name="w", value=[2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]} : f32[8]
  %0 = reduce_mean(%x) {axes=[-1], keepdims=true} : f32[2,4,1]
  %1 = sub(%x, %0) : f32[2,4,8]
  %2 = mul(%1, %1) : f32[2,4,8]
  %3 = reduce_mean(%2) {axes=[-1], keepdims=true} : f32[2,4,1]
  %4 = add(%3, %eps) : f32[2,4,1]
  %5 = rsqrt(%4) : f32[2,4,1]
  %6 = mul(%1, %5) : f32[2,4,8]
  %7 = mul(%w, %6) : f32[2,4,8]
  return %7
}
""",
         """
graph main(%x: f32[2,4,8]) -> (f32[2,4,8]) {
  %w = constant() {name="w", value=[2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]} : f32[8]
  %0 = layer_norm(%x, %w) {axis=-1, epsilon=9.999999747378752e-06} : f32[2,4,8]
  return %0
}
"""),
    Case("layer_norm_eps_not_constant", "fuse_layer_norm", """
graph main(%x: f32[2,4,8], %e: f32[]) -> (f32[2,4,8]) {
  %0 = reduce_mean(%x) {axes=[-1], keepdims=true} : f32[2,4,1]
  %1 = sub(%x, %0) : f32[2,4,8]
  %2 = mul(%1, %1) : f32[2,4,8]
  %3 = reduce_mean(%2) {axes=[-1], keepdims=true} : f32[2,4,1]
  %4 = add(%3, %e) : f32[2,4,1]
  %5 = rsqrt(%4) : f32[2,4,1]
  %6 = mul(%1, %5) : f32[2,4,8]
  return %6
}
""",
         UNCHANGED, why="epsilon is not a scalar constant"),
    Case("layer_norm_middle_axis", "fuse_layer_norm", """
graph main(%x: f32[2,4,8]) -> (f32[2,4,8]) {
  %eps = constant() {name="eps", value=1e-05} : f32[]
  %0 = reduce_mean(%x) {axes=[1], keepdims=true} : f32[2,1,8]
  %1 = sub(%x, %0) : f32[2,4,8]
  %2 = mul(%1, %1) : f32[2,4,8]
  %3 = reduce_mean(%2) {axes=[1], keepdims=true} : f32[2,1,8]
  %4 = add(%3, %eps) : f32[2,1,8]
  %5 = rsqrt(%4) : f32[2,1,8]
  %6 = mul(%1, %5) : f32[2,4,8]
  return %6
}
""",
         UNCHANGED, why="not trailing axes"),
    Case("rms_norm_flax", "fuse_rms_norm", """
graph main(%a: f32[8], %b: f32[2,4,8]) -> (f32[2,4,8]) {
  %n8 = constant() {name="n8", value=8.0} : f32[]
  %z = constant() {name="z", value=0.0} : f32[]
  %eps = constant() {name="eps", value=9.999999974752427e-07} : f32[]
  %c = mul(%b, %b) : f32[2,4,8]
  %d = reduce_sum(%c) {axes=[2]} : f32[2,4]
  %e = div(%d, %n8) : f32[2,4]
  %f = broadcast_to(%z) {shape=[2,4]} : f32[2,4]
  %g = reshape(%f) {shape=[2,4,1]} : f32[2,4,1]
  %h = reshape(%e) {shape=[2,4,1]} : f32[2,4,1]
  %i = sub(%b, %g) : f32[2,4,8]
  %j = add(%h, %eps) : f32[2,4,1]
  %k = rsqrt(%j) : f32[2,4,1]
  %l = reshape(%a) {shape=[1,1,8]} : f32[1,1,8]
  %m = mul(%k, %l) : f32[2,4,8]
  %n = mul(%i, %m) : f32[2,4,8]
  return %n
}
""",
         """
graph main(%a: f32[8], %b: f32[2,4,8]) -> (f32[2,4,8]) {
  %0 = rms_norm(%b, %a) {axis=-1, epsilon=9.999999974752427e-07} : f32[2,4,8]
  return %0
}
"""),
    Case("rms_norm_llama", "fuse_rms_norm", """
graph main(%x: f32[2,4,8], %w: f32[8]) -> (f32[2,4,8]) {
  %two = constant() {name="two", value=2.0} : f32[]
  %eps = constant() {name="eps", value=1e-06} : f32[]
  %0 = pow(%x, %two) : f32[2,4,8]
  %1 = reduce_mean(%0) {axes=[-1], keepdims=true} : f32[2,4,1]
  %2 = add(%1, %eps) : f32[2,4,1]
  %3 = rsqrt(%2) : f32[2,4,1]
  %4 = mul(%x, %3) : f32[2,4,8]
  %5 = mul(%w, %4) : f32[2,4,8]
  return %5
}
""",
         """
graph main(%x: f32[2,4,8], %w: f32[8]) -> (f32[2,4,8]) {
  %0 = rms_norm(%x, %w) {axis=-1, epsilon=9.999999974752427e-07} : f32[2,4,8]
  return %0
}
"""),
    Case("skip_layer_norm_residual", "fuse_skip_norm", """
graph main(%x: f32[2,4,8], %r: f32[2,4,8], %w: f32[8], %b: f32[8]) -> (f32[2,4,8]) {
  %0 = add(%x, %r) : f32[2,4,8]
  %1 = layer_norm(%0, %w, %b) {axis=-1, epsilon=1e-05} : f32[2,4,8]
  %2 = relu(%1) : f32[2,4,8]
  %3 = add(%0, %2) : f32[2,4,8]
  return %3
}
""",
         """
graph main(%x: f32[2,4,8], %r: f32[2,4,8], %w: f32[8], %b: f32[8]) -> (f32[2,4,8]) {
  %0, %1 = skip_layer_norm(%x, %r, %w, %b) {axis=-1, epsilon=1e-05} : f32[2,4,8], f32[2,4,8]
  %2 = relu(%0) : f32[2,4,8]
  %3 = add(%1, %2) : f32[2,4,8]
  return %3
}
"""),
    Case("skip_rms_norm_bias_row", "fuse_skip_norm", """
graph main(%x: f32[2,4,8], %r: f32[8], %w: f32[8]) -> (f32[2,4,8]) {
  %0 = add(%r, %x) : f32[2,4,8]
  %1 = rms_norm(%0, %w) {axis=-1, epsilon=1e-06} : f32[2,4,8]
  return %1
}
""",
         """
graph main(%x: f32[2,4,8], %r: f32[8], %w: f32[8]) -> (f32[2,4,8]) {
  %0, %1 = skip_rms_norm(%x, %r, %w) {axis=-1, epsilon=1e-06} : f32[2,4,8], f32[2,4,8]
  return %0
}
"""),
    Case("linear_addmm_gpt2", "fuse_linear", """
graph main(%x: f32[2,8,16], %w: f32[16,32], %b: f32[32]) -> (f32[2,8,32]) {
  %0 = reshape(%x) {shape=[16, 16]} : f32[16,16]
  %1 = linear(%0, %w, %b) {activation="none"} : f32[16,32]
  %2 = reshape(%1) {shape=[2, 8, 32]} : f32[2,8,32]
  %3 = gelu(%2) {approximate="tanh"} : f32[2,8,32]
  return %3
}
""",
         """
graph main(%x: f32[2,8,16], %w: f32[16,32], %b: f32[32]) -> (f32[2,8,32]) {
  %0 = linear(%x, %w, %b) {activation="gelu_tanh"} : f32[2,8,32]
  return %0
}
"""),
    Case("linear_dot_general_jax", "fuse_linear", """
graph main(%x: f32[2,8,16], %w: f32[16,32], %b: f32[32]) -> (f32[2,8,32]) {
  %0 = dot_general(%x, %w) {lhs_contracting=[2], rhs_contracting=[0]} : f32[2,8,32]
  %1 = reshape(%b) {shape=[1, 1, 32]} : f32[1,1,32]
  %2 = add(%0, %1) : f32[2,8,32]
  %3 = relu(%2) : f32[2,8,32]
  return %3
}
""",
         """
graph main(%x: f32[2,8,16], %w: f32[16,32], %b: f32[32]) -> (f32[2,8,32]) {
  %0 = linear(%x, %w, %b) {activation="relu"} : f32[2,8,32]
  return %0
}
"""),
    Case("linear_bias_per_row", "fuse_linear", """
graph main(%x: f32[8,16], %w: f32[16,32], %b: f32[8,1]) -> (f32[8,32]) {
  %0 = matmul(%x, %w) : f32[8,32]
  %1 = add(%0, %b) : f32[8,32]
  return %1
}
""",
         UNCHANGED, why="does not vary along the output features only"),
    Case("parallel_linear_qkv", "fuse_parallel_linear", """
graph main(%x: f32[B,3,4]) -> (f32[B,3,2], f32[B,3,3], f32[B,3,2]) {
  %w1 = constant() {name="w1", value=[[0.5, -1.0], [0.25, 2.0], [1.5, -0.5], [0.0, 1.0]]} : f32[4,2]
  %b1 = constant() {name="b1", value=[0.5, -0.25]} : f32[2]
  %w2 = constant() {name="w2", value=[[1.0, 0.0, -1.0], [0.5, 0.5, 0.5], [2.0, -2.0, 1.0], [0.0, 0.25, 0.75]]} : f32[4,3]
  %w3 = constant() {name="w3", value=[[1.0, 2.0], [3.0, 4.0], [-1.0, -2.0], [0.5, 0.5]]} : f32[4,2]
  %0 = linear(%x, %w1, %b1) {activation="none"} : f32[B,3,2]
  %1 = matmul(%x, %w2) : f32[B,3,3]
  %2 = relu(%1) : f32[B,3,3]
  %3 = linear(%x, %w3) {activation="none"} : f32[B,3,2]
  return %0, %2, %3
}
""",
         """
graph main(%x: f32[B,3,4]) -> (f32[B,3,2], f32[B,3,3], f32[B,3,2]) {
  %0 = constant() {name="w1_merged"} : f32[4,7]
  %1 = constant() {name="w1_merged_bias", value=[0.5, -0.25, 0.0, 0.0, 0.0, 0.0, 0.0]} : f32[7]
  %3 = linear(%x, %0, %1) {activation="none"} : f32[B,3,7]
  %4 = slice(%3) {starts=[0], stops=[2], steps=[], axes=[2]} : f32[B,3,2]
  %5 = slice(%3) {starts=[2], stops=[5], steps=[], axes=[2]} : f32[B,3,3]
  %6 = slice(%3) {starts=[5], stops=[7], steps=[], axes=[2]} : f32[B,3,2]
  %2 = relu(%5) : f32[B,3,3]
  return %4, %2, %6
}
"""),
    Case("parallel_linear_other_activation", "fuse_parallel_linear", """
graph main(%x: f32[3,4]) -> (f32[3,2], f32[3,2]) {
  %w1 = constant() {name="w1", value=[[0.5, -1.0], [0.25, 2.0], [1.5, -0.5], [0.0, 1.0]]} : f32[4,2]
  %w2 = constant() {name="w2", value=[[1.0, 2.0], [3.0, 4.0], [-1.0, -2.0], [0.5, 0.5]]} : f32[4,2]
  %0 = linear(%x, %w1) {activation="relu"} : f32[3,2]
  %1 = linear(%x, %w2) {activation="none"} : f32[3,2]
  return %0, %1
}
""",
         UNCHANGED),
    Case("parallel_linear_weight_input", "fuse_parallel_linear", """
graph main(%x: f32[3,4], %w2: f32[4,2]) -> (f32[3,2], f32[3,2]) {
  %w1 = constant() {name="w1", value=[[0.5, -1.0], [0.25, 2.0], [1.5, -0.5], [0.0, 1.0]]} : f32[4,2]
  %0 = linear(%x, %w1) {activation="none"} : f32[3,2]
  %1 = linear(%x, %w2) {activation="none"} : f32[3,2]
  return %0, %1
}
""",
         UNCHANGED, why="the weight is not a constant"),
    Case("parallel_linear_attention_heads", "fuse_parallel_linear", _HEADS_SRC,
         UNCHANGED, why="feed one fused attention"),
    Case("parallel_linear_attention_other_split", "fuse_parallel_linear", _HEADS_SRC.replace(
        "perm=[0, 2, 1, 3]} : f32[1,2,3,2]", "perm=[2, 0, 1, 3]} : f32[2,1,3,2]").replace("f32[1,2,3,2]", "f32[2,1,3,2]"),
         """
graph main(%x: f32[1,3,4]) -> (f32[2,1,3,2]) {
  %1 = constant() {name="wq_merged"} : f32[4,12]
  %2 = linear(%x, %1) {activation="none"} : f32[1,3,12]
  %3 = slice(%2) {starts=[0], stops=[4], steps=[], axes=[2]} : f32[1,3,4]
  %4 = slice(%2) {starts=[4], stops=[8], steps=[], axes=[2]} : f32[1,3,4]
  %5 = slice(%2) {starts=[8], stops=[12], steps=[], axes=[2]} : f32[1,3,4]
  %q1 = reshape(%3) {shape=[1, 3, 2, 2]} : f32[1,3,2,2]
  %k1 = reshape(%4) {shape=[1, 3, 2, 2]} : f32[1,3,2,2]
  %v1 = reshape(%5) {shape=[1, 3, 2, 2]} : f32[1,3,2,2]
  %q2 = transpose(%q1) {perm=[2, 0, 1, 3]} : f32[2,1,3,2]
  %k2 = transpose(%k1) {perm=[2, 0, 1, 3]} : f32[2,1,3,2]
  %v2 = transpose(%v1) {perm=[2, 0, 1, 3]} : f32[2,1,3,2]
  %0 = attention(%q2, %k2, %v2) {scale=0.5, causal=false} : f32[2,1,3,2]
  return %0
}
"""),  # not the head split the ONNX lowering reads projections from: merged
    Case("attention_eager", "fuse_attention", """
graph main(%q: f32[2,4,5,8], %k: f32[2,4,6,8], %v: f32[2,4,6,8], %m: f32[2,1,5,6]) -> (f32[2,4,5,8]) {
  %d = constant() {name="d", value=2.8284271247461903} : f32[]
  %0 = transpose(%k) {perm=[0, 1, 3, 2]} : f32[2,4,8,6]
  %1 = matmul(%q, %0) : f32[2,4,5,6]
  %2 = div(%1, %d) : f32[2,4,5,6]
  %3 = add(%2, %m) : f32[2,4,5,6]
  %4 = softmax(%3) {axis=-1} : f32[2,4,5,6]
  %5 = matmul(%4, %v) : f32[2,4,5,8]
  return %5
}
""",
         """
graph main(%q: f32[2,4,5,8], %k: f32[2,4,6,8], %v: f32[2,4,6,8], %m: f32[2,1,5,6]) -> (f32[2,4,5,8]) {
  %0 = attention(%q, %k, %v, %m) {scale=0.3535533966440824, causal=false} : f32[2,4,5,8]
  return %0
}
"""),
    Case("attention_flax", "fuse_attention", """
graph main(%a: f32[2,4,2,8], %b: f32[2,6,2,8], %c: f32[2,6,2,8]) -> (f32[2,4,2,8]) {
  %k8 = constant() {name="k8", value=8.0} : f32[]
  %d = sqrt(%k8) : f32[]
  %f = div(%a, %d) : f32[2,4,2,8]
  %g = dot_general(%f, %b) {lhs_contracting=[3], rhs_contracting=[3], lhs_batch=[0, 2], rhs_batch=[0, 2]} : f32[2,2,4,6]
  %p = softmax(%g) {axis=-1} : f32[2,2,4,6]
  %q = dot_general(%c, %p) {lhs_contracting=[1], rhs_contracting=[3], lhs_batch=[0, 2], rhs_batch=[0, 1]} : f32[2,2,8,4]
  %r = transpose(%q) {perm=[0, 3, 1, 2]} : f32[2,4,2,8]
  return %r
}
""",
         """
graph main(%a: f32[2,4,2,8], %b: f32[2,6,2,8], %c: f32[2,6,2,8]) -> (f32[2,4,2,8]) {
  %0 = transpose(%a) {perm=[0, 2, 1, 3]} : f32[2,2,4,8]
  %1 = transpose(%b) {perm=[0, 2, 1, 3]} : f32[2,2,6,8]
  %2 = transpose(%c) {perm=[0, 2, 1, 3]} : f32[2,2,6,8]
  %3 = attention(%0, %1, %2) {scale=0.3535533966440824, causal=false} : f32[2,2,4,8]
  %4 = transpose(%3) {perm=[0, 1, 3, 2]} : f32[2,2,8,4]
  %r = transpose(%4) {perm=[0, 3, 1, 2]} : f32[2,4,2,8]
  return %r
}
"""),
    Case("attention_where_finite_fill", "fuse_attention", """
graph main(%q: f32[2,5,8], %k: f32[2,6,8], %v: f32[2,6,8], %m: bool[2,5,6]) -> (f32[2,5,8]) {
  %s = constant() {name="s", value=0.125} : f32[]
  %big = constant() {name="big", value=-3.4028234663852886e+38} : f32[]
  %0 = transpose(%k) {perm=[0, 2, 1]} : f32[2,8,6]
  %1 = matmul(%q, %0) : f32[2,5,6]
  %2 = mul(%1, %s) : f32[2,5,6]
  %3 = where(%m, %2, %big) : f32[2,5,6]
  %4 = softmax(%3) {axis=-1} : f32[2,5,6]
  %5 = matmul(%4, %v) : f32[2,5,8]
  return %5
}
""",
         """
graph main(%q: f32[2,5,8], %k: f32[2,6,8], %v: f32[2,6,8], %m: bool[2,5,6]) -> (f32[2,5,8]) {
  %0 = constant() {name="c", value=0.0} : f32[]
  %1 = constant() {name="c_0", value=-8.5070587e+37} : f32[]
  %2 = where(%m, %0, %1) : f32[2,5,6]
  %3 = attention(%q, %k, %v, %2) {scale=0.125, causal=false} : f32[2,5,8]
  return %3
}
"""),
    Case("attention_where_fill_broadcast_to_symbolic_shape", "fuse_attention", """
graph main(%q: f32[b,5,8], %k: f32[b,6,8], %v: f32[b,6,8], %m: bool[b,5,6]) -> (f32[b,5,8]) {
  %s = constant() {name="s", value=0.125} : f32[]
  %big = constant() {name="big", value=-3.4028234663852886e+38} : f32[]
  %0 = transpose(%k) {perm=[0, 2, 1]} : f32[b,8,6]
  %1 = matmul(%q, %0) : f32[b,5,6]
  %2 = mul(%1, %s) : f32[b,5,6]
  %fill = broadcast_to(%big) {shape=["b", 5, 6]} : f32[b,5,6]
  %3 = where(%m, %2, %fill) : f32[b,5,6]
  %4 = softmax(%3) {axis=-1} : f32[b,5,6]
  %5 = matmul(%4, %v) : f32[b,5,8]
  return %5
}
""",
         """
graph main(%q: f32[b,5,8], %k: f32[b,6,8], %v: f32[b,6,8], %m: bool[b,5,6]) -> (f32[b,5,8]) {
  %0 = constant() {name="c", value=0.0} : f32[]
  %1 = constant() {name="c_0", value=-8.5070587e+37} : f32[]
  %2 = where(%m, %0, %1) : f32[b,5,6]
  %3 = attention(%q, %k, %v, %2) {scale=0.125, causal=false} : f32[b,5,8]
  return %3
}
"""),  # jax's where fill: a scalar broadcast to the scores' shape, its batch symbolic
    Case("attention_mask_before_scale", "fuse_attention", """
graph main(%q: f32[2,5,8], %k: f32[2,6,8], %v: f32[2,6,8], %m: f32[2,5,6]) -> (f32[2,5,8]) {
  %s = constant() {name="s", value=0.125} : f32[]
  %0 = transpose(%k) {perm=[0, 2, 1]} : f32[2,8,6]
  %1 = matmul(%q, %0) : f32[2,5,6]
  %2 = add(%1, %m) : f32[2,5,6]
  %3 = mul(%2, %s) : f32[2,5,6]
  %4 = softmax(%3) {axis=-1} : f32[2,5,6]
  %5 = matmul(%4, %v) : f32[2,5,8]
  return %5
}
""",
         UNCHANGED, why="mask is added before the scale"),
    Case("conv_batch_norm", "fuse_conv_bn", """
graph main(%x: f32[1,2,5,5]) -> (f32[1,3,3,3]) {
  %w = constant() {name="w", value=[[[[0.5]], [[-1.0]]], [[[2.0]], [[0.25]]], [[[1.5]], [[-0.5]]]]} : f32[3,2,1,1]
  %g = constant() {name="g", value=[1.0, 2.0, 0.5]} : f32[3]
  %be = constant() {name="be", value=[0.1, -0.2, 0.3]} : f32[3]
  %mu = constant() {name="mu", value=[0.5, 0.0, -1.0]} : f32[3]
  %va = constant() {name="va", value=[1.0, 4.0, 0.25]} : f32[3]
  %0 = conv(%x, %w) {stride=[2, 2]} : f32[1,3,3,3]
  %1 = batch_norm(%0, %g, %be, %mu, %va) {epsilon=1e-05} : f32[1,3,3,3]
  return %1
}
""",
         """
graph main(%x: f32[1,2,5,5]) -> (f32[1,3,3,3]) {
  %0 = constant() {name="w_folded", value=[[[[0.4999975]], [[-0.999995]]], [[[1.9999975]], [[0.24999969]]], [[[1.49997]], [[-0.49999]]]]} : f32[3,2,1,1]
  %1 = constant() {name="w_folded_bias", value=[-0.3999975, -0.2, 1.29998]} : f32[3]
  %2 = conv(%x, %0, %1) {stride=[2, 2], padding=[], dilation=[], groups=1, lhs_dilation=[]} : f32[1,3,3,3]
  return %2
}
"""),
    Case("conv_affine_jax_bn", "fuse_conv_bn", """
graph main(%x: f32[1,2,4,4]) -> (f32[1,3,4,4]) {
  %w = constant() {name="w", value=[[[[0.5]], [[-1.0]]], [[[2.0]], [[0.25]]], [[[1.5]], [[-0.5]]]]} : f32[3,2,1,1]
  %mu = constant() {name="mu", value=[[[0.5]], [[0.0]], [[-1.0]]]} : f32[3,1,1]
  %k = constant() {name="k", value=[[[[2.0]], [[0.5]], [[1.0]]]]} : f32[1,3,1,1]
  %be = constant() {name="be", value=[[[0.1]], [[-0.2]], [[0.3]]]} : f32[3,1,1]
  %0 = conv(%x, %w) : f32[1,3,4,4]
  %1 = sub(%0, %mu) : f32[1,3,4,4]
  %2 = mul(%1, %k) : f32[1,3,4,4]
  %3 = add(%be, %2) : f32[1,3,4,4]
  return %3
}
""",
         """
graph main(%x: f32[1,2,4,4]) -> (f32[1,3,4,4]) {
  %0 = constant() {name="w_folded", value=[[[[1.0]], [[-2.0]]], [[[1.0]], [[0.125]]], [[[1.5]], [[-0.5]]]]} : f32[3,2,1,1]
  %1 = constant() {name="w_folded_bias", value=[-0.9, -0.2, 1.3]} : f32[3]
  %2 = conv(%x, %0, %1) {stride=[], padding=[], dilation=[], groups=1, lhs_dilation=[]} : f32[1,3,4,4]
  return %2
}
"""),
    Case("conv_bias_relu", "fuse_conv_act", """
graph main(%x: f32[1,2,5,5], %w: f32[3,2,3,3], %b: f32[3]) -> (f32[1,3,3,3]) {
  %0 = conv(%x, %w) : f32[1,3,3,3]
  %1 = reshape(%b) {shape=[1, 3, 1, 1]} : f32[1,3,1,1]
  %2 = add(%0, %1) : f32[1,3,3,3]
  %3 = relu(%2) : f32[1,3,3,3]
  return %3
}
""",
         """
graph main(%x: f32[1,2,5,5], %w: f32[3,2,3,3], %b: f32[3]) -> (f32[1,3,3,3]) {
  %0 = fused_conv(%x, %w, %b) {stride=[], padding=[], dilation=[], groups=1, lhs_dilation=[], activation="relu"} : f32[1,3,3,3]
  return %0
}
"""),
    Case("conv_act_shared", "fuse_conv_act", """
graph main(%x: f32[1,2,5,5], %w: f32[3,2,3,3]) -> (f32[1,3,3,3], f32[1,3,3,3]) {
  %0 = conv(%x, %w) : f32[1,3,3,3]
  %1 = relu(%0) : f32[1,3,3,3]
  return %1, %0
}
""",
         UNCHANGED),
    Case("elementwise_chain", "fuse_elementwise", """
graph main(%x: f32[2,8], %y: f32[2,8]) -> (f32[2,8], f32[2,8]) {
  %h = constant() {name="h", value=0.5} : f32[]
  %0 = mul(%x, %h) : f32[2,8]
  %1 = exp(%0) : f32[2,8]
  %2 = tanh(%0) : f32[2,8]
  %3 = add(%1, %2) : f32[2,8]
  %4 = reduce_sum(%3) {axes=[1], keepdims=true} : f32[2,1]
  %5 = sub(%3, %4) : f32[2,8]
  %6 = mul(%5, %y) : f32[2,8]
  return %6, %3
}
""",
         """
graph main(%x: f32[2,8], %y: f32[2,8]) -> (f32[2,8], f32[2,8]) {
  %0 = fusion(%x) {kind="elementwise"} : f32[2,8] {
    graph fused(%x: f32[2,8]) -> (f32[2,8]) {
      %0 = constant() {name="h", value=0.5} : f32[]
      %1 = mul(%x, %0) : f32[2,8]
      %2 = exp(%1) : f32[2,8]
      %3 = tanh(%1) : f32[2,8]
      %4 = add(%2, %3) : f32[2,8]
      return %4
    }
  }
  %4 = reduce_sum(%0) {axes=[1], keepdims=true} : f32[2,1]
  %1 = fusion(%0, %4, %y) {kind="elementwise"} : f32[2,8] {
    graph fused(%3: f32[2,8], %4: f32[2,1], %y: f32[2,8]) -> (f32[2,8]) {
      %0 = sub(%3, %4) : f32[2,8]
      %1 = mul(%0, %y) : f32[2,8]
      return %1
    }
  }
  return %1, %0
}
"""),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rewrite(case: Case) -> None:
    g = accelir.parse(case.src)
    before = str(g)
    xs = _inputs(g)
    want = accelir.run_graph(g, xs)
    changed, misses = _run(get_pass(case.pass_name), g)
    accelir.verify(g)
    expected = before if case.expected is None else case.expected.lstrip("\n")
    assert str(g) == expected
    assert changed == (case.expected is not None)
    assert_close(accelir.run_graph(g, xs), want, TOL, dtype=DType.f32)
    if case.why is not None:
        assert any(case.why in m.reason for m in misses), [m.reason for m in misses]


# composite -> its own decomposition -> the fusion passes -> the composite again
ROUND_TRIPS = [
    ("gelu", {}, [(2, 8)], ["fuse_gelu"]),
    ("gelu", {"approximate": "tanh"}, [(2, 8)], ["fuse_gelu"]),
    ("silu", {}, [(3, 5)], ["fuse_silu"]),
    ("softmax", {"axis": 0}, [(4, 3)], ["fuse_softmax"]),
    ("log_softmax", {"axis": -1}, [(2, 3, 4)], ["fuse_softmax"]),
    ("layer_norm", {"axis": 1}, [(2, 3, 8), (3, 8), (8,)], ["fuse_layer_norm"]),
    ("layer_norm", {}, [(2, 3, 8)], ["fuse_layer_norm"]),
    ("rms_norm", {}, [(2, 3, 8), (8,)], ["fuse_rms_norm"]),
    ("skip_layer_norm", {}, [(2, 4, 8), (2, 4, 8), (8,), (8,)], ["fuse_layer_norm", "fuse_skip_norm"]),
    ("skip_rms_norm", {}, [(2, 4, 8), (8,), (8,)], ["fuse_rms_norm", "fuse_skip_norm"]),
    ("attention", {}, [(2, 4, 5, 8), (2, 4, 6, 8), (2, 4, 6, 3)], ["fuse_softmax", "fuse_attention"]),
    ("attention", {"scale": 0.3}, [(5, 8), (6, 8), (6, 3)], ["fuse_softmax", "fuse_attention"]),
    ("linear", {"activation": "gelu_tanh"}, [(2, 4, 5), (5, 3), (3,)], ["fuse_gelu", "fuse_linear"]),
    ("linear", {"activation": "silu"}, [(2, 4, 5), (5, 3)], ["fuse_silu", "fuse_linear"]),
    ("fused_conv", {"activation": "relu", "padding": ((1, 1), (1, 1))}, [(1, 2, 5, 5), (3, 2, 3, 3), (3,)],
     ["fuse_conv_act"]),
]


@pytest.mark.parametrize("dtype", [DType.f32, DType.f16, DType.bf16], ids=str)
@pytest.mark.parametrize("op,attrs,shapes,passes", ROUND_TRIPS,
                         ids=[f"{r[0]}-{'-'.join(f'{k}={v}' for k, v in r[1].items())}" for r in ROUND_TRIPS])
def test_decomposition_fuses_back(op: str, attrs: dict, shapes: list, passes: list[str], dtype: DType) -> None:
    g = accelir.Graph()
    ins = [g.add_input(TensorType(dtype, s), f"x{k}") for k, s in enumerate(shapes)]
    attrs = registry.normalize_attrs(op, attrs)
    g.set_outputs(registry.get(op).decompose(g.builder(), ins, attrs))
    xs = _inputs(g, seed=1)
    want = accelir.run_graph(g, xs)
    misses = []
    for name in passes:
        misses += _run(get_pass(name), g)[1]
    assert not misses, [m.reason for m in misses]
    accelir.verify(g)
    assert [n.op for n in g.nodes if n.op != "constant"] == [op]
    (node,) = [n for n in g.nodes if n.op == op]
    rank = ins[0].rank
    for k, v in attrs.items():
        got = node.attrs[k]
        if k == "axis":
            assert got % rank == v % rank
        elif isinstance(v, float):  # epsilon and scale come back rounded to the dtype
            assert got == pytest.approx(float(np.asarray(v, dtype.numpy)), rel=TOL[dtype]), k
        elif v is not None:
            assert got == v, k
    assert_close(accelir.run_graph(g, xs), want, TOL, dtype=dtype)


def test_rewritten_nodes_keep_provenance() -> None:
    g = accelir.parse(CASES[0].src)
    root = list(g.nodes)[-1]
    root.meta.update(module="mlp.act", source="model.py:12", origin="aten.mul")
    get_pass("fuse_gelu")(g)
    (gelu,) = [n for n in g.nodes if n.op == "gelu"]
    assert gelu.meta == {"module": "mlp.act", "source": "model.py:12", "origin": "aten.mul",
                         "pass": "fuse_gelu", "rule": "gelu"}


def _two_gelus() -> accelir.Graph:
    g = accelir.Graph()
    x = g.add_input(TensorType(DType.f32, (2, 8)), "x")
    b = g.builder()
    y = registry.get("gelu").decompose(b, [x], {"approximate": "none"})[0]
    z = registry.get("gelu").decompose(b, [y], {"approximate": "none"})[0]
    g.set_outputs([z])
    return g


def test_fusions_respect_the_rewrite_budget() -> None:
    g = _two_gelus()
    with rewrite_limit(1) as budget:
        assert get_pass("fuse_gelu")(g)
        assert budget.count == 1
    assert g.op_histogram()["gelu"] == 1
    assert get_pass("fuse_gelu")(g)
    assert g.op_histogram()["gelu"] == 2


def test_skip_norm_keeps_the_add_for_readers_before_the_norm() -> None:
    g = accelir.parse("""
graph main(%x: f32[2,8], %r: f32[2,8], %w: f32[8]) -> (f32[2,8], f32[2,8], f32[2,8]) {
  %0 = add(%x, %r) : f32[2,8]
  %1 = exp(%0) : f32[2,8]
  %2 = rms_norm(%0, %w) {axis=-1, epsilon=1e-06} : f32[2,8]
  return %2, %1, %0
}""")
    xs = _inputs(g)
    want = accelir.run_graph(g, xs)
    assert get_pass("fuse_skip_norm")(g)
    accelir.verify(g)
    assert str(g) == """graph main(%x: f32[2,8], %r: f32[2,8], %w: f32[8]) -> (f32[2,8], f32[2,8], f32[2,8]) {
  %0 = add(%x, %r) : f32[2,8]
  %1 = exp(%0) : f32[2,8]
  %2, %3 = skip_rms_norm(%x, %r, %w) {axis=-1, epsilon=1e-06} : f32[2,8], f32[2,8]
  return %2, %1, %3
}
"""
    assert_close(accelir.run_graph(g, xs), want, TOL, dtype=DType.f32)


def test_conv_batch_norm_folding_matches_the_unfolded_graph() -> None:
    rng = np.random.default_rng(3)
    g = accelir.Graph()
    x = g.add_input(TensorType(DType.f32, (2, 3, 7, 7)), "x")
    w = g.const(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), name="w")
    bias = g.const(rng.standard_normal(4).astype(np.float32), name="b")
    y = g.apply("conv", x, w, bias, stride=(2, 2), padding=((1, 1), (1, 1)))
    params = [rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(4), rng.random(4) + 0.5]
    y = g.apply("batch_norm", y, *(g.const(p.astype(np.float32)) for p in params), epsilon=1e-3)
    g.set_outputs([g.apply("relu", y)])
    xs = _inputs(g)
    want = accelir.run_graph(g, xs)
    for name in ("fuse_conv_bn", "fuse_conv_act"):
        assert get_pass(name)(g)
    accelir.verify(g)
    assert [n.op for n in g.nodes if n.op != "constant"] == ["fused_conv"]
    assert_close(accelir.run_graph(g, xs), want, TOL, dtype=DType.f32)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_conv_batch_norm_folds_a_large_weight_in_float64_rounded_once(dtype) -> None:
    """A weight spanning many of the fold's row chunks gets each product in float64, rounded once."""
    rng = np.random.default_rng(4)
    g = accelir.Graph()
    x = g.add_input(TensorType(DType.from_numpy(np.dtype(dtype)), (1, 64, 5, 5)), "x")
    w_arr = rng.standard_normal((301, 64, 3, 3)).astype(dtype)
    w = g.const(w_arr, name="w")
    scale, shift, mean = (rng.standard_normal(301) for _ in range(3))
    var = rng.random(301) + 0.5
    y = g.apply("conv", x, w, padding=((1, 1), (1, 1)))
    y = g.apply("batch_norm", y, *(g.const(p.astype(dtype)) for p in (scale, shift, mean, var)), epsilon=1e-3)
    g.set_outputs([y])
    assert get_pass("fuse_conv_bn")(g)
    (conv,) = [n for n in g.nodes if n.op == "conv"]
    k = scale.astype(dtype).astype(np.float64) / np.sqrt(var.astype(dtype).astype(np.float64) + 1e-3)
    want = (w_arr.astype(np.float64) * k[:, None, None, None]).astype(dtype)
    np.testing.assert_array_equal(conv.inputs[1].const_value, want)
    assert w_arr.size * 8 > 4 * CHUNK_BYTES  # its float64 products span several of the fold's chunks


def test_elementwise_fusion_is_a_fixed_point_and_fuses_inside_nothing_else() -> None:
    case = next(c for c in CASES if c.name == "elementwise_chain")
    g = accelir.parse(case.src)
    p = get_pass("fuse_elementwise")
    assert p(g)
    assert not p(g)
    accelir.verify(g)
    assert g.op_histogram() == {"fusion": 2, "reduce_sum": 1, "constant": 1, "mul": 2, "exp": 1, "tanh": 1,
                                "add": 1, "sub": 1}


def test_pipelines_place_the_fusion_passes() -> None:
    names = [pass_name(p) for p in pipeline(2)]
    fusion = names[names.index("fuse_gelu"):]
    assert fusion == ["fuse_gelu", "fuse_silu", "fuse_softmax", "fuse_layer_norm", "fuse_rms_norm", "fuse_skip_norm",
                      "fuse_attention", "fuse_decode_attention", "fuse_rotary", "fuse_linear", "fuse_parallel_linear",
                      "fuse_conv_bn", "fuse_conv_act"]
    assert "fuse_elementwise" not in names
    assert [pass_name(p) for p in pipeline(3, "xla")][-1] == "fuse_elementwise"


def test_a_row_masked_everywhere_by_the_dtype_minimum_averages_the_values_on_onnxruntime():
    """flax writes a mask as ``where(m, s, finfo.min)``: a row masked everywhere (a batch row of padding only)
    softmaxes to equal weights, the mean of v.  onnxruntime's Attention overflows a bias of finfo.min itself
    and gives zeros there; the fused mask's fill is kept clear of that, with the same weights."""
    import jax
    import jax.numpy as jnp

    def fn(q, k, v, m):
        s = jnp.where(m, jnp.einsum("bhqd,bhkd->bhqk", q, k) * 0.25, jnp.finfo(jnp.float32).min)
        return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(s, axis=-1), v)
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 2, n, 16)).astype(np.float32) for n in (1, 64, 64))
    m = np.zeros((2, 2, 1, 64), bool)
    m[0, :, :, :5] = True
    cm = accelir.optimize(fn, (q, k, v, m), backend="onnxruntime")
    assert "attention" in {n.op for n in cm.graph.nodes}
    assert_close(np.asarray(cm(q, k, v, m)), np.asarray(jax.jit(fn)(q, k, v, m)))
