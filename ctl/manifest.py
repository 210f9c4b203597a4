"""Reading manifests (`-f FILE` / `-f -`) into validated resources, all or nothing.

Strict like calicoctl's YAML reader: duplicate keys, unknown fields and wrong
types are errors; timestamps stay strings. Defensive against hostile input:
a size limit, no YAML aliases (no "billion laughs"), no binary, bounded depth.
Every problem becomes one ManifestError naming the document and the field.

Plain Kubernetes objects (networking.k8s.io/v1 NetworkPolicy, v1 Namespace,
v1 ServiceAccount) are converted to the Calico documents calico-kube-controllers
would store in etcd mode (policy.k8s) and then validated like any other.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

import yaml

from datastore.errors import DatastoreError, ParseError, ValidationError
from datastore.resources import Resource, parse_document
from policy.k8s import KubernetesObjectError, kubernetes_object_to_calico

MAX_MANIFEST_BYTES = 4 * 1024 * 1024


class ManifestError(DatastoreError):
    """A manifest could not be read; nothing has been written."""


class _StrictLoader(yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader):  # type: ignore[misc]
    pass


# Keep dates as the strings the user wrote (creationTimestamp etc. are strings in Calico).
_StrictLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise ManifestError(f"mapping key {key!r} must be a string (line {key_node.start_mark.line + 1})")
        if key in mapping:
            raise ManifestError(
                f"duplicate field '{key}' (line {key_node.start_mark.line + 1})"
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@dataclass(frozen=True)
class Manifest:
    source: str
    resources: list[Resource]


def read_source(path: str) -> bytes:
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_MANIFEST_BYTES + 1)
        else:
            with open(path, "rb") as fh:
                data = fh.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(
            f"{'standard input' if path == '-' else path} is larger than the "
            f"{MAX_MANIFEST_BYTES // (1024 * 1024)} MiB manifest limit"
        )
    return data


def decode_documents(data: bytes, source: str = "input") -> list[Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"{source} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None
    if "\x00" in text:
        raise ManifestError(f"{source} contains NUL bytes: not a YAML or JSON manifest")
    if not text.strip():
        raise ManifestError("No resources specified")
    stripped = text.lstrip()
    docs: list[Any]
    if stripped[:1] in "{[":
        try:
            parsed = json.loads(text)
            docs = parsed if isinstance(parsed, list) else [parsed]
            return _expand_lists(docs)
        except json.JSONDecodeError:
            pass  # flow-style YAML also starts with { or [; fall through
        except RecursionError:
            raise ManifestError(f"{source} is nested too deeply") from None
    try:
        _reject_aliases(text, source)
        docs = [d for d in yaml.load_all(text, Loader=_StrictLoader) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source}: invalid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise ManifestError(f"{source} is nested too deeply") from None
    if not docs:
        raise ManifestError("No resources specified")
    return _expand_lists(docs)


def _reject_aliases(text: str, source: str) -> None:
    for event in yaml.parse(text, Loader=_StrictLoader):
        if isinstance(event, yaml.AliasEvent):
            raise ManifestError(
                f"{source}: YAML aliases (*{event.anchor}) are not supported in manifests "
                f"(line {event.start_mark.line + 1})"
            )


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return str(problem)


def _expand_lists(docs: list[Any]) -> list[Any]:
    """`kind: List` / `kind: IPPoolList` documents contribute their items."""
    out: list[Any] = []
    for doc in docs:
        if isinstance(doc, dict) and isinstance(doc.get("kind"), str) and doc["kind"].endswith("List"):
            items = doc.get("items")
            if not isinstance(items, list):
                raise ManifestError(f"{doc['kind']} has no 'items' list")
            out.extend(items)
        else:
            out.append(doc)
    return out


def load_manifest(path: str, default_namespace: str = "default") -> Manifest:
    """Read, decode and validate every document; raise on the first bad one.

    `default_namespace` is where a namespaced Kubernetes object without one goes.
    """
    source = "standard input" if path == "-" else path
    docs = decode_documents(read_source(path), source)
    resources: list[Resource] = []
    seen: dict[tuple[str, str | None, str], int] = {}
    for index, doc in enumerate(docs, start=1):
        where = f"document {index}" if len(docs) > 1 else ""
        try:
            res = parse_document(_calico_document(doc, default_namespace))
        except ValidationError as exc:
            raise _located(exc, where) from None
        except KubernetesObjectError as exc:
            raise ManifestError(f"{where + ': ' if where else ''}{exc}") from None
        ident = (res.kind_name, res.namespace, res.name)
        if ident in seen:
            raise ManifestError(
                f"{where + ': ' if where else ''}duplicate {res.kind_name} name '{res.name}' "
                f"(also in document {seen[ident]})"
            )
        seen[ident] = index
        resources.append(res)
    return Manifest(source, resources)


def _calico_document(doc: Any, default_namespace: str) -> Any:
    """The document itself, or for a Kubernetes object the Calico document it becomes."""
    if isinstance(doc, dict):
        converted = kubernetes_object_to_calico(doc, default_namespace=default_namespace)
        if converted is not None:
            return converted
    return doc


def _located(exc: ValidationError, where: str) -> ValidationError:
    if not where:
        return exc
    cls = ParseError if isinstance(exc, ParseError) else ValidationError
    located = cls(f"{where}: {exc}")
    located.fields = exc.fields
    return located
