"""Headless Chromium driven over the DevTools protocol: load a page, collect what went wrong, take a screenshot.

Debian's ``chromium`` (scripts/setup-host.sh) with ``--remote-debugging-port=0``; the DevTools websocket is
spoken with websocket-client (a test dependency). Every request the page makes is seen through the
Network domain (the page itself is the only file allowed: a self-contained report fetches nothing), and
console errors, uncaught exceptions, log entries of level error and JavaScript dialogs are collected.
The host resolver maps every name to NOTFOUND, so even a missed request cannot leave the machine.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import threading
import time
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import websocket

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Skipped on a developer machine without Chromium; in CI (scripts/setup-host.sh installs it) a missing
# browser is a failure, not a skip.
requires_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="chromium not installed (scripts/setup-host.sh)"
)
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


@dataclass
class PageLoad:
    """What loading one page produced."""

    url: str
    requests: list[str] = field(default_factory=list)  # URLs other than the page itself and data:
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, error log entries, dialogs
    console: list[str] = field(default_factory=list)  # every console message, for the failure message
    load_seconds: float = 0.0  # Page.navigate → load event (wall clock, this process)
    paint_seconds: float = 0.0  # Page.navigate → the second animation frame after load: laid out and painted
    page_ms: float = 0.0  # the same moment as the page sees it (performance.now(), from navigation start)
    screenshot_seconds: float = 0.0  # Page.navigate → a full-page PNG in hand (adds PNG encoding)
    screenshot: bytes = b""


class Chromium:
    """A headless Chromium with one page target. Use as a context manager (the process is always killed)."""

    def __init__(self, profile_dir: Path, *, width: int = 1280, height: int = 900) -> None:
        if CHROMIUM is None:
            raise RuntimeError("chromium is not installed (scripts/setup-host.sh installs it)")
        self.width, self.height = width, height
        argv = [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",  # root in CI containers; the pages are our own reports
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={profile_dir}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        self._ws: websocket.WebSocket | None = None
        self._id = 0
        self._events: list[dict[str, Any]] = []
        # stderr is read to its end by a thread: a full pipe (64 KiB of Chromium's warnings) would block it.
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=20)  # for error messages
        self._devtools_url: str | None = None
        self._stderr_done = False
        self._stderr_cond = threading.Condition()
        self._stderr_reader = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr_reader.start()
        try:
            browser_ws = self._wait_listening(timeout=60)
            port = int(browser_ws.split(":")[2].split("/")[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
                targets = json.load(resp)
            page = next(t for t in targets if t.get("type") == "page")
            self._ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable")
            self.call(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
        except BaseException:
            self.close()
            raise

    def _drain_stderr(self) -> None:
        """Chromium's stderr until it closes: the last lines kept, the DevTools URL noted."""
        assert self.proc.stderr is not None
        with self.proc.stderr:
            for raw in self.proc.stderr:
                line = raw.decode(errors="replace")
                with self._stderr_cond:
                    self._stderr_tail.append(line)
                    if self._devtools_url is None and (m := _LISTENING.search(line)):
                        self._devtools_url = m.group(1)
                    self._stderr_cond.notify_all()
        with self._stderr_cond:
            self._stderr_done = True
            self._stderr_cond.notify_all()

    def _wait_listening(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with self._stderr_cond:
            while self._devtools_url is None and not self._stderr_done:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._stderr_cond.wait(left)
            if self._devtools_url is not None:
                return self._devtools_url
            why = "its stderr closed" if self._stderr_done else f"nothing within {timeout:g} s"
            raise RuntimeError(f"chromium did not open its DevTools port ({why}):\n" + "".join(self._stderr_tail))

    # -- protocol --------------------------------------------------------------------------------
    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command and return its result (events that arrive meanwhile are kept)."""
        assert self._ws is not None
        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self._ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self._events.append(msg)

    def _next_event(self, deadline: float) -> dict[str, Any] | None:
        if self._events:
            return self._events.pop(0)
        assert self._ws is not None
        self._ws.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            msg = json.loads(self._ws.recv())
        except websocket.WebSocketTimeoutException:
            return None
        finally:
            self._ws.settimeout(60)
        return msg if "method" in msg else None

    # -- pages ------------------------------------------------------------------------------------
    def load(
        self, url: str, *, timeout: float = 60.0, settle: float = 1.0, max_height: int = 4000, scale: float = 0.5
    ) -> PageLoad:
        """Navigate to ``url``, wait for the load event and ``settle`` more seconds, take a full-page screenshot
        (``scale``: half size by default, so that decoding it in pure Python for pixel_variety stays quick)."""
        result = PageLoad(url)
        self._events.clear()
        t0 = time.perf_counter()
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        loaded = False
        while time.monotonic() < deadline:
            ev = self._next_event(deadline)
            if ev is None:
                continue
            self._record(ev, result)
            if ev["method"] == "Page.loadEventFired":
                loaded = True
                break
        if not loaded:
            raise TimeoutError(f"{url}: no load event within {timeout} s")
        result.load_seconds = time.perf_counter() - t0
        # Two animation frames after load: the first is rendered when the second's callback runs.
        painted = self.call(
            "Runtime.evaluate",
            expression="new Promise(r => requestAnimationFrame(() => requestAnimationFrame("
            "() => r(performance.now()))))",
            awaitPromise=True,
            returnByValue=True,
        )
        result.paint_seconds = time.perf_counter() - t0
        result.page_ms = float(painted["result"]["value"])
        metrics = self.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        clip = {"x": 0, "y": 0, "width": self.width, "height": min(int(size["height"]), max_height), "scale": scale}
        shot = self.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)
        result.screenshot_seconds = time.perf_counter() - t0
        result.screenshot = base64.b64decode(shot["data"])
        end = time.monotonic() + settle
        while time.monotonic() < end:
            ev = self._next_event(end)
            if ev is not None:
                self._record(ev, result)
        return result

    def _record(self, ev: dict[str, Any], result: PageLoad) -> None:
        method, p = ev["method"], ev.get("params", {})
        if method == "Network.requestWillBeSent":
            url = p["request"]["url"]
            if url != result.url and not url.startswith("data:"):
                result.requests.append(url)
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            result.console.append(f"{p.get('type')}: {text}")
            if p.get("type") in ("error", "assert"):
                result.errors.append(f"console.{p['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            result.errors.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
        elif method == "Log.entryAdded":
            entry = p.get("entry", {})
            if entry.get("level") == "error":
                result.errors.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())
        elif method == "Page.javascriptDialogOpening":
            result.errors.append(f"dialog ({p.get('type')}): {p.get('message')}")
            self.call("Page.handleJavaScriptDialog", accept=True)

    def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(OSError):
                self._ws.close()
            self._ws = None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: the renderer and GPU helpers too
        self.proc.wait(timeout=30)
        # The reader closes stderr at its end; a helper that outlived the kill and holds the pipe just leaves
        # the (daemon) thread waiting.
        self._stderr_reader.join(10)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- screenshots ----------------------------------------------------------------------------------------
def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA PNG (what Chromium writes): width, height and each pixel's RGB bytes."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, width = 8, b"", 0
    height = depth = ctype = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    if depth != 8 or ctype not in (2, 6):
        raise ValueError(f"unsupported PNG (bit depth {depth}, colour type {ctype})")
    bpp = 3 if ctype == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    prev, pixels = bytearray(stride), []
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        pixels.extend(bytes(line[i : i + 3]) for i in range(0, stride, bpp))
        prev = line
    return width, height, pixels


def pixel_variety(data: bytes) -> tuple[int, float]:
    """Distinct colours in a PNG, and the share of pixels that differ from the most common one (the background)."""
    _, _, pixels = png_pixels(data)
    counts: dict[bytes, int] = {}
    for p in pixels:
        counts[p] = counts.get(p, 0) + 1
    return len(counts), 1 - max(counts.values()) / len(pixels)
