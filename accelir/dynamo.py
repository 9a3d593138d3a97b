"""accelir as a ``torch.compile`` backend: ``torch.compile(model, backend="accelir", options={...})``.

TorchDynamo traces the model's python, splits it into graphs at what it cannot trace
(``.item()``, data-dependent branches, prints) and hands each graph to a backend.  This
backend captures each one into the IR (:mod:`accelir.frontends.torch.dynamo`), runs the
pass pipeline and lowers it through :func:`accelir.optimize`, and returns a callable on
torch tensors.  Guards, recompiles and the glue between graphs stay Dynamo's.

- ``dynamic=True`` / ``torch._dynamo.mark_dynamic``: Dynamo's symbolic sizes become
  symbolic dims, so a new batch or sequence length runs the same compiled graph.
- A graph accelir cannot take (an op it does not map, a lowering gap) runs eagerly, with
  one warning naming the op; the model as a whole never fails on it.
- accelir compiles inference graphs: under autograd (grad enabled and an input or weight
  that requires grad) it says so once and runs the graphs eagerly.  Call the model under
  ``torch.no_grad()`` or ``torch.inference_mode()`` (Dynamo guards on the grad mode, so
  the same model compiles with accelir there).
- Weights are read when a graph compiles (as inductor does when it freezes them): after
  changing them in place, call ``torch._dynamo.reset()``.

The backend is found by name through the ``torch_dynamo_backends`` entry point of the
installed package, and ``import accelir`` registers it where ``torch._dynamo`` is loaded
already (importing it costs seconds, so accelir never does so on its own).  This module
imports torch only when a graph arrives.
"""

from __future__ import annotations

import inspect
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .errors import AccelirError

__all__ = ["accelir_backend", "BackendOptions", "register"]

NAME = "accelir"


@dataclass(frozen=True)
class BackendOptions:
    """The ``options`` of ``torch.compile(backend="accelir", options=...)``.

    ``backend``: "onnxruntime", "xla" or "auto" (each graph timed on both, the faster kept);
    ``level`` and ``passes`` as in :func:`accelir.optimize`; ``precision`` is handed to
    ``optimize`` where it takes one; ``debug``: the PassManager's options (a ``dump_dir``
    gets one subfolder per graph); ``fallback``: False raises where accelir cannot take a
    graph instead of running it eagerly (to find out why)."""

    backend: str = "onnxruntime"
    level: int = 2
    passes: Sequence[Any] | None = None
    precision: str | None = None
    debug: Mapping[str, Any] | None = None
    fallback: bool = True

    @classmethod
    def parse(cls, options: Mapping[str, Any] | None) -> BackendOptions:
        """Check the user's options: an unknown key or value is an AccelirError saying what is accepted."""
        from .api import BACKENDS
        if options is not None and not isinstance(options, Mapping):
            raise AccelirError(f"torch.compile(backend='accelir'): options must be a dict, got "
                               f"{type(options).__name__}")
        options = dict(options or {})
        known = list(cls.__dataclass_fields__)
        unknown = sorted(set(options) - set(known), key=repr)
        if unknown:
            raise AccelirError(f"torch.compile(backend='accelir'): unknown option{'s' if len(unknown) > 1 else ''} "
                               f"{', '.join(map(repr, unknown))}; the options are {', '.join(known)}")
        opts = cls(**options)
        if opts.backend not in BACKENDS + ("auto",):
            raise AccelirError(f"torch.compile(backend='accelir'): options['backend'] is {opts.backend!r}; "
                               f"choose one of {', '.join(BACKENDS)} or 'auto'")
        if opts.precision is not None and "precision" not in _optimize_parameters():
            raise AccelirError("torch.compile(backend='accelir'): options['precision'] needs an accelir whose "
                               "optimize() takes precision=; this one does not: leave the option out")
        return opts


def _optimize_parameters() -> set[str]:
    from .api import optimize
    return set(inspect.signature(optimize).parameters)


_warned: set[str] = set()
_graph_count = 0


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, stacklevel=3)


def reset() -> None:
    """Forget the warnings given once (``torch._dynamo.reset()`` calls this through torch.compile)."""
    global _graph_count
    _warned.clear()
    _graph_count = 0


def accelir_backend(gm: Any, example_inputs: list, *, options: Mapping[str, Any] | None = None,
                    mode: str | None = None) -> Callable[..., Any]:
    """The Dynamo backend: one FX graph and its example inputs in, a callable on torch tensors out."""
    opts = BackendOptions.parse(options)
    if mode not in (None, "default"):
        _warn_once(f"mode:{mode}", f"torch.compile(backend='accelir') ignores mode={mode!r}: "
                                   "pass accelir's own settings in options=")
    if _under_autograd(example_inputs):
        _warn_once("autograd", "accelir compiles inference graphs: with gradients enabled the model runs eagerly. "
                               "Call it under torch.no_grad() or torch.inference_mode() to run it with accelir.")
        return gm.forward
    try:
        return _compile(gm, example_inputs, opts)
    except Exception as e:  # noqa: BLE001 - whatever stops accelir on one graph, eager torch still runs it
        if not opts.fallback:
            raise
        warnings.warn(f"accelir cannot compile a graph of this model, which runs eagerly: {_reason(e)}", stacklevel=2)
        return gm.forward


accelir_backend.reset = reset  # type: ignore[attr-defined]


def _under_autograd(example_inputs: Sequence[Any]) -> bool:
    import torch
    return torch.is_grad_enabled() and any(isinstance(x, torch.Tensor) and x.requires_grad for x in example_inputs)


def _reason(e: BaseException) -> str:
    """One line: the error's first, which names the op where one is the cause."""
    text = (str(e).strip().splitlines() or [""])[0]
    return text if isinstance(e, AccelirError) else f"{type(e).__name__}: {text}"


def _compile(gm: Any, example_inputs: list, opts: BackendOptions) -> Callable[..., Any]:
    import numpy as np
    import torch
    import torch.utils._pytree as pytree

    from .api import optimize
    from .frontends.torch.dynamo import capture_dynamo

    global _graph_count
    index, _graph_count = _graph_count, _graph_count + 1
    with torch.no_grad():
        captured = capture_dynamo(gm, example_inputs)
    taken, scalars = captured.inputs, captured.scalars
    examples = [example_inputs[i] for i in taken]
    device = "cuda" if any(x.device.type == "cuda" for x in examples) else "cpu"
    kwargs: dict[str, Any] = {"backend": opts.backend, "device": device, "level": opts.level, "passes": opts.passes}
    if opts.debug:
        debug = dict(opts.debug)
        if debug.get("dump_dir"):
            debug["dump_dir"] = os.path.join(os.fspath(debug["dump_dir"]), f"graph{index:03d}")
        kwargs["debug"] = debug
    if opts.precision is not None:
        kwargs["precision"] = opts.precision
    compiled = optimize(captured.graph, tuple(examples), **kwargs)

    def run(*args: Any) -> Any:
        if scalars and any(args[i].item() != v for i, v in scalars.items()):
            return gm.forward(*args)  # a python number the graph baked in has changed
        outputs = compiled(*[args[i] for i in taken])
        if not taken:  # with no tensor to follow, the runners answer in numpy
            from .arrays import to_torch
            outputs = pytree.tree_map(lambda o: to_torch(o) if isinstance(o, np.ndarray) else o, outputs)
        return outputs

    run.compiled_model = compiled  # type: ignore[attr-defined]
    return run


def register() -> None:
    """Register the backend with Dynamo under ``"accelir"``, unless Dynamo knows the name already
    (from the entry point, whose loading imports accelir and then registers it itself)."""
    from torch._dynamo.backends.registry import _BACKENDS, _COMPILER_FNS, register_backend
    if NAME not in _BACKENDS and NAME not in _COMPILER_FNS:
        register_backend(accelir_backend, name=NAME)


def register_if_dynamo_loaded() -> None:
    """``import accelir``'s part: register only where torch._dynamo is loaded already."""
    if "torch._dynamo.backends.registry" in sys.modules:
        register()
