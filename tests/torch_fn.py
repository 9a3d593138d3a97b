"""Test helpers shared by the torch op test files: a module around a plain function, and the captured
graph run by accelir's interpreter, called like a compiled model."""

from __future__ import annotations

import torch

import accelir
from accelir.interpreter import interpret


class Fn(torch.nn.Module):
    """``fn`` as a module, so torch.export captures it."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


class Interpreted:
    """The captured graph run by accelir's interpreter (the op references), called like a compiled model."""

    def __init__(self, model, args):
        self.graph = accelir.capture(model, args)

    def __call__(self, *xs):
        return tuple(torch.from_numpy(a) for a in interpret(self.graph, *(x.numpy() for x in xs)))


def assert_same_outputs(want, got, tol: float) -> None:
    """Every output of ``got`` (one value or a sequence) has eager's ``want`` dtype and shape and its
    values within ``tol`` (relative and absolute)."""
    want = want if isinstance(want, tuple) else (want,)
    got = tuple(got) if isinstance(got, (tuple, list)) else (got,)
    assert len(want) == len(got)
    for i, (w, g) in enumerate(zip(want, got)):
        g = torch.as_tensor(g)
        assert g.dtype == w.dtype and g.shape == w.shape, (i, g.dtype, g.shape, w.dtype, w.shape)
        torch.testing.assert_close(g, w, rtol=tol, atol=tol, msg=f"output {i}")


def compile_on(model, args, backend):
    """``model`` compiled for ``backend``, or run by the interpreter for ``backend="interpreter"``."""
    return Interpreted(model, args) if backend == "interpreter" else accelir.optimize(model, args, backend=backend)
