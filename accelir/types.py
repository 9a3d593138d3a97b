"""The IR's leaf types: element dtypes, tensor types and attribute freezing.

Every layer names these: the op registry's type rules, the IR's values and nodes,
the frontends and lowerings.  Keeping them apart from the graph classes lets the
op registry depend on them while :mod:`accelir.ir` imports the registry, so the
core reads top to bottom: ``types`` -> ``ops.registry`` -> ``ir``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Sequence

import ml_dtypes
import numpy as np

from . import dims as _dims
from .dims import Dim

__all__ = ["DType", "TensorType", "freeze_attr"]


class DType(enum.Enum):
    """Element types.  The value is the short name used in the text form."""

    f16 = "f16"
    bf16 = "bf16"
    f32 = "f32"
    f64 = "f64"
    i8 = "i8"
    i16 = "i16"
    i32 = "i32"
    i64 = "i64"
    u8 = "u8"
    u16 = "u16"
    u32 = "u32"
    u64 = "u64"
    bool = "bool"

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return f"DType.{self.value}"

    @property
    def numpy(self) -> np.dtype:
        return _TO_NUMPY[self]

    @property
    def is_float(self) -> bool:
        return self in (DType.f16, DType.bf16, DType.f32, DType.f64)

    @property
    def is_int(self) -> bool:
        return self in (DType.i8, DType.i16, DType.i32, DType.i64, DType.u8, DType.u16, DType.u32, DType.u64)

    @property
    def is_signed(self) -> bool:
        return self.is_float or self in (DType.i8, DType.i16, DType.i32, DType.i64)

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize

    @property
    def lowest(self) -> float | int:
        """The value below every other of the dtype: -inf for floats, the minimum for integers
        (what a max-reduction starts from and pads with)."""
        if self.is_float:
            return float("-inf")
        return 0 if self is DType.bool else int(np.iinfo(self.numpy).min)

    @classmethod
    def from_numpy(cls, dtype: Any) -> DType:
        dt = np.dtype(dtype)
        try:
            return _FROM_NUMPY[dt]
        except KeyError:
            raise TypeError(f"numpy dtype {dt} has no accelir DType") from None

    @classmethod
    def parse(cls, text: str) -> DType:
        try:
            return cls(text)
        except ValueError:
            raise ValueError(f"unknown dtype {text!r}; expected one of "
                             f"{', '.join(d.value for d in cls)}") from None


_TO_NUMPY = {
    DType.f16: np.dtype(np.float16),
    DType.bf16: np.dtype(ml_dtypes.bfloat16),
    DType.f32: np.dtype(np.float32),
    DType.f64: np.dtype(np.float64),
    DType.i8: np.dtype(np.int8),
    DType.i16: np.dtype(np.int16),
    DType.i32: np.dtype(np.int32),
    DType.i64: np.dtype(np.int64),
    DType.u8: np.dtype(np.uint8),
    DType.u16: np.dtype(np.uint16),
    DType.u32: np.dtype(np.uint32),
    DType.u64: np.dtype(np.uint64),
    DType.bool: np.dtype(np.bool_),
}
_FROM_NUMPY = {v: k for k, v in _TO_NUMPY.items()}


@dataclass(frozen=True, slots=True)
class TensorType:
    """A tensor's dtype and shape; each dim is an int or a symbolic str."""

    dtype: DType
    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.dtype, DType):
            raise TypeError(f"TensorType dtype must be a DType, got {self.dtype!r}")
        shape = tuple(self.shape)
        out = []
        for d in shape:
            if isinstance(d, (bool, np.bool_)):
                raise TypeError(f"bad dim {d!r} in shape {shape}")
            if isinstance(d, (int, np.integer)):
                if d < 0:
                    raise ValueError(f"negative dim {d} in shape {shape}")
                out.append(int(d))
            elif isinstance(d, str):
                out.append(_dims.canonical(d))
            else:
                raise TypeError(f"bad dim {d!r} in shape {shape}")
        object.__setattr__(self, "shape", tuple(out))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(type(d) is int for d in self.shape)

    @property
    def numel(self) -> Dim:
        return _dims.dim_prod(self.shape)

    @property
    def nbytes(self) -> int | None:
        n = self.numel
        return n * self.dtype.itemsize if type(n) is int else None

    def with_shape(self, shape: Sequence[Dim]) -> TensorType:
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dtype: DType) -> TensorType:
        return TensorType(dtype, self.shape)

    def __str__(self) -> str:
        return f"{self.dtype.value}[{','.join(str(d) for d in self.shape)}]"

    @classmethod
    def of(cls, array: Any) -> TensorType:
        a = np.asarray(array) if not hasattr(array, "dtype") else array
        return cls(DType.from_numpy(a.dtype), tuple(int(d) for d in a.shape))


def freeze_attr(value: Any) -> Any:
    """Attribute values are immutable: lists become tuples, numpy scalars python ones."""
    if isinstance(value, (list, tuple)):
        return tuple(freeze_attr(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.dtype):
        return DType.from_numpy(value)
    if isinstance(value, (dict, set, np.ndarray)):
        raise TypeError(f"attribute values must be immutable scalars or tuples, got {type(value).__name__}")
    return value
