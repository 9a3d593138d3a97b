"""The JAX frontend: ``capture_jax`` turns ``jax.make_jaxpr`` of a jax callable into an
accelir Graph.

Layout: ``context`` is what rule modules import (the equation context, the rule
table, dtype and dim conversion, shared helpers); one module per op family holds the
rules (``elementwise``, ``linalg``, ``reduce``, ``shape``, ``indexing``,
``control_flow``); ``converter`` walks jaxprs; ``driver`` is the entry point.
"""

from __future__ import annotations

from .context import EqnContext, Unsupported, static_value, to_dim, to_dims
from .driver import JaxSignature, capture_jax

__all__ = ["capture_jax", "JaxSignature", "Unsupported", "EqnContext", "static_value", "to_dim", "to_dims"]
