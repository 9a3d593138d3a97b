"""Blockwise weight-only quantisation: ``linear(x, w, b) {act}`` / ``matmul(x, w)`` with a constant f32
weight -> ``matmul_nbits(x, b_packed, scales[, zero_points][, b]) {bits, block_size, act}``.

The weight is cut into blocks of ``block_size`` along K and quantised to ``bits`` (4 or 8) per block,
symmetric (zero point 2^(bits-1), implied) or with a zero point per block, and packed in onnxruntime's
MatMulNBits layout; x stays in float.  ``accuracy_level`` is passed to the kernel (0: its default,
1: f32, 2: f16, 3: bf16, 4: int8 activations) and is part of the op's arithmetic: at 4 x is rounded
to int8 per block (``accelir.ops.quant``), on every backend.  ``precision="int4"`` picks the level of
the backend that runs the graph (``accelir.precision.int4_accuracy_level``).  ``keep`` and the no-op
on a quantised graph are as in ``quantize_dynamic``.
"""

from __future__ import annotations

from dataclasses import dataclass

from accelir.errors import AccelirError
import numpy as np

from accelir.ir import Builder, Graph, Value
from accelir.ops.quant import pack_nbits, quantize_blockwise

from .quant_targets import QuantTarget, rewrite_targets
from .registry import register_pass

__all__ = ["QuantizeWeights", "quantize_weights"]


@dataclass(frozen=True)
class QuantizeWeights:
    """Quantise every float matmul / linear with a constant weight to blockwise ``bits``, but ``keep``."""

    bits: int = 4
    block_size: int = 32
    symmetric: bool = True
    accuracy_level: int = 0
    keep: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise AccelirError(f"quantize_weights: bits={self.bits!r}; choose 4 or 8")
        if self.block_size not in (32, 64, 128):
            raise AccelirError(f"quantize_weights: block_size={self.block_size!r}; choose 32, 64 or 128")
        if self.accuracy_level not in (0, 1, 2, 3, 4):
            raise AccelirError(f"quantize_weights: accuracy_level={self.accuracy_level!r}; choose 0 to 4")

    @property
    def __name__(self) -> str:
        return "quantize_weights"

    def _quantize(self, weight: np.ndarray) -> list[tuple[str, np.ndarray]]:
        q, scales, zp = quantize_blockwise(weight, self.bits, self.block_size, self.symmetric)
        n, nb = scales.shape
        arrays = [(f"q{self.bits}", pack_nbits(q.reshape(n, nb, self.block_size), self.bits)), ("scale", scales)]
        if not self.symmetric:
            arrays.append(("zp", pack_nbits(zp, self.bits)))
        return arrays

    def _make(self, b: Builder, t: QuantTarget, consts: list[Value]) -> Value:
        return b.op("matmul_nbits", t.x, *consts, *([t.bias] if t.bias is not None else []), bits=self.bits,
                    block_size=self.block_size, zero_points=not self.symmetric, accuracy_level=self.accuracy_level,
                    activation=t.activation)

    def __call__(self, graph: Graph) -> bool:
        return rewrite_targets(graph, frozenset(self.keep), "quantize_weights", self._quantize, self._make,
                               (self.bits, self.block_size, self.symmetric))


quantize_weights = register_pass("quantize_weights")(QuantizeWeights())
