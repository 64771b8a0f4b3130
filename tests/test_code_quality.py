"""Static checks: no undefined names, unused imports or syntax errors (ruff's F and E9 rules)."""

import subprocess
import sys

from devtools.servers import REPO


def test_ruff_finds_nothing():
    run = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F,E9", "--output-format", "concise", "."], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
