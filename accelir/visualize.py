"""Pictures of a graph: Graphviz text (:func:`to_dot`) and a self-contained HTML report (:func:`to_html`).

The HTML report is one file with nothing to fetch: the graph comes first, laid out
and drawn as SVG by the page's own script from the data this module embeds (see
:mod:`accelir.viewer`), with zoom, pan, an overview map, search, a details panel,
layers collapsed by module path and, for a pass pipeline, the graph after each pass
with what it changed marked.  Below it: the "why not fused" list, the per-pass
table, the op histogram and the diff of the IR text each pass caused.

Constants (weights) are left out of the drawing by default: a transformer has as
many of them as it has ops, and they would double the width of every layer.  Each
node's details list the constants it reads; ``show_constants=True`` draws them.
"""

from __future__ import annotations

import dataclasses
import difflib
import html
import os
from typing import Any, Iterable, Mapping, Sequence

from .ir import Graph
from .printer import print_graph
from .viewer import COLOURS, Frames, dump_label, family, frame_of, frames_json
from .viewer_assets import CSS, SCRIPT

__all__ = ["to_dot", "to_html", "read_dump_dir"]

# ----- Graphviz ----------------------------------------------------------------------

def _dot_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(graph: Graph, *, show_constants: bool = False) -> str:
    """Graphviz source for ``graph``: one box per node (op and result type), edges along data flow."""
    boxes, edges = frame_of(graph, show_constants)
    out = [f"digraph {_dot_str(graph.name)} {{",
           "  rankdir=TB;",
           '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
           '  edge [fontname="Helvetica", fontsize=8, color="#666666"];']
    for b in boxes:
        shape = ", shape=ellipse" if b.family in ("input", "output") else ""
        out.append(f"  {b.key} [label={_dot_str(b.label + chr(10) + b.sub)}, fillcolor={_dot_str(COLOURS[b.family])}"
                   f"{shape}, tooltip={_dot_str(b.tooltip)}];")
    for e in edges:
        label = f" [label={_dot_str(e.label)}]" if e.label else ""
        out.append(f"  {e.src} -> {e.dst}{label};")
    out.append("}")
    return "\n".join(out) + "\n"


# ----- HTML --------------------------------------------------------------------------

def _histogram_html(graph: Graph) -> str:
    hist = sorted(graph.op_histogram().items(), key=lambda kv: (-kv[1], kv[0]))
    top = max((n for _, n in hist), default=1)
    rows = [f'<tr><td class="op"><span class="swatch" style="background:{COLOURS[family(op)]}"></span>'
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


_HEADERS = {"index": "#", "name": "pass", "iteration": "round", "seconds": "time (ms)",
            "nodes_before": "nodes before", "nodes_after": "nodes after", "changed": "changed",
            "op_delta": "op changes", "note": "note"}


def _cell(column: str, value: Any) -> str:
    if column == "seconds" and isinstance(value, (int, float)):
        return f'<td class="num">{value * 1e3:.2f}</td>'
    text = html.escape(_fmt_cell(value))
    return f'<td class="num">{text}</td>' if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else f"<td>{text}</td>"


def _report_html(report: Any, drawn: Sequence[str] = ()) -> str:
    """The per-pass table: human headers, times in ms; the passes that changed the graph first, each
    naming the dump of the graph after it (a click draws that graph when it is among ``drawn``), the
    others folded away."""
    rows = _report_rows(report)
    if rows is None:
        return f"<pre>{html.escape(str(report))}</pre>"
    columns: list[str] = []
    for r in rows:
        columns.extend(k for k in r if k not in columns)
    foldable = "changed" in columns
    head = "".join(f"<th>{html.escape(_HEADERS.get(c, c.replace('_', ' ')))}</th>" for c in columns)
    changed, quiet = [], []
    for r in rows:
        cells = "".join(_cell(c, r.get(c)) for c in columns)
        if foldable and not r.get("changed"):
            quiet.append(f"<tr>{cells}<td></td></tr>")
            continue
        label = dump_label(len(changed) + 1, f"after-{r.get('name', 'pass')}")
        pick = (f' class="pick" data-frame="{html.escape(label)}" title="draw the graph after this pass"'
                if label in drawn else "")
        changed.append(f"<tr{pick}>{cells}<td>{html.escape(label)}</td></tr>")
    table = f'<table class="report"><tr>{head}<th>graph after (dump)</th></tr>{"".join(changed)}</table>'
    if quiet:
        names = sorted({str(r.get("name")) for r in rows if not r.get("changed")})
        table += (f"<details><summary>{len(quiet)} runs changed nothing ({html.escape(', '.join(names))})</summary>"
                  f'<table class="report quiet"><tr>{head}<th></th></tr>{"".join(quiet)}</table></details>')
    return table


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


def _unfused_html(misses: Sequence[Any]) -> str:
    rows = "".join(f"<tr><td>{html.escape(m.pass_name)}</td><td>{html.escape(m.rule)}</td>"
                   f"<td>{html.escape(m.op)}</td><td>{html.escape(m.reason)}</td><td>{html.escape(m.where)}</td></tr>"
                   for m in misses)
    return ('<table class="unfused"><tr><th>pass</th><th>rule</th><th>node</th><th>why not fused</th>'
            f"<th>from</th></tr>{rows}</table>")


def _as_dumps(pass_dumps: Sequence[tuple[str, str]] | Mapping[str, str] | str | os.PathLike) -> list[tuple[str, str]]:
    if isinstance(pass_dumps, (str, os.PathLike)):
        return read_dump_dir(pass_dumps)
    if isinstance(pass_dumps, Mapping):
        return list(pass_dumps.items())
    return list(pass_dumps)


def _miss_lines(misses: Sequence[Any]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for m in misses:
        out.setdefault(id(m.node), []).append(f"{m.pass_name}: {m.rule}: {m.reason}")
    return out


def to_html(graph: Graph, report: Any = None, pass_dumps: Sequence[tuple[str, str]] | Mapping[str, str] | str
            | os.PathLike | None = None, *, title: str | None = None, show_constants: bool = False,
            frames: Frames | None = None) -> str:
    """One self-contained HTML page: the graph to explore first, then the passes, op histogram and diffs.

    ``report`` is a PassManager report (its per-pass records become a table; any
    other object is shown as its text); its "why not fused" list, when the passes ran
    with ``explain=True``, is shown as a table and in each candidate node's details.
    ``pass_dumps`` is the IR text before and after each pass, as (label, text) pairs in
    order, a mapping, or a PassManager ``dump_dir``; each pass's diff against the
    previous dump is shown.  ``frames`` (a :class:`~accelir.viewer.Frames` that watched
    the passes as the PassManager's ``instrument``) lets the page draw the graph after
    any pass, with the nodes it added, replaced and removed marked.
    """
    esc = html.escape
    name = title or f"accelir graph {graph.name}"
    consts = sum(a.nbytes for a in graph.constants.values())
    signature = print_graph(graph).splitlines()[0].rstrip(" {")
    unfused = list(getattr(getattr(report, "passes", report), "unfused", None) or [])
    if frames is None:
        frames = Frames(graph, show_constants=show_constants)
    frames.finish(graph, _miss_lines(unfused))
    legend = "".join(f'<span class="swatch" style="background:{c}"></span>{esc(k)}' for k, c in COLOURS.items())
    picker = ('<label>graph after <select id="frame"></select></label>'
              '<label><input type="checkbox" id="compare"> before it, removed nodes marked</label>'
              '<span class="legend-added">added</span> <span class="legend-replaced">replacing</span> '
              '<span class="legend-removed">removed</span>') if len(frames.frames) > 1 else \
        '<select id="frame" hidden></select><input type="checkbox" id="compare" hidden>'
    parts = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{esc(name)}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>{esc(name)}</h1>",
             f"<p><code>{esc(signature)}</code><br>{graph.num_nodes()} nodes ({len(graph)} at top level), "
             f"{len(graph.constants)} constants ({consts / 2 ** 20:.2f} MiB)</p>",
             '<div class="toolbar"><button id="zin">+</button><button id="zout">&minus;</button>'
             '<button id="zfit">fit</button><input id="find" size="24" placeholder="find: name, op, module, layer">'
             '<span id="hits"></span><label>layers <select id="depth"><option value="0">all nodes</option></select>'
             f"</label>{picker}</div>",
             f'<div class="toolbar"><small>{legend}</small> <small id="frameinfo"></small></div>',
             '<div id="main"><div id="view"><svg xmlns="http://www.w3.org/2000/svg" id="graph" '
             'font-family="Helvetica, Arial, sans-serif"></svg><canvas id="minimap" width="20" height="20"></canvas>'
             '</div><div id="panel"><button id="copy">copy</button> <button id="collapse" title="draw the selected node\'s '
             'module as one box; click the box to open it again">collapse its layer</button><pre id="details"></pre>'
             '</div></div><pre id="selftest" hidden></pre>']
    if unfused:
        parts += ["<h2>Why not fused</h2>", _unfused_html(unfused)]
    if report is not None:
        parts += ["<h2>Passes</h2>", _report_html(report, [f["label"] for f in frames.frames])]
    parts += ["<h2>Op histogram</h2>", _histogram_html(graph)]
    if pass_dumps is not None:
        dumps = _as_dumps(pass_dumps)
        parts += ["<h2>Pass by pass</h2>", _diffs_html(dumps) if len(dumps) > 1 else "<p>no pass changed the graph</p>"]
    parts += [f'<script type="application/json" id="accelir-data">{frames_json(frames.frames)}</script>',
              f"<script>{SCRIPT}</script></body></html>"]
    return "\n".join(parts) + "\n"
