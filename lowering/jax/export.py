"""Export: StableHLO / HLO module text and serialized ``jax.export`` artifacts (symbolic dims
become jax shape polymorphism).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from accelir import dims
from accelir.errors import LoweringError
from accelir.ir import Graph

from .context import JAX_DTYPES, JaxFunction, to_jax, to_jax_array, x64_scope

# ----- export ------------------------------------------------------------------------

def _exportable(graph: Graph) -> JaxFunction:
    """``graph`` as a jax function whose outputs are the graph's own: one with data-dependent sizes runs
    on padded buffers that only accelir's runner slices, so an exported module would return them unsliced."""
    fn = to_jax(graph)
    if fn.padded:
        raise LoweringError(f"graph {graph.name!r} has data-dependent sizes, which XLA runs as padded buffers "
                            "that accelir's runner slices after the call; an exported module cannot slice them. "
                            "Export .onnx instead, or run the model through accelir")
    return fn


def _input_specs(graph: Graph, example_inputs: Sequence[Any] | None, symbolic: bool) -> list:
    """ShapeDtypeStructs for the graph inputs: symbolic dims as jax symbolic shapes,
    or the example inputs' concrete shapes."""
    if example_inputs is not None and len(example_inputs) != len(graph.inputs):
        raise LoweringError(f"graph {graph.name!r} takes {len(graph.inputs)} inputs, got {len(example_inputs)} "
                            "example inputs")
    if symbolic:
        scope = jax.export.SymbolicScope()
        names = sorted({s for v in graph.inputs for d in v.shape if type(d) is not int
                        for s in dims.symbols(d)})
        symbols = {n: jax.export.symbolic_shape(n, scope=scope)[0] for n in names}
        return [jax.ShapeDtypeStruct(tuple(dims.evaluate_with(d, symbols.__getitem__) for d in v.shape),
                                     JAX_DTYPES[v.dtype])
                for v in graph.inputs]
    if example_inputs is None:
        if all(v.type.is_static for v in graph.inputs):
            return [jax.ShapeDtypeStruct(v.shape, JAX_DTYPES[v.dtype]) for v in graph.inputs]
        raise LoweringError(f"graph {graph.name!r} has symbolic input dims: give example inputs for concrete "
                            "shapes, or pass symbolic=True")
    return [jax.ShapeDtypeStruct(tuple(x.shape) if hasattr(x, "shape") else np.shape(x), JAX_DTYPES[v.dtype])
            for v, x in zip(graph.inputs, example_inputs)]


def _lowered(graph: Graph, example_inputs: Sequence[Any] | None, symbolic: bool):
    fn = _exportable(graph)
    with x64_scope(fn.needs_x64):
        return jax.jit(fn.embedded).lower(*_input_specs(graph, example_inputs, symbolic))


def stablehlo(graph: Graph, example_inputs: Sequence[Any] | None = None, *, symbolic: bool = False,
              debug_info: bool = False) -> str:
    """The StableHLO module text (``jax.jit(...).lower(...).as_text()``), constants inlined.

    Shapes come from ``example_inputs`` (arrays or ShapeDtypeStructs), or from the
    graph's symbolic dims when ``symbolic`` (dynamic dims in the module).
    ``debug_info`` adds locations: each op's name scope is its node's module path.
    """
    return _lowered(graph, example_inputs, symbolic).as_text(debug_info=debug_info)


def hlo(graph: Graph, example_inputs: Sequence[Any] | None = None, *, debug_info: bool = False) -> str:
    """The HLO module text for the example inputs' shapes, constants inlined; ``debug_info``
    adds op metadata naming each node's module path."""
    return _lowered(graph, example_inputs, False).as_text(dialect="hlo", debug_info=debug_info)


def export_jax(graph: Graph, example_inputs: Sequence[Any] | None = None, symbolic: bool = True) -> bytes:
    """A serialized ``jax.export`` artifact of the graph (constants inlined).

    With ``symbolic`` the graph's symbolic dims stay dynamic (jax shape polymorphism);
    otherwise the example inputs fix the shapes.
    """
    fn = _exportable(graph)
    with x64_scope(fn.needs_x64):
        specs = _input_specs(graph, example_inputs, symbolic)
        exported = jax.export.export(jax.jit(fn.embedded))(*specs)
        return bytes(exported.serialize())


def load_exported(data: bytes) -> Callable[..., list]:
    """Load an ``export_jax`` artifact; the callable takes arrays and returns a list of jax arrays."""
    exported = jax.export.deserialize(bytearray(data))
    wide = {jnp.dtype(jnp.int64), jnp.dtype(jnp.float64), jnp.dtype(jnp.uint64)}
    needs = any(jnp.dtype(a.dtype) in wide for a in (*exported.in_avals, *exported.out_avals))

    def call(*inputs: Any) -> list:
        with x64_scope(needs):
            return list(exported.call(*[to_jax_array(x) for x in inputs]))

    call.exported = exported  # type: ignore[attr-defined]
    return call
