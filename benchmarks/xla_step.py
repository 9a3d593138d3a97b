"""CPU time of one accelir -> XLA decode step (random weights), one thread.

A check of the XLA generation step on a shared machine: CPU time per step (the step runs on the
calling thread with ``--xla_cpu_multi_thread_eigen=false``, so other processes' time does not count),
by cache capacity (what grows with the past beyond attention's own reads) and by precision (fp32,
int8, int4 with every layer quantised, as ``benchmarks/generate.py``'s rows).  Figures taken under
load are an A/B between runs of this script, or within one run, not the quiet table of
``benchmarks/generate.py``.  Run it on two commits to compare them::

    python benchmarks/xla_step.py --precisions fp32 --capacities 64,128,512,1024
    python benchmarks/xla_step.py --precisions fp32,int8,int4 --capacities 64

``--model qwen2`` is a grouped-query model (Qwen2-0.5B's layer: hidden 896, 14 query heads over 2
kv heads; ``--layers`` of them, a 32000-token vocabulary).  ``--without REWRITE`` times, in the same
rounds, the step built without one of its rewrites (``group_attention_heads``: the kv heads repeated
to every query head over the cache, what the XLA step did before; ``rows_of_outputs``: the linear weights
held as the IR's ``[K, N]``, not by rows).  ``--floor`` times the memory-read floor of the step's weights: a jitted
sum over the model's float32 weights (each read once, as a step must read them), and numpy's sum over
the same memory, in the same rounds as the step::

    python benchmarks/xla_step.py --model qwen2 --layers 4 --precisions fp32 --capacities 160,1056 \
        --without group_attention_heads
    python benchmarks/xla_step.py --precisions fp32 --capacities 64 --floor
    python benchmarks/xla_step.py --precisions fp32 --capacities 64 --without rows_of_outputs
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any, Callable


def _model(name: str, layers: int, quick: bool = False) -> Any:
    import transformers as T
    if name == "gpt2":
        tiny = dict(n_embd=64, n_head=4, vocab_size=500, n_positions=256) if quick else {}
        return T.GPT2LMHeadModel(T.GPT2Config(n_layer=layers, **tiny)).eval()
    size = (dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128, vocab_size=500)
            if quick else dict(hidden_size=896, num_attention_heads=14, num_key_value_heads=2, intermediate_size=4864,
                               vocab_size=32000))
    return T.Qwen2ForCausalLM(T.Qwen2Config(num_hidden_layers=layers, max_position_embeddings=4096,
                                            tie_word_embeddings=True, **size)).eval()


def step_timer(cm: Any, capacity: int, prompt: int = 32, steps: int = 5) -> Callable[[], float]:
    """A function that runs ``steps`` decode steps over a cache of ``capacity`` slots (``prompt`` of them
    filled) and returns the median CPU ms of one; the cache is prefilled here."""
    import numpy as np
    st = cm._stepper
    ids = np.random.default_rng(0).integers(0, cm.decode_graph.outputs[0].shape[-1], (1, prompt))

    def one() -> float:
        st.prefill(ids, np.ones((1, prompt), np.int64), np.arange(prompt)[None], capacity)
        times = []
        for _ in range(steps):
            t0 = time.process_time()
            st.decode(ids[:, -1:], np.ones((1, st.filled + 1), np.int64), np.full((1, 1), st.filled))
            times.append((time.process_time() - t0) * 1e3)
        return statistics.median(times)
    one()  # compiles
    return one


def floor_timers(cm: Any) -> tuple[float, dict[str, Callable[[], float]]]:
    """The MiB of the model's float32 weights (the prefill's device arrays: each weight once, a tied lm head
    once) and timers (CPU ms) of reading each of them once: a jitted sum over the device arrays, and numpy's
    sum over the same memory."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    # one array per weight: a tied embedding and the lm head's weight are one device array under two names
    arrays = list({id(a): a for a in cm._stepper.pre_params.values() if a.dtype == jnp.float32}.values())
    host = [np.asarray(a) for a in arrays]
    read_all = jax.jit(lambda xs: sum(jnp.sum(x) for x in xs))

    def timed(fn: Callable[[], Any]) -> Callable[[], float]:
        def one() -> float:
            t0 = time.process_time()
            fn()
            return (time.process_time() - t0) * 1e3
        one()  # compiles, pages in
        return one
    timers = {"floor: jitted sum over the weights": timed(lambda: float(read_all(arrays))),
              "floor: numpy sum over the weights": timed(lambda: sum(float(h.sum()) for h in host))}
    return sum(h.nbytes for h in host) / 2**20, timers


#: the decode step's rewrites ``--without`` can switch off (what the step did before each)
# name -> (what to patch, what stands in for it while the variant is built)
STEP_REWRITES = {
    "group_attention_heads": ("accelir.grouped_attention.group_attention_heads", lambda graph: 0),
    # the linear weights in the IR's [K, N] instead of held by rows, [N, K]
    "rows_of_outputs": ("accelir.lowering.jax.context._linear_weight_layouts", lambda graphs, prefixes: {}),
}


def _compiled(model: Any, precision: str, without: str | None) -> Any:
    """``optimize(model, backend='xla')``, its decode step built without the rewrite ``without`` if given."""
    import torch
    from unittest import mock
    import accelir
    prompt = torch.randint(0, model.config.vocab_size, (1, 8), generator=torch.Generator().manual_seed(0))
    kwargs = dict(backend="xla", precision=precision, accuracy=None if precision == "fp32" else {"max_abs": 1e30})
    if without is None:
        return accelir.optimize(model, (prompt,), **kwargs)
    with mock.patch(*STEP_REWRITES[without]):
        return accelir.optimize(model, (prompt,), **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("gpt2", "qwen2"), default="gpt2")
    parser.add_argument("--precisions", default="fp32,int8,int4")
    parser.add_argument("--capacities", default="64,1024")
    parser.add_argument("--layers", type=int, default=None, help="default: GPT-2 small's 12, Qwen2's 4")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--without", choices=tuple(STEP_REWRITES), default=None,
                        help="also time the step built without this rewrite, in the same rounds")
    parser.add_argument("--floor", action="store_true", help="also time reading the step's float32 weights once")
    parser.add_argument("--quick", action="store_true", help="tiny configs (64 wide, 500 tokens), one round: a check "
                        "that the script runs, not a measurement")
    opts = parser.parse_args(argv)
    if opts.quick:
        opts.rounds = 1
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    import torch
    torch.set_num_threads(1)
    layers = opts.layers or (2 if opts.quick else 12 if opts.model == "gpt2" else 4)
    capacities = [int(c) for c in opts.capacities.split(",")]
    print(f"{opts.model}, {layers} layers; load average {os.getloadavg()[0]:.2f} at the start; CPU ms per decode "
          f"step, one thread, medians of {opts.rounds} rounds")
    print("| step | " + " | ".join(f"capacity {c}" for c in capacities) + " |")
    print("|---|" + "---:|" * len(capacities))
    for precision in opts.precisions.split(","):
        torch.manual_seed(0)
        model = _model(opts.model, layers, opts.quick)
        variants = {precision: _compiled(model, precision, None)}
        if opts.without:
            variants[f"{precision}, without {opts.without}"] = _compiled(model, precision, opts.without)
        cells: dict[str, list[str]] = {label: [] for label in variants}
        floor_mib, floors = None, {}
        for capacity in capacities:
            timers = {label: step_timer(cm, capacity) for label, cm in variants.items()}
            if opts.floor and precision == "fp32" and not floors:
                floor_mib, floors = floor_timers(variants[precision])
                cells.update({label: [] for label in floors})
            if floors:
                timers.update(floors)
            samples: dict[str, list[float]] = {label: [] for label in timers}
            for _ in range(opts.rounds):  # interleaved: the variants see the same load
                for label, one in timers.items():
                    samples[label].append(one())
            for label, values in samples.items():
                cells[label].append(f"{statistics.median(values):.2f}")
        for label, row in cells.items():
            print(f"| {label} | " + " | ".join(row) + " |", flush=True)
        if floor_mib is not None:
            print(f"the model's float32 weights: {floor_mib:.1f} MiB")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
