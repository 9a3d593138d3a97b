"""ONNX control-flow rules: If, Scan and Loop become region nodes."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ...ir import DType, Graph, TensorType, Value
from .context import (DynamicValueError, ImportScope, NodeContext, OnnxImportError, StaticSequence, check_unrolled,
                      free_names, norm_axis, reshape, rule)

__all__: list[str] = []

# how many iterations a Loop carrying a sequence may be unrolled into at import (and MAX_UNROLLED_NODES)
MAX_UNROLLED_ITERATIONS = 256


Layout = list  # per output of a region: None for a tensor, the (length, dtype) of a sequence spread into its items


def _region(ctx: NodeContext, gproto: Any, input_types: Sequence[TensorType], captures: Sequence[str],
            name: str, captures_first: bool = False, layout: Layout | None = None) -> Graph:
    """A closed region for a subgraph: its declared inputs (typed by ``input_types``) and
    one extra input per captured outer value (``captures``; outer constants are copied, a captured
    sequence gives one per item).  Outputs that are sequences are spread into their items, their
    shape recorded in ``layout``; without a ``layout`` to fill, a sequence output is refused."""
    region = Graph(name)
    scope = ImportScope(ctx.imp, region, ctx.scope, ctx.scope.opsets, closed=True,
                        origin_prefix=ctx.scope.origin_prefix + (ctx.node.name or ctx.node.op_type) + "/")
    declared: list[Value] = []

    def captured(cname: str, outer: Value) -> Value:
        arr = outer.const_value
        if arr is not None:
            return region.const(arr, name=outer.producer.attrs["name"])
        inner = region.add_input(outer.type, cname)
        # a shape computed outside stays known inside (Expand / Reshape in a loop body)
        ctx.imp.known[id(inner)] = ctx.imp.value_of(outer)
        return inner

    def add_captures() -> None:
        for cname in captures:
            outer = ctx.scope.lookup(cname, ctx.label)
            if isinstance(outer, StaticSequence):
                scope.define(cname, StaticSequence(tuple(captured(f"{cname}_{k}", v) for k, v in
                                                         enumerate(outer.items)), outer.dtype))
            else:
                scope.define(cname, captured(cname, outer))

    if captures_first:
        add_captures()
    for vi, t in zip(gproto.input, input_types):
        declared.append(region.add_input(t, vi.name))
    if not captures_first:
        add_captures()
    outs = ctx.imp.translate(gproto, scope, declared, f"subgraph {gproto.name!r} of {ctx.label}")
    if layout is None and any(isinstance(v, StaticSequence) for v in outs):
        raise ctx.unsupported("its body returns a sequence, which only an If or a Loop unrolled at import "
                              "(one that carries the sequence) can give back")
    flat: list[Value] = []
    for v in outs:
        if layout is not None:
            layout.append((len(v.items), v.dtype) if isinstance(v, StaticSequence) else None)
        flat += list(v.items) if isinstance(v, StaticSequence) else [v]
    region.set_outputs(flat)
    return region


def _gathered(outs: Sequence[Value], layout: Layout) -> list[Any]:
    """A region node's outputs with each spread sequence gathered back (``layout`` from ``_region``)."""
    it = iter(outs)
    return [next(it) if shape is None else StaticSequence(tuple(next(it) for _ in range(shape[0])), shape[1])
            for shape in layout]


def _describe(layout: Layout) -> str:
    return ", ".join("a tensor" if shape is None else f"a sequence of {shape[0]} {shape[1]} tensors"
                     for shape in layout)


def _captured_values(ctx: NodeContext, names: Sequence[str]) -> tuple[list[str], list[Value]]:
    """The captured names that become region inputs, and the outer values fed to them (a
    sequence's items that are not constants, in order)."""
    keep, vals = [], []
    for n in names:
        v = ctx.scope.lookup(n, ctx.label)
        items = v.items if isinstance(v, StaticSequence) else (v,)
        given = [x for x in items if x.const_value is None]
        if given or not isinstance(v, StaticSequence) and v.const_value is None:
            keep.append(n)
            vals += given
    return keep, vals


@rule("If")
def _if(ctx: NodeContext):
    cond = ctx.input(0)
    then_g, else_g = ctx.attrs["then_branch"], ctx.attrs["else_branch"]
    known = ctx.known(0)
    if known is not None and known.dtype != object:
        # a branch fixed at import is inlined (shape-dependent Ifs in exported models)
        branch = then_g if bool(np.asarray(known).reshape(-1)[0]) else else_g
        scope = ImportScope(ctx.imp, ctx.graph, ctx.scope, ctx.scope.opsets, closed=False,
                            origin_prefix=ctx.scope.origin_prefix)
        return ctx.imp.translate(branch, scope, [], f"branch of {ctx.label}")
    names = list(dict.fromkeys(free_names(else_g) + free_names(then_g)))
    _, vals = _captured_values(ctx, names)
    layouts: tuple[Layout, Layout] = ([], [])
    regions = [_region(ctx, g, [], names, f"{ctx.node.name or 'if'}_{tag}", layout=lay) for g, tag, lay in
               ((else_g, "else", layouts[0]), (then_g, "then", layouts[1]))]
    if layouts[0] != layouts[1]:
        lengths = [[None if shape is None else shape[0] for shape in lay] for lay in layouts]
        why = ("element types that differ; give both branches sequences of one type" if lengths[0] == lengths[1] else
               "so a sequence's length would be known only at run time; give both branches sequences of one length")
        raise ctx.unsupported(f"its then branch gives ({_describe(layouts[1])}) and its else branch "
                              f"({_describe(layouts[0])}), {why}")
    pred = reshape(ctx, cond, ()) if cond.rank else cond
    return _gathered(ctx.b.node("cond", [pred] + vals, regions=regions).outputs, layouts[0])


@rule("Scan")
def _scan(ctx: NodeContext):
    if ctx.opset < 9:
        raise ctx.unsupported("Scan before opset 9 (batched, with sequence_lens); re-export with opset >= 9")
    body = ctx.attrs["body"]
    n_scan = ctx.attr("num_scan_inputs")
    vals = [v for v in ctx.inputs if v is not None]
    states, xs = vals[:len(vals) - n_scan], vals[len(vals) - n_scan:]
    in_axes = list(ctx.attr("scan_input_axes", [0] * n_scan))
    in_dirs = list(ctx.attr("scan_input_directions", [0] * n_scan))
    ready = []
    for x, ax, rev in zip(xs, in_axes, in_dirs):
        ax = norm_axis(ctx, ax, x.rank)
        if ax:
            x = ctx.op("transpose", x, perm=(ax,) + tuple(i for i in range(x.rank) if i != ax))
        if rev:
            x = ctx.op("reverse", x, axes=(0,))
        ready.append(x)
    lengths = {x.shape[0] for x in ready}
    if len(lengths) != 1 or type(next(iter(lengths))) is not int:
        raise ctx.unsupported(f"scan lengths {sorted(map(str, lengths))} must be one static number")
    length = lengths.pop()
    names = free_names(body)
    _, consts = _captured_values(ctx, names)
    types = [s.type for s in states] + [x.type.with_shape(x.shape[1:]) for x in ready]
    region = _region(ctx, body, types, names, f"{ctx.node.name or 'scan'}_body", captures_first=True)
    outs = list(ctx.b.node("scan", consts + states + ready, {"num_consts": len(consts),
                                                                   "num_carry": len(states), "length": length},
                                 regions=[region]).outputs)
    n_out = len(outs) - len(states)
    out_axes = list(ctx.attr("scan_output_axes", [0] * n_out))
    out_dirs = list(ctx.attr("scan_output_directions", [0] * n_out))
    for k in range(n_out):
        y = outs[len(states) + k]
        if out_dirs[k]:
            y = ctx.op("reverse", y, axes=(0,))
        ax = norm_axis(ctx, out_axes[k], y.rank)
        if ax:
            perm = list(range(1, y.rank))
            perm.insert(ax, 0)
            y = ctx.op("transpose", y, perm=tuple(perm))
        outs[len(states) + k] = y
    return outs


def _loop_body(body: Any, inputs: Sequence[str], outputs: Sequence[str], true_names: Sequence[str]) -> Any:
    """A copy of a Loop body with the given inputs and outputs (by name); ``true_names`` become
    Constant true nodes (an iteration condition fixed for the whole loop)."""
    import onnx
    from onnx import helper
    g = onnx.GraphProto()
    g.CopyFrom(body)
    by_name = {vi.name: vi for vi in body.input}
    del g.input[:]
    g.input.extend(by_name.get(n) or helper.make_empty_tensor_value_info(n) for n in inputs)
    out_by_name = {vi.name: vi for vi in body.output}
    del g.output[:]
    g.output.extend(out_by_name[n] for n in outputs)
    consts = [helper.make_node("Constant", [], [n], value=helper.make_tensor(n, onnx.TensorProto.BOOL, [], [True]))
              for n in true_names]
    nodes = consts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    return g


def _condition_fixed(body: Any) -> bool:
    """Whether a Loop body hands its condition on unchanged (or always says true)."""
    cond_in, cond_out = body.input[1].name, body.output[0].name
    if cond_out == cond_in:
        return True
    for n in body.node:
        if cond_out in n.output:
            if n.op_type == "Identity" and n.input[0] == cond_in:
                return True
            if n.op_type == "Constant" and n.attribute and n.attribute[0].type == 4:
                from onnx import numpy_helper
                return bool(np.all(numpy_helper.to_array(n.attribute[0].t)))
    return False


def _reads_sequences(ctx: NodeContext, graphs: Sequence[Any], given: Sequence[Any]) -> bool:
    """Whether control flow is handed a sequence: as an input, or as a value its subgraphs read."""
    outer = [ctx.scope.lookup(n, ctx.label) for g in graphs for n in free_names(g)]
    return any(isinstance(v, StaticSequence) for v in list(given) + outer)


def _unrolled_loop(ctx: NodeContext, body: Any, init: list[Any], n_scan: int) -> list[Any]:
    """A Loop that carries or reads a sequence, unrolled at import: the body is imported once per
    iteration into the enclosing graph, so its sequences stay lists of tensors.  The trip count
    and each iteration's condition must be known at import."""
    try:
        trips = ctx.values(0, "trip count").item() if ctx.input(0) is not None else None
        go = bool(ctx.values(1, "initial condition").item()) if ctx.input(1) is not None else True
    except DynamicValueError as e:
        raise DynamicValueError(f"{e} (it carries a sequence, so it is unrolled at import)", e.input_names) from None
    iter_name, cond_name = body.input[0].name, body.input[1].name
    state, scans = list(init), [[] for _ in range(n_scan)]
    i = 0
    start = ctx.graph.num_nodes(recursive=False)
    while go and (trips is None or i < trips):
        if i == MAX_UNROLLED_ITERATIONS:
            raise ctx.unsupported(f"it carries a sequence, so it is unrolled at import, and it runs over "
                                  f"{MAX_UNROLLED_ITERATIONS} iterations; carry tensors instead")
        check_unrolled(ctx, start, i, "it carries a sequence, so it is unrolled at import", "carry tensors instead")
        scope = ImportScope(ctx.imp, ctx.graph, ctx.scope, ctx.scope.opsets, closed=False,
                            origin_prefix=f"{ctx.scope.origin_prefix}{ctx.node.name or 'loop'}/{i}/")
        scope.define(iter_name, ctx.scalar(i, DType.i64))
        scope.define(cond_name, ctx.scalar(True, DType.bool))
        for vi, v in zip(body.input[2:], state):
            scope.define(vi.name, v)
        outs = ctx.imp.translate(body, scope, None, f"body of {ctx.label}, iteration {i}")
        state = outs[1:1 + len(state)]
        for k, y in enumerate(outs[1 + len(state):]):
            scans[k].append(y)
        known = ctx.imp.value_of(outs[0]) if isinstance(outs[0], Value) else None
        if known is None or known.dtype == object:
            raise ctx.unsupported("it carries a sequence, so it is unrolled at import, and its body decides at run "
                                  "time whether to go on, so the sequence's length is not known at import")
        go = bool(np.asarray(known).reshape(-1)[0])
        i += 1
    if any(not ys for ys in scans):
        raise ctx.unsupported("scan outputs of a loop that carries a sequence and runs no iteration: their shape "
                              "is not known at import")
    stacked = [ctx.op("concat", *[ctx.op("unsqueeze", y, axes=(0,)) for y in ys], axis=0) if len(ys) > 1
               else ctx.op("unsqueeze", ys[0], axes=(0,)) for ys in scans]
    return state + stacked


def _scan_of_run_time_length(ctx: NodeContext, body: Any, init: list[Any]) -> list[Any]:
    """A Loop with scan outputs that runs a run-time number of iterations (its condition fixed): a
    scan over the iteration numbers 0 .. trips - 1, a range whose length is an unbacked dim, which
    the scan outputs' leading dim takes (onnxruntime runs it; XLA refuses the range by name)."""
    if ctx.input(0) is None:
        raise ctx.unsupported("scan outputs of a loop without a trip count")
    trips = reshape(ctx, ctx.cast(ctx.input(0), DType.i64), ())
    if ctx.input(1) is not None:  # a loop that does not start runs no iteration
        trips = ctx.op("where", reshape(ctx, ctx.input(1), ()), trips, ctx.scalar(0, DType.i64))
    steps = ctx.op("range_dynamic", ctx.scalar(0, DType.i64), trips, ctx.scalar(1, DType.i64))
    return _scan_over_steps(ctx, body, init, steps, None)


def _scan_over_steps(ctx: NodeContext, body: Any, init: list[Any], steps: Value, length: int | None) -> list[Any]:
    """The Loop as a scan over ``steps`` (its iteration numbers), the condition fixed to true."""
    iter_name, cond_name = body.input[0].name, body.input[1].name
    proto = _loop_body(body, [vi.name for vi in body.input[2:]] + [iter_name], [vi.name for vi in body.output[1:]],
                       [cond_name])
    names = free_names(proto)
    _, consts = _captured_values(ctx, names)
    region = _region(ctx, proto, [v.type for v in init] + [TensorType(DType.i64, ())], names,
                     f"{ctx.node.name or 'loop'}_body", captures_first=True)
    return list(ctx.b.node("scan", consts + init + [steps], {"num_consts": len(consts), "num_carry": len(init),
                                                             "length": length}, regions=[region]).outputs)


@rule("Loop")
def _loop(ctx: NodeContext):
    body = ctx.attrs["body"]
    m_in, c_in = ctx.input(0), ctx.input(1)
    init = list(ctx.inputs[2:])
    n_state = len(init)
    n_scan = len(body.output) - 1 - n_state
    if len(body.input) != 2 + n_state or n_scan < 0:
        raise OnnxImportError(f"{ctx.label}: the body takes {len(body.input)} inputs and gives {len(body.output)} "
                              f"outputs for {n_state} loop-carried values")
    if _reads_sequences(ctx, [body], init):
        return _unrolled_loop(ctx, body, init, n_scan)
    iter_name, cond_name = body.input[0].name, body.input[1].name
    state_names = [vi.name for vi in body.input[2:]]
    fixed = _condition_fixed(body)
    if n_scan and not fixed:
        raise ctx.unsupported("scan outputs of a loop whose body can stop it early: the number of iterations "
                              "sets their shape, which the IR needs when building the graph")
    trips = ctx.known(0) if m_in is not None else None
    first = ctx.known(1) if c_in is not None else np.array(True)
    if n_scan and (ctx.dynamic(0) or ctx.dynamic(1)):
        return _scan_of_run_time_length(ctx, body, init)
    if n_scan:
        trips = ctx.values(0, "trip count") if m_in is not None else None
        if trips is None:
            raise ctx.unsupported("scan outputs of a loop without a trip count")
        first = ctx.values(1, "initial condition") if c_in is not None else first
    static = trips is not None and trips.dtype != object and first is not None and first.dtype != object
    i64 = TensorType(DType.i64, ())
    if fixed and static:
        # a fixed number of iterations: a scan over the iteration numbers
        length = max(int(np.asarray(trips).item()) if bool(np.asarray(first).item()) else 0, 0)
        return _scan_over_steps(ctx, body, init, ctx.op("iota", shape=(length,), axis=0, dtype=DType.i64), length)
    # otherwise a while loop over (iteration, trip count, condition, state..., captured values...)
    taken = {vi.name for vi in body.input} | {o for n in body.node for o in n.output}
    trip_name = f"{iter_name}__trips"
    while trip_name in taken:
        trip_name += "_"
    proto = _loop_body(body, [iter_name, trip_name, cond_name] + state_names,
                       [vi.name for vi in body.output[:1 + n_state]], [])
    names = free_names(proto)
    _, caps = _captured_values(ctx, names)
    bool0 = TensorType(DType.bool, ())
    m = ctx.cast(m_in, DType.i64) if m_in is not None else ctx.scalar(np.iinfo(np.int64).max, DType.i64)
    c = c_in if c_in is not None else ctx.scalar(True, DType.bool)
    m, c = (reshape(ctx, v, ()) for v in (m, c))
    carried = [ctx.scalar(0, DType.i64), m, c] + init
    body_g = _region(ctx, proto, [i64, i64, bool0] + [v.type for v in init], names,
                     f"{ctx.node.name or 'loop'}_body")
    # the body region's inputs are (iteration, trips, cond, state..., captures...); its outputs gain
    # the next iteration number, the trip count and the captures, to carry them round
    ins = body_g.inputs
    b = body_g.builder(meta=ctx.b.meta)
    outs = list(body_g.outputs)
    nxt = b.op("add", ins[0], b.scalar(1, DType.i64))
    cond_out = outs[0] if outs[0].rank == 0 else b.op("reshape", outs[0], shape=())
    body_g.set_outputs([nxt, ins[1], cond_out] + outs[1:] + list(ins[3 + n_state:]))
    cond_g = Graph(f"{ctx.node.name or 'loop'}_cond")
    cin = [cond_g.add_input(v.type, f"s{k}") for k, v in enumerate(carried + caps)]
    cb = cond_g.builder(meta=ctx.b.meta)
    cond_g.set_outputs([cb.op("and", cb.op("lt", cin[0], cin[1]), cin[2])])
    outs = ctx.b.node("while_loop", carried + caps, regions=[cond_g, body_g]).outputs
    return list(outs[3:3 + n_state])
