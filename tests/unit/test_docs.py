"""The runbook stays a runbook, and its tables are the code's own facts."""

import re

from devtools.servers import REPO
from flatprice.api.errors import ERROR_STATUSES
from flatprice.config import markdown_table

README = (REPO / "README.md").read_text()


def test_readme_is_a_runbook_of_at_most_12_kb():
    assert len(README.encode()) <= 12 * 1024


def test_readme_configuration_table_is_generated_from_the_settings():
    table = README.split("<!-- settings:start -->\n", 1)[1].split("\n<!-- settings:end -->", 1)[0]
    assert table == markdown_table()


def test_monitoring_md_metrics_table_is_generated_from_the_metrics_module():
    from flatprice.observability import metrics

    text = (REPO / "Monitoring.md").read_text()
    table = text.split("<!-- metrics:start -->\n", 1)[1].split("\n<!-- metrics:end -->", 1)[0]
    assert table == metrics.markdown_table()
    listed = set(re.findall(r"^\| `(\w+)` \|", table, re.M))
    exposed = {
        f"{name}_total" if kind == "counter" else name
        for name, kind in (metrics.EXPOSED | metrics.CHALLENGER_EXPOSED | metrics.CANARY_EXPOSED).items()
    }
    assert listed == exposed


def test_readme_error_table_lists_the_documented_statuses():
    rows = re.findall(r"^\| (\d{3}(?:, \d{3})*) \|", README, re.M)
    listed = {int(code) for row in rows for code in row.split(", ")}
    assert listed == set(ERROR_STATUSES) - {500, 503}  # not a client's doing: in /docs.json only


def test_docs_the_readme_links_exist():
    for link in re.findall(r"\]\(((?:docs/|Monitoring)[^)#]*)\)", README):
        assert (REPO / link).exists(), link


def test_the_layout_names_every_top_level_folder_and_module():
    """docs/layout.md is the map: every tracked top-level folder and every module of the code folders on it."""
    import subprocess

    layout = (REPO / "docs" / "layout.md").read_text()
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    folders = {path.split("/")[0] for path in tracked if "/" in path and not path.startswith(".")}
    # every module of the package and of the folders that are code, by its name (a benchmark without .py)
    code = r"(flatprice(/\w+)?|train|batch|monitoring|devtools|benchmarks|deploy)/\w+\.py"
    modules = {path.rsplit("/", 1)[1] for path in tracked if re.fullmatch(code, path)} - {"__init__.py", "__main__.py"}
    modules = {m.removesuffix(".py") if m not in layout else m for m in modules}
    folders_missing = [
        f for f in sorted(folders) if not re.search(rf"^{re.escape(f)}/", layout, re.M) and f"{f}/" not in layout
    ]
    assert not folders_missing, folders_missing
    assert not [m for m in sorted(modules) if m not in layout]


def test_monitoring_md_lists_every_api_route_and_every_generated_table_is_current():
    from devtools import docs_tables
    from flatprice.api.routes import API_ROUTES

    text = (REPO / "Monitoring.md").read_text()
    listed = text.split("(`flatprice/api/routes.py`: ", 1)[1].split(")", 1)[0]
    assert re.findall(r"`(/\w+)`", listed) == list(API_ROUTES)
    for (file, marker), generate in docs_tables.TABLES.items():
        assert docs_tables.between((REPO / file).read_text(), marker) == generate(), f"{file} ({marker})"
