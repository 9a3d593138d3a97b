"""Accuracy budgets: how far a reduced-precision graph may drift from its float32 original.

A budget bounds three measures, each taken over every floating output of a graph:

- ``cosine``: the cosine similarity of the flattened output with the reference (a
  lower bound; 1.0 is identical);
- ``max_rel``: the largest absolute difference relative to the largest finite magnitude
  of the reference output (the measure of ``accelir.testing.assert_relative_close``);
- ``max_abs``: the largest absolute difference.

Integer and bool outputs must match exactly. The precision passes and ``optimize(precision=...)``
measure with :func:`measure` and compare with :meth:`Budget.violations`, so that the check a
user reads about is the one the toolkit ran.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .arrays import to_numpy
from .errors import AccelirError

__all__ = ["Budget", "Errors", "measure", "DEFAULT_BUDGETS", "PRECISIONS"]

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int4")

#: A measure's direction: cosine is a floor, the others are ceilings.
_FLOORS = ("cosine",)


@dataclasses.dataclass(frozen=True)
class Errors:
    """The measured distance of some outputs from their reference (worst output wins)."""

    cosine: float = 1.0
    max_rel: float = 0.0
    max_abs: float = 0.0
    mismatched_integers: int = 0

    def worst(self, other: Errors) -> Errors:
        return Errors(min(self.cosine, other.cosine), max(self.max_rel, other.max_rel),
                      max(self.max_abs, other.max_abs), self.mismatched_integers + other.mismatched_integers)

    def __str__(self) -> str:
        text = f"cosine {self.cosine:.6f}, max_rel {self.max_rel:.3g}, max_abs {self.max_abs:.3g}"
        if self.mismatched_integers:
            text += f", {self.mismatched_integers} integer elements differ"
        return text


@dataclasses.dataclass(frozen=True)
class Budget:
    """Bounds on :class:`Errors`; a measure left ``None`` is not checked."""

    cosine: float | None = None
    max_rel: float | None = None
    max_abs: float | None = None

    @classmethod
    def parse(cls, spec: Budget | Mapping[str, float] | str | None, precision: str = "fp32") -> Budget:
        """A budget from a mapping (``{"cosine": 0.999}``), a string (``"cosine=0.999,max_rel=1e-2"``,
        the command line's form), a Budget, or ``None`` for ``precision``'s default."""
        if spec is None:
            if precision not in DEFAULT_BUDGETS:
                raise AccelirError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
            return DEFAULT_BUDGETS[precision]
        if isinstance(spec, Budget):
            return spec
        if isinstance(spec, str):
            items: dict[str, Any] = {}
            for part in filter(None, (p.strip() for p in spec.split(","))):
                key, sep, value = part.partition("=")
                if not sep:
                    raise AccelirError(f"accuracy {part!r}: write measure=value, e.g. cosine=0.999")
                items[key.strip()] = value.strip()
            spec = items
        if not isinstance(spec, Mapping):
            raise AccelirError(f"accuracy must be a dict such as {{'cosine': 0.999}}, not {type(spec).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        values: dict[str, float] = {}
        for key, value in spec.items():
            if key not in known:
                raise AccelirError(f"accuracy: unknown measure {key!r}; choose from {', '.join(known)}")
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise AccelirError(f"accuracy {key}={value!r}: not a number") from None
            bad = not math.isfinite(number) or (number > 1.0 or number <= -1.0 if key in _FLOORS else number < 0)
            if bad:
                want = "in (-1, 1]" if key in _FLOORS else "a finite number >= 0"
                raise AccelirError(f"accuracy {key}={value!r}: must be {want}")
            values[key] = number
        if not values:
            raise AccelirError("accuracy: give at least one measure, e.g. {'cosine': 0.999}")
        return cls(**values)

    def violations(self, errors: Errors) -> list[str]:
        """What ``errors`` breaks of this budget, one phrase each; empty when it is met."""
        out = []
        if errors.mismatched_integers:
            out.append(f"{errors.mismatched_integers} integer output elements differ")
        if self.cosine is not None and not errors.cosine >= self.cosine:
            out.append(f"cosine {errors.cosine:.6f} < {self.cosine}")
        if self.max_rel is not None and not errors.max_rel <= self.max_rel:
            out.append(f"max_rel {errors.max_rel:.3g} > {self.max_rel}")
        if self.max_abs is not None and not errors.max_abs <= self.max_abs:
            out.append(f"max_abs {errors.max_abs:.3g} > {self.max_abs}")
        return out

    def met(self, errors: Errors) -> bool:
        return not self.violations(errors)

    def __str__(self) -> str:
        parts = [f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)
                 if getattr(self, f.name) is not None]
        return ",".join(parts) or "unbounded"


#: The budget each precision is held to when the caller names none: what its arithmetic
#: allows on a well-conditioned model, with room for the accumulation of many layers.
DEFAULT_BUDGETS: dict[str, Budget] = {
    "fp32": Budget(max_rel=1e-4),
    "fp16": Budget(cosine=0.9999, max_rel=1e-2),
    "bf16": Budget(cosine=0.999, max_rel=5e-2),
    "int8": Budget(cosine=0.99),
    "int4": Budget(cosine=0.98),
}


def _one(want: Any, got: Any) -> Errors:
    want, got = to_numpy(want), to_numpy(got)
    if want.shape != got.shape:
        raise AccelirError(f"accuracy: output shapes differ, {list(got.shape)} against {list(want.shape)}")
    if want.dtype.kind in "biu":
        return Errors(mismatched_integers=int(np.count_nonzero(want != got)))
    w, g = want.astype(np.float64).ravel(), got.astype(np.float64).ravel()
    finite = np.isfinite(w)
    if not np.array_equal(w[~finite], g[~finite], equal_nan=True) or not np.isfinite(g[finite]).all():
        return Errors(cosine=-math.inf, max_rel=math.inf, max_abs=math.inf)
    w, g = w[finite], g[finite]
    if w.size == 0:
        return Errors()
    diff = float(np.max(np.abs(g - w)))
    scale = float(np.max(np.abs(w)))
    norms = float(np.linalg.norm(w) * np.linalg.norm(g))
    if norms == 0.0:
        cosine = 1.0 if diff == 0.0 else 0.0
    else:
        cosine = float(np.clip(np.dot(w, g) / norms, -1.0, 1.0))
    return Errors(cosine, diff / scale if scale > 0 else (0.0 if diff == 0.0 else math.inf), diff)


def measure(want: Sequence[Any], got: Sequence[Any]) -> Errors:
    """The worst errors of ``got`` against ``want``, output by output (numpy, torch or jax arrays).

    A NaN or inf where the reference has a finite value (or the reverse) is the worst error
    there is: cosine -inf, max_rel and max_abs inf.
    """
    if len(want) != len(got):
        raise AccelirError(f"accuracy: {len(got)} outputs against {len(want)} reference outputs")
    errors = Errors()
    for w, g in zip(want, got):
        errors = errors.worst(_one(w, g))
    return errors
