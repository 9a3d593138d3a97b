"""Writing files so that a reader never sees half of one.

Every file accelir writes (an exported model, an ``.air`` text and its ``.npz``, an
``.onnx`` and its ``.data``) is first written to a temporary file beside its target
(same directory, so the rename stays on one file system) and then moved into place with
``os.replace``.  An interrupted export (an exception, Ctrl-C, SIGTERM, SIGKILL) leaves
the target as it was: absent, or the previous complete file; the temporaries are removed
except after SIGKILL.  A file with a sidecar renames the sidecar first and the main file
last, so the main file never names a sidecar that is not there yet.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
from typing import Callable, Iterator, Sequence

from .errors import AccelirError, OutputExistsError

__all__ = ["check_output", "AtomicOutputs", "atomic_outputs", "write_atomic", "write_text_atomic"]

_TEMP_BASENAME_CHARS = 96  # keeps a temporary's name under NAME_MAX however long the target's is


def check_output(path: str, overwrite: bool, what: str = "overwrite=True") -> None:
    """Refuse to write ``path`` where that would clobber a file without ``overwrite``, follow a
    dangling symbolic link, or replace a directory."""
    if os.path.islink(path) and not os.path.exists(path):
        raise AccelirError(f"{path} is a dangling symbolic link; remove it or choose another output path")
    if os.path.isdir(path):
        raise AccelirError(f"{path} is a directory; give a file name to write")
    if os.path.lexists(path) and not overwrite:
        raise OutputExistsError(f"{path} exists; pass {what} to replace it")


def _temp_beside(path: str) -> str:
    """Create an empty, uniquely named file in ``path``'s directory (mode from the umask, like
    ``open(path, 'w')``) and return its name."""
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)[:_TEMP_BASENAME_CHARS]
    for _ in range(100):
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        except FileNotFoundError:
            raise AccelirError(f"cannot write {path}: the directory {directory} does not exist") from None
        except OSError as e:
            raise AccelirError(f"cannot write {path}: {e.strerror or e}") from None
        os.close(fd)
        return tmp
    raise AccelirError(f"cannot create a temporary file beside {path}")


class AtomicOutputs:
    """The temporaries of one export: ``paths[0]`` is the main file, the rest its sidecars.

    ``temp(path)`` gives the temporary to write in place of ``path`` (checked against the
    overwrite rule first); only the files asked for are written.  ``commit()`` moves them into
    place, sidecars first; when it replaces a main file that has a sidecar it removes the old
    main file first, so an interruption leaves no main file rather than an old one reading a
    new sidecar.  With ``overwrite``, a declared sidecar that was not written this time is
    removed after the main file is in place, so no stale sidecar outlives its main file.
    """

    def __init__(self, paths: Sequence[str], overwrite: bool, what: str = "overwrite=True"):
        self.paths = [os.fspath(p) for p in paths]
        self.overwrite = overwrite
        self.what = what
        self.temps: dict[str, str] = {}
        check_output(self.paths[0], overwrite, what)

    def temp(self, path: str) -> str:
        path = os.fspath(path)
        if path not in self.paths:
            raise ValueError(f"{path} is not one of the declared outputs {self.paths}")
        if path not in self.temps:
            check_output(path, self.overwrite, self.what)
            self.temps[path] = _temp_beside(path)
        return self.temps[path]

    def commit(self) -> None:
        main, sidecars = self.paths[0], self.paths[1:]
        for path in self.paths:
            if path in self.temps:
                check_output(path, self.overwrite, self.what)  # again: it may have appeared meanwhile
        written = set(self.temps)
        if main in written and any(p in written for p in sidecars) and os.path.lexists(main):
            # between the two renames a reader must not find the old main file beside the new
            # sidecar: it would read the wrong weights; no main file at all is the safe state
            os.remove(main)
        for path in sidecars + [main]:
            if path in written:
                os.replace(self.temps[path], path)
                del self.temps[path]
        if self.overwrite:
            for path in sidecars:
                if path not in written and os.path.isfile(path) and not os.path.islink(path):
                    os.remove(path)

    def discard(self) -> None:
        for tmp in self.temps.values():
            with contextlib.suppress(OSError):
                os.remove(tmp)
        self.temps.clear()


class _Terminated(BaseException):
    """SIGTERM arrived while temporaries were open."""


@contextlib.contextmanager
def _sigterm_as_exception() -> Iterator[None]:
    """In the main thread, let SIGTERM unwind the stack (so the temporaries are removed) and
    then reach the handler that was there before: by default, the process still dies of it."""
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or previous is None or previous is signal.SIG_IGN:
        yield  # another thread, a handler set outside Python that cannot be put back, or SIGTERM ignored
        return
    def handler(signum, frame):
        raise _Terminated()
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # no signals here (an embedded interpreter)
        yield
        return
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, previous)
        signal.raise_signal(signal.SIGTERM)  # the previous disposition: default terminates here
        raise KeyboardInterrupt("terminated by SIGTERM while writing") from None
    finally:
        if signal.getsignal(signal.SIGTERM) is handler:
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def atomic_outputs(*paths: str | os.PathLike, overwrite: bool = False,
                   what: str = "overwrite=True") -> Iterator[AtomicOutputs]:
    """Write ``paths`` (main file first, then sidecars) through temporaries: they replace the
    targets when the block ends normally, and are removed on any exception, KeyboardInterrupt
    and SIGTERM included, leaving the targets untouched."""
    out = AtomicOutputs([os.fspath(p) for p in paths], overwrite, what)
    with _sigterm_as_exception():
        try:
            yield out
            out.commit()
        except OSError as e:
            out.discard()
            if isinstance(e, AccelirError):
                raise
            raise AccelirError(f"cannot write {out.paths[0]}: {e.strerror or e}") from e
        except BaseException:
            out.discard()
            raise


def write_atomic(path: str | os.PathLike, write: Callable[[str], None], *, overwrite: bool = False,
                 what: str = "overwrite=True") -> str:
    """Call ``write(tmp)`` to fill a temporary beside ``path``, then move it onto ``path``."""
    path = os.fspath(path)
    with atomic_outputs(path, overwrite=overwrite, what=what) as out:
        write(out.temp(path))
    return path


def write_text_atomic(path: str | os.PathLike, text: str, *, overwrite: bool = False,
                      what: str = "overwrite=True") -> str:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return write_atomic(path, write, overwrite=overwrite, what=what)
