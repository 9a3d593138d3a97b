"""The reference interpreter: runs a Graph on numpy arrays with each op's reference.

It is the oracle for constant folding and per-pass numeric checks, so it checks as
it goes: input dtypes and shapes against the graph's signature (binding symbolic
dims), and every node's results against the node's declared type.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from . import dims as D
from .arrays import to_numpy
from .errors import AccelirError
from .ir import Graph, Node, TensorType, Value
from .ops import control, registry

__all__ = ["run_graph", "interpret", "bind_symbols", "bind_shapes", "InterpreterError"]


class InterpreterError(AccelirError):
    """A node failed or produced a result that disagrees with its declared type."""


def bind_symbols(types: Sequence[TensorType], arrays: Sequence[np.ndarray], what: str = "input",
                 bindings: dict[str, int] | None = None, names: Sequence[str | None] | None = None) -> dict[str, int]:
    """Check arrays' dtypes and shapes against types and return the values of symbolic dims."""
    for i, (t, a) in enumerate(zip(types, arrays)):
        if a.dtype != t.dtype.numpy:
            label = f"{what} {i}" + (f" ({names[i]})" if names and names[i] else "")
            raise InterpreterError(f"{label}: expected dtype {t.dtype}, got {a.dtype}")
    return bind_shapes(types, [tuple(a.shape) for a in arrays], what, bindings, names)


def bind_shapes(types: Sequence[TensorType], shapes: Sequence[tuple[int, ...]], what: str = "input",
                bindings: dict[str, int] | None = None, names: Sequence[str | None] | None = None) -> dict[str, int]:
    """Check concrete shapes against types and return the values of symbolic dims."""
    b = dict(bindings or {})
    pending: list[tuple[int, int, Any, int]] = []
    for i, (t, shape) in enumerate(zip(types, shapes)):
        label = f"{what} {i}" + (f" ({names[i]})" if names and names[i] else "")
        if len(shape) != t.rank:
            raise InterpreterError(f"{label}: expected rank {t.rank} ({t}), got shape {tuple(shape)}")
        for k, (d, n) in enumerate(zip(t.shape, shape)):
            if type(d) is int:
                if d != n:
                    raise InterpreterError(f"{label}: dim {k} is {n}, the graph was captured with {d} ({t}); "
                                           "declare it dynamic to vary it")
            elif d.isidentifier():
                if d in b and b[d] != n:
                    raise InterpreterError(f"{label}: dim {k} ({d}) is {n}, but {d} = {b[d]} elsewhere")
                b[d] = int(n)
            else:
                pending.append((i, k, d, int(n)))
    progress = True
    while progress:
        progress = False
        for i, k, d, n in pending:
            found = D.solve(d, n, b)
            if found is not None and found[0] not in b:
                b[found[0]] = found[1]
                progress = True
    for i, k, d, n in pending:
        try:
            want = D.evaluate(d, b)
        except KeyError:
            continue
        if want != n:
            raise InterpreterError(f"{what} {i}: dim {k} ({d}) should be {want}, got {n}")
    return b


def _resolve_attrs(opdef: registry.OpDef, attrs: Mapping[str, Any], bindings: Mapping[str, int]) -> dict:
    out = dict(attrs)
    for k, spec in opdef.attrs.items():
        if spec.kind == "dims":
            v = out[k]
            if any(type(d) is not int for d in v):
                out[k] = tuple(D.evaluate(d, bindings) for d in v)
    return out


def _last_uses(graph: Graph) -> dict[int, list[Value]]:
    """For each node position, the values whose last reader it is (so they can be freed)."""
    last: dict[int, int] = {}
    for pos, node in enumerate(graph.nodes):
        for v in node.inputs:
            last[id(v)] = pos
    keep = {id(v) for v in graph.outputs}
    out: dict[int, list[Value]] = {}
    values: dict[int, Value] = {}
    for node in graph.nodes:
        for v in node.inputs:
            values[id(v)] = v
    for vid, pos in last.items():
        if vid not in keep:
            out.setdefault(pos, []).append(values[vid])
    return out


def run_graph(graph: Graph, inputs: Sequence[Any], *, bindings: Mapping[str, int] | None = None,
              observer: Callable[[Node, list[np.ndarray]], None] | None = None) -> list[np.ndarray]:
    """Run ``graph`` on ``inputs`` and return its outputs as numpy arrays."""
    arrays = [to_numpy(x) for x in inputs]
    if len(arrays) != len(graph.inputs):
        raise InterpreterError(f"graph {graph.name!r} takes {len(graph.inputs)} inputs, got {len(arrays)}")
    b = bind_symbols([v.type for v in graph.inputs], arrays, bindings=dict(bindings or {}),
                     names=[v.name for v in graph.inputs])
    env: dict[int, np.ndarray] = {id(v): a for v, a in zip(graph.inputs, arrays)}
    frees = _last_uses(graph)
    for pos, node in enumerate(graph.nodes):
        if node.op == "constant":
            name = node.attrs["name"]
            if name not in graph.constants:
                raise InterpreterError(f"constant {name!r} has no value in graph {graph.name!r}")
            results = [graph.constants[name]]
            opdef = None
        else:
            opdef = registry.get(node.op)
            try:
                args = [env[id(v)] for v in node.inputs]
            except KeyError:
                raise InterpreterError(f"{node.describe()} reads a value that is not defined before it") from None
            attrs = _resolve_attrs(opdef, node.attrs, b)
            try:
                results = opdef.reference(args, attrs, node.regions)
            except AccelirError:
                raise
            except Exception as e:
                raise InterpreterError(f"{node.describe()} failed in the reference: {type(e).__name__}: {e}") from e
        if len(results) != len(node.outputs):
            raise InterpreterError(f"{node.describe()}: reference gave {len(results)} results")
        for v, r in zip(node.outputs, results):
            r = np.asarray(r)
            want = v.type
            if r.dtype != want.dtype.numpy:
                raise InterpreterError(f"{node.describe()}: reference gave dtype {r.dtype}, node says {want.dtype}")
            if r.ndim != want.rank or any(type(d) is int and d != n for d, n in zip(want.shape, r.shape)):
                raise InterpreterError(f"{node.describe()}: reference gave shape {tuple(r.shape)}, node says {want}")
            env[id(v)] = r
        if opdef is not None and opdef.unbacked is not None:  # the data decided these dims: bind them
            b = bind_shapes([v.type for v in node.outputs], [env[id(v)].shape for v in node.outputs],
                            f"{node.describe()} output", b)
        if observer is not None:
            observer(node, [env[id(v)] for v in node.outputs])
        for v in frees.get(pos, ()):
            env.pop(id(v), None)
    try:
        return [env[id(v)] for v in graph.outputs]
    except KeyError:
        raise InterpreterError(f"graph {graph.name!r} returns a value that no node defines") from None


def interpret(graph: Graph, *inputs: Any) -> list[np.ndarray]:
    """Run ``graph`` on numpy, torch or jax arrays; returns numpy arrays."""
    return run_graph(graph, list(inputs))


control.set_region_runner(run_graph)  # the region ops' references run their regions here
