"""ONNX's backend node tests through accelir, pinned: the number of cases, the number in
scope and, per path, the exact list of in-scope cases that fail
(tests/data/onnx_conformance_expected.txt).  A case that starts failing fails the test; so
does one that starts passing, with a message asking to take it off the list, so the numbers
the README quotes stay true."""

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


@pytest.fixture(scope="module")
def cases():
    return conf.load_cases()


@pytest.fixture(scope="module")
def scopes(cases):
    return {c.name: conf.scope_of(c) for c in cases}


def check_against_list(results: list[conf.CaseResult], path: str) -> None:
    """Failures must be exactly the pinned ones: new failures and new passes both fail, each
    with what to do."""
    _, pinned = _expected()
    status = {r.name: r.status[path] for r in results if r.scope == "in"}
    failing = {n for n, s in status.items() if s != "pass"}
    new = sorted(failing - pinned[path])
    fixed = sorted(pinned[path] - failing)
    assert not new, f"{path}: {len(new)} case(s) newly failing:\n" + "\n".join(f"{n}: {status[n]}" for n in new)
    assert not fixed, (f"{path}: {fixed} now pass: take them off {EXPECTED_FILE} (the README's numbers come "
                       "from it; `python -m accelir.frontends.onnx.conformance interpreter onnxruntime "
                       "--expected` prints the new list)")
    print(f"\n{path}: {len(status) - len(failing)}/{len(status)} in scope pass")
    counts, _ = _expected()
    specialised = sorted(r.name for r in results if r.scope == "in" and path in r.specialised_on
                         and r.status[path] == "pass")
    assert len(specialised) == counts[f"specialised_{path}"], (
        f"{path}: {len(specialised)} passing cases need their shape-like inputs bound, {EXPECTED_FILE} pins "
        f"{counts[f'specialised_{path}']}: update it if that is intended; now: {specialised[:20]}")


def test_counts_are_pinned(cases, scopes):
    counts, _ = _expected()
    inscope = sum(s == "in" for s in scopes.values())
    assert (len(cases), inscope) == (counts["total"], counts["in_scope"]), (
        f"{len(cases)} cases, {inscope} in scope; {EXPECTED_FILE} pins {counts['total']} and "
        f"{counts['in_scope']}: a scope rule or the onnx version changed; update the file if that is intended")


def test_scope_is_explicit(scopes):
    assert scopes["test_abs"] == "in" and scopes["test_add"] == "in"
    assert scopes["test_string_split_basic"] == OUT_OF_SCOPE["StringSplit"]
    # bfloat16 data comes as TensorProtos from the case generators: tensors, not sequences
    assert scopes["test_cast_FLOAT_to_BFLOAT16"] == "in"
    assert scopes["test_castlike_BFLOAT16_to_FLOAT_expanded"] == "in"
    assert scopes["test_cast_FLOAT_to_FLOAT8E4M3FN"] == "dtype outside the IR"
    assert scopes["test_sequence_insert_at_back"] == "sequence / optional types"


def test_interpreter_path_matches_pinned_failures(cases):
    check_against_list([conf.run_case(c, ["interpreter"]) for c in cases], "interpreter")


def test_onnxruntime_path_matches_pinned_failures(cases):
    check_against_list([conf.run_case(c, ["onnxruntime"]) for c in cases], "onnxruntime")


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
    assert ": 6\nout of scope: 3\n      2  string tensors\n      1  random numbers\nin scope: 3\n" in text
    assert ("interpreter: 2/3 in scope pass (66.67%); 2/6 of all node cases (33.33%); 1 as they come, "
            "1 only after specialisation") in text
    assert conf.expected_lines(summary, ["interpreter"]) == ["total 6", "in_scope 3", "specialised_interpreter 1",
                                                             "interpreter test_b"]
