"""The accelir error hierarchy.

Every error accelir raises on purpose derives from :class:`AccelirError`.  Messages
name the op, the node and its provenance where there is one, and say what to do.
"""

from __future__ import annotations

__all__ = [
    "AccelirError",
    "UnsupportedOpError",
    "VerificationError",
    "ParseError",
    "LoweringError",
    "NumericMismatchError",
    "PassError",
    "CaptureError",
    "OutputExistsError",
    "InputError",
    "first_line",
]


class AccelirError(Exception):
    """Base class of all accelir errors."""


class UnsupportedOpError(AccelirError):
    """A frontend met an op it cannot map into the IR."""

    def __init__(self, message: str, ops: list[str] | None = None):
        super().__init__(message)
        self.ops = list(ops or [])


class CaptureError(AccelirError):
    """The framework's own tracer (torch.export, jax.make_jaxpr) could not capture the model."""


class InputError(AccelirError):
    """A compiled model was called with inputs that do not fit it (count, keyword, type, shape, ids)."""


class VerificationError(AccelirError):
    """The graph breaks an IR invariant (SSA, order, use lists, types)."""

    def __init__(self, message: str, node=None):
        super().__init__(message)
        self.node = node


class ParseError(AccelirError):
    """Text that is not valid accelir IR; carries the 1-based line and column."""

    def __init__(self, message: str, line: int, column: int, source_line: str = ""):
        self.msg = message
        self.line = line
        self.column = column
        text = f"{line}:{column}: {message}"
        if source_line:
            text += f"\n  {source_line}\n  {' ' * (column - 1)}^"
        super().__init__(text)


class OutputExistsError(AccelirError, FileExistsError):
    """A file accelir would write already exists and overwriting was not asked for."""


class LoweringError(AccelirError):
    """A backend cannot express a node, or its runtime is missing."""


class NumericMismatchError(AccelirError):
    """Outputs drifted beyond tolerance; names which output, how far and which pass."""

    def __init__(self, message: str, *, pass_name: str | None = None, output_index: int | None = None,
                 max_abs_error: float | None = None, rel_error: float | None = None):
        super().__init__(message)
        self.pass_name = pass_name
        self.output_index = output_index
        self.max_abs_error = max_abs_error
        self.rel_error = rel_error


class PassError(AccelirError):
    """A pass raised; names the pass and the passes that ran before it."""

    def __init__(self, message: str, *, pass_name: str, previous: list[str]):
        super().__init__(message)
        self.pass_name = pass_name
        self.previous = list(previous)


def first_line(e: BaseException) -> str:
    """One line for a report: an accelir error's message, another exception's type and message."""
    text = (str(e).strip().splitlines() or [""])[0]
    return text if isinstance(e, AccelirError) else f"{type(e).__name__}: {text}"
