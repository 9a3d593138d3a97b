"""CPU time of one accelir -> XLA decode step of GPT-2 small (random weights), one thread.

A check of the XLA generation step on a shared machine: CPU time per step (the step runs on the
calling thread with ``--xla_cpu_multi_thread_eigen=false``, so other processes' time does not count),
by cache capacity (64 to 1024: what grows with the past beyond attention's own reads) and by
precision (fp32, int8, int4 with every layer quantised, as ``benchmarks/generate.py``'s rows).
Figures taken under load are an A/B between runs of this script, not the quiet table of
``benchmarks/generate.py``.  Run it on two commits to compare them::

    python benchmarks/xla_step.py --precisions fp32 --capacities 64,128,512,1024
    python benchmarks/xla_step.py --precisions fp32,int8,int4 --capacities 64
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def step_ms(cm, capacity: int, prompt: int = 32, steps: int = 5, rounds: int = 5) -> float:
    """Median CPU ms of one decode step over a cache of ``capacity`` slots, ``prompt`` of them filled."""
    import numpy as np
    st = cm._stepper
    ids = np.random.default_rng(0).integers(0, cm.decode_graph.outputs[0].shape[-1], (1, prompt))
    st.prefill(ids, np.ones((1, prompt), np.int64), np.arange(prompt)[None], capacity)

    def one() -> float:
        st.filled = prompt
        t0 = time.process_time()
        for _ in range(steps):
            st.decode(ids[:, -1:], np.ones((1, st.filled + 1), np.int64), np.full((1, 1), st.filled))
        return (time.process_time() - t0) / steps * 1e3
    one()  # compiles
    return statistics.median(one() for _ in range(rounds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", default="fp32,int8,int4")
    parser.add_argument("--capacities", default="64,1024")
    parser.add_argument("--layers", type=int, default=12, help="GPT-2 small has 12")
    opts = parser.parse_args(argv)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    import torch
    import transformers as T
    import accelir
    torch.set_num_threads(1)
    capacities = [int(c) for c in opts.capacities.split(",")]
    print(f"load average {os.getloadavg()[0]:.2f} at the start; CPU ms per decode step, one thread")
    print("| precision | " + " | ".join(f"capacity {c}" for c in capacities) + " |")
    print("|---|" + "---:|" * len(capacities))
    for precision in opts.precisions.split(","):
        torch.manual_seed(0)
        model = T.GPT2LMHeadModel(T.GPT2Config(n_layer=opts.layers)).eval()
        prompt = torch.randint(0, model.config.vocab_size, (1, 8), generator=torch.Generator().manual_seed(0))
        cm = accelir.optimize(model, (prompt,), backend="xla", precision=precision,
                              accuracy=None if precision == "fp32" else {"max_abs": 1e30})
        cells = " | ".join(f"{step_ms(cm, c):.2f}" for c in capacities)
        print(f"| {precision} | {cells} |", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
