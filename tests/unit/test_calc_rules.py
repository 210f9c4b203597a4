"""natOutgoing and encapsulation INPUT rules: chains, hooks, ipsets, Felix's rule hashes."""

from __future__ import annotations

import pytest

from agent.calc import CalcConfig
from agent.calc.rules import IptablesRule, rule_hashes
from agent.types import Chain, DesiredDataplane, Hook, IPSet
from policy.render import input_rules

from .test_calc_state import CONFIG, Cluster, node, owned, pool

MASQ_RULE = ('-m comment --comment "cali:flqWnvo8yq4ULQLa" '
             "-m set --match-set cali40masq-ipam-pools src "
             "-m set ! --match-set cali40all-ipam-pools dst -j MASQUERADE --random-fully")
POSTROUTING_HOOK = Hook("nat", "POSTROUTING",
                        '-m comment --comment "cali:O3lYWMrLQYEMJtB5" -j cali-POSTROUTING')
INPUT_HOOK = Hook("filter", "INPUT", '-m comment --comment "cali:Cz_u1IQiXIMmKD4c" -j cali-INPUT')
IPIP_INPUT = (
    '-m comment --comment "cali:PajejrV4aFdkZojI" -m comment --comment "Allow IPIP packets from '
    'Calico hosts" -p 4 -m set --match-set cali40all-hosts-net src -m addrtype --dst-type LOCAL '
    "-j ACCEPT",
    '-m comment --comment "cali:_wjq-Yrma8Ly1Svo" -m comment --comment "Drop IPIP packets from '
    'non-Calico hosts" -p 4 -j DROP',
)
VXLAN_INPUT = (
    '-m comment --comment "cali:J76FwxInZIsk7uKY" -m comment --comment "Allow IPv4 VXLAN packets '
    'from allowed hosts" -p 17 -m multiport --destination-ports 4789 -m set --match-set '
    "cali40all-vxlan-net src -m addrtype --dst-type LOCAL -j ACCEPT",
    '-m comment --comment "cali:EDCNTTxYfggApx8C" -m comment --comment "Drop IPv4 VXLAN packets '
    'from non-allowed hosts" -p 17 -m multiport --destination-ports 4789 -m addrtype --dst-type '
    "LOCAL -j DROP",
)


def two_nodes(*pools, node1_tunnels: dict | None = None) -> Cluster:
    tunnels = {"vxlan_tunnel": "10.65.0.0", "ipip_tunnel": "10.65.0.1"}
    if node1_tunnels is not None:
        tunnels = node1_tunnels
    return Cluster(*pools, node("node1", "10.0.0.5/24", **tunnels),
                   node("node2", "10.0.0.6/24", vxlan_tunnel="10.65.1.0"),
                   node("node3", "10.0.1.7/24"),
                   *owned("node1", "10.65.0.0/26"), *owned("node2", "10.65.1.0/26"))


# cali-INPUT ends in the policy engine's rules; the other filter chains are all its own
# (tests/unit/test_calc_policy.py). These tests look at what routing adds.
POLICY_INPUT_RULES = len(input_rules())


def routing_hooks(dp: DesiredDataplane) -> set[Hook]:
    return {h for h in dp.hooks if h.table == "nat" or h.chain == "INPUT"}


def chains(c: Cluster, config: CalcConfig = CONFIG) -> dict[str, tuple[str, ...]]:
    out = {}
    for ch in c.calc(config=config).dataplane.chains:
        if ch.table == "filter" and ch.name != "cali-INPUT":
            continue
        rules = ch.rules[:-POLICY_INPUT_RULES] if ch.name == "cali-INPUT" else ch.rules
        if rules:
            out[f"{ch.table}/{ch.name}"] = rules
    return out


def ipsets(c: Cluster, config: CalcConfig = CONFIG) -> dict[str, IPSet]:
    return {s.name: s for s in c.calc(config=config).dataplane.ipsets}


def test_rule_hashes_are_felixs():
    # Felix's RuleHashes over its own rendering; these IDs appear in every Calico iptables-save.
    assert rule_hashes("POSTROUTING", [IptablesRule(target="cali-POSTROUTING")]) == [
        "O3lYWMrLQYEMJtB5"]
    assert rule_hashes("cali-POSTROUTING", [IptablesRule(target="cali-fip-snat"),
                                            IptablesRule(target="cali-nat-outgoing")]) == [
        "Z-c7XtVd2Bq7s_hA", "nYKhEzDlr11Jccal"]


def test_nat_outgoing_chains_ipsets_and_hook():
    c = two_nodes(pool("masq", "10.65.0.0/16", nat=True),
                  pool("plain", "10.66.0.0/16"),
                  pool("off", "10.67.0.0/16", nat=True, disabled=True),
                  pool("lb", "10.96.0.0/24", allowed_uses=["LoadBalancer"]),
                  pool("v6", "fd00:65::/48", nat=True))
    dp = c.calc().dataplane
    assert chains(c)["nat/cali-nat-outgoing"] == (MASQ_RULE,)
    (jump,) = chains(c)["nat/cali-POSTROUTING"]
    assert jump.endswith("-j cali-nat-outgoing") and jump.startswith('-m comment --comment "cali:')
    assert ipsets(c) == {
        "cali40masq-ipam-pools": IPSet("cali40masq-ipam-pools", "hash:net",
                                       frozenset({"10.65.0.0/16", "10.67.0.0/16"})),
        "cali40all-ipam-pools": IPSet("cali40all-ipam-pools", "hash:net",
                                      frozenset({"10.65.0.0/16", "10.66.0.0/16",
                                                 "10.67.0.0/16"})),
    }
    assert routing_hooks(dp) == {POSTROUTING_HOOK, INPUT_HOOK}


def test_no_nat_outgoing_pool_means_no_nat_objects():
    c = two_nodes(pool("plain", "10.65.0.0/16"))
    dp = c.calc().dataplane
    assert chains(c) == {} and dp.ipsets == frozenset()
    assert not any(h.table == "nat" for h in dp.hooks)


def test_nat_outgoing_switched_off_in_config_and_without_random_fully():
    c = two_nodes(pool("masq", "10.65.0.0/16", nat=True))
    off = CalcConfig(host_mtu=1500, parent_interface="eth0", nat_outgoing=False)
    assert chains(c, off) == {}
    plain = CalcConfig(host_mtu=1500, parent_interface="eth0", masquerade_random_fully=False)
    (rule,) = chains(c, plain)["nat/cali-nat-outgoing"]
    assert rule.endswith("dst -j MASQUERADE") and "cali:Dw4T8UWPnCLxRJiI" in rule


@pytest.mark.parametrize("vxlan, ipip, expected_input, expected_sets", [
    ("Never", "Never", None, set()),
    ("Never", "Always", IPIP_INPUT, {"cali40all-hosts-net"}),
    ("Never", "CrossSubnet", IPIP_INPUT, {"cali40all-hosts-net"}),
    ("Always", "Never", VXLAN_INPUT, {"cali40all-vxlan-net"}),
    ("CrossSubnet", "Never", VXLAN_INPUT, {"cali40all-vxlan-net"}),
])
def test_input_rules_per_encapsulation(vxlan, ipip, expected_input, expected_sets):
    c = two_nodes(pool("p", "10.65.0.0/16", vxlan=vxlan, ipip=ipip))
    dp = c.calc().dataplane
    assert chains(c).get("filter/cali-INPUT") == expected_input
    assert set(ipsets(c)) == expected_sets
    assert INPUT_HOOK in dp.hooks  # the policy engine's cali-INPUT rules are always there


def test_both_encapsulations_in_felix_order_and_set_members():
    c = two_nodes(pool("v", "10.65.0.0/16", vxlan="Always"), pool("i", "10.70.0.0/16",
                                                                  ipip="Always"))
    config = CalcConfig(host_mtu=1500, parent_interface="eth0",
                        external_nodes_cidrs=("192.168.100.0/24",))
    rules = chains(c, config)["filter/cali-INPUT"]
    assert rules[:2] == IPIP_INPUT and len(rules) == 4
    assert all("cali40all-vxlan-net" in r or "DROP" in r for r in rules[2:])
    sets = ipsets(c, config)
    assert sets["cali40all-hosts-net"].members == {"10.0.0.5/32", "10.0.0.6/32", "10.0.1.7/32",
                                                   "192.168.100.0/24"}
    # Only nodes with a VTEP (node3 has no VXLAN tunnel address).
    assert sets["cali40all-vxlan-net"].members == {"10.0.0.5/32", "10.0.0.6/32"}


def test_vxlan_port_follows_config():
    c = two_nodes(pool("v", "10.65.0.0/16", vxlan="Always"))
    config = CalcConfig(host_mtu=1500, parent_interface="eth0", vxlan_port=8472)
    rules = chains(c, config)["filter/cali-INPUT"]
    assert all("--destination-ports 8472" in r for r in rules)
    assert c.calc(config=config).dataplane.vxlan.port == 8472


@pytest.mark.parametrize("vxlan, ipip, device", [("Always", "Never", "vxlan.calico"),
                                                 ("Never", "Always", "tunl0")])
def test_tunnel_source_masquerade(vxlan, ipip, device):
    c = two_nodes(pool("p", "10.65.0.0/16", vxlan=vxlan, ipip=ipip))
    (rule,) = chains(c)["nat/cali-POSTROUTING"]
    assert rule.endswith(f"-o {device} -m addrtype ! --src-type LOCAL --limit-iface-out "
                         "-m addrtype --src-type LOCAL -j MASQUERADE --random-fully")
    assert POSTROUTING_HOOK in c.calc().dataplane.hooks


def test_no_tunnel_masquerade_without_a_tunnel_address():
    c = two_nodes(pool("p", "10.65.0.0/16", ipip="Always", nat=True), node1_tunnels={})
    assert c.calc().dataplane.ipip.address is None
    (jump,) = chains(c)["nat/cali-POSTROUTING"]
    assert jump.endswith("-j cali-nat-outgoing")


def test_chain_type_is_the_contract():
    c = two_nodes(pool("p", "10.65.0.0/16", ipip="Always", nat=True))
    for chain in c.calc().dataplane.chains:
        assert isinstance(chain, Chain) and chain.table in ("nat", "filter")
        assert all(r.startswith('-m comment --comment "cali:') for r in chain.rules)
