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


def test_readme_error_table_lists_the_documented_statuses():
    rows = re.findall(r"^\| (\d{3}(?:, \d{3})*) \|", README, re.M)
    listed = {int(code) for row in rows for code in row.split(", ")}
    assert listed == set(ERROR_STATUSES) - {500, 503}  # not a client's doing: in /docs.json only


def test_docs_the_readme_links_exist():
    for link in re.findall(r"\]\(((?:docs/|Monitoring)[^)#]*)\)", README):
        assert (REPO / link).exists(), link
