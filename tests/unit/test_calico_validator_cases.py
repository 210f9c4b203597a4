"""Calico's own validator cases for the kinds tortie has, as a table.

Every case below is an `Entry(...)` of the "Validator" table in Calico's
libcalico-go/lib/validator/v3/validator_test.go (its description is kept as the
case id, so a case can be found there with grep). Calico validates some
entries as a bare spec or sub-struct (a BGPPeerSpec, a WorkloadEndpointPort,
an IPNAT); here each is wrapped in the smallest whole document of its kind, as
`ctl apply` would receive it, because tortie validates whole documents only.
The wrappers add nothing the case is about (a name, an interfaceName, an
ipNetwork covering a NAT).

Go values that have no JSON spelling of their own are written as Calico
serialises them: `v1.Duration{200 * time.Second}` is "3m20s", a zero
`AssignmentMode` pointer is "".

Where tortie deliberately differs from Calico the case says so (`differs=`),
asserts what tortie does instead, and docs/datastore.md "Validation" explains
why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from datastore.errors import ValidationError
from datastore.resources import parse_document

VALIDATOR_TEST = "libcalico-go/lib/validator/v3/validator_test.go"
API = "projectcalico.org/v3"

# validator_test.go's shared values (init(), top of the file).
IPV4_1, IPV4_2 = "1.2.3.4", "100.200.0.0"
IPV6_1, IPV6_2 = "aabb:aabb::ffff", "aabb::abcd"
NETV4_1, NETV4_2, NETV4_3, NETV4_4, NETV4_5 = (
    "1.2.3.4/32", "1.2.0.0/32", "1.2.3.0/26", "1.0.0.0/10", "1.2.3.0/27")
NETV6_1, NETV6_2, NETV6_3 = "aabb:aabb::ffff/128", "aabb:aabb::/128", "aabb:aabb::0000/122"
PEERV4_1, PEERV6_1 = "9.9.9.9:4444", "[aabb::ffff]:4444"
BAD_IPV4_1, BAD_IPV6_1 = "999.999.999.999", "xyz:::"
MAX_ANNOTATIONS = 256 * (1 << 10)
VALUE63, VALUE64 = "x" * 63, "x" * 64
SECRET = {"secretKeyRef": {"name": "test-secret", "key": "bgp-password"}}
PREFIX_ADV = [{"cidr": "192.168.10.0/28", "communities": ["100:100"]}]


@dataclass(frozen=True)
class Case:
    """One validator_test.go entry: the document, Calico's verdict, tortie's if it differs."""

    description: str
    doc: dict[str, Any]
    calico_valid: bool
    differs: str = ""  # why tortie's verdict is the opposite of Calico's (deliberate)

    @property
    def tortie_valid(self) -> bool:
        return self.calico_valid != bool(self.differs)


def _doc(kind: str, spec: dict[str, Any], name: str, **extra: Any) -> dict[str, Any]:
    meta = {"name": name, **extra.pop("metadata", {})}
    return {"apiVersion": API, "kind": kind, "metadata": meta, "spec": spec, **extra}


def pool(spec: dict[str, Any], name: str = "pool.name", **meta: Any) -> dict[str, Any]:
    return _doc("IPPool", spec, name, metadata=meta)


def peer(spec: dict[str, Any], name: str = "test") -> dict[str, Any]:
    return _doc("BGPPeer", spec, name)


def bgpconfig(spec: dict[str, Any]) -> dict[str, Any]:
    return _doc("BGPConfiguration", spec, "default")


def node(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    doc = _doc("Node", spec, "node1")
    if status is not None:
        doc["status"] = status
    return doc


def wep(spec: dict[str, Any]) -> dict[str, Any]:
    return _doc("WorkloadEndpoint", spec, "wep1", metadata={"namespace": "default"})


def wep_port(port: dict[str, Any]) -> dict[str, Any]:
    """Calico validates an internalapi.WorkloadEndpointPort alone; tortie inside an endpoint."""
    return wep({"interfaceName": "eth0", "ports": [port]})


def ipnat(internal: str, external: str) -> dict[str, Any]:
    """Calico validates an internalapi.IPNAT alone; tortie inside an endpoint whose
    ipNetworks cover the internal address (the NAT rule the IPNAT cases are not about)."""
    return wep({"interfaceName": "cali012371237", "ipNetworks": [internal],
                "ipNATs": [{"internalIP": internal, "externalIP": external}]})


def pool_mode(ipip: str | None = None, vxlan: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"cidr": "1.2.3.0/24"}
    if ipip is not None:
        spec["ipipMode"] = ipip
    if vxlan is not None:
        spec["vxlanMode"] = vxlan
    return pool(spec, name="test-pool")


# Calico's table validates the bare struct, before libcalico-go's client
# (clientv3/ippool.go validateAndSetDefaults) fills an absent allowedUses with
# [Workload, Tunnel]; calicoctl validates after that defaulting, and so does
# tortie, so the "Tunnel cannot have namespaceSelector" rule applies. With
# `allowedUses: [Workload]` the same pool is accepted (test below).
DEFAULTED_TUNNEL = ("validated after allowedUses defaults to [Workload, Tunnel], as "
                    "calicoctl's client does")

TCP_PORT = {"name": "a-valid-port", "protocol": "TCP", "port": 1234}

CASES = [
    # -- (API model) EndpointPorts ------------------------------------------------------
    Case("should accept EndpointPort with tcp protocol", wep_port(TCP_PORT), True),
    Case("should accept EndpointPort with udp protocol",
         wep_port({**TCP_PORT, "protocol": "UDP"}), True),
    Case("should accept EndpointPort with sctp protocol",
         wep_port({**TCP_PORT, "protocol": "SCTP"}), True),
    Case("should reject EndpointPort with empty name",
         wep_port({"name": "", "protocol": "UDP", "port": 1234}), False),
    Case("should accept EndpointPort with empty name but HostPort specified",
         wep_port({"name": "", "protocol": "UDP", "port": 1234, "hostPort": 2345}), True),
    Case("should reject EndpointPort with no protocol",
         wep_port({"name": "a-valid-port", "port": 1234}), False),
    Case("should reject EndpointPort with numeric protocol",
         wep_port({"name": "a-valid-port", "protocol": 123, "port": 1234}), False),
    Case("should reject EndpointPort with no port",
         wep_port({"name": "a-valid-port", "protocol": "TCP"}), False),

    # -- (API) WorkloadEndpointSpec (ports, spoofing) ------------------------------------
    Case("should accept WorkloadEndpointSpec with a port (m)", wep_port(TCP_PORT), True),
    Case("should reject WorkloadEndpointSpec with an unnamed port and no host mapping (m)",
         wep_port({"protocol": "TCP", "port": 1234}), False),
    Case("should accept WorkloadEndpointSpec with name-clashing ports (m)",
         wep({"interfaceName": "eth0", "ports": [
             TCP_PORT, {"name": "a-valid-port", "protocol": "UDP", "port": 5456}]}), True),
    Case("should accept WorkloadEndpointSpec with an unnamed port and a host port (m)",
         wep_port({"protocol": "TCP", "port": 1234, "hostPort": 2345}), True),
    Case("should reject WorkloadEndpointSpec with a port with an invalid host IP (m)",
         wep_port({"protocol": "TCP", "port": 1234, "hostPort": 2345, "hostIP": BAD_IPV4_1}),
         False),
    Case("should reject WorkloadEndpointSpec with an invalid source spoofing config (m)",
         wep({"interfaceName": "eth0", "allowSpoofedSourcePrefixes": ["10.abcd"]}), False),
    Case("should accept WorkloadEndpointSpec with an ip or prefix in the source spoofing "
         "config (m)",
         wep({"interfaceName": "eth0",
              "allowSpoofedSourcePrefixes": ["10.0.0.1", "192.168.0.0/16"]}), True),

    # -- BGPConfiguration (logging, service IPs, mesh, interfaces) -----------------------
    Case("should accept a valid BGP logging level: Info",
         bgpconfig({"logSeverityScreen": "Info"}), True),
    Case("should accept a lowercase BGP logging level: info",
         bgpconfig({"logSeverityScreen": "info"}), True),
    Case("should accept an uppercase BGP logging level: INFO",
         bgpconfig({"logSeverityScreen": "INFO"}), True),
    Case("should reject an invalid BGP logging level: invalidLvl",
         bgpconfig({"logSeverityScreen": "invalidLvl"}), False),
    Case("should accept a valid BGP clusterIPs: 1.2.3.4",
         bgpconfig({"serviceClusterIPs": [{"cidr": "1.2.3.4"}]}), True),
    Case("should accept a valid BGP externalIPs: 8.8.8.8",
         bgpconfig({"serviceExternalIPs": [{"cidr": "8.8.8.8"}]}), True),
    Case("should reject invalid BGP clusterIPs: x.x.x.x",
         bgpconfig({"serviceClusterIPs": [{"cidr": "x.x.x.x"}]}), False),
    Case("should reject invalid BGP externalIPs: x.x.x.x",
         bgpconfig({"serviceExternalIPs": [{"cidr": "y.y.y.y"}]}), False),
    Case("should accept valid IPv6 BGP clusterIP",
         bgpconfig({"serviceClusterIPs": [{"cidr": "fdf5:1234::102:304"}]}), True),
    Case("should accept valid IPv6 BGP externalIP",
         bgpconfig({"serviceExternalIPs": [{"cidr": "fdf5:1234::808:808"}]}), True),
    Case("should accept a node mesh BGP password if node to node mesh is enabled",
         bgpconfig({"nodeToNodeMeshEnabled": True, "nodeMeshPassword": SECRET}), True),
    Case("should reject a node mesh BGP password if node to node mesh is disabled",
         bgpconfig({"nodeToNodeMeshEnabled": False, "nodeMeshPassword": SECRET}), False),
    Case("should accept a node mesh max restart time if node to node mesh is enabled",
         bgpconfig({"nodeToNodeMeshEnabled": True, "nodeMeshMaxRestartTime": "3m20s"}), True),
    Case("should reject a node mesh max restart time if node to node mesh is disabled",
         bgpconfig({"nodeToNodeMeshEnabled": False, "nodeMeshMaxRestartTime": "3m20s"}), False),
    Case("should accept valid interface names",
         bgpconfig({"ignoredInterfaces": ["valid_iface*", "interface_name"]}), True),
    Case("should reject invalid interface name", bgpconfig({"ignoredInterfaces": ["*"]}), False),

    # -- (API) Labels and Annotations (metadata) ----------------------------------------
    Case("should accept valid labels in metadata",
         pool({"cidr": NETV4_3}, labels={"projectcalico.org/label": VALUE63}), True),
    Case("should reject an excessively long value in labels in metadata",
         pool({"cidr": NETV4_3}, labels={"projectcalico.org/label": VALUE64}), False),
    Case("should reject invalid labels in metadata (uppercase domain)",
         pool({"cidr": NETV4_3}, labels={"ProjectCalico.org/label": "value"}), False),
    Case("should accept valid labels in metadata (uppercase name)",
         pool({"cidr": NETV4_3}, labels={"projectcalico.org/Label": "value"}), True),
    Case("should reject invalid annotations in metadata",
         pool({"cidr": NETV4_3}, annotations={"projectcalico.org$label": "value"}), False),
    Case("should accept valid annotations in metadata (uppercase domain and name)",
         pool({"cidr": NETV4_3}, annotations={"ProjectCalico.org/Label": "value"}), True),
    Case("should allow annotations in metadata <= 256k",
         pool({"cidr": NETV4_3}, annotations={"key": "x" * (MAX_ANNOTATIONS - 3)}), True),
    Case("should disallow annotations in metadata > 256k",
         pool({"cidr": NETV4_3}, annotations={"key": "x" * (MAX_ANNOTATIONS - 2)}), False),
    Case("should allow a name of 253 chars", pool({"cidr": NETV4_3}, name="x" * 253), True),
    Case("should disallow a name of 254 chars", pool({"cidr": NETV4_3}, name="x" * 254), False),
    Case("should allow a valid nodeSelector",
         pool({"cidr": NETV4_3, "nodeSelector": 'foo == "bar"'}), True),
    Case("should disallow a invalid nodeSelector",
         pool({"cidr": NETV4_3, "nodeSelector": "this is not valid selector syntax"}), False),

    # -- (API) Interface ------------------------------------------------------------------
    Case("should accept a valid interface", wep({"interfaceName": "Valid_Iface.0-9"}), True),
    Case("should reject an interface that is too long",
         wep({"interfaceName": "interfaceTooLong"}), False),
    Case("should reject & in an interface", wep({"interfaceName": "Invalid&Intface"}), False),
    Case("should reject # in an interface", wep({"interfaceName": "Invalid#Intface"}), False),
    Case("should reject : in an interface", wep({"interfaceName": "Invalid:Intface"}), False),

    # -- (API) IPNAT ----------------------------------------------------------------------
    Case("should accept valid IPNAT IPv4", ipnat(IPV4_1, IPV4_2), True),
    Case("should accept valid IPNAT IPv6", ipnat(IPV6_1, IPV6_2), True),
    Case("should reject IPNAT mixed IPv4 (int) and IPv6 (ext)", ipnat(IPV4_1, IPV6_1), False),
    Case("should reject IPNAT mixed IPv6 (int) and IPv4 (ext)", ipnat(IPV6_1, IPV4_1), False),

    # -- (API) WorkloadEndpointSpec -------------------------------------------------------
    Case("should accept workload endpoint with interface only",
         wep({"interfaceName": "cali012371237"}), True),
    Case("should accept workload endpoint with networks and no nats",
         wep({"interfaceName": "cali012371237",
              "ipNetworks": [NETV4_1, NETV4_2, NETV6_1, NETV6_2]}), True),
    Case("should accept workload endpoint with IPv4 NAT covered by network",
         wep({"interfaceName": "cali012371237", "ipNetworks": [NETV4_1],
              "ipNATs": [{"internalIP": IPV4_1, "externalIP": IPV4_2}]}), True),
    Case("should accept workload endpoint with IPv6 NAT covered by network",
         wep({"interfaceName": "cali012371237", "ipNetworks": [NETV6_1],
              "ipNATs": [{"internalIP": IPV6_1, "externalIP": IPV6_2}]}), True),
    Case("should accept workload endpoint with IPv4 and IPv6 NAT covered by network",
         wep({"interfaceName": "cali012371237", "ipNetworks": [NETV4_1, NETV6_1],
              "ipNATs": [{"internalIP": IPV4_1, "externalIP": IPV4_2},
                         {"internalIP": IPV6_1, "externalIP": IPV6_2}]}), True),
    Case("should accept workload endpoint with mixed-case ContainerID",
         wep({"interfaceName": "cali012371237", "containerID": "Cath01234-G"}), True),
    Case("should reject workload endpoint with no config", wep({}), False),
    Case("should reject workload endpoint with IPv4 networks that contain >1 address",
         wep({"interfaceName": "cali012371237", "ipNetworks": [NETV4_3]}), False),
    Case("should reject workload endpoint with IPv6 networks that contain >1 address",
         wep({"interfaceName": "cali012371237", "ipNetworks": [NETV6_3]}), False),
    Case("should reject workload endpoint with nats and no networks",
         wep({"interfaceName": "cali012371237",
              "ipNATs": [{"internalIP": IPV4_2, "externalIP": IPV4_1}]}), False),
    Case("should reject workload endpoint with IPv4 NAT not covered by network",
         wep({"interfaceName": "cali012371237", "ipNetworks": [NETV4_1],
              "ipNATs": [{"internalIP": IPV4_2, "externalIP": IPV4_1}]}), False),
    Case("should reject workload endpoint with IPv6 NAT not covered by network",
         wep({"interfaceName": "cali012371237", "ipNetworks": [NETV6_1],
              "ipNATs": [{"internalIP": IPV6_2, "externalIP": IPV6_1}]}), False),
    Case("should reject workload endpoint containerID that starts with a dash",
         wep({"interfaceName": "cali0134", "containerID": "-abcdefg"}), False),
    Case("should reject workload endpoint containerID that ends with a dash",
         wep({"interfaceName": "cali0134", "containerID": "abcdeSg-"}), False),
    Case("should reject workload endpoint containerID that contains a period",
         wep({"interfaceName": "cali0134", "containerID": "abcde-j.g"}), False),

    # -- (API) IPPool ---------------------------------------------------------------------
    Case("should accept IP pool with IPv4 CIDR /26", pool({"cidr": NETV4_3}), True),
    Case("should accept IP pool with IPv4 CIDR /10", pool({"cidr": NETV4_4}), True),
    Case("should accept IP pool with IPv6 CIDR /122",
         pool({"cidr": "aabb:aabb::/122", "ipipMode": "Never", "vxlanMode": "Never"}), True),
    Case("should accept IP pool with IPv6 CIDR /10",
         pool({"cidr": "aa00::/10", "ipipMode": "Never", "vxlanMode": "Never"}), True),
    Case("should accept a disabled IP pool with IPv4 CIDR /27",
         pool({"cidr": NETV4_5, "disabled": True}), True),
    Case("should accept a disabled IP pool with IPv6 CIDR /128",
         pool({"cidr": NETV6_1, "ipipMode": "Never", "vxlanMode": "Never", "disabled": True}),
         True),
    Case("should reject IP pool with IPv4 CIDR /27", pool({"cidr": NETV4_5}), False),
    Case("should reject IP pool with IPv6 CIDR /128", pool({"cidr": NETV6_1}), False),
    Case("should reject IP pool with IPv4 CIDR /33", pool({"cidr": "1.2.3.4/33"}), False),
    Case("should reject IP pool with IPv6 CIDR /129", pool({"cidr": "aa:bb::/129"}), False),
    Case("should reject IPIPMode 'Always' for IPv6 pool",
         pool({"cidr": NETV6_1, "ipipMode": "Always", "vxlanMode": "Never"}), False),
    Case("should reject VXLANMode 'Always' for IPv6 pool",
         pool({"cidr": NETV6_1, "vxlanMode": "Always", "ipipMode": "Never"}), False),
    Case("should reject IPv4 pool with a CIDR range overlapping with Link Local range",
         pool({"cidr": "169.254.5.0/24"}), False),
    Case("should reject IPv6 pool with a CIDR range overlapping with Link Local range",
         pool({"cidr": "fe80::/120"}), False),
    Case("should accept IP pool with valid allowed uses",
         pool({"cidr": NETV4_4, "allowedUses": ["Workload", "Tunnel"]}), True),
    Case("should reject IP pool with invalid allowed uses combination",
         pool({"cidr": NETV4_4, "allowedUses": ["LoadBalancer", "Tunnel"]}), False),
    Case("should reject IP pool with invalid allowed uses",
         pool({"cidr": NETV4_4, "allowedUses": ["Garbage"]}), False),
    Case("should accept IP pool with valid AssignmentMode",
         pool({"cidr": NETV4_4, "assignmentMode": "Automatic"}), True),
    Case("should reject IP pool with empty assignment mode",
         pool({"cidr": NETV4_4, "assignmentMode": ""}), False),
    Case("should reject IP pool with LoadBlancer and disableBGPExport true",
         pool({"cidr": NETV4_4, "allowedUses": ["LoadBalancer"], "disableBGPExport": True}),
         False),
    Case("should reject IP pool with LoadBlancer and VXLAN mode enabled",
         pool({"cidr": NETV4_4, "allowedUses": ["LoadBalancer"], "vxlanMode": "Always"}), False),
    Case("should reject IP pool with LoadBlancer and IPIP mode enabled",
         pool({"cidr": NETV4_4, "allowedUses": ["LoadBalancer"], "ipipMode": "Always"}), False),
    Case("should reject IP pool with LoadBlancer and nodeSelector other than all()",
         pool({"cidr": NETV4_4, "allowedUses": ["LoadBalancer"], "nodeSelector": "!all()"}),
         False),
    Case("should reject IP pool with Tunnel allowedUse and namespaceSelector",
         pool({"cidr": NETV4_4, "allowedUses": ["Tunnel"],
               "namespaceSelector": 'region == "east"'}), False),
    Case("should reject IP pool with Tunnel and Workload allowedUses and namespaceSelector",
         pool({"cidr": NETV4_4, "allowedUses": ["Workload", "Tunnel"],
               "namespaceSelector": 'region == "east"'}), False),
    Case("should accept IP pool with Tunnel allowedUse and no namespaceSelector",
         pool({"cidr": NETV4_4, "allowedUses": ["Tunnel"]}), True),
    Case("should reject IP pool with invalid nodeSelector (global)",
         pool({"cidr": NETV4_4, "nodeSelector": "global()"}), False),
    Case("should accept IP pool with valid nodeSelector",
         pool({"cidr": NETV4_4, "nodeSelector": 'region == "east"'}), True),
    Case("should accept IP pool with complex nodeSelector",
         pool({"cidr": NETV4_4,
               "nodeSelector": 'region == "east" && environment == "production"'}), True),
    Case("should accept IP pool with set-based nodeSelector",
         pool({"cidr": NETV4_4, "nodeSelector": 'region in {"east", "west"}'}), True),
    Case("should accept IP pool with existence check nodeSelector",
         pool({"cidr": NETV4_4, "nodeSelector": "has(team)"}), True),
    Case("should accept IP pool with all() nodeSelector",
         pool({"cidr": NETV4_4, "nodeSelector": "all()"}), True),
    Case("should reject IP pool with invalid namespaceSelector (global)",
         pool({"cidr": NETV4_4, "namespaceSelector": "global()"}), False),
    Case("should accept IP pool with valid namespaceSelector",
         pool({"cidr": NETV4_4, "namespaceSelector": 'region == "east"'}), True,
         differs=DEFAULTED_TUNNEL),
    Case("should accept IP pool with complex namespaceSelector",
         pool({"cidr": NETV4_4, "namespaceSelector": 'team == "backend" || team == "frontend"'}),
         True, differs=DEFAULTED_TUNNEL),
    Case("should accept IP pool with substring namespaceSelector",
         pool({"cidr": NETV4_4, "namespaceSelector": 'environment contains "prod"'}), True,
         differs=DEFAULTED_TUNNEL),

    # -- (API) IPIPMode / VXLANMode -------------------------------------------------------
    Case("should accept IPPool with no IPIP mode specified", pool_mode(), True),
    Case("should accept IPIP mode Never (api)", pool_mode("Never", "Never"), True),
    Case("should accept IPIP mode Never", pool_mode("Never"), True),
    Case("should accept IPIP mode Always", pool_mode("Always"), True),
    Case("should accept IPIP mode CrossSubnet", pool_mode("CrossSubnet"), True),
    Case("should reject IPIP mode badVal", pool_mode("badVal"), False),
    Case("should reject IPIP mode never (lower case)", pool_mode("never"), False),
    Case("should reject IPIP mode and VXLAN mode", pool_mode("Always", "Always"), False),
    Case("should accept VXLAN mode Always", pool_mode(vxlan="Always"), True),
    Case("should accept VXLAN mode CrossSubnet", pool_mode(vxlan="CrossSubnet"), True),
    Case("should accept VXLAN mode Never", pool_mode(vxlan="Never"), True),
    Case("should reject VXLAN mode never", pool_mode(vxlan="never"), False),
    Case("should reject VXLAN mode badVal", pool_mode(vxlan="badVal"), False),

    # -- (API) BGPPeerSpec ----------------------------------------------------------------
    Case("should accept valid BGPPeerSpec", peer({"peerIP": IPV4_1}), True),
    Case("should reject invalid BGPPeerSpec (IPv4)", peer({"peerIP": BAD_IPV4_1}), False),
    Case("should reject invalid BGPPeerSpec (IPv6)", peer({"peerIP": BAD_IPV6_1}), False),
    Case("should reject BGPPeerSpec with both Node and NodeSelector",
         peer({"node": "my-node", "nodeSelector": "has(mylabel)"}), False),
    Case("should reject BGPPeerSpec with both PeerIP and PeerSelector",
         peer({"peerIP": IPV4_1, "peerSelector": "has(mylabel)"}), False),
    Case("should reject BGPPeerSpec with both ASNumber and PeerSelector",
         peer({"asNumber": 61234, "peerSelector": "has(mylabel)"}), False),
    Case("should accept BGPPeerSpec with NodeSelector and PeerSelector",
         peer({"nodeSelector": "has(mylabel)", "peerSelector": "has(mylabel)"}), True),
    Case("should reject BGPPeerSpec with LocalWorkloadSelector and empty ASNumber",
         peer({"localWorkloadSelector": "has(labelone)"}), False),
    Case("should reject BGPPeerSpec with both LocalWorkloadSelector and PeerSelector",
         peer({"localWorkloadSelector": "has(labelone)", "peerSelector": "has(labeltwo)",
               "asNumber": 61234}), False),
    Case("should reject BGPPeerSpec with both LocalWorkloadSelector and PeerIP",
         peer({"localWorkloadSelector": "has(labelone)", "peerIP": IPV4_1,
               "asNumber": 61234}), False),
    Case("should reject BGPPeerSpec with both positive KeepOriginalNextHop and non-empty "
         "NextHopMode",
         peer({"keepOriginalNextHop": True, "nextHopMode": "Auto"}, name="test-peer"), False),
    Case("should reject BGPPeer with ReachableBy but without PeerIP",
         peer({"reachableBy": IPV4_2}, name="test-peer"), False),
    Case("should reject BGPPeer with ReachableBy (IPv6) but without PeerIP",
         peer({"reachableBy": IPV6_2}, name="test-peer"), False),
    Case("should accept BGPPeer with ReachableBy and PeerIP",
         peer({"peerIP": PEERV4_1, "reachableBy": IPV4_1}), True),
    Case("should accept BGPPeer with ReachableBy (IPv6) and PeerIP (IPv6)",
         peer({"peerIP": PEERV6_1, "reachableBy": IPV6_1}), True),
    Case("should reject BGPPeer with invalid ReachableBy",
         peer({"peerIP": PEERV4_1, "reachableBy": BAD_IPV4_1}), False),
    Case("should reject BGPPeer with invalid ReachableBy (IPv6)",
         peer({"peerIP": PEERV6_1, "reachableBy": BAD_IPV6_1}), False),
    Case("should reject BGPPeer with mismatched family address of ReachableBy and PeerIP",
         peer({"peerIP": IPV4_1, "reachableBy": IPV6_1}), False),
    Case("should reject BGPPeer with mismatched family address of ReachableBy and PeerIP:Port",
         peer({"peerIP": PEERV4_1, "reachableBy": IPV6_1}), False),
    Case("should reject BGPPeer with mismatched family address of ReachableBy and PeerIP (IPv6)",
         peer({"peerIP": IPV6_1, "reachableBy": IPV4_1}), False),
    Case("should reject BGPPeer with mismatched family address of ReachableBy and "
         "PeerIP:Port (IPv6)",
         peer({"peerIP": PEERV6_1, "reachableBy": IPV4_1}), False),
    Case("should accept BGPPeerSpec with Password",
         peer({"peerIP": IPV4_1, "password": {
             "secretKeyRef": {"name": "tigera-bgp-passwords", "key": "my-peering"}}}), True),
    Case("should reject invalid BGPPeerSpec (selector)",
         peer({"nodeSelector": "kubernetes.io/hostname: == 'casey-crc-kadm-node-4'"}), False),
    Case("should accept BGPPeerSpec with port in PeerIP (IPv4)",
         peer({"peerIP": "192.168.1.1:500"}), True),
    Case("should accept BGPPeerSpec with port in PeerIP (IPv6)",
         peer({"peerIP": "[9000::]:500"}), True),
    Case("should reject BGPPeerSpec with invalid port in PeerIP (IPv4) [bracketed]",
         peer({"peerIP": "[192.168.0.0]:98956"}), False),
    Case("should reject BGPPeerSpec with invalid port in PeerIP (IPv4) [65536]",
         peer({"peerIP": "192.168.0.0:65536"}), False),
    Case("should reject BGPPeerSpec with invalid port in PeerIP (IPv4) [0]",
         peer({"peerIP": "192.168.0.0:0"}), False),
    Case("should reject BGPPeerSpec with invalid IP in PeerIP (IPv4)",
         peer({"peerIP": "192.168.0.330:170"}), False),
    Case("should reject BGPPeerSpec with invalid port in PeerIP (IPv6) [98956]",
         peer({"peerIP": "[9000::]:98956"}), False),
    Case("should reject invalid BGPPeerSpec without port set in PeerIP (IPv4)",
         peer({"peerIP": "192.168.0.0:"}), False),
    Case("should reject invalid BGPPeerSpec without port set in PeerIP (IPv6)",
         peer({"peerIP": "[9000::]:"}), False),
    Case("should reject BGPPeerSpec with invalid port in PeerIP (IPv6) [65536]",
         peer({"peerIP": "[9000::]:65536"}), False),
    Case("should reject BGPPeerSpec with invalid port in PeerIP (IPv6) [0]",
         peer({"peerIP": "[9000::]:0"}), False),
    Case("should reject BGPPeerSpec with invalid IP in PeerIP (IPv6)",
         peer({"peerIP": "[9000::FFFFF]:170"}), False),
    Case("should reject invalid BGPPeerSpec when port is set with empty IP in PeerIP (IPv4)",
         peer({"peerIP": ":8552"}), False),
    Case("should reject invalid BGPPeerSpec when port is set with empty IP in PeerIP (IPv6)",
         peer({"peerIP": "[]:8552"}), False),
    Case("BGPPeer with valid SourceAddress UseNodeIP",
         peer({"sourceAddress": "UseNodeIP"}, name="test-peer"), True),
    Case("BGPPeer with valid SourceAddress None",
         peer({"sourceAddress": "None"}, name="test-peer"), True),
    Case("BGPPeer with invalid SourceAddress",
         peer({"sourceAddress": "rubbish"}, name="test-peer"), False),
    Case("BGPPeer with valid MaxRestartTime", peer({"maxRestartTime": "10s"}), True),

    # -- (API) NodeSpec and Wireguard -----------------------------------------------------
    Case("should accept node with IPv4 BGP", node({"bgp": {"ipv4Address": NETV4_1}}), True),
    Case("should accept node with IPv6 BGP", node({"bgp": {"ipv6Address": NETV6_1}}), True),
    Case("should accept node with tunnel IP in BGP",
         node({"bgp": {"ipv4IPIPTunnelAddr": "10.0.0.1"}}), True),
    Case("should accept node with no BGP", node({}), True),
    Case("should reject node with an empty BGP", node({"bgp": {}}), False),
    Case("should reject node with IPv6 address in IPv4 field",
         node({"bgp": {"ipv4Address": NETV6_1}}), False),
    Case("should reject node with IPv4 address in IPv6 field",
         node({"bgp": {"ipv6Address": NETV4_1}}), False),
    Case("should reject node with bad RR cluster ID #1",
         node({"bgp": {"ipv4Address": NETV4_1, "routeReflectorClusterID": "abcdef"}}), False),
    Case("should reject node with bad RR cluster ID #2",
         node({"bgp": {"ipv4Address": NETV4_1, "routeReflectorClusterID": "300.34.3.1"}}),
         False),
    Case("should accept node with good RR cluster ID",
         node({"bgp": {"ipv4Address": NETV4_1, "routeReflectorClusterID": "245.0.0.1"}}), True),
    Case("should allow valid Wireguard public-key",
         node({}, status={"wireguardPublicKey": "jlkVyQYooZYzI2wFfNhSZez5eWh44yfq1wKVjLvSXgY="}),
         True),
    Case("should allow valid IP address on Wireguard config",
         node({"wireguard": {"interfaceIPv4Address": IPV4_1}}), True),
    Case("should reject invalid IP address on Wireguard config",
         node({"wireguard": {"interfaceIPv4Address": "foo.bar"}}), False),
    Case("should reject invalid Wireguard public-key",
         node({}, status={"wireguardPublicKey": "foobar"}), False),

    # -- BGP Communities validation in BGPConfigurationSpec ------------------------------
    Case("should not accept community when PrefixAdvertisement is empty",
         bgpconfig({"communities": [{"name": "community-test", "value": "101:5695"}]}), False),
    Case("should not accept communities with value and without name",
         bgpconfig({"communities": [{"value": "536:785"}], "prefixAdvertisements": PREFIX_ADV}),
         False),
    Case("should not accept communities with name and without value",
         bgpconfig({"communities": [{"name": "community-test"}],
                    "prefixAdvertisements": PREFIX_ADV}), False),
    Case("should accept communities with name and standard BGP community value",
         bgpconfig({"communities": [{"name": "community-test", "value": "100:520"}],
                    "prefixAdvertisements": PREFIX_ADV}), True),
    Case("should accept communities with name and large BGP community value",
         bgpconfig({"communities": [{"name": "community-test", "value": "100:520:56"}],
                    "prefixAdvertisements": PREFIX_ADV}), True),
    Case("should not accept communities with name and invalid community value/format [100]",
         bgpconfig({"communities": [{"name": "community-test", "value": "100"}],
                    "prefixAdvertisements": PREFIX_ADV}), False),
    Case("should not accept communities with name and invalid community value/format [ab-n]",
         bgpconfig({"communities": [{"name": "community-test", "value": "ab-n"}],
                    "prefixAdvertisements": PREFIX_ADV}), False),
    Case("should not accept communities with name and invalid standard community value(> 16 "
         "bit)",
         bgpconfig({"communities": [{"name": "community-test", "value": "65536:999999"}],
                    "prefixAdvertisements": PREFIX_ADV}), False),
    Case("should not accept communities with name and invalid large community value(> 32 bit)",
         bgpconfig({"communities": [{"name": "community-test", "value": "4147483647:999999"}],
                    "prefixAdvertisements": PREFIX_ADV}), False),
    Case("should not accept communities without CIDR in PrefixAdvertisement",
         bgpconfig({"prefixAdvertisements": [{"communities": ["100:5964"]}]}), False),
    Case("should not accept CIDR without communities in PrefixAdvertisement",
         bgpconfig({"prefixAdvertisements": [{"cidr": "192.168.10.0/28"}]}), False),
    Case("should accept IPv4 CIDR in PrefixAdvertisement",
         bgpconfig({"prefixAdvertisements": [
             {"cidr": "192.168.10.0/28", "communities": ["100:5964:50"]}]}), True),
    Case("should accept IPv6 CIDR in PrefixAdvertisement",
         bgpconfig({"prefixAdvertisements": [
             {"cidr": "2001:4860::/128", "communities": ["100:5964:50"]}]}), True),
    Case("should accept standard BGP community value in PrefixAdvertisement",
         bgpconfig({"prefixAdvertisements": [
             {"cidr": "2001:4860::/128", "communities": ["100:5964", "200:594"]}]}), True),
    Case("should accept large BGP community value in PrefixAdvertisement",
         bgpconfig({"prefixAdvertisements": [
             {"cidr": "2001:4860::/128", "communities": ["100:5964:1147483647"]}]}), True),
    Case("should not accept invalid standard community value(> 16 bit) in PrefixAdvertisement",
         bgpconfig({"prefixAdvertisements": [
             {"cidr": "2001:4860::/128", "communities": ["100:1147483647"]}]}), False),
    Case("should not accept invalid large community value(> 32 bit) in PrefixAdvertisement",
         bgpconfig({"prefixAdvertisements": [
             {"cidr": "2001:4860::/128", "communities": ["100:100:5147483647"]}]}), False),
    Case("should accept combination of large and standard BGP community value in "
         "PrefixAdvertisement",
         bgpconfig({"prefixAdvertisements": [
             {"cidr": "2001:4860::/128", "communities": ["100:5964:1147483647", "100:5223"]}]}),
         True),
    Case("should not accept community name that is not defined",
         bgpconfig({"prefixAdvertisements": [
             {"cidr": "2001:4860::/128", "communities": ["nonexistent-community"]}]}), False),
    Case("should accept community name whose values are defined",
         bgpconfig({"communities": [{"name": "community-test", "value": "101:5695"}],
                    "prefixAdvertisements": [{"cidr": "2001:4860::/128",
                                              "communities": ["community-test", "8988:202"]}]}),
         True),
    Case("should accept IPv4 and IPv6 in LocalWorkloadPeeringIPV4 and LocalWorkloadPeeringIPV6",
         bgpconfig({"localWorkloadPeeringIPV4": IPV4_1, "localWorkloadPeeringIPV6": IPV6_1}),
         True),
    Case("should not accept an invalid IPv4 in LocalWorkloadPeeringIPV4",
         bgpconfig({"localWorkloadPeeringIPV4": BAD_IPV4_1}), False),
    Case("should not accept an invalid IPv6 in LocalWorkloadPeeringIPV6",
         bgpconfig({"localWorkloadPeeringIPV6": BAD_IPV6_1}), False),
]


def test_namespace_selector_pool_with_workload_use_is_valid() -> None:
    """The DEFAULTED_TUNNEL cases as a manifest must say it: a Workload-only pool."""
    for case in CASES:
        if case.differs == DEFAULTED_TUNNEL:
            doc = {**case.doc, "spec": {**case.doc["spec"], "allowedUses": ["Workload"]}}
            assert verdict(doc) == (True, "")
            assert "Tunnel cannot have namespaceSelector" in verdict(case.doc)[1]


def verdict(doc: dict[str, Any]) -> tuple[bool, str]:
    """(valid?, the error text) for one document, as `ctl apply` would judge it."""
    try:
        parse_document(doc)
    except ValidationError as exc:
        return False, str(exc)
    return True, ""


# The descriptions are the Go file's (disambiguated with a [suffix] where it repeats one).
def test_case_descriptions_are_unique() -> None:
    names = [c.description for c in CASES]
    assert len(names) == len(set(names))


# WorkloadEndpointPort.HostIP is tagged `validate:"omitempty,net"`
# (libcalico-go/lib/apis/internalapi/workloadendpoint.go); the `net` validator is
# validateIPNetwork in libcalico-go/lib/validator/v3/validator.go: cnet.ParseCIDROrIP,
# then the parsed address must be the network's own (a masked CIDR). validator_test.go
# has a single hostIP entry (the bad address, in CASES above); these apply the rule.
HOST_IP_CASES = [
    (IPV4_1, True, "1.2.3.4"),
    (IPV6_1, True, "aabb:aabb::ffff"),
    (NETV4_1, True, "1.2.3.4/32"),
    (NETV4_3, True, "1.2.3.0/26"),
    (NETV6_3, True, "aabb:aabb::/122"),
    ("0.0.0.0/0", True, "0.0.0.0/0"),
    ("1.2.3.4/24", False, ""),  # host bits set: ParseCIDR's address is not the network's
    ("aabb:aabb::ffff/64", False, ""),
    ("1.2.3.0/33", False, ""),
    (BAD_IPV4_1, False, ""),
]


@pytest.mark.parametrize(("host_ip", "valid", "stored"), HOST_IP_CASES,
                         ids=[c[0] for c in HOST_IP_CASES])
def test_workload_endpoint_port_host_ip_is_an_ip_or_a_masked_cidr(
        host_ip: str, valid: bool, stored: str) -> None:
    """Source: libcalico-go/lib/validator/v3/validator.go validateIPNetwork (the `net` tag)."""
    doc = wep_port({"protocol": "TCP", "port": 1234, "hostPort": 2345, "hostIP": host_ip})
    if valid:
        endpoint = parse_document(doc)
        assert endpoint.dump()["spec"]["ports"][0]["hostIP"] == stored
        return
    with pytest.raises(ValidationError) as err:
        parse_document(doc)
    assert f"WorkloadEndpoint.Spec.Ports[0].HostIP = '{host_ip}'" in str(err.value)


@pytest.mark.parametrize("case", CASES, ids=[c.description for c in CASES])
def test_calico_validator_case(case: Case) -> None:
    """Source: libcalico-go/lib/validator/v3/validator_test.go, DescribeTable("Validator")."""
    valid, error = verdict(case.doc)
    assert valid == case.tortie_valid, (
        f"{VALIDATOR_TEST}: {case.description!r}: expected "
        f"{'valid' if case.tortie_valid else 'invalid'}, got {error or 'valid'}")
    if not valid:
        # tortie's rule: one clear message naming the field (Go path) and the value.
        assert error.startswith("error with field") or "error with the following fields" in error, (
            error)
