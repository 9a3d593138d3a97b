"""Array conversion shared by the frontends, the interpreter and the runners.

A leaf module (numpy only, framework modules imported lazily) so that a frontend
can turn a framework tensor into numpy without importing the interpreter.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["memory_key", "to_numpy", "to_torch"]


def to_numpy(x: Any) -> np.ndarray:
    """numpy view of a numpy / torch / jax array or python scalar (no copy where possible)."""
    if isinstance(x, np.ndarray):
        return x
    mod = type(x).__module__
    if mod.startswith("torch"):
        t = x.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if str(t.dtype) == "torch.bfloat16":  # numpy has no bf16: reinterpret the bits as ml_dtypes'
            import ml_dtypes
            import torch
            return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return t.numpy()
    return np.asarray(x)


def to_torch(a: Any) -> Any:
    """A torch CPU tensor of a numpy array (bf16 through its bits: torch reads no ml_dtypes array);
    shares memory where the array is contiguous and writable."""
    import torch
    a = np.asarray(a)
    a = np.ascontiguousarray(a) if a.ndim else np.array(a)  # ascontiguousarray makes a 0-d array 1-d
    if not a.flags.writeable:
        a = a.copy()
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def memory_key(a: np.ndarray) -> tuple:
    """Where an array's elements lie: equal for two arrays that are the same elements of the same memory
    (two names for one weight, or two graphs' views of the model's array), whatever their names."""
    return a.__array_interface__["data"][0], a.shape, a.dtype.str, a.strides
