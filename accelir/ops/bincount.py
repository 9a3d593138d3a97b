"""``bincount``: the count (or the weight sum) of each non-negative integer value, torch's bincount.

Its length is ``max(max(x) + 1, minlength)`` (``minlength`` for an empty ``x``): a size the data
decide, so the op introduces an unbacked dim (accelir/unbacked.py) and joins the data-dependent
family of accelir/ops/dynamic.py. Its only lower bound is ``minlength``; no upper bound follows
from the input's shape, so XLA refuses it by name like every data-dependent op without one.
A negative value has no bin: torch raises, and so does the reference (and the onnxruntime
lowering, which makes its scatter fail on such an index rather than wrap it around).
"""

from __future__ import annotations

import numpy as np

from ..types import DType, TensorType
from .dynamic import register_data_dependent, symbols_attr
from .registry import AttrSpec, TypeRuleError

__all__ = ["NEGATIVE_BIN"]

NEGATIVE_BIN = "bincount: the input holds a negative value, which has no bin (torch raises too); " \
               "clamp or shift the values to be >= 0 first"


def _bincount_rule(types, attrs):
    x, weights = types[0], (types[1] if len(types) > 1 else None)
    if not x.dtype.is_int or x.rank != 1:
        raise TypeRuleError(f"bincount: the input is a 1-d integer tensor, got {x}")
    if attrs["minlength"] < 0:
        raise TypeRuleError(f"bincount: minlength must be >= 0, got {attrs['minlength']}")
    if weights is not None and (not weights.dtype.is_float or weights.shape != x.shape):
        raise TypeRuleError(f"bincount: the weights are floats of the input's shape {list(x.shape)}, got {weights}")
    (u,) = symbols_attr("bincount", attrs, 1)
    return [TensorType(DType.i64 if weights is None else weights.dtype, (u,))]


def _bincount_ref(inputs, attrs, regions):
    x = inputs[0].astype(np.int64)
    if x.size and x.min() < 0:
        raise TypeRuleError(NEGATIVE_BIN)
    if len(inputs) == 1:
        return [np.bincount(x, minlength=attrs["minlength"]).astype(np.int64)]
    w = inputs[1]
    return [np.bincount(x, weights=w.astype(np.float64), minlength=attrs["minlength"]).astype(w.dtype)]


register_data_dependent(
    "bincount", _bincount_rule, _bincount_ref, lambda types, attrs: 1,
    bounds=lambda types, attrs: [(attrs["minlength"], None)], min_inputs=1, max_inputs=2,
    attrs={"minlength": AttrSpec("int", 0)},
    doc="the number of occurrences of each value 0..max(x) of a 1-d integer x, or the sum of the weights "
        "at them, at least minlength long (torch.bincount); a negative value is an error")
