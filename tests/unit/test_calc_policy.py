"""The policy part of calculate(): what each kind of change touches (issue 15's O(change)).

Each test computes the desired dataplane before and after one change and asserts the
exact difference: a pod's label change changes ipset members only; one policy edit
rewrites that policy's chains only; a new local endpoint adds its chains and its
dispatch entries only. Also: policy values parsed once, bad ones ignored with a problem.
"""

from __future__ import annotations

import random
from typing import Any

from datastore.resources import stored_update
from datastore.syncer import Update
from policy.model import compile_policy
from policy.render import policy_chain_name

from .test_calc_changes import diff
from .test_calc_state import CONFIG, Cluster, delete, flatten, node, owned, pool


def put(kind: str, name: str, spec: dict[str, Any], namespace: str | None = None,
        labels: dict[str, str] | None = None) -> Update:
    return stored_update(kind, name, spec, namespace, labels)


def pod(name: str, node_name: str, ip: str, labels: dict[str, str], ns: str = "x",
        ports: list[dict[str, Any]] | None = None) -> Update:
    spec = {"orchestrator": "k8s", "node": node_name, "pod": name, "endpoint": "eth0",
            "ipNetworks": [f"{ip}/32"], "interfaceName": f"cali{name}",
            "profiles": [f"kns.{ns}"]}
    if ports:
        spec["ports"] = ports
    return put("WorkloadEndpoint", f"{node_name}-k8s-{name}-eth0", spec, namespace=ns,
               labels=labels)


DENY_FROM_B = {"selector": "pod == 'a'", "ingress": [
    {"action": "Deny", "protocol": "TCP", "source": {"selector": "pod == 'b'"},
     "destination": {"ports": [80]}},
    {"action": "Allow"}]}


def cluster() -> Cluster:
    return Cluster(*cluster_updates())


def cluster_updates() -> list[Update]:
    return flatten([
        pool("p", "10.65.0.0/16", vxlan="Always"),
        node("node1", "10.0.0.5/24", vxlan_tunnel="10.65.0.0"),
        node("node2", "10.0.0.6/24", vxlan_tunnel="10.65.1.0"),
        *owned("node1", "10.65.0.0/26"), *owned("node2", "10.65.1.0/26"),
        put("Profile", "kns.x", {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}],
                                 "labelsToApply": {"pcns.team": "red"}}),
        pod("a", "node1", "10.65.0.2", {"pod": "a"}),
        pod("b", "node2", "10.65.1.2", {"pod": "b"}),
        put("NetworkPolicy", "deny-from-b", DENY_FROM_B, namespace="x"),
    ])


def change(c: Cluster, *updates: Update) -> dict[str, tuple[set, set]]:
    before = c.calc(config=CONFIG).dataplane
    c.apply(*updates)
    return diff(before, c.calc(config=CONFIG).dataplane)


def sets(c: Cluster) -> dict[str, frozenset[str]]:
    return {s.name: s.members for s in c.calc().dataplane.ipsets if s.name.startswith("cali40s:")}


def chain_names(items: set) -> set[str]:
    return {ch.name for ch in items}


POLICY_IN = policy_chain_name(compile_policy("NetworkPolicy", "deny-from-b", "x", {}), "ingress")


def test_the_local_pods_chains_policy_chain_and_selector_set():
    c = cluster()
    dp = c.calc().dataplane
    names = {ch.name for ch in dp.chains if ch.table == "filter"}
    assert {"cali-tw-calia", "cali-fw-calia", POLICY_IN, "cali-pri-kns.x", "cali-pro-kns.x",
            "cali-from-wl-dispatch", "cali-to-wl-dispatch", "cali-FORWARD", "cali-OUTPUT",
            "cali-wl-to-host", "cali-INPUT"} <= names
    assert not any("calib" in n for n in names)  # pod b is not on this node
    assert sets(c) == {next(iter(sets(c))): frozenset({"10.65.1.2"})}
    hooks = {(h.table, h.chain) for h in dp.hooks}
    assert {("filter", "INPUT"), ("filter", "FORWARD"), ("filter", "OUTPUT")} <= hooks


def test_a_peer_label_change_changes_only_ipset_members():
    c = cluster()
    d = change(c, pod("b", "node2", "10.65.1.2", {"pod": "other"}))
    assert set(d) == {"ipsets"}
    removed, added = d["ipsets"]
    assert {s.name for s in removed} == {s.name for s in added}
    (now,) = added
    assert now.members == frozenset()


def test_a_namespace_profile_label_change_changes_nothing_unless_a_selector_reads_it():
    c = cluster()
    c.apply(put("GlobalNetworkPolicy", "red-team", {"selector": "pod == 'a'", "ingress": [
        {"action": "Allow", "source": {"namespaceSelector": "team == 'red'"}}]}))
    d = change(c, put("Profile", "kns.x", {"ingress": [{"action": "Allow"}],
                                           "egress": [{"action": "Allow"}],
                                           "labelsToApply": {"pcns.team": "blue"}}))
    assert set(d) == {"ipsets"}  # members of the pcns.team set only


def test_a_policy_edit_rewrites_only_its_chain():
    c = cluster()
    edited = {**DENY_FROM_B, "ingress": [{**DENY_FROM_B["ingress"][0],
                                          "destination": {"ports": [81]}},
                                         DENY_FROM_B["ingress"][1]]}
    d = change(c, put("NetworkPolicy", "deny-from-b", edited, namespace="x"))
    assert set(d) == {"chains"}
    removed, added = d["chains"]
    assert chain_names(removed) == chain_names(added) == {POLICY_IN}


def test_a_new_local_endpoint_adds_its_chains_and_dispatch_only():
    c = cluster()
    d = change(c, pod("c", "node1", "10.65.0.3", {"pod": "c"}))
    assert chain_names(d["chains"][1]) == {"cali-tw-calic", "cali-fw-calic",
                                           "cali-from-wl-dispatch", "cali-to-wl-dispatch"}
    assert chain_names(d["chains"][0]) == {"cali-from-wl-dispatch", "cali-to-wl-dispatch"}
    assert set(d) == {"chains", "routes", "workload_interfaces"}


def test_a_new_remote_endpoint_changes_members_only():
    c = cluster()
    d = change(c, pod("b2", "node2", "10.65.1.3", {"pod": "b"}))
    assert set(d) == {"ipsets"}


def test_a_label_change_on_the_subject_rewrites_its_endpoint_chain_only():
    c = cluster()
    d = change(c, pod("a", "node1", "10.65.0.2", {"pod": "not-a"}))
    removed, added = d["chains"]
    assert chain_names(added) == {"cali-tw-calia"}
    # The policy no longer selects a local endpoint: its chain and set go.
    assert chain_names(removed) == {"cali-tw-calia", POLICY_IN}
    assert d["ipsets"][1] == set()
    assert set(d) == {"chains", "ipsets"}


def test_recomputing_an_unchanged_state_yields_the_same_chain_objects():
    c = cluster()
    # (cali-INPUT is composed with routing's rules on each calculation.)
    first = {ch.name: ch for ch in c.calc().dataplane.chains
             if ch.table == "filter" and ch.name != "cali-INPUT"}
    second = {ch.name: ch for ch in c.calc().dataplane.chains}
    assert first and all(first[n] is second[n] for n in first)


def test_a_bad_policy_is_ignored_with_a_problem_and_deleting_it_clears_both():
    c = cluster()
    key = put("NetworkPolicy", "deny-from-b", DENY_FROM_B, namespace="x").key
    c.apply(Update("put", key, b'{"spec": {"selector": "pod ==="}}', 2))
    calc = c.calc()
    assert any(p.startswith(key) for p in calc.problems)
    assert POLICY_IN not in {ch.name for ch in calc.dataplane.chains}
    c.apply(delete(key))
    assert not any(p.startswith(key) for p in c.calc().problems)


def test_ipset_members_kept_across_changes_equal_a_computation_from_scratch():
    # ClusterState keeps members per selector (policy.render.SetMemberIndex); after each
    # change they must equal what a ClusterState fed the same updates from scratch computes.
    named = [{"name": "http", "protocol": "TCP", "port": 8080}]
    base = [*cluster_updates(),
            put("GlobalNetworkPolicy", "web", {"selector": "pod == 'a'", "ingress": [
                {"action": "Allow", "protocol": "TCP", "source": {"selector": "has(pod)"},
                 "destination": {"ports": ["http"]}}]}),
            put("GlobalNetworkSet", "nets", {"nets": ["10.65.1.0/28"]}, labels={"pod": "b"})]
    changes = [pod("b", "node2", "10.65.1.2", {"pod": "other"}, ports=named),
               pod("b2", "node2", "10.65.1.3", {"pod": "b"}, ports=named),
               put("GlobalNetworkSet", "nets", {"nets": ["10.65.1.0/30"]}, labels={"pod": "b"}),
               pod("b", "node2", "10.65.1.2", {"pod": "b"}),
               delete(pod("b2", "node2", "10.65.1.3", {"pod": "b"}).key),
               put("Profile", "kns.x", {"labelsToApply": {"pcns.team": "blue"}})]
    c = Cluster(*base)
    applied = list(base)
    for update in changes:
        c.apply(update)
        applied.append(update)
        kept = {s.name: s.members for s in c.calc().dataplane.ipsets}
        assert kept == {s.name: s.members for s in Cluster(*applied).calc().dataplane.ipsets}


def _random_policy(rng: random.Random, name: str) -> dict[str, Any]:
    """A policy spec drawn from a few labels, tiers, orders and rules, so that edits move
    it onto and off the local endpoints, across tiers and past other policies."""
    def selector() -> str:
        return rng.choice(["pod == 'a'", "pod == 'c'", "role == 'db'", "has(pod)",
                           "pod in {'a', 'd'}", "!has(role)", "all()"])
    def rule() -> dict[str, Any]:
        out: dict[str, Any] = {"action": rng.choice(["Allow", "Deny", "Pass", "Log"])}
        if rng.random() < 0.5:
            out["source"] = {"selector": selector()}
        if rng.random() < 0.5:
            out["protocol"] = "TCP"
            out["destination"] = {"ports": [rng.choice([80, 443, "http"])]}
        return out
    spec: dict[str, Any] = {"selector": selector(), "tier": rng.choice(["default", "sec"]),
                            "ingress": [rule() for _ in range(rng.randint(0, 2))],
                            "egress": [rule() for _ in range(rng.randint(0, 2))]}
    if rng.random() < 0.7:
        spec["order"] = rng.choice([10, 100, 100, 500])
    return spec


def test_random_policy_edits_keep_the_dataplane_equal_to_a_computation_from_scratch():
    # ClusterState's render memo (policy.render.RenderMemo) re-plans only the endpoints an
    # edited policy selects before or after the edit; after every edit the whole desired
    # dataplane must equal what a ClusterState fed the same updates from scratch computes.
    rng = random.Random(15)
    named = [{"name": "http", "protocol": "TCP", "port": 8080}]
    base = [*cluster_updates(),
            put("Tier", "sec", {"order": 50}),
            pod("c", "node1", "10.65.0.3", {"pod": "c", "role": "db"}, ports=named),
            pod("d", "node1", "10.65.0.4", {"pod": "d"}),
            pod("e", "node1", "10.65.0.5", {"role": "web"})]
    c = Cluster(*base)
    applied = list(base)
    c.calc()
    names = [f"p{i}" for i in range(6)]
    for step in range(40):
        name = rng.choice(names)
        roll = rng.random()
        if roll < 0.15:
            update = delete(put("GlobalNetworkPolicy", name, {}).key)
        elif roll < 0.25:
            update = put("NetworkPolicy", name, _random_policy(rng, name), namespace="x")
        elif roll < 0.3:
            update = put("Tier", "sec", {"order": rng.choice([50, 2000])})
        elif roll < 0.35:
            update = pod("d", "node1", "10.65.0.4", rng.choice([{"pod": "d"}, {"pod": "a"}]))
        else:
            update = put("GlobalNetworkPolicy", name, _random_policy(rng, name))
        c.apply(update)
        applied.append(update)
        assert c.calc().dataplane == Cluster(*applied).calc().dataplane, (step, update.key)


def test_an_edit_of_a_policy_selecting_one_endpoint_replans_only_that_endpoint():
    c = Cluster(*cluster_updates(), pod("c", "node1", "10.65.0.3", {"pod": "c"}),
                pod("d", "node1", "10.65.0.4", {"pod": "d"}))
    c.calc()
    memo = c.state.render_memo
    built = memo.plans_built
    c.calc()
    assert memo.plans_built == built  # nothing changed: every plan reused
    edited = {**DENY_FROM_B, "ingress": [{"action": "Allow"}]}
    c.apply(put("NetworkPolicy", "deny-from-b", edited, namespace="x"))
    c.calc()
    # deny-from-b selects pod a and governs ingress: only a's ingress plan is walked again.
    assert memo.plans_built == built + 1
    # A profile change re-plans every local endpoint, both directions.
    c.apply(put("Profile", "kns.x", {"ingress": [{"action": "Allow"}]}))
    c.calc()
    assert memo.plans_built == built + 1 + 3 * 2
