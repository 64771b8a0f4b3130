"""`bentoml build` makes a Bento that carries the model, and it serves from a fresh home."""

import os
import re
import subprocess
import sys

import httpx
import pytest
import yaml

from devtools.servers import REPO, BentoServer, private_home
from flatprice.schema import EXAMPLE_FLAT


def bentoml_cli(home, *args, cwd=REPO):
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}
    result = subprocess.run(
        [sys.executable, "-m", "bentoml", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def bento(small_model, session_dir):
    home = private_home(session_dir / "build-home")
    bentoml_cli(home, "build")
    path = bentoml_cli(home, "get", "flat_price:latest", "-o", "path").strip()
    return home, path


def test_bento_holds_the_model_code_and_no_extras(bento, small_model):
    home, path = bento
    info = yaml.safe_load(open(os.path.join(path, "bento.yaml")))
    assert [m["tag"] for m in info["services"][0]["models"]] == [str(small_model.tag)]
    assert info["labels"]["project"] == "yandex-realty-flat-price"
    src = sorted(
        os.path.relpath(os.path.join(d, f), os.path.join(path, "src"))
        for d, _, files in os.walk(os.path.join(path, "src"))
        for f in files
    )
    assert "service.py" in src and "flatprice/schema.py" in src
    # the whole package: every module the service imports, and the inference log's logging configuration
    package = REPO / "flatprice"
    modules = {str(p.relative_to(REPO)) for p in package.rglob("*.py") if "__pycache__" not in p.parts}
    assert modules <= set(src), modules - set(src)
    assert "flatprice/observability/inference_log.yaml" in src
    assert not [
        f
        for f in src
        if f.startswith(("tests", "train", ".venv", "loadtest", "monitoring"))
        or f.endswith((".pyc", ".csv", ".parquet"))
    ], src
    requirements = open(os.path.join(path, "env/python/requirements.txt")).read()
    for pin in open(REPO / "requirements.txt").read().split():
        if "==" in pin:
            assert pin in requirements


def test_generated_dockerfile(bento):
    _, path = bento
    dockerfile = open(os.path.join(path, "env/docker/Dockerfile")).read()
    assert "FROM python:3.11-slim" in dockerfile
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] == "bentoml", users  # the last USER wins: the service runs as non-root
    assert "EXPOSE 3000" in dockerfile
    assert "HEALTHCHECK" in dockerfile and "/readyz" in dockerfile


def test_exported_bento_serves_from_an_empty_home(bento, small_model, session_dir, tmp_path):
    home, _ = bento
    archive = tmp_path / "flat_price.bento"
    bentoml_cli(home, "export", "flat_price:latest", str(archive))
    fresh = session_dir / "fresh-home"
    bentoml_cli(fresh, "import", str(archive))
    assert str(small_model.tag) in bentoml_cli(fresh, "models", "list")
    with BentoServer(fresh, target="flat_price:latest", cwd=tmp_path, share_models=False) as server:
        answer = httpx.post(f"{server.url}/predict", json=EXAMPLE_FLAT)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == str(small_model.tag) and answer.json()["price"] > 1e6
