"""What ONNX Runtime can run: opset bounds, dtype tables and the kernel registry.

The lowering asks these which dtypes an op has a kernel for (ONNX Runtime's CPU kernels where
onnxruntime is installed, else the ONNX schema), so that it can widen the operands of an op whose
dtype has none.  Nothing here builds a model.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
from onnx import TensorProto

from accelir.ir import DType

MIN_OPSET = 18
MS_DOMAIN = "com.microsoft"
EXTERNAL_DATA_THRESHOLD = 2 * 1024 ** 3 - 64 * 1024 ** 2  # protobuf's 2 GB limit, less room for the graph
EXTERNAL_WEIGHT_BYTES = 1024  # to_onnx_external leaves initializers of this size and up out of the model
EXTERNAL_LOCATION = "accelir:in-memory"

ONNX_DTYPE = {
    DType.f16: TensorProto.FLOAT16, DType.bf16: TensorProto.BFLOAT16, DType.f32: TensorProto.FLOAT,
    DType.f64: TensorProto.DOUBLE, DType.i8: TensorProto.INT8, DType.i16: TensorProto.INT16,
    DType.i32: TensorProto.INT32, DType.i64: TensorProto.INT64, DType.u8: TensorProto.UINT8,
    DType.u16: TensorProto.UINT16, DType.u32: TensorProto.UINT32, DType.u64: TensorProto.UINT64,
    DType.bool: TensorProto.BOOL,
}
DTYPE_TYPE_STRINGS = {  # DType -> its type string in ONNX schemas and onnxruntime
    DType.f16: "tensor(float16)", DType.bf16: "tensor(bfloat16)", DType.f32: "tensor(float)",
    DType.f64: "tensor(double)", DType.i8: "tensor(int8)", DType.i16: "tensor(int16)", DType.i32: "tensor(int32)",
    DType.i64: "tensor(int64)", DType.u8: "tensor(uint8)", DType.bool: "tensor(bool)",
    DType.u16: "tensor(uint16)", DType.u32: "tensor(uint32)", DType.u64: "tensor(uint64)",
}
ONNX_TYPE_STRINGS = {v: k for k, v in DTYPE_TYPE_STRINGS.items()}  # onnxruntime's "tensor(float)" -> DType

# Where a dtype has no kernel, compute in the first of these that has one.
WIDER_DTYPES = {
    DType.f16: (DType.f32, DType.f64), DType.bf16: (DType.f32, DType.f64), DType.f32: (DType.f64,),
    DType.f64: (), DType.i8: (DType.i16, DType.i32, DType.i64), DType.u8: (DType.i16, DType.i32, DType.i64),
    DType.i16: (DType.i32, DType.i64), DType.i32: (DType.i64,), DType.i64: (),
    DType.u16: (DType.i32, DType.i64), DType.u32: (DType.i64,), DType.u64: (),
    DType.bool: (DType.u8, DType.i32, DType.i64),
}


# Ops whose result bits are the same in any two's-complement reading of their operands (data
# movement, and arithmetic modulo 2**64): a uint64 operand without a kernel computes in int64,
# reached by a Cast, which onnxruntime performs modulo 2**64 both ways. Ordering, division and
# powers read the sign, so they are not here.
SAME_BITS_AS_INT64 = frozenset({"Neg", "Add", "Sub", "Mul", "Where", "ReduceSum", "ReduceProd", "CumSum", "MatMul",
                                "Gemm", "Einsum", "Identity", "Reshape", "Transpose", "Concat", "Slice", "Gather",
                                "Expand", "Pad", "Tile", "Squeeze", "Unsqueeze"})
# Ops that only compare their operands: a uint64 operand computes in int64 with its top bit flipped
# (x XOR 2**63 orders as signed as x does as unsigned), the results flipped back.
ORDER_AS_INT64 = frozenset({"ReduceMax", "ReduceMin", "ArgMax", "ArgMin", "TopK", "Max", "Min"})


INT64_MIN = np.iinfo(np.int64).min


# ----- which dtypes an op has a kernel for -------------------------------------------

@functools.lru_cache(maxsize=None)
def _ort_kernel_types() -> dict[tuple[str, str], list[tuple[int, int, dict[str, frozenset[str]]]]]:
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_c
    table: dict[tuple[str, str], list] = {}
    for k in ort_c.get_all_opkernel_def():
        if k.provider != "CPUExecutionProvider":
            continue
        constraints = {var: frozenset(types) for var, types in k.type_constraints.items()}
        table.setdefault((k.op_name, k.domain), []).append((k.version_range[0], k.version_range[1], constraints))
    return table


def _have_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def _input_vars(op_type: str, domain: str, opset: int) -> tuple[tuple[str, ...], bool]:
    """The type variable of each formal input of ``op_type`` (and whether the last is variadic)."""
    version = 1 if domain == MS_DOMAIN else opset
    try:
        schema = onnx.defs.get_schema(op_type, version, domain)
        return tuple(i.type_str for i in schema.inputs), bool(schema.inputs) and \
            schema.inputs[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic
    except onnx.defs.SchemaError:
        pass
    if _have_onnxruntime():
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_c
        for sch in ort_c.get_all_operator_schema():
            if sch.name == op_type and sch.domain == domain:
                return tuple(i.typeStr for i in sch.inputs), bool(sch.inputs) and "Variadic" in str(
                    sch.inputs[-1].option)
    return ("T",), True


def input_var(op_type: str, domain: str, opset: int, index: int) -> str:
    names, variadic = _input_vars(op_type, domain, opset)
    if index < len(names):
        return names[index]
    return names[-1] if variadic and names else "T"


@functools.lru_cache(maxsize=None)
def supported_dtypes(op_type: str, domain: str, opset: int, var: str | None = None) -> frozenset[DType]:
    """The dtypes type variable ``var`` (default: that of the first input) of ``op_type`` may take:
    ONNX Runtime's CPU kernels where onnxruntime is installed, else the ONNX schema."""
    var = var or input_var(op_type, domain, opset, 0)
    version = 1 if domain == MS_DOMAIN else opset
    types: set[str] = set()
    if _have_onnxruntime():
        try:  # a node of this opset has its schema's version, which is what ONNX Runtime binds kernels by
            since = onnx.defs.get_schema(op_type, version, domain).since_version
        except onnx.defs.SchemaError:
            since = None  # a schema of ONNX Runtime's own (its contrib ops): any kernel covering the version
        for lo, hi, constraints in _ort_kernel_types().get((op_type, domain), []):
            if (lo <= version <= hi) if since is None else _binds(lo, hi, since):
                types |= constraints.get(var, frozenset())
    else:
        try:
            schema = onnx.defs.get_schema(op_type, version, domain)
        except onnx.defs.SchemaError:
            return frozenset()
        for c in schema.type_constraints:
            if c.type_param_str == var:
                types |= set(c.allowed_type_strs)
    return frozenset(ONNX_TYPE_STRINGS[t] for t in types if t in ONNX_TYPE_STRINGS)


def kernel_binds(op_type: str, domain: str, opset: int, dtypes: dict[str, DType]) -> bool:
    """Whether one ONNX Runtime CPU kernel of ``op_type`` takes all of ``dtypes`` (type variable -> dtype)
    together: the integer kernels are registered per combination (QLinearMatMul binds u8 x i8 -> u8
    and i8 x i8 -> i8, not u8 x i8 -> i8), which :func:`supported_dtypes`, one variable at a time,
    cannot tell.  Without onnxruntime, whether the ONNX schema allows each."""
    if not _have_onnxruntime():
        return all(dt in supported_dtypes(op_type, domain, opset, var) for var, dt in dtypes.items())
    version = 1 if domain == MS_DOMAIN else opset
    try:
        since = onnx.defs.get_schema(op_type, version, domain).since_version
    except onnx.defs.SchemaError:
        since = None
    for lo, hi, constraints in _ort_kernel_types().get((op_type, domain), []):
        if ((lo <= version <= hi) if since is None else _binds(lo, hi, since)) and \
                all(DTYPE_TYPE_STRINGS[dt] in constraints.get(var, ()) for var, dt in dtypes.items()):
            return True
    return False


def _binds(lo: int, hi: int, since: int) -> bool:
    """Whether ONNX Runtime binds a node of schema version ``since`` to a kernel registered for versions
    ``lo`` to ``hi``: an open-ended kernel only serves the version it starts at."""
    return lo == since or lo < since <= hi < 2 ** 31 - 1


@functools.lru_cache(maxsize=None)
def default_opset() -> int:
    """The newest opset both the onnx package and the installed onnxruntime have kernels for.

    At an opset where a function op (Attention-25, ReduceLogSum-28, ...) is newer than
    ONNX Runtime's kernel for it, ONNX Runtime silently inlines the function body
    instead of running its kernel, so such an opset is not fully supported.
    """
    newest = onnx.defs.onnx_opset_version()
    if not _have_onnxruntime():
        return newest
    table = _ort_kernel_types()
    ort_newest = max(lo for (op, dom), defs in table.items() if dom == "" for lo, _, _ in defs)
    for opset in range(min(newest, ort_newest), MIN_OPSET, -1):
        inlined = False
        for (op, dom), defs in table.items():
            if dom != "":
                continue
            try:
                schema = onnx.defs.get_schema(op, opset, dom)
            except onnx.defs.SchemaError:
                continue
            if (schema.has_function or schema.has_context_dependent_function) and \
                    not any(_binds(lo, hi, schema.since_version) for lo, hi, _ in defs):
                inlined = True
                break
        if not inlined:
            return opset
    return MIN_OPSET
