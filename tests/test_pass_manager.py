"""The PassManager: fixed point, report, dumps, printing, numeric checks, failures and rollback."""

from __future__ import annotations

import io
import os
import textwrap
import warnings

import numpy as np
import pytest

import accelir
from accelir.errors import AccelirError, NumericMismatchError, PassError
from accelir.passes import P, Rule, RulePass, Var, cse, dce, fold_constants, simplify
from accelir.pass_manager import compare_outputs

TEXT = textwrap.dedent("""
    graph main(%x: f32[2,3]) -> (f32[2,3]) {
      %one = constant() {name="one", value=1.0} : f32[]
      %two = constant() {name="two", value=2.0} : f32[]
      %dead = exp(%x) : f32[2,3]
      %0 = mul(%x, %one) : f32[2,3]
      %1 = mul(%0, %two) : f32[2,3]
      %2 = mul(%two, %0) : f32[2,3]
      %3 = add(%1, %2) : f32[2,3]
      return %3
    }""")


def _graph():
    return accelir.parse(TEXT)


def _invalidating_pass(name: str):
    """A pass named ``name`` that gives every add an attribute its op does not have: an invalid graph."""
    def invalidate(graph):
        for n in graph.nodes:
            if n.op == "add":
                n.attrs["bogus"] = 1
        return True
    invalidate.__name__ = name
    return invalidate


def _x():
    return np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)


# a deliberately wrong rewrite: x * 2 -> x + 2
WRONG = RulePass("wrong_mul_two", (Rule("mul_two_to_add", P.mul(Var("x"), accelir.passes.Const(2.0)),
                                        lambda m, b: b.op("add", m["x"], m.root.inputs[1])
                                        if m.root.inputs[1].is_constant else b.op("add", m["x"], m.root.inputs[0])),))


def test_runs_to_a_fixed_point_and_reports():
    g = _graph()
    pm = accelir.PassManager([dce, fold_constants, cse, simplify])
    assert pm.run(g) is True
    assert [n.op for n in g.nodes] == ["constant", "mul", "add"]
    rep = pm.report
    assert rep.iterations == 2 and rep.converged
    assert [r.name for r in rep.records] == ["dce", "fold_constants", "cse", "simplify"] * 2
    first = rep.records[0]
    assert (first.nodes_before, first.nodes_after, first.changed, first.op_delta) == (7, 6, True, {"exp": -1})
    assert rep.records[2].op_delta == {"mul": -1}
    assert not any(r.changed for r in rep.records[4:])
    table = str(rep)
    lines = table.splitlines()
    assert lines[0].split() == ["#", "pass", "iter", "time", "ms", "nodes", "before", "nodes", "after", "changed",
                                "op", "delta"]
    assert "-1 exp" in lines[2] and lines[2].split()[1] == "dce"
    assert lines[-1].startswith("total ") and "nodes 7 -> 3" in lines[-1]
    assert pm.run(g) is False


def test_any_callable_is_a_pass_and_named_passes_show_their_name():
    calls = []

    def my_pass(graph):
        calls.append(len(graph))
        return False

    pm = accelir.PassManager([my_pass, lambda g: False, simplify, fold_constants])
    pm.run(_graph())
    assert calls == [7, 5]
    assert pm.names == ["my_pass", "<lambda>", "simplify", "fold_constants"]


def test_stops_at_max_iterations_when_passes_keep_changing():
    pm = accelir.PassManager([lambda g: True], max_iterations=3)
    assert pm.run(_graph())
    assert pm.report.iterations == 3 and not pm.report.converged
    assert "did not reach a fixed point" in str(pm.report)


def test_dump_dir_numbers_changed_passes_only(tmp_path):
    g = _graph()
    pm = accelir.PassManager([dce, fold_constants, cse, simplify], dump_dir=tmp_path)
    pm.run(g)
    files = sorted(os.listdir(tmp_path))
    assert files == ["000-input.air", "001-after-dce.air", "002-after-cse.air", "003-after-simplify.air",
                     "report.txt"]
    assert str(accelir.load(tmp_path / "000-input.air")) == str(_graph())
    assert accelir.parse((tmp_path / "003-after-simplify.air").read_text()).op_histogram() == \
        {"constant": 1, "mul": 1, "add": 1}
    assert "made by cse" not in (tmp_path / "003-after-simplify.air").read_text()
    assert (tmp_path / "report.txt").read_text() == str(pm.report)


def test_print_after_changed_prints_a_diff():
    out = io.StringIO()
    accelir.PassManager([dce, cse], print_after="changed", stream=out).run(_graph())
    text = out.getvalue()
    assert "--- before dce\n+++ after dce\n" in text
    assert "-  %dead = exp(%x) : f32[2,3]\n" in text
    assert "--- before cse\n+++ after cse\n" in text
    assert text.count("+++") == 2


def test_print_after_all_prints_every_pass_run():
    out = io.StringIO()
    accelir.PassManager([dce, fold_constants], print_after="all", stream=out).run(_graph())
    text = out.getvalue()
    # fold_constants changed nothing and nothing changed after it: round 2 does not rerun it
    assert text.count("graph main(") == 3
    assert "after fold_constants (iteration 1), unchanged" in text
    assert "after dce (iteration 2), unchanged" in text and "fold_constants (iteration 2)" not in text


def test_check_numerics_names_the_wrong_pass_and_rolls_back():
    g = _graph()
    pm = accelir.PassManager([dce, fold_constants, cse, simplify, WRONG], check_numerics=[_x()])
    with pytest.raises(NumericMismatchError) as info:
        pm.run(g)
    e = info.value
    assert e.pass_name == "wrong_mul_two" and e.output_index == 0 and e.max_abs_error > 1
    assert "pass 'wrong_mul_two' changed output 0" in str(e)
    assert "passes run before it: dce, fold_constants, cse, simplify" in str(e)
    accelir.verify(g)
    assert g.op_histogram() == {"constant": 1, "mul": 1, "add": 1}


def test_check_numerics_passes_correct_pipelines():
    g = _graph()
    x = _x()
    want = accelir.interpret(g, x)
    accelir.PassManager([dce, fold_constants, cse, simplify], check_numerics=[x]).run(g)
    np.testing.assert_allclose(accelir.interpret(g, x)[0], want[0], rtol=1e-6)


def test_exception_in_a_pass_names_it_and_keeps_the_graph():
    def explode(graph):
        first = next(iter(graph.nodes))
        graph.make("neg", [first.output], before=first)  # half a rewrite, then a crash
        raise RuntimeError("boom")

    g = _graph()
    before = str(g)
    with pytest.raises(PassError) as info:
        accelir.PassManager([dce, explode]).run(g)
    e = info.value
    assert e.pass_name == "explode" and e.previous == ["dce"]
    assert "pass 'explode' raised RuntimeError: boom (passes run before it: dce)" in str(e)
    assert "left as it was before 'explode'" in str(e)
    assert isinstance(e.__cause__, RuntimeError)
    accelir.verify(g)
    assert str(g) == before.replace("  %dead = exp(%x) : f32[2,3]\n", "")
    accelir.PassManager([dce, fold_constants, cse, simplify]).run(g)
    assert len(g) == 3


def test_a_pass_that_breaks_the_ir_is_caught_by_verify_each():
    retype = _invalidating_pass("retype")
    g = _graph()
    with pytest.raises(PassError, match="pass 'retype' left an invalid graph"):
        accelir.PassManager([retype]).run(g)
    accelir.verify(g)
    accelir.PassManager([retype], verify_each=False, max_iterations=1).run(_graph())


def test_instrument_sees_every_record():
    seen = []
    accelir.PassManager([dce, simplify], instrument=lambda rec, g: seen.append((rec.name, rec.changed, len(g)))
                        ).run(_graph())
    assert seen == [("dce", True, 6), ("simplify", True, 4), ("dce", False, 4), ("simplify", False, 4)]


@pytest.mark.parametrize("dtype,delta,ok", [
    (np.float32, 1e-6, True), (np.float32, 1e-2, False), (np.float16, 1e-3, True), (np.float64, 1e-6, False),
    (np.int32, 0, True), (np.int32, 1, False),
])
def test_compare_outputs_tolerance_by_dtype(dtype, delta, ok):
    a = np.ones((3,), dtype)
    b = (a + np.asarray(delta).astype(dtype)).astype(dtype)
    assert (compare_outputs([a], [b]) is None) is ok


def test_compare_outputs_nan_and_shape():
    a = np.array([1.0, np.nan], np.float32)
    assert compare_outputs([a], [a.copy()]) is None
    assert compare_outputs([a], [np.array([1.0, 2.0], np.float32)])[3].startswith("NaN")
    assert compare_outputs([a], [a[:1]])[3] == "float32[1] instead of float32[2]"


def test_a_pass_that_changed_nothing_waits_for_a_change():
    calls = {"before": 0, "after": 0}

    def before(graph):
        calls["before"] += 1
        return False

    def after(graph):
        calls["after"] += 1
        return False

    pm = accelir.PassManager([before, simplify, after])
    assert pm.run(_graph()) is True
    # round 2 reruns `before` (simplify changed the graph since), then simplify; `after`
    # saw the final graph in round 1 already
    assert calls == {"before": 2, "after": 1}
    assert [r.name for r in pm.report.records] == ["before", "simplify", "after", "before", "simplify"]
    assert pm.report.iterations == 2 and pm.report.converged


REGION_TEXT = textwrap.dedent("""
    graph main(%x: f32[4]) -> (f32[4], f32[4]) {
      %one = constant() {name="one", value=1.0} : f32[]
      %0 = mul(%x, %one) : f32[4]
      %1 = fusion(%0) {kind="elementwise"} : f32[4] {
        graph body(%a: f32[4]) -> (f32[4]) {
          %2 = neg(%a) : f32[4]
          %3 = neg(%2) : f32[4]
          return %3
        }
      }
      %4 = exp(%1) : f32[4]
      return %4, %0
    }""")


def test_rollback_undoes_every_kind_of_change():
    def vandal(graph):
        simplify(graph)  # rewrites in the graph and in the region body
        first = next(iter(graph.nodes))
        first.attrs["bogus"] = 1
        first.meta["pass"] = "vandal"
        for n in graph.nodes:
            if n.op == "exp":
                n.outputs[0].name = "renamed"
                graph.make("neg", [n.outputs[0]])
        graph.const(np.float32(3.0), name="extra")
        graph.outputs.reverse()
        raise RuntimeError("vandal gives up")

    g = accelir.parse(REGION_TEXT)
    before = accelir.print_graph(g, meta=True)
    with pytest.raises(PassError, match="pass 'vandal' raised RuntimeError"):
        accelir.PassManager([vandal]).run(g)
    assert accelir.print_graph(g, meta=True) == before
    accelir.verify(g)
    assert "extra" not in g.constants
    # the restored use lists are true: the graph optimises like a fresh parse
    fresh = accelir.parse(REGION_TEXT)
    for graph in (g, fresh):
        accelir.PassManager([dce, simplify]).run(graph)
    assert str(g) == str(fresh)
    x = np.random.default_rng(1).standard_normal(4).astype(np.float32)
    np.testing.assert_allclose(accelir.interpret(g, x)[0], accelir.interpret(accelir.parse(REGION_TEXT), x)[0])


def test_rollback_of_a_later_pass_keeps_the_earlier_passes_work():
    breaks = _invalidating_pass("breaks")
    g = _graph()
    with pytest.raises(PassError, match="pass 'breaks' left an invalid graph"):
        accelir.PassManager([dce, cse, breaks]).run(g)
    accelir.verify(g)
    assert g.op_histogram() == {"constant": 2, "mul": 2, "add": 1}


@pytest.mark.parametrize("enabled", [True, False])
def test_the_garbage_collector_is_left_as_it_was(enabled):
    import gc

    def boom(graph):
        assert not gc.isenabled()
        raise RuntimeError("boom")

    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        accelir.PassManager([dce, simplify]).run(_graph())
        assert gc.isenabled() is enabled
        with pytest.raises(PassError):
            accelir.PassManager([boom]).run(_graph())
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()


# ----- a pass cannot write into the user's weights ---------------------------------------

def _zero_constants_in_place(graph):
    """A wrong pass: it writes into every constant array instead of building new ones."""
    for arr in graph.constants.values():
        np.multiply(arr, 0, out=arr)
    return True


def _write_and_raise_pass(graph):
    for arr in graph.constants.values():
        arr[...] = 0
    return True


def test_a_pass_writing_into_torch_weights_fails_and_leaves_the_model_alone():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3)).eval()
    bits = {k: v.detach().reshape(-1).view(torch.uint8).clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 4)
    with pytest.raises(PassError, match="pass '_zero_constants_in_place' raised ValueError: .*read-only") as info:
        accelir.optimize(model, (x,), passes=[_zero_constants_in_place])
    assert info.value.pass_name == "_zero_constants_in_place"
    g = accelir.capture(model, (x,))
    with pytest.raises(PassError, match="pass '_write_and_raise_pass' raised ValueError: .*read-only"):
        accelir.PassManager([_write_and_raise_pass]).run(g)
    for k, v in model.state_dict().items():
        assert torch.equal(v.reshape(-1).view(torch.uint8), bits[k]), k
    np.testing.assert_allclose(accelir.interpret(g, x.numpy())[0], model(x).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_a_pass_writing_into_jax_constants_leaves_the_numpy_arrays_alone():
    jnp = pytest.importorskip("jax.numpy")
    rng = np.random.default_rng(0)
    table = rng.standard_normal((3, 4)).astype(np.float32)
    params = {"w": rng.standard_normal((4, 3)).astype(np.float32)}
    x = rng.standard_normal((2, 4)).astype(np.float32)
    kept = table.copy(), params["w"].copy()
    from accelir.frontends.jax import capture_jax
    g = capture_jax(lambda p, x: jnp.tanh(x @ p["w"]) @ table, (params, x), params_as_constants=True)
    with pytest.raises(PassError, match="pass '_zero_constants_in_place' raised ValueError"):
        accelir.PassManager([_zero_constants_in_place]).run(g)
    np.testing.assert_array_equal(table, kept[0])
    np.testing.assert_array_equal(params["w"], kept[1])
    assert table.flags.writeable and params["w"].flags.writeable
    want = np.asarray(jnp.tanh(x @ params["w"]) @ table)
    np.testing.assert_allclose(accelir.interpret(g, x)[0], want, rtol=1e-5, atol=1e-6)


def test_a_pass_writing_into_onnx_initializers_leaves_the_model_alone():
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper
    w = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    model = helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(w, "w")]), opset_imports=[helper.make_opsetid("", 17)])
    serialized = model.SerializeToString()
    with pytest.raises(PassError, match="pass '_write_and_raise_pass' raised ValueError"):
        accelir.optimize(model, (np.ones((2, 4), np.float32),), passes=[_write_and_raise_pass])
    assert model.SerializeToString() == serialized


# ----- the PassManager checks what a pass did, not what it says -------------------------

def _dce_saying(result):
    """dce that reports ``result`` instead of whether it changed the graph."""
    def quiet_dce(graph):
        dce(graph)
        return result
    return quiet_dce


@pytest.mark.parametrize("result,snapshot", [(False, True), (None, True), (False, False)])
def test_a_change_the_pass_does_not_report_is_still_seen(result, snapshot):
    g = _graph()
    pm = accelir.PassManager([_dce_saying(result)], max_iterations=2, snapshot=snapshot)
    with pytest.warns(accelir.pass_manager.PassReturnWarning,
                      match=f"pass 'quiet_dce' returned {result} but changed the graph"):
        assert pm.run(g) is True
    first, second = pm.report.records
    assert (first.changed, first.nodes_before, first.nodes_after, first.op_delta) == (True, 7, 6, {"exp": -1})
    assert first.note == f"returned {result} but changed the graph" and not second.changed and not second.note
    assert f"note: #0 quiet_dce returned {result} but changed the graph" in str(pm.report)


def test_an_unreported_wrong_change_is_caught_by_the_numeric_check_and_rolled_back():
    def wrong_quietly(graph):
        WRONG(graph)
        return False

    g = _graph()
    before = str(g)
    with pytest.warns(accelir.pass_manager.PassReturnWarning), pytest.raises(NumericMismatchError) as info:
        accelir.PassManager([wrong_quietly], check_numerics=[_x()]).run(g)
    assert info.value.pass_name == "wrong_quietly"
    assert str(g) == before


def test_an_unreported_invalid_change_is_caught_by_verify_each():
    invalidate = _invalidating_pass("quiet_invalidate")
    g = _graph()
    before = str(g)
    with pytest.warns(accelir.pass_manager.PassReturnWarning), \
            pytest.raises(PassError, match="pass 'quiet_invalidate' left an invalid graph"):
        accelir.PassManager([_returning_none(invalidate)]).run(g)
    assert str(g) == before


def _returning_none(p):
    def wrapped(graph):
        p(graph)
    wrapped.__name__ = p.__name__
    return wrapped


def test_a_keyboard_interrupt_inside_a_pass_rolls_the_graph_back():
    def interrupted(graph):
        simplify(graph)  # a finished rewrite, then half of another one
        first = next(iter(graph.nodes))
        graph.make("neg", [first.output], before=first)
        graph.const(np.float32(3.0), name="extra")
        raise KeyboardInterrupt

    g = accelir.parse(REGION_TEXT)
    before = accelir.print_graph(g, meta=True)
    with pytest.raises(KeyboardInterrupt):
        accelir.PassManager([dce, interrupted]).run(g)
    assert accelir.print_graph(g, meta=True) == before
    assert "extra" not in g.constants
    accelir.verify(g)
    fresh = accelir.parse(REGION_TEXT)
    for graph in (g, fresh):
        accelir.PassManager([dce, simplify]).run(graph)
    assert str(g) == str(fresh)


def _add_input(graph):
    graph.add_input(accelir.TensorType(accelir.DType.f32, (3,)), "y")
    return True


def _drop_input(graph):
    graph.inputs.pop()
    return True


def _retype_input(graph):
    graph.inputs[0].type = accelir.TensorType(accelir.DType.f32, (3, 2))
    return True


def _add_output(graph):
    graph.set_outputs(graph.outputs + graph.outputs)
    return True


def _cast_output(graph):
    graph.set_outputs([graph.apply("cast", graph.outputs[0], dtype=accelir.DType.f16)])
    return True


def _transpose_output(graph):
    graph.set_outputs([graph.apply("transpose", graph.outputs[0], perm=(1, 0))])
    return False


@pytest.mark.parametrize("wrong,what", [
    (_add_input, "input 1 (%y: f32[3]) added"),
    (_drop_input, "input 0 (%x: f32[2,3]) removed"),
    (_retype_input, "input 0 (%x: f32[2,3]) became f32[3,2]"),
    (_add_output, "2 outputs instead of 1"),
    (_cast_output, "output 0 is f16[2,3] instead of f32[2,3]"),
    (_transpose_output, "output 0 is f32[3,2] instead of f32[2,3]"),
])
def test_a_pass_that_changes_the_signature_is_named_and_rolled_back(wrong, what):
    g = _graph()
    before = accelir.print_graph(g, meta=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", accelir.pass_manager.PassReturnWarning)
        with pytest.raises(PassError) as info:
            accelir.PassManager([dce, wrong], verify_each=False).run(g)
    e = info.value
    assert e.pass_name == wrong.__name__
    assert str(e).startswith(f"pass '{wrong.__name__}' changed the graph's signature: {what} "
                             "(passes run before it: dce); the graph is left as it was")
    assert isinstance(e.__cause__, accelir.VerificationError)
    assert accelir.print_graph(g, meta=True) == before.replace("  %dead = exp(%x) : f32[2,3]\n", "")
    accelir.verify(g)


# ----- dump_dir keeps what it holds -----------------------------------------------------

FULL = [dce, fold_constants, cse, simplify]


def test_dump_dir_is_created_when_missing(tmp_path):
    dumps = tmp_path / "a" / "b"
    accelir.PassManager([dce], dump_dir=dumps).run(_graph())
    assert sorted(os.listdir(dumps)) == ["000-input.air", "001-after-dce.air", "report.txt"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_dump_dir_with_the_users_files_is_refused(tmp_path, overwrite):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "001-after-dce.air").write_text("an earlier dump")
    with pytest.raises(AccelirError, match=r"dump_dir '.*' holds files accelir did not write \(notes.txt\); "
                                           "choose an empty or new directory"):
        accelir.PassManager([dce], dump_dir=tmp_path, overwrite=overwrite).run(_graph())
    assert sorted(os.listdir(tmp_path)) == ["001-after-dce.air", "notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_earlier_dumps_are_replaced_only_when_asked(tmp_path):
    accelir.PassManager(FULL, dump_dir=tmp_path).run(_graph())
    earlier = sorted(os.listdir(tmp_path))
    assert len(earlier) == 5
    with pytest.raises(AccelirError, match=r"holds the files of an earlier run \(000-input.air, 001-after-dce.air, "
                                           r"002-after-cse.air, 003-after-simplify.air and 1 more\); pass "
                                           r"overwrite=True \(--overwrite on the command line\)"):
        accelir.PassManager([dce], dump_dir=tmp_path).run(_graph())
    assert sorted(os.listdir(tmp_path)) == earlier
    pm = accelir.PassManager([dce], dump_dir=tmp_path, overwrite=True)
    pm.run(_graph())
    # no stale dump of the earlier, longer pipeline is left beside the new ones
    assert sorted(os.listdir(tmp_path)) == ["000-input.air", "001-after-dce.air", "report.txt"]
    # a manager's later runs replace its own dumps
    pm.run(accelir.parse(str(_graph()).replace("%dead = exp(%x)", "%dead = neg(%x)")))
    assert sorted(os.listdir(tmp_path)) == ["000-input.air", "001-after-dce.air", "report.txt"]
    assert "neg" in (tmp_path / "000-input.air").read_text()


def test_dump_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(AccelirError, match="is a file, not a directory"):
        accelir.PassManager([dce], dump_dir=tmp_path / "f").run(_graph())


def test_cli_optimize_dump_dir_needs_overwrite_to_replace_earlier_dumps(tmp_path, capsys):
    from accelir.cli import main
    air = tmp_path / "m.air"
    air.write_text(TEXT)
    dumps = tmp_path / "dumps"
    args = ["optimize", str(air), "--passes", "dce", "--dump-dir", str(dumps)]
    assert main(args + ["-o", str(tmp_path / "o1.air")]) == 0
    assert main(args + ["-o", str(tmp_path / "o2.air")]) == 1
    assert "holds the files of an earlier run" in capsys.readouterr().err
    assert not (tmp_path / "o2.air").exists()
    (dumps / "report.txt").unlink()
    assert main(args + ["-o", str(tmp_path / "o2.air"), "--overwrite"]) == 0
    assert sorted(os.listdir(dumps)) == ["000-input.air", "001-after-dce.air", "report.txt"]


SHARED = """graph main(%x: f32[2,8]) -> (f32[2,8]) {
  %w = constant() {name="w"} : f32[8,8]
  %a = constant() {name="a"} : f32[8,8]
  %t = transpose(%a) {perm=[1, 0]} : f32[8,8]
  %0 = matmul(%x, %w) : f32[2,8]
  %1 = matmul(%0, %t) : f32[2,8]
  return %1
}
"""


def test_each_dump_opens_with_the_inputs_weights_by_reference(tmp_path, capsys):
    from accelir.cli import main
    rng = np.random.default_rng(0)
    w, a, x = (rng.standard_normal(s).astype(np.float32) for s in ((8, 8), (8, 8), (2, 8)))
    g = accelir.parse(SHARED, {"w": w, "a": a})
    dumps = tmp_path / "dumps"
    accelir.PassManager([fold_constants, dce], dump_dir=dumps).run(g)
    after = dumps / "001-after-fold_constants.air"
    text = after.read_text()
    assert text.startswith("# constants also in: 000-input.air.npz\n")
    # the pass's dump holds the constant it made, not the weight it kept
    with np.load(str(after) + ".npz") as own:
        assert sorted(v.size for k, v in own.items() if k != "accelir.constants") == [64]
        assert '"w"' not in bytes(own["accelir.constants"]).decode()
    for path in sorted(dumps.glob("*.air")):
        (got,) = accelir.interpret(accelir.load(path), x)
        np.testing.assert_allclose(got, x @ w @ a.T, rtol=1e-5, atol=1e-5)
    assert main(["show", str(after)]) == 0
    assert "transpose" not in capsys.readouterr().out
    os.remove(dumps / "000-input.air.npz")
    with pytest.raises(AccelirError) as err:
        accelir.load(after)
    assert f"constant 'w' has no value: looked for it in {after}.npz or {dumps / '000-input.air.npz'} (missing)" \
        in str(err.value)


def test_diffs_between_passes_show_no_renumbering(tmp_path):
    g = accelir.parse("""graph main(%x: f32[3]) -> (f32[3]) {
  %0 = exp(%x) : f32[3]
  %1 = neg(%x) : f32[3]
  %2 = tanh(%x) : f32[3]
  %3 = add(%1, %2) : f32[3]
  %4 = mul(%3, %3) : f32[3]
  return %4
}
""")
    for n in g.nodes:  # unnamed values, as a frontend makes them: the printer numbers them
        for o in n.outputs:
            o.name = None
    out = io.StringIO()
    accelir.PassManager([dce], print_after="changed", stream=out, dump_dir=tmp_path).run(g)
    changed = [line for line in out.getvalue().splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert changed == ["-  %0 = exp(%x) : f32[3]"]  # the dead node, and no later line renumbered
    after = (tmp_path / "001-after-dce.air").read_text()
    assert "  %4 = mul(%3, %3) : f32[3]" in after  # the dump uses the same names
    assert accelir.parse(after).op_histogram() == g.op_histogram()
