"""ONNX ``Einsum``: the shared decomposition :func:`accelir.frontends.decompositions.einsum`
(dot_general contractions, gathers for diagonals, sums for indices one operand carries).
"""

from __future__ import annotations

from ..decompositions import einsum, parse_einsum
from .context import NodeContext, OnnxImportError, rule

__all__ = ["parse_einsum"]


@rule("Einsum")
def _einsum(ctx: NodeContext):
    ops = [v for v in ctx.inputs if v is not None]
    try:
        return [einsum(ctx.b, ctx.attr("equation"), ops)]
    except ValueError as e:
        raise OnnxImportError(f"{ctx.label}: {e}") from None
    except NotImplementedError as e:
        raise ctx.unsupported(str(e)) from None
