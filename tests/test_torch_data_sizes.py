"""Sizes read from data in torch models: ``.item()`` / ``.tolist()`` numbers used as split sizes,
narrow / slice bounds, view shapes, zeros / arange lengths.  torch.export leaves them as unbacked
symbols (``u0``); the capture binds each to a run-time IR value, so one compiled model runs at
every size the data decide.  Checked against eager torch; XLA refuses them in one line."""

from __future__ import annotations

import pytest
import torch

import accelir
from accelir import dims as D
from accelir import InputError, LoweringError, UnsupportedOpError
from accelir.unbacked import unbacked_dims

from torch_fn import assert_same_outputs, compile_on


class Fn(torch.nn.Module):
    """``fn`` as a module.  Kept here rather than imported from torch_fn: non-strict torch.export records
    only the frames of ``forward`` methods as a node's stack trace, not the lambda's, so the source line
    an error names is this forward's, which the refusal tests check is in this file."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


def _same(want, got) -> None:
    assert_same_outputs(want, got, 1e-6)


def _grouped(x, ids):
    """Rows grouped by id with ``.tolist()`` counts, as mixture-of-experts layers group tokens per expert."""
    sizes = (ids[:, None] == torch.arange(3)).sum(0).tolist()
    parts = x[torch.argsort(ids, stable=True)].split(sizes, dim=0)
    return torch.stack([p.sum(0) * (i + 1) for i, p in enumerate(parts)]), \
        torch.cat([p * (i + 1) for i, p in enumerate(parts)])


def _narrowed(x):
    n = (x > 0).sum().item()
    return x.narrow(0, 0, n) * 2, x[n:], x[:n].sum()


def _viewed(x):
    n = (x[:, 0] > 0).sum().item()
    return x[:n].reshape(n * 4).view(n, 2, 2) + 1


def _created(x):
    n = (x > 0).sum().item()
    return torch.zeros(n, 3), x.new_zeros(n) + 1, torch.arange(n) * 2, torch.arange(1, n + 1)


def _inputs(seed: int, *shapes_and_shifts):
    gen = torch.Generator().manual_seed(seed)
    return [tuple(torch.randn(shape, generator=gen) + shift for shape, shift in call) for call in shapes_and_shifts]


# each model, then its calls: the data-dependent sizes differ from call to call (and reach 0)
CASES = {
    "split_with_sizes from .tolist()": (_grouped, [
        (torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([2, 0, 1, 2, 2, 0, 1, 2])),
        (torch.randn(8, 4, generator=torch.Generator().manual_seed(1)), torch.tensor([1, 1, 1, 1, 1, 0, 1, 1])),
        (torch.randn(8, 4, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 0, 0, 0, 0, 0, 0, 0]))]),
    "narrow and slices to an .item()": (_narrowed, _inputs(3, [((8,), 0.0)], [((8,), 1.0)], [((8,), -9.0)])),
    "view / reshape to an .item() size": (_viewed, _inputs(4, [((6, 4), 0.0)], [((6, 4), -0.8)], [((6, 4), 9.0)])),
    "zeros, new_zeros and arange of an .item() length": (_created, _inputs(5, [((8,), 0.0)], [((8,), -0.7)],
                                                                           [((8,), -9.0)])),
}


@pytest.mark.parametrize("backend", ["onnxruntime", "interpreter"])
@pytest.mark.parametrize("case", list(CASES))
def test_sizes_from_data_match_eager_at_each_calls_sizes(case, backend):
    fn, calls = CASES[case]
    model = Fn(fn)
    cm = compile_on(model, calls[0], backend)
    for args in calls:
        _same(model(*args), cm(*args))


def test_the_data_dependent_size_is_an_unbacked_dim_of_the_graph():
    graph = accelir.capture(Fn(_narrowed), (torch.randn(8),))
    found = unbacked_dims(graph)
    assert len(found) == 1
    (sym,) = found
    assert found[sym].node.op == "constant_of_shape"  # its length is the number .item() read
    assert sym in graph.outputs[0].shape  # narrow's result carries it
    assert graph.outputs[1].shape == (D.dim_sub(8, sym),)  # x[n:]: torch's own symbol does not leak


def test_a_number_read_only_as_a_number_leaves_no_size_behind():
    """topk's k from .item() is read from its tensor: no witness of it stays, and XLA pads the top-k."""
    model = Fn(lambda x: torch.topk(x, (x > 0).sum().item())[0].sum())
    graph = accelir.capture(model, (torch.randn(9),))
    assert "constant_of_shape" not in {n.op for n in graph.nodes}
    x = torch.randn(9, generator=torch.Generator().manual_seed(6))
    _same(model(x), accelir.optimize(model, (x,), backend="xla")(x))


# what XLA does with each: pads it where the size has a bound torch.export recorded (a count of 6 rows
# is at most 6) and stays a whole dim, else refuses in one line naming the node, its source and the remedy
XLA = {
    "split_with_sizes from .tolist()": None,
    "narrow and slices to an .item()": None,
    "view / reshape to an .item() size": None,
    "zeros, new_zeros and arange of an .item() length": r"^node 'constant_of_shape' .*\[test_torch_data_sizes\.py:"
                                                        r"\d+; item\]: its output size .*no upper bound",
}


@pytest.mark.parametrize("case", list(CASES))
def test_xla_pads_a_bounded_size_or_refuses_in_one_line(case):
    fn, calls = CASES[case]
    model = Fn(fn)
    if XLA[case] is None:
        cm = accelir.optimize(model, calls[0], backend="xla")
        for args in calls:
            _same(model(*args), cm(*args))
        return
    with pytest.raises(LoweringError, match=XLA[case] + r".*backend=\"onnxruntime\"") as e:
        accelir.optimize(model, calls[0], backend="xla")
    assert "\n" not in str(e.value)


def _checked(x):
    n = (x > 0).sum().item()
    torch._check(n <= 5)
    return torch.arange(n) * 2, torch.zeros(n, 2) + x[:1]


@pytest.mark.parametrize("backend", ["onnxruntime", "xla"])
def test_the_range_torch_checks_on_an_item_is_checked_at_run_time(backend):
    """``torch._check(n <= 5)`` bounds the size: XLA pads to 5; past it both backends raise, as torch does."""
    model = Fn(_checked)
    ok = [torch.tensor([1.0, -1, 2, -3, 0, 0, 0, 0]), -torch.arange(8.0), (torch.arange(8.0) < 5).float()]
    cm = accelir.optimize(model, (ok[0],), backend=backend)
    for x in ok:  # 2, 0 and 5 positive entries
        _same(model(x), cm(x))
    with pytest.raises(RuntimeError):
        model(torch.ones(8))
    with pytest.raises(InputError, match=r"constant_of_shape.*(outside 0\.\.5|past the bound).*keep the data within"):
        cm(torch.ones(8))


def _from_count(x, y):
    """A window of y starting at a count: the count's node is read only through the slice's bounds."""
    return y.narrow(0, x.nonzero().shape[0], 2) * 2, y.narrow(0, (x > 0).sum().item(), 3) + 1


def test_a_size_read_only_by_a_slice_bound_keeps_its_node():
    gen = torch.Generator().manual_seed(7)
    calls = [(torch.randn(6, generator=gen) + shift, torch.randn(9, generator=gen)) for shift in (0.0, 2.0, -2.0)]
    model = Fn(_from_count)
    cm = accelir.optimize(model, calls[0], backend="onnxruntime")
    for args in calls:
        _same(model(*args), cm(*args))


def test_xla_runs_a_slice_starting_at_a_padded_size():
    """On XLA a count from nonzero is held at its bound; the slice reads its start from the count's valid
    length at run time, not from the bound."""
    model = Fn(lambda x, y: y.narrow(0, x.nonzero().shape[0], 2) * 2)
    y = torch.randn(9, generator=torch.Generator().manual_seed(10))
    cm = accelir.optimize(model, (torch.randn(6), y), backend="xla")
    for x in (torch.tensor([0.0, 1, 0, 2, 0, 3]), torch.zeros(6), torch.ones(6)):  # counts 3, 0 and 6
        _same(model(x, y), cm(x, y))


@pytest.mark.slow
@pytest.mark.parametrize("model_type, class_name", [("jetmoe", "JetMoeModel"), ("reformer", "ReformerModel")])
def test_sweep_models_sized_by_data_match_eager_on_both_backends(model_type, class_name):
    """The transformers sweep's small configs: JetMoE groups tokens per expert by ``.tolist()`` counts,
    Reformer cuts its axial position table at ``position_ids.max().item()``.  XLA pads the sizes to the
    bounds torch.export recorded; JetMoE's second expert starts where the first ends and the parts are
    joined, Reformer cuts at ``max // 64 + 1`` and merges the rows: both run on padded buffers."""
    import numpy as np
    import torch.utils._pytree as pytree

    from accelir.accuracy import DEFAULT_BUDGETS, measure
    from benchmarks import transformers_sweep as sweep

    model, kwargs, want, _ = sweep.build(sweep.Case("text", model_type, class_name))
    graph = accelir.capture(model, (), example_kwargs=kwargs)
    signature = graph.meta.pop("signature")
    assert any(u.node.op == "constant_of_shape" for u in unbacked_dims(graph).values())
    # other tokens route otherwise (other counts per expert): one compiled model serves both
    other = {**kwargs, "input_ids": torch.randint(0, sweep.VOCAB, kwargs["input_ids"].shape,
                                                  generator=torch.Generator().manual_seed(11))}
    with torch.no_grad():
        leaves = pytree.tree_leaves(model(**other))
    calls = [(kwargs, want), (other, [x for x in leaves if isinstance(x, torch.Tensor)])]
    flats = [[np.asarray(x) for x in signature.flatten(**kw)] for kw, _ in calls]
    for backend in ("onnxruntime", "xla"):
        compiled = accelir.optimize(graph, flats[0], backend=backend)
        for flat, (_, expected) in zip(flats, calls):
            got = compiled(*flat)
            got = [np.asarray(x) for x in (got if isinstance(got, (list, tuple)) else [got])]
            assert not DEFAULT_BUDGETS["fp32"].violations(measure([w.detach().numpy() for w in expected], got)), \
                backend


def _first(x, k):
    n = k.item()
    return x[:n] * 2, torch.arange(n, dtype=torch.int32)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int16, torch.uint8])
def test_an_item_of_every_integer_dtype_sizes_the_graph_at_run_time(dtype):
    model = Fn(_first)
    x = torch.randn(8, generator=torch.Generator().manual_seed(8))
    cm = accelir.optimize(model, (x, torch.tensor(3, dtype=dtype)), backend="onnxruntime")
    for k in (3, 0, 8, 5):
        _same(model(x, torch.tensor(k, dtype=dtype)), cm(x, torch.tensor(k, dtype=dtype)))


def _means(x):
    n = (x[:, 0] > 0).sum().item()
    torch._check(n <= x.shape[0])  # a bound XLA pads to
    return x[:n].mean(), x[:n].mean(0), x[x > 0].mean()


@pytest.mark.parametrize("backend", ["onnxruntime", "xla", "interpreter"])
def test_a_mean_over_a_data_dependent_size_of_zero_is_nan_as_in_torch(backend):
    """A mean over no entries is nan in torch; onnxruntime's ReduceMean of none would give 0."""
    model = Fn(_means)
    gen = torch.Generator().manual_seed(9)
    calls = [torch.randn(6, 3, generator=gen), -torch.rand(6, 3, generator=gen) - 0.1]
    cm = compile_on(model, (calls[0],), backend)
    for x in calls:
        want = model(x)
        assert want[0].isnan().item() == (x is calls[1])
        for w, g in zip(want, cm(x)):
            torch.testing.assert_close(torch.as_tensor(g), w, rtol=1e-6, atol=1e-6, equal_nan=True)


def test_a_float16_mean_over_a_large_run_time_size_is_not_overflowed():
    """The empty-mean fix must keep ReduceMean's own accumulation: a float16 sum of 70000 ones, or its count,
    is past float16's range (65504), so a sum over a count would be inf / inf."""
    model = Fn(lambda x: (x.mean(0), x[x > 0].mean()))
    x = torch.ones(70000, 2, dtype=torch.float16)
    cm = accelir.optimize(model, (x[:10],), backend="onnxruntime", dynamic_shapes=(({0: torch.export.Dim("n")},),))
    for w, g in zip(model(x), cm(x)):
        torch.testing.assert_close(torch.as_tensor(g), w, equal_nan=False)


@pytest.mark.parametrize("fn", [lambda x: x * x.sum().item(), lambda x: x * (x.sum() > 0).item()],
                         ids=["float", "bool"])
def test_a_float_or_bool_item_is_refused_saying_to_keep_it_a_tensor(fn):
    """Only an integer .item() is carried (bound to a run-time value); a float or bool one is refused in one
    line naming the node's source and the remedy, not as an op accelir lacks."""
    with pytest.raises(UnsupportedOpError) as e:
        accelir.capture(Fn(fn), (torch.randn(4),))
    first = str(e.value).splitlines()[0]
    assert first.startswith("torch op item at ") and "test_torch_data_sizes.py" in first
    assert "python number" in first and "keep it a tensor" in first and "no accelir mapping" not in first
