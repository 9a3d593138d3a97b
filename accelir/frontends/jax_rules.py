"""Rules of the JAX frontend: one per lax primitive, each mapping an equation onto IR ops.

A rule is ``rule(cx, *inputs, **params) -> Value | list[Value]`` where ``cx`` is an
:class:`~accelir.frontends.jax.EqnContext` (a builder carrying the equation's provenance)
and ``params`` are the equation's params.  A form a rule cannot map raises
:class:`~accelir.frontends.jax.Unsupported`; the frontend reports every such equation
at once.  Table-driven where the mapping is one IR op.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from .. import dims as D
from ..ir import DType, Graph, TensorType, Value
from ..ops.shape import inverse_perm
from .jax import EqnContext, Unsupported, _Converter, _dtype, _open, static_value, to_dim, to_dims
from .jax_indexing import INDEXING_RULES

__all__ = ["RULES"]

RULES: dict[str, Any] = {}


# ----- elementwise -------------------------------------------------------------------

_UNARY = {name: name for name in ("neg", "abs", "exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "sin", "cos",
                                  "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "tanh",
                                  "erf", "floor", "ceil", "sign", "not")}
_UNARY["logistic"] = "sigmoid"

_BINARY = {name: name for name in ("add", "sub", "mul", "div", "rem", "pow", "max", "min", "atan2", "and", "or",
                                   "xor", "eq", "ne", "lt", "le", "gt", "ge")}
_BINARY["add_any"] = "add"
# lax allows these on bool, the IR spells them as logic
_BOOL_BINARY = {"max": "or", "min": "and", "mul": "and", "add": "or", "add_any": "or"}


def _unary(op: str):
    def rule(cx: EqnContext, x: Value, **params: Any) -> Value:
        return cx.op(op, x)
    return rule


def _binary(name: str, op: str):
    def rule(cx: EqnContext, a: Value, b: Value, **params: Any) -> Value:
        if a.dtype is DType.bool and name in _BOOL_BINARY:
            return cx.op(_BOOL_BINARY[name], a, b)
        if b.dtype != a.dtype:  # lax.pow takes an integer exponent for a float base
            b = cx.op("cast", b, dtype=a.dtype)
        return cx.op(op, a, b)
    return rule


for _name, _op in _UNARY.items():
    RULES[_name] = _unary(_op)
for _name, _op in _BINARY.items():
    RULES[_name] = _binary(_name, _op)


def _identity(cx: EqnContext, *xs: Value, **params: Any) -> list[Value]:
    return list(xs)


for _name in ("copy", "copy_p", "stop_gradient", "optimization_barrier", "sharding_constraint", "device_put",
              "mesh_cast", "reshard"):
    RULES[_name] = _identity


def _square(cx, x, **p):
    return cx.op("mul", x, x)


def _exp2(cx, x, **p):
    return cx.op("pow", cx.scalar(2.0, x), x)


def _erfc(cx, x, **p):
    return cx.op("sub", cx.scalar(1.0, x), cx.op("erf", x))


def _is_finite(cx, x, **p):
    return cx.op("not", cx.op("or", cx.op("isnan", x), cx.op("isinf", x)))


def _integer_pow(cx, x, *, y: int, **p):
    """Binary exponentiation in jax's own multiplication order, so the rounding matches."""
    if y == 0:
        return cx.op("broadcast_to", cx.scalar(1, x), shape=x.shape)
    n = abs(y)
    acc = None
    base = x
    while n > 0:
        if n & 1:
            acc = base if acc is None else cx.op("mul", acc, base)
        n >>= 1
        if n > 0:
            base = cx.op("mul", base, base)
    return cx.op("div", cx.scalar(1, x), acc) if y < 0 else acc


def _round(cx, x, *, rounding_method: Any, **p):
    if int(rounding_method) == 1:
        return cx.op("round", x)
    # half away from zero: floor(|x|) plus one where the fraction is >= 0.5, with x's sign;
    # |x| + 0.5 would round up values just below one half
    ax = cx.op("abs", x)
    fl = cx.op("floor", ax)
    up = cx.op("ge", cx.op("sub", ax, fl), cx.scalar(0.5, x))
    mag = cx.op("where", up, cx.op("add", fl, cx.scalar(1.0, x)), fl)
    return cx.op("mul", cx.op("sign", x), mag)


def _clamp(cx, lo, x, hi, **p):
    return cx.op("min", cx.op("max", x, lo), hi)


def _select_n(cx, pred, *cases, **p):
    if len(cases) == 1:
        return cases[0]
    if pred.dtype is DType.bool:
        return cx.op("where", pred, cases[1], cases[0])
    out = cases[-1]
    for k in range(len(cases) - 2, -1, -1):
        out = cx.op("where", cx.op("eq", pred, cx.scalar(k, pred)), cases[k], out)
    return out


def _convert(cx, x, *, new_dtype: Any, **p):
    dt = _dtype(new_dtype)
    return x if dt == x.dtype else cx.op("cast", x, dtype=dt)


_PRECISION_DTYPES = {(8, 7): DType.bf16, (5, 10): DType.f16, (8, 23): DType.f32, (11, 52): DType.f64}


def _reduce_precision(cx, x, *, exponent_bits: int, mantissa_bits: int, **p):
    dt = _PRECISION_DTYPES.get((exponent_bits, mantissa_bits))
    if dt is None:
        raise Unsupported(f"no accelir dtype has {exponent_bits} exponent and {mantissa_bits} mantissa bits")
    if dt == x.dtype:
        return x
    return cx.op("cast", cx.op("cast", x, dtype=dt), dtype=x.dtype)


RULES.update({"square": _square, "exp2": _exp2, "erfc": _erfc, "is_finite": _is_finite,
              "integer_pow": _integer_pow, "round": _round, "clamp": _clamp, "select_n": _select_n,
              "convert_element_type": _convert, "reduce_precision": _reduce_precision})


def _dim_as_value(cx, *, dim: Any, dtype: Any = None, **p):
    # the IR has no shape-of op: the sum of a ones vector of that length is the dim's value
    dt = cx.out_types[0].dtype
    ones = cx.op("broadcast_to", cx.scalar(1, dt), shape=(to_dim(dim),))
    return cx.op("reduce_sum", ones, axes=(0,))


RULES["dim_as_value"] = _dim_as_value


# ----- contractions ------------------------------------------------------------------

def _to_dtype(cx: EqnContext, x: Value, dt: DType) -> Value:
    return x if x.dtype == dt else cx.op("cast", x, dtype=dt)


def _dot_general(cx, a, b, *, dimension_numbers: Any, **p):
    (lc, rc), (lb, rb) = dimension_numbers
    lc, rc, lb, rb = (tuple(int(i) for i in t) for t in (lc, rc, lb, rb))
    dt = cx.out_types[0].dtype
    a, b = _to_dtype(cx, a, dt), _to_dtype(cx, b, dt)
    n = len(lb)
    batched = (n > 0 and lb == rb == tuple(range(n)) and a.rank == b.rank == n + 2
               and lc == (n + 1,) and rc == (n,))
    if batched:
        return cx.op("matmul", a, b)
    k = len(lc)
    if not lb and k and lc == tuple(range(a.rank - k, a.rank)) and rc == tuple(range(k)):
        return _flat_matmul(cx, a, b, k)
    return cx.op("dot_general", a, b, lhs_contracting=lc, rhs_contracting=rc, lhs_batch=lb, rhs_batch=rb)


def _flat_matmul(cx: EqnContext, a: Value, b: Value, k: int) -> Value:
    """x[..., *K] . w[*K, *N] as a matmul of [..., prod K] by [prod K, prod N] (flax Dense and
    DenseGeneral), so the matmul + bias fusions see it; the weight reshapes fold as constants."""
    lfree, rfree = a.shape[:a.rank - k], b.shape[k:]
    contract = D.dim_prod(a.shape[a.rank - k:])
    x = a if k == 1 else cx.op("reshape", a, shape=lfree + (contract,))
    wshape = (contract,) if not rfree else (contract, D.dim_prod(rfree))
    w = b if tuple(b.shape) == wshape else cx.op("reshape", b, shape=wshape)
    y = cx.op("matmul", x, w)
    return y if len(rfree) == 1 or not rfree else cx.op("reshape", y, shape=lfree + tuple(rfree))


def _transpose(cx: EqnContext, x: Value, perm: Sequence[int]) -> Value:
    perm = tuple(int(p) for p in perm)
    return x if perm == tuple(range(len(perm))) else cx.op("transpose", x, perm=perm)


def _conv(cx, lhs, rhs, *, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
          feature_group_count, batch_group_count, **p):
    if batch_group_count != 1:
        raise Unsupported("batch_group_count != 1 (a convolution's weight gradient) has no IR conv form")
    dt = cx.out_types[0].dtype
    lhs, rhs = _to_dtype(cx, lhs, dt), _to_dtype(cx, rhs, dt)
    # the IR conv is channels-first: x [N, C, *S], w [O, I/groups, *K]
    x = _transpose(cx, lhs, dimension_numbers.lhs_spec)
    w = _transpose(cx, rhs, dimension_numbers.rhs_spec)
    pads = _static_pads(padding)
    lhs_dil = tuple(int(d) for d in lhs_dilation)
    if any(lo < 0 or hi < 0 for lo, hi in pads):
        if any(d != 1 for d in lhs_dilation):
            raise Unsupported("negative padding together with lhs_dilation")
        x = _slice_negative(cx, x, pads, first_axis=2)
        pads = [(max(lo, 0), max(hi, 0)) for lo, hi in pads]
    y = cx.op("conv", x, w, stride=tuple(int(s) for s in window_strides), padding=tuple(pads),
              dilation=tuple(int(d) for d in rhs_dilation), groups=int(feature_group_count), lhs_dilation=lhs_dil)
    return _transpose(cx, y, inverse_perm(dimension_numbers.out_spec))


def _static_pads(padding: Sequence[Any]) -> list[tuple[int, int]]:
    pads = [(to_dim(lo), to_dim(hi)) for lo, hi in padding]
    if any(type(v) is not int for pair in pads for v in pair):
        raise Unsupported(f"padding {pads} depends on symbolic dims (use explicit padding or static spatial dims)")
    return pads


def _slice_negative(cx: EqnContext, x: Value, pads: Sequence[tuple[int, int]], first_axis: int) -> Value:
    """Drop the elements a negative (lo, hi) padding removes, on axes first_axis.."""
    starts, stops, axes = [], [], []
    for k, (lo, hi) in enumerate(pads):
        if lo < 0 or hi < 0:
            ax = first_axis + k
            starts.append(-lo if lo < 0 else 0)
            stops.append(D.dim_add(x.shape[ax], hi) if hi < 0 else x.shape[ax])
            axes.append(ax)
    return cx.op("slice", x, starts=tuple(starts), stops=tuple(stops), axes=tuple(axes))


RULES.update({"dot_general": _dot_general, "conv_general_dilated": _conv})


# ----- reductions --------------------------------------------------------------------

_REDUCE = {"reduce_sum": "reduce_sum", "reduce_max": "reduce_max", "reduce_min": "reduce_min",
           "reduce_prod": "reduce_prod", "reduce_and": "reduce_all", "reduce_or": "reduce_any"}
_BOOL_REDUCE = {"reduce_max": "reduce_any", "reduce_min": "reduce_all"}


def _reduce(name: str, op: str):
    def rule(cx: EqnContext, x: Value, *, axes: Sequence[int], **p: Any) -> Value:
        axes = tuple(int(a) for a in axes)
        if not axes:
            return x
        if x.dtype is DType.bool:
            return cx.op(_BOOL_REDUCE.get(name, op), x, axes=axes)
        return cx.op(op, x, axes=axes)
    return rule


for _name, _op in _REDUCE.items():
    RULES[_name] = _reduce(_name, _op)


def _arg(op: str):
    def rule(cx: EqnContext, x: Value, *, axes: Sequence[int], index_dtype: Any, **p: Any) -> Value:
        if x.dtype is DType.bool:  # the IR arg-reductions take numbers; False < True as 0 < 1
            x = cx.op("cast", x, dtype=DType.i8)
        return _to_dtype(cx, cx.op(op, x, axis=int(axes[0])), _dtype(index_dtype))
    return rule


def _cumulative(op: str):
    def rule(cx: EqnContext, x: Value, *, axis: int, reverse: bool, **p: Any) -> Value:
        return cx.op(op, x, axis=int(axis), reverse=bool(reverse))
    return rule


RULES.update({"argmax": _arg("argmax"), "argmin": _arg("argmin")})
for _kind in ("sum", "prod", "max", "min"):
    RULES[f"cum{_kind}"] = _cumulative(f"cum{_kind}")


def _window(kind: str):
    def rule(cx: EqnContext, x: Value, *, window_dimensions, window_strides, padding, base_dilation,
             window_dilation, **p: Any) -> Value:
        return _reduce_window(cx, x, kind, window_dimensions, window_strides, padding, base_dilation,
                              window_dilation)
    return rule


def _reduce_window(cx: EqnContext, x: Value, kind: str, window, strides, padding, base_dilation,
                   window_dilation) -> Value:
    """Pooling: move the dims the window touches last, fold the others into [N, C], pool, undo."""
    if any(int(d) != 1 for d in base_dilation):
        raise Unsupported("base_dilation != 1 has no IR pooling form")
    pads = _static_pads(padding)
    if any(lo < 0 or hi < 0 for lo, hi in pads):
        raise Unsupported("negative window padding")
    if kind == "sum" and not x.dtype.is_float:
        raise Unsupported(f"a summing window over {x.dtype} (the IR avg_pool is float only)")
    r = x.rank
    spatial = [d for d in range(r) if (int(window[d]), int(strides[d]), pads[d], int(window_dilation[d]))
               != (1, 1, (0, 0), 1)]
    if not spatial:
        return x
    rest = [d for d in range(r) if d not in spatial]
    perm = rest + spatial
    xt = _transpose(cx, x, perm)
    lead = [x.shape[d] for d in rest]
    folded = ([1, 1] if not lead else [1, lead[0]] if len(lead) == 1
              else [D.dim_prod(lead[:-1]), lead[-1]])
    xs = cx.op("reshape", xt, shape=tuple(folded) + tuple(x.shape[d] for d in spatial)) \
        if len(lead) != 2 else xt
    attrs = dict(kernel=tuple(int(window[d]) for d in spatial), stride=tuple(int(strides[d]) for d in spatial),
                 padding=tuple(pads[d] for d in spatial), dilation=tuple(int(window_dilation[d]) for d in spatial))
    if kind == "max":
        y = cx.op("max_pool", xs, **attrs)
    elif kind == "min":
        y = cx.op("neg", cx.op("max_pool", cx.op("neg", xs), **attrs))
    else:
        y = cx.op("mul", cx.op("avg_pool", xs, count_include_pad=True, **attrs),
                  cx.scalar(math.prod(attrs["kernel"]), xs))
    if len(lead) != 2:
        y = cx.op("reshape", y, shape=tuple(lead) + y.shape[2:])
    return _transpose(cx, y, inverse_perm(perm))


for _kind in ("max", "min", "sum"):
    RULES[f"reduce_window_{_kind}"] = _window(_kind)


# ----- shapes ------------------------------------------------------------------------

def _broadcast_in_dim(cx, x, *, shape, broadcast_dimensions, **p):
    shape = to_dims(shape)
    bdims = tuple(int(d) for d in broadcast_dimensions)
    if x.rank and bdims != tuple(range(len(shape) - x.rank, len(shape))):
        inter = [1] * len(shape)
        for src, dst in enumerate(bdims):
            inter[dst] = x.shape[src]
        x = cx.op("reshape", x, shape=tuple(inter))
    return x if tuple(x.shape) == shape else cx.op("broadcast_to", x, shape=shape)


def _reshape(cx, x, *, new_sizes, dimensions=None, **p):
    if dimensions is not None:
        x = _transpose(cx, x, dimensions)
    shape = to_dims(new_sizes)
    return x if tuple(x.shape) == shape else cx.op("reshape", x, shape=shape)


def _transpose_rule(cx, x, *, permutation, **p):
    return _transpose(cx, x, permutation)


def _squeeze(cx, x, *, dimensions, **p):
    return cx.op("squeeze", x, axes=tuple(int(d) for d in dimensions)) if dimensions else x


def _rev(cx, x, *, dimensions, **p):
    return cx.op("reverse", x, axes=tuple(int(d) for d in dimensions)) if dimensions else x


def _slice(cx, x, *, start_indices, limit_indices, strides=None, **p):
    starts, stops, steps, axes = [], [], [], []
    for ax, (lo, hi) in enumerate(zip(start_indices, limit_indices)):
        lo, hi = to_dim(lo), to_dim(hi)
        st = int(strides[ax]) if strides else 1
        if lo == 0 and hi == x.shape[ax] and st == 1:
            continue
        starts.append(lo)
        stops.append(hi)
        steps.append(st)
        axes.append(ax)
    if not axes:
        return x
    return cx.op("slice", x, starts=tuple(starts), stops=tuple(stops), axes=tuple(axes),
                 steps=tuple(steps) if any(s != 1 for s in steps) else ())


def _concatenate(cx, *xs, dimension, **p):
    return xs[0] if len(xs) == 1 else cx.op("concat", *xs, axis=int(dimension))


def _pad(cx, x, value, *, padding_config, **p):
    fill = static_value(value)
    if fill is None:
        raise Unsupported("a padding value computed at run time")
    cfg = [(int(lo), int(hi), int(interior)) for lo, hi, interior in padding_config]
    if any(i for _, _, i in cfg):
        raise Unsupported("interior padding")
    if any(lo < 0 or hi < 0 for lo, hi, _ in cfg):
        x = _slice_negative(cx, x, [(lo, hi) for lo, hi, _ in cfg], first_axis=0)
    pads = tuple((max(lo, 0), max(hi, 0)) for lo, hi, _ in cfg)
    if not any(lo or hi for lo, hi in pads):
        return x
    return cx.op("pad", x, pads=pads, value=float(fill))


def _iota(cx, *, dtype, shape, dimension, **p):
    return cx.op("iota", shape=to_dims(shape), axis=int(dimension), dtype=_dtype(dtype))


def _split(cx, x, *, sizes, axis, **p):
    axis = int(axis)
    outs = []
    start: Any = 0
    for size in sizes:
        stop = D.dim_add(start, to_dim(size))
        outs.append(cx.op("slice", x, starts=(start,), stops=(stop,), axes=(axis,)))
        start = stop
    return outs


def _dynamic_slice(cx, x, *starts, slice_sizes, **p):
    if len(starts) != x.rank:
        raise Unsupported("dynamic_slice with dynamic slice sizes")
    return cx.op("dynamic_slice", x, *starts, sizes=to_dims(slice_sizes))


def _dynamic_update_slice(cx, x, update, *starts, **p):
    return cx.op("dynamic_update_slice", x, update, *starts)


def _stack(cx, *xs, axis, **p):
    axis = int(axis)
    parts = [cx.op("unsqueeze", x, axes=(axis,)) for x in xs]
    return parts[0] if len(parts) == 1 else cx.op("concat", *parts, axis=axis)


def _tile(cx, x, *, reps, **p):
    reps = tuple(int(r) for r in reps)
    if len(reps) != x.rank:
        raise Unsupported(f"tile with {len(reps)} reps for rank {x.rank}")
    # [d0, d1, ..] -> [1, d0, 1, d1, ..] -> [r0, d0, r1, d1, ..] -> [r0*d0, r1*d1, ..]
    spread = cx.op("unsqueeze", x, axes=tuple(range(0, 2 * x.rank, 2)))
    wide = cx.op("broadcast_to", spread, shape=tuple(v for r, d in zip(reps, x.shape) for v in (r, d)))
    return cx.op("reshape", wide, shape=tuple(D.dim_mul(r, d) for r, d in zip(reps, x.shape)))


RULES.update({"stack": _stack, "tile": _tile})
RULES.update({"broadcast_in_dim": _broadcast_in_dim, "reshape": _reshape, "transpose": _transpose_rule,
              "squeeze": _squeeze, "rev": _rev, "slice": _slice, "concatenate": _concatenate, "pad": _pad,
              "iota": _iota, "split": _split, "dynamic_slice": _dynamic_slice,
              "dynamic_update_slice": _dynamic_update_slice})


# ----- sort / top_k ------------------------------------------------------------------

def _is_iota_along(v: Value, axis: int, shape: tuple) -> bool:
    node = v.producer
    return (node is not None and node.op == "iota" and node.attrs["axis"] % max(len(shape), 1) == axis
            and tuple(node.attrs["shape"]) == tuple(shape))


def _sort(cx, *xs, dimension, is_stable, num_keys, **p):
    if num_keys != 1:
        raise Unsupported(f"a sort on {num_keys} keys (lexicographic) has no IR form")
    axis = int(dimension)
    values, order = cx.ops("sort", xs[0], axis=axis)
    outs = [values]
    for other in xs[1:]:
        if _is_iota_along(other, axis, tuple(xs[0].shape)):
            outs.append(_to_dtype(cx, order, other.dtype))  # argsort
        else:
            outs.append(cx.op("take_along_axis", other, order, axis=axis))
    return outs


def _top_k(cx, x, *, k, axis=-1, **p):
    values, idx = cx.ops("topk", x, k=int(k), axis=int(axis), largest=True)
    return [values, _to_dtype(cx, idx, cx.out_types[1].dtype)]


RULES.update({"sort": _sort, "top_k": _top_k})


# ----- calls and control flow --------------------------------------------------------

def _call(param: str):
    def rule(cx: EqnContext, *args: Value, **params: Any) -> list[Value]:
        jaxpr, consts = _open(params[param])
        return cx.inline(jaxpr, consts, args)
    return rule


for _name, _param in (("jit", "jaxpr"), ("pjit", "jaxpr"), ("closed_call", "call_jaxpr"), ("core_call", "call_jaxpr"),
                      ("remat2", "jaxpr"), ("checkpoint", "jaxpr"), ("custom_jvp_call", "call_jaxpr"),
                      ("custom_vjp_call", "call_jaxpr"), ("custom_vjp_call_jaxpr", "fun_jaxpr")):
    RULES[_name] = _call(_param)


def _split_closure(values: Sequence[Value]) -> tuple[list[Value], list[Value]]:
    """(leading constant values, the rest) - constants are copied into regions, not threaded through."""
    k = 0
    while k < len(values) and values[k].const_value is not None:
        k += 1
    return list(values[:k]), list(values[k:])


def _types(values: Sequence[Value]) -> list[TensorType]:
    return [v.type for v in values]


def _cond(cx, index, *operands, branches, **p):
    regions = [cx.region(br, _types(operands), f"branch{k}") for k, br in enumerate(branches)]
    return list(cx.b.node("cond", [index, *operands], regions=regions).outputs)


def _while(cx, *args, cond_jaxpr, body_jaxpr, cond_nconsts, body_nconsts, **p):
    cconsts, bconsts, init = args[:cond_nconsts], args[cond_nconsts:cond_nconsts + body_nconsts], \
        args[cond_nconsts + body_nconsts:]
    cfixed, cdyn = _split_closure(cconsts)
    bfixed, bdyn = _split_closure(bconsts)
    # regions are closed: run-time consts of cond and body travel in the loop state
    state = cdyn + bdyn + list(init)
    nc, nb = len(cdyn), len(bdyn)
    cond = _state_region(cx, cond_jaxpr, cfixed, state, keep=range(0, nc), carry_from=nc + nb, name="cond",
                         passthrough=False)
    body = _state_region(cx, body_jaxpr, bfixed, state, keep=range(nc, nc + nb), carry_from=nc + nb, name="body",
                         passthrough=True)
    outs = cx.b.node("while_loop", state, regions=[cond, body]).outputs
    return list(outs[nc + nb:])


def _state_region(cx: EqnContext, closed: Any, fixed: list[Value], state: list[Value], keep: range, carry_from: int,
                  name: str, passthrough: bool):
    """A while region over the whole state: reads the consts in ``keep`` and the carry; the body
    returns the consts unchanged followed by the new carry."""
    jaxpr, consts = _open(closed)
    region = Graph(name)
    sub = _Converter(region, cx.conv.problems, cx.conv.rules)
    ins = [region.add_input(t) for t in _types(state)]
    bound = [sub.constant(v.const_value, name="const") for v in fixed]
    args = bound + [ins[i] for i in keep] + ins[carry_from:]
    outs = sub.run(jaxpr, consts, args, cx.conv.caller)
    region.set_outputs(ins[:carry_from] + outs if passthrough else outs)
    return region


def _scan(cx, *args, jaxpr, length, reverse, num_consts, num_carry, **p):
    consts, rest = args[:num_consts], list(args[num_consts:])
    fixed, dyn = _split_closure(consts)
    carry, xs = rest[:num_carry], rest[num_carry:]
    body_in = _types(dyn) + _types(carry) + [TensorType(t.dtype, t.shape[1:]) for t in _types(xs)]
    body = cx.region(jaxpr, body_in, "body", closure=fixed)
    node = cx.b.node("scan", [*dyn, *carry, *xs], {"num_consts": len(dyn), "num_carry": num_carry,
                                                   "length": int(length), "reverse": bool(reverse)},
                     regions=[body])
    return list(node.outputs)


RULES.update({"cond": _cond, "while": _while, "scan": _scan})
RULES.update(INDEXING_RULES)
