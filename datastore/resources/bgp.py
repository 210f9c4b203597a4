"""BGPPeer and BGPConfiguration: who a node peers with, and cluster-wide BGP settings.

Rules are libcalico-go's validator's (libcalico-go/lib/validator/v3/validator.go)
and the CEL rules on Calico's API types (api/pkg/apis/projectcalico/v3/
bgppeer.go, bgpconfig.go), with their messages: `node` and `nodeSelector`
exclude each other; `peerSelector` excludes `peerIP` and a non-zero
`asNumber`; `localWorkloadSelector` excludes both and needs an `asNumber`;
`reachableBy` needs a `peerIP` of its family; `keepOriginalNextHop` excludes
`nextHopMode`; peerIP is `ip`, `ipv4:port` or `[ip]:port`. A peer with neither
peerIP nor peerSelector is valid and peers with nothing, as in Calico; a peerIP
without asNumber means the cluster's AS (confd's AS 0).

BGPConfiguration: `nodeMeshPassword` and `nodeMeshMaxRestartTime` only while
the mesh is not switched off; `communities` only with `prefixAdvertisements`;
a community is `aa:nn` (16-bit parts) or `aa:nn:mm` (32-bit parts), and a
prefix advertisement's community is such a value or a defined community's
name; `logSeverityScreen` is matched without regard to case, as Calico's CRD
pattern is. Unset fields stay unset in storage (Calico applies defaults where
they are used: AS 64512, mesh on).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, field_validator

from ..errors import FieldError
from .base import (
    ItemError,
    Resource,
    StrictModel,
    check_selector,
    check_subdomain,
    parse_asn,
    parse_ip,
    parse_subnet,
)

DEFAULT_AS_NUMBER = 64512
_DURATION_RE = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
# validator.go's standardCommunity / largeCommunity.
_STANDARD_COMMUNITY_RE = re.compile(r"^(\d+):(\d+)$")
_LARGE_COMMUNITY_RE = re.compile(r"^(\d+):(\d+):(\d+)$")
# validator.go's ignoredInterfaceRegex ('*' alone is refused: it would ignore every interface).
_IGNORED_INTERFACE_RE = re.compile(r"^[a-zA-Z0-9_.*-]{1,15}$")
# bgpconfig.go's CRD pattern for logSeverityScreen, case-insensitive as there.
_LOG_SEVERITY_RE = re.compile(r"^(Trace|Debug|Info|Warning|Error|Fatal)?$", re.IGNORECASE)
# validator.go's IPv4PortFormat / IPv6PortFormat (processIPPort).
_IPV4_PORT_RE = re.compile(r"^(\d+\.\d+\.\d+\.\d+):(\d+)$")
_BRACKETED_PORT_RE = re.compile(r"^\[([0-9a-fA-F:.]+)\]:(\d+)$")




def _duration(value: str | None) -> str | None:
    if value is not None and not _DURATION_RE.match(value):
        raise ValueError("must be a duration such as 120s, 2m or 1h30m")
    return value


def parse_peer_ip(value: str) -> tuple[str, int | None]:
    """'10.0.0.1', '10.0.0.1:1179' or '[fd00::1]:1179' -> (ip, port or None).

    validator.go's processIPPort: a port only in the `a.b.c.d:port` and
    `[ip]:port` forms, 1-65535; anything else must be an address by itself.
    """
    m = _BRACKETED_PORT_RE.match(value) or _IPV4_PORT_RE.match(value)
    if m:
        return parse_ip(m[1]), _port(m[2])
    return parse_ip(value), None


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError("port must be between 1 and 65535")
    return port


def community_problem(value: str) -> str | None:
    """Why `value` is not a BGP community (validator.go isValidCommunity), or None."""
    standard = _STANDARD_COMMUNITY_RE.match(value)
    large = _LARGE_COMMUNITY_RE.match(value)
    if not standard and not large:
        return "invalid community value or format used."
    bits = 16 if standard else 32
    if any(int(part) >= 1 << bits for part in value.split(":")):
        return f"invalid community value, expected {bits} bit value"
    return None


def is_community_value(value: str) -> bool:
    """A literal community ('aa:nn' or 'aa:nn:mm'), as opposed to a community's name."""
    return bool(_STANDARD_COMMUNITY_RE.match(value) or _LARGE_COMMUNITY_RE.match(value))


class SecretKeyRef(StrictModel):
    # k8s SecretKeySelector: `key` has no omitempty.
    go_keep_zero: ClassVar[frozenset[str]] = frozenset({"key"})

    name: str
    key: str


class BGPPassword(StrictModel):
    go_keep_zero: ClassVar[frozenset[str]] = frozenset({"secretKeyRef"})  # a pointer

    secretKeyRef: SecretKeyRef | None = None


class BGPPeerSpec(StrictModel):
    # The pointers of bgppeer.go's BGPPeerSpec; asNumber (a value) drops 0.
    go_keep_zero: ClassVar[frozenset[str]] = frozenset({
        "localASNumber", "nextHopMode", "password", "maxRestartTime", "keepaliveTime",
        "numAllowedLocalASNumbers", "ttlSecurity", "reversePeering"})

    node: str | None = None
    nodeSelector: str | None = None
    peerIP: str | None = None
    asNumber: int | str | None = None
    localASNumber: int | str | None = None
    peerSelector: str | None = None  # after the AS numbers, as in the Go struct (JSON key order)
    keepOriginalNextHop: bool | None = None
    nextHopMode: Literal["Auto", "Self", "Keep"] | None = None
    password: BGPPassword | None = None
    sourceAddress: Literal["UseNodeIP", "None"] | None = None
    maxRestartTime: str | None = None
    keepaliveTime: str | None = None
    numAllowedLocalASNumbers: int | None = None
    ttlSecurity: int | None = None
    reachableBy: str | None = None
    filters: list[str] | None = None
    localWorkloadSelector: str | None = None
    reversePeering: Literal["Auto", "Manual"] | None = None

    @field_validator("asNumber", "localASNumber", mode="before")
    @classmethod
    def _asn(cls, v: object) -> int | None:
        return None if v is None else parse_asn(v)

    @field_validator("peerIP")
    @classmethod
    def _peer_ip(cls, v: str | None) -> str | None:
        if not v:
            return None
        try:
            parse_peer_ip(v)
        except ValueError as exc:
            raise ValueError(f"peerIP must be <IP>, <IPv4>:<port> or [<IP>]:<port> ({exc})"
                             ) from None
        return v

    @field_validator("nodeSelector", "peerSelector", "localWorkloadSelector")
    @classmethod
    def _selectors(cls, v: str | None) -> str | None:
        return check_selector(v)

    @field_validator("node")
    @classmethod
    def _node(cls, v: str | None) -> str | None:
        return check_subdomain(v) if v else v

    @field_validator("filters")
    @classmethod
    def _filters(cls, v: list[str] | None) -> list[str] | None:
        for name in v or ():
            check_subdomain(name)  # BGPFilter names (validate:"dive,name")
        return v

    @field_validator("maxRestartTime", "keepaliveTime")
    @classmethod
    def _durations(cls, v: str | None) -> str | None:
        return _duration(v)

    @field_validator("reachableBy")
    @classmethod
    def _reachable(cls, v: str | None) -> str | None:
        return None if not v else parse_ip(v)

    @field_validator("ttlSecurity")
    @classmethod
    def _ttl(cls, v: int | None) -> int | None:
        if v is not None and not 0 <= v <= 255:
            raise ValueError("must be between 0 and 255")
        return v

    @field_validator("numAllowedLocalASNumbers")
    @classmethod
    def _allowed(cls, v: int | None) -> int | None:
        if v is not None and not 0 <= v <= 10:
            raise ValueError("must be between 0 and 10")
        return v


class BGPPeer(Resource):
    kind_name: ClassVar[str] = "BGPPeer"
    plural: ClassVar[str] = "bgppeers"
    aliases: ClassVar[tuple[str, ...]] = ("bgppeer", "bgppeers", "bgpp", "bgpps", "bp", "bps")

    kind: Literal["BGPPeer"] = "BGPPeer"
    spec: BGPPeerSpec

    def validate_semantics(self) -> list[FieldError]:
        """bgppeer.go's CEL rules and validateBGPPeerSpec, with their messages. Pure."""
        s, errs = self.spec, []

        def refuse(field: str, value: object, message: str) -> None:
            errs.append(FieldError(f"BGPPeer.Spec.{field}", value, message))

        if s.node and s.nodeSelector:
            refuse("Node", s.node, "node and nodeSelector cannot both be set")
        if s.peerIP and s.peerSelector:
            refuse("PeerSelector", s.peerSelector, "peerIP and peerSelector cannot both be set")
        if s.peerSelector and s.asNumber:
            refuse("ASNumber", s.asNumber, "asNumber must be empty when peerSelector is set")
        if s.localWorkloadSelector:
            if s.peerIP:
                refuse("PeerIP", s.peerIP, "peerIP must be empty when localWorkloadSelector is set")
            if s.peerSelector:
                refuse("PeerSelector", s.peerSelector,
                       "peerSelector must be empty when localWorkloadSelector is set")
            if not s.asNumber:
                refuse("ASNumber", s.asNumber or "",
                       "asNumber is required when localWorkloadSelector is set")
        if s.reachableBy and not s.peerIP:
            refuse("ReachableBy", s.reachableBy, "reachableBy must be empty when peerIP is empty")
        if s.keepOriginalNextHop and s.nextHopMode is not None:
            refuse("KeepOriginalNextHop", True,
                   "keepOriginalNextHop and nextHopMode cannot both be set; "
                   "keepOriginalNextHop is deprecated, use nextHopMode instead")
        if s.peerIP and s.reachableBy:
            ip, _ = parse_peer_ip(s.peerIP)
            if ipaddress.ip_address(ip).version != ipaddress.ip_address(s.reachableBy).version:
                refuse("ReachableBy", s.reachableBy,
                       "ReachableBy and PeerIP address family mismatched")
        return errs


class CIDRItem(StrictModel):
    cidr: str

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        return parse_subnet(v)


class Community(StrictModel):
    name: str
    value: str

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_subdomain(v)

    @field_validator("value")
    @classmethod
    def _value(cls, v: str) -> str:
        problem = community_problem(v) if len(v) <= 40 else "at most 40 characters"
        if problem:
            raise ValueError(problem)
        return v


class PrefixAdvertisement(StrictModel):
    cidr: str
    communities: list[str] = Field(max_length=50)

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        return parse_subnet(v)

    @field_validator("communities")
    @classmethod
    def _communities(cls, v: list[str]) -> list[str]:
        for i, community in enumerate(v):
            # A literal must be in range; anything else is a name, checked against
            # spec.communities by BGPConfiguration.validate_semantics.
            problem = community_problem(community) if is_community_value(community) else None
            if problem:
                raise ItemError(problem, community, f"[{i}]")
        return v


def _ignored_interface(value: str) -> str:
    if value == "*" or not _IGNORED_INTERFACE_RE.match(value):
        raise ValueError("must be an interface name or pattern of 1-15 letters, digits and "
                         "'_', '.', '-', '*' (and not '*' alone)")
    return value


def _log_severity(value: str) -> str:
    if not _LOG_SEVERITY_RE.match(value):
        raise ValueError("must be one of Trace, Debug, Info, Warning, Error, Fatal "
                         "(in any case)")
    return value


class BGPConfigurationSpec(StrictModel):
    # The pointers of bgpconfig.go's BGPConfigurationSpec; listenPort (a value) drops 0.
    go_keep_zero: ClassVar[frozenset[str]] = frozenset({
        "nodeToNodeMeshEnabled", "asNumber", "serviceLoadBalancerAggregation",
        "nodeMeshPassword", "nodeMeshMaxRestartTime", "bindMode"})

    logSeverityScreen: Annotated[str, AfterValidator(_log_severity)] | None = None
    nodeToNodeMeshEnabled: bool | None = None
    asNumber: int | str | None = None
    serviceLoadBalancerIPs: list[CIDRItem] | None = None
    serviceExternalIPs: list[CIDRItem] | None = None
    serviceClusterIPs: list[CIDRItem] | None = None
    serviceLoadBalancerAggregation: Literal["Enabled", "Disabled"] | None = None
    communities: list[Community] | None = Field(default=None, max_length=500)
    prefixAdvertisements: list[PrefixAdvertisement] | None = Field(default=None, max_length=500)
    listenPort: int | None = None
    nodeMeshPassword: BGPPassword | None = None
    nodeMeshMaxRestartTime: str | None = None
    bindMode: Literal["None", "NodeIP"] | None = None
    ignoredInterfaces: list[Annotated[str, AfterValidator(_ignored_interface)]] | None = None
    localWorkloadPeeringIPV4: str | None = None
    localWorkloadPeeringIPV6: str | None = None

    @field_validator("asNumber", mode="before")
    @classmethod
    def _asn(cls, v: object) -> int | None:
        return None if v is None else parse_asn(v)

    @field_validator("listenPort")
    @classmethod
    def _listen(cls, v: int | None) -> int | None:
        if v is not None and not 1 <= v <= 65535:
            raise ValueError("listenPort must be between 1 and 65535")
        return v

    @field_validator("nodeMeshMaxRestartTime")
    @classmethod
    def _restart(cls, v: str | None) -> str | None:
        return _duration(v)

    @field_validator("localWorkloadPeeringIPV4")
    @classmethod
    def _lwp4(cls, v: str | None) -> str | None:
        return None if not v else parse_ip(v, 4)

    @field_validator("localWorkloadPeeringIPV6")
    @classmethod
    def _lwp6(cls, v: str | None) -> str | None:
        return None if not v else parse_ip(v, 6)


class BGPConfiguration(Resource):
    kind_name: ClassVar[str] = "BGPConfiguration"
    plural: ClassVar[str] = "bgpconfigurations"
    aliases: ClassVar[tuple[str, ...]] = ("bgpconfiguration", "bgpconfigurations", "bgpconfig",
                                          "bgpconfigs")

    kind: Literal["BGPConfiguration"] = "BGPConfiguration"
    spec: BGPConfigurationSpec = BGPConfigurationSpec()

    def validate_semantics(self) -> list[FieldError]:
        """bgpconfig.go's CEL rules and validateBGPConfigurationSpec's. Pure."""
        s, errs = self.spec, []
        mesh_off = s.nodeToNodeMeshEnabled is False
        if mesh_off and s.nodeMeshPassword is not None:
            errs.append(FieldError("BGPConfiguration.Spec.NodeMeshPassword", "",
                                   "nodeMeshPassword cannot be set when nodeToNodeMeshEnabled "
                                   "is false"))
        if mesh_off and s.nodeMeshMaxRestartTime is not None:
            errs.append(FieldError("BGPConfiguration.Spec.NodeMeshMaxRestartTime",
                                   s.nodeMeshMaxRestartTime,
                                   "nodeMeshMaxRestartTime cannot be set when "
                                   "nodeToNodeMeshEnabled is false"))
        if s.communities and not s.prefixAdvertisements:
            errs.append(FieldError("BGPConfiguration.Spec.Communities",
                                   ",".join(c.name for c in s.communities),
                                   "communities are defined but not used in prefixAdvertisements"))
        names = {c.name for c in s.communities or []}
        for i, adv in enumerate(s.prefixAdvertisements or []):
            for j, c in enumerate(adv.communities):
                if not is_community_value(c) and c not in names:
                    errs.append(FieldError(
                        f"BGPConfiguration.Spec.PrefixAdvertisements[{i}].Communities[{j}]", c,
                        "community used is invalid or not defined."))
        return errs
