"""Resources seen as Go values, for `-o go-template`: field access by Go name and fmt's %v.

calicoctl executes a user's template on Go structs (`[]runtime.Object` holding
`*v3.IPPool`, `*v3.IPPoolList`, ...), so `.Spec.CIDR` names the Go field, a field the
JSON leaves out is still there with its zero value, and printing follows fmt's %v.
This module owns that view: `GoValue` wraps a resource's JSON document with its Go type
(from ctl/gofields.py, generated from Calico's Go sources), `field` resolves a Go field
name (promoted fields of embedded structs too, as Go does), and `format_v` prints as
fmt.Fprint does inside text/template.

Invariants: values are immutable and built lazily from the JSON; nothing here reads the
datastore. What Go would print as a memory address (a non-nil pointer inside a printed
struct or slice) cannot be reproduced and raises GoValueError instead of printing
something else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from datastore.resources.policy import go_float

from .gofields import NAMED, STRUCTS

Kind = Literal["struct", "ptr", "iface", "slice", "map", "string", "int", "uint", "float",
               "bool", "time", "stringer", "opaque", "invalid"]

_INTS = {"int", "int8", "int16", "int32", "int64"}
_UINTS = {"uint", "uint8", "uint16", "uint32", "uint64", "byte"}
# External types whose fmt output is their String() method: what their JSON holds.
_STRINGERS = {"numorstring.Port", "numorstring.Protocol", "metav1.Duration"}
# Kubernetes types that hold nothing but a string.
_STRING_TYPES = {"types.UID"}


class GoValueError(ValueError):
    """A value that cannot be evaluated or printed the way Go would."""


@dataclass(frozen=True)
class GoValue:
    """A Go value: its type as Go names it (`*v3.IPPool`, `[]string`), its kind and data.

    struct: the JSON object; ptr/iface: the GoValue pointed to, or None for nil;
    slice: a tuple of GoValues or None (nil); map: a dict of GoValues or None (nil);
    scalars: the Python value; time: the RFC 3339 text ("" for the zero time);
    stringer: the text String() returns; opaque: the raw JSON; invalid: `<no value>`."""

    type: str
    kind: Kind
    value: Any = None


NO_VALUE = GoValue("", "invalid")
# What `<no value>` is in range and if: Go's invalid reflect.Value.


def _split_map(type_expr: str) -> tuple[str, str]:
    depth = 0
    for i in range(3, len(type_expr)):
        depth += {"[": 1, "]": -1}.get(type_expr[i], 0)
        if depth == 0:
            return type_expr[4:i], type_expr[i + 1:]
    raise GoValueError(f"bad map type {type_expr}")


def map_elem_type(type_expr: str) -> str:
    return _split_map(type_expr)[1]


def wrap(type_expr: str, raw: Any, as_type: str | None = None) -> GoValue:
    """The Go value of type `type_expr` that JSON `raw` decodes into (None: the zero value)."""
    name = as_type or type_expr
    if type_expr.startswith("*"):
        return GoValue(name, "ptr", None if raw is None else wrap(type_expr[1:], raw))
    if type_expr.startswith("[]"):
        if raw is None:
            return GoValue(name, "slice", None)
        return GoValue(name, "slice", tuple(wrap(type_expr[2:], x) for x in raw))
    if type_expr.startswith("map["):
        if raw is None:
            return GoValue(name, "map", None)
        elem = map_elem_type(type_expr)
        return GoValue(name, "map", {str(k): wrap(elem, v) for k, v in raw.items()})
    if type_expr in STRUCTS:
        return GoValue(name, "struct", raw if isinstance(raw, dict) else {})
    if type_expr in NAMED:
        return wrap(NAMED[type_expr], raw, as_type=name)
    if type_expr == "string" or type_expr in _STRING_TYPES:
        return GoValue(name, "string", "" if raw is None else str(raw))
    if type_expr == "bool":
        return GoValue(name, "bool", bool(raw))
    if type_expr in _INTS:
        return GoValue(name, "int", int(raw or 0))
    if type_expr in _UINTS or type_expr == "numorstring.ASNumber":
        return GoValue(name, "uint", int(raw or 0))
    if type_expr in ("float32", "float64"):
        return GoValue(name, "float", float(raw or 0))
    if type_expr == "metav1.Time":
        return GoValue(name, "time", raw or "")
    if type_expr in _STRINGERS:
        text = "" if raw is None else str(raw)
        return GoValue(name, "stringer", text or ("0s" if type_expr == "metav1.Duration" else ""))
    return GoValue(name, "opaque", raw)


def go_type_of(kind: str) -> str:
    """The Go type calicoctl holds a kind in (`IPPool` -> `v3.IPPool`; Node and
    WorkloadEndpoint live in libcalico-go's internalapi package)."""
    for name in (f"v3.{kind}", f"internalapi.{kind}"):
        if name in STRUCTS:
            return name
    raise GoValueError(f"no Go type known for kind {kind}")


def resource_value(go_type: str, document: dict[str, Any]) -> GoValue:
    """A resource as calicoctl hands it to the template: a runtime.Object interface holding
    a pointer to the Go struct."""
    return GoValue("runtime.Object", "iface", GoValue("*" + go_type, "ptr",
                                                       wrap(go_type, document)))


def objects(values: list[GoValue]) -> GoValue:
    """calicoctl's `[]runtime.Object`, the value a template is executed on."""
    return GoValue("[]runtime.Object", "slice", tuple(values))


def indirect(v: GoValue) -> tuple[GoValue, bool]:
    """Through pointers and interfaces, as text/template's indirect: (value, is nil)."""
    while v.kind in ("ptr", "iface"):
        if v.value is None:
            return v, True
        v = v.value
    return v, False


def _json_key(data: dict[str, Any], json_name: str) -> Any:
    if json_name == "":
        return data  # inline embedding: the same JSON object
    if json_name == "-":
        return None
    return data.get(json_name)


def struct_field(v: GoValue, name: str) -> GoValue | None:
    """Go's FieldByName on a struct value: its own fields first, then promoted ones of
    embedded structs, shallowest first. None when the struct has no such field."""
    level = [v]
    while level:
        embedded: list[GoValue] = []
        for sv in level:
            for go_name, json_name, typ, is_embedded in STRUCTS[sv.type]:
                sub = _json_key(sv.value, json_name)
                if go_name == name:
                    return wrap(typ, sub)
                if is_embedded and typ in STRUCTS:
                    embedded.append(wrap(typ, sub))
        level = embedded
    return None


def truth(v: GoValue) -> bool:
    """text/template's truth: false, 0, nil, empty string/slice/map are false."""
    if v.kind == "invalid":
        return False
    if v.kind in ("ptr", "iface"):
        return v.value is not None
    if v.kind in ("slice", "map"):
        return bool(v.value)
    if v.kind in ("struct", "opaque"):
        return True
    if v.kind == "time":
        return True  # a struct
    return bool(v.value)


def _go_time(text: str) -> str:
    """time.Time's String(): `2006-01-02 15:04:05.999999999 -0700 MST`."""
    if not text:
        return "0001-01-01 00:00:00 +0000 UTC"
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    frac = f".{when.microsecond:06d}".rstrip("0") if when.microsecond else ""
    offset = when.strftime("%z") or "+0000"
    zone = "UTC" if offset == "+0000" else offset
    return when.strftime("%Y-%m-%d %H:%M:%S") + frac + f" {offset} {zone}"


def format_v(v: GoValue) -> str:
    """What text/template prints for a value: a pointer is followed first (printableValue),
    then fmt's %v."""
    if v.kind == "ptr":
        v, _ = indirect(v)
    return fmt_v(v, 0)


def fmt_v(v: GoValue, depth: int) -> str:
    """fmt's %v at `depth` (0: the operand itself; more: inside a struct, slice or map)."""
    if v.kind == "invalid":
        return "<no value>"
    if v.kind == "iface":
        return "<nil>" if v.value is None else fmt_v(v.value, depth)
    if v.kind == "ptr":
        if v.value is None:
            return "<nil>"
        target = v.value
        if target.kind in ("time", "stringer") or target.type == "numorstring.ASNumber":
            return fmt_v(target, depth)  # fmt calls String() through the pointer
        if depth == 0 and target.kind in ("struct", "slice", "map"):
            return "&" + fmt_v(target, depth + 1)
        raise GoValueError(f"cannot print a {v.type} inside a value (Go prints its memory "
                           "address); print the field itself")
    if v.kind == "struct":
        fields = STRUCTS[v.type]
        parts = [fmt_v(wrap(typ, _json_key(v.value, json_name)), depth + 1)
                 for _, json_name, typ, _ in fields]
        return "{" + " ".join(parts) + "}"
    if v.kind == "slice":
        return "[" + " ".join(fmt_v(x, depth + 1) for x in v.value or ()) + "]"
    if v.kind == "map":
        items = sorted((v.value or {}).items())
        return "map[" + " ".join(f"{k}:{fmt_v(x, depth + 1)}" for k, x in items) + "]"
    if v.kind == "bool":
        return "true" if v.value else "false"
    if v.kind == "float":
        return go_float(v.value)
    if v.kind == "time":
        return _go_time(v.value)
    if v.kind == "opaque":
        raise GoValueError(f"cannot print a {v.type}: ctl does not know its Go form")
    return str(v.value)


def go_quote(text: str) -> str:
    """strconv.Quote for printable text (%q)."""
    return json.dumps(text, ensure_ascii=False)
