"""Reading a real /metrics scrape with prometheus_client's own parser."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str) -> dict:
    """{family name: Metric} of one scrape of `url`/metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample_value(families: dict, family: str, sample: str | None = None, **labels) -> float:
    """Sum of the samples named `sample` (default: the family name) whose labels include `labels`."""
    metric = families.get(family)
    if metric is None:
        return 0.0
    name = sample or family
    return sum(
        s.value for s in metric.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def series_count(families: dict) -> int:
    return sum(len(family.samples) for family in families.values())
