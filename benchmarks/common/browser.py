"""Render a report page in headless Chromium: the DOM after load, and a screenshot.

Used by ``performance.py`` (which commits the screenshot), and run as a script by the profile
report test: ``python benchmarks/common/browser.py PAGE.html [SHOT.png]`` prints the counts as
JSON, or exits 2 with the reason when no Chromium runs here.  Debian's ``chromium`` package
provides the browser (``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Optional

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser() -> Optional[str]:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(args, timeout):
    with tempfile.TemporaryDirectory(prefix="edgetool-chromium-") as profile_dir:
        cmd = [
            browser(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--user-data-dir=" + profile_dir,
            "--virtual-time-budget=5000",
        ] + args
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def render(html_path: str, screenshot: Optional[str] = None, timeout: float = 120.0) -> dict:
    """Load *html_path*; return the plot counts its check script wrote into the DOM.

    ``{"plots": n, "rendered": m, "figures": {id: "yes"|"no"}}``; raises RuntimeError when
    Chromium cannot run here."""
    if browser() is None:
        raise RuntimeError("no Chromium found (install Debian's chromium package)")
    url = "file://" + os.path.abspath(html_path)
    p = _run(["--dump-dom", url], timeout)
    if p.returncode != 0 or "<body" not in p.stdout:
        raise RuntimeError("chromium failed: " + (p.stderr.strip().splitlines() or ["no output"])[-1])
    body = re.search(r"<body([^>]*)>", p.stdout).group(1)
    plots = re.search(r'data-plots="(\d+)"', body)
    rendered = re.search(r'data-plots-rendered="(\d+)"', body)
    figures = dict(re.findall(r'<figure class="plot" id="plot-([^"]+)" data-rendered="(yes|no)"', p.stdout))
    if screenshot:
        os.makedirs(os.path.dirname(os.path.abspath(screenshot)), exist_ok=True)
        s = _run(["--screenshot=" + os.path.abspath(screenshot), "--window-size=1200,2400", url], timeout)
        if s.returncode != 0 or not os.path.isfile(screenshot):
            raise RuntimeError("chromium screenshot failed: " + (s.stderr.strip().splitlines() or ["no output"])[-1])
    return {
        "plots": int(plots.group(1)) if plots else 0,
        "rendered": int(rendered.group(1)) if rendered else 0,
        "figures": figures,
    }


if __name__ == "__main__":
    try:
        print(json.dumps(render(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)))
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
