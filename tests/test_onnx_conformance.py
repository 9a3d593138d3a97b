"""ONNX's backend node tests through accelir: the pass rate of the tests in scope must
stay at or above the floor recorded in tests/data/onnx_conformance_floor.txt."""

from __future__ import annotations

import os

import pytest

from accelir.frontends import onnx_conformance as conf
from accelir.frontends.onnx_ops import OUT_OF_SCOPE

FLOOR_FILE = os.path.join(os.path.dirname(__file__), "data", "onnx_conformance_floor.txt")


def _floors() -> dict[str, float]:
    with open(FLOOR_FILE) as f:
        rows = [ln.split() for ln in f if ln.strip() and not ln.startswith("#")]
    return {path: float(rate) for path, rate in rows}


@pytest.fixture(scope="module")
def cases():
    return conf.load_cases()


def _report(results, path):
    summary = conf.summarize(results, [path])
    failures = [f"{r.name}: {r.status[path]}" for r in results if r.scope == "in" and r.status[path] != "pass"]
    print(f"\n{path}: {summary[path]['passed']}/{summary['in_scope']} in scope "
          f"({summary[path]['rate']:.1%}), out of scope {summary['out_of_scope']}")
    return summary, failures


def test_scope_is_explicit(cases):
    scopes = {c.name: conf.scope_of(c) for c in cases}
    assert len(cases) > 1000
    assert scopes["test_abs"] == "in" and scopes["test_add"] == "in"
    assert scopes["test_string_split_basic"] == OUT_OF_SCOPE["StringSplit"]
    # at least two thirds of ONNX's node tests count towards the rate
    assert sum(s == "in" for s in scopes.values()) > 2 * len(cases) // 3


def test_interpreter_path_meets_floor(cases):
    results = [conf.run_case(c, ["interpreter"]) for c in cases]
    summary, failures = _report(results, "interpreter")
    assert summary["interpreter"]["rate"] >= _floors()["interpreter"], "\n".join(failures)
    # the core ops must never regress, whatever the rate
    must = ["test_matmul_2d", "test_conv_with_strides_padding", "test_softmax_axis_1",
            "test_layer_normalization_4d_axis1",
            "test_gather_0", "test_reshape_negative_dim", "test_slice_neg_steps", "test_if", "test_scan9_sum",
            "test_lstm_with_peepholes", "test_gru_bidirectional", "test_einsum_batch_matmul", "test_dft_rfft",
            "test_qlinearmatmul_3D_int8_float16", "test_range_float_type_positive_delta_expanded"]
    by_name = {r.name: r for r in results}
    assert [n for n in must if by_name[n].status.get("interpreter") != "pass"] == []


def test_onnxruntime_path_sample(cases):
    inscope = [c for c in cases if conf.scope_of(c) == "in"][::10]
    results = [conf.run_case(c, ["onnxruntime"]) for c in inscope]
    summary, failures = _report(results, "onnxruntime")
    assert summary["onnxruntime"]["rate"] >= _floors()["onnxruntime"] - 0.05, "\n".join(failures)


@pytest.mark.slow
def test_onnxruntime_path_meets_floor(cases):
    results = [conf.run_case(c, ["onnxruntime"]) for c in cases]
    summary, failures = _report(results, "onnxruntime")
    assert summary["onnxruntime"]["rate"] >= _floors()["onnxruntime"], "\n".join(failures)
