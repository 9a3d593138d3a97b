"""Keras 3 models through accelir, on Keras' jax and torch backends.

Keras reads its backend once per process, so the cases live in ``tests/keras_cases.py``
and run in one subprocess per backend (``KERAS_BACKEND`` set there, before keras is
imported); each case is a test here.  The oracle is ``model(x, training=False)`` on both
accelir backends, within the fp32 budget of ``accelir.accuracy`` (max_rel 1e-4).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
CASES = ["sequential", "functional_dict_outputs", "functional_list_outputs", "subclassed", "transformer_block",
         "mobilenet_v2_small", "backend_tensors_in_and_out", "variables_name_the_constants", "dynamic_batch",
         "keras_file", "keras_file_command_line", "keras_file_corrupt", "tensorflow_backend_refused"]
# cases that do not depend on the backend of the process running them: run once
ONCE = ["keras_file_in_a_process_that_never_imported_keras"]
SLOW_CASES = ["mobilenet_v2", "resnet50", "efficientnet_b0", "convnext_tiny"]
BACKENDS = ("jax", "torch")


def _run_cases(backend: str, names: list[str], timeout: float) -> dict[str, str | None]:
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, str(HERE / "keras_cases.py"), backend, *names], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", params=BACKENDS)
def fast_results(request):
    return request.param, _run_cases(request.param, CASES, timeout=600)


@pytest.mark.parametrize("case", CASES)
def test_keras_case(fast_results, case):
    backend, results = fast_results
    assert results[case] is None, f"{backend} backend: {results[case]}"


@pytest.mark.parametrize("case", ONCE)
def test_keras_case_once(case):
    results = _run_cases(BACKENDS[0], [case], timeout=600)
    assert results[case] is None, results[case]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", SLOW_CASES)
def test_keras_applications_full_size(backend, case):
    results = _run_cases(backend, [case], timeout=1800)
    assert results[case] is None, f"{backend} backend: {results[case]}"
