"""iptables chains, hooks and ipsets that go with routing: natOutgoing and encap INPUT filters.

Owns the nat chains `cali-POSTROUTING` / `cali-nat-outgoing`, the filter chain
`cali-INPUT` (its encapsulation rules, first; `input_chain` composes it), their hooks, and the
ipsets `cali40masq-ipam-pools`, `cali40all-ipam-pools` (v3.32 name),
`cali40all-hosts-net` and `cali40all-vxlan-net`. Pure.

What is emitted (Felix's `rules/nat.go`, `rules/static.go`, `masq_mgr.go`):
  * natOutgoing, when some IPv4 pool (disabled ones too) has natOutgoing:
    both pool ipsets (the "all" set skips LoadBalancer-only pools), the
    `cali-nat-outgoing` MASQUERADE rule and a jump to it from
    `cali-POSTROUTING`. Nothing at all otherwise: no empty chains or sets.
  * For each tunnel device that exists and has an address, a MASQUERADE in
    `cali-POSTROUTING` of traffic leaving through it with a local source
    that is not an address of the tunnel device (`StaticNATPostroutingChains`).
  * `cali-POSTROUTING` and its hook from POSTROUTING exist when they have rules.
  * Per encapsulation in use (its device is desired): INPUT accepts IPIP only
    from `cali40all-hosts-net` (all node IPs plus ExternalNodesCIDRList) and
    VXLAN only from `cali40all-vxlan-net` (underlay IPs of all VTEPs), to a
    local address, and drops the rest (`filterInputChain`). The policy engine's
    own cali-INPUT rules (workload-to-host) must come after these.

Every rule carries Felix's `cali:<hash>` comment, computed as Felix does
(`iptables/table.go` RuleHashes: SHA-224 chained over the chain name and the
rule rendered with `--jump`, URL-safe base64, 16 characters), so the hook and
rule IDs are the ones Calico users know (`cali:O3lYWMrLQYEMJtB5`,
`cali:flqWnvo8yq4ULQLa`, ...) and a writer can compare rules by hash alone.
Rule text is iptables-restore syntax without `-A <chain>`, comment first.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from ..types import IPIP_DEVICE, VXLAN_DEVICE, Chain, Hook, IPIPDevice, IPSet, VXLANDevice
from .state import NodeInfo, PoolInfo

IPSET_MASQ_POOLS = "cali40masq-ipam-pools"
IPSET_ALL_POOLS = "cali40all-ipam-pools"
IPSET_ALL_HOSTS = "cali40all-hosts-net"
IPSET_ALL_VXLAN_SOURCES = "cali40all-vxlan-net"

CHAIN_NAT_POSTROUTING = "cali-POSTROUTING"
CHAIN_NAT_OUTGOING = "cali-nat-outgoing"
CHAIN_FILTER_INPUT = "cali-INPUT"

HASH_LENGTH = 16
PROTO_IPIP = 4
PROTO_UDP = 17


@dataclass(frozen=True)
class IptablesRule:
    """One rule: match criteria as Felix renders them, a target, free-text comments."""

    match: str = ""
    target: str = ""  # ACCEPT, DROP, MASQUERADE or a chain to jump to; "" counts only
    target_args: str = ""  # e.g. "--random-fully"
    comments: tuple[str, ...] = ()
    goto: bool = False  # --goto the target chain instead of --jump

    def _body(self, long_flags: bool) -> str:
        parts = [f'-m comment --comment "{c}"' for c in self.comments]
        if self.match:
            parts.append(self.match)
        if self.target:
            if self.goto:
                parts.append(f"{'--goto' if long_flags else '-g'} {self.target}")
            else:
                parts.append(f"{'--jump' if long_flags else '-j'} {self.target}")
        if self.target_args:
            parts.append(self.target_args)
        return " ".join(parts)

    def hash_input(self, chain: str) -> str:
        """Felix's Rule.RenderAppend(chain, "HASH"): what its rule hash is computed over."""
        return f"-A {chain} HASH {self._body(long_flags=True)}"

    def render(self, rule_hash: str) -> str:
        return f'-m comment --comment "cali:{rule_hash}" {self._body(long_flags=False)}'


def rule_hashes(chain: str, rules: list[IptablesRule]) -> list[str]:
    """Felix's chained rule hashes: each depends on the chain name and every rule before it."""
    digest = hashlib.sha224(chain.encode()).digest()
    out = []
    for rule in rules:
        digest = hashlib.sha224(digest + rule.hash_input(chain).encode()).digest()
        out.append(base64.urlsafe_b64encode(digest).decode().rstrip("=")[:HASH_LENGTH])
    return out


def render_rules(chain: str, rules: list[IptablesRule]) -> tuple[str, ...]:
    return tuple(rule.render(h) for rule, h in zip(rules, rule_hashes(chain, rules), strict=True))


def make_chain(table: str, name: str, rules: list[IptablesRule]) -> Chain:
    return Chain(table=table, name=name, rules=render_rules(name, rules))


@lru_cache(maxsize=256)
def make_hook(table: str, kernel_chain: str, target_chain: str) -> Hook:
    """The jump Felix inserts at the top of a kernel chain (its hash is position 0 there)."""
    (rule,) = render_rules(kernel_chain, [IptablesRule(target=target_chain)])
    return Hook(table=table, chain=kernel_chain, rule=rule)


@dataclass(frozen=True)
class RulePlan:
    ipsets: frozenset[IPSet]
    chains: frozenset[Chain]
    hooks: frozenset[Hook]
    # cali-INPUT's encapsulation rules; input_chain() puts them first in cali-INPUT.
    input_rules: tuple[IptablesRule, ...] = ()


def input_chain(encap_rules: Sequence[IptablesRule],
                policy_rules: Sequence[IptablesRule] = ()
                ) -> tuple[frozenset[Chain], frozenset[Hook]]:
    """cali-INPUT and its hook: the encapsulation rules first (Felix's filterInputChain
    order), then the policy engine's; nothing when both are empty."""
    return _input_chain((*encap_rules, *policy_rules))


@lru_cache(maxsize=16)  # the same few rule lists, calculation after calculation
def _input_chain(rules: tuple[IptablesRule, ...]) -> tuple[frozenset[Chain], frozenset[Hook]]:
    if not rules:
        return frozenset(), frozenset()
    return (frozenset({make_chain("filter", CHAIN_FILTER_INPUT, list(rules))}),
            frozenset({make_hook("filter", "INPUT", CHAIN_FILTER_INPUT)}))


def plan_rules(
    pools: list[PoolInfo],
    nodes: list[NodeInfo],
    vxlan: VXLANDevice | None,
    ipip: IPIPDevice | None,
    *,
    nat_outgoing: bool,
    random_fully: bool,
    vxlan_port: int,
    external_nodes_cidrs: tuple[str, ...] = (),
) -> RulePlan:
    """Chains, hooks and ipsets for the IPv4 `pools`, all `nodes` and the desired devices."""
    ipsets: set[IPSet] = set()
    chains: set[Chain] = set()
    hooks: set[Hook] = set()
    masq_args = "--random-fully" if random_fully else ""

    postrouting: list[IptablesRule] = []
    masq_pools = frozenset(p.cidr for p in pools if p.nat_outgoing)
    if nat_outgoing and masq_pools:
        all_pools = frozenset(p.cidr for p in pools if not p.load_balancer_only)
        ipsets.add(IPSet(IPSET_MASQ_POOLS, "hash:net", masq_pools))
        ipsets.add(IPSet(IPSET_ALL_POOLS, "hash:net", all_pools))
        chains.add(make_chain("nat", CHAIN_NAT_OUTGOING, [IptablesRule(
            match=(f"-m set --match-set {IPSET_MASQ_POOLS} src "
                   f"-m set ! --match-set {IPSET_ALL_POOLS} dst"),
            target="MASQUERADE", target_args=masq_args)]))
        postrouting.append(IptablesRule(target=CHAIN_NAT_OUTGOING))
    # Traffic leaving through a tunnel must carry the tunnel address as source, or the
    # far end cannot answer: masquerade local sources that are not the device's own.
    for device, name in ((ipip, IPIP_DEVICE), (vxlan, VXLAN_DEVICE)):
        if device is not None and device.address:
            postrouting.append(IptablesRule(
                match=(f"-o {name} -m addrtype ! --src-type LOCAL --limit-iface-out "
                       "-m addrtype --src-type LOCAL"),
                target="MASQUERADE", target_args=masq_args))
    if postrouting:
        chains.add(make_chain("nat", CHAIN_NAT_POSTROUTING, postrouting))
        hooks.add(make_hook("nat", "POSTROUTING", CHAIN_NAT_POSTROUTING))

    node_ips = [n.ip for n in nodes if n.ip is not None]
    inputs: list[IptablesRule] = []
    if ipip is not None:
        members = {f"{ip}/32" for ip in node_ips} | set(external_nodes_cidrs)
        ipsets.add(IPSet(IPSET_ALL_HOSTS, "hash:net", frozenset(members)))
        inputs += [
            IptablesRule(
                match=(f"-p {PROTO_IPIP} -m set --match-set {IPSET_ALL_HOSTS} src "
                       "-m addrtype --dst-type LOCAL"),
                target="ACCEPT", comments=("Allow IPIP packets from Calico hosts",)),
            IptablesRule(match=f"-p {PROTO_IPIP}", target="DROP",
                         comments=("Drop IPIP packets from non-Calico hosts",)),
        ]
    if vxlan is not None:
        vtep_parents = frozenset(f"{n.ip}/32" for n in nodes
                                 if n.ip is not None and n.vxlan_tunnel_address is not None)
        ipsets.add(IPSet(IPSET_ALL_VXLAN_SOURCES, "hash:net", vtep_parents))
        dport = f"-p {PROTO_UDP} -m multiport --destination-ports {vxlan_port}"
        inputs += [
            IptablesRule(
                match=(f"{dport} -m set --match-set {IPSET_ALL_VXLAN_SOURCES} src "
                       "-m addrtype --dst-type LOCAL"),
                target="ACCEPT", comments=("Allow IPv4 VXLAN packets from allowed hosts",)),
            IptablesRule(match=f"{dport} -m addrtype --dst-type LOCAL", target="DROP",
                         comments=("Drop IPv4 VXLAN packets from non-allowed hosts",)),
        ]
    return RulePlan(frozenset(ipsets), frozenset(chains), frozenset(hooks), tuple(inputs))
