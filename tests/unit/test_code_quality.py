"""Static checks: the lint rules of pyproject.toml, and `ruff format` (line length 120)."""

import subprocess
import sys

from devtools.servers import REPO


def test_ruff_lint_finds_nothing():
    run = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--output-format", "concise", "."],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_code_is_ruff_formatted():
    run = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "."], cwd=REPO, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_serving_needs_none_of_the_training_extras(small_model):
    """The Bento's image installs requirements.txt only: service.py must not import the training extras."""
    requirements = (REPO / "requirements.txt").read_text().lower()
    training_only = ("pyarrow", "sqlalchemy", "psycopg2")  # (rich comes with BentoML itself)
    assert not [name for name in training_only if f"\n{name}==" in requirements]
    code = f"import sys, service; print(sorted(m for m in {training_only!r} if m in sys.modules), service.FlatPriceService)"
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.startswith("[] "), run.stdout + run.stderr[-2000:]


def test_every_tool_module_imports():
    """Benchmarks and monitoring tools are not run by every test; they must at least import."""
    modules = [
        f"{d}.{p.stem}" for d in ("benchmarks", "monitoring") for p in (REPO / d).glob("*.py") if p.stem != "__init__"
    ]
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)"
    run = subprocess.run([sys.executable, "-c", code, *modules], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]


def test_the_makefiles_uv_is_the_dev_extras_uv():
    import re

    from devtools.servers import REPO

    makefile = re.search(r"^UV_VERSION = (\S+)$", (REPO / "Makefile").read_text(), re.M).group(1)
    assert f'"uv=={makefile}"' in (REPO / "pyproject.toml").read_text()


def test_the_layers_import_downwards_only():
    """compat (private touches) is the ground floor; observability never imports the server edge."""
    import ast

    from devtools.servers import REPO

    def imports(path) -> set[str]:
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = "." * node.level + (node.module or "")
                found |= {f"{base}.{alias.name}" if node.module is None else base for alias in node.names}
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
        return found

    def ours(modules: set[str]) -> set[str]:
        return {m.lstrip(".").removeprefix("flatprice.") for m in modules if m.startswith((".", "flatprice"))}

    compat = ours(imports(REPO / "flatprice/compat.py"))
    assert not [m for m in compat if m.split(".")[0] in ("server", "observability")], compat
    for path in (REPO / "flatprice/observability").glob("*.py"):
        assert not [m for m in ours(imports(path)) if m.split(".")[0] == "server"], path
