"""Kubernetes label and field selectors, parsed and matched as the API server does.

Owns the two query selectors of a list or watch (`labelSelector`, `fieldSelector`):
parsing their text into requirements and deciding whether an object matches. Pure.

Label selector grammar and meaning follow "Labels and Selectors"
(https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors):
requirements are ANDed, separated by commas; equality-based `=`, `==`, `!=`; set-based
`in (...)`, `notin (...)`, `key` (exists) and `!key` (does not exist). `!=` and `notin` also
match objects that do not have the key at all, as that page says. `>`/`<` (integer
comparison, accepted by the API server's parser) are accepted too.

Field selectors follow "Field Selectors"
(https://kubernetes.io/docs/concepts/overview/working-with-objects/field-selectors/):
`=`, `==`, `!=` only; every resource supports `metadata.name` and `metadata.namespace`;
other fields are resource-specific (here: pods' `spec.nodeName` and `status.phase`), and an
unsupported field is a 400 error, as it is on a real server.

Invariant: a selector that does not parse raises `SelectorError` naming the selector and
what was wrong; nothing is matched against a half-parsed selector.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SelectorError(ValueError):
    """A selector that does not parse (the server answers 400 BadRequest with this text)."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            # "Labels and Selectors": `!=` and `notin` select resources without the key too.
            return not present or value not in self.values
        if not present:
            return False
        try:
            number = int(value or "")
        except ValueError:
            return False
        bound = int(self.values[0])
        return number > bound if self.op == "gt" else number < bound


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        return all(r.matches(labels or {}) for r in self.requirements)


_KEY = r"[A-Za-z0-9](?:[-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_RE = re.compile(rf"^({_KEY})\s+(in|notin)\s*\((.*)\)$")
_CMP_RE = re.compile(rf"^({_KEY})\s*(==|=|!=|>|<)\s*(.*)$")
_EXISTS_RE = re.compile(rf"^(!?)\s*({_KEY})$")
LABEL_VALUE_RE = re.compile(rf"^{_VALUE}$")
LABEL_VALUE_RULE = ("a valid label must be an empty string or consist of alphanumeric characters, "
                    "'-', '_' or '.', and must start and end with an alphanumeric character")


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses: `a in (x,y),b` is two requirements."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _check_value(selector: str, value: str) -> str:
    if len(value) > 63 or not LABEL_VALUE_RE.match(value):
        raise SelectorError(f"unable to parse requirement: invalid label value: {value!r} in "
                            f"selector {selector!r}: {LABEL_VALUE_RULE}")
    return value


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse a `labelSelector` query value; empty selects everything."""
    if not text or not text.strip():
        return LabelSelector(())
    requirements: list[Requirement] = []
    for raw in _split_top_level(text):
        part = raw.strip()
        if not part:
            raise SelectorError(f"found ',', expected: identifier in selector {text!r}")
        if m := _SET_RE.match(part):
            values = tuple(_check_value(text, v.strip()) for v in m.group(3).split(","))
            if values == ("",):
                raise SelectorError(f"for 'in', 'notin' operators, values set can't be empty "
                                    f"in selector {text!r}")
            requirements.append(Requirement(m.group(1), m.group(2), values))
        elif m := _CMP_RE.match(part):
            key, op, value = m.group(1), m.group(2), m.group(3).strip()
            if op in (">", "<"):
                if not re.fullmatch(r"-?[0-9]+", value):
                    raise SelectorError(f"for 'Gt', 'Lt' operators, the value must be an "
                                        f"integer: {value!r} in selector {text!r}")
                requirements.append(Requirement(key, "gt" if op == ">" else "lt", (value,)))
            else:
                requirements.append(Requirement(key, "!=" if op == "!=" else "=",
                                                (_check_value(text, value),)))
        elif m := _EXISTS_RE.match(part):
            requirements.append(Requirement(m.group(2), "!" if m.group(1) else "exists"))
        else:
            raise SelectorError(f"unable to parse requirement: {part!r} in selector {text!r}")
    return LabelSelector(tuple(requirements))


# -- field selectors ------------------------------------------------------------------------

# "Field Selectors": metadata.name and metadata.namespace for every resource; the rest are
# per resource. Pods' spec.nodeName is what a kubelet (and tortie's CNI) selects on.
_FIELDS_BY_RESOURCE: dict[str, tuple[str, ...]] = {
    "pods": ("spec.nodeName", "status.phase"),
}


@dataclass(frozen=True)
class FieldRequirement:
    path: str
    negate: bool
    value: str

    def matches(self, obj: Mapping[str, Any]) -> bool:
        current: Any = obj
        for step in self.path.split("."):
            current = current.get(step) if isinstance(current, Mapping) else None
        actual = "" if current is None else str(current)
        return (actual != self.value) if self.negate else (actual == self.value)


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...]

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all(r.matches(obj) for r in self.requirements)


_FIELD_RE = re.compile(r"^([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)$")


def parse_field_selector(text: str | None, resource: str) -> FieldSelector:
    """Parse a `fieldSelector` for `resource` (a plural resource name such as `pods`)."""
    if not text or not text.strip():
        return FieldSelector(())
    supported = ("metadata.name", "metadata.namespace", *_FIELDS_BY_RESOURCE.get(resource, ()))
    requirements: list[FieldRequirement] = []
    for raw in text.split(","):
        m = _FIELD_RE.match(raw.strip())
        if not m:
            raise SelectorError(f"invalid selector: {raw.strip()!r}; can't understand "
                                f"{text!r}")
        path, op, value = m.group(1), m.group(2), m.group(3).strip()
        if path not in supported:
            raise SelectorError(
                f"field label not supported: {path!r} for {resource} "
                f"(supported: {', '.join(supported)})")
        requirements.append(FieldRequirement(path, op == "!=", value))
    return FieldSelector(tuple(requirements))
