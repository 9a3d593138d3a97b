"""The PyTorch frontend: ``torch.export`` (default) or ``torch.fx`` graphs into the IR.

``capture_torch(model, example_inputs)`` exports the model with ``torch.export.export``
(non-strict, without the costly ``run_decompositions``) and maps each aten op to IR
ops with the rule table in the rule modules of this package
(registered in :mod:`accelir.frontends.torch.context`); composites
(linear, layer_norm, gelu, softmax, sdpa, conv, batch_norm) stay composites.
``method="fx"`` takes ``torch.fx.symbolic_trace`` of the model, or a GraphModule as
it is, and resolves its torch-level targets to the same rules
(:mod:`accelir.frontends.torch.fx`).

Shapes and dtypes come from each fx node's ``meta["val"]``; symbolic sizes become
symbolic dims named after the user's ``torch.export.Dim`` names.  Parameters and
buffers become named constants that share memory with the model's tensors.  The
model's input / output pytree specs are kept in ``graph.meta["signature"]``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

import torch
import torch.fx
import torch.utils._pytree as pytree

from ...errors import CaptureError, UnsupportedOpError
from ...ir import Graph
from . import complex_ops, creation, elementwise, indexing, linalg, nn, reduce, shape
from .context import RULES, add_inplace_variants, resolve_aten
from .converter import Converter, TorchSignature, bind_outputs, has_rule, is_python_op, target_name
from .fx import capture_fx

# the rule modules, by op family: importing them registers their rules in RULES; then the in-place variants
RULE_MODULES = (complex_ops, creation, elementwise, indexing, linalg, nn, reduce, shape)
add_inplace_variants()


__all__ = ["capture_torch", "unsupported_ops"]


def unsupported_ops(gm: torch.fx.GraphModule) -> list[str]:
    """The names of the aten ops in an exported graph module that have no rule."""
    names = []
    for node in gm.graph.nodes:
        if node.op == "call_function":
            name, _, _ = resolve_aten(node)
            if not is_python_op(node) and not has_rule(name, RULES):
                names.append(name or target_name(node))
    return list(dict.fromkeys(names))


# ----- torch.export path -------------------------------------------------------------

def _dim_names(model: torch.nn.Module, args: tuple, kwargs: dict, dynamic_shapes: Any,
               ep: torch.export.ExportedProgram) -> dict[str, str]:
    """Map export's symbols (s0, s43, ...) to the names of the user's torch.export.Dim objects."""
    if dynamic_shapes is None:
        return {}
    try:
        bound = inspect.signature(model.forward).bind(*args, **kwargs)
        combined = dict(bound.arguments)
    except (TypeError, ValueError):
        combined = {f"arg{i}": a for i, a in enumerate(args)} | dict(kwargs)
    if isinstance(dynamic_shapes, Mapping):
        specs = [(combined[k], dynamic_shapes[k]) for k in dynamic_shapes if k in combined]
    else:
        specs = list(zip(list(combined.values()), dynamic_shapes))
    by_tensor: dict[int, Any] = {}

    def walk(value: Any, spec: Any) -> None:
        if spec is None:
            return
        if isinstance(value, torch.Tensor):
            by_tensor[id(value)] = spec
        elif isinstance(value, (list, tuple)) and isinstance(spec, (list, tuple)):
            for v, s in zip(value, spec):
                walk(v, s)
        elif isinstance(value, Mapping) and isinstance(spec, Mapping):
            for k in spec:
                if k in value:
                    walk(value[k], spec[k])

    for value, spec in specs:
        walk(value, spec)
    leaves = pytree.tree_leaves((args, _reorder_kwargs(kwargs, ep.call_spec.in_spec)))
    user = [s for s in ep.graph_signature.input_specs if s.kind == torch.export.graph_signature.InputKind.USER_INPUT]
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    names: dict[str, str] = {}
    for leaf, spec in zip(leaves, user):
        per_dim = by_tensor.get(id(leaf))
        node = placeholders.get(getattr(spec.arg, "name", None))
        if per_dim is None or node is None or not isinstance(node.meta.get("val"), torch.Tensor):
            continue
        items = per_dim.items() if isinstance(per_dim, Mapping) else enumerate(per_dim)
        for i, dim in items:
            size = node.meta["val"].shape[i]
            name = getattr(dim, "__name__", None)
            if name and isinstance(size, torch.SymInt) and size.node.expr.is_Symbol:
                names[size.node.expr.name] = name
    return names


def _kwarg_names(in_spec: pytree.TreeSpec) -> tuple[str, ...]:
    """The keyword names of an ``(args, kwargs)`` spec, in the order it flattens them."""
    return tuple(in_spec.child(1).context or ()) if in_spec.num_children == 2 else ()


def _reorder_kwargs(kwargs: dict, in_spec: pytree.TreeSpec) -> dict:
    keys = _kwarg_names(in_spec)
    ordered = {k: kwargs[k] for k in keys if k in kwargs}
    ordered.update({k: v for k, v in kwargs.items() if k not in ordered})
    return ordered


def _export(model: torch.nn.Module, args: tuple, kwargs: dict, dynamic_shapes: Any,
            strict: bool | None, export_options: Mapping[str, Any] | None = None) -> Any:
    """torch.export, non-strict first then strict; a failure of both becomes one clear CaptureError."""
    errors: list[tuple[str, Exception]] = []
    for mode in ((False, True) if strict is None else (strict,)):
        try:
            return torch.export.export(model, args, kwargs, dynamic_shapes=dynamic_shapes, strict=mode,
                                       **dict(export_options or {}))
        except Exception as e:  # torch raises many unrelated types here
            errors.append(("strict" if mode else "non-strict", e))
    text = " ".join(f"{type(e).__name__} {e}" for _, e in errors)
    hint = "Rewrite the failing code path, or try method='fx'."
    if "Cache" in text:
        hint = ("transformers models that return a key/value cache need use_cache=False "
                "(in the config or as a call argument). " + hint)
    tried = "; ".join(f"{mode}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                      for mode, e in errors)
    raise CaptureError(f"torch.export could not capture {type(model).__name__} ({tried}). {hint}") from errors[-1][1]


def _capture_export(model: torch.nn.Module, args: tuple, kwargs: dict, dynamic_shapes: Any,
                    strict: bool | None, export_options: Mapping[str, Any] | None = None) -> Graph:
    from torch.export.graph_signature import InputKind, OutputKind, TensorArgument

    ep = _export(model, args, kwargs, dynamic_shapes, strict, export_options)
    sig = ep.graph_signature
    mutated = [s for s in sig.output_specs if s.kind not in (OutputKind.USER_OUTPUT,)]
    if mutated:
        what = ", ".join(f"{s.kind.name.lower()} of {s.target}" for s in mutated)
        raise UnsupportedOpError(f"the model mutates state in forward ({what}); accelir captures pure inference "
                                 "graphs: call model.eval() and avoid in-place updates of inputs and buffers",
                                 [s.kind.name for s in mutated])
    conv = Converter(RULES, resolve_aten, _dim_names(model, args, kwargs, dynamic_shapes, ep))
    conv.check_supported(ep.graph_module)
    g = conv.graph
    inputs: list[Any] = []
    input_leaves: list[int] = []
    user_index = 0
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    for spec in sig.input_specs:
        node = placeholders[spec.arg.name] if hasattr(spec.arg, "name") else None
        if spec.kind == InputKind.USER_INPUT:
            if isinstance(spec.arg, TensorArgument) and node.meta["val"].is_complex():
                raise CaptureError(f"input {spec.arg.name!r} is a {node.meta['val'].dtype} tensor, and an accelir "
                                   "graph takes real tensors only: pass torch.view_as_real(x) and call "
                                   "torch.view_as_complex on it inside the model")
            if isinstance(spec.arg, TensorArgument):
                inputs.append(g.add_input(conv.tensor_type(node.meta["val"]), spec.arg.name))
                input_leaves.append(user_index)
            else:
                inputs.append(getattr(spec.arg, "value", None))
            user_index += 1
        elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            tensor = ep.state_dict[spec.target] if spec.target in ep.state_dict else ep.constants[spec.target]
            if isinstance(tensor, torch.Tensor) and not tensor.is_complex() and node is not None and node.users:
                tensor = conv.tensor_constant(tensor, spec.target, {"origin": f"state_dict[{spec.target!r}]"})
            inputs.append(tensor)
        else:
            raise UnsupportedOpError(f"export input kind {spec.kind.name} ({spec.target}) is not supported")
    outs = conv.run(ep.graph_module, inputs)
    results, slots = bind_outputs(conv, list(outs) if isinstance(outs, (list, tuple)) else [outs])
    g.set_outputs(results)
    conv.drop_unused_witnesses()
    kw_order = _kwarg_names(ep.call_spec.in_spec)
    g.meta["frontend"] = "torch"
    g.meta["signature"] = TorchSignature(ep.call_spec.in_spec, input_leaves, ep.call_spec.out_spec, slots, kw_order)
    return g


# ----- entry point -------------------------------------------------------------------

def _function_module(fn: Callable) -> torch.nn.Module:
    """A plain function on torch tensors as a module whose forward calls it: torch.export takes
    modules only.  The forward keeps the function's signature (so ``dynamic_shapes`` and keyword
    inputs name its parameters) and the class its name (so errors name the function); a bound
    method of a module keeps that module as a submodule, its parameters stay parameters."""
    def forward(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    try:
        sig = inspect.signature(fn)
        this = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
        forward.__signature__ = sig.replace(parameters=[this, *sig.parameters.values()])  # type: ignore[attr-defined]
    except (TypeError, ValueError):  # builtins without a python signature take (*args, **kwargs)
        pass
    module = type(getattr(fn, "__name__", type(fn).__name__), (torch.nn.Module,), {"forward": forward})()
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, torch.nn.Module):
        module.owner = owner
    return module


def capture_torch(model: Any, example_inputs: Any = (), dynamic_shapes: Any = None, method: str = "export",
                  example_kwargs: Mapping[str, Any] | None = None, *, strict: bool | None = None,
                  export_options: Mapping[str, Any] | None = None) -> Graph:
    """Capture a torch model (a module, or a plain function on torch tensors) as an accelir Graph.

    ``example_inputs`` is a tuple of positional arguments (a single tensor is taken as
    one argument); ``dynamic_shapes`` is torch.export's form, e.g.
    ``{"input_ids": {0: Dim("batch"), 1: Dim("seq")}}``.  ``method="fx"`` traces with
    ``torch.fx.symbolic_trace`` (static shapes) or takes a ``GraphModule`` as it is.
    The model is not mutated and stays in the train / eval mode it was in.
    ``export_options`` go to ``torch.export.export`` as they are (e.g.
    ``prefer_deferred_runtime_asserts_over_guards``).
    """
    args = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    kwargs = dict(example_kwargs or {})
    if method == "export":
        if not isinstance(model, torch.nn.Module):
            if not callable(model):
                raise TypeError(f"method='export' needs a torch.nn.Module or a function, got {type(model).__name__}")
            model = _function_module(model)
        with torch.no_grad():
            return _capture_export(model, args, kwargs, dynamic_shapes, strict, export_options)
    if method == "fx":
        if dynamic_shapes is not None:
            raise ValueError("method='fx' captures static shapes; use method='export' for dynamic_shapes")
        with torch.no_grad():
            return capture_fx(model, args, kwargs)
    raise ValueError(f"method must be 'export' or 'fx', got {method!r}")
