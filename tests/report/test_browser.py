"""End-to-end: open a real report in headless Chromium and check it as a person would."""

from __future__ import annotations

import shutil

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


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


def test_report_renders_without_errors_and_surface_rotates(browser, report_with_surface,
                                                           tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(report_with_surface.as_uri())
    page.wait_for_function(
        "document.querySelectorAll('.sj-plotly').length > 0 && "
        "document.querySelectorAll('.sj-plotly').length == "
        "document.querySelectorAll('.sj-plotly[data-rendered]').length", timeout=60_000)
    # every plotly figure drew something (SVG paths or a WebGL canvas)
    empty = page.evaluate("""() => Array.from(document.querySelectorAll('.sj-plotly'))
        .filter(el => el.querySelectorAll('svg.main-svg path, canvas').length === 0)
        .map(el => el.id)""")
    assert empty == []
    # the 3-D surface turns when dragged
    surface = page.locator(".sj-plotly[data-kind='surface']").first
    assert surface.count() == 1
    surface.scroll_into_view_if_needed()
    eye_before = page.evaluate(
        "id => JSON.stringify(document.getElementById(id)._fullLayout.scene.camera.eye)",
        surface.get_attribute("id"))
    box = surface.bounding_box()
    assert box is not None
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 120, cy + 40, steps=12)
    page.mouse.up()
    page.wait_for_timeout(300)
    eye_after = page.evaluate(
        "id => JSON.stringify(document.getElementById(id)._fullLayout.scene.camera.eye)",
        surface.get_attribute("id"))
    assert eye_after != eye_before
    # hovering an embedding point shows its class, its sample index and its input image
    emb = page.locator(".sj-plotly[data-kind='embedding']").first
    emb.scroll_into_view_if_needed()
    x, y = page.evaluate("""id => { const el = document.getElementById(id);
        const fl = el._fullLayout, t = el._fullData[0], r = el.getBoundingClientRect();
        return [r.left + fl.xaxis._offset + fl.xaxis.l2p(t.x[0]),
                r.top + fl.yaxis._offset + fl.yaxis.l2p(t.y[0])]; }""", emb.get_attribute("id"))
    page.mouse.move(x - 15, y - 15)
    page.mouse.move(x, y, steps=5)
    page.wait_for_timeout(400)
    hover = page.evaluate("""() => { const b = document.getElementById('sj-hover');
        return [b.style.display, b.querySelector('.txt').textContent,
                b.querySelector('.img').style.backgroundImage.slice(0, 22)]; }""")
    assert hover[0] == "block" and hover[1].startswith("class ")
    assert hover[2].startswith('url("data:image/png;b')
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert errors == []
    assert all(u.startswith(("file:", "data:", "blob:")) for u in requests), requests
