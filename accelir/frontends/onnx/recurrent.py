"""ONNX ``RNN``, ``GRU`` and ``LSTM`` as IR ``scan`` nodes.

Per direction, the input projection of every time step is one ``dot_general`` before
the loop (``X W^T + Wb``); the scan body holds only the recurrent part (``h R^T``,
gates, activations), with ``h`` (and ``c``) as carries and the step's output as the
scanned result.  All layouts, directions, activation lists (with their alpha / beta),
``clip``, peepholes, ``input_forget``, GRU's ``linear_before_reset`` and
``sequence_lens`` are mapped: with sequence lengths each batch row keeps its state
past its end and outputs zeros there, and the reverse direction reverses each row's
own prefix (ONNX's ReverseSequence) instead of the whole time axis.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ...ir import Builder, DType, Graph, TensorType, Value
from .context import NodeContext, OnnxImportError, reshape, reverse_prefixes, rule

__all__ = ["ACTIVATIONS"]

# name -> (function of (builder, x, alpha, beta), default alpha or None if unused, default beta or None)
Activation = Callable[[Builder, Value, float, float], Value]


def _affine(b: Builder, x: Value, alpha: float, beta: float) -> Value:
    return b.op("add", b.op("mul", x, b.scalar(alpha, x)), b.scalar(beta, x))


def _leaky(b: Builder, x: Value, alpha: float, beta: float) -> Value:
    return b.op("where", b.op("lt", x, b.scalar(0, x)), b.op("mul", x, b.scalar(alpha, x)), x)


def _thresholded(b: Builder, x: Value, alpha: float, beta: float) -> Value:
    return b.op("where", b.op("gt", x, b.scalar(alpha, x)), x, b.scalar(0, x))


def _scaled_tanh(b: Builder, x: Value, alpha: float, beta: float) -> Value:
    return b.op("mul", b.scalar(alpha, x), b.op("tanh", b.op("mul", x, b.scalar(beta, x))))


def _hard_sigmoid(b: Builder, x: Value, alpha: float, beta: float) -> Value:
    return b.op("min", b.op("max", _affine(b, x, alpha, beta), b.scalar(0, x)), b.scalar(1, x))


def _elu(b: Builder, x: Value, alpha: float, beta: float) -> Value:
    return b.op("where", b.op("gt", x, b.scalar(0, x)), x, b.op("mul", b.scalar(alpha, x), b.op("expm1", x)))


def _softsign(b: Builder, x: Value, alpha: float, beta: float) -> Value:
    return b.op("div", x, b.op("add", b.scalar(1, x), b.op("abs", x)))


def _softplus(b: Builder, x: Value, alpha: float, beta: float) -> Value:
    return b.op("log1p", b.op("exp", x))


def _plain(op: str) -> Activation:
    return lambda b, x, alpha, beta: b.op(op, x)


ACTIVATIONS: dict[str, tuple[Activation, float | None, float | None]] = {
    "relu": (_plain("relu"), None, None), "tanh": (_plain("tanh"), None, None),
    "sigmoid": (_plain("sigmoid"), None, None), "affine": (_affine, 1.0, 0.0), "leakyrelu": (_leaky, 0.01, None),
    "thresholdedrelu": (_thresholded, 1.0, None), "scaledtanh": (_scaled_tanh, 1.0, 1.0),
    "hardsigmoid": (_hard_sigmoid, 0.2, 0.5), "elu": (_elu, 1.0, None), "softsign": (_softsign, None, None),
    "softplus": (_softplus, None, None),
}

_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
_DEFAULT_ACTIVATIONS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}

Act = Callable[[Builder, Value], Value]


def _activations(ctx: NodeContext, num_dir: int) -> list[list[Act]]:
    """Per direction, the node's activation functions with their alpha / beta bound.  alpha and
    beta are consumed in order by the functions that take them (onnxruntime's reading)."""
    kind = ctx.node.op_type
    names = list(ctx.attr("activations", []) or []) or _DEFAULT_ACTIVATIONS[kind] * num_dir
    per_dir = len(_DEFAULT_ACTIVATIONS[kind])
    if len(names) != per_dir * num_dir:
        raise OnnxImportError(f"{ctx.label}: {len(names)} activations given, {kind} with {num_dir} direction(s) "
                              f"needs {per_dir * num_dir}")
    alphas = iter(ctx.attr("activation_alpha", []) or [])
    betas = iter(ctx.attr("activation_beta", []) or [])
    fns: list[Act] = []
    for name in names:
        name = name.decode() if isinstance(name, bytes) else name
        entry = ACTIVATIONS.get(name.lower())
        if entry is None:
            raise ctx.unsupported(f"activation {name!r} (known: {', '.join(sorted(ACTIVATIONS))})")
        fn, da, db = entry
        alpha = next(alphas, da) if da is not None else 0.0
        beta = next(betas, db) if db is not None else 0.0
        fns.append(lambda b, x, fn=fn, alpha=alpha, beta=beta: fn(b, x, alpha, beta))
    return [fns[d * per_dir:(d + 1) * per_dir] for d in range(num_dir)]


def _slice_cols(b: Builder, x: Value, k: int, hidden: int, count: int = 1) -> Value:
    return b.op("slice", x, starts=(k * hidden,), stops=((k + count) * hidden,), axes=(x.rank - 1,))


def _row(ctx: NodeContext, v: Value, d: int) -> Value:
    """``v[d]`` of a per-direction parameter."""
    return reshape(ctx, ctx.op("slice", v, starts=(d,), stops=(d + 1,), axes=(0,)), tuple(v.shape[1:]))


class _Cell:
    """Builds one direction's scan body: ``consts`` are the recurrent weights, ``carry`` h (and c)."""

    def __init__(self, ctx: NodeContext, kind: str, hidden: int, acts: list[Act], clip: float | None):
        self.ctx, self.kind, self.hidden, self.acts, self.clip = ctx, kind, hidden, acts, clip

    def gate(self, b: Builder, k: int, x: Value) -> Value:
        if self.clip is not None:
            x = b.op("min", b.op("max", x, b.scalar(-self.clip, x)), b.scalar(self.clip, x))
        return self.acts[k](b, x)

    def step(self, b: Builder, consts: Sequence[Value], carry: Sequence[Value], gx: Value) -> list[Value]:
        """The new carries for one time step; ``gx`` is the step's input projection [batch, G*H]."""
        H = self.hidden
        h = carry[0]
        if self.kind == "RNN":
            return [self.gate(b, 0, b.op("add", gx, b.op("matmul", h, consts[0])))]
        if self.kind == "GRU":
            r_zr, r_h, rb_h = consts
            zr = b.op("add", _slice_cols(b, gx, 0, H, 2), b.op("matmul", h, r_zr))
            z = self.gate(b, 0, _slice_cols(b, zr, 0, H))
            r = self.gate(b, 0, _slice_cols(b, zr, 1, H))
            if self.ctx.attr("linear_before_reset", 0):
                rec = b.op("mul", r, b.op("add", b.op("matmul", h, r_h), rb_h))
            else:
                rec = b.op("add", b.op("matmul", b.op("mul", r, h), r_h), rb_h)
            n = self.gate(b, 1, b.op("add", _slice_cols(b, gx, 2, H), rec))
            one = b.scalar(1, h)
            return [b.op("add", b.op("mul", b.op("sub", one, z), n), b.op("mul", z, h))]
        r_t, peep = consts[0], consts[1:]
        c = carry[1]
        g = b.op("add", gx, b.op("matmul", h, r_t))
        pre = [_slice_cols(b, g, k, H) for k in range(4)]  # i, o, f, c
        if peep:
            p_i, p_o, p_f = (_slice_cols(b, peep[0], k, H) for k in range(3))
            pre[0] = b.op("add", pre[0], b.op("mul", p_i, c))
            pre[2] = b.op("add", pre[2], b.op("mul", p_f, c))
        i = self.gate(b, 0, pre[0])
        f = b.op("sub", b.scalar(1, i), i) if self.ctx.attr("input_forget", 0) else self.gate(b, 0, pre[2])
        c_new = b.op("add", b.op("mul", f, c), b.op("mul", i, self.gate(b, 1, pre[3])))
        if peep:
            pre[1] = b.op("add", pre[1], b.op("mul", p_o, c_new))
        o = self.gate(b, 0, pre[1])
        return [b.op("mul", o, self.acts[2](b, c_new)), c_new]

    def body(self, consts: Sequence[Value], carry: Sequence[Value], gx_type: TensorType,
             masked: bool, name: str) -> Graph:
        region = Graph(name)
        b = region.builder(meta=self.ctx.b.meta)
        cs = [region.add_input(v.type, f"w{i}") for i, v in enumerate(consts)]
        ks = [region.add_input(v.type, n) for v, n in zip(carry, ("h", "c"))]
        gx = region.add_input(gx_type, "gx")
        new = self.step(b, cs, ks, gx)
        y = new[0]
        if masked:
            live = region.add_input(TensorType(DType.bool, (gx_type.shape[0], 1)), "live")
            new = [b.op("where", live, v, k) for v, k in zip(new, ks)]
            y = b.op("where", live, new[0], b.scalar(0, y))
        region.set_outputs(new + [y])
        return region


def _recurrent_weights(ctx: NodeContext, kind: str, d: int, hidden: int) -> tuple[Value, list[Value]]:
    """The bias added to the input projection and the scan body's weight operands for direction ``d``."""
    W, R, B = ctx.input(1), ctx.input(2), ctx.input(3)
    G = _GATES[kind]
    r_t = ctx.op("transpose", _row(ctx, R, d), perm=(1, 0))  # [H, G*H]
    if B is not None:
        bias = _row(ctx, B, d)
        wb = ctx.op("slice", bias, starts=(0,), stops=(G * hidden,), axes=(0,))
        rb = ctx.op("slice", bias, starts=(G * hidden,), stops=(2 * G * hidden,), axes=(0,))
    else:
        wb = rb = ctx.op("broadcast_to", ctx.scalar(0, W), shape=(G * hidden,))
    if kind != "GRU":
        consts = [r_t]
        if kind == "LSTM" and ctx.input(7) is not None:
            consts.append(_row(ctx, ctx.input(7), d))
        return ctx.op("add", wb, rb), consts
    # GRU keeps the h gate's recurrent bias inside the loop (it sits under the reset gate)
    rb_zr = ctx.op("slice", rb, starts=(0,), stops=(2 * hidden,), axes=(0,))
    in_bias = ctx.op("add", wb, ctx.op("concat", rb_zr, ctx.op("broadcast_to", ctx.scalar(0, W), shape=(hidden,)), axis=0))
    r_zr = ctx.op("slice", r_t, starts=(0,), stops=(2 * hidden,), axes=(1,))
    r_h = ctx.op("slice", r_t, starts=(2 * hidden,), stops=(3 * hidden,), axes=(1,))
    rb_h = ctx.op("slice", rb, starts=(2 * hidden,), stops=(3 * hidden,), axes=(0,))
    return in_bias, [r_zr, r_h, rb_h]


@rule("RNN", "GRU", "LSTM")
def _recurrent(ctx: NodeContext):
    kind = ctx.node.op_type
    X, W = ctx.input(0), ctx.input(1)
    layout = ctx.attr("layout", 0)
    if layout:
        X = ctx.op("transpose", X, perm=(1, 0, 2))
    steps, batch = X.shape[0], X.shape[1]
    if type(steps) is not int:
        raise ctx.unsupported(f"a symbolic sequence length {steps!r}: the scan needs a static number of steps")
    hidden = ctx.attr("hidden_size") or W.shape[1] // _GATES[kind]
    direction = ctx.attr("direction", "forward")
    num_dir = 2 if direction == "bidirectional" else 1
    acts = _activations(ctx, num_dir)
    clip = ctx.attr("clip")
    lengths = ctx.input(4)
    known = ctx.known(4) if lengths is not None else None
    if known is not None and known.dtype != object and np.all(np.asarray(known) == steps):
        lengths = None  # every row runs the full length
    live = None
    if lengths is not None:
        t = ctx.op("iota", shape=(steps, batch, 1), axis=0, dtype=DType.i64)
        live = ctx.op("lt", t, reshape(ctx, ctx.cast(lengths, DType.i64), (1, batch, 1)))
    zeros = ctx.op("broadcast_to", ctx.scalar(0, X), shape=(batch, hidden))
    inits = [ctx.input(5)] + ([ctx.input(6)] if kind == "LSTM" else [])
    if layout:  # batch-major initial states: [batch, dir, H]
        inits = [ctx.op("transpose", v, perm=(1, 0, 2)) if v is not None else None for v in inits]
    ys, finals = [], [[] for _ in inits]
    for d in range(num_dir):
        reverse = direction == "reverse" or d == 1
        xs = reverse_prefixes(ctx, X, lengths, 0, 1) if reverse and lengths is not None else X
        in_bias, consts = _recurrent_weights(ctx, kind, d, hidden)
        gx = ctx.op("dot_general", xs, _row(ctx, W, d), lhs_contracting=(2,), rhs_contracting=(1,))
        gx = ctx.op("add", gx, in_bias)
        carry = [_row(ctx, v, d) if v is not None else zeros for v in inits]
        cell = _Cell(ctx, kind, hidden, acts[d], clip)
        body = cell.body(consts, carry, gx.type.with_shape(gx.shape[1:]), live is not None,
                         f"{ctx.node.name or kind.lower()}_{'bwd' if reverse else 'fwd'}")
        scanned = [gx] + ([live] if live is not None else [])
        outs = ctx.b.node("scan", consts + carry + scanned,
                                {"num_consts": len(consts), "num_carry": len(carry), "length": steps,
                                 "reverse": reverse and lengths is None}, regions=[body]).outputs
        y = outs[len(carry)]
        if reverse and lengths is not None:
            y = reverse_prefixes(ctx, y, lengths, 0, 1)
        ys.append(ctx.op("unsqueeze", y, axes=(1,)))
        for k, v in enumerate(outs[:len(carry)]):
            finals[k].append(ctx.op("unsqueeze", v, axes=(0,)))
    Y = ys[0] if num_dir == 1 else ctx.op("concat", *ys, axis=1)  # [seq, dir, batch, H]
    states = [f[0] if num_dir == 1 else ctx.op("concat", *f, axis=0) for f in finals]  # [dir, batch, H]
    if layout:
        Y = ctx.op("transpose", Y, perm=(2, 0, 1, 3))
        states = [ctx.op("transpose", s, perm=(1, 0, 2)) for s in states]
    return [Y] + states
