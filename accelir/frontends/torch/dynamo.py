"""Capture of the graphs TorchDynamo (``torch.compile``) hands a backend.

Dynamo's ``GraphModule`` calls torch-level targets, like a ``torch.fx.symbolic_trace``
graph, so the fx path's resolver and rules map it (:func:`fx_converter`).  What differs:

- every node already carries its result in ``meta["example_value"]``, a fake tensor whose
  sizes are SymInts where Dynamo made a dim dynamic (``dynamic=True``, ``mark_dynamic``,
  automatic dynamic on a recompile); those become symbolic dims of the IR, so one
  compiled graph serves every size Dynamo's guards let through;
- parameters, buffers and module attributes arrive as placeholders (Dynamo lifts them
  from inlined modules); they become named constants, read once when the graph
  compiles, as inductor does when it freezes weights;
- placeholders of symbolic sizes (``s0: SymInt``) are not inputs of the IR graph: their
  values are the sizes of the tensor inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.fx
import torch.utils._pytree as pytree

from ... import dims as D
from ...errors import UnsupportedOpError
from ...ir import Graph
from .converter import TorchSignature, bind_outputs
from .fx import fx_converter

__all__ = ["capture_dynamo", "DynamoCapture", "is_module_state"]


def is_module_state(node: torch.fx.Node, example: Any) -> bool:
    """Whether a placeholder holds a module's parameter, buffer or attribute (not a call's input)."""
    if isinstance(example, torch.nn.Parameter):
        return True
    source = getattr(node.meta.get("grapharg"), "source", None)
    if source is None:
        return False
    from torch._dynamo import source as S
    return (S.is_from_unspecialized_param_buffer_source(source) or S.is_from_unspecialized_nn_module_source(source)
            or S.is_from_unspecialized_builtin_nn_module_source(source))


def _node_values(gm: torch.fx.GraphModule, state: dict[torch.fx.Node, torch.Tensor]) -> dict[torch.fx.Node, Any]:
    """Each node's fake result from Dynamo's tracing (get_attr nodes: the attribute itself).

    A module's number attribute (eps, dropout p, an embedding's norm_type) or another python
    number comes in as a 0-d tensor in ``state`` read with ``.item()``; its value is that of
    the tensor, baked in with the weights, and so is each symbolic number computed from
    such values only (``math.sqrt(2 / math.pi)``)."""
    vals: dict[torch.fx.Node, Any] = {}
    known: dict[Any, Any] = {}  # sympy symbol of a baked number -> its value
    for n in gm.graph.nodes:
        fake = n.meta.get("example_value")
        if n.op == "call_method" and n.target == "item" and n.args[0] in state:
            vals[n] = state[n.args[0]].item()
            if isinstance(fake, (torch.SymFloat, torch.SymInt, torch.SymBool)) and fake.node.expr.is_Symbol:
                known[fake.node.expr] = vals[n]
        elif "example_value" in n.meta:
            vals[n] = _python_number(fake, known)
        elif n.op == "get_attr":
            obj: Any = gm
            for part in n.target.split("."):
                obj = getattr(obj, part)
            vals[n] = obj
    return vals


def _python_number(v: Any, known: dict[Any, Any]) -> Any:
    """A SymFloat / SymBool whose value is fixed (Dynamo specialised it, or it is computed
    from baked numbers only) as that python number; anything else as it is."""
    if not isinstance(v, (torch.SymFloat, torch.SymBool)):
        return v
    expr = v.node.expr
    if not expr.is_number and expr.free_symbols <= set(known):
        expr = expr.xreplace(known)
    if not expr.is_number:
        return v
    return float(expr) if isinstance(v, torch.SymFloat) else bool(expr)


@dataclass
class DynamoCapture:
    """A Dynamo graph in the IR: ``graph`` takes, in order, the GraphModule's arguments at
    ``inputs``; ``scalars`` holds, by argument index, the python numbers Dynamo passes as
    0-d tensors (a global float, a float argument) that the graph baked in: a call with
    another value must not run it."""

    graph: Graph
    inputs: list[int]
    scalars: dict[int, float | int | bool] = field(default_factory=dict)


def _is_python_scalar(p: torch.fx.Node) -> bool:
    """A python number Dynamo did not specialise and passes as a 0-d tensor, read with ``.item()``."""
    return bool(getattr(p.meta.get("grapharg"), "pass_arg_as_tensor", False))


def capture_dynamo(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> DynamoCapture:
    """Capture a Dynamo graph.  Module state and python numbers become constants; the tensor
    inputs become graph inputs (with symbolic dims where Dynamo's are); size arguments are
    read off the inputs' shapes.  The graph returns what the GraphModule returns (the flat
    tuple Dynamo expects)."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(example_inputs):
        raise UnsupportedOpError(f"the graph has {len(placeholders)} placeholders for {len(example_inputs)} inputs")
    state = {p: x for p, x in zip(placeholders, example_inputs) if isinstance(x, torch.Tensor)
             and (is_module_state(p, x) or _is_python_scalar(p))}
    conv = fx_converter(gm, _node_values(gm, state))
    g = conv.graph
    bound: list[Any] = []
    result = DynamoCapture(g, [])
    for i, (p, example) in enumerate(zip(placeholders, example_inputs)):
        fake = p.meta.get("example_value", example)
        if p in state:
            bound.append(conv.tensor_constant(example, _state_name(p), {"origin": p.name}))
            if not is_module_state(p, example):
                result.scalars[i] = example.item()
        elif isinstance(example, torch.Tensor):
            bound.append(g.add_input(conv.tensor_type(fake if isinstance(fake, torch.Tensor) else example), p.name))
            result.inputs.append(i)
        else:
            bound.append(conv.python(fake))
    _check_sizes_bound(g, bound, placeholders)
    out = conv.run(gm, bound)
    out_leaves, out_spec = pytree.tree_flatten(out)
    results, slots = bind_outputs(conv, out_leaves)
    g.set_outputs(results)
    g.meta["frontend"] = "torch"
    n = len(result.inputs)
    g.meta["signature"] = TorchSignature(pytree.tree_flatten((tuple(range(n)), {}))[1], list(range(n)), out_spec, slots)
    return result


def _state_name(p: torch.fx.Node) -> str:
    """A constant's name in state_dict form: L_self_modules_fc_parameters_weight_ -> fc.weight."""
    source = getattr(p.meta.get("grapharg"), "source", None)
    name = source.name if source is not None and isinstance(getattr(source, "name", None), str) else None
    if name is None and source is not None and callable(getattr(source, "name", None)):
        name = source.name()
    if not name:
        return p.name
    import re
    name = re.sub(r"^L\['[^']*'\]\.?", "", name)
    name = re.sub(r"\._(modules|parameters|buffers)\['([^']*)'\]", r".\2", "." + name).lstrip(".")
    return re.sub(r"[^A-Za-z0-9_.]", "_", name) or p.name


def _check_sizes_bound(g: Graph, bound: list[Any], placeholders: list[torch.fx.Node]) -> None:
    """A symbolic size the graph takes as a number must be a size of one of its tensor inputs:
    the IR binds symbols from input shapes only."""
    known = {s for v in g.inputs for d in v.shape for s in D.symbols(d)}
    for p, v in zip(placeholders, bound):
        if isinstance(v, str) and not D.symbols(v) <= known:
            raise UnsupportedOpError(f"the symbolic number {p.name} ({v}) is not the size of any tensor input: "
                                     "accelir binds symbolic sizes from input shapes")
