"""One `bentoml serve` per BentoML home.

BentoML keeps its multiprocess metric files in `$BENTOML_HOME/prometheus_multiproc_dir`
and empties that directory whenever a server starts. A second server on the same home (a
replica, a test, a colleague) would silently wipe the first one's counters and drift
windows. So `bentoml serve` takes an exclusive lock on the home before BentoML empties the
directory (service.py is imported first), and a second one stops with a line saying what
to do. The kernel drops the lock when the server exits, however it exits.
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

from .. import config

LOCK_NAME = "prometheus_multiproc_dir.lock"
_held: list[int] = []  # the lock lives as long as this process


bentoml_home = config.bentoml_home  # read in one place


def is_serve_command(argv: list[str]) -> bool:
    """`bentoml serve ...` or `python -m bentoml serve ...`: the server's arbiter, which empties
    the metrics directory (its workers and `bentoml build` import service.py too)."""
    return len(argv) > 1 and argv[1] == "serve" and Path(argv[0]).name in {"bentoml", "__main__.py"}


def claim(home: Path, argv: list[str] | None = None) -> None:
    """Lock `home` for this server, or exit with one line if a live server holds it."""
    if not is_serve_command(sys.argv if argv is None else argv):
        return
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        other = home.parent / f"{home.name}-2"
        sys.exit(
            f"another `bentoml serve` (pid {owner}) uses BENTOML_HOME={home}; a second server there would wipe its "
            f"metrics. Stop it, or give this one a home of its own sharing the models: mkdir -p {other} && "
            f"ln -sfn {home / 'models'} {other / 'models'} && BENTOML_HOME={other} bentoml serve ..."
        )
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _held.append(fd)


def release() -> None:
    """Drop the lock (tests; a server just exits)."""
    while _held:
        os.close(_held.pop())
