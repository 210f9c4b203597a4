"""Node: one host of the cluster, its addresses, AS number and tunnel endpoints.

`spec.bgp.ipv4Address` carries the prefix (10.0.0.5/24): CrossSubnet decides
"same subnet" from it, as Calico does. Tunnel addresses and the VXLAN MAC are
written by the agent; `status` is published by the agent and BGP sidecar.

Rules are libcalico-go's validator's (validateNodeSpec and the field tags of
libcalico-go/lib/apis/internalapi/node.go): a `spec.bgp` that is present must
say something, the WireGuard interface addresses are of their family, and the
WireGuard public keys in `status` are base64 of 32 bytes.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, ClassVar, Literal

from pydantic import ValidationInfo, field_validator

from ..errors import FieldError
from .base import Resource, StrictModel, parse_asn, parse_cidr_with_host, parse_ip

WIREGUARD_KEY_BYTES = 32

_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


class NodeBGPSpec(StrictModel):
    go_keep_zero: ClassVar[frozenset[str]] = frozenset({"asNumber"})  # a pointer

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
    go_keep_zero: ClassVar[frozenset[str]] = frozenset({"orchestrator"})  # no omitempty

    nodeName: str | None = None
    orchestrator: str


class NodeInterface(StrictModel):
    name: str
    addresses: list[str] | None = None


class NodeAddress(StrictModel):
    go_keep_zero: ClassVar[frozenset[str]] = frozenset({"address"})  # no omitempty

    address: str
    type: str | None = None


class NodeWireguardSpec(StrictModel):
    interfaceIPv4Address: str | None = None
    interfaceIPv6Address: str | None = None

    @field_validator("interfaceIPv4Address", "interfaceIPv6Address")
    @classmethod
    def _address(cls, v: str | None, info: ValidationInfo) -> str | None:
        return None if not v else parse_ip(v, 6 if info.field_name == "interfaceIPv6Address"
                                           else 4)


def wireguard_key_problem(key: str) -> str | None:
    """Why `key` is not a WireGuard public key (wgtypes.ParseKey), or None."""
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        return "wireguard public key must be base64"
    if len(raw) != WIREGUARD_KEY_BYTES:
        return f"wireguard public key must be {WIREGUARD_KEY_BYTES} bytes, base64-encoded"
    return None


class NodeSpec(StrictModel):
    go_keep_zero: ClassVar[frozenset[str]] = frozenset({"bgp", "wireguard"})  # pointers

    bgp: NodeBGPSpec | None = None
    ipv4VXLANTunnelAddr: str | None = None
    vxlanTunnelMACAddr: str | None = None
    ipv6VXLANTunnelAddr: str | None = None
    vxlanTunnelMACAddrV6: str | None = None
    orchRefs: list[OrchRef] | None = None
    wireguard: NodeWireguardSpec | None = None  # here, not last: JSON keys in the Go struct's order
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

    # Status is a NodeStatus struct (`json:"status,omitempty"`): always printed, {} unset.
    go_unset: ClassVar[dict[str, Any]] = {"status": {}}

    kind: Literal["Node"] = "Node"
    spec: NodeSpec = NodeSpec()
    status: dict[str, Any] | None = None

    def validate_semantics(self) -> list[FieldError]:
        errs = []
        bgp = self.spec.bgp
        if bgp is not None and not bgp.dump():
            errs.append(FieldError("Node.Spec.BGP", "", "Spec.BGP should not be empty"))
        status = self.status or {}
        for field in ("wireguardPublicKey", "wireguardPublicKeyV6"):
            key = status.get(field)
            if key in (None, ""):
                continue
            problem = (wireguard_key_problem(key) if isinstance(key, str)
                       else "wireguard public key must be a string")
            if problem:
                errs.append(FieldError(f"Node.Status.{field[:1].upper()}{field[1:]}", key,
                                       problem))
        return errs

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
