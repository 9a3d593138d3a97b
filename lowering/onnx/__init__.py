"""Lower an accelir Graph to ONNX.

``to_onnx(graph, opset=None, target="onnxruntime" | "standard")`` walks the graph and
calls one rule per IR op from ``ONNX_RULES`` (filled with ``register_lowering``, as
jax registers a lowering per primitive).  A rule takes the lowering context, the IR
node and the ONNX values of its inputs, and returns the ONNX values of its outputs.
A composite op with no rule lowers through its decomposition into core ops.

The package: ``kernels`` (which dtypes ONNX Runtime's kernels take, opset bounds),
``context`` (the lowering context and the rule table), ``model`` (model assembly and
serialisation), and one rule module per op family (``elementwise``, ``reduce``,
``linalg``, ``shape``, ``nn`` for composites, ``decode`` for rotary embeddings and decode
attention, ``control`` for regions).  The runner,
``accelir.lowering.onnxruntime``, builds on this package; this package never imports it.

Choices a reader should know:

* dtype gaps: ONNX Runtime's CPU kernels lack many dtypes (most ops have no f16,
  bf16 or i8 kernel).  The lowering asks ONNX Runtime's kernel registry (or the ONNX
  schema when onnxruntime is not installed) which dtypes an op takes and, where the
  node's dtype is missing, casts its operands to the nearest wider dtype that has a
  kernel and the result back.  This is exact: the IR computes f16 / bf16 in f32 and
  rounds once, and integer results wrap the same way in a wider type.  Where no
  wider dtype has a kernel (f64 conv, for instance) it raises ``LoweringError``
  naming the node, before anything runs.  Both targets follow this policy, so every
  model we write runs on ONNX Runtime.
* symbolic dims become ``dim_param``; a shape-valued attribute holding symbols is
  computed at run time from ``Shape`` of a value carrying each symbol (``dims``).
* constants become initializers of the main graph (subgraphs read them by outer
  scope); value names come from the IR; each ONNX node carries the provenance of its
  IR node in ``metadata_props``.
* regions: ``fusion`` is inlined, ``cond`` becomes ``If`` (a chain of them for an int
  index), ``while_loop`` and ``scan`` become ``Loop``.
* composites lower to a standard ONNX op where one exists at the opset
  (LayerNormalization, Gelu, RMSNormalization, Attention), to ONNX Runtime's fused
  kernels when ``target="onnxruntime"`` (SimplifiedLayerNormalization, FastGelu, Gelu,
  QuickGelu, FusedConv, MultiHeadAttention) where their semantics match exactly, and
  otherwise to the op's own decomposition.  ``linear`` is one Gemm over the input
  flattened to 2-D (bias in the epilogue, a transposed weight read through transB), or on
  ONNX Runtime without a bias over more dims, one FusedMatMul over the input as it lies;
  the skip norms stay Add + norm (ORT's fused skip-norm CPU kernels are the slower).
  ``grid_sample`` / ``roi_align`` / ``deform_conv`` become GridSample / RoiAlign /
  DeformConv where ONNX Runtime has a kernel at the opset that agrees with the ONNX
  reference, else their decompositions.
* weights: ``to_onnx_external`` leaves them out of the model and hands ONNX Runtime
  the graph's arrays directly (``OnnxRuntimeModule(graph)`` does this): ORT makes its
  one copy (packed, for the matmul kernels) from them, where an embedded model would
  first copy them into the proto, its serialised bytes and ORT's parse of those.
"""


from __future__ import annotations

# the rule modules register their rules on import
from . import bincount, control, decode, dynamic, elementwise, linalg, nn, qdq, quant, reduce, shape  # noqa: F401
from .context import NO_VALUE, ONNX_RULES, SAME, LoweringContext, OnnxValue, register_lowering, rule_for
from .kernels import (EXTERNAL_DATA_THRESHOLD, EXTERNAL_LOCATION, EXTERNAL_WEIGHT_BYTES, MIN_OPSET, MS_DOMAIN,
                      ONNX_DTYPE, ONNX_TYPE_STRINGS, default_opset, input_var, supported_dtypes)
from .model import save_onnx, save_onnx_files, to_onnx, to_onnx_external

__all__ = ["ONNX_RULES", "ONNX_DTYPE", "ONNX_TYPE_STRINGS", "MIN_OPSET", "MS_DOMAIN", "SAME", "NO_VALUE", "OnnxValue",
           "LoweringContext", "register_lowering", "rule_for", "to_onnx", "to_onnx_external", "save_onnx", "save_onnx_files",
           "default_opset", "supported_dtypes", "input_var", "EXTERNAL_DATA_THRESHOLD", "EXTERNAL_WEIGHT_BYTES",
           "EXTERNAL_LOCATION"]
