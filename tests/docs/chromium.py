"""Headless Chromium for the tests that look at a page as a person would: the DOM after load, a
screenshot, and the requests the page itself made (read from Chromium's net log).

Chromium runs with its network pointed nowhere (a proxy on a closed local port, no background
services), in a fresh profile each time. ``chromium()`` is None where no binary is installed; the
tests then skip, naming the package to install (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

BINARIES = ("chromium", "chromium-browser", "google-chrome")
SKIP_REASON = "no Chromium binary (install Debian's chromium package: apt-get install -y chromium)"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--proxy-server=127.0.0.1:9",  # any request the page makes goes to a closed port
]
TIMEOUT = 90  # seconds per Chromium run (it starts in 1-3 s here)


def chromium() -> str | None:
    """Path of a Chromium binary, or None."""
    return next((p for p in map(shutil.which, BINARIES) if p), None)


def run(url: str, *, size: tuple[int, int] = (1280, 800), screenshot: Path | None = None,
        dump_dom: bool = False) -> tuple[str, list[str]]:
    """Load ``url`` once; return the DOM after load (if ``dump_dom``) and the URLs the page asked for
    beyond ``file:`` and ``data:`` ones. Writes a PNG to ``screenshot`` when given."""
    binary = chromium()
    assert binary, SKIP_REASON
    with tempfile.TemporaryDirectory(prefix="fg-chromium-") as tmp:
        netlog = Path(tmp) / "netlog.json"
        cmd = [binary, *FLAGS, f"--user-data-dir={tmp}/profile", f"--window-size={size[0]},{size[1]}",
               f"--log-net-log={netlog}"]
        if screenshot is not None:
            cmd.append(f"--screenshot={screenshot}")
        if dump_dom:
            cmd.append("--dump-dom")
        proc = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=TIMEOUT)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout, page_requests(netlog)


def page_requests(netlog: Path) -> list[str]:
    """URLs that a page (not the browser's own services) requested, other than file: and data:.

    In the net log, a request the browser makes for itself (update checks, account lookups) has the
    initiator "not an origin"; a page's requests carry the page's origin ("null" for file: pages)."""
    log = json.loads(netlog.read_text(encoding="utf-8", errors="replace") or "{}")
    names = {v: k for k, v in log.get("constants", {}).get("logEventTypes", {}).items()}
    urls = []
    for event in log.get("events", []):
        params = event.get("params") or {}
        if names.get(event.get("type")) != "URL_REQUEST_START_JOB" or "url" not in params:
            continue
        if params.get("initiator") == "not an origin" or re.match(r"(file|data):", params["url"]):
            continue
        urls.append(params["url"])
    return urls


def distinct_colours(png: Path) -> int:
    """How many distinct RGB colours the screenshot holds (a blank page has one)."""
    from PIL import Image

    with Image.open(png) as image:
        return len(set(image.convert("RGB").getdata()))


def pixel(png: Path, x: int, y: int) -> tuple[int, int, int]:
    """The RGB colour of the screenshot at (x, y)."""
    from PIL import Image

    with Image.open(png) as image:
        return image.convert("RGB").getpixel((x, y))
