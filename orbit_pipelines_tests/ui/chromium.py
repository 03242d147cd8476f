"""Drive Debian's headless Chromium without a Python dependency: ``--dump-dom`` for the text
a React page renders, ``--screenshot`` for a PNG.

Each call is one short-lived browser process with its own profile directory (parallel tests
and a crashed earlier browser cannot lock each other out), stopped by process group if it
overruns.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from html.parser import HTMLParser
from pathlib import Path

# Debian's package installs /usr/bin/chromium; other distributions name it differently.
CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    """Path of a Chromium binary, or None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(args: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    binary = find_chromium()
    assert binary is not None, "no chromium: apt-get install -y --no-install-recommends chromium"
    with tempfile.TemporaryDirectory(prefix="orbit_chromium_") as profile:
        cmd = [
            binary,
            "--headless=new",
            "--no-sandbox",  # tests run as root in CI containers
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            *args,
        ]
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def dump_dom(
    url: str,
    *,
    budget_ms: int = 15000,
    size: tuple[int, int] = (1400, 4000),
    timeout_s: float = 120,
) -> str:
    """The page's DOM after ``budget_ms`` of virtual time (scripts ran, data fetched)."""
    done = _run(
        [
            f"--virtual-time-budget={budget_ms}",
            f"--window-size={size[0]},{size[1]}",
            "--dump-dom",
            url,
        ],
        timeout_s,
    )
    return done.stdout


def screenshot(
    url: str,
    path: Path,
    *,
    budget_ms: int = 15000,
    size: tuple[int, int] = (1600, 1000),
    timeout_s: float = 120,
) -> bool:
    """Save a PNG of ``url``; returns whether the file was written."""
    path.unlink(missing_ok=True)
    _run(
        [
            f"--virtual-time-budget={budget_ms}",
            f"--window-size={size[0]},{size[1]}",
            f"--screenshot={path}",
            url,
        ],
        timeout_s,
    )
    return path.exists() and path.stat().st_size > 0


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.parts.append(data.strip())


def visible_text(html: str) -> str:
    """The text of a DOM dump, pieces joined by single spaces (no scripts or styles)."""
    parser = _Text()
    parser.feed(html)
    return " ".join(" ".join(parser.parts).split())


def wait_for_text(
    url: str, needles: Sequence[str], *, timeout_s: float = 300, **dump: object
) -> str:
    """Load ``url`` until its text holds every one of ``needles``; returns that text.

    A React page renders after its GraphQL answers arrive, which under load can take longer
    than one load's virtual-time budget: each retry doubles the budget (up to 60 s).
    """
    deadline = time.monotonic() + timeout_s
    budget = int(dump.pop("budget_ms", 15000))  # type: ignore[call-overload]
    text = ""
    while True:
        text = visible_text(dump_dom(url, budget_ms=budget, **dump))  # type: ignore[arg-type]
        missing = [n for n in needles if n not in text]
        if not missing:
            return text
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{url} never showed {missing!r} within {timeout_s:.0f}s; it showed: {text[:3000]}"
            )
        budget = min(60000, budget * 2)
        time.sleep(2)
