"""Unbacked dims: sizes that the data decides (NonZero's count, a Reshape to a run-time shape).

Like torch.export's ``u0``, such a dim is an ordinary symbolic dim (accelir/dims.py) whose
symbol no graph input carries: the node that computes it introduces it, naming it in its
``syms`` attribute (``u0``, ``u1``, ... fresh within the graph, regions included).  Keeping
the name on the node keeps type rules pure functions of types and attributes, and lets
the text format, ``copy()`` and the passes carry it with nothing special to do.

Passes treat an unbacked dim as opaque: two of them are equal only when they are the same
symbol, which is exactly the dims module's equality of canonical strings.  Bounds, where
the op knows them (NonZero's count is at most the input's element count), come from the
op's ``bounds`` rule and are read with :func:`unbacked_dims`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from . import dims as D
from .ops import registry
from .ops.dynamic import ATTR, DECIDED_BY, symbols_attr

if TYPE_CHECKING:
    from .ir import Graph, Node

__all__ = ["ATTR", "Unbacked", "introduced", "fresh_symbols", "unbacked_dims", "check_symbols",
           "symbols_attr", "why_data_dependent", "deciding_input", "deciding_inputs", "data_dependent_behind",
           "sizes_read_from", "size_readers"]

MAX_PER_NODE = 1024  # more would be a malformed node (a rank or an output count out of reason)


@dataclass(frozen=True)
class Unbacked:
    """One unbacked dim: its symbol, the node introducing it and its bounds (``high`` None: unknown)."""

    name: str
    node: "Node"
    low: int
    high: int | None


def introduced(node: "Node") -> tuple[str, ...]:
    """The unbacked symbols ``node`` introduces (none for an op that computes no size from data)."""
    if not registry.is_registered(node.op) or registry.get(node.op).unbacked is None:
        return ()
    return tuple(node.attrs.get(ATTR, ()))


def _root(graph: "Graph") -> "Graph":
    while graph.parent is not None:
        graph = graph.parent.graph
    return graph


def _walk(graph: "Graph") -> Iterator["Node"]:
    for n in graph.nodes:
        yield n
        for r in n.regions:
            yield from _walk(r)


def _input_symbols(graph: "Graph") -> set[str]:
    out: set[str] = set()
    for v in graph.inputs:
        for d in v.shape:
            out |= D.symbols(d)
    return out


def fresh_symbols(graph: "Graph", n: int) -> tuple[str, ...]:
    """``n`` symbols ``u<k>`` that no dim of the graph (its root, regions included) uses yet."""
    root = _root(graph)
    used = _input_symbols(root)
    for node in _walk(root):
        used.update(introduced(node))
        for r in node.regions:
            used |= _input_symbols(r)
    out: list[str] = []
    k = 0
    while len(out) < n:
        name = f"u{k}"
        if name not in used:
            out.append(name)
        k += 1
    return tuple(out)


def unbacked_dims(graph: "Graph") -> dict[str, Unbacked]:
    """Every unbacked dim of ``graph`` (regions included) with the node introducing it and its bounds."""
    out: dict[str, Unbacked] = {}
    for node in _walk(graph):
        syms = introduced(node)
        if not syms:
            continue
        opdef = registry.get(node.op)
        bounds: Sequence[tuple[int, int | None]] = ((0, None),) * len(syms)
        if opdef.bounds is not None:
            bounds = opdef.bounds([v.type for v in node.inputs], node.attrs)
        for s, (lo, hi) in zip(syms, bounds):
            out[s] = Unbacked(s, node, lo, hi)
    return out


def sizes_read_from(node: "Node", readers: Mapping[str, Sequence["Node"]] | None = None) -> bool:
    """Whether a value or a dims attribute of another node has a dim naming a symbol ``node`` introduces.
    Such a size (``Size`` of a selection: a broadcast to ``[u0]``, summed; a slice starting at it) is
    read from ``node`` with no edge to it, so the node is live even when none of its outputs is.
    ``readers`` (:func:`size_readers` of the graph) answers without walking the graph again, for a
    caller asking about many nodes."""
    syms = set(introduced(node))
    if not syms:
        return False
    if readers is not None:
        return any(n is not node for s in syms for n in readers.get(s, ()))
    for n in _walk(_root(node.graph)):
        if n is not node and any(D.symbols(d) & syms for d in _dims_of(n)):
            return True
    return False


def size_readers(graph: "Graph") -> dict[str, list["Node"]]:
    """Each symbol named by a dim of a node of ``graph``'s root (regions included: its types and dims
    attributes), with the nodes naming it, from one walk."""
    out: dict[str, list["Node"]] = {}
    for n in _walk(_root(graph)):
        names: set[str] = set()
        for d in _dims_of(n):
            if type(d) is not int:
                names |= D.symbols(d)
        for s in names:
            out.setdefault(s, []).append(n)
    return out


def _dims_of(node: "Node") -> Iterator[Any]:
    """The dims of ``node``'s input and output types and of its dims attributes (a slice's starts)."""
    for v in (*node.inputs, *node.outputs):
        yield from v.shape
    if registry.is_registered(node.op):
        for k, spec in registry.get(node.op).attrs.items():
            if spec.kind == "dims":
                yield from node.attrs.get(k) or ()


def check_symbols(graph: "Graph") -> tuple["Node", str] | None:
    """A node whose unbacked symbols are not fresh (introduced twice, or a graph input's symbol), with why."""
    taken = {s: None for s in _input_symbols(graph)}
    for node in _walk(graph):
        for s in introduced(node):
            if s in taken:
                other = taken[s]
                why = "a dim of a graph input" if other is None else f"also introduced by {other.describe()}"
                return node, f"unbacked dim {s!r} is not fresh: it is {why}"
            taken[s] = node
    return None


def _values_behind(value: Any) -> Iterator[Any]:
    """``value`` and every value it is computed from, each once, depth first."""
    seen: set[int] = set()
    stack = [value]
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        yield v
        if v.producer is not None:
            stack.extend(v.producer.inputs)


def _graph_inputs_behind(value: Any) -> list[str]:
    """Names of the graph inputs ``value`` is computed from (constants do not count)."""
    return sorted({v.name or "?" for v in _values_behind(value) if v.producer is None and v.is_graph_input})


def data_dependent_behind(value: Any) -> "Node | None":
    """The first data-dependent node ``value`` is computed through, by its inputs or by an
    unbacked dim in the types on the way (a size read back as a value); None if there is none."""
    found = unbacked_dims(_root(value.graph)) if value.graph is not None else {}
    for v in _values_behind(value):
        syms = sorted(s for d in v.shape for s in D.symbols(d) if s in found)
        if syms:
            return found[syms[0]].node
    return None


def deciding_input(node: "Node") -> int:
    """The input of a data-dependent node whose run-time value decides its output size."""
    return min(DECIDED_BY.get(node.op, 0), len(node.inputs) - 1)


def deciding_inputs(graph: "Graph") -> list[str]:
    """Names of the graph inputs whose values decide a size (those ``static_inputs`` can bind)."""
    names: set[str] = set()
    for node in _walk(graph):
        if registry.get(node.op).unbacked is not None:
            names.update(_graph_inputs_behind(node.inputs[deciding_input(node)]))
    return sorted(names)


def why_data_dependent(node: "Node") -> str:
    """One line for a backend that needs static sizes: which node, which input decides its output
    size, which graph inputs that input comes from, and what to do."""
    i = deciding_input(node)
    v = node.inputs[i]
    behind = _graph_inputs_behind(v)
    src = f" (graph input {v.name!r})" if v.is_graph_input else \
        (f" (computed from graph input(s) {', '.join(repr(n) for n in behind)})" if behind else "")
    syms = ", ".join(introduced(node))
    frontend = _root(node.graph).meta.get("frontend") if node.graph is not None else None
    # static_inputs is an option of the ONNX import; a torch / jax / Caffe capture has no such remedy
    bind = ", or bind the input at import with static_inputs=..." if frontend in (None, "onnx") else ""
    return (f"{node.describe()}: its output size ({syms}) depends on the run-time value of input {i}{src}, "
            f"and this backend needs static sizes; compile with backend=\"onnxruntime\"{bind}")
