"""Export an optimised model to files other tools read: ONNX, StableHLO, HLO, and accelir's own IR.

A small torch CNN (conv, batch norm, ReLU, pooling, a linear head) is optimised
once and written four ways; each file is then read back by the tool it is for
and checked against eager torch:

- ``cnn.onnx``: run by a fresh ``onnxruntime.InferenceSession`` (open it in Netron to look);
- ``cnn.mlir``: StableHLO text, the input of any XLA / IREE toolchain;
- ``cnn.hlo``: HLO text, as XLA's own tools print it;
- ``cnn.air``: accelir IR text (+ ``.npz`` for the weights), loaded back and interpreted.

Small by default; ``--full`` (or ``ACCELIR_FULL=1``) uses a wider network and 224x224 images.

    python examples/export.py [--full] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import torch

import accelir

__all__ = ["CNN", "main"]


class CNN(torch.nn.Module):
    def __init__(self, width: int, classes: int = 10):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.BatchNorm2d(width), torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(width, 2 * width, 3, padding=1), torch.nn.BatchNorm2d(2 * width), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1))
        self.head = torch.nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", default=os.environ.get("ACCELIR_FULL") == "1")
    parser.add_argument("--out", default=None, help="directory for the files (default: a temporary one)")
    args = parser.parse_args(argv)
    out_dir = args.out or tempfile.mkdtemp(prefix="accelir-export-")
    os.makedirs(out_dir, exist_ok=True)
    width, size = (64, 224) if args.full else (8, 32)

    torch.manual_seed(0)
    model = CNN(width).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = model(x).numpy()
    tolerance = 1e-4 + 1e-3 * float(np.abs(expected).max())

    cm = accelir.optimize(model, (x,))
    hist = cm.graph.op_histogram()
    print(f"optimised: {cm.source_graph.num_nodes()} -> {cm.graph.num_nodes()} nodes; ops {dict(sorted(hist.items()))}")
    paths = {suffix: cm.export(os.path.join(out_dir, f"cnn{suffix}"), overwrite=True)
             for suffix in (".onnx", ".mlir", ".hlo", ".air")}
    for path in paths.values():
        print(f"wrote {path} ({os.path.getsize(path) / 1e3:.1f} kB)")

    import onnxruntime as ort
    session = ort.InferenceSession(paths[".onnx"], providers=["CPUExecutionProvider"])
    results = {".onnx": session.run(None, {session.get_inputs()[0].name: x.numpy()})[0],
               ".air": accelir.interpret(accelir.load(paths[".air"]), x.numpy())[0]}
    for suffix, got in results.items():
        err = float(np.abs(got - expected).max())
        print(f"{suffix:6s} read back and run: max abs error vs eager torch {err:.2e}")
        if not err <= tolerance:
            raise SystemExit(f"{paths[suffix]}: outputs differ from eager torch by {err}")

    with open(paths[".mlir"], encoding="utf-8") as f:
        stablehlo = f.read()
    with open(paths[".hlo"], encoding="utf-8") as f:
        hlo = f.read()
    if "stablehlo." not in stablehlo or "HloModule" not in hlo:
        raise SystemExit("the .mlir file is not StableHLO or the .hlo file is not HLO text")
    print(f".mlir  {stablehlo.count('stablehlo.')} StableHLO ops; .hlo {hlo.count(chr(10))} lines of HLO")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
