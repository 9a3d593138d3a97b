"""Helpers for testing passes, frontend rules and lowerings: random inputs for a graph,
closeness checks with per-dtype tolerances, and the independent oracles (ONNX Runtime,
ONNX's reference evaluator) that results are compared against.

They are the ones accelir's own tests use, kept in the package so that a user who writes
a pass or a rule checks it the same way (onnxscript's ``rewriter/testing.py`` habit).
Everything here is deterministic for a given seed; the oracles import onnx and
onnxruntime only when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence, Union

import numpy as np

from .arrays import to_numpy
from .interpreter import run_graph
from .ir import DType, Graph
from .pass_manager import TOLERANCES
from .verify import verify

if TYPE_CHECKING:
    from onnx import ModelProto

__all__ = ["random_inputs", "assert_close", "assert_relative_close", "relative_error", "onnxruntime_outputs", "reference_outputs",
           "single_node_model", "reference_output", "import_and_run"]

# a tolerance table (dtype -> rtol = atol, or (rtol, atol)), or one rtol = atol / (rtol, atol) for every float
Tolerances = Union[Mapping[DType, Union[float, tuple[float, float]]], float, tuple[float, float]]


# ----- random inputs --------------------------------------------------------------------

def random_inputs(graph: Graph, seed: int = 0, *, sizes: Mapping[str, int] | None = None, dim: int = 3,
                  int_range: tuple[int, int] = (-20, 20), true_fraction: float = 0.5,
                  keep_first: bool = False) -> list[np.ndarray]:
    """One random array per graph input, drawn in input order from ``default_rng(seed)``.

    Floats are standard normal; ints uniform in ``[lo, hi)`` of ``int_range``; bools True
    with probability ``true_fraction``, and with ``keep_first`` the first element of the last
    axis always True (a mask that keeps at least one key per query). A symbolic dim takes
    its size from ``sizes``, else ``dim``.
    """
    rng = np.random.default_rng(seed)
    sizes = sizes or {}
    out = []
    for v in graph.inputs:
        dt = v.type.dtype
        shape = tuple(d if isinstance(d, int) else sizes.get(d, dim) for d in v.type.shape)
        if dt is DType.bool:
            m = rng.random(shape) < true_fraction
            if keep_first and m.ndim:
                m[..., 0] = True
            out.append(m)
        elif dt.is_int:
            out.append(rng.integers(*int_range, shape).astype(dt.numpy))
        else:
            out.append(rng.standard_normal(shape).astype(dt.numpy))
    return out


# ----- closeness ------------------------------------------------------------------------

def _tolerance(tolerances: Tolerances, dtype: DType) -> tuple[float, float] | None:
    """(rtol, atol) for a float ``dtype``, or None: compare exactly."""
    tol = tolerances.get(dtype) if isinstance(tolerances, Mapping) else tolerances if dtype.is_float else None
    if tol is None:
        return None
    return (tol, tol) if isinstance(tol, (int, float)) else tol


def _assert_one_close(got: Any, want: Any, tolerances: Tolerances, dtype: DType | None, err_msg: str) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype, f"{err_msg}: dtype {got.dtype} != {want.dtype}"
    assert got.shape == want.shape, f"{err_msg}: shape {got.shape} != {want.shape}"
    is_float = want.dtype.kind == "f" or want.dtype.name == "bfloat16"
    tol = _tolerance(tolerances, dtype or DType.from_numpy(want.dtype)) if is_float else None
    if tol is None:
        np.testing.assert_array_equal(got, want, err_msg=err_msg)
    else:
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=tol[0], atol=tol[1],
                                   equal_nan=True, err_msg=err_msg)


def assert_close(got: Any, want: Any, tolerances: Tolerances | None = None, *, dtype: DType | None = None,
                 err_msg: str = "") -> None:
    """``got`` matches ``want`` (two arrays, or two lists of them, output by output).

    Dtypes and shapes must be equal. Float outputs (bf16 included) are compared in f64 within
    the tolerance of their dtype (or of ``dtype`` where given: the dtype a case is run at),
    NaN matching NaN; every other output, and a float dtype missing from the table, exactly.
    ``tolerances`` defaults to the pass manager's ``TOLERANCES``.
    """
    tol = TOLERANCES if tolerances is None else tolerances
    if not isinstance(want, (list, tuple)):
        _assert_one_close(got, want, tol, dtype, err_msg)
        return
    assert len(got) == len(want), f"{err_msg}: {len(got)} outputs instead of {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        _assert_one_close(g, w, tol, dtype, f"{err_msg} output {i}".strip())


def assert_relative_close(got: Sequence[Any], want: Sequence[Any], rel: float, err_msg: str = "") -> None:
    """Framework outputs (numpy, torch or jax arrays, leaf by leaf) match within ``rel`` of the
    largest finite magnitude of each expected leaf: the check for whole models, whose outputs
    mix magnitudes so that no per-element tolerance fits them all.

    Dtypes and shapes must be equal, integer and bool leaves equal exactly, and NaN / inf
    stand where they stand in ``want``.
    """
    assert len(got) == len(want), f"{err_msg}: {len(got)} outputs instead of {len(want)}"
    for k, (g, w) in enumerate(zip(got, want)):
        g, w = to_numpy(g), to_numpy(w)
        what = f"{err_msg} output {k}".strip()
        assert g.dtype == w.dtype and g.shape == w.shape, f"{what}: {g.dtype}{list(g.shape)} != {w.dtype}{list(w.shape)}"
        if w.dtype.kind in "biu":
            np.testing.assert_array_equal(g, w, err_msg=what)
            continue
        g64, w64 = g.astype(np.float64), w.astype(np.float64)
        finite = np.isfinite(w64)
        assert np.array_equal(g64[~finite], w64[~finite], equal_nan=True), f"{what}: NaN / inf differ"
        scale = max(float(np.max(np.abs(w64[finite]), initial=0.0)), 1e-30)
        err = float(np.max(np.abs(g64[finite] - w64[finite]), initial=0.0))
        assert err <= rel * scale, f"{what}: max abs error {err:.3g} > {rel} * {scale:.3g}"


def relative_error(got: Any, want: Any) -> float:
    """The largest absolute difference relative to the largest magnitude of ``want``."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


# ----- oracles --------------------------------------------------------------------------

def onnxruntime_outputs(model: ModelProto | str, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The outputs of a model (a ModelProto or a path) under ONNX Runtime's CPU provider."""
    import onnx
    import onnxruntime
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, dict(feeds))


def reference_outputs(model: ModelProto, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The outputs of a model under ONNX's reference evaluator (onnx.reference)."""
    from onnx.reference import ReferenceEvaluator
    return ReferenceEvaluator(model).run(None, dict(feeds))


def single_node_model(op_type: str, inputs: Mapping[str, np.ndarray | None] | Sequence[np.ndarray], opset: int,
                      **attrs: Any) -> tuple[ModelProto, dict[str, np.ndarray]]:
    """A model of one ``op_type`` node (output ``y``, typed like the first input) and its feeds.

    ``inputs``: arrays in input order (named x0, x1, ...), or name -> array, where None is an
    optional input left out (trailing ones are dropped)."""
    from onnx import helper
    named = dict(inputs) if isinstance(inputs, Mapping) else {f"x{i}": a for i, a in enumerate(inputs)}
    names = list(named)
    while names and named[names[-1]] is None:
        names.pop()
    feeds = {n: named[n] for n in names if named[n] is not None}
    node = helper.make_node(op_type, [n if named[n] is not None else "" for n in names], ["y"], **attrs)
    first = next(iter(feeds.values()))
    infos = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
             for n, a in feeds.items()]
    out = helper.make_tensor_value_info("y", helper.np_dtype_to_tensor_dtype(first.dtype), None)
    model = helper.make_model(helper.make_graph([node], op_type.lower(), infos, [out]),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model, feeds


def reference_output(op_type: str, inputs: Mapping[str, np.ndarray | None] | Sequence[np.ndarray], opset: int = 21,
                     **attrs: Any) -> np.ndarray:
    """One ONNX node's output under ONNX's reference evaluator: the oracle for ops torch lacks."""
    model, feeds = single_node_model(op_type, inputs, opset, **attrs)
    return reference_outputs(model, feeds)[0]


def import_and_run(model: ModelProto, feeds: Mapping[str, np.ndarray]) -> tuple[Graph, list[np.ndarray]]:
    """accelir's import of an ONNX model (verified) and its outputs under the interpreter."""
    from .frontends.onnx import import_onnx
    g = import_onnx(model)
    verify(g)
    return g, run_graph(g, g.meta["signature"].flatten(dict(feeds)))
