"""bisect: a deliberately wrong pass is caught by check_numerics, then found down to its single
bad rewrite, and the reproducer replays it in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import accelir
from accelir.errors import AccelirError, NumericMismatchError
from accelir.passes import Const, P, Rule, RulePass, Var, cse, dce, fold_constants, rewrite_limit, simplify

X = Var("x")

# x * 2 -> x + x is right; exp(log(x)) -> x is wrong for x <= 0 (log gives NaN there)
SLOPPY = RulePass("sloppy", (Rule("twice", P.mul(X, Const(2.0)), lambda m, b: b.op("add", m["x"], m["x"])),
                             Rule("exp_log", P.exp(P.log(X)), lambda m, b: m["x"])))


def _graph() -> accelir.Graph:
    g = accelir.Graph()
    x = g.add_input(accelir.TensorType(accelir.DType.f32, (8,)), "x")
    y = g.add_input(accelir.TensorType(accelir.DType.f32, (8,)), "y")
    two = g.const(np.float32(2.0))
    v = x
    for _ in range(6):
        v = g.apply("mul", g.apply("add", v, y), two)
    v = g.apply("mul", g.apply("exp", g.apply("log", y)), v)
    for _ in range(5):
        v = g.apply("mul", g.apply("add", v, y), two)
    g.set_outputs([v])
    return g


def _inputs():
    rng = np.random.default_rng(0)
    return [rng.standard_normal(8).astype(np.float32), rng.standard_normal(8).astype(np.float32)]


PIPELINE = [dce, fold_constants, cse, simplify, SLOPPY]


def _exp_log_position() -> int:
    g = _graph()
    for p in PIPELINE[:4]:
        p(g)
    with rewrite_limit(10 ** 9) as budget:
        SLOPPY(g)
        return next(i for i, what in enumerate(budget.log, 1) if "exp_log" in what)


def test_check_numerics_catches_the_wrong_pass():
    with pytest.raises(NumericMismatchError) as info:
        accelir.PassManager(PIPELINE, check_numerics=_inputs()).run(_graph())
    assert info.value.pass_name == "sloppy"
    assert "NaN" in str(info.value)


def test_bisect_finds_the_single_bad_rewrite(tmp_path):
    g = _graph()
    before = str(g)
    k = _exp_log_position()
    assert k > 1  # correct rewrites run before the bad one
    res = accelir.bisect(g, PIPELINE, inputs=_inputs(), out_dir=tmp_path / "repro")
    assert str(g) == before
    assert res.found and res.pass_name == "sloppy" and res.invocation == 5 and res.iteration == 1
    assert res.first_bad_rewrite == k and res.rewrites == 12
    assert res.rewrite.startswith("sloppy: exp_log at node 'exp'")
    assert "rewrite %d of 12" % k in str(res)

    repro = tmp_path / "repro"
    assert sorted(os.listdir(repro)) == ["before.air", "expected_000.npy", "input_000.npy", "input_001.npy",
                                         "pipeline.json", "replay.py"]
    info = json.loads((repro / "pipeline.json").read_text())
    assert [p["name"] for p in info["passes"]] == ["dce", "fold_constants", "cse", "simplify", "sloppy"]
    assert info["first_bad_limit"] == k and info["last_good_limit"] == k - 1
    assert accelir.load(repro / "before.air").op_histogram()["log"] == 1

    run = subprocess.run([sys.executable, str(repro / "replay.py")], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    assert f"pass 'sloppy', rewrite {k}: sloppy: exp_log" in run.stdout
    assert "last good: outputs match" in run.stdout
    assert "first bad: output 0 differs: NaN" in run.stdout
    assert "-  %" in run.stdout and "= log(%y)" in run.stdout


def test_bisect_with_a_structural_check():
    res = accelir.bisect(_graph(), PIPELINE, check=lambda g: "log" in g.op_histogram())
    assert res.pass_name == "sloppy" and res.first_bad_rewrite == _exp_log_position()


def test_bisect_reports_nothing_when_every_pass_is_fine():
    res = accelir.bisect(_graph(), [dce, fold_constants, cse, simplify], inputs=_inputs())
    assert not res.found and str(res) == "bisect: the check passes after every pass"


def test_bisect_finds_a_pass_that_raises():
    def crash(graph):
        raise ValueError("broken")

    res = accelir.bisect(_graph(), [simplify, crash], check=lambda g: True)
    assert res.pass_name == "crash" and res.first_bad_rewrite == 0
    assert "ValueError: broken" in res.reason


def test_bisect_refuses_a_check_that_fails_on_the_input():
    with pytest.raises(AccelirError, match="already fails on the input graph"):
        accelir.bisect(_graph(), PIPELINE, check=lambda g: False)


def test_bisect_finds_a_wrong_pass_that_says_it_changed_nothing():
    def quiet_sloppy(graph):
        SLOPPY(graph)
        return False

    res = accelir.bisect(_graph(), PIPELINE[:4] + [quiet_sloppy], inputs=_inputs())
    assert res.pass_name == "quiet_sloppy" and res.first_bad_rewrite == _exp_log_position()


# ----- the reproducer directory keeps what it holds ----------------------------------------

def _calls(counter):
    def counted(graph):
        counter.append(1)
        return SLOPPY(graph)
    counted.__name__ = "sloppy"
    return counted


@pytest.mark.parametrize("overwrite", [False, True])
def test_bisect_refuses_an_out_dir_with_the_users_files_before_searching(tmp_path, overwrite):
    (tmp_path / "data.npy").write_bytes(b"mine")
    calls = []
    with pytest.raises(AccelirError, match=r"bisect out_dir '.*' holds files accelir did not write \(data.npy\)"):
        accelir.bisect(_graph(), PIPELINE[:4] + [_calls(calls)], inputs=_inputs(), out_dir=tmp_path,
                       overwrite=overwrite)
    assert calls == [] and os.listdir(tmp_path) == ["data.npy"] and (tmp_path / "data.npy").read_bytes() == b"mine"


def test_bisect_replaces_an_earlier_reproducer_only_when_asked(tmp_path):
    repro = tmp_path / "repro"
    accelir.bisect(_graph(), PIPELINE, inputs=_inputs(), out_dir=repro)
    (repro / "input_002.npy").write_bytes(b"stale")  # as if an earlier run had had three inputs
    with pytest.raises(AccelirError, match="holds the files of an earlier run .*pass overwrite=True"):
        accelir.bisect(_graph(), PIPELINE, inputs=_inputs(), out_dir=repro)
    assert (repro / "input_002.npy").read_bytes() == b"stale"
    res = accelir.bisect(_graph(), PIPELINE, inputs=_inputs(), out_dir=repro, overwrite=True)
    assert res.found and sorted(os.listdir(repro)) == ["before.air", "expected_000.npy", "input_000.npy",
                                                       "input_001.npy", "pipeline.json", "replay.py"]


def test_cli_bisect_overwrite_flag(tmp_path, capsys):
    from accelir.cli import main
    air = tmp_path / "m.air"
    _graph().save(str(air))
    repro = tmp_path / "repro"
    repro.mkdir()
    (repro / "pipeline.json").write_text("{}")
    assert main(["bisect", str(air), "--passes", "dce,cse", "-o", str(repro)]) == 1
    assert "holds the files of an earlier run (pipeline.json)" in capsys.readouterr().err
    assert main(["bisect", str(air), "--passes", "dce,cse", "-o", str(repro), "--overwrite"]) == 0
    assert "the check passes after every pass" in capsys.readouterr().out
    assert os.listdir(repro) == []


USER_SCRIPT = '''
import sys

import numpy as np

import accelir

GRAPH = """graph main(%x: f32[2,3]) -> (f32[2,3]) {
  %0 = tanh(%x) : f32[2,3]
  %1 = relu(%0) : f32[2,3]
  return %1
}
"""


def relu_to_neg(graph):
    """A wrong pass of the user's own: relu(x) -> neg(x)."""
    changed = False
    for n in list(graph.nodes):
        if n.op == "relu":
            n.outputs[0].replace_all_uses_with(graph.builder(before=n).op("neg", n.inputs[0]))
            graph.remove(n)
            changed = True
    return changed


def nested():
    def hidden(graph):
        return relu_to_neg(graph)
    return hidden


if __name__ == "__main__":
    print("main ran")
    p = relu_to_neg if sys.argv[1] == "top" else nested()
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    print(accelir.bisect(accelir.parse(GRAPH), [p], inputs=[x], out_dir=sys.argv[2]))
'''


def test_replay_reruns_a_pass_defined_in_the_users_script(tmp_path):
    script = tmp_path / "my_passes.py"
    script.write_text(USER_SCRIPT)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)

    made = run(str(script), "top", "repro")
    assert made.returncode == 0, made.stderr
    assert "bisect: pass 'relu_to_neg'" in made.stdout and "cannot rerun" not in made.stdout
    info = json.loads((tmp_path / "repro" / "pipeline.json").read_text())
    assert info["failing_pass"] == {"name": "relu_to_neg", "import": "__main__:relu_to_neg", "file": str(script)}
    replayed = subprocess.run([sys.executable, str(tmp_path / "repro" / "replay.py")], capture_output=True, text=True,
                              timeout=120)  # from another directory: the script is found by its file
    assert replayed.returncode == 1, replayed.stderr
    assert "main ran" not in replayed.stdout  # the script's main block does not run again
    assert "first bad: output 0 differs" in replayed.stdout
    # a pass defined inside a function cannot be found again: bisect and replay.py say so
    made = run(str(script), "nested", "repro2")
    assert ("replay.py cannot rerun pass 'hidden': nested.<locals>.hidden is defined inside a function; define it at "
            "module level or register it") in made.stdout
    replayed = run(str(tmp_path / "repro2" / "replay.py"))
    assert replayed.returncode == 1 and replayed.stderr.strip().splitlines() == [
        "replay: pass 'hidden' cannot be replayed: nested.<locals>.hidden is defined inside a function; define it at "
        "module level or register it with accelir.passes.register_pass"]


def test_replay_reports_a_source_file_that_no_longer_loads(tmp_path):
    from accelir.bisect import resolve_pass

    script = tmp_path / "broken_passes.py"
    script.write_text("def relu_to_neg(graph:\n    return False\n")  # edited since the bisect: a syntax error
    ref = {"name": "relu_to_neg", "import": "__main__:relu_to_neg", "file": str(script)}
    with pytest.raises(accelir.AccelirError, match="cannot load the pass's source file .*SyntaxError"):
        resolve_pass(ref)
    assert "accelir_replay_broken_passes" not in sys.modules
