"""One ONNX node as a model: the oracle that op tests run through ONNX's reference
evaluator or ONNX Runtime."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from onnx import ModelProto, helper


def single_node_model(op_type: str, inputs: Mapping[str, np.ndarray | None] | Sequence[np.ndarray], opset: int,
                      **attrs) -> tuple[ModelProto, dict[str, np.ndarray]]:
    """A model of one ``op_type`` node (output ``y``, typed like the first input) and its feeds.

    ``inputs``: arrays in input order (named x0, x1, ...), or name -> array, where None is an
    optional input left out (trailing ones are dropped)."""
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
                     **attrs) -> np.ndarray:
    """The node's output under ONNX's reference evaluator."""
    from onnx.reference import ReferenceEvaluator
    model, feeds = single_node_model(op_type, inputs, opset, **attrs)
    return ReferenceEvaluator(model).run(None, feeds)[0]


def onnxruntime_outputs(model: ModelProto, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The model's outputs under ONNX Runtime's CPU provider."""
    import onnxruntime
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, dict(feeds))


def import_and_run(model: ModelProto, feeds: Mapping[str, np.ndarray]):
    """accelir's import of the model (verified) and its outputs under the interpreter."""
    from accelir import run_graph, verify
    from accelir.frontends.onnx import import_onnx
    g = import_onnx(model)
    verify(g)
    return g, run_graph(g, g.meta["signature"].flatten(dict(feeds)))
