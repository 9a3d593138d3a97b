"""The default pipelines, pinned: the pass list of every level and target, in order, and the
rules each target switches off.  A change here changes what ``optimize`` does to every model."""

from __future__ import annotations

import pytest

from accelir.passes import RulePass, pass_name, pipeline

_CLEANUP = ["dce", "fold_constants", "cse", "simplify"]
_FUSION = ["fuse_gelu", "fuse_silu", "fuse_softmax", "fuse_layer_norm", "fuse_rms_norm", "fuse_skip_norm",
           "fuse_attention", "fuse_decode_attention", "fuse_rotary", "fuse_linear", "fuse_parallel_linear",
           "fuse_conv_bn", "fuse_conv_act"]

# XLA keeps decode attention over concat(past, new): its generation path writes the cache in place there
_XLA_FUSION = [p for p in _FUSION if p != "fuse_decode_attention"]

EXPECTED = {
    (0, None): [], (0, "onnxruntime"): [], (0, "xla"): [],
    (1, None): _CLEANUP, (1, "onnxruntime"): _CLEANUP, (1, "xla"): _CLEANUP,
    (2, None): _CLEANUP + _FUSION, (2, "onnxruntime"): _CLEANUP + _FUSION, (2, "xla"): _CLEANUP + _XLA_FUSION,
    (3, None): _CLEANUP + _FUSION, (3, "onnxruntime"): _CLEANUP + _FUSION,
    (3, "xla"): _CLEANUP + _XLA_FUSION + ["fuse_elementwise"],
}


@pytest.mark.parametrize("level,target", sorted(EXPECTED, key=str))
def test_pipeline_order_is_pinned(level, target):
    assert [pass_name(p) for p in pipeline(level, target)] == EXPECTED[level, target]


@pytest.mark.parametrize("level", [2, 3])
def test_only_onnxruntime_vetoes_the_conv_batch_norm_fold(level):
    def vetoes(target):
        return {pass_name(p): set(p.veto) for p in pipeline(level, target) if isinstance(p, RulePass) and p.veto}

    assert vetoes("onnxruntime") == {"fuse_conv_bn": {"conv_batch_norm"}}
    assert vetoes("xla") == {} and vetoes(None) == {}


def test_bad_level_and_target_are_refused():
    with pytest.raises(ValueError, match="level must be 0, 1, 2 or 3"):
        pipeline(4)
    with pytest.raises(ValueError, match="unknown target 'tpu'"):
        pipeline(2, "tpu")
