"""End-to-end: open a real report in headless Chromium and check it as a person would.

The checks wait for the events they check (a figure drawn, its hover handler attached, the
thumbnail shown), never for a fixed time, so they hold on a loaded machine; any JavaScript
error of the page fails them.
"""

from __future__ import annotations

import contextlib
import http.server
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # the browser fixture skips these tests with the reason
    PlaywrightTimeout = TimeoutError  # type: ignore[misc,assignment]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
READY = 90_000  # ms: drawing every figure of the page (generous: the machine may be busy)
ALL_READY = ("document.querySelectorAll('.sj-plotly').length > 0 && "
             "document.querySelectorAll('.sj-plotly').length == "
             "document.querySelectorAll('.sj-plotly[data-sj-ready], .sj-plotly[data-sj-error]')"
             ".length")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (make test installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright not installed (pip install -e '.[dev]')")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def report_with_surface(tiny_run):
    from shenjing.report import build_report
    from shenjing.stages.embed import embed_stage
    from shenjing.stages.landscape import landscape_line, landscape_plane

    embed_stage(tiny_run, ["relu1"], epochs=("final",), method="pca", n=100, n_train=200,
                cka=False)
    landscape_line(tiny_run, steps=9, progress=False)
    landscape_plane(tiny_run, steps=7, progress=False)
    return build_report(tiny_run).path


@dataclass
class Tab:
    """A browser page with every JavaScript error and every request it made."""

    page: Any
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


def open_page(browser) -> Tab:
    tab = Tab(browser.new_page(viewport={"width": 1280, "height": 900}))
    tab.page.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
    tab.page.on("pageerror", lambda e: tab.errors.append(str(e)))
    tab.page.on("request", lambda r: tab.requests.append(r.url))
    return tab


def wait_until_drawn(tab: Tab) -> None:
    """Every figure drawn and its handlers attached; fails at the first page error."""
    deadline = time.monotonic() + READY / 1000
    while not tab.page.evaluate(ALL_READY):
        assert tab.errors == [], tab.errors
        assert time.monotonic() < deadline, "figures not drawn in time"
        tab.page.wait_for_timeout(200)
    failed = tab.page.evaluate("""() => Array.from(document.querySelectorAll('[data-sj-error]'))
        .map(el => el.id + ': ' + el.getAttribute('data-sj-error'))""")
    assert failed == [] and tab.errors == [], (failed, tab.errors)


def hover_first_point(tab: Tab, plot_id: str) -> list[str]:
    """Move onto the first point of an embedding map until the hover box shows; its state."""
    page = tab.page
    x, y = page.evaluate("""id => { const el = document.getElementById(id);
        const fl = el._fullLayout, t = el._fullData[0], r = el.getBoundingClientRect();
        return [r.left + fl.xaxis._offset + fl.xaxis.l2p(t.x[0]),
                r.top + fl.yaxis._offset + fl.yaxis.l2p(t.y[0])]; }""", plot_id)
    shown = "document.getElementById('sj-hover').style.display === 'block'"
    for _ in range(5):  # plotly throttles hover events; a busy machine may drop a move
        page.mouse.move(x - 15, y - 15)
        page.mouse.move(x, y, steps=5)
        try:
            page.wait_for_function(shown, timeout=4_000)
            break
        except PlaywrightTimeout:
            continue
    return page.evaluate("""() => { const b = document.getElementById('sj-hover');
        return [b.style.display, b.querySelector('.txt').textContent,
                b.querySelector('.img').style.backgroundImage.slice(0, 22)]; }""")


def test_report_renders_without_errors_and_surface_rotates(browser, report_with_surface,
                                                           tmp_path):
    tab = open_page(browser)
    page = tab.page
    page.goto(report_with_surface.as_uri())
    wait_until_drawn(tab)
    # every plotly figure drew something (SVG paths or a WebGL canvas)
    empty = page.evaluate("""() => Array.from(document.querySelectorAll('.sj-plotly'))
        .filter(el => el.querySelectorAll('svg.main-svg path, canvas').length === 0)
        .map(el => el.id)""")
    assert empty == []
    # the 3-D surface turns when dragged
    surface = page.locator(".sj-plotly[data-kind='surface']").first
    assert surface.count() == 1
    surface.scroll_into_view_if_needed()
    camera = "id => JSON.stringify(document.getElementById(id)._fullLayout.scene.camera.eye)"
    surface_id = surface.get_attribute("id")
    eye_before = page.evaluate(camera, surface_id)
    box = surface.bounding_box()
    assert box is not None
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 120, cy + 40, steps=12)
    page.mouse.up()
    page.wait_for_function(f"JSON.stringify(document.getElementById({surface_id!r})"
                           f"._fullLayout.scene.camera.eye) !== {eye_before!r}", timeout=10_000)
    # hovering an embedding point shows its class, its sample index and its input image
    emb = page.locator(".sj-plotly[data-kind='embedding']").first
    emb.scroll_into_view_if_needed()
    display, text, image = hover_first_point(tab, emb.get_attribute("id"))
    assert display == "block" and text.startswith("class ") and " · sample " in text
    assert image.startswith('url("data:image/png;b')
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert tab.errors == []
    assert all(u.startswith(("file:", "data:", "blob:")) for u in tab.requests), tab.requests
    page.close()


class _SlowPage(http.server.BaseHTTPRequestHandler):
    """Serves one page in two parts: everything before the hover box at once, the rest only
    when the test says so — as a slow disk or a busy machine delivers a long page."""

    body = b""
    cut = 0
    release = threading.Event()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body[:self.cut])
        self.wfile.flush()
        self.release.wait(60)
        self.wfile.write(self.body[self.cut:])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def slow_server(report_with_surface) -> Iterator[tuple[str, threading.Event]]:
    body = Path(report_with_surface).read_bytes()
    handler = type("Handler", (_SlowPage,), {
        "body": body, "cut": body.index(b'<div id="sj-hover"'), "release": threading.Event()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/report.html", handler.release
    finally:
        handler.release.set()
        server.shutdown()
        server.server_close()


def test_figures_drawn_before_the_page_ends_raise_no_error(browser, slow_server):
    """The page's end arrives late: plotly.js inflates and the figures could be drawn before
    the last scripts of the page exist. The page must not depend on that order (a figure once
    called a hover helper defined at the end: "sjHoverThumbs is not defined")."""
    url, release = slow_server
    tab = open_page(browser)
    page = tab.page
    page.goto(url, wait_until="commit")
    page.wait_for_function("document.querySelector('.sj-plotly[data-kind=embedding]')",
                           timeout=READY)
    # give a page that draws early every chance to do it before its end arrives; a page
    # that waits for its end (as it should) lets this time out
    with contextlib.suppress(PlaywrightTimeout):
        page.wait_for_function("typeof window.Plotly !== 'undefined' && document"
                               ".querySelectorAll('.sj-plotly[data-rendered]').length > 0",
                               timeout=5_000)
    release.set()
    wait_until_drawn(tab)
    emb = page.locator(".sj-plotly[data-kind='embedding']").first
    emb.scroll_into_view_if_needed()
    display, text, _ = hover_first_point(tab, emb.get_attribute("id"))
    assert display == "block" and text.startswith("class ")
    assert tab.errors == []
    page.close()
