"""A model-quality report from the inference log: `python -m monitoring.report --since 24h
[--actuals deals.csv] [--out report.html]`, run with the report environment (`make report-env`).

First the live drift rules' verdict on the window's flats, one line per subject (the features, the
derived features the model computes, the prediction, unseen buildings), strongest first: the
flats counted as the workers count them, binned into the model's reference bins, judged by the
same functions (flatprice/reference.py), with Evidently's PSI on those bins beside ours. Then
values outside training, the price over time, and, with real prices (request_id, flat, price),
MAE and median APE by day, model and price band. Evidently's own view comes last: per-feature
drift against the model's training sample (K-S or normed Wasserstein for numbers, chi-squared or
Jensen-Shannon for the declared categories) and data quality. All in one HTML file.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from flatprice import feedback_data, intervals
from flatprice.config import Settings, bentoml_home
from flatprice.observability.ledger_port import LedgerUnavailable
from flatprice.observability.log_records import log_directory, read_flats, utc
from flatprice.reference import (
    BINNED_FEATURES,
    DRIFT_MIN_ROWS,
    IDENTIFIERS,
    PREDICTION,
    UNSEEN_MARGIN,
    DriftCounter,
    assign_bins,
    bin_labels,
    chi2_statistic,
    drifted,
    psi,
    sample_rows,
    unseen_share,
)
from flatprice.schema import FEATURE_NAMES

PRICE_BANDS = (0, 5e6, 10e6, 20e6, 50e6, np.inf)  # predicted price bands, rubles
PSI_SUBJECTS = (*BINNED_FEATURES, PREDICTION)  # the subjects whose bins Evidently's PSI is computed on
CATEGORIES = ("building_type_int", "is_apartment", "has_elevator")  # codes, not quantities: Evidently tests them so
SETUP = "the report runs in its own environment: `make report-env`, then `.venv-report/bin/python -m monitoring.report`"


def parse_since(text: str) -> datetime:
    """`24h`, `30m`, `7d` back from now, or a local time `2026-11-28T09:00` (--since and --until)."""
    match = re.fullmatch(r"(\d+)([mhd])", text)
    if match:
        return datetime.now() - timedelta(**{{"m": "minutes", "h": "hours", "d": "days"}[match[2]]: int(match[1])})
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("takes 24h, 30m, 7d (back from now) or a time like 2026-11-28T09:00") from None


class ModelFiles:
    """A model's training reference read from the BentoML store's files (no BentoML needed)."""

    def __init__(self, home: Path, tag: str):
        import yaml

        name, version = tag.split(":")
        self.dir = home / "models" / name / version
        if not (self.dir / "model.yaml").exists():
            raise SystemExit(f"cannot report: model {tag} is not in the store {home / 'models'} (BENTOML_HOME)")
        metadata = yaml.safe_load((self.dir / "model.yaml").read_text())["metadata"]
        self.reference, self.holdout = metadata["reference"], metadata["metrics"]
        self.calibration = intervals.Calibration.of(metadata)  # None: trained before price ranges
        self.sample = pd.DataFrame(np.load(self.dir / "training_sample.npy"), columns=list(FEATURE_NAMES))
        known = self.dir / f"known_{IDENTIFIERS[0]}.npy"
        self.known = np.load(known) if known.exists() else None


def live_bins(flats: pd.DataFrame, reference: dict) -> dict[str, pd.Series]:
    """Each subject's values as the label of the reference bin they fall in (as the workers count them)."""
    out = {}
    for subject in PSI_SUBJECTS:
        edges = np.asarray(reference[subject]["edges"])
        values = flats["price" if subject == PREDICTION else subject].to_numpy(dtype=np.float64)
        out[subject] = pd.Series(np.asarray(bin_labels(edges))[assign_bins(edges, values)])
    return out


def training_bins(reference: dict) -> dict[str, pd.Series]:
    """The training data's bins, rebuilt from the stored counts (one label per training row)."""
    return {s: pd.Series(np.repeat(bin_labels(reference[s]["edges"]), reference[s]["counts"])) for s in PSI_SUBJECTS}


def evidently_report(flats: pd.DataFrame, model: ModelFiles):
    """Evidently's drift and data-summary presets on the 15 features, and its PSI on the reference bins."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset, DataSummaryPreset

    features = [name for name in FEATURE_NAMES if name not in IDENTIFIERS]
    numbers = [name for name in features if name not in CATEGORIES]
    definition = DataDefinition(numerical_columns=numbers, categorical_columns=list(CATEGORIES))

    def coded(frame: pd.DataFrame) -> pd.DataFrame:  # Evidently takes whole numbers as category labels, not floats
        return frame[features].astype({name: "int64" for name in CATEGORIES})

    current = Dataset.from_pandas(coded(flats), data_definition=definition)
    reference = Dataset.from_pandas(coded(model.sample), data_definition=definition)
    report = Report([DataDriftPreset(columns=features), DataSummaryPreset(columns=features)])
    snapshot = report.run(current, reference)

    bins_definition = DataDefinition(categorical_columns=[f"{s} bin" for s in PSI_SUBJECTS])
    live = pd.DataFrame({f"{s} bin": v for s, v in live_bins(flats, model.reference).items()})
    train = pd.DataFrame({f"{s} bin": v for s, v in training_bins(model.reference).items()})
    psi_report = Report([ValueDrift(column=f"{s} bin", method="psi") for s in PSI_SUBJECTS])
    psi_snapshot = psi_report.run(
        Dataset.from_pandas(live, data_definition=bins_definition),
        Dataset.from_pandas(train, data_definition=bins_definition),
    )
    psi = {
        m["config"]["column"].removesuffix(" bin"): float(m["value"])
        for m in psi_snapshot.dict()["metrics"]
        if m["metric_name"].startswith("ValueDrift")
    }
    return snapshot, psi


def verdicts(flats: pd.DataFrame, model: ModelFiles, per_request: int) -> pd.DataFrame:
    """The live rules' verdict per subject on these flats, strongest first. Flats are counted as the
    workers count them (of a request one per building, at most `per_request`, drawn with a fixed seed)."""
    flats = flats.sort_values(["timestamp", "request", "flat"], kind="stable")
    sizes = flats.groupby("request", sort=False).size().to_numpy()
    first_seen = pd.Categorical(flats["request"], categories=flats["request"].unique()).codes
    flats = flats.iloc[np.argsort(first_seen, kind="stable")]  # each request's flats together, as sizes says
    features = flats[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)
    picked = sample_rows(
        list(sizes), per_request, np.random.default_rng(0), features[:, FEATURE_NAMES.index("building_id")]
    )
    known = {IDENTIFIERS[0]: model.known} if model.known is not None else None
    counter = DriftCounter(model.reference, known)
    bins, unseen = counter.count(features[picked], flats["price"].to_numpy(dtype=np.float64)[picked])
    n, critical, counted = len(counter.subjects), counter.critical_values(), len(picked)
    enough = counted >= DRIFT_MIN_ROWS
    rows = []
    for s in counter.subjects:
        ref = counter.reference_counts[s]
        verdict = drifted(ref, bins[s], n)
        rows.append(
            {
                "subject": s,
                "statistic": "psi",
                "value": psi(ref, bins[s]),
                "chi-squared": chi2_statistic(ref, bins[s]),
                "critical": critical[s],
                "drifted": verdict,
            }
        )
    for name, count in unseen.items():
        share, line = count / max(counted, 1), counter.expected_unseen[name] + UNSEEN_MARGIN
        rows.append(
            {
                "subject": name,
                "statistic": "unseen_share",
                "value": share,
                "chi-squared": np.nan,
                "critical": line,
                "drifted": enough and share > line,
            }
        )
    table = pd.DataFrame(rows).sort_values(["drifted", "value"], ascending=False, kind="stable")
    table["verdict"] = np.where(
        table["drifted"], "drifted", "no drift" if enough else f"no verdict (under {DRIFT_MIN_ROWS} flats)"
    )
    table.attrs["counted"] = counted
    return table.set_index("subject")


def quality(flats: pd.DataFrame, model: ModelFiles) -> pd.DataFrame:
    """Per feature: missing values, values outside the training min/max, and for identifiers unseen values."""
    rows = []
    for name in FEATURE_NAMES:
        values = flats[name]
        low, high = model.reference[name]["min"], model.reference[name]["max"]
        row = {
            "feature": name,
            "missing": int(values.isna().sum()),
            "below training min": int((values < low).sum()),
            "above training max": int((values > high).sum()),
        }
        if name in IDENTIFIERS and model.known is not None:
            row["unseen in training"] = f"{unseen_share(model.known, values.to_numpy()):.1%}"
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def price_period(flats: pd.DataFrame) -> tuple[str, str]:
    """Pandas' resampling period and its name: a few hours' window by 10 minutes, a day's by hour, longer by day."""
    span = flats["timestamp"].max() - flats["timestamp"].min()
    if span <= timedelta(hours=6):
        return "10min", "10 minutes"
    return ("h", "hour") if span <= timedelta(days=2) else ("D", "day")


def price_over_time(flats: pd.DataFrame, period: str) -> pd.DataFrame:
    grouped = flats.set_index("timestamp")["price"].resample(period)
    table = pd.DataFrame(
        {
            "flats": grouped.count(),
            "p10": grouped.quantile(0.1),
            "median": grouped.median(),
            "p90": grouped.quantile(0.9),
        }
    )
    return table[table["flats"] > 0]


def accuracy(sold: feedback_data.SoldFlats) -> dict[str, pd.DataFrame]:
    """Sold flats (logged predictions joined to real prices, flatprice/feedback_data.py): MAE, median APE
    and the median signed error ln(price / real) (bias: a market that moved) overall, by day, model and
    price band."""
    joined = sold.frame.copy()
    joined["error"] = (joined["price"] - joined["actual"]).abs()
    joined["ape"] = joined["error"] / joined["actual"]
    joined["log_error"] = np.log(joined["price"] / joined["actual"])
    joined["day"] = pd.to_datetime(joined["priced_at"]).dt.date
    joined["price band"] = pd.cut(joined["price"], PRICE_BANDS, right=False).map(_band_name)

    def summary(group):
        return pd.Series(
            {
                "flats": len(group),
                "MAE, ₽": group["error"].mean(),
                "median APE": group["ape"].median(),
                "median ln(price / real)": group["log_error"].median(),
            }
        )

    tables = {"all": summary(joined).to_frame().T}
    for key in ("day", "model", "price band"):
        tables[f"by {key}"] = joined.groupby(key, observed=True)[["error", "ape", "log_error"]].apply(summary)
    return tables


def range_coverage(frame: pd.DataFrame, calibrations: dict) -> dict[str, pd.DataFrame]:
    """How often the real prices fell inside the default level's range of their flat, by segment and by day:
    the ranges recomputed from each model's calibration and the logged flat and price (models without ranges,
    or not in the store, are left out)."""
    parts = []
    for tag, group in frame.groupby("model"):
        calibration = calibrations.get(tag)
        if calibration is None:
            continue
        rows = group[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)
        ranges = calibration.ranges(rows, group["price"].to_numpy(dtype=np.float64))
        actual = group["actual"].to_numpy()
        parts.append(
            pd.DataFrame(
                {
                    "segment": np.array(intervals.SEGMENTS)[ranges.segment],
                    "day": pd.to_datetime(group["priced_at"]).dt.date.to_numpy(),
                    "inside": (actual >= ranges.low) & (actual <= ranges.high),
                    "below": actual < ranges.low,
                    "above": actual > ranges.high,
                }
            )
        )
    if not parts:
        return {}
    scored = pd.concat(parts, ignore_index=True)

    def summary(group):
        return pd.Series({"flats": len(group), **{c: group[c].mean() for c in ("inside", "below", "above")}})

    level = f"{intervals.DEFAULT_LEVEL:.0%} ranges"
    return {
        f"{level} by {key}": scored.groupby(key)[["inside", "below", "above"]].apply(summary)
        for key in ("segment", "day")
    }


def _band_name(interval) -> str:
    high = "" if np.isinf(interval.right) else f"{interval.right / 1e6:g}M"
    return f"{interval.left / 1e6:g}M-{high}" if high else f">= {interval.left / 1e6:g}M"


def actuals_name(source: str) -> str:
    """How the page names the source: a file's name, or the ledger's database without its credentials."""
    if source == feedback_data.LEDGER:
        return "the service's feedback ledger"
    return feedback_data.source_name(source)


def sold(source: str, flats: pd.DataFrame, log_dir: Path) -> feedback_data.SoldFlats:
    """The logged flats joined to real prices from `ledger` (the service's own ledger), a ledger (a PostgreSQL
    URL or a SQLite ledger file), or a CSV (request_id, flat (default 0), price)."""
    if source == feedback_data.LEDGER or source.startswith(feedback_data.POSTGRES) or source.endswith(".sqlite3"):
        try:
            reader = feedback_data.open_reader(source, log_dir, Settings.load().ledger_url)
            return feedback_data.joined(flats, feedback_data.sales_frame(reader))
        except LedgerUnavailable as error:
            raise SystemExit(f"cannot report: the feedback ledger: {error}") from None
    path = Path(source)
    actuals = pd.read_csv(path)
    missing = {"request_id", "price"} - set(actuals.columns)
    if missing:
        raise SystemExit(f"cannot report: {path} lacks the column(s) {', '.join(sorted(missing))}")
    if "flat" not in actuals:
        actuals["flat"] = 0
    return feedback_data.joined(flats, actuals.rename(columns={"price": "actual"}))


def _calibration(home: Path, tag: str):
    try:
        return ModelFiles(home, tag).calibration
    except SystemExit:  # a model no longer in this store: its flats' ranges cannot be recomputed
        return None


def _table(frame: pd.DataFrame, formats: dict | None = None) -> str:
    return frame.to_html(classes="t", border=0, float_format=_number, formatters=formats)


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"  # rubles whole, shares and PSI to 4 digits


def _sparkline(table: pd.DataFrame) -> str:
    """The median price with its p10-p90 band, an inline SVG (no script, no network)."""
    if len(table) < 2:
        return ""
    width, height = 900, 180
    x = np.linspace(20, width - 20, len(table))
    top, bottom = table["p90"].max(), table["p10"].min()

    def y(values):
        return height - 20 - (np.asarray(values) - bottom) / max(top - bottom, 1) * (height - 40)

    band = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(x, y(table["p90"]), strict=True))
    band += " " + " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(x[::-1], y(table["p10"])[::-1], strict=True))
    line = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(x, y(table["median"]), strict=True))
    return (
        f'<svg width="{width}" height="{height}" role="img" aria-label="median price over time">'
        f'<polygon points="{band}" fill="#cfe3f7"/><polyline points="{line}" fill="none" stroke="#1f6fbf" stroke-width="2"/>'
        f'<text x="20" y="14" font-size="12">{top:,.0f} ₽ (p90 max)</text>'
        f'<text x="20" y="{height - 4}" font-size="12">{bottom:,.0f} ₽ (p10 min)</text></svg>'
    )


def build(
    log_dir: Path, home: Path, start: datetime, actuals: str | None, tag: str | None, until: datetime | None = None
) -> tuple[str, dict]:
    """The report's HTML and its figures (for tests and scripts). Times in UTC, as the log keeps them."""
    start = utc(start)
    flats = read_flats(log_dir, since=start, until=until)
    if flats.empty:
        raise SystemExit(f"cannot report: no flats logged since {start:%Y-%m-%d %H:%M} in {log_dir}")
    tag = tag or flats["model"].value_counts().index[0]
    model = ModelFiles(home, tag)
    served = flats[flats["model"] == tag]
    snapshot, evidently_psi = evidently_report(served, model)
    judged = verdicts(served, model, Settings.load().drift_rows_per_request)
    judged["PSI (Evidently)"] = pd.Series(evidently_psi)
    period, period_name = price_period(flats)
    prices = price_over_time(flats, period)
    figures = {
        "flats": len(flats),
        "model": tag,
        "psi": evidently_psi,
        "verdicts": {s: {"value": row.value, "drifted": bool(row.drifted)} for s, row in judged.iterrows()},
    }
    drifted_subjects = [s for s, row in judged.iterrows() if row.drifted]
    sections = [
        f"<h1>Flat-price model report</h1><p>{len(flats):,} flats in {flats['request'].nunique():,} requests "
        f"logged {flats['timestamp'].min():%Y-%m-%d %H:%M} to {flats['timestamp'].max():%Y-%m-%d %H:%M} UTC "
        f"(since {start:%Y-%m-%d %H:%M}); drift and quality of model <b>{html.escape(tag)}</b> "
        f"({len(served):,} flats) against its training data.</p>",
        _table(flats["model"].value_counts().rename("flats").to_frame()),
        f"<h2>Drift: the live rules' verdict</h2><p><b>{', '.join(drifted_subjects) or 'No subject'} drifted</b> "
        f"({judged.attrs['counted']:,} flats counted as the workers count them). Per subject, strongest first: "
        "PSI on the model's reference bins (below 0.1 no shift, 0.1-0.25 moderate, above 0.25 significant) with "
        "Pearson's chi-squared against its critical value, or an identifier's unseen share against its line; "
        "Evidently's PSI on the same bins beside ours.</p>",
        _table(judged.drop(columns="drifted")),
        "<h2>Data quality</h2><p>Missing values, values outside the training data's range, and building ids "
        "never seen in training.</p>",
        _table(quality(served, model).set_index("feature")),
        f"<h2>Price over time</h2><p>Predicted prices per {period_name}, rubles.</p>",
        _sparkline(prices),
        _table(prices),
    ]
    if actuals is not None:
        sold_flats = sold(actuals, flats, log_dir)
        tables, unmatched = accuracy(sold_flats), sold_flats.unlogged
        calibrations = {t: _calibration(home, t) for t in sold_flats.frame["model"].unique()}
        tables.update(range_coverage(sold_flats.frame, calibrations))
        figures["accuracy"] = {name: table.reset_index().to_dict("records") for name, table in tables.items()}
        figures["unmatched"] = unmatched
        sections.append(
            f"<h2>Accuracy against real prices</h2><p>Real prices from {html.escape(actuals_name(actuals))} joined to the "
            f"logged predictions by request_id and flat; "
            + (
                f"{unmatched:,} real prices matched no logged flat."
                if unmatched
                else "every real price matched a logged flat."
            )
            + "</p>"
        )
        sections += [f"<h3>{html.escape(name)}</h3>{_table(table)}" for name, table in tables.items()]
    sections.append(
        "<h2>Drift and data summary (Evidently)</h2><p>Evidently's own tests per feature against the training "
        "sample, every flat counted: a second view, not the alert's.</p>"
    )
    style = (
        "<style>.flatprice{font-family:sans-serif;margin:24px}.flatprice table.t{border-collapse:collapse;"
        "margin:8px 0}.flatprice .t td,.flatprice .t th{padding:2px 10px;border-bottom:1px solid #ddd;"
        "text-align:right}</style>"
    )
    ours = f'{style}<div class="flatprice">{"".join(sections)}</div>'
    evidently_page = snapshot.get_html_str(as_iframe=False)
    page = re.sub(r"<body([^>]*)>", lambda m: f"<body{m[1]}>{ours}", evidently_page, count=1)
    title = f"<title>Flat-price model report: {html.escape(tag)}, {flats['timestamp'].min():%Y-%m-%d %H:%M} to {flats['timestamp'].max():%Y-%m-%d %H:%M}</title>"
    page = re.sub(r"<title>.*?</title>", lambda m: title, page, count=1, flags=re.S)
    if "<title>" not in page:  # Evidently's page had none: the browser tab shows ours
        page = re.sub(r"<head([^>]*)>", lambda m: f"<head{m[1]}>{title}", page, count=1)
    return page, figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monitoring.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--since", type=parse_since, default="24h", help="24h, 30m, 7d or a local time (default 24h)")
    parser.add_argument("--until", type=parse_since, help="the window's end, as --since (default: now)")
    parser.add_argument(
        "--actuals",
        help="real prices: `ledger` (the service's feedback ledger), a ledger's PostgreSQL URL or SQLite file, "
        "or a CSV (request_id, flat (default 0), price)",
    )
    parser.add_argument("--out", type=Path, default=Path("report.html"), help="HTML file to write (report.html)")
    parser.add_argument("--model", help="model tag to judge (default: the one that priced most flats)")
    parser.add_argument("--log-dir", type=Path, help="the inference log (default: the service's setting)")
    parser.add_argument("--figures", type=Path, help="also write the report's figures as JSON")
    args = parser.parse_args(argv)
    try:
        import evidently  # noqa: F401
    except ImportError:
        raise SystemExit(f"cannot report: Evidently is not installed; {SETUP}") from None
    home = bentoml_home()
    log_dir = args.log_dir or log_directory(Settings.load().inference_log_dir, str(home))
    page, figures = build(log_dir, home, args.since, args.actuals, args.model, args.until)
    args.out.write_text(page, encoding="utf-8")
    if args.figures:
        args.figures.write_text(json.dumps(figures, indent=1, default=str))
    print(f"wrote {args.out}: {figures['flats']:,} flats, model {figures['model']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
