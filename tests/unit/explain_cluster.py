"""A small cluster as manifests, for `ctl explain` tests: the unit tests parse them, the
datastore tests `ctl apply` them, so both ask the same questions of the same state.

Namespaces x and y (Kubernetes Namespaces, stored as profiles kns.x and kns.y); nodes
node1 (10.0.0.1, IPIP tunnel 10.65.0.1) and node2 (10.0.0.2); pods x/a and x/b on
node1, y/a on node2, x/multi with two interfaces, x/dual with an IPv4 and an IPv6
address. Policies are added per test.
"""

from __future__ import annotations

from typing import Any

import yaml

from datastore.resources import Resource, parse_document
from policy.k8s import kubernetes_object_to_calico

HEAD = "apiVersion: projectcalico.org/v3\n"

IP = {"x/a": "10.65.0.2", "x/b": "10.65.0.3", "y/a": "10.65.1.2", "x/multi-eth0": "10.65.0.4",
      "x/multi-eth1": "10.65.0.5", "x/dual": "10.65.0.6", "x/dual6": "fd00:65::6"}
NODE1, NODE2, OUTSIDE = "10.0.0.1", "10.0.0.2", "198.51.100.7"


def _wep(ns: str, pod: str, node: str, ips: list[str], iface: str = "eth0") -> str:
    return f"""{HEAD}kind: WorkloadEndpoint
metadata:
  name: {node}-k8s-{pod}-{iface}
  namespace: {ns}
  labels: {{pod: {pod}, projectcalico.org/namespace: {ns}, projectcalico.org/orchestrator: k8s}}
spec:
  orchestrator: k8s
  node: {node}
  pod: {pod}
  endpoint: {iface}
  interfaceName: cali{ns}{pod}{iface}
  ipNetworks: {ips}
  profiles: [kns.{ns}]
"""


CLUSTER = "---\n".join([
    "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {ns: x}}\n",
    "apiVersion: v1\nkind: Namespace\nmetadata: {name: y, labels: {ns: y}}\n",
    f"{HEAD}kind: Node\nmetadata: {{name: node1}}\n"
    "spec: {bgp: {ipv4Address: 10.0.0.1/24, ipv4IPIPTunnelAddr: 10.65.0.1}}\n",
    f"{HEAD}kind: Node\nmetadata: {{name: node2}}\n"
    "spec: {bgp: {ipv4Address: 10.0.0.2/24}, addresses: [{address: 10.0.0.2}]}\n",
    _wep("x", "a", "node1", [IP["x/a"]]),
    _wep("x", "b", "node1", [IP["x/b"]]),
    _wep("y", "a", "node2", [IP["y/a"]]),
    _wep("x", "multi", "node1", [IP["x/multi-eth0"]]),
    _wep("x", "multi", "node1", [IP["x/multi-eth1"]], "eth1"),
    _wep("x", "dual", "node1", [IP["x/dual"], IP["x/dual6"]]),
])

DENY_INGRESS_X = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-ingress, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
"""

ALLOW_FROM_Y = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-from-y, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: y}}}]
    ports: [{port: 80}, {protocol: UDP, port: 53}]
"""

SECURITY_TIER = f"""{HEAD}kind: Tier
metadata: {{name: security}}
spec: {{order: 100}}
---
{HEAD}kind: GlobalNetworkPolicy
metadata: {{name: pass-x}}
spec:
  tier: security
  order: 10
  selector: projectcalico.org/namespace == 'x'
  types: [Ingress]
  ingress:
  - action: Log
    protocol: TCP
  - action: Pass
    source: {{selector: pod == 'b'}}
  - action: Deny
    protocol: TCP
    destination: {{ports: [22]}}
"""

DENY_ICMP_GLOBAL = f"""{HEAD}kind: GlobalNetworkPolicy
metadata: {{name: deny-ping}}
spec:
  order: 5
  selector: all()
  types: [Ingress]
  ingress:
  - action: Deny
    protocol: ICMP
    icmp: {{type: 8}}
  - action: Allow
"""


def resources(*manifests: str) -> list[Resource]:
    """The manifests as `ctl apply` stores them (Kubernetes objects converted)."""
    found: list[Resource] = []
    for manifest in manifests:
        for doc in yaml.safe_load_all(manifest):
            converted: Any = kubernetes_object_to_calico(doc)
            found.append(parse_document(converted if converted is not None else doc))
    return found
