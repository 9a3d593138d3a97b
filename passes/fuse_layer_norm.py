"""Fuse the decomposed layer norm into the ``layer_norm`` composite.

Rewrites (the forms :mod:`norm_forms` reads: two-pass, torch-style and the flax
fast variance, means spelled any way, products in any order)::

    (x - mean(x)) * rsqrt(var(x) + eps) * scale + bias   -> layer_norm(x, scale, bias) {axis, epsilon}
    mul(layer_norm(x), scale)                            -> layer_norm(x, scale)
    add(layer_norm(x, scale), bias)                      -> layer_norm(x, scale, bias)

The statistics must all read the same x over the same trailing axes, epsilon must be
a scalar constant, scale and bias may vary only along the normalised axes; a form
that fails one check is left alone and (verbose) says which.
"""

from __future__ import annotations

from .norm_forms import norm_rules
from .pattern import RulePass
from .registry import register_pass

__all__ = ["fuse_layer_norm", "LAYER_NORM_RULES"]

LAYER_NORM_RULES = norm_rules("layer")

fuse_layer_norm = register_pass("fuse_layer_norm")(
    RulePass("fuse_layer_norm", LAYER_NORM_RULES))
