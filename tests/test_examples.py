"""Every example runs at its small default size and prints what it promises, so the examples cannot rot.

The examples run in this process (torch and jax are imported once for all of
them); ``custom_pass.py``, which registers a pass in the process-wide registry,
runs as a script in a subprocess, which also checks that examples run as scripts.
Full sizes are behind ``-m slow``.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")

CASES = {
    "quickstart": (["--repeats", "2"], ["max abs error vs eager torch", "after level-2 passes", "accelir -> xla",
                                        "gpt2.onnx", "gpt2.mlir", "gpt2.html", "time ratio: median / the median of torch eager"]),
    "flax_transformer": (["--repeats", "2"], ["max abs error vs jax.jit", "composites after passes: attention",
                                              "time ratio: median / the median of jax.jit"]),
    "debug_passes": ([], ["+++ ", "check_numerics caught it: pass 'fast_gelu'", "bisect: pass 'fast_gelu'",
                          "passes.html"]),
    "export": ([], [".onnx  read back and run", ".air   read back and run", "StableHLO ops"]),
}


def _run_main(name: str, args: list[str]) -> int:
    module = runpy.run_path(os.path.join(EXAMPLES, f"{name}.py"), run_name=f"example_{name}")
    return module["main"](args)


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_runs(name, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ACCELIR_FULL", raising=False)
    args, expected = CASES[name]
    if name != "flax_transformer":
        args = args + ["--out", str(tmp_path)]
    assert _run_main(name, args) == 0
    out = capsys.readouterr().out
    for text in expected:
        assert text in out, f"{name}: {text!r} missing from its output:\n{out}"


def test_custom_pass_runs_as_a_script():
    env = {k: v for k, v in os.environ.items() if k != "ACCELIR_FULL"}
    r = subprocess.run([sys.executable, os.path.join(EXAMPLES, "custom_pass.py")], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "not rewritten: div_to_mul: the divisor has a zero element" in r.stdout
    assert "divisions left in the captured model: 0" in r.stdout
    assert r.stdout.count("mul(%x, %0)") == 2  # once from the python pass, once from `accelir show --passes`


def test_every_example_is_tested_and_has_a_full_size_switch():
    names = sorted(f[:-3] for f in os.listdir(EXAMPLES) if f.endswith(".py") and not f.startswith("_"))
    assert names == sorted(list(CASES) + ["custom_pass"])
    for name in names:
        with open(os.path.join(EXAMPLES, f"{name}.py"), encoding="utf-8") as f:
            source = f.read()
        assert '"--full"' in source and "ACCELIR_FULL" in source, name
        assert 'if __name__ == "__main__":' in source, name


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_example_runs_full_size(name, tmp_path, capsys):
    args, expected = CASES[name]
    args = args + ["--full"] + ([] if name == "flax_transformer" else ["--out", str(tmp_path)])
    assert _run_main(name, args) == 0
    out = capsys.readouterr().out
    for text in expected:
        assert text in out


def test_debug_passes_runs_again_into_the_same_directory(tmp_path, capsys, monkeypatch):
    """Its dumps and reproducer replace their own files from the run before."""
    monkeypatch.delenv("ACCELIR_FULL", raising=False)
    for _ in range(2):
        assert _run_main("debug_passes", ["--out", str(tmp_path)]) == 0
    assert "bisect: pass 'fast_gelu'" in capsys.readouterr().out
