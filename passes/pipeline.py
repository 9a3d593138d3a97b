"""The default pipelines: ``pipeline(level, target=None) -> list of passes``.

- 0: nothing
- 1: cleanup: ``dce``, ``fold_constants``, ``cse``, ``simplify``
- 2 (default): cleanup + every registered ``fusion`` pass (the ``passes/fuse_*.py``
  modules register themselves; this module imports them, so new ones join as they land)
- 3: level 2 + the ``target`` passes registered for ``target``

A target may veto rewrites its backend cannot use: a :class:`Target` names vetoed
passes (``"fuse_attention"``) or single rules of a rule pass
(``"fuse_gelu:gelu_tanh"``).  The PassManager runs the list to a fixed point.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass

from .pattern import RulePass
from .registry import PassFn, pass_name, passes_in_stage

__all__ = ["Target", "TARGETS", "pipeline", "load_pass_modules"]


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
    "xla": Target("xla"),
}

_loaded = False


def load_pass_modules() -> None:
    """Import every ``passes/*.py`` module once, so each registers its passes."""
    global _loaded
    if _loaded:
        return
    from . import __path__ as pkg_path
    for mod in pkgutil.iter_modules(pkg_path):
        importlib.import_module(f"{__package__}.{mod.name}")
    _loaded = True


def pipeline(level: int = 2, target: str | Target | None = None) -> list[PassFn]:
    """The passes of optimisation ``level`` (0-3), with ``target``'s vetoes applied."""
    if level not in (0, 1, 2, 3):
        raise ValueError(f"pipeline level must be 0, 1, 2 or 3, got {level!r}")
    if isinstance(target, str):
        try:
            target = TARGETS[target]
        except KeyError:
            raise ValueError(f"unknown target {target!r}; known: {', '.join(sorted(TARGETS))}") from None
    load_pass_modules()
    stages = ("cleanup", "fusion", "target")[:level]
    tname = target.name if target is not None else None
    out: list[PassFn] = []
    for stage in stages:
        for info in passes_in_stage(stage, tname if stage == "target" else None):
            p = info.fn
            if target is not None:
                if not target.allows(p):
                    continue
                p = target.restrict(p)
            out.append(p)
    return out
