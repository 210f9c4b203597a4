"""The tier walk, profiles, the host rules and the verdict's path."""

from __future__ import annotations

import json
from ipaddress import ip_address

import pytest

from policy.evaluate import DirectionVerdict, PolicyState, Verdict, tiers_for
from policy.model import compile_policy, compile_profile

from .policy_cluster import ALLOW_ALL, Cluster, gnp, np, tier

DENY_ALL = [{"action": "Deny"}]
PASS_ALL = [{"action": "Pass"}]


@pytest.fixture
def cluster() -> Cluster:
    c = Cluster()
    c.namespace("x", ns="x")
    c.namespace("y", ns="y")
    c.pod("x/a", "10.65.0.1", {"pod": "a"}, node="node1")
    c.pod("x/b", "10.65.0.2", {"pod": "b"}, node="node1")
    c.pod("y/a", "10.65.1.1", {"pod": "a"}, node="node2")
    c.hosts = {"node1": frozenset({ip_address("10.0.0.1")}),
               "node2": frozenset({ip_address("10.0.0.2")})}
    return c


def ingress_path(cluster: Cluster, state: PolicyState, src: str = "x/b",
                 dst: str = "x/a") -> tuple[Verdict, DirectionVerdict]:
    verdict = cluster.verdict(state, src, dst)
    return verdict, verdict.ingress


def test_no_policy_profile_allows(cluster: Cluster) -> None:
    verdict, ingress = ingress_path(cluster, cluster.state())
    assert verdict.allowed
    assert ingress.tiers == ()
    assert [(p.profile, p.outcome) for p in ingress.profiles] == [("kns.x", "allow")]
    assert "profile kns.x rule 0" in ingress.reason


def test_no_policy_and_no_profile_denies(cluster: Cluster) -> None:
    cluster.pod("x/bare", "10.65.0.9", profiles=[])
    verdict = cluster.verdict(cluster.state(), "x/b", "x/bare")
    assert not verdict.allowed
    assert verdict.ingress.reason == "no policy and no profile: denied"
    assert verdict.egress.allowed  # x/b's own egress is still open


def test_policy_without_matching_rule_ends_the_tier_in_deny(cluster: Cluster) -> None:
    only_c = np("only-c", "x", selector="pod == 'a'", ingress=[
        {"action": "Allow", "source": {"selector": "pod == 'c'"}}])
    verdict, ingress = ingress_path(cluster, cluster.state([only_c]))
    assert not verdict.allowed
    assert ingress.reason == ("end of tier default: no policy allowed or passed it "
                              "(defaultAction Deny)")
    assert [(t.tier, t.outcome) for t in ingress.tiers] == [("default", "end-of-tier")]
    assert ingress.tiers[0].policies[0].outcome == "no-match"
    assert ingress.profiles == ()  # the walk never reached them
    # Only the selected endpoint is isolated, and only for ingress.
    assert cluster.verdict(cluster.state([only_c]), "x/a", "x/b").allowed


def test_types_decide_the_direction(cluster: Cluster) -> None:
    egress_only = np("deny-egress", "x", selector="pod == 'a'", types=["Egress"])
    state = cluster.state([egress_only])
    assert cluster.verdict(state, "x/b", "x/a").allowed
    denied = cluster.verdict(state, "x/a", "x/b")
    assert not denied.allowed and not denied.egress.allowed and denied.ingress.allowed
    # Calico-native defaulting: egress rules only -> [Egress]; none -> [Ingress].
    assert not compile_policy("NetworkPolicy", "p", "x", {"egress": ALLOW_ALL}).ingress
    assert compile_policy("NetworkPolicy", "p", "x", {}).ingress


def test_first_matching_rule_decides_and_deny_before_allow_by_order(cluster: Cluster) -> None:
    deny = np("zz-deny", "x", order=10, ingress=[{"action": "Deny", "source": {
        "selector": "pod == 'b'"}}])
    allow = np("aa-allow", "x", order=20, ingress=ALLOW_ALL)
    verdict, ingress = ingress_path(cluster, cluster.state([allow, deny]))
    assert not verdict.allowed
    assert [p.policy for p in ingress.tiers[0].policies] == ["NetworkPolicy x/zz-deny"]
    assert ingress.tiers[0].policies[0].rule is not None
    assert ingress.tiers[0].policies[0].rule.text == "Deny source.selector=\"pod == 'b'\""
    # From y/a the deny rule does not match and the later allow decides.
    assert cluster.verdict(cluster.state([allow, deny]), "y/a", "x/a").allowed


def test_policies_by_order_then_name_nil_order_last(cluster: Cluster) -> None:
    policies = [np("b", "x", ingress=ALLOW_ALL), np("a", "x", ingress=ALLOW_ALL),
                np("c", "x", order=5, ingress=[{"action": "Log"}]),
                np("d", "x", order=5, ingress=[{"action": "Log"}]),
                np("e", "x", order=1.5, ingress=[{"action": "Log"}])]
    state = cluster.state(policies)
    [(_, ordered)] = tiers_for(state, cluster.pods["x/a"], "ingress")
    assert [p.name for p in ordered] == ["e", "c", "d", "a", "b"]
    verdict, ingress = ingress_path(cluster, state)
    assert verdict.allowed
    steps = ingress.tiers[0].policies
    assert [s.policy.split("/")[1] for s in steps] == ["e", "c", "d", "a"]  # b never runs
    assert [len(s.logged) for s in steps] == [1, 1, 1, 0]  # Log rules do not decide


def test_log_only_policy_still_isolates(cluster: Cluster) -> None:
    verdict, ingress = ingress_path(cluster, cluster.state([np("log", "x", ingress=[
        {"action": "Log"}])]))
    assert not verdict.allowed
    assert ingress.tiers[0].outcome == "end-of-tier"


def test_pass_leaves_the_tier_for_the_next(cluster: Cluster) -> None:
    security = tier("security", 100)
    passer = gnp("pass", tier="security", order=1, ingress=PASS_ALL)
    never = gnp("never", tier="security", order=2, ingress=DENY_ALL)
    allow = np("allow", "x", ingress=ALLOW_ALL)
    verdict, ingress = ingress_path(cluster, cluster.state([never, passer, allow], [security]))
    assert verdict.allowed
    assert [(t.tier, t.outcome) for t in ingress.tiers] == [("security", "pass"),
                                                            ("default", "allow")]
    assert [p.policy for p in ingress.tiers[0].policies] == ["GlobalNetworkPolicy pass"]


def test_pass_in_the_last_tier_reaches_the_profiles(cluster: Cluster) -> None:
    verdict, ingress = ingress_path(cluster, cluster.state([np("pass", "x", ingress=PASS_ALL)]))
    assert verdict.allowed
    assert ingress.tiers[0].outcome == "pass"
    assert ingress.profiles[0].outcome == "allow"


def test_default_action_pass_falls_through(cluster: Cluster) -> None:
    lenient = tier("lenient", 10, default_action="Pass")
    unmatched = gnp("unmatched", tier="lenient", ingress=[
        {"action": "Deny", "source": {"nets": ["192.0.2.0/24"]}}])
    verdict, ingress = ingress_path(cluster, cluster.state([unmatched], [lenient]))
    assert verdict.allowed
    assert [(t.tier, t.default_action, t.outcome) for t in ingress.tiers] == [
        ("lenient", "Pass", "end-of-tier")]
    # The same tier with defaultAction Deny drops.
    strict = tier("lenient", 10)
    assert not ingress_path(cluster, cluster.state([unmatched], [strict]))[0].allowed


def test_tiers_without_applicable_policies_are_skipped(cluster: Cluster) -> None:
    other = tier("other", 1)
    elsewhere = np("elsewhere", "y", tier="other", ingress=DENY_ALL)  # selects only y
    egress_only = gnp("egress", tier="other", types=["Egress"], egress=ALLOW_ALL)
    verdict, ingress = ingress_path(cluster, cluster.state([elsewhere, egress_only], [other]))
    assert verdict.allowed
    assert ingress.tiers == ()


def test_tier_order(cluster: Cluster) -> None:
    tiers = [tier("late", 2_000_000), tier("early", 100), tier("unordered"),
             tier("b-same", 50), tier("a-same", 50)]
    policies = [gnp(f"p-{t.name}", tier=t.name, ingress=PASS_ALL) for t in tiers]
    policies += [np("p-default", "x", ingress=PASS_ALL),
                 gnp("p-undefined", tier="undefined", ingress=PASS_ALL)]
    state = cluster.state(policies, tiers)
    walked = [t.name for t, _ in tiers_for(state, cluster.pods["x/a"], "ingress")]
    # The default tier sits at 1 000 000, and so does a tier without an order (Calico
    # v3.32 defaulting), ties by name; a tier no resource defines after every defined one.
    assert walked == ["a-same", "b-same", "early", "default", "unordered", "late", "undefined"]


def test_undefined_tier_ends_in_deny(cluster: Cluster) -> None:
    ghost = gnp("ghost", tier="ghost", ingress=[{"action": "Log"}])
    assert not ingress_path(cluster, cluster.state([ghost]))[0].allowed


def test_profiles_in_order_pass_ends_only_that_profile(cluster: Cluster) -> None:
    cluster.profiles["passer"] = compile_profile("passer", {"ingress": PASS_ALL})
    cluster.profiles["silent"] = compile_profile("silent", {})
    cluster.pod("x/p", "10.65.0.7", profiles=["missing", "passer", "silent", "kns.x"])
    verdict = cluster.verdict(cluster.state(), "x/b", "x/p")
    assert verdict.allowed
    assert [(p.profile, p.outcome) for p in verdict.ingress.profiles] == [
        ("missing", "missing"), ("passer", "pass"), ("silent", "no-match"), ("kns.x", "allow")]
    cluster.pod("x/q", "10.65.0.8", profiles=["passer", "silent"])
    denied = cluster.verdict(cluster.state(), "x/b", "x/q")
    assert not denied.allowed
    assert "no profile allowed it" in denied.ingress.reason


def test_profile_deny(cluster: Cluster) -> None:
    cluster.profiles["deny"] = compile_profile("deny", {"ingress": DENY_ALL})
    cluster.pod("x/d", "10.65.0.6", profiles=["deny", "kns.x"])
    assert not cluster.verdict(cluster.state(), "x/b", "x/d").allowed


def test_egress_then_ingress(cluster: Cluster) -> None:
    no_egress = np("no-egress", "x", selector="pod == 'b'", types=["Egress"])
    verdict = cluster.verdict(cluster.state([no_egress]), "x/b", "x/a")
    assert not verdict.allowed
    assert not verdict.egress.allowed and verdict.egress.endpoint == "x/b"
    assert verdict.ingress.allowed and verdict.ingress.endpoint == "x/a"


def test_host_rules(cluster: Cluster) -> None:
    deny_all = np("deny-all", "x", types=["Ingress", "Egress"])
    state = cluster.state([deny_all])
    # Host to a local pod: not policed. A remote host is just an outside address.
    local = cluster.verdict(state, "10.0.0.1", "x/a")
    assert local.allowed and not local.ingress.policed
    assert not cluster.verdict(state, "10.0.0.2", "x/a").allowed
    # Pod to its own host: egress policy first, then DefaultEndpointToHostAction.
    assert not cluster.verdict(state, "x/a", "10.0.0.1").allowed
    open_state = cluster.state()
    assert cluster.verdict(open_state, "x/a", "10.0.0.1").allowed
    drop = cluster.state(endpoint_to_host_action="Drop")
    to_host = cluster.verdict(drop, "x/a", "10.0.0.1")
    assert not to_host.allowed and "DefaultEndpointToHostAction Drop" in to_host.ingress.reason
    # ...but to another node it is an outside address.
    assert cluster.verdict(drop, "x/a", "10.0.0.2").allowed


def test_non_endpoints_and_loopback(cluster: Cluster) -> None:
    state = cluster.state([np("deny-all", "x", types=["Ingress", "Egress"])])
    outside = cluster.verdict(state, "198.51.100.7", "y/a")
    assert outside.allowed and not outside.egress.policed and outside.egress.endpoint is None
    itself = cluster.verdict(state, "x/a", "x/a")
    assert itself.allowed and not itself.egress.policed and not itself.ingress.policed


def test_verdict_as_json(cluster: Cluster) -> None:
    state = cluster.state([np("allow", "x", ingress=ALLOW_ALL)])
    data = cluster.verdict(state, "x/b", "x/a").as_dict()
    text = json.dumps(data)
    assert data["flow"]["src"] == "10.65.0.2" and data["allowed"] is True
    assert data["ingress"]["tiers"][0]["policies"][0]["order"] is None
    assert "NetworkPolicy x/allow" in text


def test_global_policy_namespace_selector(cluster: Cluster) -> None:
    only_y = gnp("only-y", namespaceSelector="ns == 'y'", ingress=DENY_ALL)
    state = cluster.state([only_y])
    assert cluster.verdict(state, "x/b", "x/a").allowed
    assert not cluster.verdict(state, "x/b", "y/a").allowed


def test_untracked_and_pre_dnat_policies_skip_workloads(cluster: Cluster) -> None:
    untracked = gnp("untracked", doNotTrack=True, applyOnForward=True, ingress=DENY_ALL)
    pre_dnat = gnp("pre-dnat", preDNAT=True, applyOnForward=True, ingress=DENY_ALL)
    verdict, ingress = ingress_path(cluster, cluster.state([untracked, pre_dnat]))
    assert verdict.allowed and ingress.tiers == ()
