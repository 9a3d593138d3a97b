"""Text generation with a key/value cache: ``optimize(causal_lm, ...)`` and ``cm.generate(...)``.

A transformers causal LM (a torch module with ``generate`` and ``config.use_cache``) is
captured as a prefill graph and a decode graph (:mod:`accelir.frontends.torch.generation`),
both run through the pass pipeline, and lowered for one backend.  The decoding loop
(greedy, sampling with temperature / top-k / top-p, EOS and padding, ``min_new_tokens``,
a streamer) follows transformers' ``generate`` step for step, so greedy decoding gives
its tokens; only the model steps run on the backend:

- onnxruntime: one session, over the decode graph, which takes any number of new tokens:
  the prompt goes in, then one token per step (:class:`OrtSteps`), so the prompt and the steps
  share one prepacked copy of the weights.  The cache never leaves the session's side: where
  the decode attention is onnxruntime's GroupQueryAttention, it is one capacity-sized OrtValue
  per key / value and layer, bound (IO binding) as both the past input and the present output
  of every call, which the kernel writes in place (:mod:`accelir.generation_cache`); elsewhere
  the present keys/values of step t are ORT-allocated OrtValues bound as the past inputs of step
  t+1.  Only the token ids, mask and positions go in and the logits come out through numpy.
  The prefill graph is kept for ``export`` and the report.
- xla: the cache is one fixed-capacity buffer per key / value and layer (prompt plus new
  tokens, rounded up to 64, at most the model's position limit).  The decode graph is
  rewritten (:func:`in_place_cache`) so that each ``concat(past, new)`` becomes a
  ``dynamic_update_slice`` of the new token's keys and values into the buffer, which the
  attention then reads (the mask hides the slots not filled yet); the jitted step donates
  the buffers, so XLA writes them in place, and one compiled step serves every step.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .api import CompiledModel, OptimizeReport, pass_list, register_model_path
from .errors import AccelirError, InputError, LoweringError
from .ir import Graph

__all__ = ["is_causal_lm", "optimize_causal_lm", "GenerationModel", "GenerationTiming", "decode_path", "OrtSteps",
           "run_passes", "shared_device_params"]

_CAPACITY_STEP = 64  # the XLA cache's capacity is rounded up to a multiple of this


def is_causal_lm(model: Any) -> bool:
    """Whether ``model`` is a transformers causal LM with a cache path (optimize() then captures both graphs)."""
    if not callable(getattr(model, "generate", None)) or getattr(model, "config", None) is None:
        return False
    try:
        import torch
    except ImportError:
        return False
    if not isinstance(model, torch.nn.Module):
        return False
    from .frontends.torch.generation import cache_path_problem
    return cache_path_problem(model) is None


def decode_path(path: str) -> str:
    """``model.onnx`` -> ``model.decode.onnx``: where the decode graph goes beside the prefill graph."""
    root, suffix = os.path.splitext(path)
    return f"{root}.decode{suffix}"


def run_passes(graph: Graph, backend: str, level: int, passes: Sequence[Any] | None,
               debug: dict[str, Any] | None) -> Any:
    from .pass_manager import PassManager
    options = dict(debug or {})
    if options.get("check_numerics") is not None:
        raise AccelirError("debug check_numerics is not available for a causal LM, whose prefill and decode graphs "
                           "take different inputs: run PassManager(check_numerics=...) on cm.source_graph or "
                           "cm.decode_source_graph")
    pm = PassManager(pass_list(passes, level, backend), **options)
    pm.run(graph)
    return pm.report


def optimize_causal_lm(model: Any, example_inputs: Any = None, *, backend: str = "onnxruntime", device: str = "cpu",
                       level: int = 2, passes: Sequence[Any] | None = None,
                       debug: dict[str, Any] | None = None, precision: str = "fp32", accuracy: Any = None,
                       calibration: Sequence[Any] | None = None) -> "GenerationModel":
    """``optimize()`` for a causal LM: prefill and decode graphs, optimised and lowered for ``backend``, in
    ``precision`` within ``accuracy`` (:mod:`accelir.generation_precision`)."""
    from .frontends.torch.generation import capture_causal_lm, name_cache_io
    from .generation_precision import apply_generation_precision
    if backend not in ("onnxruntime", "xla"):
        raise AccelirError(f"backend={backend!r}: a causal LM generates on 'onnxruntime' or 'xla'; choose one")
    report = OptimizeReport()
    t0 = time.perf_counter()
    prefill, decode, layout = capture_causal_lm(model)
    report.stages["capture"] = time.perf_counter() - t0
    sources = (prefill.copy(), decode.copy())
    report.nodes_before = prefill.num_nodes()
    t0 = time.perf_counter()
    report.passes = run_passes(prefill, backend, level, passes, debug)
    decode_report = run_passes(decode, backend, level, passes, debug)
    report.stages["passes"] = time.perf_counter() - t0
    if precision != "fp32":
        t0 = time.perf_counter()
        samples = _prompt_samples(example_inputs, calibration, layout.vocab_size)
        report.precision = apply_generation_precision(prefill, decode, precision, accuracy, samples, backend, device)
        report.stages["precision"] = time.perf_counter() - t0
    for g in (prefill, decode):
        name_cache_io(g, layout)
    report.nodes_after = prefill.num_nodes()
    t0 = time.perf_counter()
    if backend == "onnxruntime":  # one session: the prompt runs through the decode graph over an empty past
        stepper = OrtSteps.build(decode, device)
        runner = stepper
    else:
        from .lowering.jax import JaxModule
        runner = JaxModule(prefill, device=device, rows_of_outputs=True)  # the linear weights as the step reads them
        stepper = _XlaSteps(runner, decode)
    report.chosen = backend
    report.stages["lowering"] = time.perf_counter() - t0
    example = _example_prefill(example_inputs)
    return GenerationModel(prefill, sources[0], runner, backend=backend, device=device, report=report,
                           example_inputs=example, decode_graph=decode, decode_source_graph=sources[1],
                           decode_report=decode_report, layout=layout, stepper=stepper,
                           defaults=_token_defaults(model))


def _example_prefill(example_inputs: Any) -> list:
    """The prefill graph's inputs for the example ids (used by .mlir / .hlo export)."""
    ids = example_inputs[0] if isinstance(example_inputs, (tuple, list)) and example_inputs else example_inputs
    if ids is None or not hasattr(ids, "shape") or len(ids.shape) != 2:
        return []
    ids = np.asarray(ids, dtype=np.int64)
    mask = np.ones_like(ids)
    return [ids, mask, _positions(mask)]


def _prompt_samples(example_inputs: Any, calibration: Sequence[Any] | None, vocab: int) -> list[list[np.ndarray]]:
    """The prefill inputs an accuracy budget is checked on: the example prompt, or each ``calibration``
    entry (``input_ids`` or ``(input_ids[, attention_mask])``), as ``[ids, mask, positions]``."""
    if calibration is None:
        example = _example_prefill(example_inputs)
        return [example] if example else []
    out = []
    for i, entry in enumerate(calibration):
        ids, mask = (list(entry) + [None])[:2] if isinstance(entry, (tuple, list)) else (entry, None)
        ids = _int_array(f"calibration[{i}] input_ids", ids)
        mask = np.ones_like(ids) if mask is None else _int_array(f"calibration[{i}] attention_mask", mask)
        if ids.ndim != 2 or ids.size == 0 or mask.shape != ids.shape:
            raise InputError(f"calibration[{i}]: expected input_ids shaped [batch, sequence] and a mask of the "
                             f"same shape, got {list(ids.shape)} and {list(mask.shape)}")
        if ids.min() < 0 or ids.max() >= vocab:
            raise InputError(f"calibration[{i}] input_ids: token ids must lie in the vocabulary [0, {vocab})")
        out.append([ids, mask, _positions(mask)])
    return out


def _token_defaults(model: Any) -> dict[str, Any]:
    """eos / pad token ids from the model's generation config, as transformers' generate reads them."""
    config = getattr(model, "generation_config", None)
    return {"eos_token_id": getattr(config, "eos_token_id", None), "pad_token_id": getattr(config, "pad_token_id", None)}


def _positions(mask: np.ndarray) -> np.ndarray:
    """Position ids from a 0/1 attention mask, as transformers' generate makes them: pads get 0."""
    pos = np.cumsum(mask, axis=-1, dtype=np.int64) - 1
    return np.where(mask == 0, 0, pos).astype(np.int64)


# ----- the backends' steps -------------------------------------------------------------

class OrtSteps:
    """The prompt and the decode steps through one onnxruntime session over the decode graph, the cache
    held as OrtValues between steps.

    The decode graph takes any number of new tokens (a symbolic count) over the past: the prompt goes
    in, then each step as one token over the cache so far.  So one session holds the prepacked copy of
    the matmul weights that both need for speed; a separate prefill session would either add a second
    packed copy (the weights' size again) or run the prompt unpacked (GPT-2 small: a first token 1.6x
    slower).

    Where every decode attention is onnxruntime's GroupQueryAttention, the session runs the decode graph
    over one buffer per cache tensor (:mod:`accelir.generation_cache`): ``generate`` allocates each at
    the capacity (prompt plus new tokens, as XLA's) once, and binds it as both the past input and the
    present output of the prompt and of every step, so the kernel writes the new tokens' keys and values
    into it and no step copies the cache or allocates a longer one.  The buffers are bound once a generation
    (one io binding its runs share, each rebinding the token feeds), and each run writes its logits into an
    array of its own, so no cache tensor comes back to Python as an OrtValue each step (a tiny config's
    24-layer step: 3.0 -> 2.1 ms a token, the session's logits allocation gone with it).  Elsewhere the present keys / values
    of a step, one token longer than its past, are the next step's past."""

    @classmethod
    def build(cls, decode: Graph, device: str = "cpu", threads: int | None = None, *, share_cache: bool = True,
              arena: bool | None = None, config: dict[str, str] | None = None) -> "OrtSteps":
        """The session reads the graph's arrays (views of the model's parameters) in place.

        onnxruntime's CPU memory arena (``arena=None``: chosen by the cache's form): over the shared
        buffers no step allocates a cache, and the session runs without the arena, whose bins would keep
        the prompt's and the steps' freed buffers (GPT-2 small: 17 MiB less at the peak, the per-token
        time the same within the noise of a loaded machine).  In the concat form each step's cache is a
        token longer than the last one, which without the arena is a fresh allocation from the system
        every step (GPT-2 small at a past of 1024: 75 MiB of new pages a token, and per-token time no
        longer flat), so that form keeps it.  ``share_cache=False`` keeps the concat form even where the
        shared buffers apply (a comparison's baseline).  ``config``: the session's config entries."""
        from .generation_cache import share_cache_buffers, shares_cache
        from .lowering.onnxruntime import OnnxRuntimeModule
        past = [(v.type.shape[1], v.type.shape[3], v.type.dtype.numpy) for v in decode.inputs[3:]]
        names = [v.name for v in decode.inputs[3:]], [v.name for v in decode.outputs[1:]]
        rewrite = (lambda model: share_cache_buffers(model, *names)) if share_cache else None
        keep_arena = (lambda model: not shares_cache(model)) if arena is None else arena
        return cls(OnnxRuntimeModule(decode, device=device, threads=threads, share_weights=True, arena=keep_arena,
                                     rewrite=rewrite, config=config), past)

    def __init__(self, runner: Any, past: Sequence[tuple[int, int, np.dtype]] = ()):
        """``runner``: the decode graph's OnnxRuntimeModule; ``past``: each cache input's kv heads, head
        dim and dtype (its shape is ``[batch, kv_heads, past, head_dim]``)."""
        from .generation_cache import shares_cache
        self.runner = runner
        self.past = list(past)
        self.decode_session = runner.session
        self.device = "cuda" if runner.device == "cuda" else "cpu"
        self.present: list[Any] = []
        self._names = {id(runner.session): (runner.input_names, runner.output_names)}
        self._empty: list[np.ndarray] = []
        self.shared = bool(self.past) and shares_cache(runner.session)  # one buffer per cache tensor
        self.buffers: list[Any] = []  # the shared buffers of the current generation
        self._binding: Any = None  # over the shared buffers: the binding every run of a generation reuses
        # the logits' width and dtype where the session says them: each run writes its logits into an array
        # made for it, so a run reads back no other output (a Python wrapper per cache tensor, every step)
        from .lowering.onnx.kernels import ONNX_TYPE_STRINGS
        out = runner.session.get_outputs()[0]
        vocab, dtype = (out.shape or [None])[-1], ONNX_TYPE_STRINGS.get(out.type)
        self._logits = (vocab, dtype.numpy) if isinstance(vocab, int) and dtype and self.device == "cpu" else None

    def empty_past(self, batch: int) -> list[np.ndarray]:
        """Zero-length past keys / values ``[batch, kv_heads, 0, head_dim]``, one per cache input."""
        return [np.zeros((batch, heads, 0, dim), dtype) for heads, dim, dtype in self.past]

    def __call__(self, ids: Any, mask: Any, pos: Any) -> list:
        """Every output of the prompt over an empty past (``cm(...)``): each position's logits and the cache."""
        import torch
        empty = [torch.from_numpy(e) for e in self.empty_past(int(ids.shape[0]))]
        return self.runner(ids, mask, pos, *empty)

    def _run(self, session: Any, feeds: Sequence[np.ndarray], past: Sequence[Any]) -> np.ndarray:
        inputs, outputs = self._names[id(session)]
        if self.buffers and self._binding is not None:
            binding = self._binding  # the buffers stay bound as the past and the present: written in place
        else:
            binding = session.io_binding()
            binding.bind_output(outputs[0], "cpu")  # the logits first: get_outputs() lists them in binding order
            for name, v in zip(inputs[len(feeds):], past):
                binding.bind_ortvalue_input(name, v)
            for i, name in enumerate(outputs[1:]):
                if self.buffers:
                    binding.bind_ortvalue_output(name, self.buffers[i])  # the past's own buffer: written in place
                else:
                    binding.bind_output(name, self.device)  # the cache stays where the session runs
            if self.buffers:
                self._binding = binding
        for name, x in zip(inputs, feeds):
            binding.bind_cpu_input(name, np.require(x, requirements="C"))  # a 0-d feed stays 0-d; rebound each run
        if self.buffers and self._logits is not None:  # the logits into an array of their own, read by the sampler
            vocab, dtype = self._logits
            logits = np.empty(feeds[0].shape[:2] + (vocab,), dtype)
            binding.bind_output(outputs[0], "cpu", 0, dtype, logits.shape, logits.ctypes.data)
            session.run_with_iobinding(binding)
            self.present = list(self.buffers)  # each run's present keys / values are the buffers, written in place
            return logits[:, -1, :]
        binding.bind_output(outputs[0], "cpu")  # rebound where it was bound: still the first output
        session.run_with_iobinding(binding)
        outs = binding.get_outputs()
        self.present = list(outs[1:])
        return outs[0].numpy()[:, -1, :]

    def prefill(self, ids: np.ndarray, mask: np.ndarray, pos: np.ndarray, capacity: int) -> np.ndarray:
        import onnxruntime
        batch = ids.shape[0]
        if self.shared:  # zeroed pages the kernel fills as it writes; the OrtValues read the arrays in place
            self._empty = [np.zeros((batch, heads, capacity, dim), dtype) for heads, dim, dtype in self.past]
        else:
            self._empty = self.empty_past(batch)  # the OrtValues read these arrays in place
        past = [onnxruntime.OrtValue.ortvalue_from_numpy(x, self.device) for x in self._empty]
        self.buffers = past if self.shared else []
        self._binding = None  # a new generation's buffers: bound afresh
        return self._run(self.decode_session, (ids, mask, pos), past)

    def decode(self, ids: np.ndarray, mask: np.ndarray, pos: np.ndarray) -> np.ndarray:
        return self._run(self.decode_session, (ids, mask, pos), self.buffers or self.present)


def in_place_cache(decode: Graph) -> Graph:
    """The decode graph over fixed-capacity cache buffers: each ``present = concat(past, new)`` (axis 2)
    becomes ``dynamic_update_slice(cache, new, 0, cache_index, 0)`` over a new input ``cache_*`` of
    the present's type with batch and heads merged (``[batch*heads, capacity, head_dim]``), at a new
    scalar input ``cache_index``; the attention then reads the buffer itself (a reshape back to four
    dims, a view), so a step writes one token's keys and values and copies nothing.  The past inputs
    stay (unread): a caller passes any ``[batch, heads, capacity - 1, head_dim]`` array for them.

    The buffers are three-dimensional because that is the shape the attention's dots take them in:
    a buffer written in place in one shape and read in another was copied by XLA:CPU (the in-place
    write and the reshape cannot share the buffer), and that copy of the whole cache each step made
    the per-token time grow with the capacity."""
    from .dims import dim_mul
    from .ir import DType, TensorType
    from .verify import verify
    g = decode.copy()
    index = g.add_input(TensorType(DType.i64, ()), "cache_index")
    for v in list(g.outputs[1:]):
        node = v.producer
        if node is None or node.op != "concat" or node.attrs["axis"] % v.rank != 2 or not node.inputs[0].is_graph_input:
            raise LoweringError(f"the decode graph's cache output {v.name} is not concat(past, new) on axis 2; "
                                "the XLA generation path needs that form")
        batch, heads, length, dim = v.shape
        merged = (dim_mul(batch, heads), length, dim)
        cache = g.add_input(TensorType(v.dtype, merged), v.name.replace("present", "cache"))
        b = g.builder(before=node)
        zero = b.scalar(0, DType.i64)
        new = b.op("reshape", node.inputs[1], shape=(merged[0], 1, dim))
        out = b.op("dynamic_update_slice", cache, new, zero, index, zero)
        at = g.outputs.index(v)
        v.replace_all_uses_with(b.op("reshape", out, shape=tuple(v.shape)))  # the attention reads a view
        g.outputs[at] = out
        g.remove(node)
        out.name = v.name
    verify(g)
    return g


class _XlaSteps:
    """Prefill then decode steps under jax.jit, the cache a fixed-capacity buffer updated in place."""

    def __init__(self, prefill: Any, decode: Graph):
        import jax
        from .grouped_attention import group_attention_heads
        from .lowering.jax import to_jax
        from .lowering.jax.context import x64_scope
        self.x64_scope = x64_scope
        self.device = prefill.device
        pre_fn = prefill.function
        step_graph = in_place_cache(decode)
        group_attention_heads(step_graph)  # grouped-query heads read the kv buffers as they lie, not repeated
        dec_fn = to_jax(step_graph, rows_of_outputs=True)  # one token's matrix-vector products stream rows
        self.needs_x64 = pre_fn.needs_x64 or dec_fn.needs_x64
        pre_params = pre_fn.device_params(self.device)
        self.pre_params = pre_params
        self.dec_params = shared_device_params(dec_fn, pre_fn, pre_params, self.device)
        options = prefill.compiler_options  # accelir's XLA options (its CPU fault workarounds)
        self._prefill = jax.jit(_prefill_function(pre_fn), static_argnums=(4,), compiler_options=options)
        self._step = jax.jit(_step_function(dec_fn), donate_argnums=(1,), compiler_options=options)
        self.buffers: list[Any] = []
        self.filled = 0

    def prefill(self, ids: np.ndarray, mask: np.ndarray, pos: np.ndarray, capacity: int) -> np.ndarray:
        with self.x64_scope(self.needs_x64):
            logits, self.buffers = self._prefill(self.pre_params, ids, mask, pos, capacity)
            self.filled = ids.shape[1]
            self.capacity = capacity
            return np.asarray(logits)

    def decode(self, ids: np.ndarray, mask: np.ndarray, pos: np.ndarray) -> np.ndarray:
        # the step attends over every slot of the buffer, the new token's included; unfilled slots are masked
        full = np.zeros((mask.shape[0], self.capacity), np.int64)
        full[:, :self.filled] = mask[:, :-1]
        full[:, self.filled] = 1
        with self.x64_scope(self.needs_x64):
            logits, self.buffers = self._step(self.dec_params, self.buffers, ids, full, pos, np.int64(self.filled))
            self.filled += 1
            return np.asarray(logits)


def shared_device_params(fn: Any, other: Any, other_device: dict[str, Any], device: Any) -> dict[str, Any]:
    """``fn``'s device parameters, reusing ``other``'s device array for each weight both graphs hold (the same
    memory: both were captured as views of the model's arrays), so the second graph does not put another copy
    of the weights on the device.  Weights are matched by memory, not by name: a flax prefill holds its
    weights in its scan's body, under other names than the step's.  An array a pass made in each graph
    (Llama's q, k and v weights merged into one) is matched by value."""
    import jax
    from .arrays import memory_key
    from .lowering.jax.context import x64_scope

    def head(a: np.ndarray) -> tuple:  # a cheap key for arrays made by a pass (merged q / k / v), equal by value
        return a.shape, a.dtype.str, a.flat[:64].tobytes()  # 64 elements read, however the array lies
    placed = {memory_key(a): other_device[k] for k, a in other.params.items()}
    made: dict[tuple, list[tuple[np.ndarray, Any]]] = {}
    for k, a in other.params.items():
        made.setdefault(head(a), []).append((a, other_device[k]))

    def put(a: np.ndarray) -> Any:
        if memory_key(a) in placed:
            return placed[memory_key(a)]
        same = next((d for b, d in made.get(head(a), ()) if np.array_equal(a, b)), None)
        placed[memory_key(a)] = same if same is not None else jax.device_put(a, device)  # once for two names
        return placed[memory_key(a)]
    with x64_scope(fn.needs_x64):
        return {k: put(a) for k, a in fn.params.items()}


def _prefill_function(fn: Any) -> Callable:
    """The jitted prefill: the prompt's logits (last position) and the cache buffers padded to capacity."""
    import jax.numpy as jnp

    def prefill(params: dict, ids: Any, mask: Any, pos: Any, capacity: int) -> tuple:
        outs = fn.apply(params, ids, mask, pos)
        pad = capacity - ids.shape[1]
        buffers = [jnp.pad(p, ((0, 0), (0, 0), (0, pad), (0, 0))) for p in outs[1:]]
        # held as in_place_cache's step takes them: batch and heads merged
        buffers = [p.reshape((p.shape[0] * p.shape[1],) + p.shape[2:]) for p in buffers]
        return outs[0][:, -1, :], buffers
    return prefill


def _step_function(fn: Any) -> Callable:
    """The jitted decode step: ``in_place_cache``'s graph writes the new keys / values into the buffers
    at ``index`` (``dynamic_update_slice``) and attends over them; its outputs are the updated buffers."""
    from jax import lax

    def step(params: dict, buffers: list, ids: Any, mask: Any, pos: Any, index: Any) -> tuple:
        # the past inputs, dead: four-dimensional, one slot short of the buffers
        unread = [lax.slice_in_dim(b, 0, b.shape[1] - 1, axis=1) for b in buffers]
        unread = [u.reshape((ids.shape[0], -1) + u.shape[1:]) for u in unread]
        outs = fn.apply(params, ids, mask, pos, *unread, index, *buffers)
        return outs[0][:, -1, :], outs[1:]
    return step


# ----- the compiled model and its decoding loop --------------------------------------------

class GenerationModel(CompiledModel):
    """A compiled causal LM: ``cm(input_ids, attention_mask=None)`` runs the prompt (on onnxruntime through
    the decode graph over an empty past, on XLA through the prefill graph) and returns a transformers
    ``CausalLMOutputWithPast``, like the model; ``cm.generate(...)`` decodes."""

    def __init__(self, graph: Graph, source_graph: Graph, runner: Callable[..., list], *, decode_graph: Graph,
                 decode_source_graph: Graph, decode_report: Any, layout: Any, stepper: Any,
                 defaults: dict[str, Any], **kwargs: Any):
        super().__init__(graph, source_graph, runner, **kwargs)
        self.decode_graph = decode_graph
        self.decode_source_graph = decode_source_graph
        self.decode_report = decode_report
        self.layout = layout
        self._stepper = stepper
        self._defaults = defaults
        # the stepper holds one generation's cache from its prompt to its last step: a second thread's prompt
        # would replace the buffers the first one's steps read, so generations on one model take turns
        self._generating = threading.Lock()
        self._generating_in: int | None = None  # the thread whose generation holds the lock

    def __call__(self, input_ids: Any, attention_mask: Any = None, position_ids: Any = None) -> Any:
        import torch
        from transformers import DynamicCache
        from transformers.modeling_outputs import CausalLMOutputWithPast
        ids, mask, as_numpy = self._prompt(input_ids, attention_mask)
        pos = _positions(mask) if position_ids is None else np.asarray(position_ids, np.int64)
        outs = self._runner(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(pos))
        pairs = [(outs[i], outs[i + 1]) for i in range(1, len(outs), 2)]
        result = CausalLMOutputWithPast(logits=outs[0], past_key_values=DynamicCache(pairs))
        return result if not as_numpy else {"logits": outs[0].numpy(), "past_key_values": [o.numpy() for o in outs[1:]]}

    def _prompt(self, input_ids: Any, attention_mask: Any) -> tuple[np.ndarray, np.ndarray, bool]:
        """The token ids and mask as int64 numpy arrays, checked before anything runs."""
        as_numpy = isinstance(input_ids, np.ndarray)
        ids = _int_array("input_ids", input_ids)
        if ids.ndim != 2 or ids.size == 0:
            raise InputError(f"input_ids: expected token ids shaped [batch, sequence], got shape {list(ids.shape)}")
        vocab = self.layout.vocab_size
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab:
            raise InputError(f"input_ids: token id {lo if lo < 0 else hi} is outside the vocabulary [0, {vocab}); "
                             "use ids from the model's tokenizer")
        if attention_mask is None:
            mask = np.ones_like(ids)
        else:
            mask = _int_array("attention_mask", attention_mask)
            if mask.shape != ids.shape:
                raise InputError(f"attention_mask: shape {list(mask.shape)} differs from input_ids' {list(ids.shape)}")
            if ((mask != 0) & (mask != 1)).any():
                raise InputError("attention_mask: expected 0 (padding) and 1 (token) only, got values "
                                 f"{sorted(set(np.unique(mask).tolist()) - {0, 1})[:5]}")
        return ids, mask, as_numpy

    def capacity_for(self, total: int) -> int:
        """The cache capacity a generation of ``total`` tokens (prompt + new) uses on XLA."""
        capacity = -(-total // _CAPACITY_STEP) * _CAPACITY_STEP
        limit = self.layout.max_positions
        return min(capacity, limit) if limit else capacity

    def generate(self, input_ids: Any, attention_mask: Any = None, max_new_tokens: int = 20, min_new_tokens: int = 0,
                 do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, eos_token_id: int | Sequence[int] | None = None,
                 pad_token_id: int | None = None, streamer: Any = None, generator: Any = None,
                 seed: int | None = None) -> Any:
        """Generate up to ``max_new_tokens`` tokens after the prompt; returns prompt and new tokens shaped
        ``[batch, prompt + new]`` like ``model.generate``, torch in, torch out (numpy in, numpy out).

        Greedy decoding (``do_sample=False``) gives transformers' tokens.  Sampling draws with
        ``torch.multinomial`` from ``generator`` (a ``torch.Generator``), else from a generator
        seeded with ``seed``, else from torch's global generator (``torch.manual_seed``).
        Batches of several prompts are left-padded, with ``attention_mask`` 0 on the pads.
        ``streamer`` gets ``put(prompt)``, ``put(tokens)`` per step and ``end()`` (``TextStreamer``).
        Sequences that reach an EOS token continue with ``pad_token_id`` until all have ended.
        """
        import torch
        ids, mask, as_numpy = self._prompt(input_ids, attention_mask)
        self._check_length(ids.shape[1], max_new_tokens, min_new_tokens)
        if self._generating_in == threading.get_ident():
            raise InputError("generate() was called from inside a generation of the same model (from its streamer?): "
                             "generations on one model take turns, so it would wait for itself; call it once the "
                             "first one has returned")
        eos = _token_list(self._defaults["eos_token_id"] if eos_token_id is None else eos_token_id)
        pad = pad_token_id if pad_token_id is not None else self._defaults["pad_token_id"]
        if pad is None and eos:
            pad = eos[0]
        choose = _sampler(do_sample, temperature, top_k, top_p, generator, seed)
        total = ids.shape[1] + max_new_tokens
        position = _positions(mask)[:, -1:]
        prompt = torch.from_numpy(ids)
        if streamer is not None:
            streamer.put(prompt)
        unfinished = torch.ones(ids.shape[0], dtype=torch.bool)
        new_tokens: list[torch.Tensor] = []
        eos_ids = torch.tensor(eos, dtype=torch.long)
        # min_new_tokens masks the EOS scores; an EOS id outside the vocabulary (a tiny config's default) has none
        eos_scored = eos_ids[(eos_ids >= 0) & (eos_ids < self.layout.vocab_size)].numpy()
        with self._generating:
            self._generating_in = threading.get_ident()
            try:
                logits = self._stepper.prefill(ids, mask, _positions(mask), self.capacity_for(total))
                for step in range(max_new_tokens):
                    # scores in numpy: torch copies a vocabulary-sized row on its thread pool, whose wake-up
                    # costs more than the copy (GPT-2 small on a loaded machine: 7 ms of CPU a token); a copy,
                    # since jax's arrays are read-only and the EOS scores are masked in place
                    scores = np.array(logits, dtype=np.float32)
                    if eos and step < min_new_tokens:
                        scores[:, eos_scored] = -np.inf
                    tokens = choose(scores)
                    if eos:
                        tokens = torch.where(unfinished, tokens, torch.full_like(tokens, pad))
                    new_tokens.append(tokens)
                    if streamer is not None:
                        streamer.put(tokens)
                    if eos:
                        unfinished &= ~torch.isin(tokens, eos_ids)
                    if step == max_new_tokens - 1 or not unfinished.any():
                        break
                    mask = np.concatenate([mask, np.ones((mask.shape[0], 1), np.int64)], axis=1)
                    position = position + 1
                    logits = self._stepper.decode(tokens.numpy()[:, None].astype(np.int64), mask, position)
            finally:
                self._generating_in = None
        if streamer is not None:
            streamer.end()
        out = torch.cat([prompt] + [t[:, None] for t in new_tokens], dim=1)
        if as_numpy:
            return out.numpy()
        if type(input_ids).__module__.startswith("jax"):  # jax in, jax out, in the ids' own dtype
            import jax.numpy as jnp
            return jnp.asarray(out.numpy().astype(input_ids.dtype))
        return out.to(input_ids.device) if isinstance(input_ids, torch.Tensor) else out

    def _check_length(self, prompt: int, max_new_tokens: int, min_new_tokens: int) -> None:
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        if not isinstance(min_new_tokens, int) or not 0 <= min_new_tokens <= max_new_tokens:
            raise InputError(f"min_new_tokens must be an int from 0 to max_new_tokens ({max_new_tokens}), "
                             f"got {min_new_tokens!r}")
        limit = self.layout.max_positions
        if limit and prompt + max_new_tokens > limit:
            raise InputError(f"the prompt ({prompt} tokens) plus max_new_tokens ({max_new_tokens}) is "
                             f"{prompt + max_new_tokens} tokens, over {self.layout.describe_limit()}; "
                             "shorten the prompt or ask for fewer tokens")

    def export(self, path: str | os.PathLike, *, overwrite: bool = False) -> str:
        """As ``CompiledModel.export``; ``.onnx``, ``.mlir`` and ``.hlo`` write the prefill graph to ``path``
        and the decode graph beside it (``model.onnx`` -> ``model.decode.onnx``): both files or, on any
        failure, neither.  Weights the two ONNX graphs share (1 MiB or more) are written once, to
        ``model.onnx.data``, which ``model.decode.onnx`` reads too.  The decode graph's StableHLO keeps
        its batch and past length symbolic; its HLO (static shapes) is for a past as long as the example
        prompt."""
        path = os.fspath(path)
        suffix = os.path.splitext(path)[1].lower()
        if suffix == ".onnx":
            from .lowering.onnx import save_onnx_files, to_onnx
            # the prefill file is renamed into place last, so a reader never finds it without its decode graph;
            # weights both graphs hold are written once (share): the decode graph's file points at them
            save_onnx_files([(to_onnx(self.graph), path), (to_onnx(self.decode_graph), decode_path(path))],
                            overwrite=overwrite, share=True)
            return path
        if suffix not in (".mlir", ".hlo"):
            return super().export(path, overwrite=overwrite)
        from .fileio import atomic_outputs
        from .lowering import jax as jax_lowering
        if suffix == ".mlir":
            texts = [jax_lowering.stablehlo(self.graph, self._example_inputs),
                     jax_lowering.stablehlo(self.decode_graph, symbolic=True)]
        else:
            texts = [jax_lowering.hlo(self.graph, self._example_inputs),
                     jax_lowering.hlo(self.decode_graph, self._decode_examples())]
        with atomic_outputs(path, decode_path(path), overwrite=overwrite) as out:
            for target, text in zip((path, decode_path(path)), texts):
                with open(out.temp(target), "w", encoding="utf-8") as f:
                    f.write(text)
        return path

    def _decode_examples(self) -> list[np.ndarray]:
        """Inputs of the decode graph's shape for one step after the example prompt (their values do
        not matter: they only give the HLO its static shapes)."""
        from .dims import evaluate
        ids = self._example_inputs[0]
        bindings = {"batch": int(ids.shape[0]), "past": int(ids.shape[1]), "seq": 1}
        out = []
        for v in self.decode_graph.inputs:
            shape = tuple(evaluate(d, bindings) if not isinstance(d, int) else d for d in v.type.shape)
            out.append(np.zeros(shape, v.type.dtype.numpy))
        return out

    def __repr__(self) -> str:
        return f"Generation{super().__repr__()}"


def _int_array(what: str, x: Any) -> np.ndarray:
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        raise InputError(f"{what}: expected a torch tensor or numpy array of token ids, got a {type(x).__name__}")
    from .arrays import to_numpy
    a = to_numpy(x)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise InputError(f"{what}: token ids must be integers (int64), got dtype {getattr(x, 'dtype')}")
    return np.ascontiguousarray(a, dtype=np.int64)


def _token_list(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(value)]


def _sampler(do_sample: bool, temperature: float, top_k: int | None, top_p: float | None, generator: Any,
             seed: int | None) -> Callable[[Any], Any]:
    """Next tokens from ``[batch, vocab]`` scores: argmax, or a draw after transformers' warpers in
    its order (temperature, top-k, top-p)."""
    import torch
    if not do_sample:
        return lambda scores: torch.from_numpy(np.argmax(scores, axis=-1))  # the first maximum, as torch.argmax
    if not temperature > 0:
        raise InputError(f"temperature must be > 0 when sampling, got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise InputError(f"top_k must be a positive int, got {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise InputError(f"top_p must be in (0, 1], got {top_p!r}")
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(int(seed))

    def draw(scores: Any) -> Any:
        scores = torch.from_numpy(scores) / temperature
        if top_k is not None and top_k < scores.shape[-1]:
            kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]
            scores = scores.masked_fill(scores < kth, -float("inf"))
        if top_p is not None and top_p < 1:
            ordered, index = torch.sort(scores, descending=False, dim=-1)
            cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
            drop = cumulative <= (1 - top_p)
            drop[..., -1:] = False  # keep at least one token
            scores = scores.masked_fill(drop.scatter(1, index, drop), -float("inf"))
        probs = torch.softmax(scores, dim=-1)
        return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
    return draw


# ----- timing ------------------------------------------------------------------------------

@dataclass(frozen=True)
class GenerationTiming:
    """One generation's latency: to the first new token (prefill), and per token after it (decode)."""

    first_token: float
    per_token: float
    tokens: Any

    @staticmethod
    def measure(generate: Callable[[Any], Any]) -> "GenerationTiming":
        """Time ``generate(streamer)``, a call of ``generate`` (accelir's or transformers') that hands the
        streamer its tokens: the streamer stamps each ``put`` after the first (the prompt's)."""
        stamps: list[float] = []

        class Clock:
            def put(self, value: Any) -> None:
                stamps.append(time.perf_counter())

            def end(self) -> None:
                pass

        t0 = time.perf_counter()
        tokens = generate(Clock())
        new = stamps[1:]
        steps = np.diff(new)
        return GenerationTiming(new[0] - t0 if new else float("nan"),
                                float(np.median(steps)) if len(steps) else float("nan"), tokens)


register_model_path(is_causal_lm, optimize_causal_lm)
