"""The data-dependent ops (accelir/ops/dynamic.py) on XLA: refused.

XLA compiles static shapes, and these ops' output sizes come from run-time values.
``check_lowerable`` refuses such a graph before tracing, naming the node and the input
that decides the size (``accelir.unbacked.why_data_dependent``); the rules below say the
same where a node reaches the lowering by another road (a region lowered on its own).
"""

from __future__ import annotations

from accelir.errors import LoweringError
from accelir.ops.dynamic import DATA_DEPENDENT_OPS
from accelir.unbacked import why_data_dependent

from .context import register_lowering


def _refuse(ctx, *args, **attrs):
    raise LoweringError(why_data_dependent(ctx.node))


for _op in DATA_DEPENDENT_OPS:
    register_lowering(_op)(_refuse)
