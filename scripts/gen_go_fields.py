"""Generate ctl/gofields.py: the Go struct fields of Calico's v3 resource types.

`ctl get -o go-template=...` addresses fields by their Go names (`.Spec.CIDR`), so the
printer needs, per Go struct, each field's Go name, JSON name and Go type. They are read
from the Go sources in a Calico checkout (or its bare mirror, through `git show`):

    api/pkg/apis/projectcalico/v3/*.go          package v3
    libcalico-go/lib/apis/internalapi/*.go      package internalapi (Node, WorkloadEndpoint)

The Kubernetes meta types (TypeMeta, ObjectMeta, ListMeta) are not in that tree; their
fields are written out below from k8s.io/apimachinery/pkg/apis/meta/v1/types.go.

    python scripts/gen_go_fields.py --mirror /path/to/calico.git > ctl/gofields.py

tests/unit/test_ctl_gotemplate.py checks that the checked-in table equals this script's
output when the mirror is present.
"""

from __future__ import annotations

import argparse
import pprint
import re
import subprocess
import sys

SOURCES = {
    "api/pkg/apis/projectcalico/v3": "v3",
    "libcalico-go/lib/apis/internalapi": "internalapi",
}
IMPORT_PACKAGES = {
    "github.com/projectcalico/api/pkg/apis/projectcalico/v3": "v3",
    "k8s.io/apimachinery/pkg/apis/meta/v1": "metav1",
    "github.com/projectcalico/api/pkg/lib/numorstring": "numorstring",
}
GO_BUILTINS = {
    "string", "bool", "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16",
    "uint32", "uint64", "float32", "float64", "byte", "rune", "any",
}

# k8s.io/apimachinery/pkg/apis/meta/v1/types.go (go name, json name, type, embedded)
META = {
    "metav1.TypeMeta": (
        ("Kind", "kind", "string", False),
        ("APIVersion", "apiVersion", "string", False),
    ),
    "metav1.ListMeta": (
        ("SelfLink", "selfLink", "string", False),
        ("ResourceVersion", "resourceVersion", "string", False),
        ("Continue", "continue", "string", False),
        ("RemainingItemCount", "remainingItemCount", "*int64", False),
    ),
    "metav1.ObjectMeta": (
        ("Name", "name", "string", False),
        ("GenerateName", "generateName", "string", False),
        ("Namespace", "namespace", "string", False),
        ("SelfLink", "selfLink", "string", False),
        ("UID", "uid", "types.UID", False),
        ("ResourceVersion", "resourceVersion", "string", False),
        ("Generation", "generation", "int64", False),
        ("CreationTimestamp", "creationTimestamp", "metav1.Time", False),
        ("DeletionTimestamp", "deletionTimestamp", "*metav1.Time", False),
        ("DeletionGracePeriodSeconds", "deletionGracePeriodSeconds", "*int64", False),
        ("Labels", "labels", "map[string]string", False),
        ("Annotations", "annotations", "map[string]string", False),
        ("OwnerReferences", "ownerReferences", "[]metav1.OwnerReference", False),
        ("Finalizers", "finalizers", "[]string", False),
        ("ManagedFields", "managedFields", "[]metav1.ManagedFieldsEntry", False),
    ),
}

_STRUCT_RE = re.compile(r"^type (\w+) struct \{\s*$")
_NAMED_RE = re.compile(r"^type (\w+) (\*?[\w.\[\]]+)\s*(//.*)?$")
_FIELD_RE = re.compile(r"^([A-Z]\w*(?:\s*,\s*\w+)*)\s+([^`\s]+)\s*(`[^`]*`)?")
_EMBED_RE = re.compile(r"^(\*?[\w.]+)\s*(`[^`]*`)?\s*(//.*)?$")
_IMPORT_RE = re.compile(r'^\s*(\w+\s+)?"([^"]+)"')


def _qualify(expr: str, pkg: str, aliases: dict[str, str]) -> str:
    """A Go type expression with every named type package-qualified (`*NodeBGPSpec` ->
    `*internalapi.NodeBGPSpec`, `apiv3.Rule` -> `v3.Rule`)."""
    if expr.startswith("*"):
        return "*" + _qualify(expr[1:], pkg, aliases)
    if expr.startswith("[]"):
        return "[]" + _qualify(expr[2:], pkg, aliases)
    if expr.startswith("map["):
        depth, i = 0, 3
        for i in range(3, len(expr)):
            depth += {"[": 1, "]": -1}.get(expr[i], 0)
            if depth == 0:
                break
        return f"map[{_qualify(expr[4:i], pkg, aliases)}]{_qualify(expr[i + 1:], pkg, aliases)}"
    if "." in expr:
        alias, _, name = expr.partition(".")
        return f"{aliases.get(alias, alias)}.{name}"
    return expr if expr in GO_BUILTINS else f"{pkg}.{expr}"


def _json_name(tag: str | None, go_name: str) -> str:
    match = re.search(r'json:"([^"]*)"', tag or "")
    if not match:
        return go_name  # encoding/json's default: the Go name
    name = match.group(1).split(",")[0]
    return name


def parse_go(text: str, pkg: str, structs: dict[str, tuple[tuple[str, str, str, bool], ...]],
             named: dict[str, str]) -> None:
    """Add the struct and named types of one Go file."""
    aliases: dict[str, str] = {}
    for line in text.splitlines():
        m = _IMPORT_RE.match(line)
        if m and m.group(2) in IMPORT_PACKAGES:
            aliases[(m.group(1) or m.group(2).rsplit("/", 1)[-1]).strip()] = (
                IMPORT_PACKAGES[m.group(2)])
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _STRUCT_RE.match(line)
        if m:
            fields: list[tuple[str, str, str, bool]] = []
            i += 1
            while not lines[i].startswith("}"):
                body = lines[i].strip()
                i += 1
                if not body or body.startswith("//"):
                    continue
                em = _EMBED_RE.match(body)
                if em and not _FIELD_RE.match(body):
                    typ = _qualify(em.group(1), pkg, aliases)
                    go_name = typ.lstrip("*").rsplit(".", 1)[-1]
                    fields.append((go_name, _json_name(em.group(2), go_name), typ, True))
                    continue
                fm = _FIELD_RE.match(body)
                if fm:
                    typ = _qualify(fm.group(2), pkg, aliases)
                    for go_name in (n.strip() for n in fm.group(1).split(",")):
                        fields.append((go_name, _json_name(fm.group(3), go_name), typ, False))
            structs[f"{pkg}.{m.group(1)}"] = tuple(fields)
            continue
        nm = _NAMED_RE.match(line)
        if nm and nm.group(2) != "struct":
            named[f"{pkg}.{nm.group(1)}"] = _qualify(nm.group(2), pkg, aliases)
        i += 1


def _git(mirror: str, *args: str) -> str:
    return subprocess.run(["git", "-C", mirror, *args], check=True, capture_output=True,
                          text=True).stdout


def generate(mirror: str) -> str:
    """The text of ctl/gofields.py from a Calico git repository (bare or not) at HEAD."""
    structs: dict[str, tuple[tuple[str, str, str, bool], ...]] = dict(META)
    named: dict[str, str] = {}
    for directory, pkg in SOURCES.items():
        for path in sorted(_git(mirror, "ls-tree", "--name-only", "HEAD", directory + "/")
                           .split()):
            base = path.rsplit("/", 1)[-1]
            if not base.endswith(".go") or base.endswith("_test.go") or base.startswith("zz_"):
                continue
            parse_go(_git(mirror, "show", f"HEAD:{path}"), pkg, structs, named)
    commit = _git(mirror, "rev-parse", "HEAD").strip()
    return (
        '"""Go struct fields of Calico\'s v3 resource types, for `-o go-template`.\n\n'
        "Generated by scripts/gen_go_fields.py from Calico commit\n"
        f"{commit}; do not edit.\n"
        "STRUCTS: Go type -> (Go name, JSON name, Go type, embedded) per field, in order;\n"
        'a JSON name of "" is an inline embedding (the same JSON object), "-" is never in JSON.\n'
        'NAMED: a named non-struct type -> its underlying type.\n"""\n\n'
        "STRUCTS: dict[str, tuple[tuple[str, str, str, bool], ...]] = "
        + pprint.pformat(structs, width=100, sort_dicts=True) + "\n\n"
        "NAMED: dict[str, str] = " + pprint.pformat(named, width=100, sort_dicts=True) + "\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", required=True, help="a Calico git repository")
    args = parser.parse_args()
    sys.stdout.write(generate(args.mirror))
    return 0


if __name__ == "__main__":
    sys.exit(main())
