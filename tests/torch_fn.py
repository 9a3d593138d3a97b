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


def compile_on(model, args, backend):
    """``model`` compiled for ``backend``, or run by the interpreter for ``backend="interpreter"``."""
    return Interpreted(model, args) if backend == "interpreter" else accelir.optimize(model, args, backend=backend)
