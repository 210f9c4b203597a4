"""What a node advertises besides its blocks (service ranges), and the communities its
routes out carry. Pure.

Rules are confd's (confd/pkg/backends/calico/client.go, bgp_processor.go):

* Service ranges, from the global BGPConfiguration (`default`) only, announced by every
  node (confd's `updateGlobalRoutes`, the only service routes an etcd-mode cluster has:
  the per-service ones come from confd's Kubernetes route generator):
  every `serviceClusterIPs` CIDR; `serviceExternalIPs` CIDRs except single addresses
  (/32), which Calico announces per service; `serviceLoadBalancerIPs` CIDRs except
  single addresses, and only while `serviceLoadBalancerAggregation` is not `Disabled`
  (its default is `Enabled`). A node labelled
  `node.kubernetes.io/exclude-from-external-load-balancers: "true"` announces none.
  IPv4 only, as the rest of tortie's BGP.
* Communities: the node's own BGPConfiguration (`node.<name>`) when it has
  `prefixAdvertisements`, else the global one. A named community is looked up in the
  same configuration's `communities` (an unknown name adds nothing: validation refuses
  it). Each advertisement adds its communities to every route out whose prefix lies
  inside its `cidr`, the cidr itself included (BIRD's `net ~ cidr`, which Calico's
  export filter uses): blocks, borrowed /32s and service ranges alike. `aa:nn` is a
  standard community, `aa:nn:mm` a large one (RFC 8092). Each kind comes out sorted
  and without repeats, so equal configurations give equal attributes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from datastore.resources.bgp import BGPConfiguration, BGPConfigurationSpec, CIDRItem
from datastore.resources.node import Node

EXCLUDE_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"

Communities = tuple[tuple[str, ...], tuple[str, ...]]  # (standard, large)
NO_COMMUNITIES: Communities = ((), ())


@dataclass(frozen=True, slots=True)
class CommunityRule:
    """Communities for every prefix inside `cidr`."""

    cidr: ipaddress.IPv4Network
    standard: tuple[str, ...]
    large: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Advertising:
    """This node's service ranges and community rules."""

    services: frozenset[str] = frozenset()
    rules: tuple[CommunityRule, ...] = ()

    def communities(self, prefix: str) -> Communities:
        """The (standard, large) communities of a route out for `prefix`."""
        if not self.rules:
            return NO_COMMUNITIES
        try:
            net = ipaddress.ip_network(prefix, strict=False)
        except ValueError:
            return NO_COMMUNITIES
        if net.version != 4:
            return NO_COMMUNITIES
        standard: set[str] = set()
        large: set[str] = set()
        for rule in self.rules:
            if net.subnet_of(rule.cidr):
                standard.update(rule.standard)
                large.update(rule.large)
        return _sorted(standard), _sorted(large)


def _sorted(values: set[str]) -> tuple[str, ...]:
    return tuple(sorted(values, key=lambda v: tuple(int(p) for p in v.split(":"))))


def _ipv4(items: list[CIDRItem] | None, *, single_addresses: bool) -> set[str]:
    out = set()
    for item in items or ():
        net = ipaddress.ip_network(item.cidr, strict=False)
        if net.version == 4 and (single_addresses or net.prefixlen < 32):
            out.add(str(net))
    return out


def service_prefixes(glob: BGPConfigurationSpec | None, node: Node | None) -> frozenset[str]:
    """The service ranges this node announces (see the module docstring)."""
    if glob is None:
        return frozenset()
    labels = (node.metadata.labels or {}) if node is not None else {}
    if labels.get(EXCLUDE_LABEL) == "true":
        return frozenset()
    out = _ipv4(glob.serviceClusterIPs, single_addresses=True)
    out |= _ipv4(glob.serviceExternalIPs, single_addresses=False)
    if glob.serviceLoadBalancerAggregation != "Disabled":
        out |= _ipv4(glob.serviceLoadBalancerIPs, single_addresses=False)
    return frozenset(out)


def community_rules(spec: BGPConfigurationSpec | None) -> tuple[CommunityRule, ...]:
    """One rule per IPv4 prefix advertisement with at least one community."""
    if spec is None or not spec.prefixAdvertisements:
        return ()
    named = {c.name: c.value for c in spec.communities or ()}
    rules = []
    for adv in spec.prefixAdvertisements:
        cidr = ipaddress.ip_network(adv.cidr, strict=False)
        if cidr.version != 4:
            continue
        values = {named.get(c, c) for c in adv.communities}
        standard = {v for v in values if v.count(":") == 1}
        large = {v for v in values if v.count(":") == 2}
        if standard or large:
            rules.append(CommunityRule(cidr, _sorted(standard), _sorted(large)))
    return tuple(rules)


def advertising(nodename: str, nodes: Mapping[str, Node],
                configs: Mapping[str, BGPConfiguration]) -> Advertising:
    """What `nodename` advertises besides its blocks, from the BGPConfigurations."""
    glob = configs["default"].spec if "default" in configs else None
    per_node = configs.get(f"node.{nodename}")
    source = (per_node.spec if per_node is not None
              and per_node.spec.prefixAdvertisements is not None else glob)
    return Advertising(services=service_prefixes(glob, nodes.get(nodename)),
                       rules=community_rules(source))
