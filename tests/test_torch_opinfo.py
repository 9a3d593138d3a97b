"""Conformance of the torch frontend against torch's OpInfo database.

Every OpInfo sample (float32, CPU) of an op the aten rule table claims is captured
with ``torch.export`` + ``capture_torch``, run in the interpreter and compared with
eager torch.  The per-op pass rate is printed and checked against the rates
recorded in ``tests/data/torch_opinfo_pass_rates.json``; a drop is a regression, and so
is a recorded op missing from the run.  Samples that eager torch cannot run or that
``torch.export`` itself cannot export (a ``CaptureError``) are skipped, not counted;
every other exception (from a rule, the interpreter or the comparison) and every wrong
result counts as a failed sample.

Record new rates with ``ACCELIR_RECORD_OPINFO=1 pytest tests/test_torch_opinfo.py``.
The default run takes the first few samples per op; ``-m slow`` runs all of them.
"""

from __future__ import annotations

import json
import os
import pathlib
import warnings

import numpy as np
import pytest
import torch
import torch.utils._pytree as pytree

pytest.importorskip("expecttest")  # torch.testing._internal needs it

from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402

from accelir import run_graph  # noqa: E402
from accelir.errors import AccelirError, CaptureError  # noqa: E402
from accelir.frontends.torch import capture_torch  # noqa: E402
from accelir.frontends.torch.context import RULES  # noqa: E402

RATES = pathlib.Path(__file__).parent / "data" / "torch_opinfo_pass_rates.json"
FAST_SAMPLES = 2
# random or uninitialised results cannot be compared
NONDETERMINISTIC = ("empty", "dropout", "new_empty", "empty_like", "empty_strided", "new_empty_strided")


def claimed_ops() -> list:
    out = []
    for op in op_db:
        if "." in op.name and not op.name.startswith("nn.functional."):
            continue  # masked.*, sparse.*, linalg.*: other entry points
        aten = (op.aten_name or op.name).split(".")[-1]
        if aten in RULES and not any(k in op.name for k in NONDETERMINISTIC):
            out.append(op)
    return out


class _Call(torch.nn.Module):
    """op(*args, **kwargs) with the tensor leaves as the module's inputs."""

    def __init__(self, op, structure, spec, tensor_slots):
        super().__init__()
        self.op, self.structure, self.spec, self.slots = op, structure, spec, tensor_slots

    def forward(self, *tensors):
        leaves = list(self.structure)
        for slot, t in zip(self.slots, tensors):
            leaves[slot] = t
        inp, args, kwargs = pytree.tree_unflatten(leaves, self.spec)
        return self.op(inp, *args, **kwargs)


def _close(got: np.ndarray, want: torch.Tensor) -> bool:
    want = want.detach()
    if tuple(got.shape) != tuple(want.shape):
        return False
    w = want.to(torch.float64).numpy() if want.dtype.is_floating_point else want.numpy()
    g = got.astype(np.float64) if want.dtype.is_floating_point else got
    if not want.dtype.is_floating_point:
        return bool(np.array_equal(g, w))
    if not np.array_equal(np.isnan(g), np.isnan(w)):
        return False
    ok = ~np.isnan(w)
    if not ok.any():
        return True
    finite = ok & np.isfinite(w)
    if not np.array_equal(g[ok & ~np.isfinite(w)], w[ok & ~np.isfinite(w)]):
        return False
    scale = max(float(np.abs(w[finite]).max()) if finite.any() else 0.0, 1.0)
    return bool(np.all(np.abs(g[finite] - w[finite]) <= 1e-4 * scale + 1e-5))


def run_sample(op, sample) -> bool | None:
    """True / False: matched or not; None: eager torch cannot run the sample or torch.export cannot export it.

    Anything else that goes wrong is accelir's failure and counts as one: an AccelirError or any other
    exception from capture (a rule that crashes), a crash of the interpreter, a wrong result."""
    leaves, spec = pytree.tree_flatten((sample.input, tuple(sample.args), dict(sample.kwargs)))
    slots = [i for i, v in enumerate(leaves) if isinstance(v, torch.Tensor)]
    tensors = [leaves[i].detach() for i in slots]
    module = _Call(op.op, leaves, spec, slots)
    with torch.no_grad():
        try:
            want = module(*tensors)
        except Exception:
            return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = capture_torch(module, tuple(tensors))
    except CaptureError:  # torch.export itself cannot capture this sample: not a sample of accelir's
        return None
    except Exception:  # noqa: BLE001 - a rule that raises, clearly or not, fails the sample
        return False
    try:
        got = run_graph(graph, graph.meta["signature"].flatten(*tensors))
        want_leaves = [w for w in pytree.tree_leaves(want) if isinstance(w, torch.Tensor)]
        return len(got) == len(want_leaves) and all(_close(np.asarray(g), w) for g, w in zip(got, want_leaves))
    except Exception:  # noqa: BLE001 - a crash of the interpreter or of reading its outputs fails the sample
        return False


def pass_rates(max_samples: int | None) -> dict[str, list[int]]:
    torch.manual_seed(0)
    rates: dict[str, list[int]] = {}
    for op in claimed_ops():
        if torch.float32 not in op.supported_dtypes("cpu"):
            continue
        passed = total = 0
        for k, sample in enumerate(op.sample_inputs("cpu", torch.float32, requires_grad=False)):
            if max_samples is not None and k >= max_samples:
                break
            ok = run_sample(op, sample)
            if ok is None:
                continue
            total += 1
            passed += bool(ok)
        if total:
            key = f"{op.name}.{op.variant_test_name}" if op.variant_test_name else op.name
            rates[key] = [passed, total]
    return rates


def _report(rates: dict[str, list[int]]) -> float:
    passed = sum(p for p, _ in rates.values())
    total = sum(t for _, t in rates.values())
    print(f"\ntorch OpInfo conformance: {passed}/{total} samples ({passed / total:.1%}) over {len(rates)} ops")
    for name, (p, t) in sorted(rates.items()):
        if p < t:
            print(f"  {name:45s} {p}/{t}")
    return passed / total


def _check(rates: dict[str, list[int]], key: str) -> None:
    overall = _report(rates)
    if os.environ.get("ACCELIR_RECORD_OPINFO"):
        recorded = json.loads(RATES.read_text()) if RATES.exists() else {}
        recorded[key] = {"overall": overall, "ops": rates}
        RATES.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
        return
    recorded = json.loads(RATES.read_text())[key]
    missing = sorted(set(recorded["ops"]) - set(rates))
    assert not missing, ("OpInfo ops recorded but absent from this run (every sample skipped, or the op no "
                         "longer claimed): " + ", ".join(missing))
    regressions = [f"{name}: {rates[name][0]}/{rates[name][1]} < recorded {p}/{t}"
                   for name, (p, t) in recorded["ops"].items()
                   if rates[name][0] * t < p * rates[name][1]]
    assert not regressions, "OpInfo pass rate regressed:\n" + "\n".join(regressions)
    assert overall >= min(0.95, recorded["overall"]), (
        f"overall pass rate {overall:.1%} below {min(0.95, recorded['overall']):.1%}")


def test_opinfo_conformance_fast():
    _check(pass_rates(FAST_SAMPLES), "fast")


@pytest.mark.slow
def test_opinfo_conformance_all_samples():
    _check(pass_rates(None), "all")


def _op(name: str):
    return next(op for op in claimed_ops() if op.name == name and not op.variant_test_name)


def test_a_crashing_rule_fails_its_samples(monkeypatch):
    """A rule that raises a plain exception (not an AccelirError) fails the sample instead of dropping it."""
    def crash(*args, **kwargs):
        raise IndexError("a rule's own bug")
    monkeypatch.setitem(RULES, "abs", crash)
    op = _op("abs")
    sample = next(iter(op.sample_inputs("cpu", torch.float32, requires_grad=False)))
    assert run_sample(op, sample) is False


def test_a_wrong_result_fails_its_samples(monkeypatch):
    monkeypatch.setitem(RULES, "abs", RULES["neg"])
    op = _op("abs")
    sample = next(iter(op.sample_inputs("cpu", torch.float32, requires_grad=False)))
    assert run_sample(op, sample) is False


def test_a_recorded_op_missing_from_the_run_fails(monkeypatch):
    monkeypatch.delenv("ACCELIR_RECORD_OPINFO", raising=False)  # check, never record, these made-up rates
    recorded = json.loads(RATES.read_text())["fast"]["ops"]
    rates = {name: list(pt) for name, pt in recorded.items() if name != "abs"}
    with pytest.raises(AssertionError, match="absent from this run.*abs"):
        _check(rates, "fast")
