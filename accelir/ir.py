"""The accelir graph IR: SSA values, nodes and graphs (dtypes and tensor types live in
:mod:`accelir.types` and are re-exported here).

Use-def information is kept true by construction: a node's inputs register a use on
each input value when the node enters a graph, and every mutation goes through a
few methods that keep both sides in step (``Node.replace_input``,
``Value.replace_all_uses_with``, ``Graph.insert_before`` / ``insert_after`` /
``append``, ``Graph.remove``, ``Graph.replace``).  Nodes are kept in topological
order in a doubly linked list, so inserting next to a node is O(1).

Reading is free and public, so passes need no field of this module's objects:
``Node.inputs`` is the node's own tuple, ``Value.uses`` a read-only view of its use
list (``uses()`` a list copy) and ``Value.num_uses`` its length, ``Node.prev`` /
``Node.next`` and ``Graph.first`` / ``Graph.last`` walk the list.

Constants are ``constant`` nodes whose ``name`` attribute keys into
``Graph.constants`` (numpy arrays, shared with the framework's memory where
possible, and therefore read-only views: a pass builds new arrays, it never writes
into a constant).
"""

from __future__ import annotations

import itertools
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .dims import Dim
from .errors import VerificationError
from .ops import registry
from .printer import print_graph, save
from .types import DType, TensorType, freeze_attr

__all__ = ["DType", "TensorType", "UseList", "Value", "Node", "Graph", "Builder", "freeze_attr", "readonly_view",
           "Snapshot", "Fingerprint"]


def readonly_view(arr: np.ndarray) -> np.ndarray:
    """A view of ``arr`` that cannot be written through; ``arr`` itself keeps its flags.

    Graph constants share memory with the framework's tensors (torch parameters, jax
    and numpy arrays), so writing into them would change the user's model behind its
    back, and no rollback could undo it.  A pass that needs a changed array builds a
    new one (``arr.copy()``, ``np.where``, ...).
    """
    if not arr.flags.writeable:
        return arr
    view = arr.view()
    view.flags.writeable = False
    return view


class UseList:
    """A value's (node, input index) uses, as ``Value.uses`` shows them: a read-only view, list-like
    to read without a copy (``len``, ``in``, ``[0]``), and ``uses()`` gives a list copy.

    Only the graph methods of this module add and drop uses (``_add`` / ``_discard``, O(1)), so the
    lists stay true; iterating walks a snapshot, so a caller may rewrite uses while it iterates.
    """

    __slots__ = ("_d",)

    def __init__(self) -> None:
        self._d: dict[tuple[int, int], tuple[Node, int]] = {}

    def _add(self, use: tuple[Node, int]) -> None:
        self._d[(id(use[0]), use[1])] = use

    def _discard(self, use: tuple[Node, int]) -> None:
        del self._d[(id(use[0]), use[1])]

    def __call__(self) -> list[tuple[Node, int]]:
        """The uses as a new list (``value.uses()``)."""
        return list(self._d.values())

    def __contains__(self, use: object) -> bool:
        return isinstance(use, tuple) and len(use) == 2 and (id(use[0]), use[1]) in self._d

    def keys(self) -> set[tuple[int, int]]:
        return set(self._d)

    def __iter__(self) -> Iterator[tuple[Node, int]]:
        return iter(list(self._d.values()))

    def __len__(self) -> int:
        return len(self._d)

    def __bool__(self) -> bool:
        return bool(self._d)

    def __getitem__(self, i: int) -> tuple[Node, int]:
        if i == 0 and self._d:
            return next(iter(self._d.values()))
        return list(self._d.values())[i]


class Value:
    """One SSA value: a graph input or one output of a node."""

    __slots__ = ("type", "name", "producer", "index", "graph", "_uses", "__weakref__")

    def __init__(self, type: TensorType, name: str | None = None):
        if not isinstance(type, TensorType):
            raise TypeError(f"Value type must be a TensorType, got {type!r}")
        self.type = type
        self.name = name
        self.producer: Node | None = None
        self.index = 0
        self.graph: Graph | None = None
        self._uses = UseList()

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    @property
    def shape(self) -> tuple[Dim, ...]:
        return self.type.shape

    @property
    def rank(self) -> int:
        return len(self.type.shape)

    @property
    def uses(self) -> UseList:
        """The (node, input index) pairs reading this value: a read-only view, no copy;
        ``uses()`` gives a list copy."""
        return self._uses

    @property
    def num_uses(self) -> int:
        """How many (node, input index) pairs read this value; graph outputs do not count."""
        return len(self._uses._d)

    def users(self) -> list[Node]:
        seen: dict[int, Node] = {}
        for n, _ in self._uses:
            seen.setdefault(id(n), n)
        return list(seen.values())

    @property
    def is_graph_input(self) -> bool:
        return self.producer is None and self.graph is not None

    @property
    def is_graph_output(self) -> bool:
        return self.graph is not None and any(o is self for o in self.graph.outputs)

    @property
    def is_constant(self) -> bool:
        return self.producer is not None and self.producer.op == "constant"

    @property
    def const_value(self) -> np.ndarray | None:
        """The array of a constant node's output, else None."""
        p = self.producer
        if p is None or p.op != "constant" or p.graph is None:
            return None
        return p.graph.constants.get(p.attrs["name"])

    def replace_all_uses_with(self, other: Value) -> None:
        """Point every use of this value, graph outputs included, at ``other``."""
        if other is self:
            return
        for node, i in list(self._uses):
            node.replace_input(i, other)
        g = self.graph
        if g is not None:
            for i, o in enumerate(g.outputs):
                if o is self:
                    g.outputs[i] = other

    def __repr__(self) -> str:
        return f"Value({self.name or '?'}: {self.type})"


class Node:
    """One operation: ``outputs = op(inputs) {attrs} [regions]``."""

    __slots__ = ("op", "_inputs", "attrs", "outputs", "regions", "meta", "graph", "_prev", "_next",
                 "__weakref__")

    def __init__(self, op: str, inputs: Sequence[Value], attrs: Mapping[str, Any] | None = None,
                 output_types: Sequence[TensorType] = (), regions: Sequence[Graph] = (),
                 meta: Mapping[str, Any] | None = None, names: Sequence[str | None] | None = None):
        self.op = op
        for v in inputs:
            if not isinstance(v, Value):
                raise TypeError(f"{op}: node inputs must be Values, got {type(v).__name__}")
        self._inputs: tuple[Value, ...] = tuple(inputs)
        self.attrs: dict[str, Any] = {k: freeze_attr(v) for k, v in (attrs or {}).items()}
        self.outputs: tuple[Value, ...] = ()
        names = list(names) if names is not None else [None] * len(output_types)
        outs = []
        for i, t in enumerate(output_types):
            v = Value(t, names[i] if i < len(names) else None)
            v.producer = self
            v.index = i
            outs.append(v)
        self.outputs = tuple(outs)
        self.regions: tuple[Graph, ...] = tuple(regions)
        for r in self.regions:
            r.parent = self
        self.meta: dict[str, Any] = dict(meta or {})
        self.graph: Graph | None = None
        self._prev: Node | None = None
        self._next: Node | None = None

    @property
    def inputs(self) -> tuple[Value, ...]:
        """The input values; a tuple the node keeps (rebuilt by ``replace_input``), so reading is free."""
        return self._inputs

    @property
    def prev(self) -> Node | None:
        """The node before this one in its graph (None for the first, or outside a graph)."""
        return self._prev

    @property
    def next(self) -> Node | None:
        """The node after this one in its graph (None for the last, or outside a graph)."""
        return self._next

    @property
    def output(self) -> Value:
        if len(self.outputs) != 1:
            raise ValueError(f"{self.op} has {len(self.outputs)} outputs; use .outputs")
        return self.outputs[0]

    def replace_input(self, index: int, value: Value) -> None:
        """Make input ``index`` read ``value``, updating both use lists."""
        old = self._inputs[index]
        if old is value:
            return
        if self.graph is not None:
            _remove_use(old, self, index)
            value._uses._add((self, index))
        ins = self._inputs
        self._inputs = ins[:index] + (value,) + ins[index + 1:]

    def source(self) -> str:
        """A one-line description of where this node came from."""
        m = self.meta
        parts = []
        for key in ("module", "source", "origin"):
            if m.get(key):
                parts.append(str(m[key]))
        if m.get("pass"):
            parts.append(f"made by {m['pass']}" + (f" ({m['rule']})" if m.get("rule") else ""))
        return "; ".join(parts) if parts else "unknown origin"

    def describe(self) -> str:
        outs = ", ".join(str(o.type) for o in self.outputs)
        name = self.outputs[0].name if self.outputs and self.outputs[0].name else None
        label = f"'{self.op}'" + (f" (%{name})" if name else "")
        return f"node {label} -> {outs} [{self.source()}]"

    def __repr__(self) -> str:
        return f"Node({self.op}, in={len(self._inputs)}, out={[str(o.type) for o in self.outputs]})"


def _remove_use(value: Value, node: Node, index: int) -> None:
    try:
        value._uses._discard((node, index))
    except KeyError:
        raise VerificationError(f"use list of {value!r} lacks ({node.op}, {index})", node) from None


class Graph:
    """A function: typed inputs, nodes in topological order, outputs, named constants."""

    def __init__(self, name: str = "main"):
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.constants: dict[str, np.ndarray] = {}
        self.meta: dict[str, Any] = {}
        self.parent: Node | None = None
        self._head: Node | None = None
        self._tail: Node | None = None
        self._len = 0
        self._const_refs: dict[str, int] = {}
        self._counter = itertools.count()

    # ----- reading -------------------------------------------------------------------
    @property
    def nodes(self) -> Iterator[Node]:
        """The nodes in order.  Safe against removing the current node while iterating."""
        n = self._head
        while n is not None:
            nxt = n._next
            yield n
            n = nxt

    @property
    def reversed_nodes(self) -> Iterator[Node]:
        """The nodes last to first.  Safe against removing the current node while iterating."""
        n = self._tail
        while n is not None:
            prev = n._prev
            yield n
            n = prev

    @property
    def first(self) -> Node | None:
        """The first node (None when the graph has none)."""
        return self._head

    @property
    def last(self) -> Node | None:
        """The last node (None when the graph has none)."""
        return self._tail

    def __iter__(self) -> Iterator[Node]:
        return self.nodes

    def __len__(self) -> int:
        return self._len

    def num_nodes(self, recursive: bool = True) -> int:
        if not recursive:
            return self._len
        return sum(1 + sum(r.num_nodes() for r in n.regions) for n in self.nodes)

    def op_histogram(self) -> dict[str, int]:
        hist: dict[str, int] = {}
        for n in self.nodes:
            hist[n.op] = hist.get(n.op, 0) + 1
            for r in n.regions:
                for k, v in r.op_histogram().items():
                    hist[k] = hist.get(k, 0) + v
        return hist

    def constant_value(self, v: Value) -> np.ndarray | None:
        return v.const_value

    # ----- building ------------------------------------------------------------------
    def add_input(self, type: TensorType, name: str | None = None) -> Value:
        v = Value(type, name)
        v.graph = self
        self.inputs.append(v)
        return v

    def set_outputs(self, outputs: Iterable[Value]) -> None:
        outs = list(outputs)
        for o in outs:
            if not isinstance(o, Value):
                raise TypeError(f"graph outputs must be Values, got {type(o).__name__}")
        self.outputs = outs

    def _link(self, node: Node, prev: Node | None, nxt: Node | None) -> None:
        if node.graph is not None:
            raise ValueError(f"{node.op} node is already in a graph")
        node._prev, node._next = prev, nxt
        if prev is None:
            self._head = node
        else:
            prev._next = node
        if nxt is None:
            self._tail = node
        else:
            nxt._prev = node
        node.graph = self
        self._len += 1
        for i, v in enumerate(node._inputs):
            v._uses._add((node, i))
        for o in node.outputs:
            o.graph = self
        if node.op == "constant":
            name = node.attrs["name"]
            self._const_refs[name] = self._const_refs.get(name, 0) + 1

    def append(self, node: Node) -> Node:
        self._link(node, self._tail, None)
        return node

    def insert_before(self, anchor: Node | None, node: Node) -> Node:
        """Insert ``node`` before ``anchor`` (at the end when anchor is None)."""
        if anchor is None:
            return self.append(node)
        self._check_owned(anchor)
        self._link(node, anchor._prev, anchor)
        return node

    def insert_after(self, anchor: Node | None, node: Node) -> Node:
        """Insert ``node`` after ``anchor`` (at the start when anchor is None)."""
        if anchor is None:
            self._link(node, None, self._head)
            return node
        self._check_owned(anchor)
        self._link(node, anchor, anchor._next)
        return node

    def _check_owned(self, node: Node) -> None:
        if node.graph is not self:
            raise ValueError(f"{node.op} node is not in graph {self.name!r}")

    def remove(self, node: Node) -> None:
        """Remove a node none of whose outputs is still used (graph outputs count)."""
        self._check_owned(node)
        for o in node.outputs:
            if o._uses:
                users = ", ".join(sorted({u.op for u, _ in o._uses}))
                raise VerificationError(
                    f"cannot remove {node.describe()}: output {o.index} is still used by {users}", node)
            if any(x is o for x in self.outputs):
                raise VerificationError(f"cannot remove {node.describe()}: output {o.index} is a graph output",
                                        node)
        for i, v in enumerate(node._inputs):
            _remove_use(v, node, i)
        prev, nxt = node._prev, node._next
        if prev is None:
            self._head = nxt
        else:
            prev._next = nxt
        if nxt is None:
            self._tail = prev
        else:
            nxt._prev = prev
        node._prev = node._next = None
        node.graph = None
        self._len -= 1
        if node.op == "constant":
            name = node.attrs["name"]
            left = self._const_refs.get(name, 1) - 1
            if left <= 0:
                self._const_refs.pop(name, None)
                self.constants.pop(name, None)
            else:
                self._const_refs[name] = left

    def replace(self, node: Node, new_values: Sequence[Value]) -> None:
        """Replace every use of ``node``'s outputs by ``new_values`` and remove it."""
        if len(new_values) != len(node.outputs):
            raise ValueError(f"{node.op} has {len(node.outputs)} outputs, got {len(new_values)} replacements")
        for old, new in zip(node.outputs, new_values):
            if old.type.dtype != new.type.dtype or old.type.rank != new.type.rank:
                raise VerificationError(f"replacing {node.describe()}: {old.type} with {new.type} changes the type",
                                        node)
            old.replace_all_uses_with(new)
        self.remove(node)

    def make(self, op: str, inputs: Sequence[Value], attrs: Mapping[str, Any] | None = None, *,
             regions: Sequence[Graph] = (), meta: Mapping[str, Any] | None = None,
             names: Sequence[str | None] | None = None, before: Node | None = None,
             output_types: Sequence[TensorType] | None = None) -> Node:
        """Build a node, infer its output types from the op's type rule, and insert it."""
        try:
            attrs = registry.normalize_attrs(op, {k: freeze_attr(v) for k, v in (attrs or {}).items()})
        except registry.TypeRuleError as e:
            raise VerificationError(str(e)) from None
        if registry.get(op).unbacked is not None and not attrs.get("syms"):
            attrs = self._name_unbacked(op, inputs, attrs)
        if output_types is None:
            output_types = registry.infer_types(op, [v.type for v in inputs], attrs, regions=tuple(regions),
                                                meta=meta)
        node = Node(op, inputs, attrs, output_types, regions, meta, names)
        if before is None:
            self.append(node)
        else:
            self.insert_before(before, node)
        return node

    def _name_unbacked(self, op: str, inputs: Sequence[Value], attrs: dict[str, Any]) -> dict[str, Any]:
        """A data-dependent node's attributes with fresh symbols for the dims it introduces (none
        where the operands are malformed: the type rule then says what is wrong)."""
        from .unbacked import MAX_PER_NODE, fresh_symbols
        try:
            n = registry.get(op).unbacked([v.type for v in inputs], attrs)
        except (registry.TypeRuleError, IndexError):
            n = 0
        return {**attrs, "syms": fresh_symbols(self, n if 0 <= n <= MAX_PER_NODE else 0)}

    def apply(self, op: str, *inputs: Value, **attrs: Any) -> Value:
        """Shorthand: append ``op(*inputs, **attrs)`` and return its single output."""
        return self.make(op, inputs, attrs).output

    def unique_constant_name(self, base: str) -> str:
        name = base
        while name in self.constants or name in self._const_refs:
            name = f"{base}_{next(self._counter)}"
        return name

    def const(self, value: Any, dtype: DType | None = None, name: str | None = None, *,
              before: Node | None = None, meta: Mapping[str, Any] | None = None) -> Value:
        """Add a constant node holding ``value`` (an array, shared not copied, or a scalar).

        The graph keeps a read-only view (see :func:`readonly_view`): the array may be the
        memory of the user's weights, so a pass that writes into it fails instead of
        changing the user's model.
        """
        if dtype is not None:
            arr = np.asarray(value, dtype=dtype.numpy)
        else:
            arr = np.asarray(value)
        DType.from_numpy(arr.dtype)  # raises for unsupported dtypes
        name = self.unique_constant_name(name or "c")
        self.constants[name] = readonly_view(arr)
        node = Node("constant", [], {"name": name}, [TensorType.of(arr)], meta=meta, names=[None])
        if before is None:
            self.append(node)
        else:
            self.insert_before(before, node)
        return node.outputs[0]

    def constant_ref(self, name: str, *, before: Node | None = None,
                     meta: Mapping[str, Any] | None = None) -> Value:
        """Another constant node reading the existing constant ``name``."""
        arr = self.constants[name]
        node = Node("constant", [], {"name": name}, [TensorType.of(arr)], meta=meta, names=[None])
        self.insert_before(before, node)
        return node.outputs[0]

    def builder(self, before: Node | None = None, meta: Mapping[str, Any] | None = None) -> Builder:
        return Builder(self, before, meta)

    @classmethod
    def decomposition(cls, op: str, input_types: Sequence[TensorType], attrs: Mapping[str, Any],
                      meta: Mapping[str, Any] | None = None,
                      input_names: Sequence[str | None] | None = None) -> Graph:
        """A graph computing composite ``op`` (attributes already normalised) from inputs of
        ``input_types`` through its decomposition into core ops, its nodes carrying ``meta``; backends
        without a kernel for the composite lower this graph instead."""
        scratch = cls(f"{op}_decomposition")
        names = input_names or [None] * len(input_types)
        ins = [scratch.add_input(t, n) for t, n in zip(input_types, names)]
        scratch.set_outputs(registry.get(op).decompose(scratch.builder(meta=meta), ins, dict(attrs)))
        return scratch

    def __str__(self) -> str:
        return print_graph(self)

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, inputs={len(self.inputs)}, nodes={self._len}, outputs={len(self.outputs)})"

    # ----- persistence ---------------------------------------------------------------
    def save(self, path: str) -> None:
        """Write ``path`` (.air text) and, when there are large constants, ``path + '.npz'``."""
        save(self, path)

    def copy(self, value_map: dict[int, Value] | None = None) -> Graph:
        """A deep copy of the structure; constant arrays are shared, not copied, meta dicts copied.

        ``value_map``, when given, receives ``id(old value) -> new value`` for the graph's inputs
        and node outputs (not those inside regions)."""
        m: dict[int, Value] = value_map if value_map is not None else {}
        out = Graph(self.name)
        out.meta = dict(self.meta)
        for v in self.inputs:
            m[id(v)] = out.add_input(v.type, v.name)
        for n in self.nodes:
            if n.op == "constant":
                name = n.attrs["name"]
                if name in out.constants:
                    new = out.constant_ref(name, meta=n.meta)
                else:
                    new = out.const(self.constants[name], name=name, meta=n.meta)
                new.name = n.outputs[0].name
                m[id(n.outputs[0])] = new
                continue
            regions = [r.copy() for r in n.regions]
            node = Node(n.op, [m[id(v)] for v in n.inputs], n.attrs, [o.type for o in n.outputs], regions,
                        n.meta, [o.name for o in n.outputs])
            out.append(node)
            for a, b in zip(n.outputs, node.outputs):
                m[id(a)] = b
        out.set_outputs([m[id(v)] for v in self.outputs])
        return out

    # ----- change tracking -----------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The graph's state, restorable in place with :meth:`restore` (see :class:`Snapshot`)."""
        return Snapshot(self)

    def restore(self, snapshot: Snapshot) -> None:
        """Put the graph back as it was when ``snapshot`` was taken (a failed pass is undone so)."""
        if snapshot.graph is not self:
            raise ValueError(f"the snapshot was taken of another graph than {self.name!r}")
        snapshot.restore()

    def fingerprint(self) -> Fingerprint:
        """What the graph computes, cheaply comparable: equal fingerprints mean nothing changed."""
        return Fingerprint(self)

    def signature(self) -> tuple[tuple[tuple[Value, TensorType], ...], tuple[TensorType, ...]]:
        """The calling convention: the input values with their types, and the output types."""
        return tuple((v, v.type) for v in self.inputs), tuple(v.type for v in self.outputs)


class Builder:
    """Inserts nodes at one place in a graph; used by decompositions and rewrites."""

    __slots__ = ("graph", "before", "meta", "created")

    def __init__(self, graph: Graph, before: Node | None = None, meta: Mapping[str, Any] | None = None):
        self.graph = graph
        self.before = before
        self.meta = dict(meta or {})
        self.created: list[Node] = []

    def node(self, op: str, inputs: Sequence[Value], attrs: Mapping[str, Any] | None = None,
             regions: Sequence[Graph] = (), output_types: Sequence[TensorType] | None = None) -> Node:
        n = self.graph.make(op, inputs, attrs, regions=regions, meta=self.meta, before=self.before,
                            output_types=output_types)
        self.created.append(n)
        return n

    def op(self, op: str, *inputs: Value, **attrs: Any) -> Value:
        return self.node(op, inputs, attrs).output

    def ops(self, op: str, *inputs: Value, **attrs: Any) -> tuple[Value, ...]:
        return self.node(op, inputs, attrs).outputs

    def const(self, value: Any, dtype: DType | None = None, name: str | None = None) -> Value:
        v = self.graph.const(value, dtype, name, before=self.before, meta=self.meta)
        self.created.append(v.producer)
        return v

    def scalar(self, value: Any, like: Value | DType) -> Value:
        dt = like if isinstance(like, DType) else like.dtype
        return self.const(np.asarray(value, dtype=dt.numpy), name="c")


class Snapshot:
    """The state of a graph, restorable in place: a failed pass is undone with it.

    Nothing is copied but the containers: each node keeps its object and gets back its
    inputs, attributes, meta, links and output names and types; the graph gets back
    its fields (the caller holds the Graph object, so rollback must happen in place).
    Use lists are rebuilt from the restored inputs, which also drops the uses of any
    node the failed pass had added.  Region bodies are snapshotted the same way.
    Taking a snapshot costs a few list and dict copies per node, not a deep copy.
    """

    __slots__ = ("graph", "fields", "nodes", "inputs", "regions")

    def __init__(self, graph: Graph):
        self.graph = graph
        self.fields = {k: v.copy() if isinstance(v, (list, dict)) else v for k, v in vars(graph).items()}
        self.inputs = [(v, v.name, v.type) for v in graph.inputs]
        nodes = []
        regions = []
        for n in graph.nodes:
            outs = n.outputs
            nodes.append((n, n.op, n._inputs, dict(n.attrs), dict(n.meta), outs,
                          [(o.name, o.type) for o in outs], n.regions))
            for r in n.regions:
                regions.append(Snapshot(r))
        self.nodes = nodes
        self.regions = regions

    def restore(self) -> None:
        g = self.graph
        for k, v in self.fields.items():
            setattr(g, k, v.copy() if isinstance(v, (list, dict)) else v)
        for v, name, type_ in self.inputs:
            v.name, v.type, v.graph, v._uses = name, type_, g, UseList()
        prev: Node | None = None
        for n, op, inputs, attrs, meta, outs, out_state, regions in self.nodes:
            n.op, n._inputs, n.attrs, n.meta, n.outputs, n.regions = op, inputs, dict(attrs), dict(meta), \
                outs, regions
            n.graph, n._prev, n._next = g, prev, None
            if prev is not None:
                prev._next = n
            prev = n
            for o, (name, type_) in zip(outs, out_state):
                o.name, o.type, o.graph, o._uses = name, type_, g, UseList()
        for n, *_ in self.nodes:
            for i, v in enumerate(n._inputs):
                v._uses._add((n, i))
            for r in n.regions:
                r.parent = n
        for r in self.regions:
            r.restore()

    def changed(self) -> bool:
        """Whether the graph now computes something else than when the snapshot was taken.

        The same test as comparing :class:`Fingerprint` s (value names and meta do not
        count), but against the state the snapshot holds anyway, walking the graph once
        without building anything.
        """
        g, fields = self.graph, self.fields
        if g.inputs != fields["inputs"] or g.outputs != fields["outputs"] or \
                any(v.type != t for v, _, t in self.inputs):
            return True
        consts = fields["constants"]
        if len(g.constants) != len(consts) or any(consts.get(k) is not a for k, a in g.constants.items()):
            return True
        nodes, regions = self.nodes, iter(self.regions)
        if g._len != len(nodes):
            return True
        for n, (was, op, inputs, attrs, _, outs, out_state, rs) in zip(g.nodes, nodes):
            if n is not was or n.op != op or n._inputs != inputs or n.attrs != attrs or n.outputs is not outs \
                    or n.regions != rs:
                return True
            for o, (_, t) in zip(outs, out_state):
                if o.type is not t and o.type != t:
                    return True
            for _ in rs:
                if next(regions).changed():
                    return True
        last = nodes[-1][0] if nodes else None
        return (last._next if last is not None else g._head) is not None


class Fingerprint:
    """What a graph computes, to tell whether a pass changed it without trusting the pass's word.

    Per node (regions included): the node itself, its op, attributes, input and output
    values and the output types; per graph: the input and output values, the input
    types and each constant's name and array.  Objects are compared by identity, arrays
    are neither copied nor read, so taking one is O(nodes).  The fingerprint holds the
    objects it names, so no new object can take the identity of one a pass dropped.
    Value names and meta are left out: they do not change what the graph computes.
    """

    __slots__ = ("_key",)

    def __init__(self, graph: Graph):
        self._key: list[Any] = []
        self._add(graph)

    def _add(self, g: Graph) -> None:
        # one flat list, every variable-length part preceded by its length: the cheapest form
        # to build (this runs after every pass that reports no change) and to compare
        key = self._key
        app = key.append
        app(len(g.inputs))
        key += g.inputs
        key += [v.type for v in g.inputs]
        app(len(g.outputs))
        key += g.outputs
        app(len(g.constants))
        for name, arr in g.constants.items():
            app(name)
            app(_Same(arr))
        for n in g.nodes:
            app(n)
            app(n.op)
            app(n.attrs.copy() if n.attrs else None)
            app(len(n._inputs))
            key += n._inputs
            app(len(n.outputs))
            for o in n.outputs:
                app(o)
                app(o.type)
            app(len(n.regions))
            for r in n.regions:
                self._add(r)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Fingerprint):
            return NotImplemented
        return self._key == other._key

    __hash__ = None  # type: ignore[assignment]


class _Same:
    """Holds an array and compares by identity: the fingerprint neither reads nor copies it."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj

    __hash__ = None  # type: ignore[assignment]
