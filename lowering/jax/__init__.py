"""Lowering to XLA through JAX: Graph -> a function over ``jax.numpy`` / ``jax.lax``.

Each op has one rule in ``JAX_RULES`` (filled by ``register_lowering``), as jax
registers one lowering per primitive; a composite op without one lowers through its
decomposition (``rule_for``).  A rule is ``rule(ctx, *arrays, **attrs)`` and
returns an array or a list of arrays; ``ctx`` gives the node, its regions as
callables and the graph's constants.

* ``to_jax(graph)`` -> a :class:`JaxFunction`: call it on arrays in graph input order
  to get a list of jax arrays; ``.apply(params, *inputs)`` is the pure, traceable form.
* :class:`JaxModule` jit-compiles it and takes numpy arrays, jax arrays or torch
  tensors (torch through DLPack, without copies on the same device); results come back
  in the caller's framework.
* ``stablehlo`` / ``hlo`` give the module text, ``export_jax`` / ``load_exported`` a
  serialized ``jax.export`` artifact (symbolic dims become jax shape polymorphism).

The package: ``context`` (the rule table, the rule context, one trace of a graph,
``to_jax``), ``layout`` (values held channels-last), ``runner`` (``JaxModule``),
``export`` (StableHLO / HLO text, ``jax.export``), and one rule module per op family
(``elementwise``, ``reduce``, ``linalg``, ``shape``, ``nn`` for composites, ``control``
for regions).  A composite op with no rule lowers through its decomposition.

Symbolic dims are bound at trace time to the dims of the inputs, so shape-valued
attributes (a reshape target over ``batch``) follow the traced shapes.  f16 / bf16 math
computes in f32 and rounds once, like the reference interpreter.  Graphs with i64 /
f64 values run inside ``jax.enable_x64``; the global setting is never changed.
Large constants are passed to the compiled function as arguments instead of being
baked into the module, so compiling a model with big weights stays fast; convolution
weights are the exception (below).

Convolutions run channels-last, as XLA's CPU backend runs them best (the IR is
channels-first): values may be held transposed (:class:`Permuted`), layout-aware rules
work on them in that layout and ``transpose`` only relabels, so a conv chain has no
transposes between its convs.  Convolution weights are held channels-last and baked
into the module: XLA's CPU conv kernels pack constant weights once, at compile time,
where weights passed as arguments are packed on every call.

Data-dependent sizes (unbacked dims) run padded to an upper bound with their valid length
beside them, and are sliced to it after the call (``padding`` says which nodes may meet them
and how; ``dynamic`` holds the rules); what cannot be padded right is refused by name.
"""

from __future__ import annotations

# the rule modules register their rules on import
from . import control, dynamic, elementwise, linalg, nn, padded_shape, quant, reduce, shape  # noqa: F401
from .context import (JAX_RULES, PADDED_RULES, PARAM_MIN_ELEMENTS, JaxFunction, RuleContext, check_lowerable,
                      register_lowering, register_padded, rule_for, to_jax, x64_scope)
from .export import export_jax, hlo, load_exported, stablehlo
from .layout import Permuted
from .runner import JaxModule, jax_device

__all__ = [
    "JAX_RULES",
    "RuleContext",
    "register_lowering",
    "PADDED_RULES",
    "register_padded",
    "rule_for",
    "to_jax",
    "JaxFunction",
    "JaxModule",
    "Permuted",
    "stablehlo",
    "hlo",
    "export_jax",
    "load_exported",
    "x64_scope",
    "jax_device",
    "check_lowerable",
    "PARAM_MIN_ELEMENTS",
]
