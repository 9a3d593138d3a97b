"""Headless Chromium for the HTML report's tests: load a page (with a URL hash) and return its DOM after the
page's script ran, and read drawn boxes and edges back from it.

Chromium comes from the system's packages (``apt-get install -y chromium``).  Without it
the tests skip locally, and fail where ``ACCELIR_REQUIRE_BROWSER=1`` is set, as CI sets it.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str:
    """The Chromium executable; skips the test (fails it under ACCELIR_REQUIRE_BROWSER=1) when there is none."""
    for name in _NAMES:
        exe = shutil.which(name)
        if exe:
            return exe
    why = "no Chromium on PATH (apt-get install -y chromium)"
    if os.environ.get("ACCELIR_REQUIRE_BROWSER") == "1":
        pytest.fail(why + "; ACCELIR_REQUIRE_BROWSER=1 asks for the browser tests")
    pytest.skip(why + "; set ACCELIR_REQUIRE_BROWSER=1 to make this a failure")


def dump_dom(page: str, tmp_path: Path, hash: str = "") -> str:
    """The DOM of ``page`` after its scripts ran, loaded as a file with ``#hash``, 1200x900 window."""
    exe = chromium()
    path = tmp_path / "page.html"
    path.write_text(page, encoding="utf-8")
    url = path.as_uri() + (f"#{hash}" if hash else "")
    done = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,900",
                           f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "</html>" in done.stdout, done.stderr[-2000:]
    return done.stdout


@dataclass
class Box:
    key: str
    classes: set[str]
    x: float
    y: float
    w: float
    h: float

    def inside(self, px: float, py: float, margin: float = 0.5) -> bool:
        return self.x + margin < px < self.x + self.w - margin and self.y + margin < py < self.y + self.h - margin


def _svg(dom: str) -> str:
    """The drawn graph: the page's script text holds the same markup patterns, so look only in the SVG."""
    start = dom.index('id="graph"')
    return dom[start:dom.index("</svg>", start)]


def boxes(dom: str) -> dict[str, Box]:
    out = {}
    for m in re.finditer(r'<g class="([^"]*)" data-key="([^"]*)" data-op="[^"]*"><rect x="([-\d.]+)" y="([-\d.]+)" '
                         r'width="([-\d.]+)" height="([-\d.]+)"', _svg(dom)):
        out[html.unescape(m.group(2))] = Box(html.unescape(m.group(2)), set(m.group(1).split()),
                                             *(float(m.group(i)) for i in range(3, 7)))
    return out


def edge_paths(dom: str) -> list[tuple[str, list[tuple[float, float]]]]:
    """(edge id, every point of its path: ends, bends and control points) of each drawn edge."""
    out = []
    for m in re.finditer(r'<path class="e[^"]*" data-edge="([^"]*)" d="([^"]*)"', _svg(dom)):
        nums = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", m.group(2))]
        out.append((html.unescape(m.group(1)), list(zip(nums[::2], nums[1::2]))))
    return out


def page_data(page: str) -> dict:
    """The frames the page carries (see accelir.viewer)."""
    text = re.search(r'<script type="application/json" id="accelir-data">(.*?)</script>', page, re.S).group(1)
    return json.loads(text.replace("<\\/", "</"))


def element_text(dom: str, element_id: str) -> str:
    m = re.search(rf'<(\w+)[^>]* id="{element_id}"[^>]*>(.*?)</\1>', dom, re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", m.group(2))) if m else ""
