"""Complex tensors in the torch frontend: carried as (real, imaginary) pairs of real values, never
as an IR dtype.  Each op against eager torch on random inputs, on both backends, in float32 and
float64; a rotary embedding written as Llama 4's and DeepSeek-V2's; an FNet-style Fourier mixing
block; the refusals (a complex output, an op with no complex rule, a random draw in forward); and
the transformers models that needed them, at the sweep's small configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import accelir
from accelir import CaptureError, LoweringError, UnsupportedOpError

BACKENDS = ["onnxruntime", "xla"]
DTYPES = [torch.float32, torch.float64]


class Fn(torch.nn.Module):
    """``fn`` as a module.  Kept here rather than imported from torch_fn: non-strict torch.export records
    only the frames of ``forward`` methods as a node's stack trace, not the lambda's, so the source line
    an error names is this forward's, which the refusal tests check is in this file."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


def _inputs(shapes, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in shapes)


def _check(fn, args, backend, *, rtol=None):
    """``fn`` (a module or a function: real tensors in, real tensors out, complex ones between) compiled
    for ``backend`` against eager torch."""
    model = fn if isinstance(fn, torch.nn.Module) else Fn(fn)
    want = model(*args)
    got = accelir.optimize(model, args, backend=backend)(*args)
    want = want if isinstance(want, tuple) else (want,)
    got = tuple(got) if isinstance(got, (tuple, list)) else (got,)
    assert len(got) == len(want)
    f64 = want[0].dtype == torch.float64
    for w, g in zip(want, got):
        g = torch.as_tensor(g)
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        torch.testing.assert_close(g, w, rtol=rtol or (1e-10 if f64 else 1e-5), atol=1e-10 if f64 else 1e-5)


def _c(x):
    """A [..., 2] real tensor as complex."""
    return torch.view_as_complex(x)


def _r(z):
    return torch.view_as_real(z)


# ----- one op at a time -----------------------------------------------------------------

ELEMENTWISE = {
    "view_as_complex_real": (lambda x: _r(_c(x)), [(3, 4, 2)]),
    "mul": (lambda x, y: _r(_c(x) * _c(y)), [(3, 4, 2), (4, 2)]),
    "mul_real": (lambda x, y: _r(_c(x) * y), [(3, 4, 2), (3, 1)]),
    "mul_python_complex": (lambda x: _r(_c(x) * (2 - 0.5j)), [(5, 2)]),
    "add_alpha": (lambda x, y: _r(torch.add(_c(x), _c(y), alpha=3)), [(3, 4, 2), (3, 4, 2)]),
    "sub_real": (lambda x, y: _r(y - _c(x)), [(3, 4, 2), (3, 4)]),
    "rsub_python": (lambda x: _r(1.5 - _c(x)), [(3, 2)]),
    "div": (lambda x, y: _r(_c(x) / _c(y)), [(3, 4, 2), (3, 4, 2)]),
    "div_real": (lambda x, y: _r(_c(x) / (y.abs() + 1)), [(3, 4, 2), (3, 4)]),
    # torch scales by the divisor's size: no overflow of its square (huge) or underflow to 0 (tiny) in float32
    "div_huge": (lambda x, y: _r((_c(x) * 1e25) / (_c(y) * 1e25)), [(3, 4, 2), (3, 4, 2)]),
    "div_tiny": (lambda x, y: _r(_c(x) / (_c(y) * 1e-25)), [(3, 4, 2), (3, 4, 2)]),
    "neg_conj": (lambda x: _r(-_c(x).conj() * _c(x)), [(6, 2)]),
    "polar": (lambda r, t: _r(torch.polar(r.abs(), t)), [(3, 5), (3, 5)]),
    "complex": (lambda a, b: _r(torch.complex(a, b) * torch.complex(b, a)), [(3, 5), (3, 5)]),
    "real_imag": (lambda x, y: ((_c(x) * _c(y)).real, (_c(x) * _c(y)).imag), [(4, 2), (4, 2)]),
    "abs": (lambda x: _c(x).abs(), [(7, 2)]),
    "abs_huge_tiny_zero": (lambda x: torch.cat([(_c(x) * 1e25).abs(), (_c(x) * 1e-25).abs(), (_c(x) * 0).abs()]),
                           [(7, 2)]),
    "angle": (lambda x: _c(x).angle(), [(7, 2)]),
    "to_complex_and_back": (lambda x: (x.to(torch.complex128) * 1j).imag.to(x.dtype), [(3, 4)]),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(ELEMENTWISE))
def test_complex_arithmetic_matches_eager(case, dtype, backend):
    fn, shapes = ELEMENTWISE[case]
    if case == "angle" and dtype == torch.float64 and backend == "onnxruntime":
        with pytest.raises(LoweringError, match=r"node 'atan2'.*no Atan/.* kernel for f64"):
            _check(fn, _inputs(shapes, dtype), backend)  # onnxruntime's Atan takes float32 only
        return
    _check(fn, _inputs(shapes, dtype), backend)


def _layout(x, y):
    z = _c(x)  # [2, 3, 4]
    z = z.transpose(0, 1).reshape(3, 8)[:, 1::2].unsqueeze(0)  # [1, 3, 4]
    z = torch.cat([z, _c(y)[None]], dim=0).flatten(1)  # [2, 12]
    return _r(z.permute(1, 0)[2:9].contiguous())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_complex_layout_ops_apply_to_both_parts(dtype, backend):
    _check(_layout, _inputs([(2, 3, 4, 2), (3, 4, 2)], dtype), backend)


FFTS = {
    "fft": (lambda x: _r(torch.fft.fft(x)), [(3, 8)]),
    "fft_complex_dim0_n": (lambda x: _r(torch.fft.fft(_c(x), n=7, dim=0)), [(5, 3, 2)]),
    "ifft_ortho": (lambda x: _r(torch.fft.ifft(_c(x), norm="ortho")), [(4, 6, 2)]),
    "rfft_forward": (lambda x: _r(torch.fft.rfft(x, norm="forward")), [(2, 9)]),
    "rfft_n": (lambda x: _r(torch.fft.rfft(x, n=12, dim=1)), [(2, 9, 3)]),
    "irfft": (lambda x: torch.fft.irfft(_c(x)), [(3, 5, 2)]),
    "irfft_n": (lambda x: torch.fft.irfft(_c(x), n=9), [(3, 5, 2)]),
    "fftn_real_part": (lambda x: torch.fft.fftn(x, dim=(1, 2)).real, [(2, 6, 8)]),
    "fftn_all": (lambda x: _r(torch.fft.fftn(_c(x))), [(3, 4, 5, 2)]),
    "ifftn_s": (lambda x: _r(torch.fft.ifftn(_c(x), s=(3, 6))), [(2, 4, 5, 2)]),
    "fft2": (lambda x: _r(torch.fft.fft2(x)), [(2, 4, 6)]),
    "rfftn": (lambda x: _r(torch.fft.rfftn(x, dim=(0, 2))), [(4, 3, 6)]),
    "irfftn": (lambda x: torch.fft.irfftn(_c(x), dim=(0, 1)), [(4, 5, 2)]),
    "fft_roundtrip": (lambda x: torch.fft.ifft(torch.fft.fft(x)).real, [(2, 10)]),
    # aten's primitives, as a decomposed graph holds them (normalization 0: none, 1: 1 / sqrt(n), 2: 1 / n)
    "_fft_r2c": (lambda x: _r(torch.ops.aten._fft_r2c(x, [0, 2], 1, True)), [(3, 2, 6)]),
    "_fft_r2c_twosided": (lambda x: _r(torch.ops.aten._fft_r2c(x, [1], 0, False)), [(3, 5)]),
    "_fft_c2c_inverse": (lambda x: _r(torch.ops.aten._fft_c2c(_c(x), [0], 2, False)), [(4, 3, 2)]),
    "_fft_c2r": (lambda x: torch.ops.aten._fft_c2r(_c(x), [0, 1], 0, 7), [(3, 4, 2)]),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(FFTS))
def test_fft_matches_eager(case, dtype, backend):
    fn, shapes = FFTS[case]
    _check(fn, _inputs(shapes, dtype), backend, rtol=1e-4 if dtype == torch.float32 else None)


def test_complex_constant_is_split_into_two_real_constants():
    class Scaled(torch.nn.Module):  # Llama 4's vision rotary keeps its frequencies as a complex buffer
        def __init__(self):
            super().__init__()
            angles = torch.linspace(0, 3, 12).reshape(3, 4)
            self.register_buffer("freqs", torch.polar(torch.ones_like(angles), angles))

        def forward(self, x):
            return _r(_c(x) * self.freqs).flatten(-2)

    x = _inputs([(2, 3, 4, 2)], torch.float32)[0]
    model = Scaled()
    graph = accelir.capture(model, (x,))
    arrays = [a for a in graph.constants.values() if a.shape == (3, 4)]
    for part in (model.freqs.real, model.freqs.imag):
        assert any(np.array_equal(a, part.numpy()) for a in arrays)
    for backend in BACKENDS:
        _check(model, (x,), backend)


# ----- modules written like the models' ------------------------------------------------

class Rotary(torch.nn.Module):
    """Rotary embeddings as Llama 4 and DeepSeek-V2 write them: frequencies as ``torch.polar``, the
    query and key viewed as complex pairs, multiplied, viewed back as real and flattened."""

    def __init__(self, head_dim=8, theta=10000.0, scaling=1.0):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim))
        self.scaling = scaling

    def forward(self, q, k, position_ids):
        freqs = position_ids[..., None].float() * self.inv_freq
        freqs_cis = torch.polar(torch.ones_like(freqs), freqs) * self.scaling  # [batch, seq, head_dim / 2]
        q_ = torch.view_as_complex(q.float().reshape(*q.shape[:-1], -1, 2))  # [batch, seq, heads, head_dim / 2]
        k_ = torch.view_as_complex(k.float().reshape(*k.shape[:-1], -1, 2))
        q_out = torch.view_as_real(q_ * freqs_cis[:, :, None, :]).flatten(3)
        k_out = torch.view_as_real(k_ * freqs_cis.unsqueeze(2)).flatten(3)
        return q_out.type_as(q), k_out.type_as(k)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rotary_embedding_through_complex_numbers_matches_eager(backend):
    q, k = _inputs([(2, 5, 3, 8), (2, 5, 1, 8)], torch.float32)
    positions = torch.arange(5).expand(2, 5) + torch.tensor([[0], [7]])
    _check(Rotary(scaling=0.7), (q, k, positions), backend)


def test_rotary_embedding_keeps_a_dynamic_sequence_length():
    q, k = _inputs([(2, 5, 3, 8), (2, 5, 1, 8)], torch.float32)
    positions = torch.arange(5).expand(2, 5).contiguous()
    seq = torch.export.Dim("seq")
    shapes = {"q": {1: seq}, "k": {1: seq}, "position_ids": {1: seq}}
    cm = accelir.optimize(Rotary(), (q, k, positions), backend="onnxruntime", dynamic_shapes=shapes)
    q, k = _inputs([(2, 9, 3, 8), (2, 9, 1, 8)], torch.float32, seed=1)
    positions = torch.arange(9).expand(2, 9).contiguous()
    for w, g in zip(Rotary()(q, k, positions), cm(q, k, positions)):
        torch.testing.assert_close(torch.as_tensor(g), w, rtol=1e-5, atol=1e-5)


class FourierMixing(torch.nn.Module):
    """FNet's token mixing: the real part of a 2-d FFT over the sequence and hidden dims, then a residual
    layer norm."""

    def __init__(self, hidden=16):
        super().__init__()
        self.norm = torch.nn.LayerNorm(hidden)

    def forward(self, x):
        return self.norm(x + torch.fft.fftn(x, dim=(1, 2)).real)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fourier_mixing_block_matches_eager(backend):
    torch.manual_seed(0)
    block = FourierMixing().eval()
    x = _inputs([(2, 12, 16)], torch.float32)[0]
    _check(block, (x,), backend, rtol=1e-4)


def test_fourier_mixing_block_on_the_fx_path():
    torch.manual_seed(0)
    block = FourierMixing().eval()
    x = _inputs([(2, 12, 16)], torch.float32)[0]
    cm = accelir.optimize(block, (x,), backend="onnxruntime", method="fx")  # .real is a getattr node there
    torch.testing.assert_close(torch.as_tensor(cm(x)), block(x), rtol=1e-4, atol=1e-5)

    class Indexed(torch.nn.Module):  # x[...] of a complex tensor on the fx path
        def forward(self, x):
            return torch.view_as_complex(x)[1:, ::2].real

    x = x[..., :2].contiguous()
    z = accelir.optimize(Indexed(), (x,), method="fx", backend="onnxruntime")(x)
    torch.testing.assert_close(torch.as_tensor(z), x[1:, ::2, 0])


def test_fft_over_static_dims_keeps_other_dims_dynamic_and_refuses_a_dynamic_one():
    torch.manual_seed(0)
    block = FourierMixing().eval()
    x = _inputs([(2, 12, 16)], torch.float32)[0]
    cm = accelir.optimize(block, (x,), backend="onnxruntime", dynamic_shapes=({0: torch.export.Dim("batch")},))
    x = _inputs([(5, 12, 16)], torch.float32, seed=1)[0]
    torch.testing.assert_close(torch.as_tensor(cm(x)), block(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(UnsupportedOpError, match=r"fft_fftn .*FFT along dim 1, of size seq not known at capture"):
        accelir.capture(block, (x,), dynamic_shapes=({1: torch.export.Dim("seq")},))


# ----- refusals ----------------------------------------------------------------------

def test_a_complex_output_is_refused_naming_the_node_and_what_to_return():
    x = _inputs([(3, 2)], torch.float32)[0]
    with pytest.raises(CaptureError) as e:
        accelir.capture(Fn(lambda x: _c(x) * 2), (x,))
    msg = str(e.value)
    assert "complex tensor" in msg and "node mul" in msg and "torch.view_as_real" in msg
    assert "test_torch_complex.py" in msg and len(msg.splitlines()) == 1


def test_an_op_without_a_complex_rule_is_refused_naming_op_node_and_line():
    x = _inputs([(3, 2)], torch.float32)[0]
    with pytest.raises(CaptureError) as e:
        accelir.capture(Fn(lambda x: _r(torch.exp(_c(x)))), (x,))
    msg = str(e.value)
    assert msg.startswith("torch op exp (node exp) at ") and "test_torch_complex.py:" in msg
    assert "view_as_real" in msg and "polar" in msg and len(msg.splitlines()) == 1


def test_python_code_on_a_complex_tensor_on_the_fx_path_is_refused_naming_the_node():
    class Attribute(torch.nn.Module):
        def forward(self, x):
            return x * (torch.view_as_complex(x).dtype == torch.complex64)

    with pytest.raises(CaptureError, match=r"^torch op getattr \(node getattr\w*\) at .*python code on a complex"):
        accelir.capture(Attribute(), _inputs([(3, 2)], torch.float32), method="fx")


def test_a_complex_input_is_refused_pointing_to_view_as_real():
    z = torch.randn(3, dtype=torch.complex64)
    with pytest.raises(CaptureError, match=r"^input 'xs_0' is a torch.complex64 tensor.*pass torch.view_as_real"):
        accelir.capture(Fn(lambda z: torch.view_as_real(z)), (z,))


def test_a_random_draw_in_forward_is_refused_pointing_to_noise():
    x = _inputs([(2, 4)], torch.float32)[0]
    with pytest.raises(UnsupportedOpError) as e:
        accelir.capture(Fn(lambda x: x.argsort(dim=1) + torch.rand(x.shape).argsort(dim=1)), (x,))
    first = str(e.value).splitlines()[0]
    assert first.startswith("torch op rand at ") and "draws random numbers" in first and "noise=" in first


# ----- the transformers models ------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("model_type, class_name", [("fnet", "FNetModel"), ("vit_mae", "ViTMAEModel"),
                                                    ("deepseek_v2", "DeepseekV2Model"),
                                                    ("llama4_text", "Llama4TextModel")])
def test_transformers_models_with_complex_numbers_or_noise_match_eager(model_type, class_name):
    """The sweep's own build (small config, random weights, fixed inputs, ViT-MAE's noise)."""
    from accelir.accuracy import DEFAULT_BUDGETS, measure
    from benchmarks.transformers_sweep import Case, build
    family = "vision" if model_type == "vit_mae" else "text"
    model, kwargs, want, _ = build(Case(family, model_type, class_name))
    if model_type == "vit_mae":
        assert set(kwargs) == {"pixel_values", "noise"}
    graph = accelir.capture(model, (), example_kwargs=kwargs)
    flat = [np.asarray(x) for x in graph.meta.pop("signature").flatten(**kwargs)]
    want = [x.detach().numpy() for x in want]
    for backend in BACKENDS:
        got = accelir.optimize(graph, flat, backend=backend)(*flat)
        got = [np.asarray(x) for x in (got if isinstance(got, (list, tuple)) else [got])]
        assert not DEFAULT_BUDGETS["fp32"].violations(measure(want, got)), backend


@pytest.mark.slow
def test_llama4_vision_rotary_from_a_complex_buffer_matches_eager():
    """Llama 4's vision encoder keeps its rotary frequencies as a complex64 buffer (``freqs_ci``)."""
    from transformers import Llama4VisionConfig, Llama4VisionModel

    from accelir.accuracy import DEFAULT_BUDGETS, measure
    config = Llama4VisionConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                                vision_output_dim=64, image_size=64, patch_size=16, projector_input_dim=64,
                                projector_output_dim=64)
    torch.manual_seed(0)
    model = Llama4VisionModel(config).eval()
    assert model.rotary_embedding.freqs_ci.dtype == torch.complex64
    x = _inputs([(1, 3, 64, 64)], torch.float32)[0]
    with torch.no_grad():
        want = model(x).last_hidden_state.numpy()
    for backend in BACKENDS:
        got = np.asarray(accelir.optimize(model, (x,), backend=backend)(x).last_hidden_state)
        assert not DEFAULT_BUDGETS["fp32"].violations(measure([want], [got])), backend


def test_an_fft_whose_dft_matrix_is_too_large_is_refused_before_building_it(monkeypatch):
    """The DFT is built as constant matrices, a square of the points: past the cap (a 4096-point transform,
    lowered here) the capture refuses in one line instead of building gigabytes of constants."""
    from accelir.frontends.torch import complex_ops
    monkeypatch.setattr(complex_ops, "MAX_DFT_ENTRIES", 64 * 64, raising=False)
    x = _inputs([(3, 65)], torch.float32)[0]
    with pytest.raises(UnsupportedOpError) as e:
        accelir.capture(Fn(lambda x: torch.fft.fft(x).abs()), (x,))
    msg = str(e.value)
    assert msg.startswith("torch op fft_fft at ") and "65 points" in msg and len(msg.splitlines()) == 1
    accelir.capture(Fn(lambda x: torch.fft.fft(x[:, :64]).abs()), (x,))  # at the cap: built


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_complex_abs_and_division_at_zeros_and_infinities_match_eager(dtype, backend):
    """|inf + 1i| is inf, x / 0 is a complex inf and x / inf is 0, as in torch (Smith's division), not the nan
    that scaling by the larger part's size (inf / inf, 0 / 0) gives."""
    inf = float("inf")
    y = torch.tensor([[0.0, 0.0], [inf, 0.0], [inf, 1.0], [2.0, -inf], [1.0, 1.0], [1e30, 1e-30], [0.0, 3.0],
                      [-0.0, -0.0]], dtype=dtype)
    x = torch.tensor([[1.0, 2.0], [1.0, -1.0], [3.0, 0.5], [-2.0, 1.0], [1.0, 0.0], [2.0, 5.0], [4.0, -1.0],
                      [-1.0, 2.0]],
                     dtype=dtype)
    model = Fn(lambda x, y: (_c(y).abs(), _r(_c(x) / _c(y))))
    want = model(x, y)
    got = accelir.optimize(model, (x, y), backend=backend)(x, y)
    for w, g in zip(want, got):
        torch.testing.assert_close(torch.as_tensor(g), w, equal_nan=False)


def test_layers_transforming_the_same_dims_share_their_dft_matrices():
    """A Fourier-mixing stack: each layer's fftn reads the same constant matrices, made once per graph."""
    def stack(layers):
        def f(x):
            for _ in range(layers):
                x = torch.fft.fftn(x, dim=(1, 2)).real + x
            return x
        return Fn(f)

    def matrices(graph):
        return sum(1 for n in graph.nodes if n.op == "constant" and n.output.type.rank == 2)

    x = _inputs([(2, 12, 16)], torch.float32)[0]
    assert matrices(accelir.capture(stack(4), (x,))) == matrices(accelir.capture(stack(1), (x,))) > 0
    _check(stack(4), (x,), "onnxruntime", rtol=1e-4)
