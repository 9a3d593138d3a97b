"""torch's scatter family, histc and grouped matmul (what mixture-of-experts routing uses),
captured and run on both backends against eager torch."""

from __future__ import annotations

import pytest
import torch

import accelir

from torch_fn import Fn

BACKENDS = ["onnxruntime", "xla"]


def _check(fn, *inputs, backend, exact=False, tol=1e-5):
    model = Fn(fn).eval()
    cm = accelir.optimize(model, inputs, backend=backend)
    want, got = model(*inputs), cm(*inputs)
    want, got = (want, got) if isinstance(want, tuple) else ((want,), (got,))
    for w, g in zip(want, got):
        if exact:
            torch.testing.assert_close(g, w, rtol=0, atol=0)
        else:
            torch.testing.assert_close(g, w, rtol=tol, atol=tol)


def _idx(shape, high, seed=0):
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("backend", BACKENDS)
def test_scatter_src_value_and_add(backend):
    torch.manual_seed(0)
    x, src = torch.randn(5, 4), torch.randn(6, 4)
    i = _idx((3, 4), 5)
    _check(lambda x, i, s: (x.scatter(0, i, s), x.scatter(1, i[:, :2] % 4, 2.5), x.scatter_add(0, i, s)),
           x, i, src, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduce", ["sum", "prod", "mean", "amax", "amin"])
@pytest.mark.parametrize("include_self", [True, False])
def test_scatter_reduce(reduce, include_self, backend):
    torch.manual_seed(1)
    x, src, i = torch.randn(4, 3), torch.randn(5, 3), _idx((5, 3), 4, seed=1)
    _check(lambda x, i, s: x.scatter_reduce(0, i, s, reduce, include_self=include_self), x, i, src, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_scatter_reduce_amax_without_self(backend):
    x, src, i = torch.arange(12).reshape(4, 3), torch.randint(-50, 50, (5, 3)), _idx((5, 3), 4, seed=2)
    _check(lambda x, i, s: x.scatter_reduce(0, i, s, "amax", include_self=False), x, i, src, backend=backend,
           exact=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_index_add_copy_and_reduce(backend):
    torch.manual_seed(3)
    x, src = torch.randn(6, 4), torch.randn(3, 4)
    rows = torch.tensor([4, 0, 4])
    _check(lambda x, r, s: (x.index_add(0, r, s, alpha=2.0), x.index_add(1, r[:2] % 4, x[:, :2] * 0.5),
                            x.index_copy(0, torch.tensor([5, 1, 2]), s), x.index_reduce(0, r, s, "amax")),
           x, rows, src, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bins, lo, hi", [(5, -1.0, 1.0), (7, 0.0, 0.0), (4, 0.1, 0.7)])
def test_histc(bins, lo, hi, backend):
    torch.manual_seed(4)
    x = torch.randn(3, 50)
    x[0, :3] = torch.tensor([hi, lo, float("nan")]) if lo != hi else x[0, :3]
    _check(lambda x: torch.histc(x, bins=bins, min=lo, max=hi), x, backend=backend, exact=True)


def test_histc_of_a_constant_input_widens_the_range_as_torch_does():
    x = torch.full((10,), 3.0)
    _check(lambda x: torch.histc(x, bins=4), x, backend="onnxruntime", exact=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_grouped_mm_with_offsets_and_batched(backend):
    """Mixture-of-experts routing: rows sorted by expert, each group through its expert's weight
    (torch's kernel takes bf16 only)."""
    torch.manual_seed(5)
    a, w = torch.randn(10, 8, dtype=torch.bfloat16), torch.randn(3, 8, 16, dtype=torch.bfloat16)
    offs = torch.tensor([3, 3, 10], dtype=torch.int32)  # an empty middle group
    _check(lambda a, w, o: torch._grouped_mm(a, w, offs=o), a, w, offs, backend=backend, tol=1e-2)
    b = torch.randn(3, 5, 8, dtype=torch.bfloat16)
    _check(lambda b, w: torch._grouped_mm(b, w), b, w, backend=backend, tol=1e-2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_transformers_grouped_mm_fallback(backend):
    """transformers' mixture-of-experts layers call their own custom op on the CPU in float32;
    torch.export keeps it as one opaque node, which means a grouped matmul by offsets."""
    import transformers.integrations.moe  # noqa: F401 - importing it registers the op
    torch.manual_seed(6)
    a, w = torch.randn(10, 8), torch.randn(3, 8, 16)
    offs = torch.tensor([4, 4, 10], dtype=torch.int32)  # an empty middle group
    _check(lambda a, w, o: torch.ops.transformers.grouped_mm_fallback(a, w, o), a, w, offs, backend=backend)
