"""The PyTorch frontend: ``capture_torch`` turns a ``torch.nn.Module`` (through
``torch.export``, or ``torch.fx`` on request) into an accelir Graph.

Layout: ``context`` is what aten rules import (the rule context, the rule table,
schema binding, shared helpers); one module per op family holds the rules
(``elementwise``, ``creation``, ``shape``, ``indexing``, ``reduce``, ``linalg``,
``nn``); ``converter`` walks fx graphs into the IR (shared by both paths); ``fx``
is the torch.fx path; ``driver`` is the torch.export path and the entry point.
"""

from __future__ import annotations

from .context import TORCH_DTYPES, NodeContext, torch_dtype
from .converter import TorchSignature
from .driver import capture_torch, unsupported_ops

__all__ = ["capture_torch", "TorchSignature", "NodeContext", "TORCH_DTYPES", "torch_dtype", "unsupported_ops"]
