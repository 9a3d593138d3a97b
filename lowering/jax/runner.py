"""The runner: :class:`JaxModule` jit-compiles a graph on one jax device and takes numpy arrays,
jax arrays or torch tensors (CPU tensors as numpy views, others through DLPack: no copies on
the same device).
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import jax
import numpy as np

from accelir.errors import LoweringError
from accelir.ir import Graph

from .context import framework_of, from_jax_array, to_jax, to_jax_array, x64_scope

_PLATFORMS = {"cpu": "cpu", "cuda": "gpu", "gpu": "gpu", "tpu": "tpu"}


def jax_device(device: str | None) -> Any:
    """The jax device for "cpu" / "cuda" (or "gpu", "tpu"); None is jax's default device."""
    if device is None:
        return jax.devices()[0]
    if device not in _PLATFORMS:
        raise LoweringError(f"unknown device {device!r}; choose one of {', '.join(_PLATFORMS)}")
    try:
        return jax.devices(_PLATFORMS[device])[0]
    except RuntimeError:
        have = ", ".join(sorted({d.platform for d in jax.devices()}))
        raise LoweringError(f"jax has no {device} device here (it has: {have}); install a jax build for it "
                            "(for CUDA: pip install 'jax[cuda12]') or use device='cpu'") from None


def _one_list(inputs: tuple) -> tuple:
    """The inputs of a call given either as arguments or as one list of them."""
    return tuple(inputs[0]) if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)) else inputs


# XLA's CPU backend hands these fusions, and reductions, to YNNPACK by default.  Its
# reduce fusion gets reduce(dot or conv(x, broadcast(w))) wrong, as a network with
# constant-filled weights makes it: NaN or 1e34 where XLA's own emitters give the sum,
# different from one process to the next, as from reading memory it does not own.
# accelir keeps the default set but the reduce fusion; XLA's emitters run reductions.
_YNN_FUSIONS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
_YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"


@functools.cache
def _cpu_compiler_options() -> dict[str, Any]:
    """The XLA options accelir compiles with on CPU; empty where this jaxlib lacks them."""
    options = {_YNN_OPTION: _YNN_FUSIONS}
    try:
        jax.jit(lambda x: x + 1, compiler_options=options).lower(np.float32(0)).compile()
    except Exception:  # an XLA without YNNPACK fusions (or with other names) rejects the option
        return {}
    return options


def xla_compiler_options(device: Any, user: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """accelir's XLA options for ``device`` under the caller's ``compiler_options``."""
    base = _cpu_compiler_options() if device.platform == "cpu" else {}
    return {**base, **dict(user or {})} or None


class JaxModule:
    """A jit-compiled graph on one jax device.

    Call it with the inputs in graph input order, or with one list of them; each is a
    numpy array, a jax array or a torch tensor (torch through DLPack, no copy on the
    same device).  Outputs come back as a list in the caller's framework: torch if any
    input is a torch tensor, else jax if any is a jax array, else numpy.
    ``compiler_options`` go to XLA (e.g. ``{"xla_backend_optimization_level": 0}`` to
    compile faster), over accelir's own on CPU (``_cpu_compiler_options``).  ``rows_of_outputs``:
    the ``linear`` weights held ``[N, K]`` (:class:`JaxFunction`), as a decode step reads them best.
    """

    def __init__(self, graph: Graph, device: str | None = None, compiler_options: Mapping[str, Any] | None = None,
                 *, rows_of_outputs: bool = False):
        self.function = to_jax(graph, rows_of_outputs=rows_of_outputs)
        self.graph = graph
        self.device = jax_device(device)
        keys = tuple(self.function.params)

        def run(values: tuple, *inputs: Any) -> list:
            return self.function.apply(dict(zip(keys, values)), *inputs)

        # the parameters go in as one tuple made once: a dict argument is flattened, key-sorted, on every call
        self.compiler_options = xla_compiler_options(self.device, compiler_options)  # for other jits of this function
        self._jitted = jax.jit(run, compiler_options=self.compiler_options)
        params = self.function.device_params(self.device)
        self._values = tuple(params[k] for k in keys)

    def _arguments(self, inputs: tuple) -> list:
        return [self._values] + [to_jax_array(x, self.device) for x in inputs]

    def __call__(self, *inputs: Any) -> list:
        inputs = _one_list(inputs)
        kinds = {framework_of(x) for x in inputs}
        kind = "torch" if "torch" in kinds else "jax" if "jax" in kinds else "numpy"
        with x64_scope(self.function.needs_x64):
            outs = self.function.crop(self._jitted(*self._arguments(inputs)))
            return [self._output(o, kind) for o in outs]

    def _output(self, o: Any, kind: str) -> Any:
        """One output as the caller's framework holds it ("numpy", "torch" or "jax")."""
        return from_jax_array(o, kind)

    def lower(self, *example_inputs: Any):
        """The ``jax.stages.Lowered`` of the compiled function for these inputs."""
        with x64_scope(self.function.needs_x64):
            return self._jitted.lower(*self._arguments(_one_list(example_inputs)))
