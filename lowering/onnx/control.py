"""ONNX rules: regions (fusion is inlined, cond becomes If, while_loop and scan become Loop)."""

from __future__ import annotations

import numpy as np
import onnx

from accelir.ir import DType, Graph, Node, TensorType

from .kernels import INT64_MIN, supported_dtypes
from .context import LoweringContext, NO_VALUE, OnnxValue, register_lowering

# ----- regions --------------------------------------------------------------------------

@register_lowering("fusion")
def _lower_fusion(ctx, node, xs):
    return ctx.emit_graph(node.regions[0], xs)


def _branch(ctx: LoweringContext, node: Node, region: Graph, operands: list[OnnxValue], k: int) -> onnx.GraphProto:
    """An If branch: no inputs of its own, it reads the operands by outer scope."""
    return ctx.subgraph(f"{node.op}_branch{k}", [], lambda sub, _: sub.emit_graph(region, operands),
                        [v.type for v in node.outputs])


@register_lowering("cond")
def _lower_cond(ctx, node, xs):
    index, operands = xs[0], xs[1:]
    regions = node.regions
    types = [v.dtype for v in node.outputs]
    if index.dtype is DType.bool:
        outs = ctx.op("If", index, out_dtypes=types, then_branch=_branch(ctx, node, regions[1],
                      operands, 1), else_branch=_branch(ctx, node, regions[0], operands, 0))
        return list(outs)
    if len(regions) == 1:
        return ctx.emit_graph(regions[0], operands)

    # the index is clamped: index <= 0 picks branch 0, ..., anything past the end the last branch
    def chain(c: LoweringContext, k: int) -> list[OnnxValue]:
        if k == len(regions) - 1:
            return c.emit_graph(regions[k], operands)
        pred = c.op("LessOrEqual", index, c.const(k, index.dtype), dtype=DType.bool)
        then_g = c.subgraph(f"cond_branch{k}", [], lambda s, _: s.emit_graph(regions[k], operands),
                            [v.type for v in node.outputs])
        else_g = c.subgraph(f"cond_else{k}", [], lambda s, _: chain(s, k + 1), [v.type for v in node.outputs])
        res = c.op("If", pred, out_dtypes=types, then_branch=then_g, else_branch=else_g)
        return list(res)

    if index.dtype not in supported_dtypes("LessOrEqual", "", ctx.opset):
        index = ctx.cast(index, DType.i64)
    return chain(ctx, 0)


@register_lowering("while_loop")
def _lower_while_loop(ctx, node, xs):
    """Loop: the condition runs on the initial state outside and on each new state inside the body."""
    cond_g, body_g = node.regions
    types = [v.type for v in node.inputs]
    first = ctx.emit_graph(cond_g, xs)[0]

    def body(sub, ins):
        state = sub.emit_graph(body_g, ins[2:])
        return [sub.emit_graph(cond_g, state)[0]] + state

    g = ctx.subgraph("while_body", [TensorType(DType.i64, ()), TensorType(DType.bool, ())] + types, body,
                     [TensorType(DType.bool, ())] + types)
    outs = ctx.op("Loop", NO_VALUE, first, *xs, out_dtypes=[t.dtype for t in types], body=g)
    return list(outs)


@register_lowering("scan")
def _lower_scan(ctx, node, xs):
    """Loop over ``length`` steps: consts are read by outer scope, x[i] is gathered per step and
    the ys come back stacked (flipped afterwards for a reverse scan)."""
    nc, nk, length = node.attrs["num_consts"], node.attrs["num_carry"], node.attrs["length"]
    reverse = node.attrs["reverse"]
    body_g = node.regions[0]
    consts, carry, seqs = xs[:nc], xs[nc:nc + nk], xs[nc + nk:]
    carry_t = [v.type for v in node.inputs[nc:nc + nk]]
    y_t = [v.type for v in body_g.outputs[nk:]]
    # no length: the scanned operands' leading dim, read at run time
    trips = ctx.const(np.asarray(length, np.int64)) if length is not None else \
        ctx.op("Gather", ctx.op("Shape", seqs[0], dtype=DType.i64), ctx.const(np.asarray(0, np.int64)), axis=0)

    def body(sub, ins):
        i = sub.op("Reshape", ins[0], sub.ints([]))  # the iteration count may come as [1]
        if reverse:
            i = sub.op("Sub", sub.op("Sub", trips, sub.const(np.asarray(1, np.int64))), i)
        slices = [sub.op("Gather", x, i, axis=0) for x in seqs]
        outs = sub.emit_graph(body_g, list(consts) + list(ins[2:]) + slices)
        return [sub.op("Identity", ins[1])] + outs

    g = ctx.subgraph("scan_body", [TensorType(DType.i64, ()), TensorType(DType.bool, ())] + carry_t, body,
                     [TensorType(DType.bool, ())] + carry_t + y_t)
    outs = ctx.op("Loop", trips, NO_VALUE, *carry,
                  out_dtypes=[t.dtype for t in carry_t + y_t], body=g)
    outs = list(outs)
    if reverse:
        outs = outs[:nk] + [ctx.op("Slice", y, ctx.ints([-1]), ctx.ints([INT64_MIN]), ctx.ints([0]), ctx.ints([-1]))
                            for y in outs[nk:]]
    return outs
