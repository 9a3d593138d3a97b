"""Generation for a flax decoder with its cache: ``optimize(module.bind(variables), (ids,))`` and ``cm.generate``.

The model is a bound ``flax.linen`` module with a ``cache`` collection, a ``flax.nnx`` module
with ``nnx.Cache`` state, or a :class:`CacheDecoder` (``apply_fn``, ``params`` and ``init_cache``
of a jax decoder whose cache is an explicit pytree).  Its decode step and its prefill are captured
as two graphs (:mod:`accelir.frontends.jax.generation`), run through the pass pipeline and lowered
for one backend.  The decoding loop is the one of :class:`accelir.generation.GenerationModel`
(greedy, sampling, EOS and padding, a streamer), so the flax path has the torch path's API and
semantics; only the steps differ.  The cache is flax's own, fixed capacity.  The prompt goes
in one runtime call: the prefill graph is the step scanned over the prompt's positions (flax's
``decode=True`` attention takes one token per call), so its time to first token pays one call's
dispatch, not one per prompt token:

- onnxruntime: the cache leaves are OrtValues bound (IO binding) as the next step's inputs,
  as :class:`accelir.generation.OrtSteps` keeps a transformers model's cache;
- xla: the cache leaves are device buffers donated to the jitted prefill, then to one jitted
  step; the model writes the new keys and values with ``dynamic_update_slice`` itself, so XLA
  updates them in place.  The prefill compiles once per prompt length rounded up to a multiple of
  16: a shorter prompt is left-padded to it (mask 0, as a batch's pads are), where the module takes
  the mask and the positions that hide the pads, the cache has room for them, and the padded
  prompt's logits come out without NaN (a module masking with -inf gives its pads NaN: it runs unpadded).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .api import CompiledModel, OptimizeReport, register_model_path
from .errors import AccelirError, InputError
from .frontends.jax.generation import CacheDecoder
from .generation import GenerationModel, OrtSteps, run_passes, shared_device_params
from .ir import Graph

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
    """``optimize()`` for a bound flax decoder: its prefill and decode step, optimised and lowered for ``backend``.

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
    prefill, graph, layout = capture_flax_decoder(model)
    report.stages["capture"] = time.perf_counter() - t0
    source = graph.copy()
    report.nodes_before = graph.num_nodes()
    t0 = time.perf_counter()
    report.passes = run_passes(graph, backend, level, passes, debug)
    prefill_report = run_passes(prefill, backend, level, passes, debug)
    for g in (prefill, graph):
        name_step_io(g, layout)
    report.stages["passes"] = time.perf_counter() - t0
    report.nodes_after = graph.num_nodes()
    t0 = time.perf_counter()
    if backend == "onnxruntime":  # the sessions read the graphs' weights in place, as the torch path's do
        from .lowering.onnxruntime import OnnxRuntimeModule
        runner = OnnxRuntimeModule(graph, device=device, share_weights=True)
        stepper: Any = _FlaxOrtSteps(OnnxRuntimeModule(prefill, device=device, share_weights=True), runner, layout)
    else:
        from .lowering.jax import JaxModule
        # the linear weights held as a one-token step reads them fastest, as the torch path's (JaxFunction)
        runner = JaxModule(graph, device=device, rows_of_outputs=True)
        stepper = _FlaxXlaSteps(JaxModule(prefill, device=device, rows_of_outputs=True), runner, layout)
    report.chosen = backend
    report.stages["lowering"] = time.perf_counter() - t0
    return FlaxGenerationModel(graph, source, runner, backend=backend, device=device, report=report,
                               example_inputs=_example_step(layout, example_inputs), decode_graph=graph,
                               decode_source_graph=source, decode_report=report.passes, layout=layout,
                               stepper=stepper, defaults={"eos_token_id": None, "pad_token_id": None},
                               prefill_graph=prefill, prefill_report=prefill_report)


def _example_step(layout: FlaxCacheLayout, example_inputs: Any) -> list[np.ndarray]:
    """The step graph's inputs for the first token of a batch like the example ids' (for .mlir / .hlo export)."""
    ids = example_inputs[0] if isinstance(example_inputs, (tuple, list)) and example_inputs else example_inputs
    batch = int(ids.shape[0]) if getattr(ids, "ndim", 0) == 2 else 1
    first = np.zeros((batch, 1))
    return layout.step_inputs(first, np.ones((batch, 1)), first) + layout.empty_cache(batch)


class _FlaxOrtSteps(OrtSteps):
    """Prefill and step on onnxruntime, the cache leaves held as OrtValues between steps."""

    def __init__(self, prefill: Any, decode: Any, layout: FlaxCacheLayout):
        """``prefill``: the prompt's graph (the step scanned over it) and ``decode``: the step, each an
        OnnxRuntimeModule; the flax step takes one token, so the prompt has a session of its own."""
        super().__init__(decode)
        self.prefill_session = prefill.session
        self._names[id(prefill.session)] = (prefill.input_names, prefill.output_names)
        self.layout = layout

    def prefill(self, ids: np.ndarray, mask: np.ndarray, pos: np.ndarray, capacity: int) -> np.ndarray:
        import onnxruntime
        empty = self.layout.empty_cache(ids.shape[0])  # read in place by the OrtValues: kept through the run
        past = [onnxruntime.OrtValue.ortvalue_from_numpy(x, self.device) for x in empty]  # 0-d leaves stay 0-d
        return self._run(self.prefill_session, self.layout.step_inputs(ids, mask, pos), past)

    def decode(self, ids: np.ndarray, mask: np.ndarray, pos: np.ndarray) -> np.ndarray:
        return self._run(self.decode_session, self.layout.step_inputs(ids, mask, pos), self.present)


_PROMPT_BUCKET = 16  # the XLA prefill compiles once per prompt length rounded up to a multiple of this


class _FlaxXlaSteps:
    """Prefill and step under jax.jit, the cache leaves device buffers donated to each call and written in place."""

    def __init__(self, prefill: Any, runner: Any, layout: FlaxCacheLayout):
        import jax
        from .lowering.jax.context import x64_scope
        fn, pre_fn = runner.function, prefill.function
        self.layout = layout
        self.device = runner.device
        self.x64_scope = x64_scope
        self.needs_x64 = fn.needs_x64 or pre_fn.needs_x64
        self.pre_params = pre_fn.device_params(self.device)
        self.params = shared_device_params(fn, pre_fn, self.pre_params, self.device)

        def call(fn: Any) -> Callable:
            def run(params: dict, cache: list, *feeds: Any) -> tuple:
                outs = fn.apply(params, *feeds, *cache)
                return outs[0][:, -1, :], list(outs[1:])
            return jax.jit(run, donate_argnums=(1,), compiler_options=runner.compiler_options)
        self._prefill, self._step = call(pre_fn), call(fn)
        self.buffers: list[Any] = []
        self.padding = 0  # the slots the prompt was left-padded with: the steps' masks hide them too
        self.can_pad = {"attention_mask", "position_ids"} <= set(layout.inputs)

    def _padding(self, length: int, total: int) -> int:
        """Pads before a prompt of ``length`` tokens in a generation of ``total``: up to the next multiple of
        _PROMPT_BUCKET, so a few compiled prefills serve every length, where the mask hides the pads (the
        positions skip them) and the cache has room for them; else none."""
        pad = -length % _PROMPT_BUCKET
        return pad if self.can_pad and total + pad <= self.layout.max_positions else 0

    def prefill(self, ids: np.ndarray, mask: np.ndarray, pos: np.ndarray, capacity: int) -> np.ndarray:
        self.padding = self._padding(ids.shape[1], capacity)
        logits = self._prefilled(*(np.pad(a, ((0, 0), (self.padding, 0))) for a in (ids, mask, pos)))
        if self.padding and np.isnan(logits).any():  # -inf logits (a token masked out) are the module's own
            # a module that masks with -inf gives a pad row, which sees no slot, NaN keys and values in the
            # layers after the first, and 0 * NaN reaches the prompt's tokens: this prompt runs unpadded, as
            # do the module's later ones (a NaN the module gives unpadded too is its own, returned as before)
            self.can_pad, self.padding = False, 0
            logits = self._prefilled(ids, mask, pos)
        return logits

    def _prefilled(self, ids: np.ndarray, mask: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """The prompt's last logits from a fresh cache, its buffers kept for the steps."""
        import jax
        with self.x64_scope(self.needs_x64):
            empty = [jax.device_put(x, self.device) for x in self.layout.empty_cache(ids.shape[0])]
            logits, self.buffers = self._prefill(self.pre_params, empty, *self.layout.step_inputs(ids, mask, pos))
            return np.asarray(logits)

    def decode(self, ids: np.ndarray, mask: np.ndarray, pos: np.ndarray) -> np.ndarray:
        mask = np.pad(mask, ((0, 0), (self.padding, 0)))
        with self.x64_scope(self.needs_x64):
            logits, self.buffers = self._step(self.params, self.buffers, *self.layout.step_inputs(ids, mask, pos))
            return np.asarray(logits)


class FlaxGenerationModel(GenerationModel):
    """A compiled flax decoder: ``cm.generate(...)`` decodes (jax ids in, jax ids out); ``cm(...)`` runs one
    step graph on its inputs in graph order (``cm.graph``: ids, mask / positions if taken, the cache);
    ``export`` writes that one graph (its cache, empty, is the past of the first token).
    ``cm.prefill_graph`` takes a whole prompt in one call (the step scanned over its positions)."""

    __call__ = CompiledModel.__call__
    export = CompiledModel.export

    def __init__(self, *args: Any, prefill_graph: Graph, prefill_report: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.prefill_graph = prefill_graph
        self.prefill_report = prefill_report

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
        """The slots a generation of ``total`` tokens fills: the cache is the model's own, fixed when it was
        initialised; the XLA prefill pads a prompt within the slots left."""
        return total

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
