"""Generation for a flax decoder with its cache: ``optimize(module.bind(variables), (ids,))`` and ``cm.generate``.

The model is a bound ``flax.linen`` module with a ``cache`` collection, a ``flax.nnx`` module
with ``nnx.Cache`` state, or a :class:`CacheDecoder` (``apply_fn``, ``params`` and ``init_cache``
of a jax decoder whose cache is an explicit pytree).  Its decode step is captured as one graph
(:mod:`accelir.frontends.jax.generation`),
run through the pass pipeline and lowered for one backend.  The decoding loop is the one of
:class:`accelir.generation.GenerationModel` (greedy, sampling, EOS and padding, a streamer), so
the flax path has the torch path's API and semantics; only the steps differ.  The cache is
flax's own, fixed capacity, and the prompt goes through the step one token at a time, as
flax's decoding loops feed it (its ``decode=True`` attention takes one token per call):

- onnxruntime: the cache leaves are OrtValues bound (IO binding) as the next step's inputs,
  as :class:`accelir.generation.OrtSteps` keeps a transformers model's cache;
- xla: the cache leaves are device buffers donated to one jitted step; the model writes the
  new keys and values with ``dynamic_update_slice`` itself, so XLA updates them in place.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .api import CompiledModel, OptimizeReport, build_runner, register_model_path
from .errors import AccelirError, InputError
from .frontends.jax.generation import CacheDecoder
from .generation import GenerationModel, OrtSteps, run_passes

if TYPE_CHECKING:
    from .frontends.jax.generation import FlaxCacheLayout

__all__ = ["CacheDecoder", "is_flax_decoder", "optimize_flax_decoder", "FlaxGenerationModel"]


def is_flax_decoder(model: Any) -> bool:
    """Whether ``model`` is a flax.linen module bound to variables with a ``cache`` collection, a flax.nnx
    module with ``nnx.Cache`` state, or a :class:`CacheDecoder` (an explicit cache pytree)."""
    from .frontends.jax.generation import flax_cache_problem, is_flax_module
    return is_flax_module(model) and flax_cache_problem(model) is None


def optimize_flax_decoder(model: Any, example_inputs: Any = None, *, backend: str = "onnxruntime",
                          device: str = "cpu", level: int = 2, passes: Sequence[Any] | None = None,
                          debug: dict[str, Any] | None = None, precision: str = "fp32", accuracy: Any = None,
                          calibration: Sequence[Any] | None = None) -> "FlaxGenerationModel":
    """``optimize()`` for a bound flax decoder: its decode step, optimised and lowered for ``backend``.

    Reduced precision is built for transformers causal LMs only (:mod:`accelir.generation_precision`); a flax
    decoder is refused with ``precision`` other than "fp32" rather than run in float32 unasked."""
    from .frontends.jax.generation import capture_flax_decoder, name_step_io
    if backend not in ("onnxruntime", "xla"):
        raise AccelirError(f"backend={backend!r}: a flax decoder generates on 'onnxruntime' or 'xla'; choose one")
    if precision != "fp32" or accuracy is not None or calibration is not None:
        raise AccelirError(f"precision={precision!r}: a flax decoder generates in float32 only; reduced precision "
                           "on the generation path is built for transformers causal LMs (leave precision, "
                           "accuracy and calibration unset)")
    report = OptimizeReport()
    t0 = time.perf_counter()
    graph, layout = capture_flax_decoder(model)
    report.stages["capture"] = time.perf_counter() - t0
    source = graph.copy()
    report.nodes_before = graph.num_nodes()
    t0 = time.perf_counter()
    report.passes = run_passes(graph, backend, level, passes, debug)
    name_step_io(graph, layout)
    report.stages["passes"] = time.perf_counter() - t0
    report.nodes_after = graph.num_nodes()
    t0 = time.perf_counter()
    if backend == "onnxruntime":  # the session reads the step's weights in place, as the torch path's do
        from .lowering.onnxruntime import OnnxRuntimeModule
        runner = OnnxRuntimeModule(graph, device=device, share_weights=True)
    else:
        runner = build_runner(graph, backend, device)
    stepper = _FlaxOrtSteps(runner, layout) if backend == "onnxruntime" else _FlaxXlaSteps(runner, layout)
    report.chosen = backend
    report.stages["lowering"] = time.perf_counter() - t0
    return FlaxGenerationModel(graph, source, runner, backend=backend, device=device, report=report,
                               example_inputs=_example_step(layout, example_inputs), decode_graph=graph,
                               decode_source_graph=source, decode_report=report.passes, layout=layout,
                               stepper=stepper, defaults={"eos_token_id": None, "pad_token_id": None})


def _example_step(layout: FlaxCacheLayout, example_inputs: Any) -> list[np.ndarray]:
    """The step graph's inputs for the first token of a batch like the example ids' (for .mlir / .hlo export)."""
    ids = example_inputs[0] if isinstance(example_inputs, (tuple, list)) and example_inputs else example_inputs
    batch = int(ids.shape[0]) if getattr(ids, "ndim", 0) == 2 else 1
    first = np.zeros((batch, 1))
    return layout.step_inputs(first, np.ones((batch, 1)), first) + layout.empty_cache(batch)


def _feed_prompt(decode: Callable[..., np.ndarray], ids: np.ndarray, mask: np.ndarray,
                 positions: np.ndarray) -> np.ndarray:
    """The prompt through the step, token by token; the logits after its last token."""
    for t in range(ids.shape[1]):
        logits = decode(ids[:, t:t + 1], mask[:, :t + 1], positions[:, t:t + 1])
    return logits


class _FlaxOrtSteps(OrtSteps):
    """The step on onnxruntime, the cache leaves held as OrtValues between steps."""

    def __init__(self, runner: Any, layout: FlaxCacheLayout):
        super().__init__(runner)
        self.layout = layout
        self._empty: list[np.ndarray] = []

    def prefill(self, ids: np.ndarray, mask: np.ndarray, pos: np.ndarray, capacity: int) -> np.ndarray:
        import onnxruntime
        self._empty = self.layout.empty_cache(ids.shape[0])  # the first OrtValues read these arrays in place
        self.present = [onnxruntime.OrtValue.ortvalue_from_numpy(x, self.device) for x in self._empty]
        return _feed_prompt(self.decode, ids, mask, pos)

    def decode(self, ids: np.ndarray, mask: np.ndarray, pos: np.ndarray) -> np.ndarray:
        return self._run(self.decode_session, self.layout.step_inputs(ids, mask, pos), self.present)


class _FlaxXlaSteps:
    """The step under jax.jit, the cache leaves device buffers donated to each step and written in place."""

    def __init__(self, runner: Any, layout: FlaxCacheLayout):
        import jax
        from .lowering.jax.context import x64_scope
        fn = runner.function
        self.layout = layout
        self.device = runner.device
        self.x64_scope = x64_scope
        self.needs_x64 = fn.needs_x64
        self.params = fn.device_params(self.device)

        def step(params: dict, cache: list, *feeds: Any) -> tuple:
            outs = fn.apply(params, *feeds, *cache)
            return outs[0][:, -1, :], list(outs[1:])
        self._step = jax.jit(step, donate_argnums=(1,), compiler_options=runner.compiler_options)
        self.buffers: list[Any] = []

    def prefill(self, ids: np.ndarray, mask: np.ndarray, pos: np.ndarray, capacity: int) -> np.ndarray:
        import jax
        with self.x64_scope(self.needs_x64):
            self.buffers = [jax.device_put(x, self.device) for x in self.layout.empty_cache(ids.shape[0])]
        return _feed_prompt(self.decode, ids, mask, pos)

    def decode(self, ids: np.ndarray, mask: np.ndarray, pos: np.ndarray) -> np.ndarray:
        with self.x64_scope(self.needs_x64):
            logits, self.buffers = self._step(self.params, self.buffers, *self.layout.step_inputs(ids, mask, pos))
            return np.asarray(logits)


class FlaxGenerationModel(GenerationModel):
    """A compiled flax decoder: ``cm.generate(...)`` decodes (jax ids in, jax ids out); ``cm(...)`` runs one
    step graph on its inputs in graph order (``cm.graph``: ids, mask / positions if taken, the cache);
    ``export`` writes that one graph (its cache, empty, is the past of the first token)."""

    __call__ = CompiledModel.__call__
    export = CompiledModel.export

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """As :meth:`GenerationModel.generate`, whose decoding loop (transformers' order of warpers,
        ``torch.multinomial`` draws) needs torch beside jax."""
        try:
            import torch  # noqa: F401
        except ImportError:
            raise AccelirError("generate() decodes with torch's sampling (the loop transformers' generate runs), and "
                               "torch is not installed: pip install 'accelir[torch]'") from None
        return super().generate(*args, **kwargs)

    def capacity_for(self, total: int) -> int:
        return self.layout.max_positions  # the model's own, fixed when its cache was initialised

    def _prompt(self, input_ids: Any, attention_mask: Any) -> tuple[np.ndarray, np.ndarray, bool]:
        ids, mask, as_numpy = super()._prompt(input_ids, attention_mask)
        if "attention_mask" not in self.layout.inputs and not mask.all():
            raise InputError("attention_mask has padding (0s), but the flax module's __call__ takes no attention_mask "
                             "to hide it: generate the prompts one by one, or give the module an attention_mask "
                             "argument ([batch, cache capacity], 1 on tokens)")
        return ids, mask, as_numpy

    def __repr__(self) -> str:
        return f"Flax{super().__repr__()}"


register_model_path(is_flax_decoder, optimize_flax_decoder)
