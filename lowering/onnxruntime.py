"""Run an ONNX model (``to_onnx``'s output or a file) with ONNX Runtime.

``OnnxRuntimeModule(model, device="cpu" | "cuda", session_options=None, threads=None)``
wraps an ``InferenceSession`` on the execution provider for the device.  ``model`` is
an ``onnx.ModelProto``, a path, or an accelir ``Graph``: a Graph is lowered with its
weights kept out of the model and handed to ONNX Runtime as external initializers:
ORT copies each once (packing the matmul weights), and no proto or serialised copy
of them is made, which halves the peak memory and the session build time.  Calling
it with arrays in graph input order returns the outputs as a list: numpy arrays for
numpy inputs, torch tensors for torch inputs, jax arrays for jax inputs.  On "cuda" it binds torch CUDA tensors to
the session directly (IO binding), so inputs and outputs stay on the device.  A
missing provider is a ``LoweringError`` that says how to install it, never a silent
fall back to the CPU.  bf16 (which numpy lacks) goes in and out as ml_dtypes arrays.
On the CPU the session runs without ORT's SkipLayerNormFusion, whose fused kernel is
slower there than the Add + LayerNormalization it replaces.
"""

from __future__ import annotations

import ctypes
import os
import sys
import tempfile
from typing import Any, Callable, Sequence

import ml_dtypes
import numpy as np
import onnx

from accelir import dims as D
from accelir.errors import LoweringError
from accelir.arrays import to_numpy, to_torch
from accelir.ir import Graph

from .onnx.kernels import EXTERNAL_DATA_THRESHOLD, ONNX_TYPE_STRINGS
from .onnx.model import save_onnx, to_onnx, to_onnx_external
from .onnx.run_time import run_time_error

__all__ = ["OnnxRuntimeModule", "PROVIDERS", "disabled_optimizers"]

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
_CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)
_NCHWC = "NchwcTransformer"


def disabled_optimizers(device: str, model: onnx.ModelProto | None = None) -> list[str] | None:
    """The ORT graph optimizers accelir turns off on ``device`` (``InferenceSession``'s
    ``disabled_optimizers``): on the CPU, SkipLayerNormFusion, whose fused kernel is slower
    there than the Add + LayerNormalization it replaces; and for a ``model`` with f16 / bf16
    casts, NchwcTransformer, which crashes ONNX Runtime 1.32's CPU session (a segfault while
    building it) on a Conv whose output goes through f16 casts, transposes and a LayerNormalization
    into a MatMul.  Public so that a comparison can give other ONNX files the same session."""
    if device != "cpu":
        return None
    extra = [_NCHWC] if model is not None and _casts_to_low_floats(model) else []
    return list(_CPU_DISABLED_OPTIMIZERS) + extra


def _casts_to_low_floats(model: onnx.ModelProto) -> bool:
    low = (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
    return any(n.op_type == "Cast" and any(a.name == "to" and a.i in low for a in n.attribute)
               for n in model.graph.node)

_BF16 = np.dtype(ml_dtypes.bfloat16)


def _import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise LoweringError("onnxruntime is not installed: pip install 'accelir[onnx]' (CPU) or "
                            "'accelir[gpu]' (CUDA)") from None
    return onnxruntime


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _is_jax(x: Any) -> bool:
    jax = sys.modules.get("jax")  # a jax array exists only once jax is imported
    return jax is not None and isinstance(x, jax.Array)


class OnnxRuntimeModule:
    """An ONNX model ready to run on ONNX Runtime; call it with arrays in graph input order."""

    def __init__(self, model: onnx.ModelProto | str | os.PathLike | Graph, device: str = "cpu",
                 session_options: Any = None, threads: int | None = None, *, share_weights: bool = False,
                 prepack: bool = True, arena: bool | Callable[[Any], bool] = True,
                 rewrite: Callable[[onnx.ModelProto], onnx.ModelProto] | None = None,
                 config: dict[str, str] | None = None):
        """``session_options``: used as given (default: ORT_ENABLE_ALL); ``threads``: the intra-op
        thread count of the default options.  With ``session_options`` a Graph's weights go inside
        the model, since external initializers would be added to (and stay in) the caller's options.

        ``share_weights`` (a Graph on the CPU, default options): the session reads the graph's arrays in
        place (``add_initializer``) instead of copying them, so sessions of graphs that hold the same
        arrays (a causal LM's prefill and decode graphs, views of the model's parameters) hold one copy
        between them.  ``prepack=False`` (default options) turns off the kernels' prepacked weight copies
        (``session.disable_prepacking``): a session that keeps them holds a second copy of its matmul
        weights, which onnxruntime's Python API cannot share between sessions.  ``arena=False`` (default
        options) turns off onnxruntime's CPU memory arena: freed buffers go back to the allocator
        instead of staying in the arena's bins; ``arena`` may also be a function of the model the session
        loads that says.  ``rewrite`` (a Graph or a ModelProto): applied to the ONNX model before the session
        loads it, for a session-only form of the model.  ``config`` (default options): session config entries
        (``add_session_config_entry``), e.g. ``{"session.force_spinning_stop": "1"}``."""
        ort = _import_ort()
        self._ort = ort
        if device not in PROVIDERS:
            raise LoweringError(f"unknown device {device!r}; use 'cpu' or 'cuda'")
        provider = PROVIDERS[device]
        if provider not in ort.get_available_providers():
            raise LoweringError(
                f"device {device!r} needs onnxruntime's {provider}, which this onnxruntime "
                f"({ort.__version__}, providers: {', '.join(ort.get_available_providers())}) lacks; "
                "install the GPU build with: pip uninstall onnxruntime && pip install 'accelir[gpu]'")
        self.device = device
        self._weights: list[Any] = []  # external initializers must outlive the session
        own_options = session_options is None
        if own_options:
            session_options = ort.SessionOptions()
            session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if threads:
                session_options.intra_op_num_threads = threads
            if not prepack:
                session_options.add_session_config_entry("session.disable_prepacking", "1")
            for key, value in (config or {}).items():
                if not isinstance(key, str) or not isinstance(value, str):
                    raise LoweringError(f"OnnxRuntimeModule config entry {key!r}: {value!r} is not a string pair; "
                                        "onnxruntime's session config takes strings, e.g. "
                                        "{'session.force_spinning_stop': '1'}")
                session_options.add_session_config_entry(key, value)
        elif threads or config:
            raise LoweringError("OnnxRuntimeModule takes threads or session_options, not both (nor config with "
                                "session_options): set intra_op_num_threads and the config entries in the session "
                                "options")
        if isinstance(model, Graph):
            if own_options:
                model, weights = to_onnx_external(model)
                self._weights = [self._to_ortvalue(a) for a in weights.values()]
                if weights:
                    session_options.add_external_initializers(list(weights), self._weights)
                if share_weights and device == "cpu":
                    for name, value in zip(weights, self._weights):
                        session_options.add_initializer(name, value)  # used in place, never copied
            else:
                model = to_onnx(model)
        if rewrite is not None:
            if not isinstance(model, onnx.ModelProto):
                raise LoweringError("OnnxRuntimeModule's rewrite takes a Graph or an onnx.ModelProto, not a file: "
                                    "load the file with onnx.load and pass the model")
            model = rewrite(model)
        if own_options and not (arena(model) if callable(arena) else arena):
            session_options.enable_cpu_mem_arena = False
        providers = [provider] if device == "cpu" else [provider, PROVIDERS["cpu"]]
        self.session = self._open(model, session_options, providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._output_shapes = [o.shape for o in self.session.get_outputs()]
        self._input_shapes = [i.shape for i in self.session.get_inputs()]
        self._output_types = [self._elem_type(t) for t in self.session.get_outputs()]
        io = self.session.get_inputs() + self.session.get_outputs()
        self._plain_io = all(a.type != "tensor(bfloat16)" for a in io)

    def _open(self, model, options, providers):
        # ORT's CPU SkipLayerNormalization kernels are several times slower than the Add + norm
        # they would replace (see lowering.onnx)
        disabled = disabled_optimizers(self.device, model if isinstance(model, onnx.ModelProto) else None)

        def session(source):
            return self._ort.InferenceSession(source, options, providers=providers, disabled_optimizers=disabled)
        if not isinstance(model, onnx.ModelProto):
            return session(os.fspath(model))
        if sum(_embedded_bytes(t) for t in model.graph.initializer) < EXTERNAL_DATA_THRESHOLD:
            return session(model.SerializeToString())
        # over protobuf's 2 GB limit: go through a file with external data
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.onnx")
            save_onnx(model, path, external_data=True)
            return session(path)

    @staticmethod
    def _elem_type(arg) -> np.dtype:
        dt = ONNX_TYPE_STRINGS.get(arg.type)  # e.g. "tensor(float)"
        return dt.numpy if dt is not None else np.dtype(np.float32)

    def __call__(self, *inputs: Any) -> list:
        if len(inputs) != len(self.input_names):
            raise LoweringError(f"the model takes {len(self.input_names)} inputs ({', '.join(self.input_names)}), "
                                f"got {len(inputs)}")
        as_torch = bool(inputs) and all(_is_torch(x) for x in inputs)
        state = self._ort.capi.onnxruntime_pybind11_state
        try:  # a kernel failing on the data (bincount of a negative value, say) is the caller's input error
            if self.device == "cuda" and as_torch:
                return self._run_cuda(inputs)
            outs = self._run_host(inputs)
        except (state.InvalidArgument, state.Fail, state.RuntimeException) as e:
            raise run_time_error(str(e)) from None
        if as_torch:
            import torch
            return [_torch_from_numpy(torch, o) for o in outs]
        if inputs and all(_is_jax(x) for x in inputs):  # jax in, jax out, as on the xla backend
            import jax.numpy as jnp
            return [jnp.asarray(o) for o in outs]
        return outs

    def _run_host(self, inputs: Sequence[Any]) -> list:
        if self._plain_io:
            return self.session.run(self.output_names, {n: to_numpy(x) for n, x in zip(self.input_names, inputs)})
        # bf16, which numpy lacks, goes in and out as OrtValues
        binding = self.session.io_binding()
        for name, x in zip(self.input_names, inputs):
            binding.bind_ortvalue_input(name, self._to_ortvalue(to_numpy(x)))
        for name in self.output_names:
            binding.bind_output(name)
        self.session.run_with_iobinding(binding)
        return [self._from_ortvalue(v) for v in binding.get_outputs()]

    def _to_ortvalue(self, a: np.ndarray):
        OrtValue = self._ort.OrtValue
        a = np.ascontiguousarray(a) if a.ndim else np.asarray(a).copy()
        if a.dtype == _BF16:
            return OrtValue.ortvalue_from_numpy_with_onnx_type(a.view(np.uint16), onnx.TensorProto.BFLOAT16)
        return OrtValue.ortvalue_from_numpy(a)

    @staticmethod
    def _from_ortvalue(v) -> np.ndarray:
        if v.data_type() != "tensor(bfloat16)":
            return v.numpy()
        shape = tuple(v.shape())
        n = int(np.prod(shape, dtype=np.int64))
        if n == 0:
            return np.zeros(shape, _BF16)
        buf = (ctypes.c_uint16 * n).from_address(v.data_ptr())
        return np.frombuffer(buf, dtype=np.uint16).copy().view(_BF16).reshape(shape)

    def _output_shapes_for(self, inputs: Sequence[Any]) -> list[tuple[int, ...]] | None:
        """Output shapes from the declared dim expressions and the input shapes, where they resolve."""
        bindings: dict[str, int] = {}
        for shape, x in zip(self._input_shapes, inputs):
            for d, n in zip(shape, x.shape):
                if isinstance(d, str) and d.isidentifier():
                    bindings[d] = int(n)
        out = []
        for shape in self._output_shapes:
            try:
                out.append(tuple(d if isinstance(d, int) else D.evaluate(d, bindings) for d in shape))
            except (KeyError, ValueError, SyntaxError, TypeError):
                return None
        return out

    def _run_cuda(self, inputs: Sequence[Any]) -> list:
        import torch
        binding = self.session.io_binding()
        keep = []
        for name, x in zip(self.input_names, inputs):
            x = x.contiguous()
            if x.device.type != "cuda":
                x = x.cuda()
            keep.append(x)
            binding.bind_input(name, "cuda", x.device.index or 0, _onnx_elem(x.dtype), list(x.shape), x.data_ptr())
        shapes = self._output_shapes_for(keep)
        dev = keep[0].device if keep else torch.device("cuda")
        outs = []
        if shapes is not None:
            for name, shape, dt in zip(self.output_names, shapes, self._output_types):
                t = torch.empty(shape, dtype=_torch_dtype(torch, dt), device=dev)
                outs.append(t)
                binding.bind_output(name, "cuda", dev.index or 0, _onnx_elem(t.dtype), list(shape), t.data_ptr())
            self.session.run_with_iobinding(binding)
            return outs
        for name in self.output_names:
            binding.bind_output(name, "cuda", dev.index or 0)
        self.session.run_with_iobinding(binding)
        # shapes that depend on values: ONNX Runtime allocated them; bring them over via DLPack where
        # this onnxruntime build offers it, else through the host
        results = []
        for v in binding.get_outputs():
            if hasattr(v, "to_dlpack"):
                results.append(torch.from_dlpack(v.to_dlpack()))
            else:
                results.append(_torch_from_numpy(torch, self._from_ortvalue(v)).to(dev))
        return results


def _embedded_bytes(t: onnx.TensorProto) -> int:
    """The size of an initializer's data inside the model, from its shape (reading raw_data copies it)."""
    if t.data_location == onnx.TensorProto.EXTERNAL:
        return 0
    return int(np.prod(t.dims, dtype=np.int64)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


def _torch_dtype(torch, dt: np.dtype):
    if dt == _BF16:
        return torch.bfloat16
    return torch.from_numpy(np.zeros(0, dt)).dtype


def _onnx_elem(torch_dtype) -> Any:
    """The numpy element type ONNX Runtime's bind_input / bind_output expect for a torch dtype."""
    import torch
    if torch_dtype == torch.bfloat16:
        return _BF16
    return torch.empty(0, dtype=torch_dtype).numpy().dtype.type


def _torch_from_numpy(torch, a: np.ndarray):
    return to_torch(a)
