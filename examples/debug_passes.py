"""Debugging passes: step through the pipeline, read the diffs, dump them, then catch and bisect a wrong pass.

1. Capture a small torch model and run the level-2 pipeline with
   ``print_after="changed"`` (a unified diff of the IR after each pass that
   changed it) and ``dump_dir`` (numbered ``.air`` files plus ``report.txt``).
2. Add a deliberately wrong pass, a "fast GELU" that replaces ``gelu(x)`` by
   ``relu(x)``, and run again with ``check_numerics``: the PassManager interprets
   the graph after every pass and names the first one whose outputs drift.
3. ``accelir.bisect`` finds the failing pass and the single rewrite inside it,
   and writes a reproducer directory (IR before the pass, inputs, replay script).
4. Everything lands in one HTML page: the graph, the per-pass table and the diffs.

The model is small either way; ``--full`` (or ``ACCELIR_FULL=1``) makes it wider and deeper.

    python examples/debug_passes.py [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import torch

import accelir
from accelir.passes import Op, Rule, RulePass, Var, pipeline
from accelir.visualize import to_html

__all__ = ["Net", "fast_gelu", "main"]


class Net(torch.nn.Module):
    """Two GELU MLP blocks with layer norms: enough for several fusions to fire."""

    def __init__(self, width: int, depth: int):
        super().__init__()
        self.blocks = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(width, 2 * width), torch.nn.GELU(), torch.nn.Linear(2 * width, width))
            for _ in range(depth))
        self.norms = torch.nn.ModuleList(torch.nn.LayerNorm(width) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block, norm in zip(self.blocks, self.norms):
            x = norm(x + block(x))
        return torch.softmax(x, dim=-1)


# The wrong pass: relu is not gelu (they differ by up to 0.17 near x = -0.75).
fast_gelu = RulePass("fast_gelu", (Rule("gelu_to_relu", Op("gelu", Var("x")), lambda m, b: b.op("relu", m["x"])),))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", default=os.environ.get("ACCELIR_FULL") == "1")
    parser.add_argument("--out", default=None, help="directory for dumps, reproducer and report (default: temporary)")
    args = parser.parse_args(argv)
    out_dir = args.out or tempfile.mkdtemp(prefix="accelir-debug-")
    width, depth = (256, 6) if args.full else (16, 2)

    torch.manual_seed(0)
    model = Net(width, depth).eval()
    x = torch.randn(4, width)
    graph = accelir.capture(model, (x,))
    inputs = [x.numpy()]
    print(f"captured {graph.num_nodes()} nodes:\n{graph}")

    # 1. watch the level-2 pipeline, pass by pass
    dumps = os.path.join(out_dir, "dumps")
    optimized = graph.copy()
    # overwrite: a second run into the same --out replaces its own dumps (and refuses other files)
    pm = accelir.PassManager(pipeline(2), print_after="changed", dump_dir=dumps, overwrite=True)
    pm.run(optimized)
    print(pm.report)
    print(f"dumps in {dumps}: {', '.join(sorted(os.listdir(dumps)))}\n")

    # 2. a wrong pass is caught by check_numerics, which names it
    broken = [fast_gelu] + pipeline(2)
    try:
        accelir.PassManager(broken, check_numerics=inputs).run(graph.copy())
    except accelir.NumericMismatchError as e:
        print(f"check_numerics caught it: {e}\n")
        if e.pass_name != "fast_gelu":
            raise SystemExit(f"check_numerics blamed {e.pass_name!r}, not fast_gelu")
    else:
        raise SystemExit("check_numerics did not notice the wrong pass")

    # 3. bisect: the pass, then the first rewrite inside it, and a reproducer
    result = accelir.bisect(graph, broken, inputs=inputs, out_dir=os.path.join(out_dir, "bisect"),
                            overwrite=True)
    print(result)
    if result.pass_name != "fast_gelu" or result.first_bad_rewrite != 1:
        raise SystemExit(f"bisect did not narrow the failure to fast_gelu's first rewrite: {result}")

    # 4. one page with the optimised graph, the per-pass table and every diff
    report = os.path.join(out_dir, "passes.html")
    with open(report, "w", encoding="utf-8") as f:
        f.write(to_html(optimized, pm.report, dumps, title="debug_passes: level-2 pipeline"))
    expected = model(x).detach().numpy()
    got = accelir.interpret(optimized, x)[0]
    print(f"\nwrote {report}; optimised graph vs eager torch: max abs error {np.abs(got - expected).max():.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
