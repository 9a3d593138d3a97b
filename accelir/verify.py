"""The verifier: SSA, topological order, use lists and types, recursively into regions.

``verify(graph)`` raises a :class:`VerificationError` naming the node, its op and its
provenance; it returns None on a well-formed graph.
"""

from __future__ import annotations

from .errors import VerificationError
from .ir import Graph, Node, TensorType
from .ops import registry
from .unbacked import check_symbols

__all__ = ["verify"]


def _fail(node: Node | None, msg: str) -> VerificationError:
    where = f"{node.describe()}: " if node is not None else ""
    return VerificationError(where + msg, node)


def verify(graph: Graph, *, check_types: bool = True) -> None:
    """Check ``graph``; raise VerificationError on the first broken invariant."""
    defined: set[int] = set()
    for v in graph.inputs:
        if v.producer is not None:
            raise VerificationError(f"graph input {v!r} has a producer")
        if v.graph is not graph:
            raise VerificationError(f"graph input {v!r} belongs to another graph")
        defined.add(id(v))
    # count the uses each value should have
    expected: dict[int, list[tuple[Node, int]]] = {}
    members: set[int] = set()
    count = 0
    prev = None
    for node in graph.nodes:
        count += 1
        members.add(id(node))
        if node.graph is not graph:
            raise _fail(node, "node's graph pointer is wrong")
        if node.prev is not prev:
            raise _fail(node, "node list links are broken")
        prev = node
        if not registry.is_registered(node.op):
            raise _fail(node, f"unknown op {node.op!r}")
        for i, v in enumerate(node.inputs):
            if id(v) not in defined:
                if v.producer is not None and v.producer.graph is graph:
                    raise _fail(node, f"input {i} ({v!r}) is used before its definition (order is not topological)")
                raise _fail(node, f"input {i} ({v!r}) is not defined in graph {graph.name!r} "
                                  "(dangling use or a value of another graph)")
            expected.setdefault(id(v), []).append((node, i))
        for k, o in enumerate(node.outputs):
            if o.producer is not node or o.index != k:
                raise _fail(node, f"output {k} does not point back at its node")
            if id(o) in defined:
                raise _fail(node, f"output {k} is defined twice (SSA)")
            defined.add(id(o))
        if node.op == "constant":
            name = node.attrs.get("name")
            arr = graph.constants.get(name)
            if arr is None:
                raise _fail(node, f"constant {name!r} has no array in graph.constants")
            if TensorType.of(arr) != node.outputs[0].type:
                raise _fail(node, f"constant {name!r} is {TensorType.of(arr)} but the node says "
                                  f"{node.outputs[0].type}")
        for r in node.regions:
            if r.parent is not node:
                raise _fail(node, f"region {r.name!r} does not point back at its node")
            try:
                verify(r, check_types=check_types)
            except VerificationError as e:
                raise _fail(node, f"in region {r.name!r}: {e}") from None
        if node.op != "constant" and check_types:
            _check_node_types(node)
    if graph.parent is None:
        stale = check_symbols(graph)
        if stale is not None:
            raise _fail(*stale)
    if count != len(graph):
        raise VerificationError(f"graph {graph.name!r} node count is {len(graph)} but {count} nodes are linked")
    if graph.last is not prev:
        raise VerificationError(f"graph {graph.name!r} tail link is wrong")
    for i, v in enumerate(graph.outputs):
        if id(v) not in defined:
            raise VerificationError(f"graph {graph.name!r} output {i} ({v!r}) is not defined in the graph")
    # use lists must match the inputs exactly
    for v in list(graph.inputs) + [o for n in graph.nodes for o in n.outputs]:
        want = {(id(n), i) for n, i in expected.get(id(v), [])}
        if v.uses.keys() != want:
            users = ", ".join(f"{n.op}#{i}" for n, i in v.uses)
            raise VerificationError(
                f"use list of {v!r} is out of date: it records [{users}] but {len(want)} uses exist"
                + (f" (produced by {v.producer.describe()})" if v.producer else ""), v.producer)
        for n, _ in v.uses:
            if id(n) not in members:
                raise VerificationError(f"{v!r} is used by a {n.op} node that is no longer in the graph", n)


def _check_node_types(node: Node) -> None:
    opdef = registry.get(node.op)
    try:
        attrs = registry.normalize_attrs(node.op, node.attrs)
    except registry.TypeRuleError as e:
        raise _fail(node, str(e)) from None
    if attrs != node.attrs:
        raise _fail(node, "attributes are not normalised (build nodes with Graph.make)")
    try:
        want = registry.infer_types(node.op, [v.type for v in node.inputs], node.attrs, regions=node.regions)
    except VerificationError as e:
        raise _fail(node, str(e)) from None
    if len(want) != len(node.outputs):
        raise _fail(node, f"has {len(node.outputs)} outputs, the type rule gives {len(want)}")
    for k, (o, t) in enumerate(zip(node.outputs, want)):
        if o.type != t:
            raise _fail(node, f"output {k} is {o.type}, the type rule gives {t}")
