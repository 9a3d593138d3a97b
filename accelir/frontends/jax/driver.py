"""The JAX frontend: ``jax.make_jaxpr`` of a jax callable, turned into an accelir Graph.

Each jaxpr equation is mapped by one rule, registered in
:mod:`accelir.frontends.jax.context` by the rule modules of this package (one per op
family; gather and scatter in :mod:`accelir.frontends.jax.indexing`).  Calls (``jit``, ``custom_jvp_call``,
``custom_vjp_call``, ``remat``, ``closed_call``) are inlined; ``cond``, ``while`` and
``scan`` become IR nodes with closed regions.  Literals and closed-over arrays become
constants.  Pytree inputs are flattened and the output structure is kept in
``graph.meta["signature"]``, so a compiled graph returns what the function returns.

Every node carries its provenance in ``node.meta``: ``origin`` (the jax primitive),
``source`` (``file.py:LINE`` of the user's code) and ``module`` (the jax name stack,
which is the flax module path).
"""

from __future__ import annotations

import functools
import gc
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ...errors import AccelirError, UnsupportedOpError
from ...ir import Graph, Value
from . import control_flow, elementwise, indexing, linalg, reduce, shape
from .context import RULES, Unsupported, aval_type
from .converter import Converter, Problem


# the rule modules, by op family: importing them registers their rules in RULES
RULE_MODULES = (control_flow, elementwise, indexing, linalg, reduce, shape)

__all__ = ["capture_jax", "JaxSignature", "path_name"]


@dataclass(frozen=True)
class JaxSignature:
    """How to flatten a call's pytree arguments into graph inputs and rebuild its output pytree.

    ``keep`` marks the leaves that are graph inputs (frozen parameters are not: the graph
    holds their captured values); ``dtypes`` are the graph inputs' dtypes, which python
    scalars among the arguments take, as jax would give them."""

    in_tree: Any
    keep: tuple[bool, ...]
    out_tree: Any
    dtypes: tuple[np.dtype, ...] = ()

    def flatten(self, *args: Any, **kwargs: Any) -> list:
        import jax
        leaves, tree = jax.tree_util.tree_flatten((args, kwargs))
        if tree != self.in_tree:
            raise TypeError(f"arguments do not match the captured structure: got {tree}, captured {self.in_tree}")
        flat = [leaf for leaf, k in zip(leaves, self.keep) if k]
        return [np.asarray(x, dtype=dt) if isinstance(x, (bool, int, float)) else x
                for x, dt in zip(flat, self.dtypes)] if self.dtypes else flat

    def unflatten(self, flat_outputs: list) -> Any:
        import jax
        return jax.tree_util.tree_unflatten(self.out_tree, list(flat_outputs))


# ----- entry point -------------------------------------------------------------------

@functools.lru_cache(maxsize=256)
def _symbolic_shape(spec: str, constraints: tuple[str, ...] = ()) -> tuple:
    # one scope for every capture with the same constraints: the same spec gives the same dim objects,
    # so jax's trace caches of inner jitted functions hit as they do for a plain make_jaxpr
    import jax
    return tuple(jax.export.symbolic_shape(spec, scope=_scope(constraints)))


@functools.lru_cache(maxsize=None)
def _scope(constraints: tuple[str, ...] = ()) -> Any:
    # never evicted: _symbolic_shape keeps dims of this scope, and a scope made anew for the same
    # constraints would mix with them in one capture (jax: "(b, 1), (b, 1)" incompatible).  One per
    # distinct constraint set (a flax decoder's cache capacity), each a few objects
    import jax
    return jax.export.SymbolicScope(constraints)


def _abstract_args(args: tuple, symbolic_shapes: Sequence[Any] | None, constraints: tuple[str, ...] = ()) -> tuple:
    """Replace the arrays that have a shape spec by ShapeDtypeStructs with symbolic dims."""
    if symbolic_shapes is None:
        return args
    import jax
    if len(symbolic_shapes) != len(args):
        raise ValueError(f"symbolic_shapes needs one entry per positional argument ({len(args)}), "
                         f"got {len(symbolic_shapes)}")
    def leaf(spec: Any, arr: Any) -> Any:
        if spec is None:
            return arr
        shape = _symbolic_shape(spec, constraints)
        if len(shape) != np.ndim(arr):
            raise ValueError(f"shape spec {spec!r} has rank {len(shape)}, the example array has shape "
                             f"{np.shape(arr)}")
        return jax.ShapeDtypeStruct(shape, arr.dtype)

    def is_spec(s: Any) -> bool:
        return s is None or isinstance(s, str)

    return tuple(jax.tree_util.tree_map(leaf, spec, arg, is_leaf=is_spec) if spec is not None else arg
                 for spec, arg in zip(symbolic_shapes, args))


def _leaf_names(tree: Any) -> list[str]:
    import jax
    out = []
    for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
        out.append(path_name(path))
    return out


def path_name(path: Sequence[Any]) -> str:
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return ".".join(parts)


def capture_jax(fn: Callable, example_args: Sequence[Any], *, example_kwargs: dict | None = None,
                params_as_constants: bool = False, symbolic_shapes: Sequence[Any] | None = None,
                shape_constraints: Sequence[str] = ()) -> Graph:
    """Capture ``fn(*example_args, **example_kwargs)`` as an accelir Graph.

    ``params_as_constants`` freezes the leaves of the first argument (a parameter
    pytree) as named constants instead of graph inputs, which lets constant folding
    see them; the graph then keeps the captured values whatever params a later call
    passes.  ``symbolic_shapes`` has one entry per positional argument: None (static),
    a ``jax.export.symbolic_shape`` spec string such as ``"batch, 128"``, or a pytree of
    such strings matching the argument; dims named alike are the same symbol.
    ``shape_constraints`` bound the symbols for jax's shape checks (``"seq <= 64"``: a prompt written
    into a cache of 64 slots).
    """
    import jax

    args = tuple(example_args)
    kwargs = dict(example_kwargs or {})
    traced_args = _abstract_args(args, symbolic_shapes, tuple(shape_constraints))
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*traced_args, **kwargs)
    leaves, in_tree = jax.tree_util.tree_flatten((args, kwargs))
    names = _leaf_names((args, kwargs))
    n_params = len(jax.tree_util.tree_leaves(args[0])) if params_as_constants and args else 0
    keep = tuple(i >= n_params for i in range(len(leaves)))
    jaxpr = closed.jaxpr
    if len(jaxpr.invars) != len(leaves):
        raise AccelirError(f"jax traced {len(jaxpr.invars)} inputs but the arguments have {len(leaves)} leaves")

    graph = Graph(_graph_name(fn))
    problems: list[Problem] = []
    conv = Converter(graph, problems, RULES)
    # the conversion only allocates objects that stay alive; cyclic GC passes over jax's large
    # heap would cost more than the conversion itself
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        inputs: list[Value] = []
        for i, (var, leaf, name) in enumerate(zip(jaxpr.invars, leaves, names)):
            pretty = _input_name(name)
            if keep[i]:
                try:
                    t = aval_type(var.aval)
                except Unsupported as e:
                    raise UnsupportedOpError(f"jax frontend: input {pretty!r} ({var.aval}): {e}") from None
                inputs.append(graph.add_input(t, pretty))
            else:
                inputs.append(conv.constant(np.asarray(leaf), name=pretty))
        outputs = conv.run(jaxpr, closed.consts, inputs)
    finally:
        if gc_was_enabled:
            gc.enable()
    if problems:
        ops = sorted({p.primitive for p in problems})
        raise UnsupportedOpError(
            f"jax frontend: {len(problems)} equation(s) of {graph.name!r} cannot be mapped "
            f"(unsupported: {', '.join(ops)}):\n" + "\n".join(str(p) for p in problems)
            + "\nRewrite these parts with supported jax.numpy / lax operations, or add a rule in "
              "the family module of accelir/frontends/jax/.", ops)
    graph.set_outputs(outputs)
    graph.meta["frontend"] = "jax"
    graph.meta["signature"] = JaxSignature(in_tree, keep, jax.tree_util.tree_structure(out_shape),
                                           tuple(v.type.dtype.numpy for v in graph.inputs))
    return graph


def _graph_name(fn: Any) -> str:
    name = re.sub(r"\W", "", getattr(fn, "__name__", None) or type(fn).__name__)
    return name if name and not name[0].isdigit() else f"fn_{name}"


def _input_name(path: str) -> str:
    # drop the "(args, kwargs)" wrapper: "0.1.w" -> "arg1.w", "1.x" -> "x"
    head, _, rest = path.partition(".")
    if head == "0":
        idx, _, tail = rest.partition(".")
        return f"arg{idx}" + (f".{tail}" if tail else "")
    return rest
