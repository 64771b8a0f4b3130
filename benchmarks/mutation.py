"""Mutation testing of the API contract, the server edge and the feedback ledger with the fast tests (mutmut).

    python -m benchmarks.mutation        # `make mutation`; ~10-20 minutes on 2 cores

mutmut changes one operator, constant or call at a time in the modules listed under
[tool.mutmut] in pyproject.toml and runs the tests that cover it; a mutant the tests still
pass "survived". Prints the score per module and the survivors, for docs/performance.md.
"""

from __future__ import annotations

import collections
import json
import shutil
import subprocess
import sys

from devtools.servers import REPO


def main() -> int:
    shutil.rmtree(REPO / "mutants", ignore_errors=True)
    subprocess.run([sys.executable, "-m", "mutmut", "run"], cwd=REPO, check=False)
    listing = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=REPO, capture_output=True, text=True
    ).stdout
    by_module: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    survivors = []
    for line in listing.splitlines():
        if ":" not in line:
            continue
        name, status = (part.strip() for part in line.rsplit(":", 1))
        module = name.split(".x")[0].split("__mutmut")[0]
        by_module[module][status] += 1
        if status == "survived":
            survivors.append(name)
    for module, counts in sorted(by_module.items()):
        total = sum(counts.values())
        print(f"{module:40s} {counts['killed']}/{total} killed ({counts['killed'] / total:.0%}) {dict(counts)}")
    print("survivors:", json.dumps(survivors, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
