"""Capturing a flax decoder with its key/value cache as one decode-step graph.

A ``flax.linen`` module whose attention keeps an autoregressive cache
(``nn.MultiHeadDotProductAttention(decode=True)``, or any module writing a ``cache``
collection) is passed bound to the variables ``module.init`` gave it, ``cache`` included:
``optimize(module.bind(variables), (input_ids,))``; a ``flax.nnx`` module is passed as it is,
after ``init_cache`` gave its ``nnx.MultiHeadAttention(decode=True)`` layers their
``nnx.Cache`` state.  The cache is flax's: fixed capacity (the length ``init`` /
``init_cache`` saw), written at a ``cache_index`` one token per call.
So the model has one graph, the decode step

    input_ids [batch, 1] (, attention_mask [batch, capacity]) (, position_ids [batch, 1]), cache...
        -> logits [batch, 1, vocab], the updated cache...

captured by the jax frontend from ``module.apply(variables, ..., mutable=["cache"])`` with
the cache as explicit graph inputs and outputs (its flattened pytree, leaves named by their
path: ``cache.Block_0.MultiHeadDotProductAttention_0.cached_key``), batch symbolic and the
capacity the model's own.  A prompt goes in one call, through the prefill graph

    input_ids [batch, seq] (, attention_mask [batch, capacity]) (, position_ids [batch, seq]), cache...
        -> logits [batch, 1, vocab] (the prompt's last position), the cache with the prompt written...

the same step scanned over the prompt's positions (``lax.scan``: one ``scan`` node, its length
the symbolic ``seq``), since flax's ``decode=True`` attention takes one token per call; a
:class:`CacheDecoder` may instead give a ``prefill_fn`` that takes the whole prompt at once.
``attention_mask`` and ``position_ids`` are passed when
the module's ``__call__`` takes arguments of those names, in transformers' flax convention:
the mask spans the cache's slots (1 on the tokens written so far and the new one, 0 on
padding and empty slots); positions count each sequence's tokens, padding excluded.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ...errors import CaptureError, InputError
from ...ir import Graph

__all__ = ["CacheDecoder", "FlaxCacheLayout", "flax_cache_problem", "is_flax_module", "capture_flax_decoder",
           "name_step_io", "jax_greedy"]

# what a step may take beside the ids, in this order, when the module's __call__ names it
OPTIONAL_INPUTS = ("attention_mask", "position_ids")


@dataclass(frozen=True)
class CacheDecoder:
    """A jax decoder with an explicit cache pytree: ``apply_fn(params, cache, input_ids, ...) -> (logits,
    cache)`` decodes one token per sequence (ids [batch, 1], logits [batch, 1, vocab]) and returns the
    cache with that token written, of the same structure; it may also take ``attention_mask`` and
    ``position_ids`` (by those names, as a flax module's ``__call__`` does).  ``init_cache(batch)`` gives
    an empty cache, batch first.  ``capacity`` is how many tokens the cache holds; None reads it from
    flax-style ``cached_key`` / ``cached_value`` leaves ([batch, length, heads, depth]).

    ``prefill_fn`` (optional), of ``apply_fn``'s form, takes a whole prompt at once: ids and positions
    [batch, seq], the mask [batch, capacity] (1 on the prompt's tokens, 0 on its padding and on the
    empty slots); it returns logits [batch, seq, vocab] and the cache with the prompt written, as
    ``seq`` calls of ``apply_fn`` would.  Without it the prompt goes through ``apply_fn`` scanned."""

    apply_fn: Callable[..., tuple]
    params: Any
    init_cache: Callable[[int], Any]
    capacity: int | None = None
    prefill_fn: Callable[..., tuple] | None = None


def _flax_api(model: Any) -> str | None:
    """"linen" or "nnx" for a flax module (read without importing flax where it is not loaded), "explicit" for
    a CacheDecoder, else None."""
    if isinstance(model, CacheDecoder):
        return "explicit"
    for c in type(model).__mro__:
        if c.__name__ == "Module":
            for api in ("linen", "nnx"):
                if c.__module__.startswith(f"flax.{api}"):
                    return api
    return None


def is_flax_module(model: Any) -> bool:
    """Whether ``model`` is a ``flax.linen`` or ``flax.nnx`` module, or a :class:`CacheDecoder`."""
    return _flax_api(model) is not None


def flax_cache_problem(model: Any) -> str | None:
    """What keeps a flax module from decoding with a cache, or None when nothing does."""
    api = _flax_api(model)
    name = type(model).__name__
    if api is None:
        return f"a {name} is not a flax.linen or flax.nnx module"
    if api == "explicit":
        return None if callable(model.apply_fn) and callable(model.init_cache) and \
            (model.prefill_fn is None or callable(model.prefill_fn)) else \
            "CacheDecoder's apply_fn, init_cache and prefill_fn (when given) must be callables"
    if api == "nnx":
        from flax import nnx
        if not _leaves(nnx.state(model, nnx.Cache)):
            return (f"{name} holds no nnx.Cache state; build its attention with decode=True "
                    "(nnx.MultiHeadAttention(decode=True)) and call its init_cache(input_shape) first")
        return None
    if model.scope is None:
        return (f"{name} is not bound to its variables; pass module.bind(variables), variables from "
                "module.init(...) with its attention built with decode=True")
    collections = set(model.variables)
    if "cache" not in collections:
        return (f"{name}'s variables hold no 'cache' collection (they hold "
                f"{', '.join(sorted(collections)) or 'nothing'}); build its attention with decode=True "
                "(nn.MultiHeadDotProductAttention(decode=True)) and bind the variables module.init gives it")
    return None


def _leaves(tree: Any) -> list:
    import jax  # flax imports jax: only a flax module gets here
    return jax.tree_util.tree_leaves(tree)


@dataclass(frozen=True)
class FlaxCacheLayout:
    """The step graph's interface: which optional inputs it takes, the cache's leaves and an empty cache."""

    inputs: tuple[str, ...]  # "input_ids" and those of OPTIONAL_INPUTS the module takes
    ids_dtype: np.dtype
    cache_names: tuple[str, ...]
    empty: Callable[[int], list[np.ndarray]]  # batch -> the leaves of an empty cache
    vocab_size: int
    max_positions: int  # the cache's capacity

    def empty_cache(self, batch: int) -> list[np.ndarray]:
        """The leaves of a fresh cache for ``batch`` sequences."""
        return self.empty(batch)

    def step_inputs(self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray) -> list[np.ndarray]:
        """The step graph's leading inputs for new tokens ``ids`` [batch, 1]: ``mask`` [batch, filled + 1]
        (the slots written so far and the new token's) is padded with 0 over the empty slots."""
        mask = np.pad(mask, ((0, 0), (0, self.max_positions - mask.shape[1])))
        given = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
        return [np.ascontiguousarray(given[k], dtype=self.ids_dtype) for k in self.inputs]

    def describe_limit(self) -> str:
        return f"the model's cache capacity ({self.max_positions}, fixed when its cache was initialised)"


def _call_parameters(fn: Callable) -> list[str]:
    """The parameter names of ``fn`` (a module class's ``__call__`` or an apply function)."""
    return list(inspect.signature(fn).parameters)


def _cache_leaves(cache: Any) -> tuple[list[str], list[np.ndarray], Any]:
    import jax
    from .driver import path_name
    pairs, tree = jax.tree_util.tree_flatten_with_path(cache)
    names = [path_name(p) for p, _ in pairs]
    return [n[:-len(".value")] if n.endswith(".value") else n for n in names], [np.asarray(x) for _, x in pairs], tree


def _capacity(names: list[str], leaves: list[np.ndarray], module: Any) -> int:
    """The cache's length: axis -3 of flax's ``cached_key`` / ``cached_value`` ([batch, length, heads, depth])."""
    lengths = {int(x.shape[-3]) for n, x in zip(names, leaves)
               if n.rsplit(".", 1)[-1] in ("cached_key", "cached_value") and x.ndim >= 3}
    if len(lengths) != 1:
        found = "no cached_key / cached_value leaf" if not lengths else f"lengths {sorted(lengths)}"
        raise CaptureError(f"{type(module).__name__}'s cache has {found}: accelir reads the capacity from flax's "
                           "MultiHeadDotProductAttention(decode=True) cache, [batch, length, heads, depth]")
    return lengths.pop()


def _check_empty(names: list[str], leaves: list[np.ndarray], module: Any) -> None:
    """The cache must be as ``init`` / ``init_cache`` made it, batch first: each new batch's cache is its
    first row repeated, so a cache already written would start every generation after its tokens."""
    batches = {int(x.shape[0]) for x in leaves if x.ndim}
    if len(batches) != 1:
        raise CaptureError(f"{type(module).__name__}'s cache leaves disagree on their batch (axis 0): "
                           f"{sorted(batches)}; accelir needs flax's layout, batch first")
    for name, x in zip(names, leaves):
        if name.rsplit(".", 1)[-1] != "cache_index":
            continue
        if x.ndim:  # nn.scan / nnx.vmap over layers: the layers' axis leads, not the batch
            raise CaptureError(f"{type(module).__name__}'s cache is stacked over layers ({name} has shape "
                               f"{list(x.shape)}, not a scalar): accelir needs each layer's cache batch first; "
                               "build the layers without nn.scan for decoding")
        if int(x) != 0:
            raise CaptureError(f"{type(module).__name__}'s cache is not empty: {name} is {int(x)}; pass the module "
                               "with the cache init / init_cache made, before any call")


def _repeat_first_row(leaves: list[np.ndarray]) -> Callable[[int], list[np.ndarray]]:
    """A module's empty cache for any batch: each leaf's first row as init made it, repeated (0-d leaves,
    a shared index, as they are)."""
    row = [x if x.ndim == 0 else x[:1] for x in leaves]

    def empty(batch: int) -> list[np.ndarray]:
        return [x if x.ndim == 0 else np.ascontiguousarray(np.broadcast_to(x, (batch,) + x.shape[1:])) for x in row]
    return empty


def _linen_parts(model: Any) -> tuple[Any, Any, Callable]:
    """A bound linen module's weights (every collection but the cache), its cache, and
    ``make_step(tree, inputs)``: ``step(weights, *inputs, *cache) -> (logits, *cache)``, one ``apply``
    with the cache mutable."""
    import jax
    module, variables = model.unbind()

    def make_step(tree: Any, inputs: tuple[str, ...]) -> Callable:
        def step(weights: dict, *args: Any) -> tuple:
            named = dict(zip(inputs, args))
            cache = jax.tree_util.tree_unflatten(tree, args[len(inputs):])
            logits, mutated = module.apply({**weights, "cache": cache}, named.pop("input_ids"), **named,
                                           mutable=["cache"])
            return (logits, *jax.tree_util.tree_leaves(mutated["cache"]))
        return step
    return {k: v for k, v in variables.items() if k != "cache"}, variables["cache"], make_step


def _nnx_parts(model: Any) -> tuple[Any, Any, Callable]:
    """An nnx module's parameters, its ``nnx.Cache`` state, and ``make_step`` as for linen: the module merged
    from its graph definition, the parameters, the cache and the rest of its state (closed over), then called."""
    import jax
    from flax import nnx
    graphdef, cache, params, rest = nnx.split(model, nnx.Cache, nnx.Param, ...)

    def make_step(tree: Any, inputs: tuple[str, ...]) -> Callable:
        def step(weights: Any, *args: Any) -> tuple:
            named = dict(zip(inputs, args))
            merged = nnx.merge(graphdef, jax.tree_util.tree_unflatten(tree, args[len(inputs):]), weights, rest)
            logits = merged(named.pop("input_ids"), **named)
            return (logits, *jax.tree_util.tree_leaves(nnx.state(merged, nnx.Cache)))
        return step
    return params, cache, make_step


def _explicit_parts(model: CacheDecoder) -> tuple[Any, Any, Callable]:
    """A CacheDecoder's parameters, its empty cache of batch 1, and ``make_step`` as for linen."""
    def make_step(tree: Any, inputs: tuple[str, ...]) -> Callable:
        return _explicit_call(model.apply_fn, "apply_fn", tree, inputs)
    return model.params, model.init_cache(1), make_step


def _explicit_call(fn: Callable, name: str, tree: Any, inputs: tuple[str, ...]) -> Callable:
    """``fn`` (a CacheDecoder's ``apply_fn`` or ``prefill_fn``) over flat arrays: ``(weights, *inputs, *cache) ->
    (logits, *cache)``; the cache it returns must have the structure it took."""
    import jax

    def call(weights: Any, *args: Any) -> tuple:
        named = dict(zip(inputs, args))
        cache = jax.tree_util.tree_unflatten(tree, args[len(inputs):])
        logits, new = fn(weights, cache, named.pop("input_ids"), **named)
        leaves, new_tree = jax.tree_util.tree_flatten(new)
        if new_tree != tree:
            raise CaptureError(f"CacheDecoder.{name} returned a cache of another structure than it took: "
                               f"{new_tree}, not {tree}")
        return (logits, *leaves)
    return call


def _last_position(prefill: Callable) -> Callable:
    """A prefill returning logits [batch, seq, vocab], as one returning the last position's [batch, 1, vocab]."""
    def last(weights: Any, *args: Any) -> tuple:
        logits, *cache = prefill(weights, *args)
        if getattr(logits, "ndim", None) != 3:
            raise CaptureError(f"CacheDecoder.prefill_fn must return logits [batch, seq, vocab]; it returned "
                               f"shape {list(getattr(logits, 'shape', []))}")
        return (logits[:, -1:], *cache)
    return last


def _scanned(step: Callable, layout: FlaxCacheLayout, dtype: np.dtype) -> Callable:
    """``step`` over a whole prompt in one function: ``prefill(weights, *inputs, *cache) -> (logits [batch, 1,
    vocab], *cache)``, one ``lax.scan`` over the prompt's positions whose step t takes token t, its position,
    and the mask's slots up to t (those written so far and its own), as the prompt fed token by token
    sees them.  The last step's logits are carried, not stacked: a prompt's logits would be [seq, batch,
    vocab]."""
    import jax.numpy as jnp
    from jax import lax
    inputs = layout.inputs
    slots = np.arange(layout.max_positions)

    def prefill(weights: Any, *args: Any) -> tuple:
        named = dict(zip(inputs, args))
        mask = named.pop("attention_mask", None)
        per_token = {k: jnp.swapaxes(x, 0, 1)[..., None] for k, x in named.items()}  # [seq, batch, 1]

        def body(carry: tuple, x: dict) -> tuple:
            t, _, cache = carry
            feeds = dict(x)
            if mask is not None:
                feeds["attention_mask"] = jnp.where(slots <= t, mask, jnp.zeros_like(mask))
            out = step(weights, *(feeds[k] for k in inputs), *cache)
            return (t + 1, out[0], tuple(out[1:])), None
        first = jnp.zeros((args[0].shape[0], 1, layout.vocab_size), dtype)
        (_, logits, cache), _ = lax.scan(body, (jnp.int32(0), first, tuple(args[len(inputs):])), per_token)
        return (logits, *cache)
    return prefill


def _flax_errors() -> tuple[type, ...]:
    """flax's exception class, where flax is installed (a CacheDecoder needs only jax)."""
    try:
        from flax.errors import FlaxError
    except ImportError:
        return ()
    return (FlaxError,)


_PARTS = {"linen": _linen_parts, "nnx": _nnx_parts, "explicit": _explicit_parts}


@dataclass(frozen=True)
class _DecoderParts:
    """What capture and the plain jax loop read from a decoder: its weights, its cache's tree and leaf names,
    the step's inputs, an empty cache per batch, the capacity, and the step over flat arrays."""

    weights: Any
    tree: Any
    names: tuple[str, ...]
    inputs: tuple[str, ...]
    empty: Callable[[int], list[np.ndarray]]
    capacity: int
    step: Callable[..., tuple]


def _decoder_parts(model: Any) -> _DecoderParts:
    problem = flax_cache_problem(model)
    if problem:
        raise CaptureError(f"cannot capture a key/value cache path: {problem}")
    api = _flax_api(model)
    weights, cache, make_step = _PARTS[api](model)
    names, leaves, tree = _cache_leaves(cache)
    capacity = model.capacity if api == "explicit" and model.capacity else _capacity(names, leaves, model)
    _check_empty(names, leaves, model)
    params = _call_parameters(model.apply_fn if api == "explicit" else type(model).__call__)
    inputs = ("input_ids",) + tuple(k for k in OPTIONAL_INPUTS if k in params)
    empty = ((lambda batch: _cache_leaves(model.init_cache(batch))[1]) if api == "explicit"
             else _repeat_first_row(leaves))
    return _DecoderParts(weights, tree, tuple(names), inputs, empty, capacity, make_step(tree, inputs))


def capture_flax_decoder(model: Any) -> tuple[Graph, Graph, FlaxCacheLayout]:
    """The prefill and decode-step graphs of a flax decoder and its cache layout (see the module docstring)."""
    parts = _decoder_parts(model)
    inputs, capacity, empty = parts.inputs, parts.capacity, parts.empty
    graph = _capture(model, parts.step, parts.weights, inputs, empty(1), capacity, "decode step (one token", "1")
    layout = FlaxCacheLayout(inputs=inputs, ids_dtype=np.dtype(np.int32), cache_names=parts.names, empty=empty,
                             vocab_size=int(graph.outputs[0].type.shape[-1]), max_positions=capacity)
    if isinstance(model, CacheDecoder) and model.prefill_fn is not None:
        prefill = _last_position(_explicit_call(model.prefill_fn, "prefill_fn", parts.tree, inputs))
    else:
        prefill = _scanned(parts.step, layout, graph.outputs[0].type.dtype.numpy)
    prefill_graph = _capture(model, prefill, parts.weights, inputs, empty(1), capacity, "prefill (the whole prompt",
                             "seq")
    for g in (prefill_graph, graph):
        name_step_io(g, layout)
        g.meta.pop("signature", None)  # called with flat arrays by the generation driver
    return prefill_graph, graph, layout


def jax_greedy(model: Any) -> Callable[[Any, int, Any], np.ndarray]:
    """The decoder's own greedy loop in plain jax, as flax's decoding loops run it: ``greedy(ids, new, streamer)``
    feeds the prompt (ids [batch, seq], no padding) one token per call of the step under ``jax.jit``, then
    each argmax, and returns ids [batch, seq + new]; ``streamer`` (or None) gets ``put`` per step and ``end``.
    What ``accelir bench --generate`` times a flax decoder against."""
    import jax
    parts = _decoder_parts(model)
    step = jax.jit(lambda *args: parts.step(parts.weights, *args))

    def greedy(ids: Any, new: int, streamer: Any = None) -> np.ndarray:
        tokens = np.asarray(ids, np.int32)
        batch, length = tokens.shape
        if length + new > parts.capacity:  # flax's step would clamp the write into the last slot: wrong tokens
            raise InputError(f"the prompt ({length} tokens) plus {new} new tokens is {length + new} tokens, over "
                             f"the model's cache capacity ({parts.capacity}, fixed when its cache was initialised)")
        cache = parts.empty(batch)
        if streamer is not None:
            streamer.put(tokens)
        for t in range(length + new - 1):
            mask = np.zeros((batch, parts.capacity), np.int32)
            mask[:, :t + 1] = 1
            feeds = {"input_ids": tokens[:, t:t + 1], "attention_mask": mask, "position_ids": np.full((batch, 1), t,
                                                                                                     np.int32)}
            logits, *cache = step(*(feeds[k] for k in parts.inputs), *cache)
            if t >= length - 1:
                nxt = np.asarray(logits)[:, -1].argmax(-1).astype(np.int32)[:, None]
                tokens = np.concatenate([tokens, nxt], axis=1)
                if streamer is not None:
                    streamer.put(nxt[:, 0])
        if streamer is not None:
            streamer.end()
        return tokens
    return greedy


def _capture(model: Any, fn: Callable, weights: Any, inputs: tuple[str, ...], cache: list[np.ndarray],
             capacity: int, what: str, seq: str) -> Graph:
    """``fn`` (the step, or the prefill) captured for ``seq`` int32 tokens per sequence ("1" or the symbolic
    "seq"), batch symbolic, the weights as constants; ``what`` names it in errors."""
    from .driver import capture_jax
    ids = np.zeros((1, 1 if seq == "1" else 2), np.int32)
    example = {"input_ids": ids, "attention_mask": np.ones((1, capacity), np.int32), "position_ids": ids}
    specs = {"input_ids": f"batch, {seq}", "attention_mask": f"batch, {capacity}", "position_ids": f"batch, {seq}"}
    cache_specs = [None if x.ndim == 0 else ", ".join(["batch"] + [str(d) for d in x.shape[1:]]) for x in cache]
    try:
        graph = capture_jax(fn, (weights, *(example[k] for k in inputs), *cache), params_as_constants=True,
                            symbolic_shapes=(None, *(specs[k] for k in inputs), *cache_specs),
                            shape_constraints=() if seq == "1" else (f"{seq} <= {capacity}",))
    except (ValueError, TypeError, *_flax_errors()) as e:  # flax's own checks of a decode call
        raise CaptureError(f"cannot capture {type(model).__name__}'s {what}, input_ids [batch, {seq}] "
                           f"int32, with {', '.join(inputs[1:]) or 'no other input'}): "
                           f"{str(e).splitlines()[0]}") from None
    logits = graph.outputs[0].type.shape
    if len(graph.outputs) != len(cache) + 1 or len(logits) != 3 or not isinstance(logits[-1], int):
        raise CaptureError(f"{type(model).__name__} must return logits [batch, 1, vocab]; it returned "
                           f"{[str(v.type) for v in graph.outputs[:len(graph.outputs) - len(cache)]]}")
    return graph


def name_step_io(graph: Graph, layout: FlaxCacheLayout) -> None:
    """(Re)name the step graph's inputs and outputs; passes may rename output values."""
    for v, name in zip(graph.inputs, layout.inputs + tuple(f"cache.{n}" for n in layout.cache_names)):
        v.name = name
    for v, name in zip(graph.outputs, ("logits",) + tuple(f"present.{n}" for n in layout.cache_names)):
        v.name = name
