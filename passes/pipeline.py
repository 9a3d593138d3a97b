"""The default pipelines: ``pipeline(level, target=None) -> list of passes``.

The pass lists below are the whole story, read top to bottom: a pass runs by default
only where one of these lists names it, in the order written.

- 0: nothing
- 1: cleanup: ``dce``, ``fold_constants``, ``cse``, ``simplify``
- 2 (default): cleanup + the fusions
- 3: level 2 + the passes of ``target`` (``xla``: ``fuse_elementwise``)

A target may veto rewrites its backend cannot use: a :class:`Target` names vetoed
passes (``"fuse_attention"``) or single rules of a rule pass
(``"fuse_gelu:gelu_tanh"``).  The PassManager runs the list to a fixed point.
A new pass registers its name in :mod:`.registry` and joins a pipeline here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .cse import cse
from .dce import dce
from .fold_constants import fold_constants
from .fuse_attention import fuse_attention
from .fuse_conv_act import fuse_conv_act
from .fuse_conv_bn import fuse_conv_bn
from .fuse_decode_attention import fuse_decode_attention
from .fuse_elementwise import fuse_elementwise
from .fuse_gelu import fuse_gelu
from .fuse_layer_norm import fuse_layer_norm
from .fuse_linear import fuse_linear
from .fuse_parallel_linear import fuse_parallel_linear
from .fuse_rms_norm import fuse_rms_norm
from .fuse_rotary import fuse_rotary
from .fuse_silu import fuse_silu
from .fuse_skip_norm import fuse_skip_norm
from .fuse_softmax import fuse_softmax
from .pattern import RulePass
from .registry import PassFn, pass_name
from .simplify import simplify

__all__ = ["Target", "TARGETS", "CLEANUP", "FUSION", "TARGET_PASSES", "pipeline"]

# level 1
CLEANUP: tuple[PassFn, ...] = (dce, fold_constants, cse, simplify)

# level 2: cleanup, then the fusions; a fusion that reads what another makes runs after it
FUSION: tuple[PassFn, ...] = (
    fuse_gelu,             # gelu and silu first: linear and conv take them as their activation
    fuse_silu,
    fuse_softmax,          # before fuse_attention, which reads a softmax
    fuse_layer_norm,
    fuse_rms_norm,
    fuse_skip_norm,        # reads the layer_norm / rms_norm nodes fused above
    fuse_attention,
    fuse_decode_attention,  # reads the attention nodes fused above, over a key / value cache
    fuse_rotary,
    fuse_linear,
    fuse_parallel_linear,  # merges sibling linear nodes, with their activation
    fuse_conv_bn,          # folds into a conv whose activation is still "none" ...
    fuse_conv_act,         # ... so the activation joins the conv after it
)

# level 3: each target's own passes, after the fusions
TARGET_PASSES: dict[str, tuple[PassFn, ...]] = {
    "onnxruntime": (),
    "xla": (fuse_elementwise,),  # the remaining elementwise chains, as one region XLA fuses into a loop
}


@dataclass(frozen=True)
class Target:
    """A backend's say in the pipeline: ``vetoes`` holds pass names and ``pass:rule`` names."""

    name: str
    vetoes: frozenset[str] = frozenset()

    def allows(self, p: PassFn) -> bool:
        return pass_name(p) not in self.vetoes

    def restrict(self, p: PassFn) -> PassFn:
        """``p`` with the target's vetoed rules switched off (rule passes only)."""
        if not isinstance(p, RulePass):
            return p
        prefix = p.name + ":"
        rules = frozenset(v[len(prefix):] for v in self.vetoes if v.startswith(prefix))
        return dataclasses.replace(p, veto=p.veto | rules) if rules else p


TARGETS: dict[str, Target] = {
    # onnxruntime folds a batch norm into the conv before it when it builds a session
    # (ConvBNFusion), into the same kernel.  Folded here, every conv weight would exist twice
    # while the session is built (the fold's, and the copy onnxruntime makes of each weight it
    # is handed): ResNet-50's optimize() peaked at 4.6x its weight bytes with the fold and at
    # 3.7x without it, with the same latency.
    "onnxruntime": Target("onnxruntime", frozenset({"fuse_conv_bn:conv_batch_norm"})),
    # XLA gains nothing from the decode-attention composite (it lowers to its decomposition), and the
    # generation path writes the cache in place where it finds concat(past, new): keep that form there
    "xla": Target("xla", frozenset({"fuse_decode_attention"})),
}


def pipeline(level: int = 2, target: str | Target | None = None) -> list[PassFn]:
    """The passes of optimisation ``level`` (0-3), with ``target``'s vetoes applied."""
    if level not in (0, 1, 2, 3):
        raise ValueError(f"pipeline level must be 0, 1, 2 or 3, got {level!r}")
    if isinstance(target, str):
        try:
            target = TARGETS[target]
        except KeyError:
            raise ValueError(f"unknown target {target!r}; known: {', '.join(sorted(TARGETS))}") from None
    passes = () if level == 0 else CLEANUP if level == 1 else CLEANUP + FUSION
    if level == 3 and target is not None:
        passes += TARGET_PASSES.get(target.name, ())
    out: list[PassFn] = []
    for p in passes:
        if target is not None:
            if not target.allows(p):
                continue
            p = target.restrict(p)
        out.append(p)
    return out
