"""Reading manifests (`-f FILE` / `-f -`) into validated resources, all or nothing.

Decoding is datastore.manifest's (strict YAML/JSON, size and depth limits);
this module turns the documents into resources: unknown fields and wrong types
are errors, and every problem becomes one error naming the document and the field.

Plain Kubernetes objects (networking.k8s.io/v1 NetworkPolicy, v1 Namespace,
v1 ServiceAccount) are converted to the Calico documents calico-kube-controllers
would store in etcd mode (policy.k8s) and then validated like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datastore.errors import ParseError, ValidationError
from datastore.manifest import ManifestError, decode_documents, read_source
from datastore.resources import Resource, parse_document
from policy.k8s import KubernetesObjectError, kubernetes_object_to_calico

__all__ = ["Manifest", "ManifestError", "load_manifest"]


@dataclass(frozen=True)
class Manifest:
    source: str
    resources: list[Resource]


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
