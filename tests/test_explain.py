"""Why not fused: optimize(debug={"explain": True}), PassManager(explain=True), `accelir explain` and the HTML
report list the candidates a fusion pass left unfused, with the rule's reason and the node's provenance."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest
import torch

import accelir
from accelir.cli import main
from accelir.pass_manager import PassManager
from accelir.passes import pipeline
from accelir.visualize import to_html

from browser import dump_dom, element_text, page_data

MODEL = """
import math

import torch


class Attention(torch.nn.Module):
    def __init__(self, mask_first):
        super().__init__()
        self.q, self.k, self.v = (torch.nn.Linear(16, 16) for _ in range(3))
        self.mask_first = mask_first

    def forward(self, x, mask):
        q, k, v = self.q(x), self.k(x), self.v(x)
        if self.mask_first:  # the mask is added before the scale: not the attention the kernels compute
            scores = (q @ k.transpose(-1, -2) + mask) / math.sqrt(16)
        else:
            scores = q @ k.transpose(-1, -2) / math.sqrt(16) + mask
        return torch.softmax(scores, -1) @ v


class Model(torch.nn.Module):
    def __init__(self, mask_first=True):
        super().__init__()
        self.attn = Attention(mask_first)

    def forward(self, x, mask):
        return self.attn(x, mask)


def make(mask_first=True):
    torch.manual_seed(0)
    return Model(mask_first).eval(), (torch.randn(2, 8, 16), torch.zeros(2, 8, 8))
"""

REASON = "the mask is added before the scale"
# the candidate is the output product, probabilities @ v: its line in the model's source
LINE = MODEL.splitlines().index("        return torch.softmax(scores, -1) @ v") + 1


@pytest.fixture
def factory(tmp_path):
    path = tmp_path / "attention_model.py"
    path.write_text(MODEL)
    return str(path)


def _model(path: str, mask_first: bool):
    spec = importlib.util.spec_from_file_location("attention_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make(mask_first)


def test_optimize_explains_why_attention_did_not_fuse(factory):
    model, args = _model(factory, mask_first=True)
    cm = accelir.optimize(model, args, debug={"explain": True})
    np.testing.assert_allclose(cm(*args), model(*args).detach().numpy(), rtol=1e-5, atol=1e-5)
    assert "attention" not in cm.graph.op_histogram()
    (miss,) = [u for u in cm.report.passes.unfused if u.pass_name == "fuse_attention"]
    assert miss.rule == "attention" and REASON in miss.reason
    assert miss.op == "matmul" and miss.module == "attn" and miss.source == f"attention_model.py:{LINE}"
    assert miss.node.graph is cm.graph
    assert (f"fuse_attention:\n    attention at matmul (module attn, attention_model.py:{LINE}): attention: {REASON}"
            in str(cm.report))


def test_a_candidate_that_fused_is_not_listed(factory):
    model, args = _model(factory, mask_first=False)
    cm = accelir.optimize(model, args, debug={"explain": True})
    assert cm.graph.op_histogram()["attention"] == 1
    assert not [u for u in cm.report.passes.unfused if u.pass_name == "fuse_attention"]


def test_pass_manager_explain_leaves_the_pipeline_quiet(factory):
    model, args = _model(factory, mask_first=True)
    g = accelir.capture(model, args)
    passes = pipeline(2)
    pm = PassManager(passes, explain=True)
    pm.run(g)
    assert any(REASON in u.reason for u in pm.report.unfused)
    # the registered passes are not switched to verbose for later runs
    assert not any(getattr(p, "verbose", False) for p in passes)
    quiet = PassManager(pipeline(2))
    quiet.run(accelir.capture(model, args))
    assert quiet.report.unfused == [] and "why not fused" not in str(quiet.report)


def test_cli_explain(factory, capsys):
    assert main(["explain", f"{factory}:make", "--pass", "fuse_attention"]) == 0
    out = capsys.readouterr().out
    assert out == (f"why not fused:\n  fuse_attention:\n    attention at matmul (module attn, attention_model.py:{LINE}): "
                   f"attention: {REASON}\n")
    assert main(["explain", f"{factory}:make", "--pass", "fuse_gelu"]) == 0
    assert capsys.readouterr().out == "why not fused: no candidate left unfused by pass fuse_gelu\n"
    assert main(["explain", f"{factory}:make", "--pass", "fuse_nothing"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--pass fuse_nothing: the level 2 pipeline has no such pass" in err[0]


def test_html_shows_the_reason_next_to_the_node(factory, tmp_path):
    model, args = _model(factory, mask_first=True)
    cm = accelir.optimize(model, args, debug={"explain": True})
    page = to_html(cm.graph, cm.report)
    assert "<h2>Why not fused</h2>" in page and REASON in page
    (item,) = [it for it in page_data(page)["frames"][-1]["items"] if REASON in it["details"]]
    assert item["label"] == "matmul" and item["miss"] == 1
    dom = dump_dom(page, tmp_path, f"select={item['key']}")
    assert f"why not fused:\n  fuse_attention: attention: attention: {REASON}" in element_text(dom, "details")


def test_show_html_lists_why_not_fused(factory, tmp_path):
    page = tmp_path / "g.html"
    assert main(["show", f"{factory}:make", "--after-level", "2", "-o", str(page)]) == 0
    html = page.read_text()
    assert "<h2>Why not fused</h2>" in html and f"<td>attention: {REASON}</td>" in html
