"""accelir as a torch.compile backend: graph breaks, dynamic sizes, both backends against
eager torch, the eager fallback, autograd, options, and discovery by name.

Each test checks that accelir itself ran the graphs (no fallback warning, a counted
compile) and compares with eager torch under the fp32 accuracy budget.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn as nn
import torch.utils._pytree as pytree

import accelir
import accelir.dynamo as accelir_dynamo
from accelir.accuracy import DEFAULT_BUDGETS, measure

transformers = pytest.importorskip("transformers")

BACKENDS = ["onnxruntime", "xla"]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    accelir_dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture
def compiles(monkeypatch):
    """The graphs accelir compiled (each one its callable's CompiledModel)."""
    done: list = []
    real = accelir_dynamo._compile

    def counting(*args, **kwargs):
        run = real(*args, **kwargs)
        done.append(run.compiled_model)
        return run

    monkeypatch.setattr(accelir_dynamo, "_compile", counting)
    return done


def _assert_matches(got, want):
    errors = measure(pytree.tree_leaves(want), pytree.tree_leaves(got))
    assert DEFAULT_BUDGETS["fp32"].met(errors), errors


def _eager_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "accelir" in str(w.message)]


class GraphBreaks(nn.Module):
    """A print, a .item() and a branch on a tensor's value: Dynamo splits forward at each."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 8)
        self.fc2 = nn.Linear(8, 4)

    def forward(self, x):
        h = self.fc1(x)
        print("between the layers")
        scale = h.abs().mean().item()
        if h.sum() > 0:
            h = torch.relu(h) * 2 + scale
        else:
            h = torch.tanh(h) - scale
        return self.fc2(h)


@pytest.mark.parametrize("backend", BACKENDS)
def test_graph_breaks_compile_each_graph(backend, compiles, capsys):
    torch.manual_seed(0)
    model = GraphBreaks().eval()
    compiled = torch.compile(model, backend="accelir", options={"backend": backend})
    x = torch.randn(3, 8)
    with torch.no_grad():
        if model.fc1(x).sum() <= 0:
            x = -x  # start on the first branch; the second call takes the other
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            got = [compiled(x), compiled(-x)]
        want = [model(x), model(-x)]
    assert not _eager_warnings(record)
    _assert_matches(got, want)
    assert capsys.readouterr().out.count("between the layers") == 4
    # the graph before the print, the one up to .item(), and one per branch
    assert len(compiles) >= 4
    assert all(c.backend == backend for c in compiles)


@pytest.mark.parametrize("backend", BACKENDS)
def test_outputs_are_tensors_for_strided_inputs_and_graphs_without_inputs(backend, compiles):
    def f(x, y):
        return x @ y, x, (x * 2)[:, :1]

    def constant():
        return torch.arange(3.0) * 2

    x, y = torch.randn(4, 3).t(), torch.randn(4, 2)  # x is not contiguous
    with torch.no_grad():
        got = torch.compile(f, backend="accelir", options={"backend": backend})(x, y)
        made = torch.compile(constant, backend="accelir", options={"backend": backend})()
    assert all(isinstance(t, torch.Tensor) for t in got)
    _assert_matches(got, f(x, y))
    assert isinstance(made, torch.Tensor) and torch.equal(made, constant())
    assert len(compiles) == 2


def _bert():
    cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
                                  vocab_size=100, max_position_embeddings=64)
    return transformers.BertModel(cfg).eval()


def _text(batch: int, seq: int):
    g = torch.Generator().manual_seed(batch * 100 + seq)
    ids = torch.randint(0, 100, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, -2:] = 0
    return ids, mask


@pytest.mark.parametrize("backend", BACKENDS)
def test_bert_dynamic_batch_and_sequence_compiles_once(backend, compiles):
    torch.manual_seed(0)
    model = _bert()
    compiled = torch.compile(model, backend="accelir", dynamic=True, options={"backend": backend})
    with torch.no_grad(), warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for batch, seq in ((2, 8), (3, 13)):
            ids, mask = _text(batch, seq)
            got = compiled(ids, attention_mask=mask)
            _assert_matches(got, model(ids, attention_mask=mask))
    assert not _eager_warnings(record)
    assert len(compiles) == 1
    assert any(isinstance(d, str) for v in compiles[0].graph.inputs for d in v.type.shape)


class SmallResNet(nn.Module):
    """ResNet-shaped: stem conv + batch norm + max pool, two residual blocks (one strided
    with a projection), global average pool and a classifier."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        self.block1 = self._block(8, 8, 1)
        self.block2 = self._block(8, 16, 2)
        self.proj = nn.Sequential(nn.Conv2d(8, 16, 1, 2, bias=False), nn.BatchNorm2d(16))
        self.fc = nn.Linear(16, 10)

    @staticmethod
    def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                             nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(self.block1(x) + x)
        x = torch.relu(self.block2(x) + self.proj(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _randomise_norm_stats(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(4)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make", [SmallResNet, lambda: transformers.ResNetModel(
    transformers.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1]))], ids=["conv", "transformers"])
def test_resnet_two_sizes_dynamic_compiles_once(backend, make, compiles):
    torch.manual_seed(0)
    model = make().eval()
    _randomise_norm_stats(model)
    compiled = torch.compile(model, backend="accelir", dynamic=True, options={"backend": backend})
    g = torch.Generator().manual_seed(2)
    with torch.no_grad(), warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for batch, size in ((2, 32), (3, 48)):
            x = torch.randn(batch, 3, size, size, generator=g)
            _assert_matches(compiled(x), model(x))
    assert not _eager_warnings(record)
    assert len(compiles) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_mark_dynamic_under_inference_mode_compiles_once(backend, compiles):
    torch.manual_seed(0)
    model = SmallResNet().eval()
    _randomise_norm_stats(model)
    compiled = torch.compile(model, backend="accelir", options={"backend": backend})
    g = torch.Generator().manual_seed(3)
    with torch.inference_mode():
        for batch in (2, 5):
            x = torch.randn(batch, 3, 32, 32, generator=g)
            torch._dynamo.mark_dynamic(x, 0)
            _assert_matches(compiled(x), model(x))
    assert len(compiles) == 1
    assert compiles[0].graph.inputs[0].type.shape[0] != 2  # a symbol, not the first call's batch


def test_gpt2_dynamic_matches_eager(compiles):
    """GPT-2's gelu reads math.pi, which Dynamo passes as a 0-d tensor: it is baked in."""
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=64, use_cache=False)
    model = transformers.GPT2Model(cfg).eval()
    compiled = torch.compile(model, backend="accelir", dynamic=True)
    with torch.no_grad(), warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for batch, seq in ((2, 8), (3, 11)):
            ids, mask = _text(batch, seq)
            _assert_matches(compiled(ids, attention_mask=mask), model(ids, attention_mask=mask))
    assert not _eager_warnings(record)
    assert len(compiles) == 1


# ----- what accelir does not take runs eagerly ----------------------------------------

@torch.library.custom_op("accelir_test::wobble", mutates_args=())
def wobble(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(x) * 0.5 + x


@wobble.register_fake
def _(x):
    return torch.empty_like(x)


class WithCustomOp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        return self.fc(wobble(torch.relu(self.fc(x))))


def test_unmapped_op_falls_back_to_eager_with_one_warning(compiles):
    torch.manual_seed(0)
    model = WithCustomOp().eval()
    compiled = torch.compile(model, backend="accelir")
    x = torch.randn(2, 6)
    with torch.no_grad(), warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = [compiled(x), compiled(x + 1)]
        want = [model(x), model(x + 1)]
    messages = _eager_warnings(record)
    assert len(messages) == 1 and "wobble" in messages[0] and "runs eagerly" in messages[0]
    assert "\n" not in messages[0]
    assert not compiles
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_fallback_false_raises_the_reason():
    compiled = torch.compile(WithCustomOp().eval(), backend="accelir", options={"fallback": False})
    with torch.no_grad(), pytest.raises(Exception, match="wobble"):
        compiled(torch.randn(2, 6))


def test_changed_python_number_runs_eagerly(compiles):
    """A global float Dynamo passes as a tensor is baked in; a new value runs eagerly, correctly."""
    global SCALE
    SCALE = 0.5

    def f(x):
        return torch.tanh(x) * SCALE

    compiled = torch.compile(f, backend="accelir")
    x = torch.randn(4)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), f(x))
        SCALE = 3.0
        torch.testing.assert_close(compiled(x), f(x))
    assert len(compiles) >= 1


SCALE = 0.5


def test_autograd_runs_eagerly_after_one_warning(compiles):
    torch.manual_seed(0)
    model = GraphBreaks()
    compiled = torch.compile(model, backend="accelir")
    x = torch.randn(3, 8)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        out = compiled(x)
        out.sum().backward()
    messages = _eager_warnings(record)
    assert len(messages) == 1 and "inference graphs" in messages[0] and "torch.no_grad()" in messages[0]
    assert not compiles
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x).sum().backward()
    for a, b in zip(grads, [p.grad for p in model.parameters()]):
        torch.testing.assert_close(a, b)
    with torch.no_grad():  # Dynamo guards on the grad mode: here the graphs compile with accelir
        _assert_matches(compiled(x), model(x))
    assert compiles


# ----- options ---------------------------------------------------------------------------

def test_unknown_option_and_backend_are_clear_errors():
    x = torch.randn(2, 8)
    with torch.no_grad():
        with pytest.raises(Exception, match="unknown option 'levle'; the options are backend, level"):
            torch.compile(nn.Linear(8, 2), backend="accelir", options={"levle": 1})(x)
        torch._dynamo.reset()
        with pytest.raises(Exception, match="options\\['backend'\\] is 'tvm'"):
            torch.compile(nn.Linear(8, 2), backend="accelir", options={"backend": "tvm"})(x)


def test_precision_goes_to_optimize_where_it_takes_one(monkeypatch, compiles):
    x = torch.randn(2, 8)
    monkeypatch.setattr(accelir_dynamo, "_optimize_parameters", lambda: {"backend", "level"})
    with torch.no_grad(), pytest.raises(Exception, match="precision.*optimize\\(\\) takes precision="):
        torch.compile(nn.Linear(8, 2), backend="accelir", options={"precision": "fp16"})(x)
    monkeypatch.undo()
    torch._dynamo.reset()

    seen = []
    real = accelir.api.optimize

    def optimize(model, example_inputs=None, *, precision=None, **kwargs):
        seen.append(precision)
        return real(model, example_inputs, **kwargs)

    monkeypatch.setattr(accelir.api, "optimize", optimize)
    model = nn.Linear(8, 2).eval()
    with torch.no_grad():
        _assert_matches(torch.compile(model, backend="accelir", options={"precision": "fp16"})(x), model(x))
    assert seen == ["fp16"]


def test_level_passes_and_dump_dir_per_graph(tmp_path, compiles):
    torch.manual_seed(0)
    model = GraphBreaks().eval()
    options = {"level": 1, "passes": ["dce"], "debug": {"dump_dir": str(tmp_path)}}
    x = torch.randn(3, 8)
    with torch.no_grad():
        _assert_matches(torch.compile(model, backend="accelir", options=options)(x), model(x))
    dumps = sorted(p.name for p in tmp_path.iterdir())
    assert dumps == [f"graph{i:03d}" for i in range(len(compiles))] and len(dumps) >= 3
    assert all((tmp_path / d / "000-input.air").is_file() for d in dumps)
    assert all(c.report.passes is not None and [r.name for r in c.report.passes.records] == ["dce"] for c in compiles)


# ----- discovery ---------------------------------------------------------------------------

def _python(code: str) -> str:
    env = dict(os.environ, PYTHONWARNINGS="error::UserWarning")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_found_by_name_through_the_entry_point_and_registered_by_import():
    # installed: Dynamo lists it and compiles with it without an import of accelir
    out = _python(
        "import sys, torch, torch._dynamo\n"
        "assert 'accelir' in torch._dynamo.list_backends() and 'accelir' not in sys.modules\n"
        "f = torch.compile(lambda x: torch.relu(x) + 1, backend='accelir')\n"
        "with torch.no_grad():\n"
        "    x = torch.randn(3)\n"
        "    assert torch.equal(f(x), torch.relu(x) + 1)\n"
        "print(sorted(m for m in sys.modules if m.startswith('accelir.lowering.onnx')))\n")
    assert "accelir.lowering.onnx" in out
    # import accelir registers it where torch._dynamo is loaded, and the entry point then agrees
    _python(
        "import torch._dynamo.backends.registry as r\n"
        "import accelir, accelir.dynamo\n"
        "assert r._COMPILER_FNS['accelir'] is accelir.dynamo.accelir_backend\n"
        "assert 'accelir' in r.list_backends() and r.lookup_backend('accelir') is accelir.dynamo.accelir_backend\n")
    # and importing accelir alone imports no torch
    _python("import sys, accelir\nassert 'torch' not in sys.modules, 'torch imported'\n")


def test_options_that_are_not_a_dict_or_have_odd_keys_are_clear_errors():
    from accelir import AccelirError
    from accelir.dynamo import BackendOptions
    with pytest.raises(AccelirError, match="options must be a dict, got str"):
        BackendOptions.parse("fast")
    with pytest.raises(AccelirError, match="unknown options 'x', 1;"):
        BackendOptions.parse({1: 2, "x": 3})
