"""Fuse the decomposed RMS norm into the ``rms_norm`` composite.

Rewrites (means spelled any way, products in any order; flax's ``x - 0`` included)::

    x * rsqrt(mean(x * x) + eps) * scale     -> rms_norm(x, scale) {axis, epsilon}
    x / sqrt(mean(x^2) + eps)                -> rms_norm(x)
    mul(rms_norm(x), scale)                  -> rms_norm(x, scale)

The mean square must be over trailing axes of the same x that is scaled, epsilon a
scalar constant, and scale may vary only along the normalised axes.
"""

from __future__ import annotations

from .norm_forms import norm_rules
from .pattern import RulePass
from .registry import register_pass

__all__ = ["fuse_rms_norm", "RMS_NORM_RULES"]

RMS_NORM_RULES = norm_rules("rms")

fuse_rms_norm = register_pass("fuse_rms_norm")(
    RulePass("fuse_rms_norm", RMS_NORM_RULES))
