"""The activation table: the one list of activations that ``linear`` and ``fused_conv`` carry.

An activation is the value of their ``activation`` attribute.  Each row says what the
activation computes (a numpy reference, in the compute dtype), which IR unary op and
attributes compute it on their own (what the fusion passes fold in and what a
decomposition emits), and what the ONNX lowering may use: the plain ONNX op that computes
it exactly, and whether ONNX Runtime's FusedConv takes that op as its activation.  The
jax lowering applies the rule of the row's IR op.  Adding an activation is adding a row
here (and a rule for its IR op in each lowering, where it is a new op).

A leaf module: numpy and scipy only, so the op registry, the passes and both lowerings
can read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import scipy.special

__all__ = ["Activation", "ACTIVATION_TABLE", "ACTIVATIONS", "activation"]


@dataclass(frozen=True)
class Activation:
    """One activation: see the module docstring."""

    name: str
    reference: Callable[[np.ndarray], np.ndarray]
    op: str | None = None  # the IR unary op computing it; None for "none"
    attrs: tuple[tuple[str, Any], ...] = ()  # that op's attributes, sorted by name
    onnx_op: str | None = None  # the standard ONNX op computing it exactly, where one does
    ort_fused_conv: bool = False  # ONNX Runtime's FusedConv takes ``onnx_op`` as its activation


def _relu_ref(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, np.where(np.isnan(x), x, np.zeros((), x.dtype)))


def _gelu_ref(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + scipy.special.erf(x * np.asarray(1.0 / np.sqrt(2.0), x.dtype)))


def _gelu_tanh_ref(x: np.ndarray) -> np.ndarray:
    c = np.asarray(np.sqrt(2.0 / np.pi), x.dtype)
    return 0.5 * x * (1.0 + np.tanh(c * (x + np.asarray(0.044715, x.dtype) * x * x * x)))


ACTIVATION_TABLE: dict[str, Activation] = {a.name: a for a in (
    Activation("none", lambda x: x),
    Activation("relu", _relu_ref, "relu", onnx_op="Relu", ort_fused_conv=True),
    Activation("gelu", _gelu_ref, "gelu", (("approximate", "none"),)),
    Activation("gelu_tanh", _gelu_tanh_ref, "gelu", (("approximate", "tanh"),)),
    Activation("silu", lambda x: x * scipy.special.expit(x), "silu"),
    Activation("sigmoid", scipy.special.expit, "sigmoid", onnx_op="Sigmoid", ort_fused_conv=True),
    Activation("tanh", np.tanh, "tanh", onnx_op="Tanh", ort_fused_conv=True),
)}

ACTIVATIONS = tuple(ACTIVATION_TABLE)  # the values the ``activation`` attribute may take


def activation(name: str) -> Activation:
    """The row of activation ``name``."""
    try:
        return ACTIVATION_TABLE[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}") from None
