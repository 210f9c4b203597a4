"""The Markdown table of the chart's values, from values.yaml's `# --` comments, in docs/install.md.

Owns: how charts/tortie/values.yaml documents its values (helm-docs style: a `# --`
comment, possibly continued on following `#` lines, right above the key) and the table
between the markers in docs/install.md. Pure apart from reading and writing those files.

Invariants: every value is documented, by its own comment or its parent's (a documented
mapping such as `node.resources` covers what is inside); the table lists documented keys in
file order with their defaults as JSON; `--check` changes nothing and fails when the doc
is stale. Run: `python scripts/values_table.py [--check]`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
VALUES = ROOT / "charts" / "tortie" / "values.yaml"
DOC = ROOT / "docs" / "install.md"
START, END = "<!-- values-table:start -->", "<!-- values-table:end -->"

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?:\s|$)")


def documented(text: str) -> list[tuple[str, str]]:
    """(dotted key, description) for every key with a `# --` comment, in file order."""
    out: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    pending: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if pending is not None:
                pending.append(stripped[1:].strip())
            continue
        match = _KEY.match(line)
        if not match:
            if not stripped:
                pending = None
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [match["key"]])
        if pending is not None:
            out.append((path, " ".join(p for p in pending if p)))
            pending = None
        stack.append((indent, match["key"]))
    return out


def leaves(values: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every scalar, list and empty mapping in `values`."""
    if isinstance(values, dict) and values:
        return [leaf for k, v in values.items() for leaf in leaves(v, f"{prefix}{k}.")]
    return [prefix.rstrip(".")]


def undocumented(text: str) -> list[str]:
    """Values with no description of their own or of an enclosing mapping."""
    docs = {path for path, _ in documented(text)}
    wrong = []
    for leaf in leaves(yaml.safe_load(text)):
        parts = leaf.split(".")
        if not any(".".join(parts[:n]) in docs for n in range(1, len(parts) + 1)):
            wrong.append(leaf)
    return wrong


def _lookup(values: Any, path: str) -> Any:
    for part in path.split("."):
        values = values[part]
    return values


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(text: str) -> str:
    values = yaml.safe_load(text)
    rows = ["| Value | Default | Description |", "|---|---|---|"]
    for path, description in documented(text):
        default = json.dumps(_lookup(values, path), separators=(", ", ": "))
        rows.append(f"| `{path}` | `{_cell(default)}` | {_cell(description)} |")
    return "\n".join(rows) + "\n"


def with_table(doc: str, text: str) -> str:
    """`doc` with the table between the markers replaced by the current one."""
    head, start, rest = doc.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise SystemExit(f"values_table: {DOC} lacks the markers {START} ... {END}")
    return f"{head}{START}\n{table(text)}{END}{tail}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--check", action="store_true", help="fail if docs/install.md is stale")
    opts = p.parse_args()
    text = VALUES.read_text()
    missing = undocumented(text)
    if missing:
        sys.exit(f"values_table: undocumented values in {VALUES}: {', '.join(missing)}")
    doc = DOC.read_text()
    new = with_table(doc, text)
    if opts.check:
        if new != doc:
            sys.exit(f"values_table: {DOC} is stale; run python scripts/values_table.py")
        return
    if new != doc:
        DOC.write_text(new)


if __name__ == "__main__":
    main()
