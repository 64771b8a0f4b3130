"""Explanations through a real bentoml serve."""

import httpx

from flatprice.api import routes
from flatprice.schema import EXAMPLE_FLAT


def test_both_workers_of_a_real_server_explain_a_flat_alike(served):
    answers = []
    for _ in range(30):  # a new connection each time: both workers take some
        with httpx.Client() as fresh:
            answers.append(fresh.post(f"{served.url}{routes.EXPLAIN}", json=EXAMPLE_FLAT).json())
    assert len({a.pop("request_id") for a in answers}) == 30  # every answer its own id
    assert all(a == answers[0] for a in answers) and answers[0]["contributions"]
