"""Slices, joins and merges along axes whose size the data decide, on XLA and onnxruntime.

A split by ``.tolist()`` counts whose second part starts where the first ends, a join of such
parts, a window starting at a count, a table cut at ``max // 4 + 1`` rows and merged with the
axis after it: on XLA each runs on a buffer padded to the size's bound with the valid rows packed
to its front (lowering/jax/padded_shape.py).  Each model is compiled once and called with data
that put the data-dependent sizes at 0 and at their bound, against eager torch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import accelir
from accelir import dims as D
from accelir.errors import InputError, LoweringError
from accelir.ir import DType, Graph, TensorType
from accelir.lowering.jax.padded_dims import dim_range

from torch_fn import assert_same_outputs


class Fn(torch.nn.Module):
    """``fn`` as a module, here rather than from torch_fn: non-strict torch.export records only
    ``forward`` frames as a node's stack trace, and the refusal tests match this file in the source line."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


def _same(want, got) -> None:
    assert_same_outputs(want, got, 1e-5)


def _experts(x, ids, w):
    """JetMoE's grouping: rows sorted by expert, split by ``.tolist()`` counts (part ``i`` starts at the
    sum of the counts before it), a weight per part, the parts joined back and split again."""
    sizes = (ids[:, None] == torch.arange(3)).sum(0).tolist()
    parts = x[torch.argsort(ids, stable=True)].split(sizes, dim=0)
    y = torch.cat([p @ w[i] for i, p in enumerate(parts)])
    again = y.split(sizes, dim=0)
    return y, parts[1] * 2, again[2].sum(0), torch.cat([again[2], again[0]]).cumsum(0)


def _routed(x, ids, gates):
    """JetMoE's return to the tokens: the parts' join (its size the sum of the counts, which torch checks
    is the token count) added to its tokens' rows (``index_add`` broadcasts the 8 indices to it), and
    scaled by the 8 tokens' gates."""
    sizes = (ids[:, None] == torch.arange(3)).sum(0).tolist()
    order = torch.argsort(ids, stable=True)
    joined = torch.cat([p * (i + 1) for i, p in enumerate(x[order].split(sizes, dim=0))])
    return torch.zeros(8, 4).index_add(0, order, joined), joined * gates[order][:, None]


def _window(x, y):
    """A window of ``y`` starting at a count, the rest of ``y`` after it (size ``9 - n``), every other one."""
    n = (x > 0).sum().item()
    return y.narrow(0, n, 3) * 2, y[n:] + 1, y[n:].sum(), y[n:].cumsum(0), y[n::2] * 3


def _joined(x):
    """Selections of two counts joined (size ``2 * n + m``), then reduced along the join."""
    n = (x > 0).sum().item()
    m = (x < -1).sum().item()
    torch._check(n <= 8)  # the bounds XLA pads to
    torch._check(m <= 8)
    j = torch.cat([x[:n] * 2, x.flip(0)[:m], x[:n]])
    return j, j.sum(), j.cumsum(0), torch.softmax(j, 0)


def _table(table, pos):
    """Reformer's axial positions: a table cut at ``max // 4 + 1`` rows, two cuts joined on the last axis,
    the rows merged with the axis after them, then read at the positions."""
    m = pos.max().item()
    torch._check(m >= 0)
    torch._check(m < 16)
    c = (m + 4) // 4
    t = torch.cat([table[:, :c], table[:, :c] * 2], dim=-1)
    flat = t.reshape(2, -1, t.shape[-1])
    return torch.stack([flat[i].index_select(0, pos[i]) for i in range(2)]), t.sum((1, 2)), t * 3


def _regrouped(x):
    """Rows cut at a count, flattened (``4 * n``), then grouped again by 4 and by 2."""
    n = (x[:, 0] > 0).sum().item()
    torch._check(n <= 6)
    flat = x[:n].reshape(-1) * 2
    return flat, flat.view(-1, 4).cumsum(0), flat.view(n, 2, 2).amax(1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


W = torch.randn(3, 4, 5, generator=_gen(0))
TABLE = torch.randn(2, 4, 4, 3, generator=_gen(1))
X8 = torch.randn(8, 4, generator=_gen(2))
GATES = torch.rand(8, generator=_gen(10))

# each model, then its calls: the data-dependent sizes at 0, in between and at their bound
CASES = {
    "split by counts, joined, split again": (_experts, [
        (X8, torch.tensor([2, 0, 1, 2, 2, 0, 1, 2]), W),
        (X8, torch.tensor([0, 0, 0, 0, 0, 0, 0, 0]), W),  # parts 1 and 2 empty, part 0 at its bound
        (X8, torch.tensor([1, 1, 1, 1, 1, 1, 1, 1]), W),
        (X8, torch.tensor([2, 2, 2, 2, 2, 2, 2, 2]), W)]),
    "joined parts added back to their tokens": (_routed, [
        (X8, torch.tensor([2, 0, 1, 2, 2, 0, 1, 2]), GATES),
        (X8, torch.tensor([0, 0, 0, 0, 0, 0, 0, 0]), GATES),
        (X8, torch.tensor([2, 1, 2, 1, 2, 1, 2, 1]), GATES)]),
    "window at a count and the rest": (_window, [
        (torch.randn(6, generator=_gen(3)), torch.randn(9, generator=_gen(4))),
        (-torch.ones(6), torch.randn(9, generator=_gen(5))),  # n = 0
        (torch.ones(6), torch.randn(9, generator=_gen(6)))]),  # n = 6, its bound
    "selections of two counts joined": (_joined, [
        (torch.randn(8, generator=_gen(7)) * 2,),
        (torch.zeros(8),),  # both counts 0
        (torch.ones(8),),  # n at its bound
        (-torch.full((8,), 3.0),)]),  # m at its bound
    "rows flattened and grouped again": (_regrouped, [
        (torch.randn(6, 4, generator=_gen(12)),),
        (-torch.ones(6, 4),),  # no rows
        (torch.ones(6, 4),)]),  # every row
    "table cut at max // 4 + 1 and merged": (_table, [
        (TABLE, torch.tensor([[0, 3, 5, 2, 1], [4, 6, 7, 0, 2]])),
        (TABLE, torch.tensor([[0, 0, 0, 0, 0], [0, 0, 0, 0, 0]])),  # m = 0: one row kept
        (TABLE, torch.tensor([[15, 3, 9, 0, 1], [14, 12, 7, 6, 2]]))]),  # m = 15: every row
}


@pytest.mark.parametrize("backend", ["xla", "onnxruntime"])
@pytest.mark.parametrize("case", list(CASES))
def test_slices_and_joins_along_data_dependent_sizes_match_eager(case, backend):
    fn, calls = CASES[case]
    model = Fn(fn)
    compiled = accelir.optimize(model, calls[0], backend=backend)
    for args in calls:
        _same(model(*args), compiled(*args))
    if backend == "xla":  # one program for every size: the lengths are traced values, not shapes
        assert compiled._runner._jitted._cache_size() == 1


def test_a_window_past_the_end_is_an_input_error_not_padding():
    """A window of 4 starting at a count of nonzeros (up to 6) in 7 entries: past the end the IR's slice is
    out of its axis, which the padded rule checks at run time rather than returning padding."""
    g = Graph("window")
    x = g.add_input(TensorType(DType.f32, (6,)), "x")
    y = g.add_input(TensorType(DType.f32, (7,)), "y")
    n = g.apply("nonzero", x).shape[1]
    g.set_outputs([g.apply("slice", y, starts=(n,), stops=(D.dim_add(n, 4),), axes=(0,))])
    compiled = accelir.optimize(g, backend="xla")
    y_ = np.arange(7, dtype=np.float32)
    for x_ in (np.zeros(6, np.float32), np.asarray([0, 1, 0, 2, 3, 0], np.float32)):  # counts 0 and 3
        n_ = int(np.count_nonzero(x_))
        np.testing.assert_array_equal(compiled(x_, y_), y_[n_:n_ + 4])
    with pytest.raises(InputError, match=r"^node 'slice' .*bounds on axis 0 \(u0:u0\+4\) fall outside the axis"):
        compiled(np.ones(6, np.float32), y_)


def test_a_reshape_splitting_a_joined_size_is_refused_by_name():
    """Splitting a padded axis would spread its padding through the result: refused, naming the node and line."""
    def fn(x):
        n = (x > 0).sum().item()
        torch._check(n <= 4)
        return torch.cat([x[:n], x[:n]]).reshape(2, n)

    with pytest.raises(LoweringError, match=r"^node 'reshape' .*test_xla_padded_joins\.py:\d+.*merges or splits a "
                                            r"data-dependent dim.*backend=\"onnxruntime\"") as e:
        accelir.optimize(Fn(fn), (torch.randn(8),), backend="xla")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("dim, ranges, want", [
    ("(u0+4)//4", {"u0": (0, 15)}, (1, 4)),
    ("-u0+9", {"u0": (0, 6)}, (3, 9)),
    ("2*u0+u1", {"u0": (0, 8), "u1": (1, 3)}, (1, 19)),
    ("4*((u0+4)//4)", {"u0": (0, 15)}, (4, 16)),
    ("u0%4", {"u0": (0, 15)}, (0, 3)),
    ("u0%16", {"u0": (2, 15)}, (2, 15)),
    ("u0*u1", {"u0": (0, 8), "u1": (0, 3)}, (0, 24)),
    ("u0//-2", {"u0": (0, 7)}, (-4, 0)),
    ("-(u0//-2)", {"u0": (0, 7)}, (0, 4)),
    ("u0%-4", {"u0": (0, 15)}, (-3, 0)),
], ids=str)
def test_the_range_of_a_dim_computed_from_bounded_sizes(dim, ranges, want):
    assert dim_range(dim, ranges.get) == want
    assert dim_range(dim, {}.get) is None


def test_a_scatter_whose_indices_and_updates_differ_on_a_padded_axis_is_refused():
    """Where the indices' padding and the updates' do not line up, which updates are padding is not known."""
    g = Graph("scatter")
    x = g.add_input(TensorType(DType.f32, (6,)), "x")
    n = g.apply("nonzero", x).shape[1]
    upd = g.apply("slice", x, starts=(0,), stops=(n,), axes=(0,))
    idx = g.apply("broadcast_to", g.const(np.zeros(1, np.int64), name="zero"), shape=(n,))
    other = g.apply("concat", upd, upd, axis=0)  # 2*u0 updates for u0 indices: the type rule takes them equal
    g.set_outputs([g.apply("scatter_elements", x, idx, other, axis=0, reduction="add")])
    with pytest.raises(LoweringError, match=r"^node 'scatter_elements' .*indices and updates differ on axis 0 "
                                            r"\(u0, 2\*u0\).*backend=\"onnxruntime\""):
        accelir.optimize(g, backend="xla")


def test_a_scatter_index_outside_a_padded_axis_is_an_input_error_not_a_write_to_a_valid_row():
    """Along a padded axis a negative index counts from the valid end; one before the start (-8 of 3 valid rows in
    a buffer of 6) would count from the buffer's end onto a valid row: refused at run time, as onnxruntime does."""
    g = Graph("scatter")
    x = g.add_input(TensorType(DType.f32, (6,)), "x")
    idx = g.add_input(TensorType(DType.i64, (2,)), "idx")
    n = g.apply("nonzero", x).shape[1]
    rows = g.apply("slice", x, starts=(0,), stops=(n,), axes=(0,))
    upd = g.const(np.asarray([10, 20], np.float32), name="upd")
    g.set_outputs([g.apply("scatter_elements", rows, idx, upd, axis=0, reduction="add")])
    compiled = accelir.optimize(g, backend="xla")
    x_ = np.asarray([1, 2, 3, 0, 0, 0], np.float32)  # three valid rows
    for good in ([-1, 0], [-3, 2], [2, 2]):
        want = x_[:3].copy()
        np.add.at(want, np.asarray(good), [10, 20])
        np.testing.assert_array_equal(compiled(x_, np.asarray(good)), want)
    for bad in ([-8, 0], [-4, 0], [3, 0]):
        with pytest.raises(InputError, match=r"^node 'scatter_elements' .*an index along axis 0 falls outside its u0 "
                                              r"entries"):
            compiled(x_, np.asarray(bad))


def test_a_slice_to_a_ceil_division_of_a_count_runs_padded():
    """``-(n // -2)`` (n / 2 rounded up) divides by a negative constant: its bound is still the corners'."""
    g = Graph("ceil")
    x = g.add_input(TensorType(DType.f32, (6,)), "x")
    y = g.add_input(TensorType(DType.f32, (7,)), "y")
    n = g.apply("nonzero", x).shape[1]
    half = g.apply("slice", y, starts=(0,), stops=(D.dim_sub(0, D.dim_floordiv(n, -2)),), axes=(0,))
    g.set_outputs([g.apply("mul", half, half)])
    compiled = accelir.optimize(g, backend="xla")
    y_ = np.arange(7, dtype=np.float32) + 1
    for k in (0, 1, 2, 5, 6):
        x_ = np.asarray([1] * k + [0] * (6 - k), np.float32)
        np.testing.assert_array_equal(compiled(x_, y_), y_[:-(k // -2)] ** 2)
