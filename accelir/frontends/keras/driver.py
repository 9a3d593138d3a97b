"""Keras 3 models into the IR, through the frontend of the backend Keras runs on.

- jax backend: the model becomes ``f(variables, *inputs) = model.stateless_call(...)``
  with ``training=False``, captured by :func:`accelir.frontends.jax.capture_jax` with the
  variables frozen as named constants (``dense.kernel``), read as they are at capture time.
- torch backend: the model is a ``torch.nn.Module``; a wrapper module calls it with
  ``training=False`` and :func:`accelir.frontends.torch.capture_torch` exports it, numpy
  example inputs turned into torch tensors first (torch.export takes tensors only).

Either way the model's variables are read, never assigned, so the Keras model is
unchanged.  Calls of the compiled model take what the model takes (numpy or the backend's
tensors) and return the model's output structure (a dict or list stays one).
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ...errors import AccelirError
from ...ir import DType, Graph

__all__ = ["capture_keras", "is_keras_model", "load_keras", "KERAS_BACKENDS"]

# the Keras backends accelir captures through, and the frontend each goes through
KERAS_BACKENDS = ("jax", "torch")


def is_keras_model(obj: Any) -> bool:
    """Whether ``obj`` is a Keras 3 layer or model (read without importing keras)."""
    return any((cls.__module__ or "").startswith("keras.") for cls in type(obj).__mro__)


def _keras() -> Any:
    return sys.modules.get("keras") or _import_keras()


@contextlib.contextmanager
def _default_backend(name: str) -> Iterator[None]:
    """KERAS_BACKEND=name while keras is first imported, unless the user set it; restored after."""
    if "KERAS_BACKEND" in os.environ:
        yield
        return
    os.environ["KERAS_BACKEND"] = name
    try:
        yield
    finally:
        del os.environ["KERAS_BACKEND"]


def _import_keras() -> Any:
    """Import keras for a ``.keras`` file.  Without KERAS_BACKEND, keras would take the backend of
    ~/.keras/keras.json (tensorflow by default, which accelir does not capture): jax is taken."""
    try:
        with _default_backend("jax"):
            import keras
    except ImportError as e:
        raise AccelirError(f"reading a .keras file needs keras 3 ({e}); install it and set KERAS_BACKEND=jax "
                           "or KERAS_BACKEND=torch") from None
    return keras


def backend_of(model: Any) -> str:
    """The Keras backend a model runs on; a backend accelir does not capture is an AccelirError."""
    keras = _keras()
    name = keras.config.backend()
    if name not in KERAS_BACKENDS:
        raise AccelirError(f"Keras backend {name!r} ({type(model).__name__}) is not supported: set KERAS_BACKEND=jax "
                           "or KERAS_BACKEND=torch before importing keras, then rebuild or load the model")
    return name


def load_keras(path: str) -> Any:
    """The model in a ``.keras`` file, loaded with ``keras.saving.load_model`` (without its optimizer)."""
    if not os.path.isfile(path):
        raise AccelirError(f"{path}: no such file")
    keras = _keras()
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:  # keras raises ValueError, OSError, zipfile errors ... for a bad file
        first = (str(e).strip().splitlines() or [""])[0]
        raise AccelirError(f"{path}: keras.saving.load_model cannot read it ({type(e).__name__}: {first}); "
                           "give a .keras file written by model.save") from None


def example_inputs_of(model: Any) -> tuple:
    """Zeros shaped like the model's declared inputs (unknown dims 1), for a capture without examples."""
    specs = getattr(model, "inputs", None)
    if not specs:
        raise AccelirError(f"{type(model).__name__} declares no inputs (a subclassed model); pass example_inputs")
    arrays = [np.zeros([1 if d is None else int(d) for d in s.shape], dtype=str(s.dtype)) for s in specs]
    return (arrays[0],) if len(arrays) == 1 else (arrays,)


def capture_keras(model: Any, example_inputs: Sequence[Any] = (), *, example_kwargs: Mapping[str, Any] | None = None,
                  dynamic_shapes: Any = None) -> Graph:
    """Capture ``model(*example_inputs, training=False)`` through the frontend of its Keras backend."""
    args = tuple(example_inputs) or example_inputs_of(model)
    kwargs = dict(example_kwargs or {})
    if backend_of(model) == "jax":
        return _capture_jax_backend(model, args, kwargs, dynamic_shapes)
    return _capture_torch_backend(model, args, kwargs, dynamic_shapes)


# ----- jax backend -------------------------------------------------------------------

@dataclass(frozen=True)
class _VariablesBound:
    """The jax signature of ``f(variables, *inputs)`` called as ``model(*inputs)``: the variables
    are constants of the graph, so a call passes the captured ones back in to match the tree."""

    inner: Any
    variables: Any

    def flatten(self, *args: Any, **kwargs: Any) -> list:
        return self.inner.flatten(self.variables, *args, **kwargs)

    def unflatten(self, flat_outputs: list) -> Any:
        return self.inner.unflatten(flat_outputs)


def _variable_names(variables: Sequence[Any]) -> list[str]:
    """Unique constant names from the variables' paths: ``dense/kernel`` -> ``dense.kernel``."""
    names: list[str] = []
    seen: set[str] = set()
    for i, v in enumerate(variables):
        name = str(getattr(v, "path", "") or v.name).replace("/", ".")
        if name in seen:
            name = f"{name}_{i}"
        seen.add(name)
        names.append(name)
    return names


def _capture_jax_backend(model: Any, args: tuple, kwargs: dict, dynamic_shapes: Any) -> Graph:
    from ..jax import capture_jax

    trainable, frozen = list(model.trainable_variables), list(model.non_trainable_variables)
    names = _variable_names(trainable + frozen)
    # variables of a dtype the IR lacks (a Dropout's uint32 seed state, unused at inference) stay
    # closed over: jax makes constants of the closed-over arrays only where the trace uses them
    everything = {n: v.value for n, v in zip(names, trainable + frozen)}
    values = {n: a for n, a in everything.items() if _ir_dtype(a)}
    t_names, f_names = names[:len(trainable)], names[len(trainable):]

    def call(variables: dict, *inputs: Any, **kw: Any) -> Any:
        value = {**everything, **variables}
        outputs, _ = model.stateless_call([value[n] for n in t_names], [value[n] for n in f_names],
                                          *inputs, training=False, **kw)
        return outputs

    call.__name__ = _graph_name(model)
    specs = None if dynamic_shapes is None else (None, *dynamic_shapes)
    graph = capture_jax(call, (values, *args), example_kwargs=kwargs, params_as_constants=True,
                        symbolic_shapes=specs)
    graph.meta["signature"] = _VariablesBound(graph.meta["signature"], values)
    graph.meta["keras_backend"] = "jax"
    _rename_constants(graph, {f"arg0.{n}": n for n in values})  # capture_jax names them after the argument
    return graph


def _rename_constants(graph: Graph, names: Mapping[str, str]) -> None:
    """Give the constants named in ``names`` their new names, so the IR reads ``dense.kernel``."""
    for node in list(graph.nodes):
        if node.op != "constant" or node.attrs["name"] not in names:
            continue
        value = node.output
        new = graph.const(graph.constants[node.attrs["name"]], name=names[node.attrs["name"]], before=node,
                          meta=node.meta)
        new.name = value.name
        graph.replace(node, [new])


def _ir_dtype(array: Any) -> bool:
    try:
        DType.from_numpy(array.dtype)
    except TypeError:
        return False
    return True


def _graph_name(model: Any) -> str:
    return str(getattr(model, "name", "") or type(model).__name__)


# ----- torch backend -----------------------------------------------------------------

def _to_torch(x: Any) -> Any:
    """numpy leaves (nested in lists, tuples, dicts) as torch tensors; other leaves as they are."""
    import torch
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, (list, tuple)):
        return type(x)(_to_torch(v) for v in x)
    if isinstance(x, Mapping):
        return {k: _to_torch(v) for k, v in x.items()}
    return x


def _capture_torch_backend(model: Any, args: tuple, kwargs: dict, dynamic_shapes: Any) -> Graph:
    import torch
    from ..torch import capture_torch

    class KerasInference(torch.nn.Module):
        """``model(*inputs, training=False)`` as a torch module (the model is held, not copied)."""

        def __init__(self) -> None:
            super().__init__()
            self.keras_model = model

        def forward(self, *inputs: Any, **kw: Any) -> Any:
            return self.keras_model(*inputs, training=False, **kw)

    KerasInference.__name__ = _graph_name(model)
    if isinstance(dynamic_shapes, (tuple, list)):  # one spec per model input: they are forward's *inputs
        dynamic_shapes = (tuple(dynamic_shapes),)
    graph = capture_torch(KerasInference(), _to_torch(args), dynamic_shapes=dynamic_shapes,
                          example_kwargs=_to_torch(kwargs))
    graph.meta["keras_backend"] = "torch"
    # torch.export lifts the variables as constants named lifted_tensor_N; the graph shares their memory
    variables = list(model.variables)
    by_address = {_address(v.value.detach().numpy()): n for v, n in zip(variables, _variable_names(variables))
                  if v.value.device.type == "cpu"}
    _rename_constants(graph, {name: by_address[_address(arr)] for name, arr in graph.constants.items()
                              if _address(arr) in by_address})
    return graph


def _address(arr: np.ndarray) -> tuple:
    """Where an array's memory starts, with its shape and dtype: equal for two views of one tensor."""
    return arr.__array_interface__["data"][0], arr.shape, arr.dtype.str
