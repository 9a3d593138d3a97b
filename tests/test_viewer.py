"""The interactive HTML graph in a real headless browser: every edge drawn clear of the boxes, search, the
details panel, collapsed layers and the graph after each pass (see accelir.viewer)."""

from __future__ import annotations

import functools
import json
import re

import numpy as np
import pytest
import torch
import transformers

import accelir
from accelir.pass_manager import PassManager
from accelir.passes import get_pass, pipeline
from accelir.viewer import Frames
from accelir.visualize import to_html

from browser import boxes, dump_dom, edge_paths, element_text, page_data


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@functools.cache
def _captured(name: str) -> accelir.Graph:
    torch.manual_seed(0)
    return _resnet_model() if name == "resnet" else _gpt2_model()


def _resnet() -> accelir.Graph:
    """A fresh copy of the captured model: captured once per session, since capture takes seconds."""
    return _captured("resnet").copy()


def _gpt2() -> accelir.Graph:
    return _captured("gpt2").copy()


def _resnet_model() -> accelir.Graph:
    # two basic blocks per stage: the second of each adds its input back unchanged (an identity shortcut)
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[2, 2], layer_type="basic")
    return accelir.capture(transformers.ResNetModel(config).eval(), (torch.randn(1, 3, 32, 32),))


def _gpt2_model() -> accelir.Graph:
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50, n_positions=16, use_cache=False)
    return accelir.capture(transformers.GPT2Model(config).eval(), (torch.randint(0, 50, (1, 8)),))


def _check_every_edge_drawn_clear(page: str, dom: str) -> dict[str, list[list[tuple[float, float]]]]:
    """Each edge of the page's last frame is one path; no point of any path lies inside a box."""
    data = page_data(page)["frames"][-1]
    drawn = boxes(dom)
    paths: dict[str, list] = {}
    for edge_id, pts in edge_paths(dom):
        paths.setdefault(edge_id, []).append(pts)
    want = {f"{s}>{d}#{i}" for s, i, _, d in data["edges"]}
    assert set(paths) == want
    assert {k for k, v in paths.items() if len(v) > 1} == set()
    assert set(drawn) == {it["key"] for it in data["items"]}
    for edge_id, (pts,) in paths.items():
        for x, y in pts:
            inside = [b.key for b in drawn.values() if b.inside(x, y)]
            assert not inside, f"edge {edge_id} runs under {inside} at ({x}, {y})"
    return paths


def test_resnet_identity_adds_show_both_inputs(tmp_path):
    g = _resnet()
    page = to_html(g)
    dom = dump_dom(page, tmp_path)
    paths = _check_every_edge_drawn_clear(page, dom)
    data = page_data(page)["frames"][-1]
    adds = [it["key"] for it in data["items"] if it["label"] == "add"]
    assert len(adds) == 4  # one residual add per block
    for key in adds:
        into = [pts for eid, (pts,) in paths.items() if eid.split(">")[1].startswith(key + "#")]
        assert len(into) == 2
        ends = {pts[-1] for pts in into}
        assert len(ends) == 2, f"both inputs of {key} end at one point"
    # the identity shortcuts jump layers: they run through slots, so their paths bend more than once
    assert sum(1 for (pts,) in paths.values() if len(pts) > 4) >= 2


def test_gpt2_residual_edges_are_visible(tmp_path):
    g = _gpt2()
    page = to_html(g)
    dom = dump_dom(page, tmp_path)
    paths = _check_every_edge_drawn_clear(page, dom)
    data = page_data(page)["frames"][-1]
    # a residual add reads the block's input from several layers up
    residual = 0
    layer_of = {k: b.y for k, b in boxes(dom).items()}
    for it in data["items"]:
        if it["label"] != "add" or it["module"] not in ("h.0", "h.1"):  # GPT2Block: residual + sublayer
            continue
        into = [eid for eid in paths if eid.split(">")[1].startswith(it["key"] + "#")]
        if len(into) < 2:  # a bias add: its constant is not drawn
            continue
        assert len({paths[eid][0][-1] for eid in into}) == 2  # two inputs, two arrow heads
        srcs = [eid.split(">")[0] for eid in into]
        if max(layer_of[it["key"]] - layer_of[s] for s in srcs) > 200:
            residual += 1
    assert residual == 4  # two per block


def test_output_labels_do_not_overprint(tmp_path):
    g = accelir.parse("""graph main(%x: f32[6,4]) -> (f32[6,2], f32[6,2], i64[6,2]) {
  %a, %b = topk(%x) {k=2} : f32[6,2], i64[6,2]
  %d = neg(%a) : f32[6,2]
  %e = exp(%a) : f32[6,2]
  return %d, %e, %b
}
""")
    dom = dump_dom(to_html(g), tmp_path)
    labels = [(float(x), float(y), t) for x, y, t in
              re.findall(r'<text class="ol" x="([-\d.]+)" y="([-\d.]+)">(\d+)</text>', dom[dom.index('id="vp"'):])]
    assert sorted(t for _, _, t in labels) == ["0", "1"]  # one label per output, though %a has two users
    xs = sorted(x for x, _, _ in labels)
    assert all(b - a >= 12 for a, b in zip(xs, xs[1:]))


def test_search_is_case_insensitive_over_names_ops_and_modules(tmp_path):
    g = _gpt2()
    page = to_html(g)
    data = page_data(page)["frames"][-1]
    for query, pick in [("LAYER_NORM", lambda it: it["label"] == "layer_norm"),
                        ("H.1.MLP", lambda it: it["module"].startswith("h.1.mlp")),
                        ("c_FC", lambda it: "c_fc" in it["module"])]:
        dom = dump_dom(page, tmp_path, f"find={query}")
        hits = {k for k, b in boxes(dom).items() if "hit" in b.classes}
        want = {it["key"] for it in data["items"] if pick(it)}
        assert hits - {"out"} == want and want  # the return matches by its values' names
        assert element_text(dom, "hits") == f"{len(hits)} matches"
    # a value name: the printed name of the embedding lookup's result
    name = data["items"][0]["details"].split(":")[0].split()[-1]
    dom = dump_dom(page, tmp_path, f"find={name.upper().lstrip('%')}")
    assert "hit" in boxes(dom)[data["items"][0]["key"]].classes


def test_side_panel_shows_details_and_provenance(tmp_path):
    g = _gpt2()
    page = to_html(g)
    data = page_data(page)["frames"][-1]
    ln = next(it for it in data["items"] if it["label"] == "layer_norm")
    dom = dump_dom(page, tmp_path, f"select={ln['key']}")
    text = element_text(dom, "details")
    assert "op: layer_norm" in text and "inputs:\n  %" in text and "outputs:\n  %" in text
    assert re.search(r"module: h\.0\.ln_1", text) and "source line:" in text
    assert re.search(r"constants:\n  %\S+ = constant \S+: f32\[32\]", text)  # weight and bias, shape and dtype
    assert "sel" in boxes(dom)[ln["key"]].classes
    perm = next(it for it in data["items"] if it["label"] == "transpose")
    text = element_text(dump_dom(page, tmp_path, f"select={perm['key']}"), "details")
    assert re.search(r"attributes:\n  perm = \(", text)


def test_layers_collapse_by_module_path(tmp_path):
    g = _gpt2()
    page = to_html(g)
    dom = dump_dom(page, tmp_path, "depth=2")
    drawn = boxes(dom)
    groups = {k for k, b in drawn.items() if "group" in b.classes}
    assert {"g:h.0", "g:h.1"} <= groups
    assert len(drawn) < len(page_data(page)["frames"][-1]["items"]) / 2
    _check_every_edge_drawn_clear_of(dom, drawn)
    dom = dump_dom(page, tmp_path, "depth=2&expand=h.1")
    drawn = boxes(dom)
    assert "g:h.0" in drawn and "g:h.1" not in drawn and "g:h.1.attn" in drawn
    _check_every_edge_drawn_clear_of(dom, drawn)
    # one layer collapsed by hand, the rest drawn node by node
    dom = dump_dom(page, tmp_path, "collapse=h.0.attn")
    drawn = boxes(dom)
    assert "g:h.0.attn" in drawn and not [k for k in drawn if k.startswith("g:") and k != "g:h.0.attn"]
    attn = [it["key"] for it in page_data(page)["frames"][-1]["items"] if it["module"].startswith("h.0.attn")]
    assert attn and not set(attn) & set(drawn)
    _check_every_edge_drawn_clear_of(dom, drawn)


def _check_every_edge_drawn_clear_of(dom: str, drawn) -> None:
    for edge_id, pts in edge_paths(dom):
        for x, y in pts:
            assert not [b.key for b in drawn.values() if b.inside(x, y)], edge_id


def test_graph_after_each_pass_marks_what_it_changed(tmp_path):
    g = _gpt2()
    frames = Frames(g)
    pm = PassManager(pipeline(2), instrument=frames, dump_dir=tmp_path / "dumps")
    pm.run(g)
    page = to_html(g, pm.report, tmp_path / "dumps", frames=frames)
    data = page_data(page)
    dumped = sorted(p.name[:-4] for p in (tmp_path / "dumps").glob("*.air"))
    assert [f["label"] for f in data["frames"]] == dumped  # the page and the dump files use the same names
    picks = re.findall(r'<tr class="pick" data-frame="([^"]+)"', page)
    assert picks == dumped[1:]
    fusion = next(f for f in data["frames"] if f["pass"] == "fuse_skip_norm")
    assert fusion["replaced"] and fusion["removed"] and not fusion["added"]
    dom = dump_dom(page, tmp_path, f"frame={fusion['label']}")
    drawn = boxes(dom)
    assert {k for k, b in drawn.items() if "replaced" in b.classes} == set(fusion["replaced"])
    assert element_text(dom, "frameinfo").startswith(f"{fusion['label']}: ")
    dom = dump_dom(page, tmp_path, f"frame={fusion['label']}&compare=1")
    assert {k for k, b in boxes(dom).items() if "removed" in b.classes} == set(fusion["removed"])


def test_pass_table_is_readable(tmp_path):
    g = _gpt2()
    pm = PassManager(pipeline(1))
    pm.run(g)
    page = to_html(g, pm.report)
    head = re.search(r'<table class="report"><tr>(.*?)</tr>', page).group(1)
    assert re.findall(r"<th>([^<]*)</th>", head)[:4] == ["#", "pass", "round", "time (ms)"]
    quiet = [r for r in pm.report.records if not r.changed]
    assert quiet and f"<summary>{len(quiet)} runs changed nothing" in page
    # the graph comes before the tables
    assert page.index('id="graph"') < page.index('<table class="report">')
    assert 'class="pick"' not in page  # without the graphs after each pass, a row has none to draw


def test_opens_fast_and_fits(tmp_path):
    g = _resnet()
    dom = dump_dom(to_html(g), tmp_path)
    ready = float(re.search(r'data-open-ms="([\d.]+)"', dom).group(1))  # since navigation
    assert ready < 1000
    scale = float(re.search(r'<g id="vp" transform="translate\([-\d.]+,[-\d.]+\) scale\(([\d.e-]+)\)"', dom).group(1))
    assert 0 < scale <= 1


def test_export_html_draws_the_graph_after_each_pass(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4)).eval()
    x = torch.randn(2, 8)
    seen = []
    cm = accelir.optimize(model, (x,), debug={"pass_graphs": True, "instrument": lambda r, g: seen.append(r.name)})
    np.testing.assert_allclose(cm(x), model(x).detach().numpy(), rtol=1e-5, atol=1e-5)
    assert seen  # the user's own instrument still runs
    page = (tmp_path / "m.html")
    cm.export(page)
    data = page_data(page.read_text())
    changed = [r.name for r in cm.report.passes.records if r.changed]
    assert [f["pass"] for f in data["frames"]] == [None, *changed]
    assert data["frames"][-1]["replaced"]  # the last pass fused something
    plain = accelir.optimize(model, (x,))
    plain.export(tmp_path / "plain.html")
    assert len(page_data((tmp_path / "plain.html").read_text())["frames"]) == 1


def test_mouse_zoom_pan_click_and_typed_search(tmp_path):
    page = to_html(_resnet())
    got = json.loads(element_text(dump_dom(page, tmp_path, "selftest=1"), "selftest"))
    assert got["wheel"] > 1.5  # the wheel turned towards the user zooms in
    assert got["drag"] == [60, 30]  # the view follows the pointer
    click = got["click"]
    assert click["selected"] == click["key"]
    item = next(it for it in page_data(page)["frames"][-1]["items"] if it["key"] == click["key"])
    assert click["panel"] == item["details"].splitlines()[0]
    assert got["find"] == "1 match"  # the return box, whatever the case typed
    assert 0 < got["fit"] <= 1
