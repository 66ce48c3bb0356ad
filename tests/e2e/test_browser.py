"""report.html in a real browser (Debian's headless Chromium): loads clean, fetches nothing, paints something.

The checks are proven able to fail first: a page that makes a network request, one that logs a console
error and a blank page are each caught. The run's own report.html is checked in test_html_e2e.py (vm).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from chromium import Chromium, PageLoad, pixel_variety, requires_chromium

from pagelab.cli import main

pytestmark = [pytest.mark.slow, requires_chromium]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    with Chromium(tmp_path_factory.mktemp("chromium")) as b:
        yield b


def assert_clean(load: PageLoad) -> None:
    assert load.errors == [], f"{load.url}: {load.errors}\nconsole: {load.console}"
    assert load.requests == [], f"{load.url} fetched {load.requests}"
    colours, busy = pixel_variety(load.screenshot)
    assert colours >= 16 and busy >= 0.02, f"{load.url}: screenshot looks blank ({colours} colours, {busy:.1%} ink)"


def page(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(f"<!DOCTYPE html><html><head><link rel=icon href='data:,'></head><body>{body}</body></html>")
    return path.as_uri()


# -- the checks can fail ------------------------------------------------------------------------------------
def test_a_network_request_is_caught(browser: Chromium, tmp_path: Path) -> None:
    load = browser.load(page(tmp_path, "net.html", "<h1>x</h1><img src='http://pagelab.invalid/x.png'>"))
    assert "http://pagelab.invalid/x.png" in load.requests


def test_a_console_error_is_caught(browser: Chromium, tmp_path: Path) -> None:
    load = browser.load(page(tmp_path, "err.html", "<h1>x</h1><script>console.error('boom')</script>"))
    assert any("boom" in e for e in load.errors) and load.requests == []


def test_an_uncaught_exception_and_a_dialog_are_caught(browser: Chromium, tmp_path: Path) -> None:
    load = browser.load(page(tmp_path, "exc.html", "<script>alert('hi'); null.x</script>"))
    assert any(e.startswith("dialog (alert): hi") for e in load.errors)
    assert any(e.startswith("exception: TypeError") for e in load.errors)


def test_a_blank_page_is_caught(browser: Chromium, tmp_path: Path) -> None:
    load = browser.load(page(tmp_path, "blank.html", ""))
    colours, busy = pixel_variety(load.screenshot)
    assert colours < 16 and busy < 0.02


# -- our pages --------------------------------------------------------------------------------------------
def test_the_report_of_a_real_dump_loads_clean(browser: Chromium, fixtures: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    assert main(["report", str(fixtures / "report_po612.txt.xz"), "--html", str(out)]) == 0
    assert_clean(browser.load(out.as_uri()))


def test_the_zoom_script_runs_without_errors(browser: Chromium, fixtures: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    assert main(["report", str(fixtures / "report_po612.txt.xz"), "--html", str(out)]) == 0
    browser.load(out.as_uri())
    res = browser.call(
        "Runtime.evaluate",
        expression="var g=document.querySelectorAll('#icicle g.n')[3]; g.dispatchEvent(new MouseEvent('click'));"
        "[g.firstChild.getAttribute('width'), document.querySelectorAll('#icicle g.n[style*=none]').length]",
        returnByValue=True,
    )
    width, hidden = res["result"]["value"]
    assert float(width) > 1199 and hidden > 0  # the clicked frame fills the width, the others are hidden


def test_a_hostile_dump_renders_as_text(browser: Chromium, tmp_path: Path) -> None:
    # Unescaped, the comm would be a script and the frame an <img> that fetches "x" and then alerts.
    frame = 'evil"><img src=x onerror=alert(1)>+0x1/0x2'
    record = (
        "Page allocated via order 0, mask 0xcc0(GFP_KERNEL), pid 66, tgid 66 (<script>), ts 1 ns\n"
        "PFN 0x20000 type Unmovable Block 256 type Movable Flags 0x0(zone=1)\n"
        f" get_page_from_freelist+0x43f/0x581\n {frame}\n do_syscall_64+0x4e/0xa4\n\n"
    )
    (tmp_path / "hostile.txt").write_text(record * 3)
    out = tmp_path / "hostile.html"
    assert main(["report", str(tmp_path / "hostile.txt"), "--html", str(out)]) == 0
    load = browser.load(out.as_uri())
    assert_clean(load)
    text = browser.call("Runtime.evaluate", expression="document.body.innerText", returnByValue=True)
    assert "<script>" in text["result"]["value"] and 'evil"><img src=x' in text["result"]["value"]


def test_the_diff_report_loads_clean(browser: Chromium, fixtures: Path, tmp_path: Path) -> None:
    out = tmp_path / "diff.html"
    before, after = fixtures / "report_po612.txt.xz", fixtures / "sort_po612.txt.xz"
    assert main(["diff", str(before), str(after), "--html", str(out)]) == 0
    assert_clean(browser.load(out.as_uri()))
