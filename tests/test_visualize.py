"""Tests of accelir.visualize (dot and HTML) and accelir.progress."""

from __future__ import annotations

import io
import re
import time

import pytest

import accelir
from accelir import progress
from accelir.visualize import read_dump_dir, to_dot, to_html
from browser import Box, boxes, dump_dom, page_data

MLP = """graph main(%x: f32[batch,4], %w: f32[4,3]) -> (f32[batch,3], f32[batch,3]) {
  %0 = matmul(%x, %w) : f32[batch,3]
  %b = constant() {name="bias", value=[1.0, 2.0, 3.0]} : f32[3]
  %1 = add(%0, %b) : f32[batch,3]
  %2 = relu(%1) : f32[batch,3]
  %3 = tanh(%1) : f32[batch,3]
  return %2, %3
}
"""

REGION = """graph main(%x: f32[2,3]) -> (f32[2,3]) {
  %0 = fusion(%x) : f32[2,3] {
    graph body(%a: f32[2,3]) -> (f32[2,3]) {
      %1 = exp(%a) : f32[2,3]
      %2 = mul(%1, %a) : f32[2,3]
      return %2
    }
  }
  return %0
}
"""


def test_dot_has_every_node_and_edge():
    g = accelir.parse(MLP)
    dot = to_dot(g)
    assert dot.startswith('digraph "main" {') and dot.rstrip().endswith("}")
    labels = re.findall(r'label="([a-z]+)\\n', dot)
    assert labels == ["matmul", "add", "relu", "tanh", "return"]
    edges = re.findall(r"^  (\w+) -> (\w+)", dot, re.M)
    # x, w -> matmul -> add -> relu, tanh -> return (the constant is folded into add's tooltip)
    assert len(edges) == 7
    assert "reads %b = constant bias: f32[3]" in dot


def test_dot_can_draw_constants_and_escapes_quotes():
    g = accelir.parse(MLP)
    g.name = 'my "main"'
    dot = to_dot(g, show_constants=True)
    assert "const bias" in dot
    assert dot.startswith('digraph "my \\"main\\"" {')
    assert len(re.findall(r"^  (\w+) -> (\w+)", dot, re.M)) == 8


def test_dot_labels_multi_output_edges():
    g = accelir.parse("""graph main(%x: f32[4,5]) -> (f32[4,2], i64[4,2]) {
  %v, %i = topk(%x) {k=2} : f32[4,2], i64[4,2]
  return %v, %i
}
""")
    dot = to_dot(g)
    assert re.search(r'n0 -> out \[label="0"\]', dot) and re.search(r'n0 -> out \[label="1"\]', dot)


def test_html_is_self_contained_and_well_formed():
    g = accelir.parse(MLP)
    page = to_html(g)
    assert page.startswith("<!DOCTYPE html>")
    # nothing to fetch: no external scripts, stylesheets or images
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', page)
    assert "<link" not in page
    (frame,) = page_data(page)["frames"]
    assert [it["label"] for it in frame["items"]] == ["%x", "%w", "matmul", "add", "relu", "tanh", "return"]
    assert len(frame["edges"]) == 7  # the constant is folded into add's details
    hist = re.findall(r'</span>([a-z_]+)</td><td class="num">(\d+)</td>', page)
    assert dict((k, int(v)) for k, v in hist) == g.op_histogram()


def _drawn(page: str, tmp_path) -> dict[str, Box]:
    """The boxes the browser drew, by the first line of their details."""
    labels = {it["key"]: it["details"].splitlines()[0] for it in page_data(page)["frames"][-1]["items"]}
    return {labels[k]: b for k, b in boxes(dump_dom(page, tmp_path)).items()}


def test_layout_puts_users_below_operands_without_overlap(tmp_path):
    drawn = _drawn(to_html(accelir.parse(MLP)), tmp_path)
    box = {k.split(" = ")[-1].split(" :")[0] if " = " in k else k.split(":")[0].split()[-1]: (b.x, b.y, b.w, b.h)
           for k, b in drawn.items()}
    assert box["matmul"][1] > box["%x"][1]
    assert box["add"][1] > box["matmul"][1]
    assert box["relu"][1] == box["tanh"][1] > box["add"][1]
    assert box["outputs"][1] > box["relu"][1]
    for a, (ax, ay, aw, ah) in box.items():
        for b, (bx, by, bw, bh) in box.items():
            if a < b and ay == by:
                assert ax + aw <= bx or bx + bw <= ax, f"{a} overlaps {b}"
    # siblings sit centred under their common operand
    add_centre = box["add"][0] + box["add"][2] / 2
    mid = (box["relu"][0] + box["tanh"][0] + box["tanh"][2]) / 2
    assert abs(add_centre - mid) < 1.0


def test_layout_moves_late_inputs_next_to_their_user(tmp_path):
    g = accelir.parse("""graph main(%x: f32[3], %late: f32[3]) -> (f32[3]) {
  %0 = exp(%x) : f32[3]
  %1 = exp(%0) : f32[3]
  %2 = exp(%1) : f32[3]
  %3 = add(%2, %late) : f32[3]
  return %3
}
""")
    tops = {k: b.y for k, b in _drawn(to_html(g), tmp_path).items()}
    # same layer as the last exp, right above the add
    assert tops["graph input %late: f32[3]"] == tops["%2 = exp : f32[3]"] > tops["%1 = exp : f32[3]"]


def test_region_nodes_summarise_their_body():
    g = accelir.parse(REGION)
    page = to_html(g)
    assert "exp, mul" in page
    assert "region: exp, mul" in to_dot(g)


def test_html_report_and_pass_diffs(tmp_path):
    from accelir.pass_manager import PassManager
    from accelir.passes import get_pass

    g = accelir.parse(MLP.replace("-> (f32[batch,3], f32[batch,3])", "-> (f32[batch,3])")
                      .replace("return %2, %3", "return %2"))
    dumps = tmp_path / "dumps"
    pm = PassManager([get_pass("dce")], dump_dir=dumps)
    pm.run(g)
    page = to_html(g, report=pm.report, pass_dumps=dumps)
    assert '<table class="report">' in page
    assert "<td>dce</td>" in page
    assert "tanh -1" in page  # the op delta column
    diff = re.search(r'<pre class="diff">(.*?)</pre>', page, re.S).group(1)
    assert '<span class="del">-  %3 = tanh(%1) : f32[batch,3]</span>' in diff
    assert [label for label, _ in read_dump_dir(dumps)] == ["000-input", "001-after-dce"]


def test_html_shows_an_unknown_report_as_text():
    page = to_html(accelir.parse(MLP), report="custom <report>")
    assert "<pre>custom &lt;report&gt;</pre>" in page


def test_progress_is_quiet_when_not_a_terminal():
    stream = io.StringIO()
    display = progress.Progress(stream, delay=0.0, interval=0.01)
    assert not display.enabled
    with progress.activate(display), progress.step("capture"):
        time.sleep(0.05)
    assert stream.getvalue() == ""


def test_progress_draws_slow_steps_only():
    stream = io.StringIO()
    display = progress.Progress(stream, enabled=True, delay=0.05, interval=0.01)
    with progress.activate(display):
        with progress.step("fast"):
            pass
        with progress.step("slow"):
            with progress.step("inner"):
                time.sleep(0.2)
    text = stream.getvalue()
    assert "fast" not in text
    assert "slow > inner" in text
    assert re.search(r"slow > inner: done in 0\.\d s\n", text)
    assert re.search(r"slow: done in 0\.\d s\n$", text)


def test_progress_reports_failure_and_step_is_a_no_op_without_display():
    stream = io.StringIO()
    display = progress.Progress(stream, enabled=True, delay=0.0, interval=0.01)
    with pytest.raises(RuntimeError), progress.activate(display), progress.step("lowering"):
        time.sleep(0.05)
        raise RuntimeError("boom")
    assert "lowering: failed after" in stream.getvalue()
    with progress.step("nothing active"):
        pass
