"""Sharding a graph over a ``jax.sharding.Mesh``: XLA's SPMD partitioner (GSPMD) does the work.

``optimize(model, inputs, backend="xla", mesh=mesh, sharding=...)`` lowers the graph as
for one device, then says how each weight and input is laid out over the mesh; GSPMD
propagates the layouts through the program and inserts the collectives.

- ``"data-parallel"``: weights replicated; every input split (and pinned in the program)
  on its first (batch) dim over the data axis.
- ``"fsdp"``: the batch split as above, and each weight split over the data axis on its
  first dim that the axis divides: XLA gathers a layer's weights where it uses them.
- ``"tensor-parallel"``: Megatron's layout, read off the graph: a ``linear`` (or
  ``matmul``) with a constant weight ``[K, N]`` whose input is not split is
  column-parallel (``N`` split over the model axis, its bias too), one whose input comes
  out of a column-parallel layer (through activations, attention, reshapes) is
  row-parallel (``K`` split; XLA all-reduces its output).  Norms start a new region.
  Each such linear's output is pinned to its layout (``with_sharding_constraint``:
  features split after a column-parallel one, whole after a row-parallel one).  The
  default pipeline then leaves q, k, v (and gate, up) unpacked (:func:`fit_pipeline`).
- ``{regex: PartitionSpec}``: a weight takes the spec of the first regex that
  ``re.search`` finds in its name; the others are replicated.  Names are the graph's
  constant names, the model's ``state_dict`` names where the passes kept the weight as
  it was; a weight the passes rewrote is named after its module, ``<module>.weight`` /
  ``<module>.bias`` (transposed), ``<module>.merged_weight`` (sibling projections packed
  into one, named after the first: q, k, v as ``q_proj.merged_weight``).  Specs apply to the weight as the graph holds
  it (``linear`` weights are ``[in, out]``).

The data axis is the mesh axis named "data" (or "batch", "dp", "fsdp"), else the first;
the model axis the one named "model" (or "tensor", "tp", "mp"), else the last.

Weights go straight to their shards (``jax.make_array_from_callback``: each device gets
its slice of the host array, which is the model's own memory, so no device holds a
full copy of a split weight and the host no copy beyond the model's); this also places
them on the local devices of each host under ``jax.distributed.initialize()``.  Calls
take numpy arrays, torch tensors or jax arrays: arrays not laid out on the mesh are
placed as the plan says, and outputs come back in the caller's framework (jax arrays
stay sharded as XLA left them).  Weights that the lowering bakes into the program (small
constants, convolution kernels) are replicated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from accelir.arrays import to_numpy, to_torch
from accelir.errors import AccelirError, InputError
from accelir.ir import Graph, Node

from .context import Lowering, constant_key, framework_of, from_jax_array, to_jax, x64_scope
from .layout import Permuted
from .runner import JaxModule, xla_compiler_options

__all__ = ["MODES", "ShardingPlan", "plan_sharding", "fit_pipeline", "ShardedJaxModule"]

MODES = ("data-parallel", "tensor-parallel", "fsdp")
_DATA_AXES = ("data", "batch", "dp", "fsdp")
_MODEL_AXES = ("model", "tensor", "tp", "mp")
# ops after which a value is whole again on every device (Megatron's region boundaries)
_REGION_ENDS = frozenset({"layer_norm", "skip_layer_norm", "rms_norm", "skip_rms_norm", "batch_norm", "gather"})


def fit_pipeline(passes: list, sharding: str | Mapping[str, Any]) -> list:
    """The default pipeline for a sharding mode: tensor-parallel leaves sibling projections
    unpacked (no ``fuse_parallel_linear``), so q, k and v split on head boundaries; a packed
    q|k|v split in contiguous columns does not, and XLA reshuffles it between devices."""
    from accelir.passes.registry import pass_name
    if sharding != "tensor-parallel":
        return passes
    return [p for p in passes if pass_name(p) != "fuse_parallel_linear"]


@dataclass
class ShardingPlan:
    """Each weight's spec by its jax parameter key, each graph input's spec, and the weights' names."""

    params: dict[str, PartitionSpec] = field(default_factory=dict)
    inputs: list[PartitionSpec | None] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # parameter key -> name the rules match
    activations: dict[int, PartitionSpec] = field(default_factory=dict)  # node id -> its output's layout


def _axis(mesh: Mesh, preferred: tuple[str, ...], last: bool) -> str:
    for name in preferred:
        if name in mesh.axis_names:
            return name
    return mesh.axis_names[-1 if last else 0]


def _constant_nodes(graph: Graph) -> dict[str, Node]:
    return {n.attrs["name"]: n for n in graph.nodes if n.op == "constant"}


def _weight_name(node: Node, name: str) -> str:
    """A constant's name for the rules: its own where it came from the model's state, else
    ``<module>.weight`` / ``<module>.bias`` after the linear or matmul slot it feeds."""
    if str(node.meta.get("origin", "")).startswith("state_dict") or not node.meta.get("module"):
        return name
    slots = {i for user, i in node.outputs[0].uses() if user.op in ("linear", "matmul", "conv", "fused_conv")}
    merged = "merged_" if node.meta.get("pass") == "fuse_parallel_linear" else ""
    return f"{node.meta['module']}.{merged}{'bias' if slots == {2} else 'weight'}"


def _split(axis: str, rank: int, dim: int) -> PartitionSpec:
    return PartitionSpec(*[axis if d == dim else None for d in range(rank)])


def _tensor_parallel(graph: Graph, axis: str) -> tuple[dict[str, PartitionSpec], dict[int, PartitionSpec]]:
    """Megatron's column / row layout by constant name, from how values flow between linears;
    and the layout each linear's output is constrained to, by node id (column: features
    split; row: whole, which is where XLA all-reduces)."""
    split: set[int] = set()  # ids of values split on their feature dim
    specs: dict[str, PartitionSpec] = {}
    outputs: dict[int, PartitionSpec] = {}
    for node in graph.nodes:
        if node.op in ("linear", "matmul") and len(node.inputs) >= 2 and node.inputs[1].producer is not None \
                and node.inputs[1].producer.op == "constant" and node.inputs[1].rank == 2:
            w = node.inputs[1].producer.attrs["name"]
            rank = node.outputs[0].rank
            if id(node.inputs[0]) in split:  # row-parallel: the input's features arrive split
                specs.setdefault(w, _split(axis, 2, 0))
                outputs[id(node)] = PartitionSpec(*([None] * rank))
            else:  # column-parallel: output features split, bias with them
                specs.setdefault(w, _split(axis, 2, 1))
                outputs[id(node)] = _split(axis, rank, rank - 1)
                if len(node.inputs) == 3 and node.inputs[2].producer is not None \
                        and node.inputs[2].producer.op == "constant":
                    specs.setdefault(node.inputs[2].producer.attrs["name"], _split(axis, 1, 0))
                split.update(id(o) for o in node.outputs)
            continue
        if node.op not in _REGION_ENDS and any(id(v) in split for v in node.inputs):
            split.update(id(o) for o in node.outputs)
    return specs, outputs


def _fsdp(arrays: Mapping[str, np.ndarray], size: int, axis: str) -> dict[str, PartitionSpec]:
    out = {}
    for name, arr in arrays.items():
        dims = [d for d in range(arr.ndim) if arr.shape[d] % size == 0 and arr.shape[d] >= size]
        if dims:
            out[name] = _split(axis, arr.ndim, dims[0])
    return out


def _by_rules(rules: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, PartitionSpec]:
    """regex -> spec over the weights' names; a regex that matches nothing is an error."""
    out: dict[str, PartitionSpec] = {}
    for pattern, spec in rules.items():
        if not isinstance(pattern, str):
            raise AccelirError(f"sharding: the rule keys are regular expressions over the parameters' names; "
                               f"got {pattern!r} ({type(pattern).__name__})")
        try:
            rx = re.compile(pattern)
        except re.error as e:
            raise AccelirError(f"sharding: {pattern!r} is not a regular expression ({e})") from None
        if not isinstance(spec, PartitionSpec):
            spec = PartitionSpec(*spec) if isinstance(spec, (tuple, list)) else PartitionSpec(spec)
        hits = [key for key, name in names.items() if rx.search(name)]
        if not hits:
            shown = ", ".join(sorted(names.values())[:8])
            raise AccelirError(f"sharding: the rule {pattern!r} matches no parameter; the parameters are "
                               f"{shown}{', ...' if len(names) > 8 else ''}")
        for key in hits:
            out.setdefault(key, spec)
    return out


def _check_divides(specs: Mapping[str, PartitionSpec], arrays: Mapping[str, np.ndarray], names: Mapping[str, str],
                   mesh: Mesh) -> None:
    for key, spec in specs.items():
        shape = arrays[key].shape
        if len(spec) > len(shape):
            raise AccelirError(f"sharding: parameter {names[key]} has shape {list(shape)}, fewer dims than the "
                               f"spec {spec}")
        for d, axes in enumerate(spec):
            if axes is None:
                continue
            for a in (axes if isinstance(axes, tuple) else (axes,)):
                if a not in mesh.axis_names:
                    raise AccelirError(f"sharding: the spec {spec} of parameter {names[key]} names mesh axis "
                                       f"{a!r}; the mesh has {', '.join(map(repr, mesh.axis_names))}")
            size = int(np.prod([mesh.shape[a] for a in (axes if isinstance(axes, tuple) else (axes,))]))
            if shape[d] % size:
                raise AccelirError(f"sharding: parameter {names[key]} dim {d} of size {shape[d]} (shape "
                                   f"{list(shape)}) does not divide over mesh axis {axes!r} of size {size}; "
                                   "choose a mesh axis that divides it, or leave that dim unsplit")


def plan_sharding(graph: Graph, params: Mapping[str, np.ndarray], prefix: str, mesh: Mesh,
                  sharding: str | Mapping[str, Any]) -> ShardingPlan:
    """How the weights (``params``, by jax parameter key) and the inputs of ``graph`` lie on ``mesh``."""
    if not isinstance(mesh, Mesh):
        raise AccelirError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    nodes = _constant_nodes(graph)
    names = {key: _weight_name(nodes[key[len(prefix) + 1:]], key[len(prefix) + 1:]) if key[len(prefix) + 1:] in nodes
             else key for key in params if key.startswith(prefix + "/")}
    data, model = _axis(mesh, _DATA_AXES, last=False), _axis(mesh, _MODEL_AXES, last=True)
    plan = ShardingPlan(names=names)
    batch = None
    if isinstance(sharding, Mapping):
        plan.params = _by_rules(sharding, names)
    elif sharding == "data-parallel":
        batch = data
    elif sharding == "fsdp":
        batch = data
        plan.params = _fsdp({k: params[k] for k in names}, mesh.shape[data], data)
    elif sharding == "tensor-parallel":
        by_name, plan.activations = _tensor_parallel(graph, model)
        plan.params = {constant_key(prefix, n): s for n, s in by_name.items() if constant_key(prefix, n) in params}
    else:
        raise AccelirError(f"sharding must be one of {', '.join(map(repr, MODES))} or a dict of regex -> "
                           f"PartitionSpec, got {sharding!r}")
    _check_divides(plan.params, params, names, mesh)
    plan.inputs = [PartitionSpec(batch) if batch is not None and v.rank >= 1 else None for v in graph.inputs]
    return plan


@dataclass
class _ConstrainedLowering(Lowering):
    """A trace that pins the outputs of some nodes to a layout (``jax.lax.with_sharding_constraint``)."""

    constraints: Mapping[int, NamedSharding] = field(default_factory=dict)

    def lower_node(self, node: Node, args: list, bindings: Mapping[str, Any]) -> list:
        outs = super().lower_node(node, args, bindings)
        c = self.constraints.get(id(node))
        if c is None or isinstance(outs[0], Permuted):
            return outs
        return [jax.lax.with_sharding_constraint(outs[0], c)] + outs[1:]


class ShardedJaxModule(JaxModule):
    """A graph jit-compiled over a mesh: its weights placed on their shards, its inputs laid
    out as the plan says, GSPMD partitioning the program.  Called like :class:`JaxModule`."""

    def __init__(self, graph: Graph, mesh: Mesh, sharding: str | Mapping[str, Any],
                 compiler_options: Mapping[str, Any] | None = None):
        self.function = to_jax(graph)
        if self.function.padded:
            raise AccelirError(f"graph {graph.name!r} has data-dependent sizes, which a sharded program does not "
                               "pad; optimise it without mesh=, or with backend='onnxruntime'")
        self.graph = graph
        self.mesh = mesh
        self.device = mesh.devices.flat[0]
        keys = tuple(self.function.params)
        self.plan = plan_sharding(graph, self.function.params, "0", mesh, sharding)
        constraints = [None if s is None else NamedSharding(mesh, s) for s in self.plan.inputs]

        activations = {k: NamedSharding(mesh, s) for k, s in self.plan.activations.items()}
        fn = self.function

        def run(values: tuple, *inputs: Any) -> list:
            inputs = tuple(x if c is None else jax.lax.with_sharding_constraint(x, c)
                           for x, c in zip(inputs, constraints))
            lowering = _ConstrainedLowering(fn._prefixes, dict(zip(keys, values)), fn._small, fn.layouts, fn._splats,
                                            constraints=activations)
            return lowering.run(graph, *inputs)

        self._jitted = jax.jit(run, compiler_options=xla_compiler_options(self.device, compiler_options))
        with x64_scope(self.function.needs_x64):
            self._values = tuple(self._place(self.function.params[k], self.plan.params.get(k, PartitionSpec()))
                                 for k in keys)
        self._keys = keys

    def _place(self, arr: np.ndarray, spec: PartitionSpec) -> jax.Array:
        """The host array straight onto its shards: each device is handed only its own slice."""
        sharding = NamedSharding(self.mesh, spec)
        return jax.make_array_from_callback(arr.shape, sharding, lambda index: arr[index])

    def _arguments(self, inputs: tuple) -> list:
        placed = []
        for i, (x, spec) in enumerate(zip(inputs, self.plan.inputs)):
            if framework_of(x) == "jax" and isinstance(x.sharding, NamedSharding) and x.sharding.mesh == self.mesh:
                placed.append(x)  # laid out on this mesh already: the program's constraint does the rest
                continue
            host = to_numpy(x)
            spec = spec if spec is not None else PartitionSpec()
            if len(spec) and host.ndim and host.shape[0] % self.mesh.shape[spec[0]]:
                raise InputError(f"input {i} ({self.graph.inputs[i].name}): its batch dim {host.shape[0]} does not "
                                 f"divide over mesh axis {spec[0]!r} of size {self.mesh.shape[spec[0]]}")
            placed.append(self._place(host, spec))
        return [self._values] + placed

    def _output(self, o: Any, kind: str) -> Any:
        if kind == "torch":  # gathered to the host: torch takes no array split over devices
            return to_torch(np.asarray(o))
        return from_jax_array(o, kind)

    def sharded_parameters(self) -> dict[str, jax.Array]:
        """The placed weights by name (jax arrays, each laid out over the mesh)."""
        return {self.plan.names.get(k, k): v for k, v in zip(self._keys, self._values)}
