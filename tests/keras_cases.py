"""Keras 3 models checked through accelir on one Keras backend, in a process of their own.

Keras picks its backend once per process (``KERAS_BACKEND`` before its first import), so
``tests/test_frontend_keras.py`` runs this script once per backend:
``python tests/keras_cases.py jax|torch [--slow] [CASE ...]``.  It prints one JSON object,
``{case: null | "what went wrong"}``.  Each case compares ``accelir.optimize(model)`` on
both accelir backends with ``model(x, training=False)`` under the fp32 budget of
``accelir.accuracy`` (max_rel 1e-4), and checks that the model's variables are unchanged.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
from typing import Any, Callable

os.environ["KERAS_BACKEND"] = sys.argv[1] if len(sys.argv) > 1 else "jax"

import keras  # noqa: E402
import numpy as np  # noqa: E402

import accelir  # noqa: E402
from accelir.accuracy import DEFAULT_BUDGETS, measure  # noqa: E402

BUDGET = DEFAULT_BUDGETS["fp32"]
ACCELIR_BACKENDS = ("onnxruntime", "xla")
CASES: dict[str, Callable[[], None]] = {}
SLOW_CASES: dict[str, Callable[[], None]] = {}


def case(fn: Callable[[], None], *, slow: bool = False) -> Callable[[], None]:
    (SLOW_CASES if slow else CASES)[fn.__name__] = fn
    return fn


def slow_case(fn: Callable[[], None]) -> Callable[[], None]:
    return case(fn, slow=True)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def randomise_batch_norms(model: Any, seed: int = 1) -> Any:
    """Moving statistics away from 0 / 1, so a graph that ignored them (or took training=True) fails."""
    r = rng(seed)
    for v in model.non_trainable_variables:
        if v.path.endswith("moving_mean"):
            v.assign(r.standard_normal(v.shape).astype("float32") * 0.1)
        elif v.path.endswith("moving_variance"):
            v.assign(r.uniform(0.5, 1.5, v.shape).astype("float32"))
    return model


def weights(model: Any) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(v.value)) for v in model.variables]


def leaves(tree: Any) -> list[Any]:
    if isinstance(tree, dict):
        return [x for k in sorted(tree) for x in leaves(tree[k])]
    if isinstance(tree, (list, tuple)):
        return [x for t in tree for x in leaves(t)]
    return [tree]


def structure(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: structure(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [structure(v) for v in tree]
    return "array"


def check(model: Any, args: tuple, *, source: Any = None, array_type: type | None = np.ndarray) -> None:
    """optimize(source or model, args) on both accelir backends against model(*args, training=False):
    the fp32 budget, the same output structure, outputs of ``array_type``, the model left unchanged."""
    before = weights(model)
    want = model(*args, training=False)
    for backend in ACCELIR_BACKENDS:
        cm = accelir.optimize(model if source is None else source, args, backend=backend)
        got = cm(*args)
        assert structure(got) == structure(want), f"{backend}: output structure {structure(got)} != {structure(want)}"
        if array_type is not None:
            kinds = {type(x).__name__ for x in leaves(got) if not isinstance(x, array_type)}
            assert not kinds, f"{backend}: outputs are {kinds}, not {array_type.__name__}"
        errors = measure(leaves(want), leaves(got))
        assert BUDGET.met(errors), f"{backend}: {errors} breaks {BUDGET}"
    after = weights(model)
    assert all(np.array_equal(a, b) for a, b in zip(before, after)), "the Keras model's variables changed"


def image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return rng(seed).standard_normal(shape).astype(np.float32)


# ----- fast cases --------------------------------------------------------------------

@case
def sequential() -> None:
    model = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Conv2D(8, 3, padding="same"),
                              keras.layers.BatchNormalization(), keras.layers.ReLU(),
                              keras.layers.MaxPooling2D(), keras.layers.Dropout(0.5), keras.layers.Flatten(),
                              keras.layers.Dense(5, activation="softmax")])
    check(randomise_batch_norms(model), (image((2, 12, 12, 3)),))


@case
def functional_dict_outputs() -> None:
    a, b = keras.Input((6,), name="a"), keras.Input((4,), name="b")
    h = keras.layers.Concatenate()([keras.layers.Dense(8, activation="gelu")(a), b])
    h = keras.layers.BatchNormalization()(h)
    model = keras.Model([a, b], {"logits": keras.layers.Dense(3)(h), "hidden": h})
    check(randomise_batch_norms(model), ([image((2, 6)), image((2, 4), 1)],))


@case
def functional_list_outputs() -> None:
    x = keras.Input((10,))
    h = keras.layers.Dense(7, activation="tanh")(x)
    model = keras.Model(x, [keras.layers.Dense(2)(h), keras.layers.LayerNormalization()(h)])
    check(model, (image((3, 10)),))


class Residual(keras.Model):
    """A subclassed model: a residual MLP whose call branches on training (Dropout)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = keras.layers.Dense(16, activation="relu")
        self.norm = keras.layers.BatchNormalization()
        self.drop = keras.layers.Dropout(0.3)
        self.out = keras.layers.Dense(16)

    def call(self, x: Any, training: bool | None = None) -> Any:
        h = self.drop(self.norm(self.inner(x), training=training), training=training)
        return x + self.out(h)


@case
def subclassed() -> None:
    model = Residual()
    x = image((4, 16))
    model(x)  # builds the variables
    check(randomise_batch_norms(model), (x,))


def transformer(vocab: int = 50, length: int = 12, dim: int = 32, heads: int = 4) -> Any:
    ids = keras.Input((length,), dtype="int32")
    tok = keras.layers.Embedding(vocab, dim)(ids)
    pos = keras.layers.Embedding(length, dim)(keras.ops.arange(length)[None])
    h = tok + pos
    att = keras.layers.MultiHeadAttention(heads, dim // heads)(h, h, use_causal_mask=True)
    h = keras.layers.LayerNormalization()(h + att)
    ff = keras.layers.Dense(dim)(keras.layers.Dense(4 * dim, activation="gelu")(h))
    h = keras.layers.LayerNormalization()(h + ff)
    return keras.Model(ids, keras.layers.Dense(vocab)(h))


@case
def transformer_block() -> None:
    check(transformer(), (rng(3).integers(0, 50, (2, 12)).astype(np.int32),))


@case
def mobilenet_v2_small() -> None:
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10)
    check(randomise_batch_norms(model), (image((1, 32, 32, 3)),))


@case
def backend_tensors_in_and_out() -> None:
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    x = keras.ops.convert_to_tensor(image((2, 5)))
    check(model, (x,), array_type=type(x))


@case
def variables_name_the_constants() -> None:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="proj"),
                              keras.layers.LayerNormalization(name="norm")], name="net")
    g = accelir.capture(model, (image((2, 4)),))
    want = {"net.proj.kernel", "net.proj.bias", "net.norm.gamma", "net.norm.beta"}
    assert want <= set(g.constants), sorted(g.constants)


@case
def dynamic_batch() -> None:
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4), keras.layers.BatchNormalization()])
    randomise_batch_norms(model)
    if keras.config.backend() == "torch":
        import torch
        spec = ({0: torch.export.Dim("batch")},)
    else:
        spec = ("batch, 8",)
    for backend in ACCELIR_BACKENDS:
        cm = accelir.optimize(model, (image((2, 8)),), dynamic_shapes=spec, backend=backend)
        assert cm.graph.inputs[0].type.shape[0] == "batch", cm.graph.inputs[0].type
        for n in (1, 5):
            x = image((n, 8), seed=n)
            errors = measure([model(x, training=False)], [cm(x)])
            assert BUDGET.met(errors), f"{backend}, batch {n}: {errors} breaks {BUDGET}"


@case
def keras_file() -> None:
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4), keras.layers.BatchNormalization()])
    randomise_batch_norms(model)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        check(model, (image((2, 6)),), source=path)


@case
def keras_file_command_line() -> None:
    import onnxruntime
    from accelir.cli import main
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.BatchNormalization()])
    randomise_batch_norms(model)
    x = image((1, 6))  # the model declares (None, 6): the command line captures batch 1
    with tempfile.TemporaryDirectory() as tmp:
        path, out = os.path.join(tmp, "model.keras"), os.path.join(tmp, "model.onnx")
        model.save(path)
        assert main(["optimize", path, "-o", out, "--check"]) == 0, "accelir optimize model.keras failed"
        session = onnxruntime.InferenceSession(out, providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: x})
    errors = measure([model(x, training=False)], got)
    assert BUDGET.met(errors), f"model.onnx: {errors} breaks {BUDGET}"


@case
def keras_file_corrupt() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bad.keras")
        with open(path, "wb") as f:
            f.write(b"not a zip archive")
        try:
            accelir.optimize(path, (image((1, 3)),))
        except accelir.AccelirError as e:
            assert "\n" not in str(e) and "bad.keras" in str(e) and "load_model" in str(e), str(e)
        else:
            raise AssertionError("a corrupt .keras file was read")


@case
def keras_file_in_a_process_that_never_imported_keras() -> None:
    """Without KERAS_BACKEND (and ~/.keras/keras.json naming tensorflow), a .keras file loads on jax."""
    import subprocess
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    x = image((2, 6))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        np.save(os.path.join(tmp, "x.npy"), x)
        os.makedirs(os.path.join(tmp, ".keras"))
        with open(os.path.join(tmp, ".keras", "keras.json"), "w") as f:
            f.write('{"backend": "tensorflow"}')
        script = ("import os, sys, numpy as np, accelir; x = np.load(sys.argv[2]); "
                  "y = accelir.optimize(sys.argv[1], (x,))(x); "
                  "assert 'KERAS_BACKEND' not in os.environ; import keras; print(keras.config.backend()); "
                  "np.save(sys.argv[3], y)")
        env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "KERAS_HOME")} | {"HOME": tmp}
        proc = subprocess.run([sys.executable, "-c", script, path, os.path.join(tmp, "x.npy"),
                               os.path.join(tmp, "y.npy")], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.strip().splitlines()[-1] == "jax", proc.stdout
        errors = measure([model(x, training=False)], [np.load(os.path.join(tmp, "y.npy"))])
    assert BUDGET.met(errors), f"{errors} breaks {BUDGET}"


@case
def tensorflow_backend_refused() -> None:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    real = keras.config.backend
    keras.config.backend = lambda: "tensorflow"
    try:
        accelir.capture(model, (image((1, 3)),))
    except accelir.AccelirError as e:
        text = str(e)
        assert "\n" not in text and "tensorflow" in text, text
        assert "KERAS_BACKEND=jax" in text and "KERAS_BACKEND=torch" in text, text
    else:
        raise AssertionError("a model on the tensorflow backend was captured")
    finally:
        keras.config.backend = real


# ----- full-size keras.applications (slow) -------------------------------------------

def application(name: str, **kwargs: Any) -> None:
    model = getattr(keras.applications, name)(weights=None, **kwargs)
    check(randomise_batch_norms(model), (image((1, 224, 224, 3)),))


@slow_case
def mobilenet_v2() -> None:
    application("MobileNetV2")


@slow_case
def resnet50() -> None:
    application("ResNet50")


@slow_case
def efficientnet_b0() -> None:
    application("EfficientNetB0")


@slow_case
def convnext_tiny() -> None:
    application("ConvNeXtTiny")


def run(names: list[str]) -> dict[str, str | None]:
    results: dict[str, str | None] = {}
    table = CASES | SLOW_CASES
    for name in names:
        keras.utils.set_random_seed(0)
        try:
            if name not in table:
                raise KeyError(f"no case {name!r} in keras_cases.py")
            table[name]()
            results[name] = None
        except Exception as e:  # noqa: BLE001 - every failure is reported, with where it happened
            frame = traceback.extract_tb(e.__traceback__)[-1]
            results[name] = f"{type(e).__name__}: {e} ({os.path.basename(frame.filename)}:{frame.lineno})"
    return results


if __name__ == "__main__":
    rest = sys.argv[2:]
    slow = "--slow" in rest
    names = [a for a in rest if not a.startswith("--")] or list(SLOW_CASES if slow else CASES)
    print(json.dumps(run(names)))
