"""The README's python snippets run as written.

Every ```python block of README.md runs, in order, in one namespace (a later block uses
what an earlier one defined, as a reader following the page does) and in a temporary
directory (the snippets write files).  Two mechanisms keep this fast without editing
what the reader sees:

- ``_smaller`` swaps a full-size model configuration for a tiny one of the same class:
  the GPT-2 snippet builds a 2-layer, 64-wide GPT-2 and is otherwise unchanged.
- A block right after an HTML comment ``<!-- not run: REASON -->`` is skipped, REASON
  saying what it needs (a GPU, a download).  Use it sparingly; no block needs it today.

The results the snippets compute are then checked against an independent oracle.
"""

from __future__ import annotations

import os
import re
import traceback
from typing import Any

import numpy as np
import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")

_BLOCK = re.compile(r"(?:^<!-- not run: (?P<reason>[^\n]*?) -->\n)?^```python\n(?P<code>.*?)^```$", re.S | re.M)


def readme_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """(first line of the code, the code, why it is not run or None) for each python block of ``text``."""
    return [(text.count("\n", 0, m.start("code")) + 1, m.group("code"), m.group("reason"))
            for m in _BLOCK.finditer(text)]


def _smaller(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the README's full-size models small: same classes, fewer and narrower layers."""
    import transformers

    class TinyGPT2Config(transformers.GPT2Config):
        def __init__(self, **kwargs: Any):
            super().__init__(**{"n_layer": 2, "n_embd": 64, "n_head": 2, **kwargs})

    monkeypatch.setattr(transformers, "GPT2Config", TinyGPT2Config)


def run_readme(text: str, path: str = README) -> dict[str, Any]:
    """Run each python block of ``text`` (README.md) in one namespace; a traceback points at README lines."""
    namespace: dict[str, Any] = {"__name__": "readme"}
    for line, code, reason in readme_blocks(text):
        if reason is None:
            exec(compile("\n" * (line - 1) + code, path, "exec"), namespace)
    return namespace


def test_every_python_block_is_found_and_any_skip_says_why():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    blocks = readme_blocks(text)
    assert len(blocks) == text.count("```python") >= 3
    assert all(reason is None or reason.strip() for _, _, reason in blocks)


def test_a_broken_snippet_fails():
    text = "intro\n\n```python\nx = 1\n```\n\nmore\n\n```python\ny = x + undefined_name\n```\n"
    with pytest.raises(NameError) as info:
        run_readme(text, "README.md")
    frames = traceback.extract_tb(info.tb)
    assert any(f.filename == "README.md" and f.lineno == 10 for f in frames)  # the broken statement's line
    skipped = text.replace("more\n\n", "more\n\n<!-- not run: needs a GPU -->\n")
    assert run_readme(skipped)["x"] == 1


def test_readme_python_snippets_run(tmp_path, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    _smaller(monkeypatch)
    torch.manual_seed(0)
    with open(README, encoding="utf-8") as f:
        ns = run_readme(f.read())
    # the IR snippet: relu(x @ w) in numpy
    np.testing.assert_allclose(ns["y"], np.maximum(ns["x"] @ ns["w"], 0), rtol=1e-6)
    # the GPT-2 snippet: the optimised model against eager torch, and its export
    with torch.no_grad():
        expected = ns["model"](ns["ids"]).last_hidden_state
    np.testing.assert_allclose(ns["out"].last_hidden_state.numpy(), expected.numpy(), rtol=1e-3, atol=1e-4)
    assert (tmp_path / "gpt2.onnx").is_file()
    # the generation snippets: transformers' greedy tokens, and the exported pair run by plain onnxruntime
    want = ns["lm"].generate(ns["prompt"], max_new_tokens=24, do_sample=False)
    assert ns["tokens"].tolist() == want.tolist() and len(ns["new"]) == 24
    assert (tmp_path / "lm.onnx").is_file() and (tmp_path / "lm.decode.onnx").is_file()
    # the flax snippet: greedy decoding in plain jax, the prompt fed one token at a time through the cache
    cache, seq = ns["variables"]["cache"], [int(t) for t in ns["flax_ids"][0]]
    for t in range(len(seq) + 7):
        logits, mutated = ns["decoder"].apply({"params": ns["variables"]["params"], "cache": cache},
                                              np.array([[seq[t]]], np.int32), mutable=["cache"])
        cache = mutated["cache"]
        if t >= 2:
            seq.append(int(logits[0, -1].argmax()))
    assert np.asarray(ns["flax_tokens"]).tolist() == [seq]
    # the sharding snippet (on however many devices jax has here)
    np.testing.assert_allclose(ns["split_out"].last_hidden_state.numpy(), expected.numpy(), rtol=1e-3, atol=1e-4)
    assert ns["fc"].shape == tuple(ns["model"].h[0].mlp.c_fc.weight.shape)
    # the torch.compile snippet
    np.testing.assert_allclose(ns["fast"].last_hidden_state.numpy(), expected.numpy(), rtol=1e-3, atol=1e-4)
    # the pass-watching snippet: its dumps and report
    assert (tmp_path / "dumps" / "000-input.air").is_file() and (tmp_path / "dumps" / "report.txt").is_file()
