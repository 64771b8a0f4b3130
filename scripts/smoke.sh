#!/usr/bin/env bash
# Smoke test on one Python: install, train a small model, serve, predict, scrape /metrics.
#   scripts/smoke.sh /root/.pyenv/versions/3.13.0/bin/python3
# Uses its own venv (.venv-smoke-<version>) and a temporary BENTOML_HOME; prints the time of each step.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-python3}
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
venv=.venv-smoke-$version
home=$(mktemp -d)
port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export BENTOML_HOME=$home BENTOML_DO_NOT_TRACK=True
step() { local start=$SECONDS; "$@"; echo "  $((SECONDS - start)) s"; }
echo "Python $version: install"; step make -s install VENV="$venv" BASE_PYTHON="$python"
quiet() { "$@" >/dev/null; }
echo "train (6,000 rows, 150 trees)"; step quiet "$venv/bin/python" -m train --rows 6000 --iterations 150
echo "serve until ready"
start=$SECONDS
"$venv/bin/python" -m bentoml serve service:FlatPriceService --host 127.0.0.1 --port "$port" >"$home/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$home"' EXIT
until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do
  kill -0 $server 2>/dev/null || { cat "$home/serve.log"; exit 1; }
  sleep 0.2
done
echo "  $((SECONDS - start)) s"
flat='{"floor": 1, "is_apartment": 0, "kitchen_area": 7.0, "living_area": 27.0, "rooms": 2, "total_area": 40.0, "building_id": 764, "build_year": 1936, "building_type_int": 1, "latitude": 55.74, "longitude": 37.52, "ceiling_height": 3.0, "flats_count": 63, "floors_total": 7, "has_elevator": 1}'
echo "predict: $(curl -sf -X POST "http://127.0.0.1:$port/predict" -H 'Content-Type: application/json' -d "$flat")"
# The monitor thread publishes model metrics within a second: wait for the count, at most 10 s.
for _ in $(seq 50); do
  if curl -sf "http://127.0.0.1:$port/metrics" | grep -q '^flat_price_predicted_price_rubles_count 1.0$'; then
    echo "metrics: the prediction is counted"; exit 0
  fi
  sleep 0.2
done
echo "metrics: the prediction was not counted within 10 s" >&2; exit 1
