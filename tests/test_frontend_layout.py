"""The frontends keep one shape: in each of accelir/frontends/{onnx,torch,jax,caffe}, a rule module
imports only its package's context (and modules outside the package), never the driver nor
another rule module, and nothing imports an underscore name from another module."""

from __future__ import annotations

import ast
import os

import pytest

import accelir.frontends

ROOT = os.path.dirname(accelir.frontends.__file__)
# modules of a frontend package that are not rule modules, and the package-level modules they may import
NOT_RULES = {"__init__", "driver", "context", "proto", "evaluate", "converter", "fx", "conformance",
             "schema", "message", "textformat", "wire",
             "dynamo", "generation"}  # torch: drivers of their own (Dynamo's graphs; prefill + decode capture)
LOWER = {"context", "proto"}  # what a rule module may import from its own package


def _imports(path: str) -> list[tuple[int, str | None, list[str]]]:
    """(level, module, names) of every import in the file, those inside functions included."""
    tree = ast.parse(open(path).read())
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom):
            out.append((n.level, n.module, [a.name for a in n.names]))
    return out


def _modules(package: str) -> list[str]:
    return sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, package)) if f.endswith(".py"))


@pytest.mark.parametrize("package", ["onnx", "torch", "jax", "caffe"])
def test_rule_modules_import_only_the_context(package):
    mods = _modules(package)
    rule_mods = [m for m in mods if m not in NOT_RULES]
    assert rule_mods, f"no rule modules found in frontends/{package}"
    bad = []
    for m in rule_mods:
        for level, module, names in _imports(os.path.join(ROOT, package, m + ".py")):
            if level != 1:
                continue
            targets = [module] if module else names
            bad += [f"{m} imports .{t}" for t in targets if t.split(".")[0] not in LOWER]
    assert not bad, bad


@pytest.mark.parametrize("package", ["onnx", "torch", "jax", "caffe"])
def test_no_private_name_crosses_frontend_modules(package):
    bad = []
    for m in _modules(package):
        for level, module, names in _imports(os.path.join(ROOT, package, m + ".py")):
            if level:
                bad += [f"{m} imports {n} from {'.' * level}{module or ''}" for n in names
                        if n.startswith("_") and n != "__future__"]
    assert not bad, bad
