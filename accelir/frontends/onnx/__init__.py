"""The ONNX frontend: ``import_onnx`` turns an ``onnx.ModelProto`` or an ``.onnx`` file
into an accelir Graph.

Layout: ``proto`` reads ONNX protos (errors, dtypes, tensors, opsets, node order);
``context`` is what op rules import (the rule context, the rule tables, shared helpers);
one module per op family holds the rules (``elementwise``, ``shape``, ``reduce``,
``nn``, ``pooling``, ``sampling``, ``indexing``, ``einsum``, ``quantize``,
``recurrent``, ``signal``, ``control_flow``, ``sequence``, ``microsoft``); ``evaluate`` computes
shape-like values at import; ``driver`` walks the model and dispatches each node to its
rule; ``conformance`` runs ONNX's backend test cases
(``python -m accelir.frontends.onnx.conformance``).
"""

from __future__ import annotations

from .driver import OUT_OF_SCOPE, OnnxSignature, import_onnx, restore_onnx_interface
from .proto import (MAX_INLINED_NODES, ONNX_DTYPES, DynamicValueError, ImportScope, OnnxImportError, check_names,
                    check_opsets, onnx_dtype, tensor_to_array)

__all__ = ["import_onnx", "restore_onnx_interface", "OnnxImportError", "DynamicValueError", "OnnxSignature",
           "ONNX_DTYPES", "onnx_dtype", "tensor_to_array", "ImportScope", "MAX_INLINED_NODES", "check_opsets",
           "check_names", "OUT_OF_SCOPE"]
