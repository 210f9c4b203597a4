"""BGPPeer and BGPConfiguration: who a node peers with, and cluster-wide BGP settings.

Rules are libcalico-go's validator's: `node` and `nodeSelector` exclude each
other; `peerSelector` excludes `peerIP` and `asNumber`; peerIP is `ip`,
`ipv4:port` or `[ipv6]:port`. Unset BGPConfiguration fields stay unset in
storage (Calico applies defaults where they are used: AS 64512, mesh on).
"""

from __future__ import annotations

import ipaddress
import re
from typing import ClassVar, Literal

from pydantic import field_validator

from ..errors import FieldError
from .base import Resource, StrictModel, check_selector, parse_asn, parse_ip, parse_subnet

DEFAULT_AS_NUMBER = 64512
_DURATION_RE = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
_COMMUNITY_RE = re.compile(r"^(\d+):(\d+)(:(\d+))?$")




def _duration(value: str | None) -> str | None:
    if value is not None and not _DURATION_RE.match(value):
        raise ValueError("must be a duration such as 120s, 2m or 1h30m")
    return value


def parse_peer_ip(value: str) -> tuple[str, int | None]:
    """'10.0.0.1', '10.0.0.1:1179' or '[fd00::1]:1179' -> (ip, port or None)."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)", value)
    if m:
        return parse_ip(m[1], 6), _port(m[2])
    if value.count(":") == 1:
        host, port = value.split(":")
        return parse_ip(host, 4), _port(port)
    return parse_ip(value), None


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError("port must be between 1 and 65535")
    return port


class SecretKeyRef(StrictModel):
    name: str
    key: str


class BGPPassword(StrictModel):
    secretKeyRef: SecretKeyRef | None = None


class BGPPeerSpec(StrictModel):
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
            raise ValueError(f"peerIP must be an IP or IP:port ({exc})") from None
        return v

    @field_validator("nodeSelector", "peerSelector", "localWorkloadSelector")
    @classmethod
    def _selectors(cls, v: str | None) -> str | None:
        return check_selector(v)

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
        s, errs = self.spec, []
        if s.node and s.nodeSelector:
            errs.append(FieldError("BGPPeer.Spec.Node", s.node,
                                   "node and nodeSelector cannot both be specified"))
        if s.peerSelector and (s.peerIP or s.asNumber is not None):
            errs.append(FieldError("BGPPeer.Spec.PeerSelector", s.peerSelector,
                                   "peerSelector cannot be used with peerIP or asNumber"))
        if not s.peerSelector and not s.peerIP:
            errs.append(FieldError("BGPPeer.Spec.PeerIP", "",
                                   "either peerIP or peerSelector must be specified"))
        if s.peerIP and s.asNumber is None:
            errs.append(FieldError("BGPPeer.Spec.ASNumber", "",
                                   "asNumber must be specified with peerIP"))
        if s.peerIP and s.reachableBy:
            ip, _ = parse_peer_ip(s.peerIP)
            if ipaddress.ip_address(ip).version != ipaddress.ip_address(s.reachableBy).version:
                errs.append(FieldError("BGPPeer.Spec.ReachableBy", s.reachableBy,
                                       "reachableBy must be of the same IP family as peerIP"))
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

    @field_validator("value")
    @classmethod
    def _value(cls, v: str) -> str:
        m = _COMMUNITY_RE.match(v)
        if not m:
            raise ValueError("community must be 'aa:nn' or 'aa:nn:mm'")
        parts = [int(p) for p in (m[1], m[2], m[4]) if p is not None]
        limit = 65535 if len(parts) == 2 else 4294967295
        if any(p > limit for p in parts):
            raise ValueError("community part out of range")
        return v


class PrefixAdvertisement(StrictModel):
    cidr: str
    communities: list[str] | None = None

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        return parse_subnet(v)


class BGPConfigurationSpec(StrictModel):
    logSeverityScreen: Literal["Debug", "Info", "Warning", "Error", "Fatal"] | None = None
    nodeToNodeMeshEnabled: bool | None = None
    asNumber: int | str | None = None
    serviceLoadBalancerIPs: list[CIDRItem] | None = None
    serviceExternalIPs: list[CIDRItem] | None = None
    serviceClusterIPs: list[CIDRItem] | None = None
    serviceLoadBalancerAggregation: Literal["Enabled", "Disabled"] | None = None
    communities: list[Community] | None = None
    prefixAdvertisements: list[PrefixAdvertisement] | None = None
    listenPort: int | None = None
    nodeMeshPassword: BGPPassword | None = None
    nodeMeshMaxRestartTime: str | None = None
    bindMode: Literal["None", "NodeIP"] | None = None
    ignoredInterfaces: list[str] | None = None
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
        names = {c.name for c in self.spec.communities or []}
        errs = []
        for i, adv in enumerate(self.spec.prefixAdvertisements or []):
            for c in adv.communities or []:
                if c not in names and not _COMMUNITY_RE.match(c):
                    errs.append(FieldError(
                        f"BGPConfiguration.Spec.PrefixAdvertisements[{i}].Communities", c,
                        "community is neither a defined community name nor 'aa:nn'"))
        return errs
