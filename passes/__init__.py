"""accelir.passes: the pattern-rewrite engine, the cleanup and fusion passes, the pipelines.

A pass is a callable ``Graph -> bool`` (True when it changed the graph), registered by
name in :mod:`.registry`.  ``pipeline(level)`` gives the default pass list of a level,
from the explicit lists in :mod:`.pipeline`.  :mod:`.recognizers` and
:mod:`.norm_forms` are libraries the fusion passes share, not passes.
"""

from __future__ import annotations

from .convert_float import ConvertFloat, convert_bfloat16, convert_float16
from .cse import CSE, cse
from .dce import dce
from .fold_constants import FoldConstants, fold_constants
from .pattern import (Alt, Const, Match, NearMiss, Op, P, Pattern, Rule, RulePass, Var, apply_rules, rewrite_budget,
                      rewrite_limit)
from .pipeline import TARGETS, Target, pipeline
from .registry import PASSES, get_pass, pass_name, register_pass
from .quantize_dynamic import QuantizeDynamic, quantize_dynamic
from .quantize_weights import QuantizeWeights, quantize_weights
from .simplify import simplify

__all__ = [
    "ConvertFloat", "convert_float16", "convert_bfloat16", "CSE", "cse", "dce", "FoldConstants", "fold_constants",
    "simplify", "QuantizeDynamic", "quantize_dynamic", "QuantizeWeights", "quantize_weights",
    "Alt", "Const", "Match", "NearMiss", "Op", "P", "Pattern", "Rule", "RulePass", "Var", "apply_rules",
    "rewrite_budget", "rewrite_limit",
    "TARGETS", "Target", "pipeline", "PASSES", "get_pass", "pass_name", "register_pass",
]
