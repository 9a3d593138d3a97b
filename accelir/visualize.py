"""Pictures of a graph: Graphviz text (:func:`to_dot`) and a self-contained HTML report (:func:`to_html`).

The HTML report is one file with nothing to fetch: the graph drawn as inline SVG
(the layout is computed here with networkx, so no Graphviz binary is needed), an
op histogram and, for a pass pipeline, each pass's statistics and the diff of the
IR text it caused.  Node colours follow the op's family in the registry
(elementwise, reduce, linalg, shape, nn, control, composite, region); hovering a
node shows its type, attributes and provenance.

Constants (weights) are left out of the drawing by default: a transformer has as
many of them as it has ops, and they would double the width of every layer.  Each
node's tooltip lists the constants it reads; ``show_constants=True`` draws them.
"""

from __future__ import annotations

import dataclasses
import difflib
import html
import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from .ir import Graph, Node, Value
from .ops import registry
from .printer import Namer, print_graph

__all__ = ["to_dot", "to_html", "read_dump_dir"]

# Fill colours by op family; the families come from the registry module an op is defined in.
_COLOURS = {
    "input": "#d8ecff",
    "output": "#d8ecff",
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
_BOX_HEIGHT = 34
_LAYER_GAP = 56
_NODE_GAP = 18
_CHAR_WIDTH = 7
_MARGIN = 20


@dataclass(slots=True)
class _Box:
    """One drawn item: a graph input, a node, or the graph's return."""

    key: str
    label: str
    sub: str
    family: str
    tooltip: str
    order: int

    @property
    def width(self) -> int:
        return max(len(self.label), len(self.sub), 4) * _CHAR_WIDTH + 16


@dataclass(slots=True)
class _Edge:
    src: str
    dst: str
    label: str


def _family(op: str) -> str:
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


def _region_summary(node: Node) -> str:
    hist: dict[str, int] = {}
    for r in node.regions:
        for op, n in r.op_histogram().items():
            if op != "constant":
                hist[op] = hist.get(op, 0) + n
    parts = [op if n == 1 else f"{op} x{n}" for op, n in sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))]
    text = ", ".join(parts)
    return text if len(text) <= 48 else text[:45] + "..."


def _attr_text(node: Node) -> str:
    return ", ".join(f"{k}={v}" for k, v in node.attrs.items())


def _collect(graph: Graph, show_constants: bool) -> tuple[list[_Box], list[_Edge]]:
    namer = Namer.for_graph(graph)
    boxes: list[_Box] = []
    edges: list[_Edge] = []
    where: dict[int, tuple[str, int, int]] = {}  # value id -> (box key, output index, output count)
    hidden: dict[int, str] = {}  # value id of an undrawn constant -> its description

    for i, v in enumerate(graph.inputs):
        key = f"in{i}"
        boxes.append(_Box(key, namer(v), str(v.type), "input", f"graph input {namer(v)}: {v.type}", len(boxes)))
        where[id(v)] = (key, 0, 1)
    for k, node in enumerate(graph.nodes):
        if node.op == "constant" and not show_constants:
            hidden[id(node.outputs[0])] = f"{namer(node.outputs[0])} = constant {node.attrs['name']}: " \
                                          f"{node.outputs[0].type}"
            continue
        key = f"n{k}"
        outs = ", ".join(str(o.type) for o in node.outputs)
        label = node.op if node.op != "constant" else f"const {node.attrs['name']}"
        lines = [f"{', '.join(namer(o) for o in node.outputs)} = {node.op} : {outs}"]
        if node.attrs:
            lines.append(f"attrs: {_attr_text(node)}")
        if node.regions:
            lines.append(f"region: {_region_summary(node)}")
        consts = [hidden[id(v)] for v in node.inputs if id(v) in hidden]
        if consts:
            lines.append("reads " + "; ".join(consts))
        lines.append(f"from: {node.source()}")
        sub = outs if len(outs) <= 40 else outs[:37] + "..."
        if node.regions:
            sub = _region_summary(node)
        boxes.append(_Box(key, label, sub, _family(node.op), "\n".join(lines), len(boxes)))
        for j, o in enumerate(node.outputs):
            where[id(o)] = (key, j, len(node.outputs))
        for v in node.inputs:
            _edge_to(edges, where, v, key)
    ret = _Box("out", "return", ", ".join(str(v.type) for v in graph.outputs)[:40], "output",
               "graph outputs: " + ", ".join(f"{namer(v)}: {v.type}" for v in graph.outputs), len(boxes))
    boxes.append(ret)
    for v in graph.outputs:
        _edge_to(edges, where, v, ret.key)
    return boxes, edges


def _edge_to(edges: list[_Edge], where: Mapping[int, tuple[str, int, int]], v: Value, dst: str) -> None:
    src = where.get(id(v))
    if src is None:  # an undrawn constant
        return
    key, index, count = src
    edges.append(_Edge(key, dst, str(index) if count > 1 else ""))


# ----- Graphviz ----------------------------------------------------------------------

def _dot_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(graph: Graph, *, show_constants: bool = False) -> str:
    """Graphviz source for ``graph``: one box per node (op and result type), edges along data flow."""
    boxes, edges = _collect(graph, show_constants)
    out = [f"digraph {_dot_str(graph.name)} {{",
           "  rankdir=TB;",
           '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
           '  edge [fontname="Helvetica", fontsize=8, color="#666666"];']
    for b in boxes:
        shape = ", shape=ellipse" if b.family in ("input", "output") else ""
        out.append(f"  {b.key} [label={_dot_str(b.label + chr(10) + b.sub)}, fillcolor={_dot_str(_COLOURS[b.family])}"
                   f"{shape}, tooltip={_dot_str(b.tooltip)}];")
    for e in edges:
        label = f" [label={_dot_str(e.label)}]" if e.label else ""
        out.append(f"  {e.src} -> {e.dst}{label};")
    out.append("}")
    return "\n".join(out) + "\n"


# ----- layout ------------------------------------------------------------------------

def _layout(boxes: Sequence[_Box], edges: Sequence[_Edge]) -> dict[str, tuple[float, float]]:
    """Top-left corner of each box: layers by longest path from the sources, ordered to follow their operands.

    networkx gives the layering (topological generations); sources are then moved
    down to just above their first user, so an input read only deep in the graph
    does not pull a long edge across it.  Within a layer, boxes sit as close as
    they can to the mean x of their operands (their users, for sources), packed
    left to right without overlap.
    """
    import networkx as nx

    g = nx.DiGraph()
    g.add_nodes_from(b.key for b in boxes)
    g.add_edges_from((e.src, e.dst) for e in edges)
    layer: dict[str, int] = {}
    for depth, generation in enumerate(nx.topological_generations(g)):
        for key in generation:
            layer[key] = depth
    for key in g.nodes:
        if g.in_degree(key) == 0 and g.out_degree(key) > 0:
            layer[key] = max(0, min(layer[s] for s in g.successors(key)) - 1)
    by_key = {b.key: b for b in boxes}
    layers: dict[int, list[str]] = {}
    for b in sorted(boxes, key=lambda b: b.order):
        layers.setdefault(layer[b.key], []).append(b.key)

    centre: dict[str, float] = {}
    for depth in sorted(layers):
        keys = layers[depth]
        ideal = {}
        for k in keys:
            near = [centre[p] for p in g.predecessors(k) if p in centre]
            ideal[k] = sum(near) / len(near) if near else None
        _pack(keys, ideal, by_key, centre)
    for depth in sorted(layers, reverse=True):
        keys = layers[depth]
        if not any(g.in_degree(k) == 0 for k in keys):
            continue
        ideal = {}
        for k in keys:
            near = [centre[s] for s in g.successors(k)] if g.in_degree(k) == 0 else []
            ideal[k] = sum(near) / len(near) if near else centre[k]
        _pack(keys, ideal, by_key, centre)

    left = min((centre[k] - by_key[k].width / 2 for k in centre), default=0.0)
    return {k: (centre[k] - by_key[k].width / 2 - left + _MARGIN, layer[k] * (_BOX_HEIGHT + _LAYER_GAP) + _MARGIN)
            for k in centre}


def _pack(keys: list[str], ideal: Mapping[str, float | None], boxes: Mapping[str, _Box],
          centre: dict[str, float]) -> None:
    """Place one layer: each box at its ideal centre, pushed right of its left neighbour if they would overlap,
    then the whole layer shifted back so that siblings sit centred under their common operand."""
    fallback = 0.0
    wanted = {}
    for k in keys:
        x = ideal[k]
        wanted[k] = fallback if x is None else x
        fallback = wanted[k] + boxes[k].width + _NODE_GAP
    right = float("-inf")
    placed = {}
    for k in sorted(keys, key=lambda k: wanted[k]):
        w = boxes[k].width
        placed[k] = max(wanted[k], right + _NODE_GAP + w / 2)
        right = placed[k] + w / 2
    shift = sum(placed[k] - wanted[k] for k in keys) / len(keys)
    for k in keys:
        centre[k] = placed[k] - shift


# ----- SVG and HTML ------------------------------------------------------------------

def _svg(graph: Graph, show_constants: bool) -> str:
    boxes, edges = _collect(graph, show_constants)
    pos = _layout(boxes, edges)
    by_key = {b.key: b for b in boxes}
    width = max(pos[b.key][0] + b.width for b in boxes) + _MARGIN
    height = max(pos[b.key][1] for b in boxes) + _BOX_HEIGHT + _MARGIN
    esc = html.escape
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" id="graph" width="{width:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="Helvetica, Arial, sans-serif">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#777"/></marker></defs>',
           '<g class="edges" fill="none" stroke="#888" stroke-width="1.2">']
    for e in edges:
        sx, sy = pos[e.src]
        dx, dy = pos[e.dst]
        x1, y1 = sx + by_key[e.src].width / 2, sy + _BOX_HEIGHT
        x2, y2 = dx + by_key[e.dst].width / 2, dy
        bend = max(20.0, (y2 - y1) / 2)
        out.append(f'<path d="M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 + bend:.1f} {x2:.1f},{y2 - bend:.1f} '
                   f'{x2:.1f},{y2:.1f}" marker-end="url(#arrow)"/>')
        if e.label:
            out.append(f'<text x="{x1 + 4:.1f}" y="{y1 + 11:.1f}" font-size="9" fill="#555" stroke="none">'
                       f'{esc(e.label)}</text>')
    out.append("</g>")
    for b in boxes:
        x, y = pos[b.key]
        rx = 16 if b.family in ("input", "output") else 5
        out.append(f'<g class="node" data-op="{esc(b.label)}"><title>{esc(b.tooltip)}</title>'
                   f'<rect x="{x:.1f}" y="{y:.1f}" width="{b.width}" height="{_BOX_HEIGHT}" rx="{rx}" '
                   f'fill="{_COLOURS[b.family]}" stroke="#555"/>'
                   f'<text x="{x + b.width / 2:.1f}" y="{y + 14:.1f}" text-anchor="middle" font-size="12" '
                   f'font-weight="bold">{esc(b.label)}</text>'
                   f'<text x="{x + b.width / 2:.1f}" y="{y + 28:.1f}" text-anchor="middle" font-size="10" '
                   f'fill="#333">{esc(b.sub)}</text></g>')
    out.append("</svg>")
    return "\n".join(out)


def _histogram_html(graph: Graph) -> str:
    hist = sorted(graph.op_histogram().items(), key=lambda kv: (-kv[1], kv[0]))
    top = max((n for _, n in hist), default=1)
    rows = [f'<tr><td class="op"><span class="swatch" style="background:{_COLOURS[_family(op)]}"></span>'
            f'{html.escape(op)}</td><td class="num">{n}</td><td class="bar"><div style="width:{100 * n / top:.1f}%">'
            f'</div></td></tr>' for op, n in hist]
    return '<table class="hist"><tr><th>op</th><th>count</th><th></th></tr>' + "".join(rows) + "</table>"


def _fmt_cell(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, Mapping):
        return ", ".join(f"{k} {n:+d}" if isinstance(n, int) else f"{k} {n}" for k, n in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    return "" if v is None else str(v)


def _record(row: Any) -> dict[str, Any] | None:
    if dataclasses.is_dataclass(row) and not isinstance(row, type):
        return {f.name: getattr(row, f.name) for f in dataclasses.fields(row)}
    if isinstance(row, Mapping):
        return dict(row)
    if hasattr(row, "_asdict"):
        return dict(row._asdict())
    return None


def _report_rows(report: Any) -> list[dict[str, Any]] | None:
    """The per-pass records of a PassManager report (an iterable of records, or an object holding one)."""
    for attr in ("records", "rows", "passes"):
        inner = getattr(report, attr, None)
        if inner is not None and not callable(inner) and not isinstance(inner, (str, bytes)):
            report = inner
            break
    if isinstance(report, (str, bytes)) or not isinstance(report, Iterable):
        return None
    rows = [_record(r) for r in report]
    return rows if rows and all(r is not None for r in rows) else None


def _report_html(report: Any) -> str:
    rows = _report_rows(report)
    if rows is None:
        return f"<pre>{html.escape(str(report))}</pre>"
    columns: list[str] = []
    for r in rows:
        columns.extend(k for k in r if k not in columns)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt_cell(r.get(c)))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f'<table class="report"><tr>{head}</tr>{body}</table>'


def read_dump_dir(path: str | os.PathLike) -> list[tuple[str, str]]:
    """The numbered ``.air`` dumps a PassManager wrote (``000-input.air``, ``001-after-dce.air``, ...), in order."""
    path = os.fspath(path)
    out = []
    for name in sorted(os.listdir(path)):
        if name.endswith(".air") and name[:3].isdigit():
            with open(os.path.join(path, name), encoding="utf-8") as f:
                out.append((name[:-4], f.read()))
    return out


def _count_nodes(text: str) -> int:
    return sum(1 for line in text.splitlines() if " = " in line)


def _diffs_html(dumps: Sequence[tuple[str, str]]) -> str:
    parts = []
    for (before_label, before), (label, after) in zip(dumps, dumps[1:]):
        diff = list(difflib.unified_diff(before.splitlines(), after.splitlines(), before_label, label,
                                         lineterm="", n=2))
        added = sum(1 for d in diff if d.startswith("+") and not d.startswith("+++"))
        removed = sum(1 for d in diff if d.startswith("-") and not d.startswith("---"))
        lines = []
        for d in diff:
            cls = {"+": "add", "-": "del", "@": "hunk"}.get(d[:1], "")
            lines.append(f'<span class="{cls}">{html.escape(d)}</span>' if cls else html.escape(d))
        parts.append(f"<details><summary><b>{html.escape(label)}</b>: nodes {_count_nodes(before)} -&gt; "
                     f"{_count_nodes(after)}, +{added} / -{removed} lines</summary>"
                     f'<pre class="diff">{chr(10).join(lines) or "(no change)"}</pre></details>')
    return "\n".join(parts)


_CSS = """
body { font-family: Helvetica, Arial, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
code, pre { font-family: Menlo, Consolas, monospace; font-size: 12px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 2px 8px; border-bottom: 1px solid #eee; text-align: left; }
td.num { text-align: right; } td.bar { width: 300px; } td.bar div { background: #7aa7d6; height: 10px; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 6px; border: 1px solid #999; }
#view { border: 1px solid #ccc; overflow: auto; max-height: 80vh; background: #fcfcfc; }
.node:hover rect { stroke: #d00; stroke-width: 2; } .node.hit rect { stroke: #d00; stroke-width: 3; }
.diff .add { color: #070; background: #eaffea; } .diff .del { color: #a00; background: #ffecec; }
.diff .hunk { color: #06c; } details { margin: 0.3em 0; } .toolbar { margin: 0.4em 0; }
"""

_JS = """
(function () {
  var svg = document.getElementById('graph'); if (!svg) return;
  var w = +svg.getAttribute('width'), h = +svg.getAttribute('height'), zoom = 1;
  function set(z) { zoom = z; svg.setAttribute('width', w * z); svg.setAttribute('height', h * z); }
  document.getElementById('zin').onclick = function () { set(zoom * 1.25); };
  document.getElementById('zout').onclick = function () { set(zoom / 1.25); };
  document.getElementById('zfit').onclick = function () {
    var view = document.getElementById('view'); set(Math.min(1, view.clientWidth / w)); };
  document.getElementById('find').oninput = function (ev) {
    var q = ev.target.value.trim(), first = null;
    svg.querySelectorAll('.node').forEach(function (n) {
      var hit = q && n.getAttribute('data-op').indexOf(q) >= 0;
      n.classList.toggle('hit', !!hit); if (hit && !first) first = n; });
    if (first) first.scrollIntoView({block: 'center', inline: 'center'});
  };
})();
"""


def to_html(graph: Graph, report: Any = None, pass_dumps: Sequence[tuple[str, str]] | Mapping[str, str] | str
            | os.PathLike | None = None, *, title: str | None = None, show_constants: bool = False) -> str:
    """One self-contained HTML page: summary, op histogram, the graph as SVG, and the pass pipeline.

    ``report`` is a PassManager report (its per-pass records become a table; any
    other object is shown as its text).  ``pass_dumps`` is the IR text before and
    after each pass, as (label, text) pairs in order, a mapping, or a PassManager
    ``dump_dir``; each pass's diff against the previous dump is shown.
    """
    esc = html.escape
    name = title or f"accelir graph {graph.name}"
    consts = sum(a.nbytes for a in graph.constants.values())
    signature = print_graph(graph).splitlines()[0].rstrip(" {")
    parts = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{esc(name)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>{esc(name)}</h1>",
             f"<p><code>{esc(signature)}</code></p>",
             f"<p>{graph.num_nodes()} nodes ({len(graph)} at top level), {len(graph.constants)} constants "
             f"({consts / 2 ** 20:.2f} MiB)</p>",
             "<h2>Op histogram</h2>", _histogram_html(graph)]
    if report is not None:
        parts += ["<h2>Passes</h2>", _report_html(report)]
    if pass_dumps is not None:
        if isinstance(pass_dumps, (str, os.PathLike)):
            dumps = read_dump_dir(pass_dumps)
        elif isinstance(pass_dumps, Mapping):
            dumps = list(pass_dumps.items())
        else:
            dumps = list(pass_dumps)
        parts += ["<h2>Pass by pass</h2>", _diffs_html(dumps) if len(dumps) > 1 else "<p>no pass changed the graph</p>"]
    legend = " ".join(f'<span class="swatch" style="background:{c}"></span>{esc(k)}' for k, c in _COLOURS.items())
    parts += ["<h2>Graph</h2>",
              '<div class="toolbar"><button id="zin">zoom in</button> <button id="zout">zoom out</button> '
              '<button id="zfit">fit width</button> find op: <input id="find" size="16"> '
              f"<small>{legend}</small></div>",
              f'<div id="view">{_svg(graph, show_constants)}</div>',
              f"<script>{_JS}</script></body></html>"]
    return "\n".join(parts) + "\n"
