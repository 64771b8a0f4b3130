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


class DriftWindow:
    """The drift counters of one model between two scrapes, judged as the Prometheus rules do
    (flatprice/reference.py's functions on the counts the window added)."""

    def __init__(self, url: str, model_tag: str | None = None):
        self.url, self.model_tag = url, model_tag
        self.start = self._counts(scrape(url))

    def _counts(self, families: dict) -> dict:
        from flatprice.observability.metrics import NAMESPACE

        bins: dict[str, dict[str, float]] = {}
        for sample in families[f"{NAMESPACE}_drift_bin_rows"].samples:
            if sample.name.endswith("_total") and sample.labels["model_tag"] == (
                self.model_tag or sample.labels["model_tag"]
            ):
                self.model_tag = sample.labels["model_tag"]
                bins.setdefault(sample.labels["subject"], {})[sample.labels["bin"]] = sample.value
        reference: dict[str, dict[str, float]] = {}
        for sample in families[f"{NAMESPACE}_drift_reference_share"].samples:
            if sample.labels["model_tag"] == self.model_tag:
                reference.setdefault(sample.labels["subject"], {})[sample.labels["bin"]] = sample.value
        rows = sample_value(
            families,
            f"{NAMESPACE}_drift_sampled_rows",
            f"{NAMESPACE}_drift_sampled_rows_total",
            model_tag=self.model_tag,
        )
        unseen = sample_value(
            families, f"{NAMESPACE}_drift_unseen_rows", f"{NAMESPACE}_drift_unseen_rows_total", model_tag=self.model_tag
        )
        expected_unseen = sample_value(
            families, f"{NAMESPACE}_drift_reference_unseen_share", model_tag=self.model_tag, subject="building_id"
        )
        return {
            "bins": bins,
            "reference": reference,
            "rows": rows,
            "unseen": unseen,
            "expected_unseen": expected_unseen,
        }

    def now(self) -> dict:
        """rows, unseen rows, and per subject: counts by bin, PSI, chi2, drifted (since the start)."""
        import numpy as np

        from flatprice.reference import DRIFT_MIN_ROWS, UNSEEN_MARGIN, chi2_statistic, drifted, psi

        end = self._counts(scrape(self.url))
        subjects = {}
        for subject, counts in end["bins"].items():
            labels = sorted(counts)
            live = np.array([counts[b] - self.start["bins"][subject][b] for b in labels])
            ref = np.array([end["reference"][subject][b] for b in labels])
            subjects[subject] = {
                "counts": live,
                "psi": psi(ref, live),
                "chi2": chi2_statistic(ref, live),
                "drifted": drifted(ref, live, len(end["bins"])),
            }
        rows, unseen = end["rows"] - self.start["rows"], end["unseen"] - self.start["unseen"]
        subjects["building_id"] = {
            "unseen_share": unseen / max(rows, 1),
            "drifted": rows >= DRIFT_MIN_ROWS and unseen / rows > end["expected_unseen"] + UNSEEN_MARGIN,
        }
        return {"rows": rows, "unseen": unseen, "subjects": subjects}
