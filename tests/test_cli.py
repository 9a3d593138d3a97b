"""Tests of the accelir command line: each command, its outputs, exit codes and error messages."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import accelir
from accelir.cli import DEFAULT_BACKEND, DEFAULT_LEVEL, build_parser, flat_arrays, main, random_inputs
from accelir.passes import PASSES, TARGETS, RulePass, pass_name, pipeline
from accelir.testing import onnxruntime_outputs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

AIR = """graph main(%x: f32[batch,4], %w: f32[4,3]) -> (f32[batch,3]) {
  %one = constant() {name="one", value=1.0} : f32[]
  %0 = matmul(%x, %w) : f32[batch,3]
  %1 = mul(%0, %one) : f32[batch,3]
  %2 = relu(%1) : f32[batch,3]
  %3 = tanh(%1) : f32[batch,3]
  return %2
}
"""

FACTORY = """
import torch


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 16)
        self.fc2 = torch.nn.Linear(16, 4)

    def forward(self, x):
        return torch.softmax(self.fc2(torch.relu(self.fc1(x))) * 1.0, dim=-1)


def make():
    torch.manual_seed(0)
    return MLP().eval(), (torch.randn(3, 8),)


def not_a_pair():
    return 42


def exits():
    import sys
    sys.exit(3)
"""

# A deliberately wrong pass, registered when the factory module is imported (subprocess tests only:
# the pass registry is process-wide).
WRONG_PASS = FACTORY + """
from accelir.passes import Op, Rule, RulePass, Var, register_pass

register_pass("relu_to_neg")(RulePass("relu_to_neg", (
    Rule("relu_to_neg", Op("relu", Var("x")), lambda m, b: b.op("neg", m["x"])),)))
"""


@pytest.fixture
def air(tmp_path):
    path = tmp_path / "m.air"
    path.write_text(AIR)
    return str(path)


@pytest.fixture
def factory(tmp_path):
    path = tmp_path / "model_factory.py"
    path.write_text(FACTORY)
    return str(path)


def _cli(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "accelir", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


# ----- show --------------------------------------------------------------------------

def test_show_prints_ir_that_parses_back(air, capsys):
    assert main(["show", air]) == 0
    out = capsys.readouterr().out
    assert out == accelir.print_graph(accelir.parse(AIR))


def test_show_after_level_prints_optimised_ir_and_report(air, capsys):
    assert main(["show", air, "--after-level", "1"]) == 0
    captured = capsys.readouterr()
    g = accelir.parse(captured.out)
    assert g.op_histogram() == {"matmul": 1, "relu": 1}
    assert "simplify" in captured.err and "nodes 5 -> 2" in captured.err


def test_show_dot_and_html_files(air, tmp_path, capsys):
    dot, page = tmp_path / "g.dot", tmp_path / "g.html"
    assert main(["show", air, "-o", str(dot)]) == 0
    assert dot.read_text().startswith('digraph "main"')
    assert main(["show", air, "--after-level", "2", "-o", str(page)]) == 0
    html = page.read_text()
    assert "<svg" in html and '<table class="report">' in html
    # the pass-by-pass section shows simplify removing the multiply by one
    assert re.search(r'<span class="del">-  %1 = mul\(%0, %one\)', html)
    assert main(["show", air, "-o", str(page)]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["show", air, "--format", "dot"]) == 0
    assert capsys.readouterr().out.startswith('digraph "main"')


def test_show_html_names_each_graph_as_the_dump_files(air, tmp_path):
    page, out, dumps = tmp_path / "g.html", tmp_path / "o.air", tmp_path / "dumps"
    assert main(["show", air, "--after-level", "2", "-o", str(page)]) == 0
    assert main(["optimize", air, "-o", str(out), "--level", "2", "--dump-dir", str(dumps)]) == 0
    names = sorted(p.name[:-4] for p in dumps.glob("*.air"))
    html = page.read_text()
    frames = json.loads(re.search(r'id="accelir-data">(.*?)</script>', html).group(1))["frames"]
    assert [f["label"] for f in frames] == names
    diffs = re.findall(r"<summary><b>([^<]+)</b>", html)
    assert diffs == names[1:]


# ----- optimize ----------------------------------------------------------------------

def test_optimize_air_to_air_with_dumps_and_diffs(air, tmp_path, capsys):
    out, dumps = tmp_path / "o.air", tmp_path / "dumps"
    rc = main(["optimize", air, "-o", str(out), "--level", "1", "--dump-dir", str(dumps), "--print-after", "changed",
               "--report"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "+++" in text and "-  %3 = tanh(%1)" in text
    assert re.search(r"wrote .*o\.air: 5 -> 2 nodes", text)
    assert accelir.load(str(out)).op_histogram() == {"matmul": 1, "relu": 1}
    names = sorted(os.listdir(dumps))
    assert names[0] == "000-input.air" and "report.txt" in names
    assert any(n.endswith("after-simplify.air") for n in names)


def test_optimize_factory_to_onnx_with_check(factory, tmp_path, capsys):
    import onnxruntime as ort
    import torch

    out = tmp_path / "mlp.onnx"
    assert main(["optimize", f"{factory}:make", "-o", str(out), "--check"]) == 0
    text = capsys.readouterr().out
    assert "check: 1 output(s) on onnxruntime match the original graph" in text
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).standard_normal((3, 8)).astype(np.float32)
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    namespace: dict = {}
    exec(compile(FACTORY, "factory", "exec"), namespace)
    model, _ = namespace["make"]()
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_optimize_onnx_in_onnx_out(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "one"], ["m"]), helper.make_node("Relu", ["m"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], [one])
    src = tmp_path / "in.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    out = tmp_path / "out.onnx"
    assert main(["optimize", str(src), "-o", str(out), "--check", "--dim", "n=5"]) == 0
    assert "check: 1 output(s) on onnxruntime match onnxruntime on the input file" in capsys.readouterr().out
    optimized = onnx.load(str(out))
    assert [n.op_type for n in optimized.graph.node] == ["Relu"]
    x = np.random.default_rng(0).standard_normal((7, 4)).astype(np.float32)
    got = onnxruntime_outputs(out, {"x": x})[0]
    np.testing.assert_array_equal(got, np.maximum(x, 0))


def _mul_relu_onnx(path) -> str:
    import onnx
    from onnx import TensorProto, helper

    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["m"]), helper.make_node("Relu", ["m"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], [two])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


def test_check_of_an_onnx_file_compares_with_onnxruntime_on_the_file(tmp_path, capsys, monkeypatch):
    from accelir.frontends.onnx import context as onnx_ops

    src = _mul_relu_onnx(tmp_path / "in.onnx")
    with monkeypatch.context() as patch:
        # an import that gets Relu wrong: the imported graph and the optimised one agree with each other
        patch.setitem(onnx_ops.RULES, "Relu", lambda ctx: [ctx.op("abs", ctx.input(0))])
        for backend in ("onnxruntime", "xla"):
            assert main(["optimize", src, "-o", str(tmp_path / f"bad-{backend}.onnx"), "--check",
                         "--backend", backend]) == 1
            line = _one_error_line(capsys.readouterr().err)
            assert (f"--check: output 0 of the optimised graph on {backend} differs from onnxruntime on the input "
                    "file on random inputs: ") in line
            assert "accelir's import of the file already differs" in line
            assert not (tmp_path / f"bad-{backend}.onnx").exists()
    assert main(["optimize", src, "-o", str(tmp_path / "out.onnx"), "--check"]) == 0
    assert "check: 1 output(s) on onnxruntime match onnxruntime on the input file" in capsys.readouterr().out


def test_check_of_an_onnx_file_points_at_a_wrong_pass(tmp_path, capsys, monkeypatch):
    from accelir.passes import Op, Rule, RulePass, Var, registry

    relu_to_neg = RulePass("relu_to_neg", (
        Rule("relu_to_neg", Op("relu", Var("x")), lambda m, b: b.op("neg", m["x"])),))
    monkeypatch.setitem(registry.PASSES, "relu_to_neg", registry.PassInfo("relu_to_neg", relu_to_neg))
    src = _mul_relu_onnx(tmp_path / "in.onnx")
    assert main(["optimize", src, "-o", str(tmp_path / "out.onnx"), "--check", "--passes", "relu_to_neg"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "differs from onnxruntime on the input file" in line and "use 'accelir bisect' to find the pass" in line


def test_optimize_to_stablehlo_and_hlo(air, tmp_path, capsys):
    mlir, hlo = tmp_path / "m.mlir", tmp_path / "m.hlo"
    assert main(["optimize", air, "-o", str(mlir), "--check"]) == 0
    assert "on xla" in capsys.readouterr().out
    assert "stablehlo." in mlir.read_text()
    assert main(["optimize", air, "-o", str(hlo)]) == 0
    assert "HloModule" in hlo.read_text()


# ----- errors and exit codes ---------------------------------------------------------

def test_errors_are_one_line_with_exit_code_1(air, factory, tmp_path, capsys):
    assert main(["show", str(tmp_path / "missing.air")]) == 1
    assert "missing.air: no such file" in _one_error_line(capsys.readouterr().err)
    assert main(["optimize", f"{factory}:not_a_pair", "-o", str(tmp_path / "x.air")]) == 1
    assert "must return (model, example_inputs)" in _one_error_line(capsys.readouterr().err)
    (tmp_path / "bad.air").write_text("graph main(%x: f32[2]) -> (f32[2]) {\n  %0 = nope(%x) : f32[2]\n")
    assert main(["show", str(tmp_path / "bad.air")]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("accelir show: error: ") and "--debug" in line
    assert main(["optimize", air, "-o", air]) == 1
    assert "exists" in _one_error_line(capsys.readouterr().err)


def test_a_factory_that_exits_is_an_error(factory, tmp_path, capsys):
    assert main(["optimize", f"{factory}:exits", "-o", str(tmp_path / "x.air")]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"accelir optimize: error: {factory}:exits() called sys.exit(3); a factory must return "
                           "(model, example_inputs)")
    assert not (tmp_path / "x.air").exists()


def test_debug_prints_the_traceback(tmp_path, capsys):
    (tmp_path / "bad.air").write_text("graph main(%x: f32[2]) -> (f32[2]) {\n  %0 = nope(%x) : f32[2]\n")
    assert main(["show", str(tmp_path / "bad.air"), "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ParseError" in err


def test_usage_errors_exit_2(air, capsys):
    assert main([]) == 2
    assert main(["optimize", air]) == 2  # no -o
    assert main(["show", air, "--format", "png"]) == 2
    assert main(["show", "model.pt"]) == 2
    assert "not an input" in capsys.readouterr().err
    assert main(["optimize", air, "-o", "x.air", "--passes", "dce,no_such_pass"]) == 2
    assert "no pass named 'no_such_pass'" in capsys.readouterr().err
    assert main(["optimize", air, "-o", "never-written.air", "--check", "--dim", "batch"]) == 2
    assert "expected NAME=VALUE" in capsys.readouterr().err
    assert main(["--version"]) == 0


# ----- help, the pass list and contradictory options -----------------------------------

def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_option_has_help_and_shows_its_default():
    parser = build_parser()
    commands = _commands(parser)
    assert {"optimize", "show", "bisect", "bench", "passes"} <= set(commands)
    for name, p in [("accelir", parser), *commands.items()]:
        page = " ".join(p.format_help().split())  # argparse wraps lines at spaces only
        for action in p._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            label = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help.strip(), f"{label} has no help"
            default = action.default
            if default is not None and default is not False and default != []:
                assert f"(default: {default})" in page, f"{label}: its default {default!r} is not in the help"
    level = " ".join(commands["optimize"].format_help().split())
    assert f"(default: {DEFAULT_LEVEL})" in level and f"else {DEFAULT_BACKEND})" in level


def _pipelines_printed(out: str) -> dict[tuple[str | None, int], list[str]]:
    """{(target, level): pass names} from the pipeline section of ``accelir passes``."""
    got: dict[tuple[str | None, int], list[str]] = {}
    target: str | None = None
    for line in out.split("\npipelines", 1)[1].splitlines()[1:]:
        header = re.fullmatch(r"  (?:no target|target (\w+) \(vetoes: (.*)\)):", line)
        if header:
            target = header.group(1)
            if target is not None:
                vetoes = set() if header.group(2) == "none" else set(header.group(2).split(", "))
                assert vetoes == set(TARGETS[target].vetoes), line
            continue
        level, names = re.fullmatch(r"    level (\d): (.*)", line).groups()
        got[(target, int(level))] = [] if names == "(no passes)" else names.split(", ")
    return got


def _user_pass(graph) -> bool:
    """Rewrite nothing, for the pass list.

    Only this first line is listed."""
    return False


def test_passes_lists_every_pass_with_its_doc_and_every_pipeline(capsys, monkeypatch):
    import importlib

    from accelir.passes import registry

    monkeypatch.setitem(registry.PASSES, "user_pass", registry.PassInfo("user_pass", _user_pass))
    monkeypatch.setitem(registry.PASSES, "user_rules", registry.PassInfo("user_rules", RulePass("user_rules", ())))
    assert main(["passes"]) == 0
    out = capsys.readouterr().out
    listed = dict(re.findall(r"^  (\w+) +(\S.*)$", out.split("\npipelines", 1)[0], re.M))
    assert set(listed) == set(PASSES)
    built_in = {pass_name(p) for t in (None, *TARGETS) for p in pipeline(3, t)}
    assert built_in <= set(PASSES)
    for name in built_in:  # other tests may register passes of their own
        module = importlib.import_module(f"accelir.passes.{name}")
        assert listed[name] == module.__doc__.strip().splitlines()[0], name
    assert listed["dce"].startswith("Dead-code elimination")
    assert listed["user_pass"] == "Rewrite nothing, for the pass list."
    assert listed["user_rules"] == "(no docstring)"  # not RulePass's own docstring
    expected = {(t, level): [pass_name(p) for p in pipeline(level, t)] for t in (None, *TARGETS) for level in range(4)}
    assert _pipelines_printed(out) == expected
    # the targets differ where the pipeline module says they do
    assert "fuse_elementwise" in expected[("xla", 3)] and "fuse_elementwise" not in expected[("onnxruntime", 3)]


@pytest.mark.parametrize("argv, options", [
    (["optimize", "{air}", "-o", "{out}", "--level", "2", "--passes", "dce"], ("--level", "--passes")),
    (["optimize", "{air}", "-o", "{out}", "--passes", "dce", "--level=1"], ("--level", "--passes")),
    (["bisect", "{air}", "--level", "1", "--passes", "dce", "-o", "{out}"], ("--level", "--passes")),
    (["bisect", "{air}", "--passes", "dce", "--target", "xla", "-o", "{out}"], ("--target", "--passes")),
    (["show", "{air}", "--after-level", "2", "--passes", "dce", "-o", "{out}"], ("--after-level", "--passes")),
    (["show", "{air}", "--passes", "dce", "--backend", "xla", "-o", "{out}"], ("--target", "--passes")),
    (["show", "{air}", "--target", "xla", "-o", "{out}"], ("--target", "--after-level")),
    (["optimize", "{air}", "-o", "{out}", "--rtol", "1e-2"], ("--rtol", "--check")),
])
def test_contradictory_options_are_one_line_usage_errors(air, tmp_path, capsys, argv, options):
    out = tmp_path / "out"
    assert main([a.format(air=air, out=out) for a in argv]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"accelir {argv[0]}: error: ") and all(o in line for o in options), line
    assert not out.exists()


def test_argparse_usage_errors_are_one_line_too(air, capsys):
    assert main(["optimize", air]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == ("accelir optimize: error: the following arguments are required: -o/--output "
                    "(see accelir optimize --help)")


def test_bisect_runs_the_pipeline_optimize_runs(tmp_path, capsys, monkeypatch):
    from accelir.passes import Op, Rule, Var
    from accelir.passes.pipeline import TARGET_PASSES

    air = str(tmp_path / "tanh_relu.air")
    (tmp_path / "tanh_relu.air").write_text(
        "graph main(%x: f32[2,3]) -> (f32[2,3]) {\n  %0 = tanh(%x) : f32[2,3]\n  %1 = relu(%0) : f32[2,3]\n"
        "  return %1\n}\n")

    relu_to_neg = RulePass("relu_to_neg", (
        Rule("relu_to_neg", Op("relu", Var("x")), lambda m, b: b.op("neg", m["x"])),))
    monkeypatch.setitem(TARGET_PASSES, "xla", (relu_to_neg,))  # a wrong pass only XLA's level 3 runs
    assert main(["optimize", air, "-o", str(tmp_path / "o.air"), "--level", "3", "--backend", "xla", "--check"]) == 1
    assert "--check: output 0 of the optimised graph on xla differs" in _one_error_line(capsys.readouterr().err)
    assert main(["bisect", air, "--level", "3", "--backend", "xla", "-o", str(tmp_path / "xla")]) == 0
    assert "bisect: pass 'relu_to_neg'" in capsys.readouterr().out
    assert main(["bisect", air, "--level", "3", "-o", str(tmp_path / "default")]) == 0  # onnxruntime's level 3
    assert "the check passes after every pass" in capsys.readouterr().out


# ----- factories and outputs that cannot work ---------------------------------------

SCRIPT = """
import argparse
import pathlib

CALLED = pathlib.Path(__file__).with_suffix(".called")


def main(argv=None):
    CALLED.touch()
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=1)
    parser.parse_args(argv)
    return 0


def needs_size(size):
    CALLED.touch()


def pair_of_ints():
    return 0, 1


def make():
    import torch
    CALLED.touch()
    return torch.nn.Linear(2, 2), (torch.ones(1, 2),)
"""


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "train.py"
    path.write_text(SCRIPT)
    return path


def test_a_script_main_is_refused_before_it_runs(script, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["optimize", f"{script}:main", "-o", str(out)]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert f"{script}:main is a script's entry point, not a factory" in line
    assert "must return (model, example_inputs) and take no arguments, e.g. def make():" in line
    assert not script.with_suffix(".called").exists() and not out.exists()
    assert main(["optimize", f"{script}:needs_size", "-o", str(out)]) == 1
    assert f"{script}:needs_size takes arguments (size); a factory must return" in _one_error_line(
        capsys.readouterr().err)
    assert not script.with_suffix(".called").exists()
    assert main(["show", f"{script}:pair_of_ints"]) == 1
    assert f"{script}:pair_of_ints() returned (int, int); a factory must return" in _one_error_line(
        capsys.readouterr().err)


@pytest.mark.parametrize("command", ["optimize", "show"])
def test_a_missing_output_directory_is_refused_before_capture(script, tmp_path, capsys, command):
    out = tmp_path / "no" / "such" / "m.onnx"
    assert main([command, f"{script}:make", "-o", str(out)]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert f"cannot write {out}: {out.parent} does not exist; create the directory first" in line
    assert not script.with_suffix(".called").exists()  # the factory never ran
    assert not (tmp_path / "no").exists()


def test_an_unknown_output_format_is_refused_before_capture(script, tmp_path, capsys):
    for name, shown in (("m.txt", "'.txt'"), ("m", "'without a suffix'")):
        assert main(["optimize", f"{script}:make", "-o", str(tmp_path / name)]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert f"unknown format {shown}; the suffix picks it: .onnx, .mlir, .hlo, .air, .dot, .html" in line
    assert not script.with_suffix(".called").exists()


# ----- show draws what optimize writes ---------------------------------------------------

def _conv_bn_onnx(path) -> str:
    """Conv -> BatchNormalization -> Relu: onnxruntime's target leaves the batch norm unfolded, XLA's folds it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {"w": rng.standard_normal((4, 3, 3, 3)), "b": rng.standard_normal(4),
               "scale": rng.standard_normal(4), "shift": rng.standard_normal(4),
               "mean": rng.standard_normal(4), "var": rng.uniform(0.5, 2.0, 4)}
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["n"]),
         helper.make_node("Relu", ["n"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(a.astype(np.float32), k) for k, a in weights.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


def test_show_after_level_draws_the_graph_optimize_writes(tmp_path, capsys):
    src = _conv_bn_onnx(tmp_path / "convbn.onnx")
    histograms = {}
    for target, extra in ((DEFAULT_BACKEND, []), ("xla", ["--target", "xla"])):
        assert main(["show", src, "--after-level", "2", *extra]) == 0
        text = capsys.readouterr().out
        assert text.splitlines()[0] == f"# convbn.onnx after level 2 for target {target}"
        written = tmp_path / f"{target}.air"
        backend = [] if target == DEFAULT_BACKEND else ["--backend", target]
        assert main(["optimize", src, "-o", str(written), *backend]) == 0
        capsys.readouterr()
        assert text.split("\n", 1)[1] == accelir.print_graph(accelir.load(str(written))), target
        histograms[target] = accelir.load(str(written)).op_histogram()
    assert histograms[DEFAULT_BACKEND] != histograms["xla"]  # the picture depends on the target
    page = tmp_path / "g.html"
    assert main(["show", src, "--after-level", "2", "--backend", "xla", "-o", str(page)]) == 0
    assert "<title>convbn.onnx after level 2 for target xla</title>" in page.read_text()


# ----- bisect, bench and the entry points (subprocesses) -----------------------------

def test_bisect_names_the_wrong_pass_and_writes_a_reproducer(tmp_path):
    path = tmp_path / "wrong.py"
    path.write_text(WRONG_PASS)
    repro = tmp_path / "repro"
    r = _cli("bisect", f"{path}:make", "--passes", "dce,relu_to_neg,cse", "-o", str(repro))
    assert r.returncode == 0, r.stderr
    assert "bisect: pass 'relu_to_neg'" in r.stdout and "rewrite 1 of 1" in r.stdout
    assert (repro / "replay.py").exists() and (repro / "before.air").exists()
    assert "\r" not in r.stderr  # no progress display when stderr is not a terminal


def test_check_catches_a_wrong_pass(tmp_path):
    path = tmp_path / "wrong.py"
    path.write_text(WRONG_PASS)
    r = _cli("optimize", f"{path}:make", "-o", str(tmp_path / "o.onnx"), "--passes", "relu_to_neg", "--check")
    assert r.returncode == 1
    line = _one_error_line(r.stderr)
    assert "--check: output 0 of the optimised graph on onnxruntime differs" in line
    assert not (tmp_path / "o.onnx").exists()


def test_bench_prints_a_latency_table(factory):
    r = _cli("bench", f"{factory}:make", "--backends", "onnxruntime", "--repeats", "3", "--warmup", "1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["system", "median", "ms", "spread", "time", "ratio", "build", "s", "max", "abs", "err"]
    rows = {line.split("  ")[0].strip(): line for line in lines[1:3]}
    assert set(rows) == {"torch eager", "accelir -> onnxruntime"}
    assert float(rows["torch eager"].split()[4]) == 1.0  # the reference's time ratio
    err = float(rows["accelir -> onnxruntime"].split()[-1])
    assert err < 1e-5
    assert lines[3].startswith("time ratio: median / the median of torch eager")


@pytest.mark.parametrize("flag, value", [("--repeats", "0"), ("--repeats", "-2"), ("--warmup", "-1")])
def test_bench_rejects_no_timed_runs(factory, flag, value):
    r = _cli("bench", f"{factory}:make", "--backends", "onnxruntime", flag, value)
    assert r.returncode == 2
    line = _one_error_line(r.stderr)
    assert f"accelir bench: error: {flag}:" in line and "Traceback" not in r.stderr


def test_console_script_and_module_entry_point(air):
    r = _cli("show", air)
    assert r.returncode == 0 and r.stdout.startswith("graph main(")
    script = shutil.which("accelir", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the accelir console script is not installed in this environment")
    r = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == f"accelir {accelir.__version__}"


# ----- helpers -----------------------------------------------------------------------

def test_random_inputs_follow_examples_and_dims():
    g = accelir.parse(textwrap.dedent("""\
        graph main(%ids: i64[batch,seq], %mask: bool[batch,seq], %x: f32[batch,4]) -> (f32[batch,4]) {
          return %x
        }
        """))
    ids = np.array([[5, 9, 7]])
    mask = np.ones((1, 3), bool)
    x = np.zeros((1, 4), np.float32)
    a, b, c = random_inputs(g, [ids, mask, x], seed=1)
    assert a.shape == (1, 3) and a.dtype == np.int64 and a.min() >= 5 and a.max() <= 9
    assert b.all() and c.dtype == np.float32 and c.std() > 0
    a, b, c = random_inputs(g, dims={"batch": 3})
    assert a.shape == (3, 2) and set(np.unique(a)) <= {0, 1} and b.all() and c.shape == (3, 4)


def test_flat_arrays_walks_nested_outputs():
    import torch
    out = {"a": torch.ones(2), "b": (np.zeros(3), [torch.zeros(1, 2)]), "none": None}
    shapes = [a.shape for a in flat_arrays(out)]
    assert shapes == [(2,), (3,), (1, 2)]


def test_a_wrong_lowering_is_named_not_sent_to_bisect(tmp_path, capsys, monkeypatch):
    from accelir.lowering.onnx import ONNX_RULES

    air = str(tmp_path / "tanh.air")
    (tmp_path / "tanh.air").write_text(
        "graph main(%x: f32[2,3]) -> (f32[2,3]) {\n  %0 = tanh(%x) : f32[2,3]\n  %1 = relu(%0) : f32[2,3]\n"
        "  return %1\n}\n")
    monkeypatch.setitem(ONNX_RULES, "tanh", ONNX_RULES["sigmoid"])  # onnxruntime's lowering of tanh goes wrong
    assert main(["optimize", air, "-o", str(tmp_path / "o.air"), "--check"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "differs from the original graph on random inputs" in line
    assert ("no pass is to blame: the interpreter on the optimised graph matches; the lowering to onnxruntime "
            "(output 0: max abs error") in line
    assert "differs from the interpreter (the lowering to xla matches it)" in line and "bisect" not in line
    assert main(["bisect", air, "-o", str(tmp_path / "repro")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "bisect: the check passes after every pass"
    assert out[1].startswith("no pass is to blame, so look at the import or the lowering: the lowering to "
                             "onnxruntime (output 0: max abs error")
    assert out[1].endswith("differs from the interpreter (the lowering to xla matches it)")
    monkeypatch.undo()
    assert main(["bisect", air, "-o", str(tmp_path / "repro2")]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith(
        "every backend's lowering matches the interpreter on these inputs; try other inputs (--seed) or tolerances "
        "(--rtol, --atol)")


def test_a_slow_factory_shows_progress_while_it_loads(tmp_path):
    import io

    from accelir import progress
    from accelir.cli import load_input

    path = tmp_path / "slow_factory.py"
    path.write_text("import time\n\nimport torch\n\ntime.sleep(0.3)\n\n\ndef make():\n    time.sleep(0.3)\n"
                    "    return torch.nn.Linear(2, 2), (torch.zeros(1, 2),)\n")
    stream = io.StringIO()
    with progress.activate(progress.Progress(stream, enabled=True, delay=0.05, interval=0.02)):
        loaded = load_input(f"{path}:make")
    assert loaded.kind == "factory"
    text = stream.getvalue()
    assert re.search(r"loading slow_factory\.py: done in 0\.\d s\n", text)
    assert re.search(r"slow_factory\.py:make\(\): done in 0\.\d s\n", text)
