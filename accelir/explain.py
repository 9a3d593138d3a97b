"""Why not fused: the candidates the fusion passes left alone, with each rule's reason and where the node came from.

The pattern engine already records near misses (a rule that matched part of the graph
and then declined, and why) when a pass runs verbose.  ``PassManager(explain=True)``
runs each pass that can record them verbose (:func:`explaining`), keeps the near
misses of each pass's last run (:class:`Explainer`) and, at the end, reports those whose
node is still in the graph: a candidate a later rewrite fused after all is not a miss.
``optimize(..., debug={"explain": True})`` and ``accelir explain`` use the same list,
and the HTML report shows it next to each node.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .ir import Graph, Node

__all__ = ["Unfused", "Explainer", "explaining", "explain_text"]


@dataclass(frozen=True)
class Unfused:
    """One candidate a pass left unfused: the pass, its rule, the rule's reason, and the node it looked at."""

    pass_name: str
    rule: str
    reason: str
    node: Node = field(compare=False, repr=False)

    @property
    def op(self) -> str:
        return self.node.op

    @property
    def module(self) -> str:
        return str(self.node.meta.get("module") or "")

    @property
    def source(self) -> str:
        return str(self.node.meta.get("source") or "")

    @property
    def where(self) -> str:
        """Module path and source line, as far as the frontend recorded them."""
        parts = [f"module {self.module}" if self.module else "", self.source,
                 "" if self.module or self.source else str(self.node.meta.get("origin") or "unknown origin")]
        return ", ".join(p for p in parts if p)

    def __str__(self) -> str:
        return f"{self.rule} at {self.op} ({self.where}): {self.reason}"


def explaining(p: Callable[[Graph], bool]) -> Callable[[Graph], bool]:
    """``p`` set to record its near misses: a copy of a pass dataclass with a ``verbose`` switch, else ``p``."""
    if dataclasses.is_dataclass(p) and hasattr(p, "near_misses") \
            and any(f.name == "verbose" for f in dataclasses.fields(p)):
        return dataclasses.replace(p, verbose=True)
    return p


class Explainer:
    """Keeps the near misses of each pass's last run; :meth:`unfused` lists those still in the graph."""

    def __init__(self) -> None:
        self._last: dict[str, list[Any]] = {}

    def after(self, name: str, p: Any) -> None:
        """Note the near misses ``p`` (registered as ``name``) recorded in the run that just ended."""
        misses = getattr(p, "near_misses", None)
        if misses is not None:
            self._last[name] = list(misses)

    def unfused(self) -> list[Unfused]:
        out = []
        for name, misses in self._last.items():
            seen = set()
            for m in misses:
                if m.node.graph is None or (m.rule, id(m.node)) in seen:
                    continue  # removed since: a later rewrite took it after all
                seen.add((m.rule, id(m.node)))
                out.append(Unfused(name, m.rule, m.reason, m.node))
        return out


def explain_text(unfused: Sequence[Unfused], pass_name: str | None = None) -> str:
    """The list by pass, one candidate a line; ``pass_name`` keeps that pass's only."""
    rows = [u for u in unfused if pass_name is None or u.pass_name == pass_name]
    if not rows:
        which = f"pass {pass_name}" if pass_name else "any pass"
        return f"why not fused: no candidate left unfused by {which}\n"
    lines = ["why not fused:"]
    for name in dict.fromkeys(u.pass_name for u in rows):
        lines.append(f"  {name}:")
        lines += [f"    {u}" for u in rows if u.pass_name == name]
    return "\n".join(lines) + "\n"
