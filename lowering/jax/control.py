"""jax rules: regions (fusion, cond, while_loop, scan)."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from .context import register_lowering

# ----- rules: regions ----------------------------------------------------------------

@register_lowering("fusion", layout=True)
def _fusion(ctx, *args, kind):
    return ctx.region(0, keep_layout=True)(*args)


@register_lowering("cond")
def _cond(ctx, index, *operands):
    branches = [ctx.region(i) for i in range(len(ctx.node.regions))]
    if index.dtype == jnp.bool_:
        return lax.cond(index, branches[1], branches[0], *operands)
    # clamp in the index's own type first so a wide index cannot wrap when narrowed
    clamped = jnp.clip(index, 0, len(branches) - 1).astype(jnp.int32)
    return lax.switch(clamped, branches, *operands)


@register_lowering("while_loop")
def _while_loop(ctx, *init):
    cond, body = ctx.region(0), ctx.region(1)
    return list(lax.while_loop(lambda s: cond(*s)[0], lambda s: tuple(body(*s)), tuple(init)))


@register_lowering("scan")
def _scan(ctx, *args, num_consts, num_carry, length, reverse):
    consts, carry, xs = args[:num_consts], args[num_consts:num_consts + num_carry], args[num_consts + num_carry:]
    body = ctx.region(0)

    def step(c, x):
        out = body(*consts, *c, *x)
        return tuple(out[:num_carry]), tuple(out[num_carry:])

    final, ys = lax.scan(step, tuple(carry), tuple(xs), length=length, reverse=reverse)
    return list(final) + list(ys)
