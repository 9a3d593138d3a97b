"""torch ops whose output size the data decide, beyond selections: bincount (length max(x) + 1, at
least minlength) and topk with k computed by ``.item()``, captured as data-dependent ops and run
against eager torch, with the data-dependent size changing between calls of one compiled model."""

from __future__ import annotations

import pytest
import torch

import accelir
from accelir import InputError, LoweringError, UnsupportedOpError

from torch_fn import Fn, compile_on

VALUES = [torch.tensor([1, 4, 4, 2, 0, 1]), torch.tensor([0, 0, 9, 1, 1, 1]), torch.tensor([0, 0, 0, 0, 0, 0]),
          torch.tensor([2, 2, 3, 1, 0, 5])]


def _same(want, got, exact: bool) -> None:
    want = want if isinstance(want, tuple) else (want,)
    got = tuple(got) if isinstance(got, (tuple, list)) else (got,)
    assert len(want) == len(got)
    for w, g in zip(want, got):
        assert g.dtype == w.dtype and g.shape == w.shape, (g, w)
        if exact:
            assert torch.equal(g, w), (g, w)
        else:
            torch.testing.assert_close(g, w, rtol=1e-3 if w.dtype == torch.float16 else 1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", ["onnxruntime", "interpreter"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8])
@pytest.mark.parametrize("minlength", [0, 7])
def test_bincount_counts_at_lengths_the_data_decide(backend, dtype, minlength):
    model = Fn(lambda x: torch.bincount(x, minlength=minlength))
    cm = compile_on(model, (VALUES[0].to(dtype),), backend)
    assert "bincount" in {n.op for n in cm.graph.nodes}
    for x in VALUES:  # lengths 5, 10, 1 (or minlength 7) from one compiled model
        _same(model(x.to(dtype)), cm(x.to(dtype)), exact=True)


@pytest.mark.parametrize("backend", ["onnxruntime", "interpreter"])
@pytest.mark.parametrize("wdtype", [torch.float32, torch.float64, torch.float16])
def test_bincount_sums_weights_in_their_dtype(backend, wdtype):
    model = Fn(lambda x, w: torch.bincount(x, weights=w, minlength=3))
    gen = torch.Generator().manual_seed(0)
    w = torch.rand(6, generator=gen).to(wdtype)
    cm = compile_on(model, (VALUES[0], w), backend)
    for x in VALUES:
        w = torch.rand(6, generator=gen).to(wdtype)
        _same(model(x, w), cm(x, w), exact=False)


def test_bincount_of_an_empty_input_is_minlength_zeros():
    model = Fn(lambda x: torch.bincount(x, minlength=4))
    x = torch.zeros(0, dtype=torch.int64)
    for backend in ("onnxruntime", "interpreter"):
        _same(model(x), compile_on(model, (x,), backend)(x), exact=True)


@pytest.mark.parametrize("backend", ["onnxruntime", "interpreter"])
def test_a_negative_value_is_an_error_as_in_torch(backend):
    model = Fn(lambda x: torch.bincount(x))
    cm = compile_on(model, (VALUES[0],), backend)
    bad = torch.tensor([1, 4, -1, 2, 0, 1])
    with pytest.raises(RuntimeError):
        model(bad)
    with pytest.raises(InputError if backend == "onnxruntime" else accelir.AccelirError,
                       match="bincount: the input holds a negative value.*>= 0"):
        cm(bad)


def test_bincount_on_xla_is_refused_naming_the_op_and_the_remedy():
    with pytest.raises(LoweringError, match=r"bincount.*no upper bound.*backend=\"onnxruntime\"$") as e:
        accelir.optimize(Fn(lambda x: torch.bincount(x, minlength=16)), (VALUES[0],), backend="xla")
    assert "static_inputs" not in str(e.value)  # an option of the ONNX import, not of a torch capture


def _top_positive(x):
    k = (x > 0).sum().item()
    values, indices = torch.topk(x, k, dim=-1)
    return values, indices, values.sum()


@pytest.mark.parametrize("backend", ["onnxruntime", "xla", "interpreter"])
def test_topk_with_k_from_item_runs_at_each_calls_k(backend):
    model = Fn(_top_positive)
    gen = torch.Generator().manual_seed(1)
    cm = None
    for shift in (0.0, 0.6, -0.6, -5.0):  # k = about 4, 6, 2, then 0
        x = torch.randn(9, generator=gen) + shift
        cm = cm or compile_on(model, (x,), backend)
        assert "topk_dynamic" in {n.op for n in cm.graph.nodes}
        _same(model(x), cm(x), exact=False)  # indices exactly, the sum within rounding


def _top_positive_and_two(x):
    k = (x[:7] > 0).sum().item() + 2  # an expression of the .item() symbol, at most 9
    return torch.topk(x, k, largest=False)


@pytest.mark.parametrize("backend", ["onnxruntime", "xla"])
def test_topk_with_k_an_expression_of_item(backend):
    model = Fn(_top_positive_and_two)
    gen = torch.Generator().manual_seed(2)
    cm = None
    for shift in (0.0, 0.8, -0.8):
        x = torch.randn(9, generator=gen) + shift
        cm = cm or compile_on(model, (x,), backend)
        _same(model(x), cm(x), exact=True)


@pytest.mark.parametrize("backend, message", [("onnxruntime", "in TopK.*'topk_dynamic': k argument"),
                                              ("xla", r"node 'topk_dynamic'.*: k is negative or larger than the axis")])
def test_topk_with_k_past_the_dim_is_an_input_error(backend, message):
    """torch raises; XLA cannot raise inside its program, so it returns the check and the runner raises."""
    model = Fn(lambda x: torch.topk(x, (x > 0).sum().item() + 3))
    cm = compile_on(model, (-torch.arange(1.0, 10.0),), backend)
    with pytest.raises(RuntimeError):
        model(torch.ones(9))
    with pytest.raises(InputError, match=message):
        cm(torch.ones(9))
    _same(model(-torch.arange(1.0, 10.0)), cm(-torch.arange(1.0, 10.0)), exact=True)  # still runs after


def test_topk_with_k_a_symbolic_size_is_refused_clearly():
    model = Fn(lambda x: torch.topk(x, x.shape[0])[0] + x)
    with pytest.raises(UnsupportedOpError, match=r"topk with k = n, a symbolic size; give a static k.*\.item\(\)"):
        accelir.optimize(model, (torch.randn(9),), dynamic_shapes=(({0: torch.export.Dim("n")},),))


class TinyMoE(torch.nn.Module):
    """Router logits -> top-2 experts per token -> tokens per expert (bincount) for the load-balancing
    loss, and a loop over the experts weighting each one's output by its gate."""

    def __init__(self, d: int = 8, experts: int = 4):
        super().__init__()
        self.experts = experts
        self.router = torch.nn.Linear(d, experts, bias=False)
        self.ffn = torch.nn.ModuleList(torch.nn.Linear(d, d) for _ in range(experts))

    def forward(self, x):
        probs = self.router(x).softmax(-1)
        gates, ids = torch.topk(probs, 2, dim=-1)
        gates = gates / gates.sum(-1, keepdim=True)
        tokens = torch.bincount(ids.flatten(), minlength=self.experts)
        load = tokens.float() / ids.numel()
        aux = self.experts * (load * load).sum()
        out = torch.zeros_like(x)
        for e, ffn in enumerate(self.ffn):
            weight = (gates * (ids == e)).sum(-1, keepdim=True)
            out = out + weight * ffn(x)
        return out, tokens, aux


def test_tiny_moe_routing_matches_eager_on_onnxruntime():
    torch.manual_seed(0)
    model = TinyMoE().eval()
    x = torch.randn(5, 8)
    cm = accelir.optimize(model, (x,), backend="onnxruntime")
    assert "bincount" in {n.op for n in cm.graph.nodes}
    for seed in range(4):
        x = torch.randn(5, 8, generator=torch.Generator().manual_seed(seed)) * (1 + 3 * seed)
        want, got = model(x), cm(x)
        assert torch.equal(got[1], want[1])
        torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got[2], want[2], rtol=1e-5, atol=1e-6)
