"""One conversion of a weight for every graph that holds it: :func:`convert_once` and :func:`converted`.

A library the precision passes share, not a pass.  A causal LM is two graphs (prefill and
decode) over the same weights, and the precision search reruns a pass on many copies of one
graph.  Converting a weight (quantising it to int4 / int8, or casting it to f16) each time
would cost the time again and, worse, leave each graph holding its own copy of the result:
XLA would place both on the device and an export would write both.  Inside a
``with convert_once():`` block, :func:`converted` hands every caller that converts the same
values the same way the arrays the first one made, so the graphs share them (and a backend
that dedupes by memory, such as the XLA generation step, places them once).

The same values are found by content, not by name: the two graphs fold and merge their weights
separately (``folded_3`` in one is a new array equal to ``folded_3`` in the other).  An array
already seen is looked up by its memory (address, shape, strides, dtype; the memo holds it, so
the address cannot be reused), so a copy of a graph that shares its constants costs no hashing.
Outside a block, :func:`converted` just converts.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterator, TypeVar

import numpy as np

__all__ = ["convert_once", "converted"]

T = TypeVar("T")


@dataclass
class _Memo:
    digests: dict[tuple, tuple[np.ndarray, bytes]] = field(default_factory=dict)  # memory -> (array, digest)
    results: dict[tuple, Any] = field(default_factory=dict)  # (how, dtype, shape, digest) -> the conversion

    def digest(self, arr: np.ndarray) -> bytes:
        key = (arr.__array_interface__["data"][0], arr.shape, arr.strides, arr.dtype.str)
        hit = self.digests.get(key)
        if hit is None:
            data = np.ascontiguousarray(arr)
            hit = (arr, hashlib.blake2b(memoryview(data).cast("B"), digest_size=20).digest())
            self.digests[key] = hit
        return hit[1]


_active: ContextVar[_Memo | None] = ContextVar("accelir_convert_once", default=None)


@contextmanager
def convert_once() -> Iterator[None]:
    """Within the block, each distinct (conversion, weight values) pair is converted once (blocks nest:
    an inner one shares the outer one's memo)."""
    if _active.get() is not None:
        yield
        return
    token = _active.set(_Memo())
    try:
        yield
    finally:
        _active.reset(token)


def converted(how: Hashable, arr: np.ndarray, convert: Callable[[np.ndarray], T]) -> T:
    """``convert(arr)``; inside :func:`convert_once`, the result an earlier call with the same ``how``
    (what the conversion is and its settings) on equal values made."""
    memo = _active.get()
    if memo is None:
        return convert(arr)
    key = (how, arr.dtype.str, arr.shape, memo.digest(arr))
    if key not in memo.results:
        memo.results[key] = convert(arr)
    return memo.results[key]
