"""The torch.fx path of the PyTorch frontend.

``torch.fx.symbolic_trace`` graphs call torch-level targets: functions
(``torch.relu``, ``F.linear``, ``operator.add``), tensor methods (``x.view``) and
leaf modules (``nn.Linear``).  Each is resolved here to an aten op name and its
arguments by schema name, so the aten rule table does the mapping.  Shapes and
dtypes come from running the graph once on the example inputs (fx graphs carry
no shape metadata), which also makes the captured shapes static.
"""

from __future__ import annotations

import inspect
import operator
from typing import Any, Callable, Mapping

import torch
import torch.fx
import torch.nn as nn
import torch.utils._pytree as pytree

from ...errors import AccelirError, CaptureError, UnsupportedOpError
from ...ir import DType, Graph, Value
from .context import RULES, NodeContext, bind_schema, resolve_aten, slice_bounds
from .converter import Converter, TorchSignature, bind_outputs

__all__ = ["capture_fx", "fx_converter", "MODULES"]

# python operators on tensors -> aten op
_OPERATORS: dict[Callable, str] = {
    operator.add: "add", operator.iadd: "add", operator.sub: "sub", operator.isub: "sub", operator.mul: "mul",
    operator.imul: "mul", operator.truediv: "div", operator.itruediv: "div", operator.floordiv: "floor_divide",
    operator.mod: "remainder", operator.pow: "pow", operator.matmul: "matmul", operator.neg: "neg",
    operator.invert: "bitwise_not", operator.and_: "bitwise_and", operator.or_: "bitwise_or",
    operator.xor: "bitwise_xor", operator.eq: "eq", operator.ne: "ne", operator.lt: "lt", operator.le: "le",
    operator.gt: "gt", operator.ge: "ge", operator.abs: "abs", operator.pos: "positive",
}
# python functions whose aten op differs in name or argument order
_FUNCTIONS: dict[Any, Callable[..., tuple[str, dict]]] = {
    nn.functional.embedding: lambda input, weight, *r, **k: ("embedding", {"weight": weight, "indices": input}),
    nn.functional.batch_norm: lambda input, running_mean, running_var, weight=None, bias=None, training=False,
    momentum=0.1, eps=1e-5: ("batch_norm", {"input": input, "weight": weight, "bias": bias,
                                            "running_mean": running_mean, "running_var": running_var,
                                            "training": training, "eps": eps}),
    nn.functional.dropout: lambda input, p=0.5, training=True, inplace=False: (
        ("dropout_", {"self": input, "p": p, "train": training}) if inplace
        else ("dropout", {"input": input, "p": p, "train": training})),
    nn.functional.softmax: lambda input, dim=None, _stacklevel=3, dtype=None: (
        "softmax", {"self": input, "dim": dim, "dtype": dtype}),
    nn.functional.log_softmax: lambda input, dim=None, _stacklevel=3, dtype=None: (
        "log_softmax", {"self": input, "dim": dim, "dtype": dtype}),
    torch.flatten: lambda input, start_dim=0, end_dim=-1: ("flatten", {"self": input}),
    torch.meshgrid: lambda *tensors, indexing=None: ("meshgrid", {
        "tensors": list(tensors[0] if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)) else tensors),
        "indexing": indexing}),
    torch.norm: lambda input, p="fro", dim=None, keepdim=False, out=None, dtype=None: (
        "norm", {"self": input, "p": p, "dim": dim, "keepdim": keepdim}),
}
# tensor methods that cast (x.float(), x.long()): _to_copy, whose result type is the node's recorded value's
_CASTS = frozenset({"float", "double", "half", "bfloat16", "int", "long", "bool", "short", "char", "byte"})
# tensor methods that take the arguments of a python function in _FUNCTIONS
_METHOD_FUNCTIONS = {"norm": torch.norm}
_VARARG_METHODS = {"view": "size", "reshape": "shape", "permute": "dims", "expand": "size", "repeat": "repeats",
                   "tile": "dims", "flip": "dims"}


def _pool_args(m: nn.Module, x: Any, kind: str) -> dict:
    a = {"self": x, "kernel_size": m.kernel_size, "stride": m.stride or m.kernel_size, "padding": m.padding,
         "ceil_mode": m.ceil_mode}
    if kind == "max":
        if m.return_indices:
            raise UnsupportedOpError(f"{type(m).__name__}(return_indices=True) is not supported")
        a["dilation"] = m.dilation
    else:
        a["count_include_pad"] = m.count_include_pad
        a["divisor_override"] = getattr(m, "divisor_override", None)
    return a


def _conv_args(m: nn.Module, x: Any) -> dict:
    if m.padding_mode != "zeros":
        raise UnsupportedOpError(f"{type(m).__name__} with padding_mode={m.padding_mode!r} is not supported")
    return {"input": x, "weight": m.weight, "bias": m.bias, "stride": m.stride, "padding": m.padding,
            "dilation": m.dilation, "groups": m.groups, "transposed": isinstance(m, nn.modules.conv._ConvTransposeNd),
            "output_padding": getattr(m, "output_padding", 0)}


def _norm_args(m: nn.Module, x: Any) -> dict:
    return {"input": x, "weight": m.weight, "bias": m.bias, "running_mean": m.running_mean,
            "running_var": m.running_var, "training": m.training or not m.track_running_stats, "eps": m.eps}


# leaf module type -> (aten op name, arguments from the module and its input)
MODULES: dict[type, Callable[[nn.Module, Any], tuple[str, dict]]] = {
    nn.Linear: lambda m, x: ("linear", {"input": x, "weight": m.weight, "bias": m.bias}),
    nn.Conv1d: lambda m, x: ("convolution", _conv_args(m, x)),
    nn.Conv2d: lambda m, x: ("convolution", _conv_args(m, x)),
    nn.Conv3d: lambda m, x: ("convolution", _conv_args(m, x)),
    nn.ConvTranspose1d: lambda m, x: ("convolution", _conv_args(m, x)),
    nn.ConvTranspose2d: lambda m, x: ("convolution", _conv_args(m, x)),
    nn.ConvTranspose3d: lambda m, x: ("convolution", _conv_args(m, x)),
    nn.BatchNorm1d: lambda m, x: ("batch_norm", _norm_args(m, x)),
    nn.BatchNorm2d: lambda m, x: ("batch_norm", _norm_args(m, x)),
    nn.BatchNorm3d: lambda m, x: ("batch_norm", _norm_args(m, x)),
    nn.LayerNorm: lambda m, x: ("layer_norm", {"input": x, "normalized_shape": m.normalized_shape,
                                               "weight": m.weight, "bias": m.bias, "eps": m.eps}),
    nn.GroupNorm: lambda m, x: ("group_norm", {"input": x, "num_groups": m.num_groups, "weight": m.weight,
                                               "bias": m.bias, "eps": m.eps}),
    nn.Embedding: lambda m, x: ("embedding", {"weight": m.weight, "indices": x}),
    nn.ReLU: lambda m, x: ("relu", {"self": x}),
    nn.ReLU6: lambda m, x: ("relu6", {"self": x}),
    nn.GELU: lambda m, x: ("gelu", {"self": x, "approximate": m.approximate}),
    nn.SiLU: lambda m, x: ("silu", {"self": x}),
    nn.Sigmoid: lambda m, x: ("sigmoid", {"self": x}),
    nn.Tanh: lambda m, x: ("tanh", {"self": x}),
    nn.Mish: lambda m, x: ("mish", {"self": x}),
    nn.Hardswish: lambda m, x: ("hardswish", {"self": x}),
    nn.Hardsigmoid: lambda m, x: ("hardsigmoid", {"self": x}),
    nn.Hardtanh: lambda m, x: ("hardtanh", {"self": x, "min_val": m.min_val, "max_val": m.max_val}),
    nn.LeakyReLU: lambda m, x: ("leaky_relu", {"self": x, "negative_slope": m.negative_slope}),
    nn.ELU: lambda m, x: ("elu", {"self": x, "alpha": m.alpha, "scale": 1.0, "input_scale": 1.0}),
    nn.Softplus: lambda m, x: ("softplus", {"self": x, "beta": m.beta, "threshold": m.threshold}),
    nn.Softmax: lambda m, x: ("softmax", {"self": x, "dim": m.dim}),
    nn.LogSoftmax: lambda m, x: ("log_softmax", {"self": x, "dim": m.dim}),
    nn.Dropout: lambda m, x: ("dropout", {"input": x, "p": m.p, "train": m.training}),
    nn.Dropout1d: lambda m, x: ("dropout", {"input": x, "p": m.p, "train": m.training}),
    nn.Dropout2d: lambda m, x: ("dropout", {"input": x, "p": m.p, "train": m.training}),
    nn.Identity: lambda m, x: ("alias", {"self": x}),
    nn.Flatten: lambda m, x: ("flatten", {"self": x}),
    nn.Unflatten: lambda m, x: ("unflatten", {"self": x}),
    nn.MaxPool1d: lambda m, x: ("max_pool1d", _pool_args(m, x, "max")),
    nn.MaxPool2d: lambda m, x: ("max_pool2d", _pool_args(m, x, "max")),
    nn.MaxPool3d: lambda m, x: ("max_pool3d", _pool_args(m, x, "max")),
    nn.AvgPool1d: lambda m, x: ("avg_pool1d", _pool_args(m, x, "avg")),
    nn.AvgPool2d: lambda m, x: ("avg_pool2d", _pool_args(m, x, "avg")),
    nn.AvgPool3d: lambda m, x: ("avg_pool3d", _pool_args(m, x, "avg")),
    nn.AdaptiveAvgPool1d: lambda m, x: ("adaptive_avg_pool1d", {"self": x, "output_size": m.output_size}),
    nn.AdaptiveAvgPool2d: lambda m, x: ("adaptive_avg_pool2d", {"self": x, "output_size": m.output_size}),
    nn.AdaptiveAvgPool3d: lambda m, x: ("adaptive_avg_pool3d", {"self": x, "output_size": m.output_size}),
}


def _is_tensor(vals: Mapping[torch.fx.Node, Any], arg: Any) -> bool:
    if isinstance(arg, torch.fx.Node):
        return isinstance(vals.get(arg), torch.Tensor)
    return isinstance(arg, torch.Tensor)


def _fits(schema: torch.FunctionSchema, args: tuple, kwargs: dict, vals: Mapping) -> dict | None:
    """Bind args to ``schema`` when each tensor / non-tensor argument lands in a slot of that kind."""
    params = schema.arguments
    positional = [p for p in params if not p.kwarg_only]
    if len(args) > len(positional):
        return None
    names = {p.name for p in params}
    if any(k not in names for k in kwargs):
        return None
    bound = {p.name: v for p, v in zip(positional, args)} | dict(kwargs)
    for p in params:
        if p.name not in bound:
            if not p.has_default_value():
                return None
            continue
        v = bound[p.name]
        optional, base = _slot_type(p.type)
        wants_tensor = isinstance(base, torch._C.TensorType)
        if wants_tensor != _is_tensor(vals, v) and not (optional and v is None):
            return None
        if (isinstance(base, torch._C.ListType) and isinstance(base.getElementType(), torch._C.TensorType)
                and not (isinstance(v, (list, tuple)) and all(_is_tensor(vals, t) for t in v))):
            return None
    return bound


def _slot_type(t: Any) -> tuple[bool, Any]:
    """(optional, the type inside) of a schema argument's type; torch spells Tensor? as
    Optional[Tensor] and Tensor[] as List[Tensor] in str(), so the type objects are read."""
    if isinstance(t, torch._C.OptionalType):
        return True, t.getElementType()
    return False, t


def _aten_call(name: str, args: tuple, kwargs: dict, vals: Mapping) -> tuple[str | None, Any, dict]:
    """Pick the aten overload of ``name`` that these torch-level arguments fit."""
    packet = getattr(torch.ops.aten, name, None)
    if packet is None:
        return None, None, {}
    # torch's python API calls the first tensor 'input'; aten schemas call it 'self'
    for overload in packet.overloads():
        op = getattr(packet, overload)
        kw = dict(kwargs)
        if "input" in kw and "input" not in {p.name for p in op._schema.arguments}:
            kw["self"] = kw.pop("input")
        if kw.get("return_indices"):  # F.max_pool2d(..., return_indices=True) is another op
            return None, None, {}
        kw = {k: v for k, v in kw.items() if k not in ("inplace", "out", "return_indices")}
        bound = _fits(op._schema, args, kw, vals)
        if bound is not None:
            return name, op, bind_schema(op, (), bound)
    return None, None, {}


def _literals(arg: Any, vals: Mapping) -> Any:
    """Arguments with each fx node whose result is a python number replaced by that number
    (an eps read with ``.item()``): rules take numbers as python values, as export passes them."""
    if isinstance(arg, torch.fx.Node):
        v = vals.get(arg)
        return v if isinstance(v, (bool, int, float)) else arg
    if isinstance(arg, (list, tuple)):
        return type(arg)(_literals(a, vals) for a in arg)
    return arg


def _resolver(gm: torch.fx.GraphModule, vals: Mapping) -> Callable[[torch.fx.Node], tuple]:
    def resolve(node: torch.fx.Node) -> tuple[str | None, Any, dict]:
        name, target, args = resolve_node(node)
        return name, target, {k: _literals(v, vals) for k, v in args.items()}

    def resolve_node(node: torch.fx.Node) -> tuple[str | None, Any, dict]:
        t, args, kwargs = node.target, tuple(node.args), dict(node.kwargs)
        if node.op == "call_module":
            mod = gm.get_submodule(t)
            fn = MODULES.get(type(mod))
            if fn is None:
                return f"{type(mod).__module__}.{type(mod).__name__}", mod, {}
            name, a = fn(mod, args[0])
            return name, mod, a
        if node.op == "call_method":
            if t in _CASTS:
                return "_to_copy", t, {"self": args[0]}
            if t in _METHOD_FUNCTIONS:
                name, a = _FUNCTIONS[_METHOD_FUNCTIONS[t]](*args, **kwargs)
                return name, t, a
            if t in ("to", "type", "type_as", "contiguous", "clone", "detach", "cpu", "cuda"):
                return "_to_copy", t, {"self": args[0]}
            if t in _VARARG_METHODS and len(args) > 1 and not isinstance(args[1], (list, tuple, torch.Size)):
                args = (args[0], list(args[1:]))
            return _aten_call(t, args, kwargs, vals)
        if isinstance(t, torch._ops.OpOverload):
            return resolve_aten(node)
        if isinstance(t, torch._ops.OpOverloadPacket):
            return _aten_call(t._qualified_op_name.split("::")[1], args, kwargs, vals)
        if t is operator.getitem and _is_tensor(vals, args[0]):
            return "tensor_getitem", t, {"self": args[0], "index": args[1]}
        if t in _OPERATORS and any(_is_tensor(vals, a) for a in args):
            # the aten rules take python scalars on either side, so bind by position
            a = {"self": args[0]} if len(args) == 1 else {"self": args[0], "other": args[1]}
            return _OPERATORS[t], t, a
        if t is getattr and args[1] in ("real", "imag") and _is_tensor(vals, args[0]):
            return args[1], t, {"self": args[0]}  # x.real / x.imag: attributes that are ops
        if t in _FUNCTIONS:
            name, a = _FUNCTIONS[t](*args, **kwargs)
            return name, t, a
        name = getattr(t, "__name__", None)
        if name and callable(t):
            # F.max_pool2d and friends are dispatchers named after their private variant
            public = name.lstrip("_")
            return _aten_call(public if hasattr(torch.ops.aten, public) else name, args, kwargs, vals)
        return None, t, {}
    return resolve


def _getitem(ctx: NodeContext, a: dict) -> Value:
    """x[...] with ints, slices, None, Ellipsis and at most one index tensor."""
    x = ctx.value(a["self"])
    index = a["index"] if isinstance(a["index"], tuple) else (a["index"],)
    real = sum(1 for i in index if i is not None and i is not Ellipsis)
    items: list[Any] = []
    for i in index:
        items.extend([slice(None)] * (x.rank - real) if i is Ellipsis else [i])
    tensors = [isinstance(i, torch.fx.Node) and ctx.is_tensor(i) for i in items]
    if sum(tensors) > 1:
        if not all(t or i == slice(None) for t, i in zip(tensors, items)):
            raise ctx.unsupported("indexing with several index tensors mixed with numbers, slices or None is not "
                                  "supported on the fx path")
        return RULES["index"](ctx, {"self": a["self"], "indices": [i if t else None for t, i in zip(tensors, items)]})
    dim = 0
    for i in items:
        if i is None:
            x = ctx.b.op("unsqueeze", x, axes=(dim,))
            dim += 1
        elif isinstance(i, slice):
            step = ctx.scalar_of(i.step) if i.step is not None else 1
            lo, hi = slice_bounds(x.shape[dim], ctx.scalar_of(i.start), ctx.scalar_of(i.stop), step)
            if (lo, hi, step) != (0, x.shape[dim], 1):
                x = ctx.b.op("slice", x, starts=(lo,), stops=(hi,), steps=(step,), axes=(dim,))
            dim += 1
        elif ctx.is_tensor(i):
            idx = ctx.value(i)
            x = ctx.b.op("gather", x, idx, axis=dim)
            dim += idx.rank
        else:
            x = ctx.b.op("gather", x, ctx.const(ctx.scalar_of(i), DType.i64), axis=dim)
    return x


def _record_values(gm: torch.fx.GraphModule, inputs: list) -> dict[torch.fx.Node, Any]:
    """Run ``gm`` once and keep each node's result (its shape and dtype source)."""
    vals: dict[torch.fx.Node, Any] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            out = super().run_node(n)
            vals[n] = out
            return out

    with torch.no_grad():
        Recorder(gm).run(*inputs)
    return vals


def _symbolic_trace(model: Any) -> torch.fx.GraphModule:
    """torch.fx.symbolic_trace; a tracing failure (fx's TraceError, or whatever the model's python
    raises on a Proxy) becomes one CaptureError naming the model and the way out."""
    try:
        return torch.fx.symbolic_trace(model)
    except AccelirError:
        raise
    except Exception as e:  # the model's own code runs on proxies here and may raise anything
        what = getattr(model, "__name__", None) or type(model).__name__
        text = (str(e).strip().splitlines() or [""])[0]
        raise CaptureError(f"torch.fx could not trace {what} ({type(e).__name__}: {text}). fx runs forward on "
                           "placeholders, which cannot steer python control flow nor take item assignment: "
                           "rewrite that code path with tensor ops (torch.where, torch.cond, index_put) or use "
                           "method='export' where it captures the model.") from e


def fx_converter(gm: torch.fx.GraphModule, vals: dict[torch.fx.Node, Any]) -> Converter:
    """A Converter for a graph of torch-level targets whose node results (real or fake tensors,
    sizes) are ``vals``; raises one UnsupportedOpError listing the ops that have no rule."""
    conv = Converter({**RULES, "tensor_getitem": _getitem}, None, {})  # the aten rules plus fx's getitem
    conv.vals = vals
    conv.resolve = _resolver(gm, conv.vals)
    for name, t in list(gm.named_parameters()) + list(gm.named_buffers()):
        conv.tensor_names.setdefault(id(t), name)
    conv.check_supported(gm)
    return conv


def capture_fx(model: Any, args: tuple, kwargs: dict) -> Graph:
    """Capture ``model`` (a GraphModule, or a module that torch.fx.symbolic_trace traces) with static shapes."""
    gm = model if isinstance(model, torch.fx.GraphModule) else _symbolic_trace(model)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    params = list(inspect.signature(gm.forward).parameters.values())
    bound = inspect.signature(gm.forward).bind(*args, **kwargs)
    bound.apply_defaults()
    inputs = [bound.arguments.get(p.name) for p in params[:len(placeholders)]]
    leaves, in_spec = pytree.tree_flatten((tuple(args), dict(kwargs)))
    leaf_index = {id(v): i for i, v in enumerate(leaves)}

    conv = fx_converter(gm, _record_values(gm, inputs))
    g = conv.graph
    bound_inputs, input_leaves = [], []
    for p, v in zip(placeholders, inputs):
        if isinstance(v, torch.Tensor):
            if id(v) not in leaf_index:
                raise UnsupportedOpError(f"input {p.name} is not a tensor leaf of the example inputs")
            bound_inputs.append(g.add_input(conv.tensor_type(v), p.name))
            input_leaves.append(leaf_index[id(v)])
        else:
            bound_inputs.append(v)
    out = conv.run(gm, bound_inputs)
    out_leaves, out_spec = pytree.tree_flatten(out)
    results, slots = bind_outputs(conv, out_leaves)
    g.set_outputs(results)
    g.meta["frontend"] = "torch"
    g.meta["signature"] = TorchSignature(in_spec, input_leaves, out_spec, slots, tuple(kwargs))
    return g
