"""The pattern-rewrite engine: patterns as data, rules ``(pattern, fn)``, one driver.

A pattern describes a tree of values rooted at a node's output::

    x = Var("x")
    Rule("mul_one", P.mul(x, Const(1.0)), lambda m, b: m["x"] if same_type(m["x"], m.root.output) else None)

- :class:`Op` matches a value produced by one of some ops, with operand sub-patterns
  (tried in both orders for commutative binary ops), attribute predicates, a node
  predicate, a single-use constraint and an optional capture name.
- :class:`Var` matches any value (optionally filtered by a predicate) and captures it.
- :class:`Const` matches a constant node's output: optionally a given value (every
  element within a tolerance), optionally only scalars (one element), optionally a
  predicate on the array.
- :class:`Alt` matches the first of several alternatives that fits.

A capture name used twice must bind the same value both times (``x - x``).

:func:`apply_rules` rewrites a graph to a fixed point with a worklist: every node is
visited once, and a rewrite re-queues only the nodes it can have changed (new nodes,
the users of the replacement up to the deepest pattern's depth, and producers whose
values lost a use), so a 100k-node graph is not rescanned.  Only nodes whose op roots
some rule are queued, and each pattern's :meth:`Pattern.quick` test (ops, arities,
constant values, no bindings) turns most of them away before a full match.  Nodes a
rewrite made dead are removed.  Each node a rule builds records ``meta["pass"]`` /
``meta["rule"]`` and keeps the ``module`` / ``source`` / ``origin`` provenance of the
node it replaced.

Every rewrite in every pass first asks :data:`rewrite_budget` (the global rewrite
counter, like LLVM's ``-opt-bisect-limit``); once the limit set by
:func:`rewrite_limit` is spent, passes stop rewriting, which is how ``bisect`` finds
the single rewrite that breaks a graph.

With ``verbose=True`` the driver records near misses, why a rule that got part of the
way did not fire (``"layer_norm: epsilon not a scalar constant"``), for "why not
fused" reports.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, Union

import numpy as np

from accelir.errors import PassError, VerificationError
from accelir.ir import Builder, Graph, Node, Value
from accelir.ops import registry

__all__ = [
    "Pattern", "Op", "Var", "Const", "Alt", "P", "Match", "Rule", "NearMiss", "RulePass",
    "RewriteBudget", "rewrite_budget", "rewrite_limit", "apply_rules", "provenance", "remove_dead",
    "same_type", "MatchAttempt", "qdq_group_member", "holds_qdq",
]

log = logging.getLogger("accelir.passes")

Bindings = Mapping[str, Value]
Replacement = Union[Value, Sequence[Value], None]
PROVENANCE_KEYS = ("module", "source", "origin")


# ----- the global rewrite counter ----------------------------------------------------

class RewriteBudget:
    """Counts rewrites across all passes; with a limit set, refuses rewrites past it.

    ``allow(what)`` is called by a pass right before it changes the graph; when it
    returns False the pass must leave the graph alone and stop.  ``log`` keeps a
    description of each allowed rewrite while a limit is active (for bisect reports).
    """

    __slots__ = ("limit", "count", "log")

    def __init__(self) -> None:
        self.limit: int | None = None
        self.count = 0
        self.log: list[str] = []

    @property
    def exhausted(self) -> bool:
        return self.limit is not None and self.count >= self.limit

    def allow(self, what: str | Callable[[], str] = "") -> bool:
        if self.limit is None:
            self.count += 1
            return True
        if self.count >= self.limit:
            return False
        self.count += 1
        self.log.append(what() if callable(what) else what)
        return True


rewrite_budget = RewriteBudget()


@contextlib.contextmanager
def rewrite_limit(limit: int | None) -> Iterator[RewriteBudget]:
    """Allow at most ``limit`` rewrites (all passes together) inside the block; None counts only."""
    saved = (rewrite_budget.limit, rewrite_budget.count, rewrite_budget.log)
    rewrite_budget.limit, rewrite_budget.count, rewrite_budget.log = limit, 0, []
    try:
        yield rewrite_budget
    finally:
        rewrite_budget.limit, rewrite_budget.count, rewrite_budget.log = saved


# ----- patterns ----------------------------------------------------------------------

class MatchAttempt:
    """State of one match attempt at one root: progress made and the best failure reason.

    Public because it is the third argument of ``Pattern.matches``: a custom pattern
    reports why it does not fit through ``attempt.fail(reason)``."""

    __slots__ = ("verbose", "progress", "best_progress", "reason")

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.progress = 0
        self.best_progress = -1
        self.reason = ""

    def fail(self, reason: str | Callable[[], str]) -> None:
        if self.verbose and self.progress > self.best_progress:
            self.best_progress = self.progress
            self.reason = reason() if callable(reason) else reason


def _bind(name: str | None, value: Value, b: Bindings, attempt: MatchAttempt) -> Bindings | None:
    if name is None:
        return b
    old = b.get(name)
    if old is None:
        out = dict(b)
        out[name] = value
        return out
    if old is value:
        return b
    attempt.fail(f"{name} is bound to two different values")
    return None


class Pattern:
    """Base class: ``matches(value, bindings, attempt)`` yields every extended binding that fits."""

    name: str | None = None

    def matches(self, value: Value, b: Bindings, attempt: MatchAttempt) -> Iterator[Bindings]:
        raise NotImplementedError

    def quick(self, value: Value) -> bool:
        """A cheap necessary condition for a match (ops and arities only, no bindings).

        The driver calls it before the full match so that the many nodes a rule does
        not fit are turned away without generators, bindings or a builder.
        """
        return True

    @property
    def depth(self) -> int:
        return 0

    def root_ops(self) -> tuple[str, ...]:
        raise TypeError(f"{type(self).__name__} cannot be the root of a rule; use an Op pattern")


class Var(Pattern):
    """Any value, captured as ``name``; ``where(value)`` may narrow it."""

    __slots__ = ("name", "where")

    def __init__(self, name: str | None = None, where: Callable[[Value], bool] | None = None):
        self.name = name
        self.where = where

    def matches(self, value: Value, b: Bindings, attempt: MatchAttempt) -> Iterator[Bindings]:
        if self.where is not None and not self.where(value):
            attempt.fail(lambda: f"{self.name or 'operand'} does not satisfy its predicate")
            return
        out = _bind(self.name, value, b, attempt)
        if out is not None:
            yield out

    def __repr__(self) -> str:
        return f"Var({self.name!r})"


class Const(Pattern):
    """A constant node's output.

    ``value``: every element equals it within ``atol + rtol * |value|`` (NaN matches NaN).
    ``scalar``: the constant has exactly one element (any rank).
    ``where(array)``: any further predicate on the array.
    """

    __slots__ = ("name", "value", "scalar", "where", "rtol", "atol")

    def __init__(self, value: float | int | bool | None = None, *, name: str | None = None, scalar: bool = False,
                 where: Callable[[np.ndarray], bool] | None = None, rtol: float = 1e-6, atol: float = 0.0):
        self.value = value
        self.name = name
        self.scalar = scalar
        self.where = where
        self.rtol = rtol
        self.atol = atol

    def _label(self) -> str:
        return self.name or "operand"

    def quick(self, value: Value) -> bool:
        p = value.producer
        if p is None or p.op != "constant":
            return False
        if self.scalar or self.value is not None:
            # most constants next to an identity's op are not its neutral element
            arr = value.const_value
            if arr is None or (self.scalar and arr.size != 1):
                return False
            if self.value is not None and not self._equal(arr):
                return False
        return True

    def _equal(self, arr: np.ndarray) -> bool:
        if arr.size == 0:
            return False
        if arr.dtype == np.bool_ or isinstance(self.value, bool):
            return bool(np.all(arr == bool(self.value)))
        want = float(self.value)
        if arr.size == 1:
            # the common case, a scalar: plain floats instead of array reductions
            lo = hi = float(arr.reshape(-1)[0])
            if math.isnan(want):
                return math.isnan(lo)
        else:
            a = arr.astype(np.float64, copy=False)
            if math.isnan(want):
                return bool(np.all(np.isnan(a)))
            lo, hi = a.min(), a.max()
        tol = self.atol + self.rtol * abs(want)
        return bool(abs(lo - want) <= tol and abs(hi - want) <= tol)

    def matches(self, value: Value, b: Bindings, attempt: MatchAttempt) -> Iterator[Bindings]:
        arr = value.const_value
        if arr is None:
            attempt.fail(lambda: f"{self._label()} not a {'scalar ' if self.scalar else ''}constant")
            return
        if self.scalar and arr.size != 1:
            attempt.fail(lambda: f"{self._label()} not a scalar constant (shape {list(arr.shape)})")
            return
        if self.value is not None and not self._equal(arr):
            attempt.fail(lambda: f"{self._label()} is not {self.value!r}")
            return
        if self.where is not None and not self.where(arr):
            attempt.fail(lambda: f"{self._label()} does not satisfy its predicate")
            return
        out = _bind(self.name, value, b, attempt)
        if out is not None:
            yield out

    def __repr__(self) -> str:
        return f"Const({self.value!r}, name={self.name!r})"


class Op(Pattern):
    """A value produced by ``op`` (a name or a tuple of names).

    ``operands``: sub-patterns, one per input (None: inputs are not looked at).
    ``attrs``: attribute name -> required value, or a predicate ``fn(value) -> bool``.
    ``where(node)``: any further predicate on the producing node.
    ``single_use``: the value has exactly one use and is not a graph output.
    ``commutative``: try both operand orders of a binary op (default: the op's flag).
    ``output``: which output of the producer (None: any).
    """

    __slots__ = ("ops", "operands", "name", "attrs", "where", "single_use", "commutative", "output", "_same")

    def __init__(self, op: str | Sequence[str], *operands: Pattern, name: str | None = None,
                 attrs: Mapping[str, Any] | None = None, where: Callable[[Node], bool] | None = None,
                 single_use: bool = False, commutative: bool | None = None, output: int | None = 0,
                 any_operands: bool = False):
        self.ops = (op,) if isinstance(op, str) else tuple(op)
        for o in self.ops:
            if not registry.is_registered(o):
                raise ValueError(f"pattern names unknown op {o!r}")
        for p in operands:
            if not isinstance(p, Pattern):
                raise TypeError(f"operand patterns of {op} must be Patterns, got {type(p).__name__}")
        self.operands: tuple[Pattern, ...] | None = None if any_operands else tuple(operands)
        self.name = name
        self.attrs = dict(attrs or {})
        self.where = where
        self.single_use = single_use
        if commutative is None:
            commutative = all(registry.get(o).commutative for o in self.ops)
        self.commutative = commutative and self.operands is not None and len(self.operands) == 2
        self.output = output
        # operand positions captured under one name (``sub(x, x)``): quick() wants one value there
        named = [(i, p.name) for i, p in enumerate(self.operands or ()) if type(p) is Var and p.name]
        self._same = tuple((i, j) for i, a in named for j, b in named if i < j and a == b)

    @property
    def depth(self) -> int:
        return 1 + max((p.depth for p in self.operands or ()), default=0)

    def root_ops(self) -> tuple[str, ...]:
        return self.ops

    def quick(self, value: Value) -> bool:
        node = value.producer
        if node is None or node.op not in self.ops:
            return False
        if self.output is not None and value.index != self.output:
            return False
        if self.single_use and value.num_uses != 1:
            return False
        pats = self.operands
        if pats is None:
            return True
        ins = node.inputs
        if len(ins) != len(pats):
            return False
        for i, j in self._same:
            if ins[i] is not ins[j]:
                return False
        if self.commutative:
            p, q = pats
            a, b = ins
            return (p.quick(a) and q.quick(b)) or (p.quick(b) and q.quick(a))
        for p, v in zip(pats, ins):
            if not p.quick(v):
                return False
        return True

    def _label(self) -> str:
        return self.name or "/".join(self.ops)

    def matches(self, value: Value, b: Bindings, attempt: MatchAttempt) -> Iterator[Bindings]:
        node = value.producer
        if node is None or node.op not in self.ops:
            found = node.op if node is not None else "a graph input"
            attempt.fail(lambda: f"{self._label()}: expected {'/'.join(self.ops)}, found {found}")
            return
        if self.output is not None and value.index != self.output:
            attempt.fail(lambda: f"{self._label()}: uses output {value.index}, expected {self.output}")
            return
        for k, want in self.attrs.items():
            have = node.attrs.get(k)
            ok = want(have) if callable(want) else have == want
            if not ok:
                attempt.fail(lambda k=k, have=have: f"{self._label()}: attribute {k}={have!r} does not match")
                return
        if self.where is not None and not self.where(node):
            attempt.fail(lambda: f"{self._label()}: node predicate failed")
            return
        if self.single_use and (value.num_uses != 1 or value.is_graph_output):
            attempt.fail(lambda: f"{self._label()} has other users (needs a single use)")
            return
        b2 = _bind(self.name, value, b, attempt)
        if b2 is None:
            return
        attempt.progress += 1
        if self.operands is None:
            yield b2
            return
        inputs = node.inputs
        if len(inputs) != len(self.operands):
            attempt.fail(lambda: f"{self._label()}: has {len(inputs)} inputs, expected {len(self.operands)}")
            return
        orders = [inputs, inputs[::-1]] if self.commutative and inputs[0] is not inputs[1] else [inputs]
        for ins in orders:
            yield from _match_all(self.operands, ins, 0, b2, attempt)

    def __repr__(self) -> str:
        ops = "/".join(self.ops)
        inner = ", ".join(repr(p) for p in self.operands) if self.operands is not None else "..."
        return f"Op({ops}({inner}){', name=' + repr(self.name) if self.name else ''})"


def _match_all(pats: Sequence[Pattern], values: Sequence[Value], i: int, b: Bindings,
               attempt: MatchAttempt) -> Iterator[Bindings]:
    if i == len(pats):
        yield b
        return
    for b2 in pats[i].matches(values[i], b, attempt):
        yield from _match_all(pats, values, i + 1, b2, attempt)


class Alt(Pattern):
    """The alternatives in order: yields the matches of each."""

    __slots__ = ("alternatives", "name")

    def __init__(self, *alternatives: Pattern, name: str | None = None):
        if not alternatives:
            raise ValueError("Alt needs at least one alternative")
        self.alternatives = alternatives
        self.name = name

    @property
    def depth(self) -> int:
        return max(p.depth for p in self.alternatives)

    def root_ops(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(o for p in self.alternatives for o in p.root_ops()))

    def quick(self, value: Value) -> bool:
        for p in self.alternatives:
            if p.quick(value):
                return True
        return False

    def matches(self, value: Value, b: Bindings, attempt: MatchAttempt) -> Iterator[Bindings]:
        for p in self.alternatives:
            for b2 in p.matches(value, b, attempt):
                out = _bind(self.name, value, b2, attempt)
                if out is not None:
                    yield out

    def __repr__(self) -> str:
        return "Alt(" + ", ".join(repr(p) for p in self.alternatives) + ")"


class _OpFactory:
    """``P.mul(a, b, name=...)`` is ``Op("mul", a, b, name=...)``; the op name is checked."""

    def __getattr__(self, op: str) -> Callable[..., Op]:
        if op.startswith("__") or not registry.is_registered(op):
            raise AttributeError(f"no op named {op!r} in the registry")

        def make(*operands: Pattern, **kw: Any) -> Op:
            return Op(op, *operands, **kw)
        return make


P = _OpFactory()


# ----- matches and rules -------------------------------------------------------------

class Match:
    """A successful match: the root node and the captured values."""

    __slots__ = ("root", "graph", "bindings", "_attempt")

    def __init__(self, root: Node, bindings: Bindings, attempt: MatchAttempt):
        self.root = root
        self.graph = root.graph
        self.bindings = bindings
        self._attempt = attempt

    def __getitem__(self, name: str) -> Value:
        return self.bindings[name]

    def __contains__(self, name: str) -> bool:
        return name in self.bindings

    def get(self, name: str, default: Value | None = None) -> Value | None:
        return self.bindings.get(name, default)

    def node(self, name: str) -> Node:
        """The node producing the captured value ``name``."""
        p = self.bindings[name].producer
        if p is None:
            raise ValueError(f"capture {name!r} is a graph input, not a node output")
        return p

    def const(self, name: str) -> np.ndarray:
        arr = self.bindings[name].const_value
        if arr is None:
            raise ValueError(f"capture {name!r} is not a constant")
        return arr

    def scalar(self, name: str) -> float:
        """The single element of the constant captured as ``name``, as a python number."""
        arr = self.const(name)
        if arr.size != 1:
            raise ValueError(f"capture {name!r} has {arr.size} elements, not one")
        return arr.reshape(()).item()

    def reject(self, reason: str) -> None:
        """Record why the rule declines this match (shown in verbose mode); returns None."""
        self._attempt.progress = max(self._attempt.progress, self._attempt.best_progress + 1)
        self._attempt.fail(reason)
        return None


RewriteFn = Callable[[Match, Builder], Replacement]


@dataclass(frozen=True)
class Rule:
    """``fn(match, builder)`` returns the replacement value(s) of the root node, or None.

    ``near_miss_depth``: in verbose mode, a failed attempt is reported once at least
    this many op patterns matched (so a lone ``mul`` that is not a gelu stays quiet).
    """

    name: str
    pattern: Pattern
    fn: RewriteFn
    near_miss_depth: int = 2

    def __post_init__(self) -> None:
        self.pattern.root_ops()


@dataclass(frozen=True)
class NearMiss:
    """A rule that got part of the way at ``node`` and why it stopped."""

    rule: str
    reason: str
    node: Node = field(compare=False)

    def __str__(self) -> str:
        return f"{self.rule}: {self.reason} [{self.node.describe()}]"


def same_type(a: Value, b: Value) -> bool:
    return a.type == b.type


def provenance(node: Node, pass_name: str | None, rule: str | None) -> dict[str, Any]:
    """Meta for nodes replacing ``node``: its source provenance plus the pass and rule."""
    meta = {k: node.meta[k] for k in PROVENANCE_KEYS if node.meta.get(k)}
    if pass_name:
        meta["pass"] = pass_name
    if rule:
        meta["rule"] = rule
    return meta


QDQ_OPS = frozenset({"quantize_linear", "dequantize_linear"})


def holds_qdq(graph: Graph) -> bool:
    """Whether the program ``graph`` belongs to (the outermost graph and every region in it) holds a
    quantize or dequantize node.  Where none does, no node is part of a QDQ group, so a pass checks this
    once and skips :func:`qdq_group_member`'s walk over what each rewrite absorbs (on a float GPT-2
    small, 329 walks took 0.2 s, half the passes' time)."""
    top = graph
    while top.parent is not None:
        top = top.parent.graph
    return not QDQ_OPS.isdisjoint(top.op_histogram())


def qdq_group_member(root: Node) -> Node | None:
    """A node among ``root`` and the producers only it reads (what a rewrite at ``root`` absorbs)
    that belongs to a DequantizeLinear -> op -> QuantizeLinear group: it reads a ``dequantize_linear``
    output or feeds a ``quantize_linear``; None when there is none.

    ONNX Runtime (and any QDQ consumer) turns such a group into an integer kernel by the op
    between the pair, so a rewrite of the op, or one that absorbs it into a fused op, would
    leave a float kernel where the model asked for an integer one.
    """
    taken = {id(root)}
    stack = [root]
    while stack:
        n = stack.pop()
        if n.op == "quantize_linear" or any(v.producer is not None and v.producer.op == "dequantize_linear"
                                            for v in n.inputs) \
                or any(u.op == "quantize_linear" for o in n.outputs for u, _ in o.uses):
            return n
        for v in n.inputs:
            p = v.producer
            if p is None or id(p) in taken or p.op in ("constant", "dequantize_linear") or v.is_graph_output:
                continue
            if all(id(u) in taken for o in p.outputs for u, _ in o.uses):
                taken.add(id(p))
                stack.append(p)
    return None


def remove_dead(graph: Graph, nodes: Sequence[Node], released: list[Value] | None = None) -> int:
    """Remove the given nodes and, transitively, their producers once nothing reads them.

    Only pure nodes none of whose outputs is used or returned are removed.  The values
    the removed nodes read are appended to ``released`` (they lost a use).  Returns how
    many nodes were removed.
    """
    outputs: set[int] | None = None
    stack = list(nodes)
    removed = 0
    while stack:
        n = stack.pop()
        if n.graph is not graph or any(o.num_uses for o in n.outputs):
            continue
        if outputs is None:
            outputs = {id(v) for v in graph.outputs}
        if any(id(o) in outputs for o in n.outputs) or not registry.get(n.op).pure:
            continue
        inputs = list(n.inputs)
        graph.remove(n)
        removed += 1
        if released is not None:
            released.extend(inputs)
        stack.extend(v.producer for v in inputs if v.producer is not None)
    return removed


# ----- the driver --------------------------------------------------------------------

class _RuleBuilder(Builder):
    """The builder a rule's ``fn`` gets: inserts before the root, with the root's provenance.

    Most calls of ``fn`` build nothing (the rule declines), so the provenance meta is
    only computed when a node is actually built.
    """

    __slots__ = ("_root", "_pass_name", "_rule")

    def __init__(self, graph: Graph, root: Node, pass_name: str | None, rule: str):
        super().__init__(graph, root)
        del self.meta  # an unset slot: the first read goes to __getattr__
        self._root = root
        self._pass_name = pass_name
        self._rule = rule

    def __getattr__(self, name: str) -> Any:
        if name != "meta":
            raise AttributeError(name)
        self.meta = provenance(self._root, self._pass_name, self._rule)
        return self.meta


def _root_only(p: Pattern) -> bool:
    """Whether ``p`` constrains nothing but the root op and output index (``Op(ops, any_operands=True)``).

    Such a rule's ``fn`` does the matching itself; the driver calls it without a match attempt.
    """
    return (type(p) is Op and p.operands is None and p.name is None and not p.attrs and p.where is None
            and not p.single_use and p.output in (0, None))


class _Driver:
    def __init__(self, graph: Graph, rules: Sequence[Rule], pass_name: str | None, verbose: bool,
                 max_iterations: int, veto: frozenset[str], qdq: bool):
        self.graph = graph
        self.pass_name = pass_name
        self.verbose = verbose
        by_op: dict[str, list[tuple[Rule, bool]]] = {}
        for r in rules:
            if r.name in veto:
                continue
            for o in r.pattern.root_ops():
                by_op.setdefault(o, []).append((r, _root_only(r.pattern)))
        self.by_op = {op: tuple(rs) for op, rs in by_op.items()}
        self.depth = max((r.pattern.depth for r in rules), default=1)
        self.max_rewrites = max_iterations * (len(graph) + 1)
        self.near: dict[tuple[str, int], NearMiss] = {}
        self.stack: list[Node] = []
        self.queued: set[Node] = set()
        self.rewrites = 0
        self.fired: dict[str, int] = {}
        self.qdq = qdq

    def push(self, node: Node) -> None:
        # only nodes some rule roots at are worth queueing
        if node.op in self.by_op and node not in self.queued and node.graph is self.graph:
            self.queued.add(node)
            self.stack.append(node)

    def push_users(self, values: Sequence[Value]) -> None:
        frontier = list(values)
        seen: set[Node] = set()
        for _ in range(self.depth):
            nxt: list[Value] = []
            for v in frontier:
                for u, _i in v.uses:
                    if u not in seen:
                        seen.add(u)
                        self.push(u)
                        nxt.extend(u.outputs)
            frontier = nxt
            if not frontier:
                break

    def released(self, values: Sequence[Value]) -> None:
        """These values lost a reader: their producers and a now-single user may match anew."""
        for v in values:
            if v.producer is not None:
                self.push(v.producer)
            if v.num_uses == 1:
                self.push(v.uses[0][0])

    def run(self) -> int:
        graph, by_op, stack, queued = self.graph, self.by_op, self.stack, self.queued
        # seed the worklist with the nodes some rule roots at, first node on top
        for n in graph.reversed_nodes:
            if n.op in by_op:
                queued.add(n)
                stack.append(n)
        # the limit is set around a whole pass run, so it cannot appear in the middle of one
        limited = rewrite_budget.limit is not None
        while stack:
            node = stack.pop()
            queued.discard(node)
            if node.graph is not graph or not node.outputs:
                continue
            for rule, root_only in by_op[node.op]:
                if limited and rewrite_budget.exhausted:
                    stack.clear()
                    break
                if self.try_rule(rule, root_only, node):
                    break
        if self.verbose:
            for nm in list(self.near.values()):
                if nm.node.graph is not graph:
                    del self.near[(nm.rule, id(nm.node))]
        return self.rewrites

    def try_rule(self, rule: Rule, root_only: bool, node: Node) -> bool:
        root_value = node.outputs[0]
        verbose = self.verbose
        if root_only:
            # the root op is the whole pattern and the worklist only holds nodes of its ops
            attempt = MatchAttempt(verbose)
            attempt.progress = 1
            matches: Iterable[Bindings] = ({},)
        else:
            # near misses are reported from the full match, so only a quiet run may skip it
            if not verbose and not rule.pattern.quick(root_value):
                return False
            attempt = MatchAttempt(verbose)
            matches = rule.pattern.matches(root_value, {}, attempt)
        builder: _RuleBuilder | None = None
        for b in matches:
            member = qdq_group_member(node) if self.qdq else None
            if member is not None:
                attempt.fail(lambda: f"{rule.name}: {member.describe()} is part of a quantised (QDQ) group")
                break
            if builder is None:
                builder = _RuleBuilder(self.graph, node, self.pass_name, rule.name)
            result = rule.fn(Match(node, b, attempt), builder)
            if result is None:
                self.discard(builder)
                continue
            new = [result] if isinstance(result, Value) else list(result)
            self.check(rule, node, new)
            if not rewrite_budget.allow(lambda: f"{self.pass_name or 'rewrite'}: {rule.name} at {node.describe()}"):
                self.discard(builder)
                return False
            self.commit(rule, node, new, builder)
            return True
        if verbose and attempt.best_progress >= rule.near_miss_depth and attempt.reason:
            self.near[(rule.name, id(node))] = NearMiss(rule.name, attempt.reason, node)
        return False

    def check(self, rule: Rule, node: Node, new: list[Value]) -> None:
        if len(new) != len(node.outputs):
            raise VerificationError(f"rule {rule.name} returned {len(new)} values for {node.describe()} "
                                    f"with {len(node.outputs)} outputs", node)
        for old, v in zip(node.outputs, new):
            if old.type != v.type:
                raise VerificationError(f"rule {rule.name} would replace {old.type} with {v.type} at "
                                        f"{node.describe()}; a rule must keep the exact type", node)

    def discard(self, builder: Builder) -> None:
        if not builder.created:
            return
        for n in reversed(builder.created):
            if n.graph is self.graph and not any(o.num_uses for o in n.outputs):
                self.graph.remove(n)
        builder.created.clear()

    def commit(self, rule: Rule, node: Node, new: list[Value], builder: Builder) -> None:
        self.rewrites += 1
        self.fired[rule.name] = self.fired.get(rule.name, 0) + 1
        if self.rewrites > self.max_rewrites:
            top = sorted(self.fired.items(), key=lambda kv: -kv[1])[:3]
            raise PassError(f"rules did not reach a fixed point after {self.rewrites - 1} rewrites "
                            f"(most fired: {top}); two rules probably undo each other",
                            pass_name=self.pass_name or "apply_rules", previous=[])
        released = list(node.inputs)
        self.graph.replace(node, new)
        for n in builder.created:
            self.push(n)
        self.push_users(new)
        remove_dead(self.graph, [v.producer for v in released if v.producer is not None], released)
        self.released(released)
        for v in new:
            if v.producer is not None:
                self.push(v.producer)


def apply_rules(graph: Graph, rules: Sequence[Rule], *, max_iterations: int = 8, verbose: bool = False,
                pass_name: str | None = None, near_misses: list[NearMiss] | None = None,
                veto: frozenset[str] = frozenset(), regions: bool = True, qdq: bool | None = None) -> int:
    """Rewrite ``graph`` with ``rules`` to a fixed point; returns the number of rewrites.

    Rules are tried in order at each node whose op roots one of them; the first whose
    ``fn`` returns a replacement wins.  ``max_iterations`` bounds the rewrites to
    ``max_iterations * (nodes + 1)``; a rule set that keeps going raises PassError.
    ``verbose`` collects near misses into ``near_misses`` (and logs them).  ``veto``
    names rules not to apply.  ``regions`` also rewrites inside region graphs.  ``qdq``: whether
    the program holds QDQ nodes (:func:`holds_qdq`), found once and handed to the regions.
    """
    if qdq is None:
        qdq = holds_qdq(graph)
    d = _Driver(graph, rules, pass_name, verbose, max_iterations, veto, qdq)
    count = d.run()
    if verbose:
        for nm in d.near.values():
            log.info("%s", nm)
        if near_misses is not None:
            near_misses.extend(d.near.values())
    if regions:
        for n in graph.nodes:
            for r in n.regions:
                count += apply_rules(r, rules, max_iterations=max_iterations, verbose=verbose, pass_name=pass_name,
                                     near_misses=near_misses, veto=veto, qdq=qdq)
    return count


@dataclass(frozen=True)
class RulePass:
    """A pass made of rules: ``RulePass("simplify", RULES)(graph) -> changed``.

    ``veto`` (rule names) lets a target switch off rewrites its backend cannot use;
    ``verbose`` collects near misses into ``near_misses`` for "why not fused" reports.
    """

    name: str
    rules: tuple[Rule, ...] = field(repr=False)
    max_iterations: int = 8
    verbose: bool = False
    veto: frozenset[str] = frozenset()
    near_misses: list[NearMiss] = field(default_factory=list, compare=False, hash=False, repr=False)

    def __call__(self, graph: Graph) -> bool:
        self.near_misses.clear()
        return apply_rules(graph, self.rules, max_iterations=self.max_iterations, verbose=self.verbose,
                           pass_name=self.name, near_misses=self.near_misses, veto=self.veto) > 0

    @property
    def __name__(self) -> str:
        return self.name
