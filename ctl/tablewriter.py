"""calicoctl's ASCII tables: olekukonko/tablewriter v0.0.5 with its defaults.

+---+ borders, centred upper-case headings, cells left-aligned except numbers
and percentages (right-aligned), long cells wrapped at spaces to 30 columns.
Used by `ctl ipam` and `ctl node status`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

WRAP_WIDTH = 30  # tablewriter's default MaxColWidth for auto-wrapping
_DECIMAL = re.compile(r"^-?(?:\d{1,3}(?:,\d{3})*|\d+)(?:\.\d+)?$")
_PERCENT = re.compile(r"^-?\d+\.?\d*%$")


def _title(header: str) -> str:
    return header.replace("_", " ").strip().upper() or " "


def _wrap(text: str, width: int | None) -> list[str]:
    if width is None or len(text) <= width or " " not in text:
        return [text]
    lines: list[str] = []
    current = ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return lines


def _center(text: str, width: int) -> str:
    gap = width - len(text)
    left = gap // 2
    return " " * left + text + " " * (gap - left)


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]],
                 wrap: int | None = WRAP_WIDTH) -> str:
    """A table as calicoctl prints it with tablewriter's defaults (wrap=None: no wrapping)."""
    titles = [_title(h) for h in headers]
    cells = [[_wrap(str(c), wrap) for c in row] for row in rows]
    widths = [len(t) for t in titles]
    for row in cells:
        for i, lines in enumerate(row):
            widths[i] = max(widths[i], *(len(line) for line in lines))
    border = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [border, "| " + " | ".join(_center(t, w) for t, w in zip(titles, widths, strict=True)) + " |",
           border]
    for row in cells:
        height = max(len(lines) for lines in row)
        for n in range(height):
            parts = []
            for i, lines in enumerate(row):
                text = lines[n] if n < len(lines) else ""
                numeric = bool(_DECIMAL.match(text) or _PERCENT.match(text))
                parts.append(text.rjust(widths[i]) if numeric else text.ljust(widths[i]))
            out.append("| " + " | ".join(parts) + " |")
    out.append(border)
    return "\n".join(out) + "\n"
