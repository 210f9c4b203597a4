"""The CNI plugin's exception tree: every failure carries its CNI error code.

    CniError                      code  meaning (CNI SPEC.md "Error", codes 1-99 are the spec's)
     ├── IncompatibleVersion        1   cniVersion not supported, or the command not in it
     ├── UnsupportedField           2   a known field with a value tortie cannot honour
     ├── ContainerUnknown           3   the container's network namespace does not exist
     ├── InvalidEnvironment         4   a CNI_* variable missing or malformed (CNI_ARGS too)
     ├── IOFailure                  5   stdin could not be read
     ├── DecodingFailure            6   stdin (or a delegate's output) is not the JSON expected
     ├── InvalidConfig              7   the network configuration fails validation
     ├── TryAgainLater             11   transient: etcd unreachable, compare-and-swap storms
     └── PluginError             100+   tortie's own codes
          ├── NoAddresses         100   IPAM could not give an address (pool exhausted, ...)
          ├── DatastoreFailure    101   etcd answered, but with something unusable
          ├── DataplaneFailure    102   creating/configuring the interface or a route failed
          ├── Conflict            103   an interface, route or address belongs to something else
          ├── CheckFailed         104   CHECK found the container's networking not as set up
          ├── DelegateFailed      105   a delegated IPAM plugin failed (its error is in details)
          └── InternalError       999   a bug (libcni's ErrInternal); the traceback is logged

`msg` is one sentence saying what went wrong and naming the field, value or
object; `details` carries the context a runtime shows on request (stderr of
a command, the etcd endpoints, the delegate's error). The exit code of the
plugin is always 1 on error; the CNI code travels in the JSON printed on
stdout (`to_json`), which is what runtimes read.
"""

from __future__ import annotations

import json

__all__ = [
    "CniError", "IncompatibleVersion", "UnsupportedField", "ContainerUnknown",
    "InvalidEnvironment", "IOFailure", "DecodingFailure", "InvalidConfig", "TryAgainLater",
    "PluginError", "NoAddresses", "DatastoreFailure", "DataplaneFailure", "Conflict",
    "CheckFailed", "DelegateFailed", "InternalError", "error_for_code",
]


class CniError(Exception):
    """Root of the tree. `code` is the CNI error code the runtime receives."""

    code = 999

    def __init__(self, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details

    def to_dict(self, cni_version: str) -> dict[str, object]:
        doc: dict[str, object] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            doc["details"] = self.details
        return doc

    def to_json(self, cni_version: str) -> str:
        return json.dumps(self.to_dict(cni_version), indent=1)

    def __str__(self) -> str:
        return self.msg if not self.details else f"{self.msg} ({self.details})"


class IncompatibleVersion(CniError):
    code = 1


class UnsupportedField(CniError):
    code = 2

    def __init__(self, field: str, value: object, why: str = "") -> None:
        # The spec: "The error message must contain the key and value of the unsupported field."
        text = f"unsupported field in network configuration: {field}={json.dumps(value)}"
        super().__init__(text + (f": {why}" if why else ""))
        self.field, self.value = field, value


class ContainerUnknown(CniError):
    code = 3


class InvalidEnvironment(CniError):
    code = 4


class IOFailure(CniError):
    code = 5


class DecodingFailure(CniError):
    code = 6


class InvalidConfig(CniError):
    code = 7


class TryAgainLater(CniError):
    code = 11


class PluginError(CniError):
    code = 100


class NoAddresses(PluginError):
    code = 100


class DatastoreFailure(PluginError):
    code = 101


class DataplaneFailure(PluginError):
    code = 102


class Conflict(PluginError):
    code = 103


class CheckFailed(PluginError):
    code = 104


class DelegateFailed(PluginError):
    code = 105


class InternalError(PluginError):
    code = 999


_BY_CODE: dict[int, type[CniError]] = {
    cls.code: cls for cls in (
        IncompatibleVersion, UnsupportedField, ContainerUnknown, InvalidEnvironment, IOFailure,
        DecodingFailure, InvalidConfig, TryAgainLater, NoAddresses, DatastoreFailure,
        DataplaneFailure, Conflict, CheckFailed, DelegateFailed, InternalError)
}


def error_for_code(code: int, msg: str, details: str = "") -> CniError:
    """Rebuild an error received as JSON (from the CNI server or a delegate) with its class."""
    cls = _BY_CODE.get(code)
    if cls is None or cls is UnsupportedField:
        err = CniError(msg, details)
        err.code = code
        return err
    return cls(msg, details)
