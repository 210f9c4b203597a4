"""The datastore's exception tree, with Calico's messages.

    DatastoreError
     ├── ConnectionFailed          etcd unreachable / TLS refused (names the endpoints)
     │      └── WatchCreateTimedOut  etcd did not confirm a new watch in time
     ├── ResourceAlreadyExists     create-if-absent lost
     ├── ResourceDoesNotExist      get/update/delete of a missing key
     ├── UpdateConflict            compare-and-swap lost (mod revision moved)
     ├── RevisionCompacted         a watch asked for a revision etcd no longer has
     ├── IPAMDocumentError         a stored IPAM block/affinity/handle that cannot be read
     ├── OperationNotSupported     a write Calico refuses whatever the document says
     └── ValidationError           a resource failed validation (field errors)
            └── ParseError         a document could not be read at all

Messages follow libcalico-go's `lib/errors` wording so that operators who know
calicoctl recognise them. Every error carries its context (key, kind, name,
revision) as attributes as well as in the text.
"""

from __future__ import annotations

from dataclasses import dataclass


class DatastoreError(Exception):
    """Root of every error raised by the datastore package."""


class ConnectionFailed(DatastoreError):
    def __init__(self, endpoints: list[str], detail: str = "") -> None:
        self.endpoints = endpoints
        self.detail = detail
        text = f"etcd connection failed: could not reach {', '.join(endpoints) or '<none>'}"
        if detail:
            text += f": {detail}"
        super().__init__(text)


class WatchCreateTimedOut(ConnectionFailed):
    """etcd did not confirm a watch creation within `timeout` seconds: the member is
    unreachable, or alive but slow (a starved host); a retry should allow longer."""

    def __init__(self, endpoints: list[str], timeout: float) -> None:
        self.timeout = timeout
        super().__init__(endpoints, f"watch creation timed out after {timeout:.1f}s")


class _ResourceError(DatastoreError):
    """libcalico-go's resource errors: the identifier is model.ResourceKey's String()
    (`Kind(name)`, `Kind(namespace/name)` for a namespaced kind), and the two that wrap an
    error print it with `%v`; the etcd backend wraps none, hence Go's `<nil>`."""

    template = "{ident}"

    def __init__(self, kind: str, name: str, key: str = "", revision: int | None = None,
                 namespace: str | None = None) -> None:
        self.kind = kind
        self.name = name
        self.namespace = namespace
        self.key = key
        self.revision = revision
        ident = f"{kind}({namespace}/{name})" if namespace is not None else f"{kind}({name})"
        super().__init__(self.template.format(ident=ident))


class ResourceAlreadyExists(_ResourceError):
    template = "resource already exists: {ident} with error: <nil>"


class ResourceDoesNotExist(_ResourceError):
    template = "resource does not exist: {ident} with error: <nil>"


class UpdateConflict(_ResourceError):
    template = "update conflict: {ident}"


class RevisionCompacted(DatastoreError):
    def __init__(self, requested: int, compacted: int) -> None:
        self.requested = requested
        self.compacted = compacted
        super().__init__(
            f"revision {requested} has been compacted (oldest available: {compacted})"
        )


class OperationNotSupported(DatastoreError):
    """A write Calico refuses for what it is, not for its fields (deleting the default tier)."""

    def __init__(self, operation: str, identifier: str, reason: str) -> None:
        self.operation = operation
        self.identifier = identifier
        self.reason = reason
        super().__init__(f"operation {operation} is not supported on {identifier}: {reason}")


class IPAMDocumentError(DatastoreError, ValueError):
    """A stored IPAM document (datastore.ipam_documents) that cannot be read.

    `key` is where it was read from ("" when the reader did not say), `field` the
    JSON field at fault ("" for the whole document), `value` what it holds and
    `reason` a sentence naming both. Also a ValueError: reading a document is
    parsing a value.
    """

    def __init__(self, key: str, field: str, value: object, reason: str) -> None:
        self.key = key
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{key}: {reason}" if key else reason)


@dataclass(frozen=True)
class FieldError:
    """One invalid field: Calico's `error with field <path> = '<value>' (<reason>)`."""

    path: str  # Go-style path, e.g. IPPool.Spec.CIDR
    value: object
    reason: str

    def __str__(self) -> str:
        return f"error with field {self.path} = '{_show(self.value)}' ({self.reason})"


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    text = str(value)
    return text if len(text) <= 200 else text[:200] + "..."


class ValidationError(DatastoreError):
    """A resource failed validation. Carries one or more FieldErrors or a plain message."""

    def __init__(self, message: str = "", fields: list[FieldError] | None = None) -> None:
        self.fields = list(fields or [])
        if not message:
            if len(self.fields) == 1:
                message = str(self.fields[0])
            else:
                message = "error with the following fields:\n" + "".join(
                    f"-  {f.path} = '{_show(f.value)}' ({f.reason})\n" for f in self.fields
                )
        super().__init__(message)


class ParseError(ValidationError):
    """A document that is not valid YAML/JSON, has an unknown kind or unknown fields."""
