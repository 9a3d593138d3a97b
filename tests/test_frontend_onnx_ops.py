"""ONNX ops that the importer decomposes (Einsum, RNN / GRU / LSTM, quantisation, DFT /
STFT, Loop, LRN, the window gathers and scatters, Det), checked on random inputs against
onnxruntime's own kernels or numpy, beyond the cases ONNX's node tests cover."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from accelir.frontends.onnx import import_onnx
from accelir.frontends.onnx.einsum import parse_einsum
from accelir.testing import assert_close, import_and_run, onnxruntime_outputs

F32 = TensorProto.FLOAT


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _model(nodes, inputs, outputs, inits=(), opset=22):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def _ours(model, feeds):
    return import_and_run(model, feeds)[1]


_theirs = onnxruntime_outputs


def _lowered(model, feeds):
    """import -> ONNX lowering -> onnxruntime (the lowering of scan / while_loop regions included)."""
    from accelir.lowering.onnx import to_onnx
    g = import_onnx(model)
    lowered = to_onnx(g)
    return onnxruntime_outputs(lowered, dict(zip([i.name for i in lowered.graph.input],
                                                 g.meta["signature"].flatten(feeds))))


# ----- Einsum ------------------------------------------------------------------------

@pytest.mark.parametrize("equation, shapes", [
    ("ij,jk->ik", [(3, 4), (4, 5)]),
    ("bij, bjk -> bik", [(2, 3, 4), (2, 4, 5)]),
    ("ii->i", [(4, 4)]),
    ("...ii->...i", [(2, 3, 3)]),
    ("i,i", [(5,), (5,)]),
    ("ij->", [(3, 4)]),
    ("ij", [(3, 4)]),
    ("ji", [(3, 4)]),
    ("ijk,ikl,ilm->jm", [(2, 3, 4), (2, 4, 5), (2, 5, 3)]),
    ("...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 2)]),
    ("ab,ab->a", [(3, 4), (3, 4)]),
    ("iij->j", [(3, 3, 2)]),
    ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)]),
])
def test_einsum_matches_numpy(equation, shapes):
    rng = _rng(1)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    names = [f"x{i}" for i in range(len(shapes))]
    want = np.einsum(equation.replace(" ", ""), *arrays)
    m = _model([helper.make_node("Einsum", names, ["y"], equation=equation)],
               [_vi(n, F32, list(s)) for n, s in zip(names, shapes)], [_vi("y", F32, None)], opset=12)
    got = _ours(m, dict(zip(names, arrays)))[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert got.shape == np.shape(want)


def test_einsum_parse_errors():
    assert parse_einsum("ij,jk", [2, 2]) == ([["i", "j"], ["j", "k"]], ["i", "k"])
    assert parse_einsum("...i->i...", [3]) == ([[".0", ".1", "i"]], ["i", ".0", ".1"])
    for eq, ranks in (("ij->k", [2]), ("ij,jk->ik", [2]), ("i->ii", [1]), ("ijk->i", [2])):
        with pytest.raises(ValueError):
            parse_einsum(eq, ranks)


# ----- RNN / GRU / LSTM --------------------------------------------------------------

_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def _recurrent_model(kind, seq, batch, size, hidden, direction="forward", layout=0, lengths=None, peephole=False,
                     initial=False, **attrs):
    rng = _rng(2)
    nd = 2 if direction == "bidirectional" else 1
    g = _GATES[kind]
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.5, n) for n, s in (
        ("W", (nd, g * hidden, size)), ("R", (nd, g * hidden, hidden)), ("B", (nd, 2 * g * hidden)))]
    ins = ["X", "W", "R", "B", "", "", "", ""][:8 if kind == "LSTM" else 6]
    if lengths is not None:
        inits.append(numpy_helper.from_array(np.array(lengths, np.int32), "L"))
        ins[4] = "L"
    if initial:
        hb = (batch, nd, hidden) if layout else (nd, batch, hidden)
        inits.append(numpy_helper.from_array(rng.standard_normal(hb).astype(np.float32), "H0"))
        ins[5] = "H0"
        if kind == "LSTM":
            inits.append(numpy_helper.from_array(rng.standard_normal(hb).astype(np.float32), "C0"))
            ins[6] = "C0"
    if peephole:
        inits.append(numpy_helper.from_array(rng.standard_normal((nd, 3 * hidden)).astype(np.float32), "P"))
        ins[7] = "P"
    outs = ["Y", "Y_h"] + (["Y_c"] if kind == "LSTM" else [])
    node = helper.make_node(kind, [x for x in ins], outs, hidden_size=hidden, direction=direction,
                            layout=layout, **attrs)
    xshape = [batch, seq, size] if layout else [seq, batch, size]
    m = _model([node], [_vi("X", F32, xshape)], [_vi(o, F32, None) for o in outs], inits)
    return m, {"X": rng.standard_normal(xshape).astype(np.float32)}


def _theirs_time_major(m, feeds):
    """onnxruntime has no batch-major (layout 1) kernels: run the time-major twin and transpose."""
    import onnx
    twin = onnx.ModelProto()
    twin.CopyFrom(m)
    node = twin.graph.node[0]
    for a in node.attribute:
        if a.name == "layout":
            a.i = 0
    dims = twin.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_value, dims[1].dim_value = dims[1].dim_value, dims[0].dim_value
    for t in twin.graph.initializer:
        if t.name in ("H0", "C0"):
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).transpose(1, 0, 2).copy(), t.name))
    outs = _theirs(twin, {"X": feeds["X"].transpose(1, 0, 2).copy()})
    return [outs[0].transpose(2, 0, 1, 3)] + [o.transpose(1, 0, 2) for o in outs[1:]]


@pytest.mark.parametrize("kind, options", [
    ("RNN", dict(direction="bidirectional", lengths=[4, 2, 1], initial=True)),
    ("RNN", dict(activations=["LeakyRelu"], activation_alpha=[0.2], layout=1)),
    ("GRU", dict(direction="reverse", lengths=[3, 4, 2])),
    ("GRU", dict(linear_before_reset=1, direction="bidirectional", initial=True, layout=1)),
    ("GRU", dict(activations=["HardSigmoid", "Softsign"], activation_alpha=[0.3], activation_beta=[0.4], clip=1.5)),
    ("LSTM", dict(direction="bidirectional", lengths=[4, 1, 3], peephole=True, initial=True)),
    ("LSTM", dict(layout=1, initial=True, clip=0.8)),
    ("LSTM", dict(input_forget=1, activations=["Sigmoid", "Elu", "ScaledTanh"], activation_alpha=[0.5, 1.5],
                  activation_beta=[0.7])),
])
def test_recurrent_matches_onnxruntime(kind, options):
    m, feeds = _recurrent_model(kind, seq=4, batch=3, size=5, hidden=6, **options)
    want = _theirs_time_major(m, feeds) if options.get("layout") else _theirs(m, feeds)
    assert_close(_ours(m, feeds), want, (1e-4, 1e-5))
    if kind == "LSTM":
        assert_close(_lowered(m, feeds), want, (1e-4, 1e-5))


def test_recurrent_is_a_scan():
    m, _ = _recurrent_model("GRU", seq=4, batch=2, size=3, hidden=2, direction="bidirectional")
    g = import_onnx(m)
    scans = [n for n in g.nodes if n.op == "scan"]
    assert len(scans) == 2 and [n.attrs["reverse"] for n in scans] == [False, True]
    assert all(n.attrs["length"] == 4 for n in scans)


# ----- quantisation ------------------------------------------------------------------

@pytest.mark.parametrize("zp_type, zp", [(TensorProto.UINT8, 128), (TensorProto.INT8, -3)])
def test_quantize_rounds_half_to_even_and_saturates(zp_type, zp):
    x = np.array([[-300.0, -2.5, -1.5, -0.5, 0.5, 1.5], [2.5, 3.5, 100.25, 127.5, 128.5, 1e6]], np.float32)
    per_axis = np.array([1.0, 0.5], np.float32)
    zps = np.array([zp, zp // 2], helper.tensor_dtype_to_np_dtype(zp_type))
    m = _model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=0),
                helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"], axis=0)],
               [_vi("x", F32, [2, 6])], [_vi("q", zp_type, [2, 6]), _vi("d", F32, [2, 6])],
               [numpy_helper.from_array(per_axis, "s"), numpy_helper.from_array(zps, "z")], opset=21)
    assert_close(_ours(m, {"x": x}), _theirs(m, {"x": x}), (0, 0))


def test_blocked_quantize_matches_onnxruntime():
    rng = _rng(3)
    x = rng.standard_normal((3, 5)).astype(np.float32) * 50
    scale = rng.uniform(0.2, 1.0, (3, 3)).astype(np.float32)
    m = _model([helper.make_node("QuantizeLinear", ["x", "s"], ["q"], axis=1, block_size=2,
                                 output_dtype=TensorProto.INT8)],
               [_vi("x", F32, [3, 5])], [_vi("q", TensorProto.INT8, [3, 5])], [numpy_helper.from_array(scale, "s")])
    want = np.clip(np.rint(x / np.repeat(scale, 2, axis=1)[:, :5]), -128, 127).astype(np.int8)
    np.testing.assert_array_equal(_ours(m, {"x": x})[0], want)


@pytest.mark.parametrize("op", ["QLinearMatMul", "MatMulInteger"])
def test_integer_matmuls_match_onnxruntime(op):
    rng = _rng(4)
    a = rng.integers(0, 256, (2, 3, 8), dtype=np.uint8)
    b = rng.integers(0, 256, (8, 4), dtype=np.uint8)
    u8 = TensorProto.UINT8
    if op == "MatMulInteger":
        node = helper.make_node(op, ["a", "b", "az", "bz"], ["y"])
        inits = [numpy_helper.from_array(np.array(120, np.uint8), "az"),
                 numpy_helper.from_array(np.array(7, np.uint8), "bz")]
        out = _vi("y", TensorProto.INT32, [2, 3, 4])
    else:
        node = helper.make_node(op, ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])
        inits = [numpy_helper.from_array(np.array(v, dt), n) for n, v, dt in (
            ("as", 0.02, np.float32), ("az", 120, np.uint8), ("bs", 0.03, np.float32), ("bz", 7, np.uint8),
            ("ys", 0.5, np.float32), ("yz", 100, np.uint8))]
        out = _vi("y", u8, [2, 3, 4])
    m = _model([node], [_vi("a", u8, [2, 3, 8]), _vi("b", u8, [8, 4])], [out], inits, opset=13)
    assert_close(_ours(m, {"a": a, "b": b}), _theirs(m, {"a": a, "b": b}), (0, 0))


def test_conv_integer_matches_onnxruntime():
    rng = _rng(5)
    x = rng.integers(0, 256, (1, 2, 6, 6), dtype=np.uint8)
    w = rng.integers(0, 256, (3, 2, 3, 3), dtype=np.uint8)
    m = _model([helper.make_node("ConvInteger", ["x", "w", "xz"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2])],
               [_vi("x", TensorProto.UINT8, [1, 2, 6, 6])], [_vi("y", TensorProto.INT32, None)],
               [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(9, np.uint8), "xz")], opset=13)
    assert_close(_ours(m, {"x": x}), _theirs(m, {"x": x}), (0, 0))


# ----- DFT / STFT --------------------------------------------------------------------

@pytest.mark.parametrize("inverse, onesided, complex_in, length", [
    (0, 0, 0, None), (0, 1, 0, None), (0, 0, 1, 12), (1, 0, 1, None), (0, 0, 0, 5), (1, 1, 1, 10), (1, 1, 1, 9)])
def test_dft_matches_numpy(inverse, onesided, complex_in, length):
    rng = _rng(6)
    n_in = 6 if inverse and onesided else 8
    x = rng.standard_normal((2, n_in, 3, 2 if complex_in else 1)).astype(np.float32)
    ins = ["x", "n" if length else "", "axis"]
    inits = [numpy_helper.from_array(np.array(1, np.int64), "axis")]
    if length:
        inits.append(numpy_helper.from_array(np.array(length, np.int64), "n"))
    m = _model([helper.make_node("DFT", ins, ["y"], inverse=inverse, onesided=onesided)],
               [_vi("x", F32, list(x.shape))], [_vi("y", F32, None)], inits, opset=20)
    signal = x[..., 0] + (1j * x[..., 1] if complex_in else 0)
    if inverse and onesided:
        want = np.fft.irfft(signal, n=length or 2 * (n_in - 1), axis=1)[..., None]
    elif inverse:
        want = np.fft.ifft(signal, n=length, axis=1)
    else:
        want = np.fft.fft(signal, n=length, axis=1)
        if onesided:
            want = want[:, :want.shape[1] // 2 + 1]
    if not (inverse and onesided):
        want = np.stack([want.real, want.imag], axis=-1)
    got = _ours(m, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_stft_matches_onnxruntime():
    rng = _rng(7)
    x = rng.standard_normal((2, 40, 1)).astype(np.float32)
    window = np.hanning(10).astype(np.float32)
    m = _model([helper.make_node("STFT", ["x", "step", "window"], ["y"], onesided=1)],
               [_vi("x", F32, [2, 40, 1])], [_vi("y", F32, None)],
               [numpy_helper.from_array(np.array(3, np.int64), "step"), numpy_helper.from_array(window, "window")],
               opset=17)
    assert_close(_ours(m, {"x": x}), _theirs(m, {"x": x}), (1e-4, 1e-4))


# ----- Loop --------------------------------------------------------------------------

def _loop_model(trip_count_input: bool, stop_early: bool, scan_output: bool):
    """y = sum of x * i over the iterations; stops when the running sum passes 10 if asked."""
    body_nodes = [helper.make_node("Cast", ["i"], ["fi"], to=F32),
                  helper.make_node("Mul", ["x", "fi"], ["xi"]),
                  helper.make_node("Add", ["acc", "xi"], ["acc_out"])]
    if stop_early:
        body_nodes += [helper.make_node("ReduceSum", ["acc_out"], ["total"], keepdims=0),
                       helper.make_node("Less", ["total", "ten"], ["cond_out"])]
    else:
        body_nodes.append(helper.make_node("Identity", ["cond"], ["cond_out"]))
    outs = [_vi("cond_out", TensorProto.BOOL, []), _vi("acc_out", F32, [3])]
    if scan_output:
        body_nodes.append(helper.make_node("Identity", ["acc_out"], ["step"]))
        outs.append(_vi("step", F32, [3]))
    body = helper.make_graph(body_nodes, "body", [_vi("i", TensorProto.INT64, []), _vi("cond", TensorProto.BOOL, []),
                                                  _vi("acc", F32, [3])], outs)
    loop_outs = ["y"] + (["ys"] if scan_output else [])
    ins = [_vi("x", F32, [3])] + ([_vi("M", TensorProto.INT64, [])] if trip_count_input else [])
    inits = [numpy_helper.from_array(np.zeros(3, np.float32), "zero"),
             numpy_helper.from_array(np.array(10, np.float32), "ten"),
             numpy_helper.from_array(np.array(True), "go")]
    if not trip_count_input:
        inits.append(numpy_helper.from_array(np.array(6, np.int64), "M"))
    node = helper.make_node("Loop", ["M", "go", "zero"], loop_outs, body=body)
    return _model([node], ins, [_vi(n, F32, None) for n in loop_outs], inits, opset=16)


@pytest.mark.parametrize("trip_count_input, stop_early, scan_output, op", [
    (False, False, True, "scan"), (True, True, False, "while_loop"), (True, False, False, "while_loop")])
def test_loop_matches_onnxruntime(trip_count_input, stop_early, scan_output, op):
    m = _loop_model(trip_count_input, stop_early, scan_output)
    g = import_onnx(m)
    assert op in {n.op for n in g.nodes}
    x = np.array([1.0, 0.5, 2.0], np.float32)
    feeds = {"x": x, **({"M": np.array(5, np.int64)} if trip_count_input else {})}
    want = _theirs(m, feeds)
    assert_close(_ours(m, feeds), want, (1e-5, 1e-6))
    assert_close(_lowered(m, feeds), want, (1e-5, 1e-6))


def test_loop_with_scan_outputs_and_early_exit_is_refused():
    from accelir import UnsupportedOpError
    with pytest.raises(UnsupportedOpError, match="stop it early"):
        import_onnx(_loop_model(False, True, True))


# ----- LRN, windows, scatters, Det ---------------------------------------------------

def test_lrn_matches_onnxruntime():
    x = _rng(8).standard_normal((2, 7, 3, 4)).astype(np.float32)
    m = _model([helper.make_node("LRN", ["x"], ["y"], size=5, alpha=0.3, beta=0.6, bias=1.5)],
               [_vi("x", F32, [2, 7, 3, 4])], [_vi("y", F32, [2, 7, 3, 4])], opset=13)
    assert_close(_ours(m, {"x": x}), _theirs(m, {"x": x}), (1e-5, 1e-6))


@pytest.mark.parametrize("attrs", [dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
                                   dict(kernel_shape=[2, 3], storage_order=1),
                                   dict(kernel_shape=[3, 2], strides=[2, 1], ceil_mode=1)])
def test_maxpool_indices_and_unpool_match_onnxruntime(attrs):
    x = _rng(9).standard_normal((2, 3, 7, 7)).astype(np.float32)
    m = _model([helper.make_node("MaxPool", ["x"], ["y", "i"], **attrs)],
               [_vi("x", F32, [2, 3, 7, 7])], [_vi("y", F32, None), _vi("i", TensorProto.INT64, None)], opset=12)
    assert_close(_ours(m, {"x": x}), _theirs(m, {"x": x}), (0, 0))
    if "storage_order" in attrs or "ceil_mode" in attrs:
        return
    unpool = {k: v for k, v in attrs.items() if k in ("kernel_shape", "pads", "strides")}
    m2 = _model([helper.make_node("MaxPool", ["x"], ["y", "i"], **attrs),
                 helper.make_node("MaxUnpool", ["y", "i"], ["u"], **unpool)],
                [_vi("x", F32, [2, 3, 7, 7])], [_vi("u", F32, None)], opset=12)
    assert_close(_ours(m2, {"x": x}), _theirs(m2, {"x": x}), (0, 0))


def _first_max_indices(x, kernel, stride, pads, dilation):
    """The ONNX import's max-pool index rule over [N, C, H, W], flat over N, C, H, W as ONNX counts:
    the first maximum of a window's real taps in kernel order, the first NaN counting as the
    maximum (torch's rule, except that of several NaNs torch reports the last)."""
    n, c, h, w = x.shape
    oh = (h + 2 * pads[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    ow = (w + 2 * pads[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    out = np.zeros((n, c, oh, ow), np.int64)
    for b, ch, i, j in np.ndindex(n, c, oh, ow):
        best, at = -np.inf, -1
        for ki, kj in np.ndindex(*kernel):
            r, q = i * stride[0] - pads[0] + ki * dilation[0], j * stride[1] - pads[1] + kj * dilation[1]
            if 0 <= r < h and 0 <= q < w:
                v = x[b, ch, r, q]
                if at < 0 or v > best or np.isnan(v):
                    best, at = v, r * w + q
                    if np.isnan(v):
                        break
        out[b, ch, i, j] = (b * c + ch) * h * w + at
    return out


def test_maxpool_indices_of_an_all_minus_inf_window_are_its_first_real_position():
    """With dilation 2 and padding 3 a window's first tap lies two slots outside the input; when the
    window is all -inf its index is still its first real tap's, never that of a padding slot."""
    x = _rng(13).standard_normal((1, 2, 7, 8)).astype(np.float32)
    x[0, 0, :, :4] = -np.inf
    x[0, 1, :4, :] = -np.inf
    x[0, 1, 5, 3] = np.nan
    attrs = dict(kernel_shape=[3, 3], pads=[3, 3, 3, 3], strides=[2, 2], dilations=[2, 2])
    m = _model([helper.make_node("MaxPool", ["x"], ["y", "i"], **attrs)],
               [_vi("x", F32, [1, 2, 7, 8])], [_vi("y", F32, None), _vi("i", TensorProto.INT64, None)], opset=12)
    got = _ours(m, {"x": x})
    np.testing.assert_array_equal(got[1], _first_max_indices(x, (3, 3), (2, 2), (3, 3), (2, 2)))
    np.testing.assert_array_equal(got[0], np.take(x, got[1]))


def test_col2im_matches_onnxruntime():
    x = _rng(10).standard_normal((2, 3 * 4, 12)).astype(np.float32)
    m = _model([helper.make_node("Col2Im", ["x", "img", "blk"], ["y"], strides=[2, 1], pads=[1, 0, 0, 1],
                                 dilations=[1, 2])],
               [_vi("x", F32, [2, 12, 12])], [_vi("y", F32, None)],
               [numpy_helper.from_array(np.array([6, 5], np.int64), "img"),
                numpy_helper.from_array(np.array([2, 2], np.int64), "blk")], opset=18)
    assert_close(_ours(m, {"x": x}), _theirs(m, {"x": x}), (1e-5, 1e-6))


@pytest.mark.parametrize("time_axis, batch_axis", [(0, 1), (1, 0)])
def test_reverse_sequence_matches_onnxruntime(time_axis, batch_axis):
    x = _rng(11).standard_normal((5, 4, 2) if time_axis == 0 else (4, 5, 2)).astype(np.float32)
    m = _model([helper.make_node("ReverseSequence", ["x", "n"], ["y"], time_axis=time_axis, batch_axis=batch_axis)],
               [_vi("x", F32, list(x.shape)), _vi("n", TensorProto.INT64, [4])], [_vi("y", F32, list(x.shape))],
               opset=10)
    feeds = {"x": x, "n": np.array([5, 1, 3, 0], np.int64)}
    assert_close(_ours(m, feeds), _theirs(m, feeds), (0, 0))


def test_tensor_scatter_circular():
    rng = _rng(12)
    cache = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    update = rng.standard_normal((2, 3, 3, 4)).astype(np.float32)
    m = _model([helper.make_node("TensorScatter", ["c", "u", "w"], ["y"], mode="circular")],
               [_vi("c", F32, [2, 3, 5, 4]), _vi("u", F32, [2, 3, 3, 4]), _vi("w", TensorProto.INT64, [2])],
               [_vi("y", F32, [2, 3, 5, 4])], opset=24)
    w = np.array([3, 1], np.int64)
    want = cache.copy()
    for b in range(2):
        for s in range(3):
            want[b, :, (w[b] + s) % 5] = update[b, :, s]
    np.testing.assert_array_equal(_ours(m, {"c": cache, "u": update, "w": w})[0], want)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_det_matches_numpy(n):
    x = _rng(13).standard_normal((2, 3, n, n)).astype(np.float32)
    m = _model([helper.make_node("Det", ["x"], ["y"])], [_vi("x", F32, [2, 3, n, n])], [_vi("y", F32, [2, 3])])
    np.testing.assert_allclose(_ours(m, {"x": x})[0], np.linalg.det(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("ftype", [TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16])
def test_bitcast_float_int_round_trip_matches_numpy_view(ftype):
    import ml_dtypes
    fdt = ml_dtypes.bfloat16 if ftype == TensorProto.BFLOAT16 else helper.tensor_dtype_to_np_dtype(ftype)
    info = ml_dtypes.finfo(fdt)
    idt = {2: np.int16, 4: np.int32, 8: np.int64}[np.dtype(fdt).itemsize]
    values = [0.0, -0.0, 1.0, -2.5, 3.75, float(info.max), -float(info.max), float(info.tiny),
              float(info.smallest_subnormal), -float(info.smallest_subnormal) * 3, np.inf, -np.inf]
    x = np.concatenate([np.array(values), _rng(14).standard_normal(20) * 1e3]).astype(fdt)
    itype = {np.int16: TensorProto.INT16, np.int32: TensorProto.INT32, np.int64: TensorProto.INT64}[idt]
    m = _model([helper.make_node("BitCast", ["x"], ["b"], to=itype),
                helper.make_node("BitCast", ["b"], ["y"], to=ftype)],
               [_vi("x", ftype, [x.size])], [_vi("b", itype, [x.size]), _vi("y", ftype, [x.size])], opset=26)
    bits, back = _ours(m, {"x": x})
    np.testing.assert_array_equal(bits, x.view(idt))
    np.testing.assert_array_equal(back.view(idt), x.view(idt))


# ----- PRelu before its function body (opset 16) ----------------------------------------

@pytest.mark.parametrize("opset, x_shape, slope_shape", [(9, (2, 3, 4), (4,)), (9, (2, 3, 4), (3, 1)),
                                                         (6, (2, 3, 4, 5), (3,)), (6, (2, 3), (1,))])
def test_prelu_of_old_opsets_matches_onnxruntime_or_torch(opset, x_shape, slope_shape):
    """Opset 7-15 broadcast the slope numpy-style (onnxruntime runs them); opset 6's 1-d slope runs
    along the channel axis, as torch's prelu does (onnxruntime no longer runs opset 6)."""
    import torch
    rng = _rng(3)
    x = rng.standard_normal(x_shape).astype(np.float32)
    slope = rng.uniform(0.1, 0.5, slope_shape).astype(np.float32)
    m = _model([helper.make_node("PRelu", ["x", "slope"], ["y"])], [_vi("x", F32, list(x_shape))],
               [_vi("y", F32, list(x_shape))], [numpy_helper.from_array(slope, "slope")], opset=opset)
    if opset >= 7:
        want = _theirs(m, {"x": x})
    else:
        want = [torch.nn.functional.prelu(torch.from_numpy(x), torch.from_numpy(slope)).numpy()]
    assert_close(_ours(m, {"x": x}), want)
    assert_close(_lowered(m, {"x": x}), want)
