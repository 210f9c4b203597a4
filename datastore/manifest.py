"""Decoding manifests (YAML or JSON, multi-document) into plain documents, strictly.

Owns the one reader of resource manifests, shared by `ctl apply -f` (ctl.manifest)
and the agent's start-up resources (agent.startup_resources). Strict like
calicoctl's YAML reader: duplicate keys are errors; timestamps stay strings.
Defensive against hostile input: a size limit, no YAML aliases (no "billion
laughs"), no binary, bounded depth. Every problem is one ManifestError naming the
source; turning documents into resources is datastore.resources.parse_document.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml

from .errors import DatastoreError

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


def decode_documents(data: bytes, source: str = "input", *,
                     allow_empty: bool = False) -> list[Any]:
    """The documents of a manifest, `kind: List` items expanded. With `allow_empty`, a
    manifest with no documents (blank, only comments or `---`) is [] instead of an error."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"{source} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None
    if "\x00" in text:
        raise ManifestError(f"{source} contains NUL bytes: not a YAML or JSON manifest")
    if not text.strip():
        if allow_empty:
            return []
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
    if not docs and not allow_empty:
        raise ManifestError("No resources specified")
    return _expand_lists(docs)


def _reject_aliases(text: str, source: str) -> None:
    for event in yaml.parse(text, Loader=_StrictLoader):
        if isinstance(event, yaml.AliasEvent):
            line = f" (line {event.start_mark.line + 1})" if event.start_mark else ""
            raise ManifestError(
                f"{source}: YAML aliases (*{event.anchor}) are not supported in manifests{line}")


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


