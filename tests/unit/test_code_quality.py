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


def test_no_import_circle_in_the_package():
    """Every import between flatprice's modules, at the top or inside a function, resolved to its module:
    the graph has no cycle (the features that come next must not have to cut through a loop)."""
    import ast

    package = REPO / "flatprice"
    modules = {
        ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): path
        for path in package.rglob("*.py")
    }

    def resolved(importer: str, path, node) -> set[str]:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = importer if path.name == "__init__.py" else importer.rsplit(".", 1)[0]
            for _ in range(node.level - 1):
                base = base.rsplit(".", 1)[0]
            stem = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            names = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in modules else stem for alias in node.names]
        return {n for n in names if n in modules and n != importer}

    graph = {
        name: set().union(
            *(
                resolved(name, path, n)
                for n in ast.walk(ast.parse(path.read_text()))
                if isinstance(n, ast.Import | ast.ImportFrom)
            )
        )
        for name, path in modules.items()
    }
    # a package's __init__ importing its own modules is how a package is assembled, not a circle
    graph = {name: {m for m in deps if not m.startswith(f"{name}.")} for name, deps in graph.items()}

    def cycle_from(start: str, trail: list[str]) -> list[str] | None:
        for nxt in sorted(graph[start]):
            if nxt in trail:
                return [*trail[trail.index(nxt) :], nxt]
            if nxt not in done and (found := cycle_from(nxt, [*trail, nxt])):
                return found
        done.add(start)
        return None

    done: set[str] = set()
    cycles = [c for name in sorted(graph) if name not in done and (c := cycle_from(name, [name]))]
    assert not cycles, cycles
    assert graph["flatprice.observability.ledger"] == {
        "flatprice.observability.ledger_port",
        "flatprice.observability.log_records",
    }
