"""ONNX's backend test cases (the four families the onnx wheel ships) through accelir, pinned:
the number of cases and of those in scope, per family and in all, onnxruntime alone's passes
and, per path, the exact list of in-scope cases that fail
(tests/data/onnx_conformance_expected.txt).  A case that starts failing fails the test; so
does one that starts passing, with a message asking to take it off the list, so the numbers
the README quotes stay true.  The fast suite runs the interpreter path on every case and the
onnxruntime path on a fixed part (``ORT_PART``); ``-m slow`` runs the onnxruntime path and
onnxruntime alone on all of them."""

from __future__ import annotations

import os

import pytest

from accelir.frontends.onnx import conformance as conf
from accelir.frontends.onnx import OUT_OF_SCOPE

EXPECTED_FILE = os.path.join(os.path.dirname(__file__), "data", "onnx_conformance_expected.txt")


def _expected() -> tuple[dict[str, int], dict[str, set[str]]]:
    counts: dict[str, int] = {}
    failing: dict[str, set[str]] = {p: set() for p in conf.PATHS}
    with open(EXPECTED_FILE) as f:
        for ln in f:
            if not ln.strip() or ln.startswith("#"):
                continue
            key, value = ln.split()
            if key in conf.PATHS:
                failing[key].add(value)
            else:
                counts[key] = int(value)
    return counts, failing


# the onnxruntime path's part in the fast suite: every case of the model families and every
# ORT_STRIDE-th node case in name order (a fixed part, so its failures are the pinned ones in it)
ORT_STRIDE = 2


def ort_part(cases: list[conf.NodeCase]) -> list[conf.NodeCase]:
    node = sorted((c for c in cases if c.family == "node"), key=lambda c: c.name)
    return node[::ORT_STRIDE] + [c for c in cases if c.family != "node"]


@pytest.fixture(scope="module")
def cases():
    return conf.load_cases()


@pytest.fixture(scope="module")
def scopes(cases):
    return {c.name: conf.scope_of(c) for c in cases}


def check_against_list(results: list[conf.CaseResult], path: str, whole: bool = True) -> None:
    """Failures must be exactly the pinned ones (those among ``results`` unless ``whole``): new
    failures and new passes both fail, each with what to do."""
    _, pinned = _expected()
    status = {r.name: r.status[path] for r in results if r.scope == "in"}
    failing = {n for n, s in status.items() if s != "pass"}
    new = sorted(failing - pinned[path])
    fixed = sorted((pinned[path] if whole else pinned[path] & set(status)) - failing)
    assert not new, f"{path}: {len(new)} case(s) newly failing:\n" + "\n".join(f"{n}: {status[n]}" for n in new)
    assert not fixed, (f"{path}: {fixed} now pass: take them off {EXPECTED_FILE} (the README's numbers come "
                       "from it; `python -m accelir.frontends.onnx.conformance interpreter onnxruntime "
                       "--expected` prints the new list)")
    print(f"\n{path}: {len(status) - len(failing)}/{len(status)} in scope pass")
    if not whole:
        return
    counts, _ = _expected()
    specialised = sorted(r.name for r in results if r.scope == "in" and path in r.specialised_on
                         and r.status[path] == "pass")
    assert len(specialised) == counts[f"specialised_{path}"], (
        f"{path}: {len(specialised)} passing cases need their shape-like inputs bound, {EXPECTED_FILE} pins "
        f"{counts[f'specialised_{path}']}: update it if that is intended; now: {specialised[:20]}")


def test_counts_are_pinned(cases, scopes):
    counts, _ = _expected()
    got = {"total": len(cases), "in_scope": sum(s == "in" for s in scopes.values())}
    for f in conf.FAMILIES:
        got[f"total_{f}"] = sum(c.family == f for c in cases)
        got[f"in_scope_{f}"] = sum(c.family == f and scopes[c.name] == "in" for c in cases)
    pinned = {k: counts.get(k) for k in got}
    assert got == pinned, (f"cases and in-scope cases {got}; {EXPECTED_FILE} pins {pinned}: a scope rule or the "
                           "onnx version changed; update the file if that is intended")
    assert got["total"] == sum(got[f"total_{f}"] for f in conf.FAMILIES)


def test_scope_is_explicit(scopes):
    assert scopes["test_abs"] == "in" and scopes["test_add"] == "in"
    assert scopes["test_string_split_basic"] == OUT_OF_SCOPE["StringSplit"]
    # bfloat16 data comes as TensorProtos from the case generators: tensors, not sequences
    assert scopes["test_cast_FLOAT_to_BFLOAT16"] == "in"
    assert scopes["test_castlike_BFLOAT16_to_FLOAT_expanded"] == "in"
    assert scopes["test_cast_FLOAT_to_FLOAT8E4M3FN"] == "dtype outside the IR"
    # a sequence as a graph input or output stays out; one inside the graph, of a static length, is unrolled
    assert scopes["test_sequence_insert_at_back"] == "sequence / optional types"
    assert scopes["test_sequence_model1"] == "in"
    # a sequence carried inside (a Loop body's input and output) is in scope
    from onnx import TensorProto, helper
    f32, i64, b = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
    seq, vi = helper.make_tensor_sequence_value_info, helper.make_tensor_value_info
    body = helper.make_graph([helper.make_node("SequenceInsert", ["s", "x"], ["s2"]),
                              helper.make_node("Identity", ["c"], ["c2"])], "body",
                             [vi("i", i64, []), vi("c", b, []), seq("s", f32, None)],
                             [vi("c2", b, []), seq("s2", f32, None)])
    g = helper.make_graph([helper.make_node("SequenceEmpty", [], ["e"]),
                           helper.make_node("Loop", ["n", "", "e"], ["out"], body=body),
                           helper.make_node("ConcatFromSequence", ["out"], ["y"], axis=0)], "g",
                          [vi("x", f32, [2])], [vi("y", f32, None)], [helper.make_tensor("n", i64, [], [2])])
    assert conf.scope_of(conf.NodeCase("test_loop_carrying_a_sequence", helper.make_model(g), [])) == "in"
    # the model families count too
    assert scopes["test_Conv2d"] == "in" and scopes["test_operator_add_broadcast"] == "in"


def test_interpreter_path_matches_pinned_failures(cases):
    check_against_list([conf.run_case(c, ["interpreter"]) for c in cases], "interpreter")


def test_onnxruntime_path_matches_pinned_failures_on_its_part(cases):
    check_against_list([conf.run_case(c, ["onnxruntime"]) for c in ort_part(cases)], "onnxruntime", whole=False)


@pytest.mark.slow
def test_onnxruntime_path_and_onnxruntime_alone_match_the_pinned_figures(cases):
    results = [conf.run_case(c, ["onnxruntime", conf.ALONE]) for c in cases]
    check_against_list(results, "onnxruntime")
    counts, _ = _expected()
    summary = conf.summarize(results, ["onnxruntime", conf.ALONE])
    assert summary[conf.ALONE]["passed"] == counts[conf.ALONE], (
        f"onnxruntime alone passes {summary[conf.ALONE]['passed']} cases, {EXPECTED_FILE} pins {counts[conf.ALONE]}")
    # the target: accelir passes, as they come, at least 95% of what onnxruntime alone passes
    assert summary["onnxruntime"]["of_alone"] >= 0.95 * summary[conf.ALONE]["passed"]


def test_onnxruntime_alone_runs_the_original_model():
    """The peer's figure: the original model in onnxruntime, on cases out of accelir's scope too."""
    case = conf.load_cases(["test_sequence_insert_at_back", "test_AvgPool1d", "test_abs"])
    res = {c.name: conf.run_case(c, [conf.ALONE]) for c in case}
    assert res["test_sequence_insert_at_back"].scope != "in"
    assert res["test_sequence_insert_at_back"].status == {conf.ALONE: "pass"}  # sequence outputs compared as lists
    assert res["test_abs"].status == {conf.ALONE: "pass"}
    assert "AveragePool(1)" in res["test_AvgPool1d"].status[conf.ALONE]  # opset 1 AveragePool: no kernel


def test_check_against_list_catches_both_directions():
    """The check itself: a pinned failure that passes and a new failure are both reported."""
    _, pinned = _expected()
    stuck = sorted(pinned["interpreter"])[0]
    fixed = [conf.CaseResult(stuck, "in", {"interpreter": "pass"})]
    with pytest.raises(AssertionError, match="now pass: take them off"):
        check_against_list(fixed, "interpreter")
    broken = [conf.CaseResult("test_abs", "in", {"interpreter": "mismatch: output 0 differs"})]
    with pytest.raises(AssertionError, match=r"newly failing:\s+test_abs: mismatch"):
        check_against_list(broken, "interpreter")


def test_report_counts_what_is_left_out():
    results = [conf.CaseResult("test_a", "in", {"interpreter": "pass"}, True, {"interpreter"}),
               conf.CaseResult("test_b", "in", {"interpreter": "error: x"}, True, {"interpreter"}),
               conf.CaseResult("test_f", "in", {"interpreter": "pass"}),
               conf.CaseResult("test_c", "string tensors"), conf.CaseResult("test_d", "string tensors"),
               conf.CaseResult("test_e", "random numbers")]
    summary = conf.summarize(results, ["interpreter"])
    assert summary["out_of_scope"] == {"string tensors": 2, "random numbers": 1}
    assert summary["interpreter"]["passed_specialised"] == 1
    text = conf.report(summary, ["interpreter"])
    assert (": 6 (node 6; the `light` models stay out: they ship without inputs)\nout of scope: 3\n"
            "      2  string tensors\n      1  random numbers\nin scope: 3\n") in text
    assert ("interpreter: 2/3 in scope pass (66.67%); 2/6 of all cases (33.33%); 1 as they come, "
            "1 only after specialisation") in text
    assert conf.expected_lines(summary, ["interpreter"]) == [
        "total 6", "in_scope 3", "total_node 6", "in_scope_node 3", "specialised_interpreter 1", "interpreter test_b"]


def test_report_gives_families_and_the_ratio_to_onnxruntime_alone():
    alone, ours = conf.ALONE, "onnxruntime"
    results = [conf.CaseResult("test_a", "in", {ours: "pass", alone: "pass"}),
               conf.CaseResult("test_b", "in", {ours: "pass", alone: "error: no kernel"}, family="simple"),
               conf.CaseResult("test_c", "in", {ours: "pass", alone: "pass"}, True, {ours}, family="simple"),
               conf.CaseResult("test_d", "in", {ours: "error: x", alone: "pass"}, family="simple"),
               conf.CaseResult("test_e", "string tensors", {alone: "pass"}, family="pytorch-operator")]
    summary = conf.summarize(results, [ours, alone])
    assert summary[alone]["passed"] == 4 and summary[ours]["as_they_come"] == 2
    # test_c passes only specialised and test_b is not onnxruntime's: one of its four passes here too
    assert summary[ours]["of_alone"] == 1
    assert summary["families"]["simple"][ours]["passed"] == 2 and summary["families"]["simple"]["total"] == 3
    text = conf.report(summary, [ours, alone])
    assert "(node 1, simple 3, pytorch-operator 1; the `light` models stay out" in text
    assert f"{alone} (the original model, as it comes): 4/5 of all cases (80.00%)" in text
    assert "onnxruntime 2/4 (50.00%; 1 of onnxruntime's 4 pass here, 25.00%)" in text
    assert ("\n  simple                3         3                                       2 = 1 + 1"
            "                        2\n") in text
    assert conf.expected_lines(summary, [ours, alone]) == [
        "total 5", "in_scope 4", "total_node 1", "in_scope_node 1", "total_simple 3", "in_scope_simple 3",
        "total_pytorch-operator 1", "in_scope_pytorch-operator 0", "specialised_onnxruntime 1", f"{alone} 4",
        "onnxruntime test_d"]
