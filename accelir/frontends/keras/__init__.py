"""The Keras 3 frontend: ``capture_keras`` of a Keras model on the jax or torch backend.

A thin layer over the jax and torch frontends (``driver``): on the jax backend the model
is a pure jax function of its variables (``stateless_call``), on the torch backend a torch
module; ``.keras`` files load with ``keras.saving.load_model``.
"""

from __future__ import annotations

from .driver import capture_keras, is_keras_model, load_keras

__all__ = ["capture_keras", "is_keras_model", "load_keras"]
