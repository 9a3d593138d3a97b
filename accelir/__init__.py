"""accelir: capture PyTorch, JAX and ONNX models into one typed graph IR, optimise it
with passes you can watch one at a time, and lower it to ONNX Runtime or XLA."""

from __future__ import annotations

from . import ops
from .api import CompiledModel, capture, optimize
from . import generation  # registers optimize()'s path for causal LMs (a prefill and a decode graph)
from . import generation_flax  # and for flax decoders with their cache (one decode-step graph)
from .errors import (AccelirError, CaptureError, InputError, LoweringError, NumericMismatchError, OutputExistsError,
                     ParseError, PassError, UnsupportedOpError, VerificationError)
from .interpreter import interpret, run_graph
from .ir import Builder, DType, Graph, Node, TensorType, Value
from .pass_manager import PassManager
from .bisect import bisect
from .text import load, parse, print_graph, save
from .verify import verify

from .dynamo import register_if_dynamo_loaded as _register_dynamo_backend

_register_dynamo_backend()  # torch.compile(backend="accelir"); the entry point covers a torch._dynamo loaded later

__version__ = "0.1.0"

__all__ = [
    "AccelirError", "CaptureError", "InputError", "LoweringError", "NumericMismatchError", "OutputExistsError", "ParseError",
    "PassError", "UnsupportedOpError", "VerificationError", "Builder", "DType", "Graph", "Node", "TensorType", "Value", "interpret", "run_graph",
    "load", "parse", "print_graph", "save", "verify", "ops", "capture", "optimize", "CompiledModel",
    "PassManager", "bisect",
]
