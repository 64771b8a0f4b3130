"""Static checks: the lint rules of pyproject.toml, and `ruff format` (line length 120)."""

import subprocess
import sys

from devtools.servers import REPO


def test_ruff_lint_finds_nothing():
    run = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--output-format", "concise", "."],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_code_is_ruff_formatted():
    run = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "."], cwd=REPO, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
