"""Dynamic int8 quantisation: ``linear(x, w, b) {act}`` / ``matmul(x, w)`` with a constant f32 weight
-> ``dynamic_quant_linear(x, w_i8, w_scale[, b]) {act}``.

The weight is quantised once, here: symmetric int8 with one scale per output channel.  x is quantised
at run time (uint8, per tensor) by the op itself.  ``keep`` holds positions in ``graph.nodes`` order of
nodes to leave in float.  A graph holding quantised contractions already is left as it is, so running
the pass twice (the PassManager runs to a fixed point) quantises nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from accelir.ir import Builder, Graph, Value
from accelir.ops.quant import quantize_per_channel

from .quant_targets import QuantTarget, rewrite_targets
from .registry import register_pass

__all__ = ["QuantizeDynamic", "quantize_dynamic"]


@dataclass(frozen=True)
class QuantizeDynamic:
    """Quantise every float matmul / linear with a constant weight to dynamic int8, but ``keep``."""

    keep: frozenset[int] = frozenset()

    @property
    def __name__(self) -> str:
        return "quantize_dynamic"

    @staticmethod
    def _quantize(weight: np.ndarray) -> list[tuple[str, np.ndarray]]:
        q, scale = quantize_per_channel(weight)
        return [("i8", q), ("scale", scale)]

    @staticmethod
    def _make(b: Builder, t: QuantTarget, consts: list[Value]) -> Value:
        return b.op("dynamic_quant_linear", t.x, *consts, *([t.bias] if t.bias is not None else []),
                    activation=t.activation)

    def __call__(self, graph: Graph) -> bool:
        return rewrite_targets(graph, frozenset(self.keep), "quantize_dynamic", self._quantize, self._make)


quantize_dynamic = register_pass("quantize_dynamic")(QuantizeDynamic())
