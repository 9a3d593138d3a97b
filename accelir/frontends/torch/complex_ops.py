"""aten rules for complex tensors, which the IR has no dtype for.

Inside the converter a complex tensor is a :class:`~.context.Complex`: its real and
imaginary parts as real values of the part dtype (complex64 -> f32, complex128 -> f64).
The converter sends every node that takes or gives a complex tensor to these rules
(``COMPLEX_RULES``) and refuses, naming the node, one that has none; a complex value
never reaches the graph's inputs, outputs or a real rule.

* Arithmetic is written out on the parts: ``(a + bi)(c + di) = (ac - bd) + (ad + bc)i``;
  division by ``c + di`` is Smith's, as torch's: divided through by the larger part, so a
  divisor near the float range's ends neither overflows nor underflows, and one of 0 or inf
  gives torch's inf or 0.
* Layout ops (views, slices, transposes, dtype changes, cat / stack) do the same to both
  parts, so they reuse the real rules, given each part in the complex operand's place.
* FFTs over dims of static size are products with constant DFT matrices, one per
  transformed dim: the matrices of ONNX's DFT (``accelir.ops.runtime_sized.dft_matrix``),
  with torch's ``norm`` folded in.  A real input (or one whose imaginary part is known to
  be zero) skips the products with the imaginary part, so ``fftn(x).real`` of a real
  ``x`` (FNet's Fourier mixing) costs two products per dim.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.fx

from ...ir import DType, Value
from ...ops.runtime_sized import dft_matrix
from .context import COMPLEX_DTYPES, Complex, NodeContext, complex_rule, rule, torch_dtype, wrap_axis

__all__: list[str] = []


# ----- operands ----------------------------------------------------------------------

def _part_dtype(ctx: NodeContext) -> DType:
    """The dtype of each part of the node's complex result (of its result, when that is real)."""
    dt = ctx.val.dtype
    return COMPLEX_DTYPES[dt] if dt.is_complex else torch_dtype(dt)


def _constant(ctx: NodeContext, t: torch.Tensor) -> Complex:
    """A complex tensor constant (a buffer, a lifted constant) as two real constants, made once."""
    hit = ctx.conv.complex_consts.get(id(t))
    if hit is None:
        values = t.detach().resolve_conj()
        parts = [ctx.const(np.array(p.cpu().numpy()), COMPLEX_DTYPES[t.dtype]) for p in (values.real, values.imag)]
        hit = ctx.conv.complex_consts[id(t)] = (t, Complex(*parts))
    return hit[1]


def _operand(ctx: NodeContext, arg: Any, dtype: DType | None) -> Complex:
    """An argument as a complex value: a complex node's parts, a complex constant, a python complex
    number, or a real tensor / number as the real part (imaginary part zero); cast to ``dtype``
    unless it is None (a real tensor then keeps its dtype)."""
    v = ctx.conv.env.get(arg) if isinstance(arg, torch.fx.Node) else arg
    if isinstance(v, torch.Tensor) and v.is_complex():
        v = _constant(ctx, v)
    if isinstance(v, complex):
        v = Complex(ctx.const(v.real, dtype or DType.f32), ctx.const(v.imag, dtype or DType.f32))
    if not isinstance(v, Complex):
        v = Complex(ctx.value(arg) if dtype is None else ctx.operand(arg, dtype))
    if dtype is None:
        return v
    return Complex(ctx.cast(v.re, dtype), None if v.im is None else ctx.cast(v.im, dtype))


def _imag(ctx: NodeContext, c: Complex) -> Value:
    """The imaginary part, zeros where it is known to be zero."""
    if c.im is not None:
        return c.im
    return ctx.b.op("broadcast_to", ctx.scalar(0, c.re), shape=c.re.shape)


# ----- layout ops: the real rule on each part --------------------------------------------

_DATA = ("self", "tensors", "input")  # the arguments a layout op moves; others (indices, sizes) stay


def _per_part(ctx: NodeContext, a: dict) -> Complex | Value:
    """The real rule of this op run on the real parts, then on the imaginary parts (skipped when those
    are all zero).  A real result (``x.to(torch.float32)`` of a complex x) is the real part's, as in torch."""
    operands = {k: [_operand(ctx, x, None) for x in a[k]] if isinstance(a[k], (list, tuple))
                else _operand(ctx, a[k], None) for k in _DATA if k in a and a[k] is not None}
    out_complex = ctx.val.dtype.is_complex
    stand_in = SimpleNamespace(shape=ctx.val.shape, dtype=ctx.val.dtype.to_real() if out_complex else ctx.val.dtype)
    sub = NodeContext(ctx.conv, ctx.node, stand_in, ctx.meta, ctx.name)
    imaginary = out_complex and any(c.im is not None for v in operands.values()
                                    for c in (v if isinstance(v, list) else [v]))
    parts = []
    for take in (lambda c: c.re, lambda c: _imag(ctx, c))[:1 + imaginary]:
        args = dict(a)
        args.update({k: [take(c) for c in v] if isinstance(v, list) else take(v) for k, v in operands.items()})
        parts.append(ctx.conv.rules[ctx.name](sub, args))  # the converter's table: fx's x[...] is in it
    return Complex(*parts) if out_complex else parts[0]


complex_rule("view", "_unsafe_view", "reshape", "flatten", "unflatten", "view_copy", "_reshape_alias", "squeeze",
             "squeeze_copy", "ravel", "reshape_as", "view_as", "expand", "expand_as", "broadcast_to", "expand_copy",
             "unsqueeze", "unsqueeze_copy", "permute", "permute_copy", "transpose", "swapaxes", "swapdims",
             "transpose_copy", "t", "mT", "numpy_T", "slice", "slice_copy", "narrow", "narrow_copy", "select",
             "select_copy", "cat", "concat", "concatenate", "stack", "flip", "roll", "repeat", "tile", "index",
             "index_select", "_to_copy", "to", "type_as", "_to_dtype", "clone", "contiguous", "alias", "detach",
             "lift_fresh_copy", "lift_fresh", "resolve_conj", "resolve_neg", "positive", "tensor_getitem")(_per_part)


# ----- making and taking apart ---------------------------------------------------------

@complex_rule("view_as_complex")
def _view_as_complex(ctx, a):
    """The trailing dim of 2 holds (real, imaginary)."""
    x = ctx.value(a["self"])
    ax = x.rank - 1
    re, im = (ctx.b.op("squeeze", ctx.b.op("slice", x, starts=(i,), stops=(i + 1,), steps=(1,), axes=(ax,)),
                       axes=(ax,)) for i in (0, 1))
    return Complex(re, im)


@complex_rule("view_as_real")
def _view_as_real(ctx, a):
    c = _operand(ctx, a["self"], _part_dtype(ctx))
    ax = c.re.rank
    return ctx.b.op("concat", *(ctx.b.op("unsqueeze", p, axes=(ax,)) for p in (c.re, _imag(ctx, c))), axis=ax)


@complex_rule("complex")
def _complex(ctx, a):
    dt = _part_dtype(ctx)
    return Complex(ctx.operand(a["real"], dt), ctx.operand(a["imag"], dt))


@complex_rule("polar")
def _polar(ctx, a):
    """abs * (cos(angle) + i sin(angle))."""
    dt = _part_dtype(ctx)
    r, theta = ctx.operand(a["abs"], dt), ctx.operand(a["angle"], dt)
    return Complex(ctx.b.op("mul", r, ctx.b.op("cos", theta)), ctx.b.op("mul", r, ctx.b.op("sin", theta)))


@complex_rule("real")
def _real(ctx, a):
    return _operand(ctx, a["self"], _part_dtype(ctx)).re


@rule("real")
def _real_of_real(ctx, a):
    """torch.real of a real tensor is the tensor."""
    return ctx.value(a["self"])


@complex_rule("imag")
def _imag_rule(ctx, a):
    return _imag(ctx, _operand(ctx, a["self"], _part_dtype(ctx)))


@complex_rule("abs")
def _abs(ctx, a):
    c = _operand(ctx, a["self"], _part_dtype(ctx))
    if c.im is None:
        return ctx.b.op("abs", c.re)
    return _hypot(ctx, c.re, c.im)


def _hypot(ctx: NodeContext, a: Value, b: Value) -> Value:
    """``sqrt(a^2 + b^2)`` with both scaled by ``s = max(|a|, |b|)`` first, as torch's abs does, so that a size
    past 1e19 or below 1e-19 in float32 neither overflows nor underflows; 0 where both are 0."""
    op = ctx.b.op
    s = op("max", op("abs", a), op("abs", b))
    zero = op("eq", s, ctx.scalar(0, s))
    safe = op("where", zero, ctx.scalar(1, s), s)
    p, q = op("div", a, safe), op("div", b, safe)
    size = op("mul", op("sqrt", op("add", op("mul", p, p), op("mul", q, q))), s)
    return op("where", op("isinf", s), s, size)  # an infinite part: inf, not inf / inf


@complex_rule("angle")
def _angle(ctx, a):
    c = _operand(ctx, a["self"], _part_dtype(ctx))
    return ctx.b.op("atan2", _imag(ctx, c), c.re)


# ----- arithmetic ----------------------------------------------------------------------

def _binary_operands(ctx: NodeContext, a: dict) -> tuple[Complex, Complex]:
    dt = _part_dtype(ctx)
    return _operand(ctx, a["self"], dt), _operand(ctx, a["other"], dt)


def _mul(ctx: NodeContext, x: Complex, y: Complex) -> Complex:
    b = ctx.b
    re = b.op("mul", x.re, y.re)
    if x.im is not None and y.im is not None:
        re = b.op("sub", re, b.op("mul", x.im, y.im))
    terms = ([b.op("mul", x.re, y.im)] if y.im is not None else []) + \
        ([b.op("mul", x.im, y.re)] if x.im is not None else [])
    return Complex(re, b.op("add", *terms) if len(terms) == 2 else (terms or [None])[0])


def _add(ctx: NodeContext, x: Complex, y: Complex, op: str) -> Complex:
    """x + y or x - y (``op``)."""
    im = x.im
    if y.im is not None:
        im = ctx.b.op(op, x.im, y.im) if x.im is not None else (y.im if op == "add" else ctx.b.op("neg", y.im))
    return Complex(ctx.b.op(op, x.re, y.re), im)


def _scaled(ctx: NodeContext, y: Complex, alpha: Any) -> Complex:
    """``alpha * y`` for add / sub's alpha (a python number, complex ones included)."""
    if alpha is None or alpha == 1:
        return y
    return _mul(ctx, y, _operand(ctx, ctx.scalar_of(alpha), y.re.dtype))


@complex_rule("mul", "multiply")
def _mul_rule(ctx, a):
    return _mul(ctx, *_binary_operands(ctx, a))


@complex_rule("add", "sub", "subtract")
def _add_rule(ctx, a):
    x, y = _binary_operands(ctx, a)
    return _add(ctx, x, _scaled(ctx, y, a.get("alpha")), "add" if ctx.name == "add" else "sub")


@complex_rule("rsub")
def _rsub(ctx, a):
    x, y = _binary_operands(ctx, a)
    return _add(ctx, y, _scaled(ctx, x, a.get("alpha")), "sub")


@complex_rule("div", "divide", "true_divide")
def _div(ctx, a):
    if a.get("rounding_mode") is not None:
        raise ctx.unsupported("a rounding division of complex tensors (torch refuses it too)")
    x, y = _binary_operands(ctx, a)
    b = ctx.b
    if y.im is None:
        return Complex(b.op("div", x.re, y.re), None if x.im is None else b.op("div", x.im, y.re))
    # Smith's division, as torch's: with y = c + di divided through by its larger part, c^2 + d^2 neither
    # overflows (|y| > 1e19 in float32) nor underflows to 0 (|y| < 1e-19); a divisor of 0 gives a complex
    # inf (x's parts over 0) and an infinite one 0, where scaling by max(|c|, |d|) gave inf / inf = nan
    p, q, c, d = x.re, _imag(ctx, x), y.re, y.im
    wide = b.op("ge", b.op("abs", c), b.op("abs", d))  # |c| >= |d|: divide through by c, else by d

    def pick(if_wide: Value, if_tall: Value) -> Value:
        return b.op("where", wide, if_wide, if_tall)

    big, small = pick(c, d), pick(d, c)
    rat = b.op("div", small, big)
    scl = b.op("reciprocal", b.op("add", big, b.op("mul", small, rat)))
    re = b.op("mul", pick(b.op("add", p, b.op("mul", q, rat)), b.op("add", b.op("mul", p, rat), q)), scl)
    im = b.op("mul", pick(b.op("sub", q, b.op("mul", p, rat)), b.op("sub", b.op("mul", q, rat), p)), scl)
    zero, size = b.op("eq", big, ctx.scalar(0, big)), b.op("abs", big)  # over +0, as torch: a -0 divisor too
    return Complex(b.op("where", zero, b.op("div", p, size), re), b.op("where", zero, b.op("div", q, size), im))


@complex_rule("neg", "negative")
def _neg(ctx, a):
    c = _operand(ctx, a["self"], _part_dtype(ctx))
    return Complex(ctx.b.op("neg", c.re), None if c.im is None else ctx.b.op("neg", c.im))


@complex_rule("conj", "_conj", "conj_physical")
def _conj(ctx, a):
    c = _operand(ctx, a["self"], _part_dtype(ctx))
    return Complex(c.re, None if c.im is None else ctx.b.op("neg", c.im))


# ----- FFTs ----------------------------------------------------------------------------

def _norm_scale(norm: str | None, inverse: bool) -> str:
    """torch's ``norm`` of one direction as the scale it applies: "none", "sqrt" (1 / sqrt(n)) or "n" (1 / n)."""
    if norm == "ortho":
        return "sqrt"
    if norm not in (None, "backward", "forward"):
        raise ValueError(f"FFT norm {norm!r}")
    return "n" if (norm == "forward") != inverse else "none"


MAX_DFT_ENTRIES = 1 << 24  # per DFT matrix (a 4096-point transform): its cost grows as the square of the points


def _dft(ctx: NodeContext, x: Complex, axis: int, n: int | None, *, inverse: bool, onesided: bool,
         scale: str) -> Complex:
    """One DFT of ``x`` along ``axis`` to ``n`` points, as products with constant cos / sin matrices:
    complex to complex, or with ``onesided`` real to half spectrum (forward, rfft) or half spectrum to
    real (inverse, irfft: the result's imaginary part is None)."""
    length = x.re.shape[axis]
    if type(length) is not int:
        raise ctx.unsupported(f"an FFT along dim {axis}, of size {length} not known at capture; the DFT is "
                              "built as a constant matrix: make that dim static")
    n = (2 * (length - 1) if inverse and onesided else length) if n is None or n == -1 else n
    c_out = 1 if inverse and onesided else 2
    entries = length * (n // 2 + 1 if onesided and not inverse else n)
    if entries > MAX_DFT_ENTRIES:
        raise ctx.unsupported(f"an FFT of {length} points to {n} along dim {axis}: its DFT matrices, built as "
                              f"constants, would hold {entries:,} entries each, over accelir's {MAX_DFT_ENTRIES:,}; "
                              "compute this FFT outside the captured model")
    built_in = 1.0 / n if inverse else 1.0  # dft_matrix scales the inverse by 1 / n, as ONNX's DFT does
    factor = {"none": 1.0, "sqrt": 1.0 / math.sqrt(n), "n": 1.0 / n}[scale] / built_in
    key = ("dft", length, n, inverse, onesided, factor)
    blocks = ctx.conv.built.get(key)
    if blocks is None:
        blocks = dft_matrix(length, n, 2, inverse, onesided).reshape(length, 2, -1, c_out) * factor
        ctx.conv.built[key] = blocks
    rank = x.re.rank
    perm = tuple(i for i in range(rank) if i != axis) + (axis,)
    back = tuple(int(i) for i in np.argsort(perm))

    def moved(v: Value, p: tuple[int, ...]) -> Value:
        return v if p == tuple(range(rank)) else ctx.b.op("transpose", v, perm=p)

    inputs = [moved(p, perm) if p is not None else None for p in (x.re, x.im)]
    outs = []
    for co in range(c_out):
        terms = [ctx.b.op("matmul", v, _dft_block(ctx, key, blocks, ci, co, v.dtype))
                 for ci, v in enumerate(inputs) if v is not None]
        outs.append(moved(terms[0] if len(terms) == 1 else ctx.b.op("add", *terms), back))
    return Complex(outs[0], outs[1] if c_out == 2 else None)


def _dft_block(ctx: NodeContext, key: tuple, blocks: np.ndarray, ci: int, co: int, dtype: DType) -> Value:
    """One real block of a DFT matrix as a constant, made once per graph: every layer of a Fourier-mixing
    stack transforms the same dims and reads the same matrices."""
    full = key + (ci, co, dtype)
    block = ctx.conv.built.get(full)
    if block is None:
        block = ctx.conv.built[full] = ctx.const(blocks[:, ci, :, co], dtype)
    return block


def _transform(ctx: NodeContext, x: Complex, dims: list[int], sizes: list[int | None], *, inverse: bool,
               real: bool, scale: str) -> Complex | Value:
    """A DFT over several dims, one after another; ``real``: the last of ``dims`` is the half-spectrum
    dim (first, real to half spectrum, when forward; last, half spectrum to real, when inverse)."""
    order = list(range(len(dims)))
    if real and not inverse:
        order = order[-1:] + order[:-1]
    for i in order:
        x = _dft(ctx, x, dims[i], sizes[i], inverse=inverse, onesided=real and i == len(dims) - 1, scale=scale)
    return x.re if real and inverse else x


@complex_rule("fft_fft", "fft_ifft", "fft_rfft", "fft_irfft")
def _fft(ctx, a):
    x = _operand(ctx, a["self"], _part_dtype(ctx))
    inverse = ctx.name.startswith("fft_i")
    return _transform(ctx, x, [wrap_axis(a["dim"], x.re.rank)], [a["n"]], inverse=inverse, real="rfft" in ctx.name,
                      scale=_norm_scale(a["norm"], inverse))


@complex_rule("fft_fftn", "fft_ifftn", "fft_rfftn", "fft_irfftn", "fft_fft2", "fft_ifft2", "fft_rfft2", "fft_irfft2")
def _fftn(ctx, a):
    x = _operand(ctx, a["self"], _part_dtype(ctx))
    rank, s, dim = x.re.rank, a.get("s"), a.get("dim")
    if dim is None:
        dim = range(rank) if s is None else range(rank - len(s), rank)
    dims = [wrap_axis(d, rank) for d in dim]
    sizes = list(s) if s is not None else [None] * len(dims)
    inverse = ctx.name.startswith("fft_i")
    return _transform(ctx, x, dims, sizes, inverse=inverse, real="rfft" in ctx.name,
                      scale=_norm_scale(a["norm"], inverse))


_NORMALIZATION = {0: "none", 1: "sqrt", 2: "n"}  # aten's _fft_* ``normalization`` argument


@complex_rule("_fft_r2c", "_fft_c2c", "_fft_c2r")
def _fft_primitive(ctx, a):
    """The aten FFT primitives that a decomposed graph holds: c2c (either direction), r2c (``onesided``:
    the half spectrum along the last dim) and c2r (``last_dim_size`` real points along the last dim)."""
    x = _operand(ctx, a["self"], _part_dtype(ctx))
    dims = [wrap_axis(d, x.re.rank) for d in a["dim"]]
    sizes: list[int | None] = [None] * len(dims)
    kind = ctx.name[-3:]
    if kind == "c2r":
        sizes[-1] = ctx.scalar_of(a["last_dim_size"])
    return _transform(ctx, x, dims, sizes, inverse=kind == "c2r" or (kind == "c2c" and not a["forward"]),
                      real=kind == "c2r" or (kind == "r2c" and a["onesided"]),
                      scale=_NORMALIZATION[a["normalization"]])
