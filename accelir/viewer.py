"""The data behind the interactive HTML graph: one frame per graph state, laid out and drawn in the browser.

A frame is the graph's structure at one point of a pipeline (the input, then the graph
after each pass that changed it): its drawn items with their details, and its edges.
Nodes keep one key across frames, taken from the node object itself, since passes
rewrite the graph in place: a node a pass added is one whose key the previous frame
lacks, one it removed is one the next frame lacks.  So the page can show, for any
pass, the graph after it with what it added, replaced and removed highlighted.

Layout happens in the page (:mod:`accelir.viewer_assets`), not here: collapsing a
layer or picking another pass needs a new layout, and a browser lays out GPT-2 small
in a few milliseconds, so the file holds data only and opens fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from .ir import Graph, Node, Value
from .ops import registry
from .printer import Namer, StableNumbers

__all__ = ["Frames", "frame_of", "frames_json", "family", "COLOURS", "dump_label"]

# Fill colours by op family; the families come from the registry module an op is defined in.
COLOURS = {
    "input": "#cfe3ff",
    "output": "#ffd0e0",
    "constant": "#eeeeee",
    "elementwise": "#fff3c4",
    "reduce": "#ffd9b3",
    "linalg": "#ffb3b3",
    "shape": "#e2e2f5",
    "nn": "#c9f0c9",
    "control": "#f0c9f0",
    "composite": "#a8e6cf",
    "region": "#b8d8f8",
}


def family(op: str) -> str:
    """The colour family of ``op``: its registry module, or composite / region / constant."""
    if op == "constant":
        return "constant"
    d = registry.REGISTRY.get(op)
    if d is None:
        return "elementwise"
    if d.has_regions:
        return "region"
    if d.composite:
        return "composite"
    return d.reference.__module__.rsplit(".", 1)[-1]


def dump_label(number: int, what: str) -> str:
    """The name a PassManager gives the dump ``number`` of ``what`` (``001-after-cse``), without ``.air``."""
    from .pass_manager import file_part
    return f"{number:03d}-{file_part(what)}"


def region_summary(node: Node) -> str:
    """The ops of a region node's bodies, most frequent first, in at most 48 characters."""
    hist: dict[str, int] = {}
    for r in node.regions:
        for op, n in r.op_histogram().items():
            if op != "constant":
                hist[op] = hist.get(op, 0) + n
    parts = [op if n == 1 else f"{op} x{n}" for op, n in sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))]
    text = ", ".join(parts)
    return text if len(text) <= 48 else text[:45] + "..."


def attr_text(node: Node) -> str:
    return ", ".join(f"{k}={v}" for k, v in node.attrs.items())


def _provenance_lines(node: Node) -> list[str]:
    m = node.meta
    lines = [f"{label}: {m[key]}" for key, label in (("module", "module"), ("source", "source line"),
                                                      ("origin", "origin")) if m.get(key)]
    if m.get("pass"):
        lines.append(f"made by pass: {m['pass']}" + (f", rule {m['rule']}" if m.get("rule") else ""))
    return lines or ["provenance: unknown origin"]


@dataclass(slots=True)
class Item:
    """One drawn box: a graph input, a node, or the graph's return."""

    key: str
    label: str
    sub: str
    family: str
    tooltip: str  # the first lines of ``details``: what a hover shows and the dot output carries
    details: str = ""
    module: str = ""
    find: str = ""  # what search matches: value names, op, module path, layer names
    outputs: int = 1
    misses: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Edge:
    src: str
    dst: str
    index: int  # output index of the source
    count: int  # output count of the source

    @property
    def label(self) -> str:
        return str(self.index) if self.count > 1 else ""


def frame_of(graph: Graph, show_constants: bool = False, key_of: Callable[[Node, int], str] | None = None,
             misses: Mapping[int, list[str]] | None = None,
             stable: StableNumbers | None = None) -> tuple[list[Item], list[Edge]]:
    """The items and edges drawn for ``graph``.

    Constants are folded into their users' details unless ``show_constants``.
    ``key_of(node, position)`` names a node's item (default ``n<position>``); ``misses``
    maps ``id(node)`` to its "why not fused" lines; ``stable`` numbers values as the
    printer does (see :class:`~accelir.printer.StableNumbers`).
    """
    namer = Namer.for_graph(graph, stable)
    key_of = key_of or (lambda node, k: f"n{k}")
    misses = misses or {}
    items: list[Item] = []
    edges: list[Edge] = []
    where: dict[int, tuple[str, int, int]] = {}  # value id -> (item key, output index, output count)
    hidden: dict[int, str] = {}  # value id of an undrawn constant -> its description

    for i, v in enumerate(graph.inputs):
        key = f"in{i}"
        text = f"graph input {namer(v)}: {v.type}"
        items.append(Item(key, namer(v), str(v.type), "input", text, text, find=f"{namer(v)} input"))
        where[id(v)] = (key, 0, 1)
    for k, node in enumerate(graph.nodes):
        if node.op == "constant" and not show_constants:
            hidden[id(node.outputs[0])] = (f"{namer(node.outputs[0])} = constant {node.attrs['name']}: "
                                           f"{node.outputs[0].type}")
            continue
        key = key_of(node, k)
        items.append(_node_item(node, key, namer, hidden, misses.get(id(node), [])))
        for j, o in enumerate(node.outputs):
            where[id(o)] = (key, j, len(node.outputs))
        for v in node.inputs:
            _edge_to(edges, where, v, key)
    outs = ", ".join(f"{namer(v)}: {v.type}" for v in graph.outputs)
    items.append(Item("out", "return", ", ".join(str(v.type) for v in graph.outputs)[:40], "output",
                      "graph outputs: " + outs, "graph outputs: " + outs,
                      find="return output " + " ".join(namer(v) for v in graph.outputs)))
    for v in graph.outputs:
        _edge_to(edges, where, v, "out")
    return items, edges


def _node_item(node: Node, key: str, namer: Namer, hidden: Mapping[int, str], misses: list[str]) -> Item:
    outs = ", ".join(str(o.type) for o in node.outputs)
    names = ", ".join(namer(o) for o in node.outputs)
    label = node.op if node.op != "constant" else f"const {node.attrs['name']}"
    head = f"{names} = {node.op} : {outs}"
    tip = [head]
    if node.attrs:
        tip.append(f"attrs: {attr_text(node)}")
    if node.regions:
        tip.append(f"region: {region_summary(node)}")
    consts = [hidden[id(v)] for v in node.inputs if id(v) in hidden]
    if consts:
        tip.append("reads " + "; ".join(consts))
    tip.append(f"from: {node.source()}")
    details = [head, f"op: {node.op}", "inputs:"]
    details += [f"  {namer(v)}: {v.type}" + (" (constant)" if id(v) in hidden else "") for v in node.inputs]
    details.append("outputs:")
    details += [f"  {namer(o)}: {o.type}" for o in node.outputs]
    if node.attrs:
        details.append("attributes:")
        details += [f"  {k} = {v}" for k, v in node.attrs.items()]
    if node.regions:
        details.append(f"region: {region_summary(node)}")
    if consts:
        details.append("constants:")
        details += [f"  {c}" for c in consts]
    details += _provenance_lines(node)
    if misses:
        details.append("why not fused:")
        details += [f"  {m}" for m in misses]
    sub = outs if len(outs) <= 40 else outs[:37] + "..."
    if node.regions:
        sub = region_summary(node)
    m = node.meta
    find = " ".join(str(x) for x in (node.op, names, m.get("module", ""), m.get("origin", ""), m.get("source", ""),
                                     *(c.split(" = ")[-1] for c in consts)) if x)
    return Item(key, label, sub, family(node.op), "\n".join(tip), "\n".join(details),
                module=str(m.get("module") or ""), find=find, outputs=len(node.outputs), misses=list(misses))


def _edge_to(edges: list[Edge], where: Mapping[int, tuple[str, int, int]], v: Value, dst: str) -> None:
    src = where.get(id(v))
    if src is None:  # an undrawn constant
        return
    key, index, count = src
    edges.append(Edge(key, dst, index, count))


class Frames:
    """The graph before a pipeline and after each pass that changed it, for the HTML report.

    Use it as a PassManager's ``instrument``: ``Frames(graph)`` records the input, then
    each changed pass adds a frame labelled as the PassManager names its dump
    (``001-after-dce``), so the page and a ``dump_dir`` speak of the same files.
    Nodes are keyed by identity; the recorder keeps each node it saw alive, so a key is
    never reused for another node.
    """

    def __init__(self, graph: Graph, *, show_constants: bool = False):
        self.show_constants = show_constants
        self.frames: list[dict[str, Any]] = []
        self._keys: dict[int, tuple[str, Node]] = {}
        self._nodes: dict[str, Node] = {}
        self.stable = StableNumbers()  # value names as in the dumps and diffs of the same run
        self.add("000-input", None, graph)

    def _key(self, node: Node, position: int) -> str:
        got = self._keys.get(id(node))
        if got is None:
            got = (f"n{len(self._keys)}", node)
            self._keys[id(node)] = got
            self._nodes[got[0]] = node
        return got[0]

    def add(self, label: str, pass_name: str | None, graph: Graph,
            misses: Mapping[int, list[str]] | None = None) -> dict[str, Any]:
        """Record ``graph`` as the frame ``label`` (after ``pass_name``); returns the frame."""
        items, edges = frame_of(graph, self.show_constants, self._key, misses, self.stable)
        frame = _frame_json(label, pass_name, items, edges)
        if self.frames:
            before = {n["key"] for n in self.frames[-1]["items"]}
            now = {n["key"] for n in frame["items"]}
            frame["added"], frame["replaced"] = [], []
            for k in sorted(now - before, key=lambda k: int(k[1:]) if k[1:].isdigit() else -1):
                # a node a rewrite rule made replaces the nodes the rule matched
                node = self._nodes.get(k)
                frame["replaced" if node is not None and node.meta.get("rule") else "added"].append(k)
            frame["removed"] = sorted(before - now)
        self.frames.append(frame)
        return frame

    def __call__(self, record: Any, graph: Graph) -> None:
        """The PassManager instrument: a frame after each pass that changed the graph."""
        if record.changed:
            self.add(dump_label(len(self.frames), f"after-{record.name}"), record.name, graph)

    def finish(self, graph: Graph, misses: Mapping[int, list[str]] | None = None) -> None:
        """Redo the last frame (the final graph) with the "why not fused" lines of its nodes."""
        last = self.frames.pop()
        frame = self.add(last["label"], last.get("pass"), graph, misses)
        for k in ("added", "replaced", "removed"):
            if k in last:
                frame[k] = last[k]


def _frame_json(label: str, pass_name: str | None, items: Iterable[Item], edges: Iterable[Edge]) -> dict[str, Any]:
    return {"label": label, "pass": pass_name,
            "items": [{"key": b.key, "label": b.label, "sub": b.sub, "fam": b.family, "details": b.details,
                       "module": b.module, "find": b.find.lower(), "outputs": b.outputs,
                       "miss": len(b.misses)} for b in items],
            "edges": [[e.src, e.index, e.count, e.dst] for e in edges]}


def frames_json(frames: list[dict[str, Any]]) -> str:
    """The frames as JSON safe to put inside a ``<script>`` element."""
    return json.dumps({"frames": frames, "colours": COLOURS}, separators=(",", ":")).replace("</", "<\\/")
