"""Write your own pass as a pattern rule, register it, and run it on a captured model.

The rule is a strength reduction: division by a constant becomes multiplication
by its reciprocal (``x / c -> x * (1/c)``), which every backend runs faster.
It declines constants with a zero element (``1/0`` would turn ``x / 0`` into
``x * inf``, which differs for ``x = 0``) and says so in verbose mode: the "why
not" report.

The script runs the rule on IR text first (the mlir-opt habit: text in, text
out), then on a captured torch model inside the PassManager with
``check_numerics``, and finally from the command line through the pass registry.

    python examples/custom_pass.py [--full]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import torch

import accelir
from accelir.cli import main as accelir_cli
from accelir.ir import Builder, Value
from accelir.passes import Const, Match, Op, Rule, RulePass, Var, get_pass, register_pass

__all__ = ["div_by_constant", "Scaled", "main"]


def _reciprocal(m: Match, b: Builder) -> Value | None:
    c = m.const("c")
    if not m["x"].dtype.is_float:
        return m.reject("integer division truncates; x * (1/c) would not")
    if not np.all(c != 0):
        return m.reject("the divisor has a zero element")
    if m["x"].type != m.root.output.type:
        return m.reject("the constant broadcasts x to a larger shape")
    return b.op("mul", m["x"], b.const((1 / c.astype(np.float64)).astype(c.dtype), name="reciprocal"))


# Registered by name, so PassManager reports and `accelir optimize --passes` can use it (registering adds
# no pass to the default pipelines: those are the explicit lists in passes/pipeline.py).
div_by_constant = register_pass("div_by_constant")(
    RulePass("div_by_constant", (Rule("div_to_mul", Op("div", Var("x"), Const(name="c")), _reciprocal,
                                      near_miss_depth=1),), verbose=True))

TEXT = """graph main(%x: f32[2,4]) -> (f32[2,4], f32[2,4]) {
  %eight = constant() {name="eight", value=8.0} : f32[]
  %zero = constant() {name="zero", value=[1.0, 0.0, 2.0, 4.0]} : f32[4]
  %0 = div(%x, %eight) : f32[2,4]
  %1 = div(%x, %zero) : f32[2,4]
  return %0, %1
}
"""


class Scaled(torch.nn.Module):
    """Attention-style scaling and a normalisation by a fixed constant: two divisions by constants."""

    def __init__(self, width: int):
        super().__init__()
        self.proj = torch.nn.Linear(width, width)
        self.scale = width ** 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = (x @ x.transpose(-1, -2)) / self.scale
        return self.proj(torch.softmax(scores, dim=-1) @ x) / 3.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", default=os.environ.get("ACCELIR_FULL") == "1")
    args = parser.parse_args(argv)

    # 1. text in, text out
    graph = accelir.parse(TEXT)
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    before = accelir.interpret(graph, x)
    div_by_constant(graph)
    print(graph)
    for miss in div_by_constant.near_misses:
        print(f"not rewritten: {miss}")
    ops = graph.op_histogram()
    if ops.get("mul") != 1 or ops.get("div") != 1:
        raise SystemExit(f"expected one div rewritten and one declined, got {ops}")
    after = accelir.interpret(graph, x)
    np.testing.assert_allclose(after[0], before[0], rtol=1e-6)
    np.testing.assert_array_equal(after[1], before[1])

    # 2. on a captured model, inside the PassManager, with the numeric check after the pass
    width = 256 if args.full else 8
    torch.manual_seed(0)
    model = Scaled(width).eval()
    example = torch.randn(1, 6, width)
    captured = accelir.capture(model, (example,))
    pm = accelir.PassManager([get_pass("div_by_constant"), get_pass("dce")], check_numerics=[example.numpy()])
    pm.run(captured)
    print(pm.report)
    divs = captured.op_histogram().get("div", 0)
    print(f"divisions left in the captured model: {divs}")
    if divs:
        raise SystemExit("div_by_constant left a division by a constant")

    # 3. the same pass from the command line, by its registered name
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "scaled.air")
        accelir.parse(TEXT).save(path)
        return accelir_cli(["show", path, "--passes", "div_by_constant"])


if __name__ == "__main__":
    raise SystemExit(main())
