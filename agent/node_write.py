"""agent.node_write: writing this node's Node resource, for start-up and tunnel addresses.

Owns the Node document helpers (`node_document`, `set_field`, `build_node`)
and `write_node`, the one way the agent writes its Node.

Invariants:
  * A write happens only when the mutated Node differs from the stored one
    (spec, annotations, labels), so a restart with nothing changed writes nothing.
  * Every write is create-if-absent or a compare-and-swap on the
    resourceVersion (datastore.store); a lost race re-reads and re-applies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from datastore.errors import (
    ResourceAlreadyExists,
    ResourceDoesNotExist,
    UpdateConflict,
    ValidationError,
)
from datastore.resources import Node
from datastore.store import ResourceStore

from .errors import NodeWriteError

_log = logging.getLogger(__name__)

WRITE_RETRIES = 10


def node_document(node: Node | None, name: str) -> dict[str, Any]:
    """The stored Node as a mutable document, or a new Node's skeleton."""
    if node is None:
        return {"apiVersion": "projectcalico.org/v3", "kind": "Node",
                "metadata": {"name": name}, "spec": {}}
    return node.dump()


def set_field(d: dict[str, Any], key: str, value: object) -> None:
    """Set `key`, or drop it when the value is empty (as Calico omits empty fields)."""
    if value is None or value == [] or value == {}:
        d.pop(key, None)
    else:
        d[key] = value


def build_node(doc: dict[str, Any]) -> Node:
    """The Node of a mutated document, without the empty sections it may have left."""
    spec = doc.setdefault("spec", {})
    if not spec.get("bgp"):
        spec.pop("bgp", None)
    meta = doc.setdefault("metadata", {})
    if not meta.get("annotations"):
        meta.pop("annotations", None)
    try:
        return Node.model_validate(doc)
    except Exception as exc:  # pydantic ValidationError: a bug or a bad stored value
        raise NodeWriteError(f"cannot build Node {meta.get('name')}: {exc}") from None


def _same(a: Node, b: Node) -> bool:
    return (a.spec.dump() == b.spec.dump()
            and (a.metadata.annotations or {}) == (b.metadata.annotations or {})
            and (a.metadata.labels or {}) == (b.metadata.labels or {}))


def write_node(store: ResourceStore, name: str, mutate: Callable[[Node | None], Node]
               ) -> tuple[Node, bool]:
    """Apply `mutate` to the stored Node and write the result if it differs.

    Create-if-absent for a new Node, compare-and-swap on the resourceVersion
    otherwise; a lost race re-reads and re-applies. Returns (node, written)."""
    for _ in range(WRITE_RETRIES):
        current = store.find(Node, name)
        desired = mutate(current)
        if current is not None and _same(current, desired):
            return current, False
        try:
            if current is None:
                written = store.create(desired)
                _log.info("created Node %s", name)
            else:
                written = store.update(desired)
                _log.info("updated Node %s", name)
            return written, True
        except (UpdateConflict, ResourceAlreadyExists, ResourceDoesNotExist) as exc:
            _log.info("Node %s changed while writing it (%s); retrying", name, exc)
        except ValidationError as exc:
            raise NodeWriteError(f"Node {name} was refused: {exc}") from None
    raise NodeWriteError(f"could not write Node {name}: it changed {WRITE_RETRIES} times in a row")


__all__ = ["WRITE_RETRIES", "build_node", "node_document", "set_field", "write_node"]
