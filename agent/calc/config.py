"""CalcConfig: the node-local facts and settings the calculation needs besides the cluster.

The agent fills it from its configuration and from the host (the parent
interface is the one holding the node IP; the host MTU is that interface's).
Tunnel MTUs follow Felix's auto-detection (`int_dataplane.go`
ConfigureDefaultMTUs): host MTU - 20 for IPIP, - 50 for IPv4 VXLAN, unless set.
"""

from __future__ import annotations

from dataclasses import dataclass

from policy.model import EndpointToHostAction

from ..types import VXLAN_PORT, VXLAN_VNI

IPIP_OVERHEAD = 20
VXLAN_OVERHEAD = 50
# Felix's fallback when no interface matches MTUIfacePattern.
DEFAULT_HOST_MTU = 1460
MIN_IPV4_MTU = 68


@dataclass(frozen=True)
class CalcConfig:
    host_mtu: int = DEFAULT_HOST_MTU
    ipip_mtu: int | None = None  # None: host_mtu - 20
    vxlan_mtu: int | None = None  # None: host_mtu - 50
    vxlan_vni: int = VXLAN_VNI
    vxlan_port: int = VXLAN_PORT
    # The interface holding the node IP: device of same-subnet and no-encap routes,
    # parent of vxlan.calico. None until the agent knows it (those routes are withheld).
    parent_interface: str | None = None
    # Program the natOutgoing chain and ipsets at all (off when something else does NAT).
    nat_outgoing: bool = True
    # MASQUERADE --random-fully, when the kernel supports it (Felix checks the features).
    masquerade_random_fully: bool = True
    # Route other nodes' IPIP and no-encap blocks from the datastore. True without BGP;
    # with BGP those routes come from the learned best paths only (agent/calc/routes.py).
    datastore_cluster_routes: bool = True
    # Felix's ExternalNodesCIDRList: extra sources allowed to send IPIP.
    external_nodes_cidrs: tuple[str, ...] = ()
    # Felix's DefaultEndpointToHostAction: what cali-wl-to-host does with a workload's
    # traffic to its own host once its egress policy allowed it. Return is what an
    # etcd-mode calico-node writes into the node's FelixConfiguration at start-up.
    endpoint_to_host_action: EndpointToHostAction = "Return"
    # Felix's FailsafeInbound/OutboundHostPorts, (protocol, CIDR or None, port): host
    # endpoint chains jump to them; a node without host endpoints programs neither.
    failsafe_inbound: tuple[tuple[str, str | None, int], ...] = ()
    failsafe_outbound: tuple[tuple[str, str | None, int], ...] = ()

    def __post_init__(self) -> None:
        for name in ("host_mtu", "ipip_mtu", "vxlan_mtu"):
            value = getattr(self, name)
            if value is not None and not MIN_IPV4_MTU <= value <= 65535:
                raise ValueError(f"{name} must be between {MIN_IPV4_MTU} and 65535, got {value}")
        if self.effective_vxlan_mtu < MIN_IPV4_MTU or self.effective_ipip_mtu < MIN_IPV4_MTU:
            raise ValueError(f"host_mtu {self.host_mtu} leaves no room for tunnel headers")
        if not 0 < self.vxlan_vni < 2**24:
            raise ValueError(f"vxlan_vni must be between 1 and 16777215, got {self.vxlan_vni}")
        if not 0 < self.vxlan_port <= 65535:
            raise ValueError(f"vxlan_port must be between 1 and 65535, got {self.vxlan_port}")

    @property
    def effective_ipip_mtu(self) -> int:
        return self.ipip_mtu if self.ipip_mtu is not None else self.host_mtu - IPIP_OVERHEAD

    @property
    def effective_vxlan_mtu(self) -> int:
        return self.vxlan_mtu if self.vxlan_mtu is not None else self.host_mtu - VXLAN_OVERHEAD
