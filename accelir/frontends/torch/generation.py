"""Capturing a transformers causal LM with its key/value cache as two graphs.

``torch.export`` cannot take transformers' cache objects as inputs or outputs, so the
model is exported through :class:`CacheStep`, a wrapper whose forward takes the past
keys and values as a plain list of tensors, rebuilds the model's own cache class from
them (``DynamicCache(pairs)``, whatever the model, so none is special-cased by name) and returns the logits and the present keys/values
flattened the same way.  Two exports of it give:

- the prefill graph: ``input_ids, attention_mask, position_ids -> logits, present...``
  with symbolic ``batch`` and ``seq``;
- the decode graph: ``seq`` new tokens per sequence plus the past (``past`` long; both symbolic)
  -> the logits of those tokens and the present (``past+seq`` long).  One token per step while
  generating; the whole prompt over an empty past (``past`` 0) gives what the prefill graph
  gives, so one onnxruntime session can run both.

The cache tensors are ``[batch, kv_heads, length, head_dim]``, keys then values, layer
by layer; graph inputs and outputs are named ``past_key_{i}`` / ``past_value_{i}`` and
``present_key_{i}`` / ``present_value_{i}``.
"""

from __future__ import annotations

import inspect
import weakref
from dataclasses import dataclass
from typing import Any

import torch

from ... import dims
from ...errors import CaptureError
from ...ir import Graph, TensorType

__all__ = ["CacheStep", "CacheLayout", "capture_causal_lm", "cache_path_problem"]

# example sizes of the exports: distinct and over 1, so torch.export neither specialises a
# dynamic dim to 0 / 1 nor confuses one with another
_BATCH, _PROMPT, _PAST, _STEP = 2, 5, 7, 3


def cache_path_problem(model: Any) -> str | None:
    """What keeps ``model`` from generating with a key/value cache, or None when nothing does."""
    if not isinstance(model, torch.nn.Module):
        return f"a {type(model).__name__} is not a torch module"
    config = getattr(model, "config", None)
    if not callable(getattr(model, "generate", None)) or config is None:
        return f"{type(model).__name__} has no generate() and config: it is not a transformers causal LM"
    if getattr(config, "is_encoder_decoder", False):
        return f"{type(model).__name__} is an encoder-decoder model; only decoder-only causal LMs generate here"
    if not getattr(config, "use_cache", False):
        return f"{type(model).__name__}'s config has use_cache=False; set config.use_cache=True"
    if _cache_keyword(model) is None:
        return f"{type(model).__name__}.forward takes no cache (or past_key_values) argument"
    return None


def _cache_keyword(model: torch.nn.Module) -> str | None:
    """The name under which the model's forward takes its cache: ``cache``, or ``past_key_values``
    in transformers releases before the rename."""
    parameters = inspect.signature(model.forward).parameters
    return next((k for k in ("cache", "past_key_values") if k in parameters), None)


@dataclass(frozen=True)
class CacheLayout:
    """The cache's shape: per layer one key and one value tensor ``[batch, kv_heads, length, head_dim]``."""

    layers: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    max_positions: int | None

    def describe_limit(self) -> str:
        """What bounds prompt plus new tokens, for the error that names it."""
        return f"the model's max_position_embeddings ({self.max_positions}) and so the cache capacity"

    @property
    def past_names(self) -> list[str]:
        return [f"past_{kind}_{i}" for i in range(self.layers) for kind in ("key", "value")]

    @property
    def present_names(self) -> list[str]:
        return [f"present_{kind}_{i}" for i in range(self.layers) for kind in ("key", "value")]


class CacheStep(torch.nn.Module):
    """``model`` called with a cache rebuilt from plain tensors; returns logits and the flat present."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.cache_keyword = _cache_keyword(model)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                past: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache
        # plain DynamicLayers: a sliding-window layer's crop never acts below the window, which bounds
        # the tokens generated (see _token_limit), and would make the present's length a Min / Max
        pairs = [(past[i], past[i + 1]) for i in range(0, len(past), 2)] if past else None
        cache = DynamicCache(pairs)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=True, **{self.cache_keyword: cache})
        present = out.get("cache", None) or out.get("past_key_values", None)
        flat: list[torch.Tensor] = []
        for layer in present.layers:
            flat += [layer.keys, layer.values]
        return (out.logits, *flat)


def _layout(model: torch.nn.Module, present: list[torch.Tensor]) -> CacheLayout:
    config = model.config
    limit = _token_limit(config)
    return CacheLayout(layers=len(present) // 2, kv_heads=int(present[0].shape[1]), head_dim=int(present[0].shape[3]),
                       vocab_size=int(config.vocab_size), max_positions=limit)


def _name_io(graph: Graph, layout: CacheLayout, with_past: bool) -> None:
    names = ["input_ids", "attention_mask", "position_ids"] + (layout.past_names if with_past else [])
    for v, name in zip(graph.inputs, names):
        v.name = name
    for v, name in zip(graph.outputs, ["logits"] + layout.present_names):
        v.name = name


def name_cache_io(graph: Graph, layout: CacheLayout) -> None:
    """(Re)name the inputs and outputs of a prefill or decode graph; passes may rename output values."""
    _name_io(graph, layout, with_past=len(graph.inputs) > 3)


_CAPTURED: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[Any, tuple[Graph, Graph, CacheLayout]]]" = \
    weakref.WeakKeyDictionary()


def _state_key(model: torch.nn.Module) -> tuple:
    """What the captured graphs depend on: the config, the mode, and each weight's identity and in-place
    version counter (which torch bumps on every in-place change), so a changed model is captured anew."""
    tensors = [*model.parameters(), *model.buffers()]
    return (model.config.to_json_string(), model.training, tuple((id(t), t._version) for t in tensors))


def capture_causal_lm(model: torch.nn.Module) -> tuple[Graph, Graph, CacheLayout]:
    """The prefill and decode graphs of a transformers causal LM, and its cache layout.

    The graphs of an unchanged model are captured once: optimising it again (for the other
    backend, say) starts from copies of them instead of two more exports.
    """
    key = _state_key(model)
    hit = _CAPTURED.get(model)
    if hit is None or hit[0] != key:
        hit = (key, _capture(model))
        _CAPTURED[model] = hit
    prefill, decode, layout = hit[1]
    return prefill.copy(), decode.copy(), layout


def _token_limit(config: Any) -> int | None:
    """How many tokens the cache may hold: the position limit and, for a sliding-window model, its window
    less two (torch.export guards the sequence to that range: past it the model's mask takes another path)."""
    limits = [int(n) for n in (getattr(config, "max_position_embeddings", None),) if n]
    window = getattr(config, "sliding_window", None)
    if isinstance(window, int) and window > 2:
        limits.append(window - 2)
    return min(limits) if limits else None


def _export_graph(step: CacheStep, args: tuple, spec: tuple) -> Graph:
    """Capture ``step`` (non-strict) with the symbolic dims of ``spec``.

    Guards sympy cannot prove (``min(16 + 16 * past, 32 + 32 * past)``, from the strides of
    grouped-query attention's repeated heads) become runtime asserts, which capture drops.
    """
    from .driver import capture_torch
    options = {"prefer_deferred_runtime_asserts_over_guards": True}
    return capture_torch(step, args, dynamic_shapes=spec, strict=False, export_options=options)


_DIM_OPS = {"+": dims.dim_add, "-": dims.dim_sub, "*": dims.dim_mul, "//": dims.dim_floordiv, "%": dims.dim_mod}


def _tie_mask_length(graph: Graph) -> None:
    """Name the decode graph's mask length by what it is, ``past+seq`` (the present keys' and values'
    length), in every type that names torch.export's dim of its own for it (``total``)."""
    length = dims.dim_add("past", "seq")

    def tied(d: dims.Dim) -> dims.Dim:
        if type(d) is int or "total" not in dims.symbols(d):
            return d
        return dims.evaluate_with(d, lambda name: length if name == "total" else name, const=lambda c: c,
                                  binop=lambda op, a, b: _DIM_OPS[op](a, b), neg=lambda a: dims.dim_sub(0, a))
    for v in [*graph.inputs, *(o for node in graph.nodes for o in node.outputs)]:
        shape = tuple(tied(d) for d in v.shape)
        if shape != tuple(v.shape):
            v.type = TensorType(v.type.dtype, shape)


def _capture(model: torch.nn.Module) -> tuple[Graph, Graph, CacheLayout]:
    from torch.export import Dim
    problem = cache_path_problem(model)
    if problem:
        raise CaptureError(f"cannot capture a key/value cache path: {problem}")
    step = CacheStep(model)
    ids = torch.zeros(_BATCH, _PROMPT, dtype=torch.long)
    mask = torch.ones(_BATCH, _PROMPT, dtype=torch.long)
    pos = torch.arange(_PROMPT).expand(_BATCH, _PROMPT).contiguous()
    with torch.no_grad():
        present = list(step(ids, mask, pos)[1:])
    if not present or len(present) % 2 or any(p.dim() != 4 for p in present):
        raise CaptureError(f"{type(model).__name__}'s cache is not one [batch, heads, length, head_dim] key and "
                           "value per layer; accelir generates with such caches only")
    limit = _token_limit(model.config)
    batch = Dim("batch")
    row = {0: batch, 1: Dim("seq") if limit is None else Dim("seq", max=limit)}
    prefill = _export_graph(step, (ids, mask, pos), (row, row, row))
    past_example = [torch.zeros(_BATCH, p.shape[1], _PAST, p.shape[3], dtype=p.dtype) for p in present]
    new = pos[:, :_STEP] + _PAST
    # the mask covers past and new tokens, a length torch.export cannot derive from two dims: its own dim
    # (the past and the new tokens are each at least 2 in torch.export's ranges, though the step runs with 0)
    if limit is None:
        new_row, past, total = row, Dim("past"), Dim("total", min=4)
    else:
        seq = Dim("seq", max=limit - 2)
        new_row, past, total = {0: batch, 1: seq}, Dim("past", max=limit - 2), Dim("total", min=4, max=limit)
    decode = _export_graph(
        step, (torch.zeros(_BATCH, _STEP, dtype=torch.long), torch.ones(_BATCH, _PAST + _STEP, dtype=torch.long), new,
               past_example),
        (new_row, {0: batch, 1: total}, new_row, [{0: batch, 2: past}] * len(present)))
    _tie_mask_length(decode)
    layout = _layout(model, present)
    for g, with_past in ((prefill, False), (decode, True)):
        _name_io(g, layout, with_past)
        g.meta.pop("signature", None)  # called with flat arrays by the generation driver
    return prefill, decode, layout
