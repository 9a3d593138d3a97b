"""The Caffe frontend: ``capture_caffe`` reads a deploy prototxt (and a caffemodel) into the IR.

Layout: ``schema`` (accelir's own schema of the Caffe messages it reads, with Caffe's field
numbers), ``message``, ``textformat`` (prototxt) and ``wire`` (caffemodel) read and write
files through it; ``context`` is what layer rules import; one module per layer family
holds the rules (``conv``, ``activation``, ``norm``, ``resize``, ``shape``, ``ssd``, ``detection``);
``driver`` is the entry point.
"""

from __future__ import annotations

from .driver import capture_caffe, read_caffemodel, read_prototxt
from .message import CaffeError, Message
from .textformat import parse_text, to_text
from .wire import decode, encode

__all__ = ["capture_caffe", "read_caffemodel", "read_prototxt", "CaffeError", "Message", "parse_text", "to_text",
           "decode", "encode"]
