"""The pass registry: name -> pass, so pipelines, reports and reproducers can name passes.

A pass is any callable ``Graph -> bool`` (True when it changed the graph).  Register
one with ``register_pass``::

    @register_pass("fuse_gelu", stage="fusion", order=20)
    def fuse_gelu(graph: Graph) -> bool: ...

    register_pass("fold_constants", stage="cleanup")(FoldConstants())

``stage`` places it in the default pipelines (``cleanup`` at level 1, ``fusion`` at
level 2, ``target`` at level 3, restricted to ``targets`` when given); within a stage
passes run by ``order`` and then name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

from accelir.ir import Graph

__all__ = ["PassFn", "PassInfo", "PASSES", "STAGES", "register_pass", "get_pass", "pass_name", "passes_in_stage"]

PassFn = Callable[[Graph], bool]
F = TypeVar("F", bound=PassFn)
STAGES = ("cleanup", "fusion", "target")


@dataclass(frozen=True)
class PassInfo:
    name: str
    fn: PassFn
    stage: str | None
    order: int
    targets: tuple[str, ...] | None


PASSES: dict[str, PassInfo] = {}
_NAMES: dict[int, str] = {}


def register_pass(name: str, *, stage: str | None = None, order: int = 100,
                  targets: tuple[str, ...] | None = None) -> Callable[[F], F]:
    """Decorator registering a pass under ``name``; returns the pass unchanged."""
    if stage is not None and stage not in STAGES:
        raise ValueError(f"pass {name!r}: stage must be one of {STAGES}, got {stage!r}")

    def deco(fn: F) -> F:
        if not callable(fn):
            raise TypeError(f"pass {name!r} must be callable Graph -> bool, got {type(fn).__name__}")
        old = PASSES.get(name)
        if old is not None and old.fn is not fn:
            raise ValueError(f"a different pass is already registered as {name!r}")
        PASSES[name] = PassInfo(name, fn, stage, order, tuple(targets) if targets is not None else None)
        _NAMES[id(fn)] = name
        return fn
    return deco


def get_pass(name: str) -> PassFn:
    """The pass registered as ``name``; the ``passes/*.py`` modules are imported first, so every one
    of them has registered its passes."""
    from .pipeline import load_pass_modules
    load_pass_modules()
    try:
        return PASSES[name].fn
    except KeyError:
        known = ", ".join(sorted(PASSES)) or "none"
        raise KeyError(f"no pass named {name!r} (registered: {known})") from None


def pass_name(p: PassFn) -> str:
    """The registered name of ``p``, else its ``name`` / ``__name__``, else its type's name."""
    name = _NAMES.get(id(p))
    if name is not None and PASSES.get(name) is not None and PASSES[name].fn is p:
        return name
    for attr in ("name", "__name__"):
        v = getattr(p, attr, None)
        if isinstance(v, str):
            return v
    return type(p).__name__


def passes_in_stage(stage: str, target: str | None = None) -> list[PassInfo]:
    """Registered passes of ``stage`` (for ``target`` when given), in run order."""
    out = [p for p in PASSES.values() if p.stage == stage
           and (p.targets is None or (target is not None and target in p.targets))]
    return sorted(out, key=lambda p: (p.order, p.name))
