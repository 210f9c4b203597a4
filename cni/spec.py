"""The CNI specification's data, as plain values: versions, environment, CNI_ARGS, results. Pure.

Owns what the spec (containernetworking/cni SPEC.md 1.0.0, and the 0.3.x/0.4.0
formats still found in the wild) says about the plugin protocol:

  * the versions tortie speaks (`SUPPORTED_VERSIONS`) and what each allows
    (CHECK exists from 0.4.0; result IPs carry a "version" field before 1.0.0);
  * the CNI_* environment of one invocation (`CniEnv.from_environ`), validated
    the way libcni's skel validates it (container ID and interface name rules);
  * CNI_ARGS (`parse_cni_args`): `K=V;K=V`, with the Kubernetes keys;
  * the result document (`Result`), rendered for the configuration's version
    and parsed back from a prevResult of any supported version.

Nothing here does I/O: `from_environ` takes the mapping to read. Value types
are NamedTuples, not dataclasses: importing `dataclasses` and building a dozen
frozen ones cost the plugin ~40 ms per invocation (measured; docs/cni.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from .errors import DecodingFailure, IncompatibleVersion, InvalidEnvironment

# Newest first is not required by the spec; libcni only checks membership.
SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0")
CURRENT_VERSION = "1.0.0"
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION")

# libcni pkg/utils: the rules runtimes and plugins share.
_CONTAINER_ID_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_NETWORK_NAME_RE = _CONTAINER_ID_RE
IFNAMSIZ = 16


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def check_version(version: object) -> str:
    """The configuration's cniVersion if tortie speaks it; IncompatibleVersion otherwise."""
    if version not in SUPPORTED_VERSIONS:
        raise IncompatibleVersion(
            f"incompatible CNI versions: the configuration's cniVersion is {version!r}, "
            f"tortie supports {', '.join(SUPPORTED_VERSIONS)}")
    return str(version)


def supports_check(version: str) -> bool:
    return version_tuple(version) >= (0, 4, 0)


def version_result(version: str = CURRENT_VERSION) -> dict[str, Any]:
    """The VERSION command's answer."""
    return {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}


def valid_network_name(name: str) -> bool:
    return bool(_NETWORK_NAME_RE.match(name))


def check_interface_name(name: str, what: str = "CNI_IFNAME") -> str:
    """libcni's ValidateInterfaceName: 1-15 bytes, not '.'/'..', no '/', ':' or whitespace."""
    if not name:
        raise InvalidEnvironment(f"{what} is empty: an interface name is required")
    if len(name.encode()) > IFNAMSIZ - 1:
        raise InvalidEnvironment(
            f"{what}={name!r} is too long: interface names have at most {IFNAMSIZ - 1} bytes")
    if name in (".", "..") or any(c in name for c in "/:") or any(c.isspace() for c in name):
        raise InvalidEnvironment(
            f"{what}={name!r} is not a valid interface name (no '/', ':' or whitespace, "
            "not '.' or '..')")
    return name


class CniEnv(NamedTuple):
    """One invocation's CNI_* variables (CNI_PATH split into its directories)."""

    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: str = ""
    path: tuple[str, ...] = ()
    # Where this process reaches the namespace when not by CNI_NETNS's path: the CNI
    # server's /proc/<pid>/fd/<n> of the descriptor the shim passed, or "" when the shim
    # could not open CNI_NETNS (it is gone). None: by the path. `netns` stays the
    # runtime's path, which messages and results name.
    netns_via: str | None = None

    @property
    def netns_path(self) -> str:
        """The path to open or nsenter for the container's network namespace."""
        return self.netns if self.netns_via is None else self.netns_via

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> CniEnv:
        """Validate like libcni's skel: what each command requires, and its syntax."""
        command = environ.get("CNI_COMMAND", "")
        if not command:
            raise InvalidEnvironment("CNI_COMMAND is not set: expected one of "
                                     + ", ".join(COMMANDS))
        if command not in COMMANDS:
            raise InvalidEnvironment(f"CNI_COMMAND={command!r} is not one of "
                                     + ", ".join(COMMANDS))
        path = tuple(p for p in environ.get("CNI_PATH", "").split(":") if p)
        if command == "VERSION":
            return cls(command, path=path)
        missing = [v for v in ("CNI_CONTAINERID", "CNI_IFNAME")
                   + (("CNI_NETNS",) if command in ("ADD", "CHECK") else ())
                   if not environ.get(v)]
        if missing:
            raise InvalidEnvironment(
                f"required environment variable{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)} not set for {command}")
        cid = environ["CNI_CONTAINERID"]
        if not _CONTAINER_ID_RE.match(cid):
            raise InvalidEnvironment(
                f"CNI_CONTAINERID={cid!r} is invalid: it must start with a letter or digit and "
                "hold only letters, digits, '_', '.' and '-'")
        return cls(command, cid, environ.get("CNI_NETNS", ""),
                   check_interface_name(environ["CNI_IFNAME"]), environ.get("CNI_ARGS", ""),
                   path)


def parse_cni_args(text: str) -> dict[str, str]:
    """CNI_ARGS `K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;IgnoreUnknown=1` as a dict.

    Keys tortie does not know are kept (and ignored by the caller), as libcni
    does with IgnoreUnknown; a part that is not KEY=VALUE is an error.
    """
    out: dict[str, str] = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise InvalidEnvironment(f"CNI_ARGS part {part!r} is not KEY=VALUE",
                                     f"CNI_ARGS={text}")
        out[key] = value
    return out


# -- results ---------------------------------------------------------------------------------


class Interface(NamedTuple):
    name: str
    mac: str = ""
    sandbox: str = ""

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name}
        if self.mac:
            doc["mac"] = self.mac
        if self.sandbox:
            doc["sandbox"] = self.sandbox
        return doc


class IPConfig(NamedTuple):
    address: str  # CIDR notation: "10.65.0.5/32"
    gateway: str | None = None
    interface: int | None = None  # index into Result.interfaces

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]

    @property
    def version(self) -> str:
        return "6" if ":" in self.address else "4"

    def to_dict(self, cni_version: str) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if version_tuple(cni_version) < (1, 0, 0):
            doc["version"] = self.version  # required in 0.3.x / 0.4.0, gone in 1.0.0
        if self.interface is not None:
            doc["interface"] = self.interface
        doc["address"] = self.address
        if self.gateway:
            doc["gateway"] = self.gateway
        return doc


class RouteConfig(NamedTuple):
    dst: str
    gw: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"dst": self.dst, **({"gw": self.gw} if self.gw else {})}


class Result(NamedTuple):
    """A CNI result: what ADD prints and CHECK/DEL receive back as prevResult."""

    interfaces: tuple[Interface, ...] = ()
    ips: tuple[IPConfig, ...] = ()
    routes: tuple[RouteConfig, ...] = ()
    dns: Mapping[str, Any] | None = None

    def to_dict(self, cni_version: str) -> dict[str, Any]:
        doc: dict[str, Any] = {"cniVersion": cni_version}
        if self.interfaces:
            doc["interfaces"] = [i.to_dict() for i in self.interfaces]
        doc["ips"] = [ip.to_dict(cni_version) for ip in self.ips]
        if self.routes:
            doc["routes"] = [r.to_dict() for r in self.routes]
        doc["dns"] = dict(self.dns or {})
        return doc

    @classmethod
    def from_dict(cls, doc: object, what: str = "prevResult") -> Result:
        """Parse a result of any supported version (DecodingFailure naming the bad part)."""
        if not isinstance(doc, dict):
            raise DecodingFailure(f"{what} is not a JSON object")
        try:
            interfaces = tuple(Interface(str(i["name"]), str(i.get("mac", "")),
                                         str(i.get("sandbox", "")))
                               for i in doc.get("interfaces") or ())
            ips = tuple(IPConfig(str(ip["address"]), ip.get("gateway") or None,
                                 ip.get("interface"))
                        for ip in doc.get("ips") or ())
            routes = tuple(RouteConfig(str(r["dst"]), r.get("gw") or None)
                           for r in doc.get("routes") or ())
        except (KeyError, TypeError, AttributeError) as exc:
            raise DecodingFailure(f"{what} is not a CNI result: missing or malformed {exc}",
                                  str(doc)[:300]) from None
        for ip in ips:
            if "/" not in ip.address:
                raise DecodingFailure(f"{what} IP address {ip.address!r} has no prefix length")
        dns = doc.get("dns") if isinstance(doc.get("dns"), dict) else {}
        return cls(interfaces, ips, routes, dns or None)
