"""IPPool: a range pods and tunnel addresses are allocated from, in blocks.

Defaults and rules are libcalico-go's (`clientv3/ippool.go`) and the CEL rules
on Calico's `IPPoolSpec` (api/pkg/apis/projectcalico/v3/ippool.go): modes
default to Never, blockSize to 26 (v4) / 122 (v6) when absent or 0,
nodeSelector to all(), allowedUses to [Workload, Tunnel]. A LoadBalancer pool
is LoadBalancer only, unencapsulated, exported and on every node; a Tunnel pool
has no namespaceSelector; global() is meaningless for pools; a disabled pool
may be smaller than its block (it allocates nothing). Rules that need other
pools (overlap) or the stored copy (CIDR and blockSize immutable) live in the
store, not here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ..errors import FieldError
from .base import Resource, StrictModel, check_selector

EncapMode = Literal["Never", "Always", "CrossSubnet"]
AllowedUse = Literal["Workload", "Tunnel", "LoadBalancer"]

LINK_LOCAL_V4 = ipaddress.ip_network("169.254.0.0/16")
LINK_LOCAL_V6 = ipaddress.ip_network("fe80::/10")




def _default_allowed_uses() -> list[AllowedUse]:
    return ["Workload", "Tunnel"]


class IPPoolSpec(StrictModel):
    # cidr has no omitempty, assignmentMode is a pointer; the bools drop false and
    # blockSize drops 0.
    go_keep_zero: ClassVar[frozenset[str]] = frozenset({"cidr", "assignmentMode"})

    cidr: str
    vxlanMode: EncapMode = "Never"
    ipipMode: EncapMode = "Never"
    # Go bools (no pointer): unset and false are one value, so a stored pool without
    # the field (Go's omitempty) reads back as false.
    natOutgoing: bool = False
    disabled: bool = False
    disableBGPExport: bool = False
    blockSize: int | None = None
    nodeSelector: str = "all()"
    namespaceSelector: str | None = None
    allowedUses: list[AllowedUse] = Field(default_factory=_default_allowed_uses)
    assignmentMode: Literal["Automatic", "Manual"] = "Automatic"

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        try:
            if "/" not in value:
                raise ValueError
            return str(ipaddress.ip_network(value, strict=True))
        except ValueError:
            pass
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError("IPPool CIDR must be a valid subnet") from None
        if "/" not in value:
            raise ValueError("IPPool CIDR must be a valid subnet (with a prefix length)")
        raise ValueError("IPPool CIDR is not strictly masked")

    @field_validator("nodeSelector", "namespaceSelector")
    @classmethod
    def _selectors(cls, value: str | None) -> str | None:
        return check_selector(value)

    @model_validator(mode="after")
    def _defaults(self) -> IPPoolSpec:
        if not self.blockSize:  # Calico: absent or 0 means the family's default
            self.blockSize = 122 if self.network.version == 6 else 26
        if self.nodeSelector == "":
            self.nodeSelector = "all()"
        if not self.allowedUses:  # clientv3/ippool.go: an empty list means the default
            self.allowedUses = _default_allowed_uses()
        return self

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.cidr)


class IPPool(Resource):
    kind_name: ClassVar[str] = "IPPool"
    plural: ClassVar[str] = "ippools"
    aliases: ClassVar[tuple[str, ...]] = ("ippool", "ippools", "ipp", "ipps", "pool", "pools")

    kind: Literal["IPPool"] = "IPPool"
    spec: IPPoolSpec

    def validate_semantics(self) -> list[FieldError]:
        spec, errs = self.spec, []
        net = spec.network
        v6 = net.version == 6
        if spec.ipipMode != "Never" and spec.vxlanMode != "Never":
            errs.append(FieldError("IPPool.Spec.IPIPMode", spec.ipipMode,
                                   "ipipMode and vxlanMode cannot both be enabled"))
        if v6 and spec.ipipMode != "Never":
            errs.append(FieldError("IPPool.Spec.IPIPMode", spec.ipipMode,
                                   "IPIP is not supported on IPv6 pools"))
        lo, hi = (116, 128) if v6 else (20, 32)
        assert spec.blockSize is not None
        if not lo <= spec.blockSize <= hi:
            errs.append(FieldError(
                "IPPool.Spec.BlockSize", spec.blockSize,
                "blockSize must be between 20 and 32 for IPv4 pools, "
                "and between 116 and 128 for IPv6 pools"))
        elif net.prefixlen > spec.blockSize and not spec.disabled:
            errs.append(FieldError(
                "IPPool.Spec.CIDR", spec.cidr,
                "IP pool size is too small for use with Calico IPAM. "
                "It must be equal to or greater than the block size."))
        link_local = LINK_LOCAL_V6 if v6 else LINK_LOCAL_V4
        if net.overlaps(link_local):
            errs.append(FieldError(
                "IPPool.Spec.CIDR", spec.cidr,
                f"IPPool CIDR overlaps with IPv{net.version} link local range {link_local}"))
        uses = ",".join(spec.allowedUses)
        if "LoadBalancer" in spec.allowedUses:
            if spec.ipipMode != "Never" or spec.vxlanMode != "Never":
                errs.append(FieldError("IPPool.Spec.AllowedUses", uses,
                                       "LoadBalancer IP pool cannot have IPIP or VXLAN enabled"))
            if {"Workload", "Tunnel"} & set(spec.allowedUses):
                errs.append(FieldError(
                    "IPPool.Spec.AllowedUses", uses,
                    "LoadBalancer cannot be combined with Workload or Tunnel allowed uses"))
            if spec.disableBGPExport:
                errs.append(FieldError("IPPool.Spec.DisableBGPExport", True,
                                       "LoadBalancer IP pools cannot disable BGP export"))
            if spec.nodeSelector != "all()":
                errs.append(FieldError(
                    "IPPool.Spec.NodeSelector", spec.nodeSelector,
                    "IP Pool with AllowedUse LoadBalancer must have nodeSelector set to all()"))
        if "Tunnel" in spec.allowedUses and spec.namespaceSelector:
            errs.append(FieldError("IPPool.Spec.NamespaceSelector", spec.namespaceSelector,
                                   "IP Pool with AllowedUse Tunnel cannot have namespaceSelector"))
        # Calico's CEL rule is a substring test, so "global(" anywhere is refused.
        if "global(" in spec.nodeSelector:
            errs.append(FieldError("IPPool.Spec.NodeSelector", spec.nodeSelector,
                                   "global() selector is not valid for IPPool nodeSelector"))
        if spec.namespaceSelector and "global(" in spec.namespaceSelector:
            errs.append(FieldError("IPPool.Spec.NamespaceSelector", spec.namespaceSelector,
                                   "global() selector is not valid for IPPool namespaceSelector"))
        if len(set(spec.allowedUses)) != len(spec.allowedUses):
            errs.append(FieldError("IPPool.Spec.AllowedUses", uses,
                                   "allowedUses must not repeat a use"))
        return errs


def immutable_changes(new: IPPool, current: IPPool) -> list[FieldError]:
    """Changes an update may not make to a stored pool (CIDR, blockSize, LoadBalancer
    use). Pure."""
    errs = []
    if new.spec.cidr != current.spec.cidr:
        errs.append(FieldError("IPPool.Spec.CIDR", new.spec.cidr, "IPPool CIDR cannot be modified"))
    if new.spec.blockSize != current.spec.blockSize:
        errs.append(FieldError("IPPool.Spec.BlockSize", new.spec.blockSize,
                               "IPPool BlockSize cannot be modified"))
    if "LoadBalancer" in current.spec.allowedUses and any(
            use != "LoadBalancer" for use in new.spec.allowedUses):
        # Wording (and its typo) is clientv3/ippool.go's.
        errs.append(FieldError(
            "IPPool.Spec.AllowedUses", ",".join(new.spec.allowedUses),
            "IPPool allowed use cannot be changed from LoadBalacer to Workload or Tunnel"))
    return errs


def find_overlap(pool: IPPool, others: Iterable[IPPool]) -> FieldError | None:
    """The first pool among `others` (other names) whose CIDR overlaps `pool`'s. Pure."""
    net = pool.spec.network
    for other in others:
        if other.name != pool.name and net.overlaps(other.spec.network):
            return FieldError(
                "IPPool.Spec.CIDR", pool.spec.cidr,
                f"IPPool({pool.name}) CIDR overlaps with IPPool({other.name}) CIDR "
                f"{other.spec.cidr}")
    return None
