"""The v3 resource kinds tortie stores, and turning documents into them.

`parse_document` is the single entry from untrusted input (a manifest, an
etcd value written by someone else) to a validated Resource; it raises
ParseError / ValidationError with Calico's wording and never anything else.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError as PydanticValidationError

from ..errors import ParseError, ValidationError
from ..syncer import Update
from .base import API_VERSION, ObjectMeta, Resource, check_name, errors_from_pydantic
from .bgp import DEFAULT_AS_NUMBER, BGPConfiguration, BGPPeer
from .ipamconfig import IPAMConfiguration
from .ippool import IPPool
from .node import Node
from .policy import (
    GlobalNetworkPolicy,
    GlobalNetworkSet,
    NetworkPolicy,
    NetworkSet,
    Profile,
    Tier,
)
from .workloadendpoint import WorkloadEndpoint

KINDS: dict[str, type[Resource]] = {
    cls.kind_name: cls for cls in (IPPool, Node, BGPPeer, BGPConfiguration, IPAMConfiguration,
                               WorkloadEndpoint, NetworkPolicy, GlobalNetworkPolicy, Tier,
                               Profile, NetworkSet, GlobalNetworkSet)
}
_BY_ALIAS = {alias: cls for cls in KINDS.values() for alias in (*cls.aliases, cls.kind_name.lower())}

__all__ = [
    "API_VERSION", "DEFAULT_AS_NUMBER", "KINDS", "BGPConfiguration", "BGPPeer",
    "GlobalNetworkPolicy", "GlobalNetworkSet", "IPAMConfiguration", "IPPool", "NetworkPolicy",
    "NetworkSet", "Node", "ObjectMeta", "Profile", "Resource", "Tier", "kind_for",
    "stored_update",
    "parse_document", "register", "WorkloadEndpoint",
]


def register(cls: type[Resource]) -> type[Resource]:
    """Add a kind (later packages add e.g. WorkloadEndpoint)."""
    KINDS[cls.kind_name] = cls
    for alias in (*cls.aliases, cls.kind_name.lower()):
        _BY_ALIAS[alias] = cls
    return cls


def kind_for(name: str) -> type[Resource]:
    """Resolve a kind as typed on the command line ('ipp', 'bgppeers', 'IPPool')."""
    cls = _BY_ALIAS.get(name.lower())
    if cls is None:
        raise ParseError(f"resource type '{name}' is not supported")
    return cls


def parse_document(doc: Any) -> Resource:
    """Validate one document (already decoded from YAML/JSON) into a Resource."""
    if not isinstance(doc, dict):
        raise ParseError(
            f"failed to parse resource: expected a mapping with apiVersion and kind, "
            f"got {type(doc).__name__}"
        )
    kind, api = doc.get("kind"), doc.get("apiVersion")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if api != API_VERSION or cls is None:
        raise ParseError(f"unknown resource type ({kind}) and/or version ({api})")
    meta = doc.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise ParseError("field in document is not recognized or is in the wrong location: metadata")
    try:
        res = cls.model_validate(doc)
    except PydanticValidationError as exc:
        raise errors_from_pydantic(cls.kind_name, exc, doc) from None
    except RecursionError:
        raise ParseError("document is nested too deeply") from None
    check_name(cls.kind_name, res.name, cls.namespaced, res.namespace)
    errs = res.validate_semantics()
    if errs:
        raise ValidationError(fields=errs)
    return res


def stored_update(kind: str, name: str, spec: dict[str, Any], namespace: str | None = None,
                  labels: dict[str, str] | None = None, revision: int = 1) -> Update:
    """The syncer's Update for a put of a validated `projectcalico.org/v3` document built
    from its parts: how tests and benchmarks feed a ClusterState without an etcd."""
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = labels
    res = parse_document({"apiVersion": API_VERSION, "kind": kind, "metadata": meta,
                          "spec": spec})
    return Update("put", res.key(), res.to_stored(), revision)
