"""Headless Chromium (Debian's) rendering a local page, for checks of web UIs."""

import subprocess
import tempfile

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=8000",
]


def rendered_dom(url: str) -> str:
    """The page's DOM after its scripts ran."""
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            ["chromium", *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def screenshot(url: str, path, size: tuple[int, int] = (1300, 2400)) -> None:
    """A PNG of the page after its scripts ran."""
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            ["chromium", *FLAGS, "--hide-scrollbars", f"--window-size={size[0]},{size[1]}"]
            + [f"--user-data-dir={profile}", f"--screenshot={path}", url],
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert result.returncode == 0, result.stderr[-2000:]
