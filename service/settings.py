"""Parsing the values of environment settings, as Calico's programs read them.

Owns the parsers shared by every long-running tortie program (the agent, the
kube-controllers): Go durations and Felix's boolean words. Pure: str in, value
out, InvalidSetting (a ValueError) with the reason on bad input; the caller
names the variable.
"""

from __future__ import annotations

import math
import re

__all__ = [
    "InvalidSetting", "non_negative_duration", "parse_bool", "parse_duration",
    "positive_duration",
]


class InvalidSetting(ValueError):
    """Raised by a setting's parser; the program's loader names the variable in its error.

    `whole`: the reason is already a complete message naming variable and value
    (Calico's own wording), used as the ConfigError text unchanged."""

    def __init__(self, reason: str, whole: bool = False) -> None:
        super().__init__(reason)
        self.whole = whole


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
                 "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds from a Go duration ("1m30s", "250ms") or a plain number of seconds ("90")."""
    raw = text.strip()
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise InvalidSetting("not a finite duration")
        return value
    sign = 1.0
    body = raw
    if body and body[0] in "+-":
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if not body:
        raise InvalidSetting("not a duration (use e.g. 60s, 1m30s, or plain seconds)")
    total, pos = 0.0, 0
    for m in _DURATION_PART.finditer(body):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(body) or pos == 0:
        raise InvalidSetting("not a duration (use e.g. 60s, 1m30s, or plain seconds)")
    return sign * total


_TRUE = ("true", "1", "yes", "y", "t")
_FALSE = ("false", "0", "no", "n", "f")


def parse_bool(text: str) -> bool:
    """Felix's boolean words (case-insensitive); anything else is refused."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise InvalidSetting("not a boolean (use true or false)")


def non_negative_duration(text: str) -> float:
    value = parse_duration(text)
    if value < 0:
        raise InvalidSetting("must not be negative")
    return value


def positive_duration(text: str) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise InvalidSetting("must be greater than zero")
    return value
