"""The pass registry: name -> pass, so reports, ``--passes`` lists and reproducers can name passes.

A pass is any callable ``Graph -> bool`` (True when it changed the graph).  Register
one with ``register_pass``::

    @register_pass("fuse_gelu")
    def fuse_gelu(graph: Graph) -> bool: ...

    fold_constants = register_pass("fold_constants")(FoldConstants())

The registry says nothing about when a pass runs: the default pipelines are the
explicit lists in :mod:`.pipeline`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

from accelir.ir import Graph

__all__ = ["PassFn", "PassInfo", "PASSES", "register_pass", "get_pass", "pass_name"]

PassFn = Callable[[Graph], bool]
F = TypeVar("F", bound=PassFn)


@dataclass(frozen=True)
class PassInfo:
    name: str
    fn: PassFn


PASSES: dict[str, PassInfo] = {}
_NAMES: dict[int, str] = {}


def register_pass(name: str) -> Callable[[F], F]:
    """Decorator registering a pass under ``name``; returns the pass unchanged."""

    def deco(fn: F) -> F:
        if not callable(fn):
            raise TypeError(f"pass {name!r} must be callable Graph -> bool, got {type(fn).__name__}")
        old = PASSES.get(name)
        if old is not None and old.fn is not fn:
            raise ValueError(f"a different pass is already registered as {name!r}")
        PASSES[name] = PassInfo(name, fn)
        _NAMES[id(fn)] = name
        return fn
    return deco


def get_pass(name: str) -> PassFn:
    """The pass registered as ``name``.  Importing :mod:`accelir.passes` (which any import of this
    module does first) registers every built-in pass."""
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
