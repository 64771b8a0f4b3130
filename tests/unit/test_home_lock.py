"""One `bentoml serve` per BentoML home: a second one would wipe the first one's metrics."""

import os

import pytest

from flatprice.server import home_lock

SERVE = ["/venv/bin/bentoml", "serve", "service:FlatPriceService"]


@pytest.mark.parametrize(
    "argv, serving",
    [
        (SERVE, True),
        (["/x/lib/python3.11/site-packages/bentoml/__main__.py", "serve", "service:X"], True),
        (["/venv/bin/bentoml", "build"], False),
        (["-m", "_bentoml_impl.worker.service", "service:FlatPriceService"], False),
        (["/venv/bin/pytest", "serve"], False),
        (["bentoml"], False),
    ],
)
def test_only_the_serve_command_takes_the_lock(argv, serving):
    assert home_lock.is_serve_command(argv) is serving


def test_a_second_claim_on_a_home_stops_with_what_to_do(tmp_path):
    try:
        home_lock.claim(tmp_path, SERVE)
        with pytest.raises(SystemExit) as refused:
            home_lock.claim(tmp_path, SERVE)
    finally:
        home_lock.release()
    message = str(refused.value.code)
    assert f"BENTOML_HOME={tmp_path};" in message and "wipe its metrics" in message
    assert f"(pid {os.getpid()})" in message and f"BENTOML_HOME={tmp_path}-2 bentoml serve" in message
    home_lock.claim(tmp_path, SERVE)  # released: free again
    home_lock.release()


def test_other_commands_neither_lock_nor_touch_the_home(tmp_path):
    home_lock.claim(tmp_path / "home", ["/venv/bin/bentoml", "build"])
    assert not (tmp_path / "home").exists()
