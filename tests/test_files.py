"""Files accelir writes and reads: exports are atomic and honour ``overwrite`` (sidecars
included), a dangling symlink is refused, any constant name survives the ``.npz``, loading
reads only what the text names, and exported ONNX models load in ONNX Runtime."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import accelir
from accelir import AccelirError, DType, Graph, ParseError, TensorType, load, parse
from accelir.errors import OutputExistsError
from accelir.lowering.onnx import save_onnx, to_onnx
from accelir.testing import onnxruntime_outputs
from accelir.text import print_graph, save

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def add_weight_graph(n: int = 64, name: str = "w", seed: int = 0) -> Graph:
    """``x + w`` with ``w`` a random f32[n] constant (large enough for the .npz when n > 16)."""
    g = Graph("main")
    x = g.add_input(TensorType(DType.f32, (n,)), "x")
    w = g.const(np.random.default_rng(seed).standard_normal(n).astype(np.float32), name=name)
    g.set_outputs([g.make("add", [x, w], {}).outputs[0]])
    return g


# ----- interrupted exports -------------------------------------------------------------

_CHILD = textwrap.dedent("""
    import os, signal, sys, time
    import numpy as np
    # Python's own SIGINT handler: a process started from a shell's background job inherits SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, {repo!r})
    import accelir
    from accelir import DType, Graph, TensorType
    from accelir.lowering.onnx import model as lowering_onnx
    fmt, stage, path = sys.argv[1:4]

    g = Graph("main")
    x = g.add_input(TensorType(DType.f32, (1 << 20,)), "x")
    w = g.const(np.random.default_rng(1).standard_normal(1 << 20).astype(np.float32), name="w")
    g.set_outputs([g.make("add", [x, w], {{}}).outputs[0]])

    def wait():
        print("ready", flush=True)
        time.sleep(60)

    real_replace = os.replace
    def replace(src, dst):
        if stage == "renaming" and not dst.endswith((".npz", ".data")):
            wait()  # the sidecar is in place, the main file not yet
        real_replace(src, dst)
    os.replace = replace

    real_savez = np.savez
    def savez(f, **arrays):
        real_savez(f, **arrays)
        if stage == "writing":
            wait()
    np.savez = savez
    # fault injection: the child pauses inside the private writer of the .data file
    real_data = lowering_onnx._write_external_data
    def write_data(*args, **kwargs):
        real_data(*args, **kwargs)
        if stage == "writing":
            wait()
    lowering_onnx._write_external_data = write_data

    if fmt == "onnx-data":
        lowering_onnx.save_onnx(lowering_onnx.to_onnx(g), path, external_data=True, overwrite=True)
    else:
        cm = accelir.optimize(g, (np.zeros(1 << 20, np.float32),), backend="onnxruntime", level=0)
        cm.export(path, overwrite=True)
    print("done", flush=True)
""")


def _interrupt_export(tmp_path, fmt: str, stage: str, sig: int) -> str:
    path = str(tmp_path / ("m.air" if fmt == "air" else "m.onnx"))
    script = tmp_path / "child.py"
    script.write_text(_CHILD.format(repo=REPO))
    proc = subprocess.Popen([sys.executable, str(script), fmt, stage, path], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read()
        proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -sig  # the signal still ends the process, as it would have
    return path


def _assert_complete_or_absent(path: str, fmt: str, old: np.ndarray | None) -> None:
    """The target holds the old complete model (``old``: its weight) or, where ``old`` is None,
    nothing at all."""
    if old is None:
        assert not os.path.exists(path)
        return
    x = np.zeros(old.shape, np.float32)
    if fmt == "air":
        g = load(path)
        np.testing.assert_array_equal(g.constants["w"], old)
    else:
        np.testing.assert_array_equal(onnxruntime_outputs(path, {"x": x})[0], old)


@pytest.mark.parametrize("fmt,stage,sig,existing", [
    ("air", "writing", signal.SIGINT, False),
    ("air", "renaming", signal.SIGTERM, False),
    ("air", "writing", signal.SIGTERM, True),
    ("onnx", "renaming", signal.SIGINT, True),
    ("onnx-data", "writing", signal.SIGTERM, False),
    ("onnx-data", "renaming", signal.SIGINT, True),
])
def test_interrupted_export_leaves_no_partial_file(tmp_path, fmt, stage, sig, existing):
    old = None
    target = tmp_path / ("m.air" if fmt == "air" else "m.onnx")
    if existing:
        g = add_weight_graph(1 << 20, seed=2)
        old = g.constants["w"]
        if fmt == "air":
            save(g, target)
        else:
            save_onnx(to_onnx(g), target, external_data=fmt == "onnx-data")
    path = _interrupt_export(tmp_path, fmt, stage, sig)
    # the old model stays until the new one's files are all written; past that point, a model
    # with a sidecar is removed before the sidecar is replaced, so it can never read the new one
    kept = old if stage == "writing" or fmt == "onnx" else None
    _assert_complete_or_absent(path, fmt, kept)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]  # the temporaries are removed


# ----- overwrite, sidecars and symlinks --------------------------------------------------

def _compiled(n: int = 64) -> accelir.CompiledModel:
    return accelir.optimize(add_weight_graph(n), (np.zeros(n, np.float32),), backend="onnxruntime", level=0)


def test_air_export_refuses_an_existing_npz_sidecar(tmp_path):
    (tmp_path / "m.air.npz").write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match=r"m\.air\.npz exists; pass overwrite=True"):
        _compiled().export(tmp_path / "m.air")
    assert (tmp_path / "m.air.npz").read_bytes() == b"precious"
    assert not (tmp_path / "m.air").exists() and os.listdir(tmp_path) == ["m.air.npz"]
    _compiled().export(tmp_path / "m.air", overwrite=True)
    assert load(tmp_path / "m.air").constants["w"].shape == (64,)


def test_onnx_external_data_refuses_an_existing_data_file(tmp_path):
    (tmp_path / "m.onnx.data").write_bytes(b"precious")
    model = to_onnx(add_weight_graph(4096))
    with pytest.raises(OutputExistsError, match=r"m\.onnx\.data exists"):
        save_onnx(model, tmp_path / "m.onnx", external_data=True)
    assert (tmp_path / "m.onnx.data").read_bytes() == b"precious"
    assert not (tmp_path / "m.onnx").exists()
    save_onnx(model, tmp_path / "m.onnx", external_data=True, overwrite=True)
    w = add_weight_graph(4096).constants["w"]
    np.testing.assert_array_equal(onnxruntime_outputs(tmp_path / "m.onnx", {"x": np.zeros(4096, np.float32)})[0], w)


def test_export_refuses_existing_files_and_is_an_accelir_error(tmp_path):
    cm = _compiled()
    for suffix in (".onnx", ".air", ".dot"):
        cm.export(tmp_path / f"m{suffix}")
        with pytest.raises(AccelirError, match="exists; pass overwrite=True"):
            cm.export(tmp_path / f"m{suffix}")
        cm.export(tmp_path / f"m{suffix}", overwrite=True)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_overwriting_with_a_graph_that_needs_no_npz_removes_the_stale_one(tmp_path):
    save(add_weight_graph(64), tmp_path / "m.air")
    assert (tmp_path / "m.air.npz").exists()
    save(add_weight_graph(8), tmp_path / "m.air", overwrite=True)
    assert not (tmp_path / "m.air.npz").exists()
    assert load(tmp_path / "m.air").constants["w"].shape == (8,)


@pytest.mark.parametrize("suffix", [".onnx", ".air", ".html"])
def test_dangling_symlink_at_the_output_is_refused(tmp_path, suffix):
    link = tmp_path / f"m{suffix}"
    os.symlink(tmp_path / "elsewhere" / "target", link)
    with pytest.raises(AccelirError, match="dangling symbolic link"):
        _compiled().export(link, overwrite=True)
    assert os.path.islink(link) and not (tmp_path / "elsewhere").exists()


def test_dangling_symlink_sidecar_is_refused(tmp_path):
    os.symlink(tmp_path / "nowhere.npz", tmp_path / "m.air.npz")
    with pytest.raises(AccelirError, match="dangling symbolic link"):
        save(add_weight_graph(64), tmp_path / "m.air", overwrite=True)
    assert not (tmp_path / "nowhere.npz").exists() and not (tmp_path / "m.air").exists()


# ----- constant names in the .npz ------------------------------------------------------

HOSTILE_NAMES = ["a/b", "../../escape", "/etc/passwd", "nul\x00byte", "n" * 1000, "w.npy", "w::bf16",
                 "accelir.constants", "c0", "sp ace", "ünï"]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=range(len(HOSTILE_NAMES)))
def test_hostile_constant_names_round_trip_through_the_npz(tmp_path, name):
    g = add_weight_graph(64, name=name)
    save(g, tmp_path / "m.air")
    with zipfile.ZipFile(tmp_path / "m.air.npz") as z:
        for entry in z.namelist():
            assert "/" not in entry and "\x00" not in entry and len(entry) < 64
    g2 = load(tmp_path / "m.air")
    assert list(g2.constants) == [name]
    np.testing.assert_array_equal(g2.constants[name], g.constants[name])
    assert print_graph(g2) == print_graph(g)
    assert set(os.listdir(tmp_path)) == {"m.air", "m.air.npz"}


# ----- exported ONNX models are valid --------------------------------------------------

def _passthrough_model() -> onnx.ModelProto:
    """A valid model whose outputs are its input ``x`` and ``y = relu(x)`` listed twice."""
    info = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [2, 3])  # noqa: E731
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [info("x")],
                              [info("x"), info("y"), info("y")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_output_that_is_an_input_or_repeated_exports_a_valid_model(tmp_path):
    model = _passthrough_model()
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    expected = onnxruntime_outputs(model, {"x": x})
    cm = accelir.optimize(model, (x,), backend="onnxruntime")
    for got, want in zip(cm(x), expected, strict=True):
        np.testing.assert_array_equal(np.asarray(got), want)
    cm.export(tmp_path / "m.onnx")
    onnx.checker.check_model(onnx.load(tmp_path / "m.onnx"), full_check=True)
    for got, want in zip(onnxruntime_outputs(tmp_path / "m.onnx", {"x": x}), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    # the same graph through .air, and written directly as IR text
    cm.export(tmp_path / "m.air")
    text = """graph main(%x: f32[2,3]) -> (f32[2,3], f32[2,3], f32[2,3]) {
      %y = relu(%x) : f32[2,3]
      return %x, %y, %y
    }"""
    for g in (load(tmp_path / "m.air"), parse(text)):
        cm2 = accelir.optimize(g, (x,), backend="onnxruntime")
        path = cm2.export(tmp_path / "again.onnx", overwrite=True)
        for got, want in zip(onnxruntime_outputs(path, {"x": x}), expected, strict=True):
            np.testing.assert_array_equal(got, want)


# ----- loading reads only what the text names, and only as much as it declares ----------

_W_TEXT = """graph main(%x: f32[64]) -> (f32[64]) {
  %0 = constant() {name="w"} : f32[64]
  %1 = add(%x, %0) : f32[64]
  return %1
}
"""


def _write_air(tmp_path, **entries) -> str:
    path = tmp_path / "m.air"
    path.write_text(_W_TEXT)
    np.savez_compressed(tmp_path / "m.air.npz", **entries)
    return str(path)


@pytest.fixture
def zip_reads(monkeypatch) -> list[str]:
    """The names of the zip entries opened (each opening inflates one)."""
    reads: list[str] = []
    real = zipfile.ZipFile.open

    def spy(self, name, *args, **kwargs):
        reads.append(name)
        return real(self, name, *args, **kwargs)
    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    return reads


def test_load_reads_only_the_entries_the_text_names(tmp_path, zip_reads):
    w = np.arange(64, dtype=np.float32)
    bomb = np.zeros(16 * 1024 ** 2, np.uint8)  # 16 MB that deflates to about 16 KB
    path = _write_air(tmp_path, w=w, unused=bomb, pickled=np.array([{"a": 1}], dtype=object))
    assert os.path.getsize(path + ".npz") < 1024 ** 2
    zip_reads.clear()
    g = load(path)
    np.testing.assert_array_equal(g.constants["w"], w)
    assert zip_reads == ["w.npy"]


def test_an_entry_larger_than_its_declared_type_is_refused_unread(tmp_path, zip_reads):
    path = _write_air(tmp_path, w=np.zeros(4 * 1024 ** 2, np.float32))  # 16 MB declared as f32[64]
    zip_reads.clear()
    with pytest.raises(ParseError, match=r"constant 'w': its \.npz entry holds 16777\d+ bytes, more than a f32\[64\]"
                       ) as e:
        load(path)
    assert e.value.line == 2 and zip_reads == []


def test_a_pickled_entry_is_a_clear_error(tmp_path):
    path = _write_air(tmp_path, w=np.array([object()] * 64, dtype=object))
    with pytest.raises(ParseError, match="pickled object array, which accelir never loads"):
        load(path)


@pytest.mark.parametrize("content", [b"not a zip", b""])
def test_an_unreadable_npz_is_a_clear_error(tmp_path, content):
    (tmp_path / "m.air").write_text(_W_TEXT)
    (tmp_path / "m.air.npz").write_bytes(content)
    with pytest.raises(AccelirError, match=r"m\.air\.npz: not a readable \.npz"):
        load(tmp_path / "m.air")


def test_npz_written_before_the_entry_table_still_loads(tmp_path):
    import ml_dtypes
    w = np.linspace(-1, 1, 64).astype(ml_dtypes.bfloat16)
    (tmp_path / "m.air").write_text(_W_TEXT.replace("f32", "bf16"))
    np.savez(tmp_path / "m.air.npz", **{"w::bf16": w.view(np.uint16)})
    np.testing.assert_array_equal(load(tmp_path / "m.air").constants["w"], w)


# ----- splat constants stay small ------------------------------------------------------

def _splat_model(n: int = 500, count: int = 18) -> onnx.ModelProto:
    """About 1.5 KB of ONNX: ``count`` ConstantOfShape / Expand-of-a-scalar weights of n x n (each
    under the folding cap, so they fold into constants), added to ``x`` one after the other, and
    one np.full initializer; written out in full they would be ``count`` MB."""
    info = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, n])  # noqa: E731
    inits = [onnx.numpy_helper.from_array(np.array([n, n], np.int64), "shape"),
             onnx.numpy_helper.from_array(np.array(-3.0, np.float32), "scalar"),
             onnx.numpy_helper.from_array(np.full((n, 4), np.float32(1.5)), "full")]
    nodes, prev = [], "x"
    for i in range(count):
        if i % 2:
            nodes.append(helper.make_node("Expand", ["scalar", "shape"], [f"c{i}"]))
        else:
            value = onnx.numpy_helper.from_array(np.array([0.5 + i], np.float32))
            nodes.append(helper.make_node("ConstantOfShape", ["shape"], [f"c{i}"], value=value))
        nodes.append(helper.make_node("Add", [prev, f"c{i}"], [f"a{i}"]))
        prev = f"a{i}"
    nodes.append(helper.make_node("MatMul", [prev, "full"], ["y"]))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, 4])
    return helper.make_model(helper.make_graph(nodes, "splats", [info("x")], [y], inits),
                             opset_imports=[helper.make_opsetid("", 18)])


def test_splat_constants_export_small_and_exact(tmp_path):
    model = _splat_model()
    x = np.random.default_rng(0).standard_normal((500, 500)).astype(np.float32)
    (expected,) = onnxruntime_outputs(model, {"x": x})
    cm = accelir.optimize(model, (x,), backend="onnxruntime", level=1)
    assert not [n for n in cm.graph.nodes if n.op not in ("constant", "add", "matmul")]  # folded
    onnx_path = cm.export(tmp_path / "m.onnx")
    air_path = cm.export(tmp_path / "m.air")
    assert os.path.getsize(onnx_path) < 64 * 1024
    assert os.path.getsize(air_path) + os.path.getsize(air_path + ".npz") < 64 * 1024
    onnx.checker.check_model(onnx.load(onnx_path), full_check=True)
    np.testing.assert_allclose(onnxruntime_outputs(onnx_path, {"x": x})[0], expected, rtol=1e-5, atol=1e-3)
    loaded = load(air_path)
    assert str(loaded) == str(cm.graph)
    for a, b in zip(loaded.constants.values(), cm.graph.constants.values(), strict=True):
        np.testing.assert_array_equal(a, b)
    again = accelir.optimize(loaded, (x,), backend="onnxruntime", level=0)(x)  # a Graph: one array
    np.testing.assert_allclose(again, expected, rtol=1e-5, atol=1e-3)


def test_splat_constants_stay_scalars_in_the_jax_lowering():
    from accelir.lowering.jax import stablehlo, to_jax
    model = _splat_model(n=300, count=4)
    x = np.random.default_rng(1).standard_normal((300, 300)).astype(np.float32)
    (expected,) = onnxruntime_outputs(model, {"x": x})
    cm = accelir.optimize(model, (x,), backend="xla", level=1)
    np.testing.assert_allclose(np.asarray(cm(x)[0]), expected, rtol=1e-5, atol=1e-3)
    fn = to_jax(cm.graph)
    assert fn.params == {}  # nothing of n x n goes to the device
    text = stablehlo(cm.graph, [x])
    assert "broadcast_in_dim" in text and len(text) < 16 * 1024


def test_unwritable_directory_and_write_failures_are_accelir_errors(tmp_path, monkeypatch):
    import builtins
    with pytest.raises(AccelirError, match="does not exist"):
        _compiled().export(tmp_path / "missing" / "m.onnx")

    class DiskFull:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(28, "No space left on device")

    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda path, mode="r", *a, **k:
                        DiskFull(real_open(path, mode, *a, **k)) if "w" in mode else real_open(path, mode, *a, **k))
    with pytest.raises(AccelirError, match=r"cannot write .*m\.air: No space left on device"):
        save(add_weight_graph(8), tmp_path / "m.air")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []  # the temporary is gone too


def test_regions_with_same_constant_name_and_different_values_round_trip(tmp_path):
    """Each region is its own graph, so two may each hold a constant "c": the .npz keeps both."""
    from accelir import interpret

    def body(offset: float) -> Graph:
        r = Graph("body")
        x = r.add_input(TensorType(DType.f32, (32,)), "x")
        c = r.const(np.arange(32, dtype=np.float32) + offset, name="c")
        r.set_outputs([r.make("add", [x, c], {}).outputs[0]])
        return r

    g = Graph("main")
    x = g.add_input(TensorType(DType.f32, (32,)), "x")
    y = g.make("fusion", [x], {}, regions=[body(100.0)]).outputs[0]
    y = g.make("fusion", [y], {}, regions=[body(1000.0)]).outputs[0]
    c = g.const(np.arange(32, dtype=np.float32) * 10, name="c")
    g.set_outputs([g.make("add", [y, c], {}).outputs[0]])
    save(g, tmp_path / "m.air")
    loaded = load(tmp_path / "m.air")
    assert str(loaded) == str(g)
    x = np.random.default_rng(0).standard_normal(32).astype(np.float32)
    np.testing.assert_array_equal(interpret(loaded, x)[0], interpret(g, x)[0])


@pytest.mark.parametrize("content", [None, b"\xff\xfe not text"])
def test_loading_a_missing_or_binary_air_file_is_an_accelir_error(tmp_path, content):
    path = tmp_path / "m.air"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(accelir.AccelirError, match=r"^cannot read .*m\.air"):
        accelir.load(path)


def test_an_ignored_sigterm_stays_ignored_while_writing(tmp_path):
    from accelir.fileio import write_atomic
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        def writer(tmp):
            os.kill(os.getpid(), signal.SIGTERM)
            with open(tmp, "wb") as f:
                f.write(b"done")
        write_atomic(tmp_path / "out.bin", writer)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert (tmp_path / "out.bin").read_bytes() == b"done"
