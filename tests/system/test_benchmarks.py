"""The benchmark and soak scripts run (figures are theirs to print, not asserted here)."""

import json
import subprocess
import sys

from devtools.servers import REPO


def run_benchmark(module: str, out, *args) -> tuple[subprocess.CompletedProcess, dict]:
    """`python -m benchmarks.MODULE ... --out OUT`; its output and the results it wrote."""
    run = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *args, "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run, json.loads(out.read_text())


def test_benchmark_script_runs_and_prices_match(small_model, tmp_path):
    args = ("--duration", "1", "--rounds", "1", "--connections", "8", "--targets", "service,original")
    run, results = run_benchmark("bench", tmp_path / "bench.json", *args)
    assert set(results["http"]) == {"service", "original"}
    assert all(r["rps"] > 0 for runs in results["http"].values() for r in runs["8"])
    assert results["identity"] <= 1e-9
    assert "== 1,000-flat batch requests" in run.stdout


def test_explain_benchmark_runs_and_matches_catboost(small_model, tmp_path):
    _, results = run_benchmark("explain", tmp_path / "explain.json", "--seconds", "1")
    assert results["in_process"]["max_abs_diff_vs_catboost"] < 1e-9
    assert all(
        results["http"][route]["rps"] > 0 and not results["http"][route]["non_2xx"]
        for route in ("/predict", "/explain")
    )


def test_soak_script_runs(small_model):
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.soak", "--minutes", "2", "--minute-seconds", "3", "--rate", "200"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "minute  2:" in run.stdout and "RSS growth after warm-up" in run.stdout


def test_overload_script_runs(small_model, tmp_path):
    out = tmp_path / "overload.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.overload",
            "--limits",
            "1",
            "--refusal-delays",
            "0.05",
            "--seconds",
            "4",
            "--layouts",
            "shared",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    [result] = json.loads(out.read_text())
    for load in ("2x", "flood"):
        assert result[load]["other"] == [] and result[load]["socket_errors"] == "", result  # only 200 and 429
        assert result[load]["refused_429"] + result[load]["answered"] > 0
    assert "2x: offered" in run.stdout and "flood: offered" in run.stdout
