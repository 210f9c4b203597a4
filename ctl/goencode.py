"""calicoctl's `-o json` and `-o yaml` encoders, byte for byte.

calicoctl prints resources with Go's `json.MarshalIndent(v, "", "  ")` and with
`sigs.k8s.io/yaml.Marshal`, which marshals to JSON first and re-encodes that with
go-yaml v2 (calicoctl/calicoctl/commands/common/printer.go). What that means, and
what this module reproduces from plain Python data (dicts in the Go struct's field
order, as the resource models dump them):

* JSON keeps the dict order; `<`, `>`, `&`, U+2028 and U+2029 are escaped as
  `\\u003c`-style sequences (Go's HTML-safe default); floats are written as Go
  writes a float64 (`100`, not `100.0`); and no newline follows the last `}`.
* YAML sorts every mapping's keys in go-yaml v2's order (`sorter.go` keyList.Less:
  a letter after a non-letter, digit runs compared as numbers); a string that
  go-yaml would read back as something else (`"9"`, `"true"`, `"y"`, a timestamp)
  is double-quoted, a string holding a newline is a literal block, other strings are
  plain where libyaml allows it (single-quoted where it does not). Floats are
  Go's `strconv.FormatFloat(f, 'g', -1, 64)`, after the round trip through JSON.

PyYAML's emitter and go-yaml's are both ports of libyaml, so indentation, line
folding at 80 columns and the choice between plain and single-quoted scalars are the
same; only the representer (which strings need quotes, which quotes) is Go's here.
Everything is pure: data in, text out.
"""

from __future__ import annotations

import functools
import json
import math
import re
from decimal import Decimal
from typing import Any

import yaml

from datastore.resources.policy import go_float

_STR_TAG = "tag:yaml.org,2002:str"

# go-yaml v2 resolve.go: the plain scalars that read back as something other than a string.
_RESOLVE_MAP = frozenset([
    "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON",
    "n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF",
    "", "~", "null", "Null", "NULL",
    ".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF",
    "-.inf", "-.Inf", "-.INF", "<<",
])
_YAML_STYLE_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
# strconv.ParseInt/ParseUint(s, 0, 64) syntax (range aside): sign, then 0x / 0o / 0b / 0
# (octal) prefixes or decimal digits.
_GO_INT = re.compile(r"^[-+]?(0[xX][0-9a-fA-F]+|0[oO]?[0-7]+|0[bB][01]+|[1-9][0-9]*|0)$")
# strconv.ParseFloat accepts more than yamlStyleFloat for '.'-led text: ".5", ".5e3".
_DOT_FLOAT = re.compile(r"^\.[0-9]+([eE][-+]?[0-9]+)?$")
_BASE60_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")
# go-yaml's parseTimestamp: the year is exactly 4 digits, then time.Parse with
# "2006-1-2T15:4:5.999999999Z07:00", "2006-1-2t15:4:5.999999999Z07:00",
# "2006-1-2 15:4:5.999999999" or "2006-1-2".
_TIMESTAMP = re.compile(
    r"^(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:(?:[Tt](\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2}))"
    r"|(?: (\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.\d{1,9})?))?$")


def _is_timestamp(text: str) -> bool:
    m = _TIMESTAMP.match(text)
    if not m:
        return False
    month, day = int(m[2]), int(m[3])
    hms = [int(g) for g in (m[4] or m[7], m[5] or m[8], m[6] or m[9]) if g is not None]
    in_range = 1 <= month <= 12 and 1 <= day <= 31
    return in_range and (not hms or (hms[0] <= 23 and hms[1] <= 59 and hms[2] <= 59))


def go_yaml_plain_is_string(text: str) -> bool:
    """Whether go-yaml v2 reads `text`, written plain, back as a string (resolve.go), and
    does not hold it for a base-60 float (encode.go isBase60Float)."""
    if text in _RESOLVE_MAP:
        return False
    first = text[0]
    if first == ".":
        return not _DOT_FLOAT.match(text)
    if first in "+-0123456789":
        if _is_timestamp(text):
            return False
        plain = text.replace("_", "")
        if _GO_INT.match(plain) or _YAML_STYLE_FLOAT.match(plain):
            return False
        if re.match(r"^-?0b[01]+$", plain):
            return False
        return not (":" in text and _BASE60_FLOAT.match(text))
    return True


def go_key_less(a: str, b: str) -> bool:
    """go-yaml v2's map key order for two strings (sorter.go keyList.Less)."""
    for i in range(min(len(a), len(b))):
        if a[i] == b[i]:
            continue
        al, bl = a[i].isalpha(), b[i].isalpha()
        if al and bl:
            return a[i] < b[i]
        if al or bl:
            return bl
        an = bn = 0
        if a[i] == "0" or b[i] == "0":
            j = i - 1
            while j >= 0 and a[j].isdigit():
                if a[j] != "0":
                    an = bn = 1
                    break
                j -= 1
        ai = i
        while ai < len(a) and a[ai].isdigit():
            an = an * 10 + int(a[ai])
            ai += 1
        bi = i
        while bi < len(b) and b[bi].isdigit():
            bn = bn * 10 + int(b[bi])
            bi += 1
        if an != bn:
            return an < bn
        if ai != bi:
            return ai < bi
        return a[i] < b[i]
    return len(a) < len(b)


def _key_order(a: str, b: str) -> int:
    return -1 if go_key_less(a, b) else (1 if go_key_less(b, a) else 0)


def _shortest(value: float) -> tuple[str, str, int]:
    """Sign, shortest round-trip digits and decimal exponent of a finite, non-zero float."""
    sign, digit_tuple, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple))
    return ("-" if sign else ""), digits, len(digits) + exponent - 1


def _exponent_form(digits: str, exp: int) -> str:
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"


def _fixed_form(value: float) -> str:
    return format(Decimal(repr(abs(value))).normalize(), "f")


def go_float_json(value: float) -> str:
    """A float64 as encoding/json writes it: shortest digits, fixed form for 1e-6 <= |v| <
    1e21, else exponent form with a short negative exponent (1e-07 becomes 1e-7)."""
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"json: unsupported value: {value}")
    if value == 0:
        return "0"
    sign, digits, exp = _shortest(value)
    if 1e-6 <= abs(value) < 1e21:
        return sign + _fixed_form(value)
    return sign + re.sub(r"e-0(\d)$", r"e-\1", _exponent_form(digits, exp))


def go_float_g(value: float) -> str:
    """A float as go-yaml writes it: strconv.FormatFloat(v, 'g', -1, 64), the same as
    fmt's %v, with YAML's names for the infinities and NaN."""
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    return go_float(value)


def _json_string(text: str) -> str:
    return (json.dumps(text, ensure_ascii=False).replace("<", "\\u003c")
            .replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _json(value: Any, indent: str) -> str:
    inner = indent + "  "
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{_json_string(str(k))}: {_json(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        return "[\n" + ",\n".join(inner + _json(v, inner) for v in value) + "\n" + indent + "]"
    if isinstance(value, str):
        return _json_string(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float_json(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def go_json(value: Any) -> str:
    """json.MarshalIndent(value, "", "  "), as calicoctl writes it (no final newline)."""
    return _json(value, "")


def _through_json(value: Any) -> Any:
    """What go-yaml sees after sigs.k8s.io/yaml's JSON round trip: a float64 that JSON
    writes without a fraction or exponent (100, 1000000) comes back as an int."""
    if isinstance(value, dict):
        return {k: _through_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_through_json(v) for v in value]
    if isinstance(value, float) and not isinstance(value, bool):
        text = go_float_json(value)
        return int(text) if re.fullmatch(r"-?\d+", text) else float(text)
    return value


class _GoYamlDumper(yaml.SafeDumper):
    """PyYAML's emitter with go-yaml v2's representer and resolver."""

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode and implicit[0] and isinstance(value, str) \
                and not go_yaml_plain_is_string(value):
            # Not a string to go-yaml: the same answer the representer gave for it
            # (int, bool, null, float written plain), or a quoted string.
            return "tag:yaml.org,2002:go-typed"
        if kind is yaml.ScalarNode:
            return _STR_TAG
        return "tag:yaml.org,2002:seq" if kind is yaml.SequenceNode else "tag:yaml.org,2002:map"

    def check_simple_key(self) -> bool:
        # libyaml as go-yaml ports it takes any one-line scalar of up to 128 characters as
        # a simple key, the empty one too (`"": 1`); PyYAML's port refuses empty ones.
        if isinstance(self.event, yaml.ScalarEvent):
            if self.analysis is None:
                self.analysis = self.analyze_scalar(self.event.value)
            return not self.analysis.multiline and len(self.analysis.scalar) <= 128
        return bool(super().check_simple_key())


def _represent_str(dumper: _GoYamlDumper, text: str) -> yaml.ScalarNode:
    if "\n" in text:
        style: str | None = "|"
    elif go_yaml_plain_is_string(text):
        style = None  # plain, or single-quoted where libyaml cannot write it plain
    else:
        style = '"'
    return dumper.represent_scalar(_STR_TAG, text, style=style)


def _represent_dict(dumper: _GoYamlDumper, data: dict[str, Any]) -> yaml.MappingNode:
    keys = sorted(data, key=functools.cmp_to_key(_key_order))
    return dumper.represent_mapping("tag:yaml.org,2002:map", [(k, data[k]) for k in keys])


_GoYamlDumper.add_representer(str, _represent_str)
_GoYamlDumper.add_representer(dict, _represent_dict)
_GoYamlDumper.add_representer(
    bool, lambda d, v: d.represent_scalar("tag:yaml.org,2002:go-typed", "true" if v else "false"))
_GoYamlDumper.add_representer(
    type(None), lambda d, v: d.represent_scalar("tag:yaml.org,2002:go-typed", "null"))
_GoYamlDumper.add_representer(
    int, lambda d, v: d.represent_scalar("tag:yaml.org,2002:go-typed", str(v)))
_GoYamlDumper.add_representer(
    float, lambda d, v: d.represent_scalar("tag:yaml.org,2002:go-typed", go_float_g(v)))


def go_yaml(value: Any) -> str:
    """sigs.k8s.io/yaml.Marshal(value), as calicoctl writes it."""
    text = yaml.dump(_through_json(value), Dumper=_GoYamlDumper, default_flow_style=False,
                     allow_unicode=True, sort_keys=False, width=80)
    assert isinstance(text, str)
    # PyYAML ends a lone scalar document with "...", go-yaml does not (`null` for no items).
    return text.removesuffix("...\n")
