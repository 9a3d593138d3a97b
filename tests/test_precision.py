"""optimize(precision=...): int8 / int4 end to end against eager torch in float32, the accuracy budget, the
layers kept in float32 when it is not met, the error when it cannot be, and the command line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

import accelir
from accelir.accuracy import DEFAULT_BUDGETS, Budget, measure
from accelir.cli import main
from accelir.lowering.onnx import to_onnx
from accelir.precision import PRECISION_PASSES, PrecisionError, int4_accuracy_level

BACKENDS = ["onnxruntime", "xla"]


def _mlp() -> torch.nn.Module:
    """Three linears; the first ignores input feature 0, so a huge value there costs nothing in float32 but
    takes the whole int8 range of the per-tensor activation quantisation from the other features."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                            torch.nn.Linear(64, 8)).eval()
    with torch.no_grad():
        m[0].weight[:, 0] = 0
    return m


def _inputs(seed: int, outlier: float = 1.0) -> torch.Tensor:
    x = torch.randn(16, 32, generator=torch.Generator().manual_seed(seed))
    x[:, 0] *= outlier
    return x


def _eager(model, *args):
    with torch.no_grad():
        out = model(*args)
    return getattr(out, "last_hidden_state", out)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("precision,op", [("int8", "dynamic_quant_linear"), ("int4", "matmul_nbits")])
def test_mlp_within_budget_on_both_backends(precision, op, backend):
    m, x = _mlp(), _inputs(1)
    cm = accelir.optimize(m, (x,), precision=precision, backend=backend)
    rep = cm.report.precision
    assert cm.graph.op_histogram().get(op) == 3 and rep.kept == []
    assert [layer.name for layer in rep.layers] == ["0", "2", "4"]
    errors = measure([_eager(m, x)], [cm(x)])
    assert DEFAULT_BUDGETS[precision].met(errors)
    assert errors.cosine < 1.0  # it is quantised
    assert "precision " + precision in str(cm.report) and "quantised" in str(cm.report)


@pytest.mark.parametrize("backend", BACKENDS)
def test_int4_accuracy_level_follows_the_backend_and_the_budget_is_measured_at_it(backend):
    """onnxruntime's CPU kernel rounds x to int8 per block (level 4), XLA dequantises into an f32 dot (level
    0); the reported error is that of the graph as it runs, at its level."""
    m, x = _mlp(), _inputs(1)
    cm = accelir.optimize(m, (x,), precision="int4", backend=backend)
    level = {"onnxruntime": 4, "xla": 0}[backend]
    assert int4_accuracy_level(backend, "cpu") == level
    assert {n.attrs["accuracy_level"] for n in cm.graph.nodes if n.op == "matmul_nbits"} == {level}
    fp32 = accelir.optimize(m, (x,), backend=backend)
    assert measure([fp32(x)], [cm(x)]).cosine == pytest.approx(cm.report.precision.errors.cosine, abs=1e-6)
    if backend == "onnxruntime":
        levels = {a.i for n in to_onnx(cm.graph).graph.node if n.op_type == "MatMulNBits" for a in n.attribute
                  if a.name == "accuracy_level"}
        assert levels == {4}


def test_int4_accuracy_level_elsewhere_is_the_shared_arithmetic():
    assert int4_accuracy_level("onnxruntime", "cuda") == 0 and int4_accuracy_level(None) == 0
    assert PRECISION_PASSES["int4"].make(frozenset()).accuracy_level == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_breaking_the_budget_on_calibration_inputs_is_kept_in_float(backend):
    m, x = _mlp(), _inputs(1)
    budget = {"cosine": 0.999}
    plain = accelir.optimize(m, (x,), precision="int8", accuracy=budget, backend=backend)
    assert plain.report.precision.kept == []
    hard = [(_inputs(2, outlier=1e4),), (_inputs(3),)]
    cm = accelir.optimize(m, (x,), precision="int8", accuracy=budget, calibration=hard, backend=backend)
    rep = cm.report.precision
    assert rep.kept == ["0"] and rep.samples == 2
    assert [layer.kept for layer in rep.layers] == [True, False, False]
    assert [n.op for n in cm.graph.nodes if n.op != "constant"] == ["linear", "dynamic_quant_linear",
                                                                      "dynamic_quant_linear"]
    for (h,) in hard:
        assert Budget.parse(budget).met(measure([_eager(m, h)], [cm(h)]))
    # quantising every layer broke it there: the error the first layer adds is the largest
    assert rep.layers[0].added == max(layer.added for layer in rep.layers)


def test_budget_that_only_float_meets_is_an_error_naming_the_layers():
    m, x = _mlp(), _inputs(1)
    with pytest.raises(PrecisionError) as e:
        accelir.optimize(m, (x,), precision="int8", accuracy={"max_abs": 1e-9})
    text = str(e.value)
    assert "max_abs=1e-09" in text and "unless every layer stays in float32" in text
    assert all(f"{name} (cosine" in text for name in ("0", "2", "4"))


@pytest.mark.parametrize("precision, backend", [("fp16", "onnxruntime"), ("fp16", "xla"), ("bf16", "xla")])
def test_float_precisions_end_to_end_within_their_default_budgets(precision, backend):
    m, x = _mlp(), _inputs(1)
    cm = accelir.optimize(m, (x,), precision=precision, backend=backend)
    rep = cm.report.precision
    low = "f16" if precision == "fp16" else "bf16"
    assert any(str(v.dtype) == low for n in cm.graph.nodes for v in n.outputs)
    assert rep.budget.met(rep.errors) and rep.layers
    assert Budget.parse(None, precision).met(measure([_eager(m, x)], [cm(x)]))


def test_bf16_on_onnxruntime_cpu_names_what_works():
    with pytest.raises(accelir.AccelirError, match="use backend='xla' or precision='fp16'"):
        accelir.optimize(_mlp(), (_inputs(1),), precision="bf16", backend="onnxruntime")


def test_bad_precision_and_budget_are_refused_before_capture():
    m = _mlp()
    with pytest.raises(PrecisionError, match="unknown precision 'int3'"):
        accelir.optimize(m, (_inputs(1),), precision="int3")
    with pytest.raises(accelir.AccelirError, match="unknown measure 'cos'"):
        accelir.optimize(m, (_inputs(1),), precision="int8", accuracy={"cos": 0.9})


def test_a_model_without_float_weights_is_left_as_it_is():
    g = accelir.parse("""
graph main(%x: f32[3,4], %w: f32[4,2]) -> (f32[3,2]) {
  %0 = matmul(%x, %w) : f32[3,2]
  return %0
}""")
    x, w = np.ones((3, 4), np.float32), np.ones((4, 2), np.float32)
    cm = accelir.optimize(g, (x, w), precision="int8")
    assert cm.report.precision.layers == [] and cm.graph.op_histogram() == {"matmul": 1}


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                     intermediate_size=128, vocab_size=100)
    return transformers.BertModel(config).eval(), torch.randint(0, 100, (2, 16))


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=32, use_cache=False)
    return transformers.GPT2Model(config).eval(), torch.randint(0, 100, (2, 16))


@pytest.mark.parametrize("name,precision,backend", [
    *((n, p, "onnxruntime") for n in ("bert", "gpt2") for p in ("int8", "int4")),
    ("bert", "int8", "xla"), ("gpt2", "int4", "xla")])  # XLA compiles each trial: two of its four
def test_transformers_end_to_end_within_budget(name, precision, backend, request):
    model, ids = request.getfixturevalue(name)
    cm = accelir.optimize(model, (ids,), precision=precision, backend=backend)
    rep = cm.report.precision
    assert len(rep.layers) >= 8 and sum(not layer.kept for layer in rep.layers) >= len(rep.layers) // 2
    errors = measure([_eager(model, ids)], [cm(ids).last_hidden_state])
    assert DEFAULT_BUDGETS[precision].met(errors), errors
    op = "dynamic_quant_linear" if precision == "int8" else "matmul_nbits"
    assert cm.graph.op_histogram().get(op, 0) >= len(rep.layers) // 2 and errors.max_abs > 0


def test_cli_precision_and_accuracy(tmp_path, capsys):
    factory = tmp_path / "mlp.py"
    factory.write_text("import torch\n\ndef make():\n    torch.manual_seed(0)\n"
                       "    m = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 8))\n"
                       "    return m.eval(), (torch.randn(16, 32),)\n")
    out = tmp_path / "m.onnx"
    assert main(["optimize", f"{factory}:make", "-o", str(out), "--precision", "int8", "--accuracy",
                 "cosine=0.999", "--check"]) == 0
    text = capsys.readouterr().out
    assert "precision int8: 2 of 2 layers quantised" in text and "within the accuracy budget cosine=0.999" in text
    import onnx
    assert [n.op_type for n in onnx.load(str(out)).graph.node].count("DynamicQuantizeMatMul") == 2
    assert main(["optimize", f"{factory}:make", "-o", str(out), "--overwrite", "--precision", "int4",
                 "--accuracy", "max_abs=0"]) == 1
    assert "unless every layer stays in float32" in capsys.readouterr().err


def test_orchestration_is_generic_over_the_pass_factory(monkeypatch):
    """A precision is any ``make(keep)`` with the layers it changes: here one that rounds each relu's output
    to a tenth, which ruins the second relu (values near 0.01) and not the first, so the second is kept."""
    from accelir.ir import Graph
    from accelir.precision import Precision

    def relus(graph: Graph):
        return [(i, n) for i, n in enumerate(graph.nodes) if n.op == "relu"]

    def make(keep: frozenset):
        def round_relus(graph: Graph) -> bool:
            if any(n.meta.get("rounded") for n in graph.nodes):
                return False  # like the quantisation passes: a converted graph is left alone
            changed = False
            for i, n in relus(graph):
                if i in keep:
                    continue
                n.meta["rounded"] = changed = True
                y = n.output
                uses = list(y.uses)
                b = graph.builder(before=n.next)
                ten = b.scalar(10.0, y)
                r = b.op("div", b.op("round", b.op("mul", y, ten)), ten)
                for u, k in uses:
                    u.replace_input(k, r)
                graph.outputs = [r if o is y else o for o in graph.outputs]
            return changed
        return round_relus
    monkeypatch.setitem(PRECISION_PASSES, "fp16", Precision(make, relus))
    g = accelir.parse("""
graph main(%x: f32[16,8]) -> (f32[16,8]) {
  %s = constant() {name="s", value=0.01} : f32[]
  %t = constant() {name="t", value=100.0} : f32[]
  %0 = relu(%x) : f32[16,8]
  %1 = mul(%0, %s) : f32[16,8]
  %2 = relu(%1) : f32[16,8]
  %3 = mul(%2, %t) : f32[16,8]
  return %3
}""")
    x = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32) * 3
    cm = accelir.optimize(g, (x,), precision="fp16", accuracy={"cosine": 0.99}, level=0)
    rep = cm.report.precision
    assert [(layer.position, layer.kept) for layer in rep.layers] == [(2, False), (4, True)]
    assert rep.errors.cosine >= 0.99 and [n.op for n in cm.graph.nodes].count("round") == 1
