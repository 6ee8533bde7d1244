"""The code-size figures a clean-up reports before and after: the longest functions of each
package and the `duplicates` tool's count of repeated places, e.g.
`.venv/bin/python scripts/code_metrics.py` (or `--top 10`, `--repo <a checkout>`).

A function's length is its lines from `def` (decorators excluded) to its last line, docstring
and comments included: what a reader has to read. Nested functions count on their own too.
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("pipeline", "gateway", "edge", "contracts", "devstack", "scripts", "tests")


@dataclass(frozen=True)
class Function:
    path: str
    name: str
    line: int
    length: int


def functions(repo: Path, package: str) -> list[Function]:
    """Every function and method in the package's Python files, longest first."""
    found = []
    for path in sorted((repo / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                found.append(Function(str(path.relative_to(repo)), node.name, node.lineno, length))
    return sorted(found, key=lambda f: (-f.length, f.path, f.line))


def duplicates_summary(repo: Path) -> str:
    """The first line of `duplicates` over the whole tree (the count of pairs and files read)."""
    tool = shutil.which("duplicates")
    if tool is None:
        return "duplicates: not on PATH"
    done = subprocess.run(
        [tool, "--repo", str(repo), "--most", "200", "--seconds", "120"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = done.stdout.splitlines()
    rows = sum(1 for line in lines if re.match(r"D\d+ ", line))
    incomplete = [line for line in lines if line.startswith("incomplete:")]
    return "\n".join([f"duplicates: {rows} rows; {lines[0] if lines else ''}", *incomplete])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    p.add_argument("--top", type=int, default=5, help="functions listed per package (5)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    print(duplicates_summary(args.repo))
    for package in PACKAGES:
        found = functions(args.repo, package)
        print(f"\n{package}: {len(found)} functions, longest:")
        for f in found[: args.top]:
            print(f"  {f.length:4d}  {f.path}:{f.line}  {f.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
