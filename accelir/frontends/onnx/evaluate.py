"""Import-time evaluation of small tensors: the values of shape-like inputs (Reshape's shape,
Slice's starts, ...), which the IR keeps as attributes and so needs when the graph is built.

Numeric inputs run through the op's reference; symbolic dims (``"batch"``) flow through
shape arithmetic and structural ops as object arrays, the way onnxsim and TVM do.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import dims as D
from ...ops import registry
from .context import fits_import_budget

__all__ = ["evaluate_known"]


_KNOWN_LIMIT = 1 << 16
_SYM_ARITH = {"add": D.dim_add, "sub": D.dim_sub, "mul": D.dim_mul}
_SYM_STRUCTURAL = {"concat", "gather", "slice", "unsqueeze", "squeeze", "reshape", "transpose", "broadcast_to",
                   "reverse", "take_along_axis", "where"}
_KEEP_NUMERIC = {"gather": (1,), "take_along_axis": (1,), "where": (0,)}  # index / condition operands


def _sym_div(a: D.Dim, b: D.Dim) -> D.Dim:
    if type(a) is int and type(b) is int:
        q = abs(a) // abs(b) if b else 0
        return q if (a >= 0) == (b >= 0) else -q
    return D.dim_floordiv(a, b)  # shape arithmetic: dims are non-negative


def _as_object(a: np.ndarray) -> np.ndarray:
    if a.dtype == object:
        return a
    return np.array([int(x) for x in a.reshape(-1)], dtype=object).reshape(a.shape)


def evaluate_known(node: Any, ins: list[np.ndarray]) -> list[np.ndarray] | None:
    """Outputs of ``node`` on known inputs, or None when they cannot (or should not) be computed now."""
    if any(a.size > _KNOWN_LIMIT for a in ins) or node.op in ("constant", "iota"):
        return None
    if any(type(D.dim_prod(o.shape)) is int and not fits_import_budget(o.shape, o.dtype) for o in node.outputs):
        return None  # a small input can make a huge output (broadcast_to, pad, tile)
    for v in node.attrs.values():
        if isinstance(v, tuple) and any(isinstance(x, str) for x in v):
            return None
    try:
        if not any(a.dtype == object for a in ins):
            opdef = registry.get(node.op)
            if not opdef.pure:
                return None
            outs = opdef.reference(list(ins), dict(node.attrs), ())
            return [np.asarray(o).astype(v.dtype.numpy, copy=False) for o, v in zip(outs, node.outputs)]
        if node.op in _SYM_ARITH or node.op == "div":
            fn = _SYM_ARITH.get(node.op, _sym_div)
            out = np.frompyfunc(fn, 2, 1)(_as_object(ins[0]), _as_object(ins[1]))
        elif node.op == "neg":
            out = np.frompyfunc(lambda d: D.dim_sub(0, d), 1, 1)(ins[0])
        elif node.op == "cast" and node.attrs["dtype"].is_int:
            out = ins[0]
        elif node.op == "reduce_prod" and len(node.attrs["axes"]) == ins[0].ndim:
            out = np.array(D.dim_prod(ins[0].reshape(-1).tolist()), dtype=object)
        elif node.op in _SYM_STRUCTURAL:
            keep = _KEEP_NUMERIC.get(node.op, ())
            ins = [a if i in keep else _as_object(a) for i, a in enumerate(ins)]
            out = registry.get(node.op).reference(list(ins), dict(node.attrs), ())[0]
        else:
            return None
    except Exception:
        return None
    out = np.asarray(out, dtype=object) if not isinstance(out, np.ndarray) else out
    if out.dtype == object and not any(isinstance(x, str) for x in out.reshape(-1)):
        out = np.array(out.tolist(), dtype=node.outputs[0].dtype.numpy).reshape(out.shape)
    return [out]
