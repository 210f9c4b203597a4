"""Node: one host of the cluster, its addresses, AS number and tunnel endpoints.

`spec.bgp.ipv4Address` carries the prefix (10.0.0.5/24): CrossSubnet decides
"same subnet" from it, as Calico does. Tunnel addresses and the VXLAN MAC are
written by the agent; `status` is published by the agent and BGP sidecar.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import field_validator

from .base import Resource, StrictModel, parse_asn, parse_cidr_with_host, parse_ip

_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


class NodeBGPSpec(StrictModel):
    asNumber: int | str | None = None
    ipv4Address: str | None = None
    ipv6Address: str | None = None
    ipv4IPIPTunnelAddr: str | None = None
    routeReflectorClusterID: str | None = None

    @field_validator("asNumber", mode="before")
    @classmethod
    def _asn(cls, v: object) -> int | None:
        return None if v is None else parse_asn(v)

    @field_validator("ipv4Address")
    @classmethod
    def _v4(cls, v: str | None) -> str | None:
        return None if not v else parse_cidr_with_host(v, 4)

    @field_validator("ipv6Address")
    @classmethod
    def _v6(cls, v: str | None) -> str | None:
        return None if not v else parse_cidr_with_host(v, 6)

    @field_validator("ipv4IPIPTunnelAddr", "routeReflectorClusterID")
    @classmethod
    def _ipv4(cls, v: str | None) -> str | None:
        return None if not v else parse_ip(v, 4)


class OrchRef(StrictModel):
    nodeName: str | None = None
    orchestrator: str


class NodeInterface(StrictModel):
    name: str
    addresses: list[str] | None = None


class NodeAddress(StrictModel):
    address: str
    type: str | None = None


class NodeSpec(StrictModel):
    bgp: NodeBGPSpec | None = None
    ipv4VXLANTunnelAddr: str | None = None
    vxlanTunnelMACAddr: str | None = None
    ipv6VXLANTunnelAddr: str | None = None
    vxlanTunnelMACAddrV6: str | None = None
    orchRefs: list[OrchRef] | None = None
    wireguard: dict[str, Any] | None = None  # here, not last: JSON keys in the Go struct's order
    addresses: list[NodeAddress] | None = None
    interfaces: list[NodeInterface] | None = None

    @field_validator("ipv4VXLANTunnelAddr")
    @classmethod
    def _vxlan4(cls, v: str | None) -> str | None:
        return None if not v else parse_ip(v, 4)

    @field_validator("ipv6VXLANTunnelAddr")
    @classmethod
    def _vxlan6(cls, v: str | None) -> str | None:
        return None if not v else parse_ip(v, 6)

    @field_validator("vxlanTunnelMACAddr", "vxlanTunnelMACAddrV6")
    @classmethod
    def _mac(cls, v: str | None) -> str | None:
        if v and not _MAC_RE.match(v):
            raise ValueError("must be a MAC address like 66:0a:1b:2c:3d:4e")
        return v.lower() if v else None


class Node(Resource):
    kind_name: ClassVar[str] = "Node"
    plural: ClassVar[str] = "nodes"
    aliases: ClassVar[tuple[str, ...]] = ("node", "nodes", "no", "nos")

    kind: Literal["Node"] = "Node"
    spec: NodeSpec = NodeSpec()
    status: dict[str, Any] | None = None

    @property
    def ipv4_address(self) -> str | None:
        return self.spec.bgp.ipv4Address if self.spec.bgp else None

    @property
    def ipv6_address(self) -> str | None:
        return self.spec.bgp.ipv6Address if self.spec.bgp else None

    @property
    def as_number(self) -> int | None:
        asn = self.spec.bgp.asNumber if self.spec.bgp else None
        return int(asn) if asn is not None else None
