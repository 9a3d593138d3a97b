"""What an onnxruntime failure at run time means in accelir's terms.

Some lowerings check their data by letting a kernel fail on it (``bincount`` turns a negative
value into an out-of-range scatter index). ONNX Runtime then raises in its own words, naming
the ONNX node; the node's name starts with the accelir op it was lowered from
(``LoweringContext.op``), which is how the failure is mapped back here to one line that says
what was wrong and what to do.
"""

from __future__ import annotations

import re

from accelir.errors import InputError
from accelir.ops.bincount import NEGATIVE_BIN

__all__ = ["RUN_TIME_CHECKS", "run_time_error"]

# accelir op -> what a failure of its lowering at run time means
RUN_TIME_CHECKS: dict[str, str] = {
    "bincount": NEGATIVE_BIN,
    "constant_of_shape": "constant_of_shape: a size is negative, or past the bound torch.export recorded for a size "
                         "read from data (the model's own checks refuse it); keep the data within that range"}

_NODE = re.compile(r"Name:'([^'/]+)/([^']*)'")


def run_time_error(message: str) -> InputError:
    """One line for an onnxruntime exception raised while running a lowered graph."""
    status = message.split("Status Message:", 1)[-1].strip().splitlines()[0] if message else "unknown failure"
    found = _NODE.search(message)
    if found is None:
        return InputError(f"onnxruntime failed at run time: {status}; check the input values")
    op, onnx_node = found.groups()
    if op in RUN_TIME_CHECKS:
        return InputError(f"{RUN_TIME_CHECKS[op]} (onnxruntime: {status})")
    return InputError(f"onnxruntime failed at run time in {onnx_node}, lowered from accelir op {op!r}: {status}; "
                      "check the input values")
