"""Training rows from sales (train/sales.py), in process: each rule that sets a sale aside, counted; the
cut-off between calls; the weights' decay; the market index net of the answering model's own bias."""

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from flatprice import feedback_data
from flatprice.schema import FEATURE_NAMES, TARGET
from flatprice.synthetic import generate_flats
from train.sales import MIN_GATE_SALES, SALE_WEIGHT, Sales, SalesError, checked, default_cutoff

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def sold(n: int, seed: int = 1) -> pd.DataFrame:
    """`n` sold flats as feedback_data.joined gives them: priced at T0 + i min, sold an hour later."""
    flats = generate_flats(n, seed=seed)
    frame = flats[list(FEATURE_NAMES)].copy()
    frame["request_id"] = [f"{i:032x}" for i in range(n)]
    frame["flat"], frame["model"] = 0, "flat_price:a"
    frame["price"] = flats[TARGET].to_numpy()
    frame["actual"] = (flats[TARGET] * 1.2).round().astype("int64").to_numpy()
    frame["priced_at"] = [T0 + timedelta(minutes=i) for i in range(n)]
    frame["settled_at"] = [T0 + timedelta(minutes=i, hours=1) for i in range(n)]
    return frame[list(feedback_data.COLUMNS)]


def test_each_rule_sets_sales_aside_and_counts_them():
    frame = sold(10)
    frame.loc[0, "settled_at"] = frame.loc[0, "priced_at"] - timedelta(seconds=1)  # a clock that jumped back
    frame.loc[1, "floor"] = 0  # breaks an input rule
    frame.loc[2, "actual"] = 10**15  # no flat sells for that
    frame.loc[3, "actual"] = 0
    frame.loc[4, list(FEATURE_NAMES)] = frame.loc[5, list(FEATURE_NAMES)].to_numpy()  # one flat, sold twice
    rows, counts = checked(feedback_data.SoldFlats(frame, sales=12, unlogged=2))
    assert counts == {
        "read": 12,
        "unlogged": 2,
        "joined": 10,
        "corrupt_log_lines": 0,
        "sold_before_priced": 1,
        "refused_inputs": 1,
        "refused_prices": 2,
        "repeated": 1,
    }
    # of the flat sold twice (rows 4 and 5) the later sale stays
    assert list(rows["request_id"]) == [f"{i:032x}" for i in range(5, 10)]
    assert list(rows[TARGET]) == list(frame.loc[5:9, "actual"]) and list(rows["answered"]) == list(
        frame.loc[5:9, "price"]
    )


def test_the_cut_off_falls_between_calls_and_leaves_enough_to_judge():
    one_call = pd.Series(pd.to_datetime([T0] * 120, utc=True))
    two_calls = pd.Series(pd.to_datetime([T0] * 120 + [T0 + timedelta(hours=1)] * 80, utc=True))
    assert default_cutoff(two_calls, MIN_GATE_SALES) == T0  # the 80 of the second call are judged
    assert default_cutoff(one_call, MIN_GATE_SALES) == T0  # nothing after it: load_sales says "too few"
    hourly = pd.Series(pd.date_range(T0, periods=600, freq="h"))
    cut = default_cutoff(hourly, 180)
    assert (hourly > cut).sum() == 180


def test_weights_halve_every_half_life_and_the_index_is_net_of_the_model_s_own_bias():
    frame, _ = checked(feedback_data.SoldFlats(sold(100), sales=100, unlogged=0))
    frame = frame.assign(sold_at=[T0 - timedelta(days=d) for d in range(100)])
    sales = Sales(frame, frame.iloc[:0], T0, "test")
    weights = sales.weights(half_life_days=10)
    assert weights[0] == pytest.approx(SALE_WEIGHT) and weights[10] == pytest.approx(SALE_WEIGHT / 2)
    assert weights[30] == pytest.approx(SALE_WEIGHT / 8)
    # real = answered × 1.2 on every flat: the market moved +20% from what a model with no bias of its own says
    assert sales.market_index(0.0) == pytest.approx(1.2, rel=1e-3)
    # a model that overprices by 5% when nothing moves: part of the gap is its own, not the market's
    assert sales.market_index(np.log(1.05)) == pytest.approx(1.2 * 1.05, rel=1e-3)


def test_too_few_sales_say_how_many_there_are_and_are_needed(tmp_path):
    from flatprice.observability.ledger import SqliteLedger
    from train.sales import load_sales

    SqliteLedger(tmp_path, max_flats=100).close()  # an empty ledger beside an empty log
    with pytest.raises(SalesError, match=r"too few sales: 0 usable sales, 100 needed \(of 0 read"):
        load_sales(str(tmp_path / "ledger.sqlite3"), tmp_path)


def test_a_torn_or_altered_log_line_is_skipped_and_counted(tmp_path):
    from benchmarks.sales_join import write_log
    from flatprice.observability.inference_log import MONITOR_NAME
    from flatprice.observability.log_records import read_flats

    write_log(tmp_path, 2_000)
    data = tmp_path / MONITOR_NAME / "data" / "data.0.log"
    whole = data.read_text()
    first = whole.splitlines()[0]
    record = json.loads(first)
    record["flats"][0] += 1  # its sequences no longer as long as its flats
    altered = json.dumps(record)
    data.write_text(whole + altered + "\n" + first[: len(first) // 2] + "\n")  # and a line torn by a crash
    flats = read_flats(tmp_path)
    assert len(flats) == 2_000 and flats.attrs["corrupt_lines"] == 2
