"""`ctl explain` against a real etcd: the cluster and its policies written with
`ctl apply` (Kubernetes objects converted on the way), read back once, evaluated with
policy.evaluate; both output forms, exit codes, and errors that change nothing."""

from __future__ import annotations

import json

import pytest

from datastore.resources import KINDS
from datastore.store import ResourceStore
from policy.evaluate import Flow, evaluate
from policy.model import compile_state
from tests.unit.explain_cluster import (
    ALLOW_FROM_Y,
    CLUSTER,
    DENY_ICMP_GLOBAL,
    DENY_INGRESS_X,
    IP,
    NODE1,
    OUTSIDE,
    SECURITY_TIER,
)

from .ctlrun import dump, run_inprocess, run_script


@pytest.fixture
def ctl(etcd_endpoint, monkeypatch):
    monkeypatch.setenv("ETCD_ENDPOINTS", etcd_endpoint)
    monkeypatch.delenv("FELIX_DEFAULTENDPOINTTOHOSTACTION", raising=False)
    res = run_inprocess(["apply", "-f", "-"], CLUSTER.encode())
    assert res.rc == 0, res
    return run_inprocess


def apply(ctl, *manifests: str) -> None:
    res = ctl(["apply", "-f", "-"], "---\n".join(manifests).encode())
    assert res.rc == 0, res


def explain(ctl, *args: str) -> str:
    """The human form; a query exits 0 whatever its verdict."""
    res = ctl(["explain", *args])
    assert (res.rc, res.err) == (0, ""), res
    return res.out


def verdict_line(ctl, *args: str) -> str:
    return explain(ctl, *args).split("\n")[0]


def test_no_policy_the_namespace_profile_allows(ctl):
    out = explain(ctl, "x/a", "y/a", "--port", "80/TCP")
    assert out.startswith("ALLOWED: TCP port 80 from x/a (10.65.0.2) to y/a (10.65.1.2)\n")
    assert "egress of x/a (WorkloadEndpoint x/node1-k8s-a-eth0 on node node1): allowed\n" in out
    assert "  => Allow by profile kns.y rule 0 (Allow)\n" in out


def test_default_deny_then_allow_from_a_namespace(ctl):
    apply(ctl, DENY_INGRESS_X)
    denied = explain(ctl, "y/a", "x/a", "--port", "80")
    assert denied.startswith("DENIED: TCP port 80 from y/a")
    assert ("  tier default: end of tier default (defaultAction Deny)\n"
            "    NetworkPolicy x/knp.default.default-deny-ingress (order 1000): no rule matched\n"
            "  => end of tier default: no policy allowed or passed it (defaultAction Deny)\n"
            ) in denied
    apply(ctl, ALLOW_FROM_Y)
    allowed = explain(ctl, "y/a", "x/a", "--port", "80")
    assert allowed.startswith("ALLOWED")
    assert "NetworkPolicy x/knp.default.allow-from-y (order 1000): allow by rule 0: " \
           "Allow protocol=TCP" in allowed
    # The namespace selector: x/b is in x, not y; and x/b is not selected by allow-from-y.
    assert verdict_line(ctl, "x/b", "x/a", "--port", "80").startswith("DENIED")
    assert verdict_line(ctl, "y/a", "x/b", "--port", "80").startswith("DENIED")
    # Ports and protocols: 53 is allowed for UDP only; 81 not at all.
    assert verdict_line(ctl, "y/a", "x/a", "--port", "53/udp").startswith("ALLOWED: UDP port 53")
    assert verdict_line(ctl, "y/a", "x/a", "--port", "53/TCP").startswith("DENIED")
    assert verdict_line(ctl, "y/a", "x/a", "--port", "81").startswith("DENIED")
    assert verdict_line(ctl, "y/a", "x/a", "--protocol", "UDP").startswith("DENIED: UDP from")


def test_pass_to_the_next_tier(ctl):
    apply(ctl, SECURITY_TIER, DENY_INGRESS_X)
    out = explain(ctl, "x/b", "x/a", "--port", "80")
    assert out.startswith("DENIED")
    assert ("  tier security: passed to the next tier\n"
            "    GlobalNetworkPolicy pass-x (order 10): pass by rule 1: Pass "
            "source.selector=\"pod == 'b'\"\n"
            "      logged by rule 0: Log protocol=TCP\n"
            "  tier default: end of tier default (defaultAction Deny)\n") in out
    # Not passed (not from pod b): the security tier ends in Deny before default is reached.
    other = explain(ctl, "y/a", "x/a", "--port", "80")
    assert "  => end of tier security: no policy allowed or passed it (defaultAction Deny)" \
        in other


def test_a_global_network_policy_and_icmp(ctl):
    apply(ctl, DENY_ICMP_GLOBAL)
    out = explain(ctl, "x/a", "y/a", "--protocol", "icmp", "--icmp-type", "8")
    assert out.startswith("DENIED: ICMP type 8 from x/a (10.65.0.2) to y/a (10.65.1.2)\n")
    assert "GlobalNetworkPolicy deny-ping (order 5): deny by rule 0: Deny protocol=ICMP " \
           "icmp={type:8}" in out
    # The same policy applies to egress? No: types [Ingress]. It allows the rest.
    assert verdict_line(ctl, "x/a", "y/a", "--protocol", "ICMP", "--icmp-type", "0",
                        "--icmp-code", "0").startswith("ALLOWED: ICMP type 0 code 0")
    assert verdict_line(ctl, "x/a", "y/a", "--port", "443").startswith("ALLOWED")


def test_addresses_and_endpoint_names_as_from_and_to(ctl):
    apply(ctl, DENY_INGRESS_X)
    by_ip = explain(ctl, IP["y/a"], IP["x/a"], "--port", "80")
    assert by_ip == explain(ctl, "y/a", "x/a", "--port", "80")
    assert by_ip == explain(ctl, "y/node2-k8s-a-eth0", "node1-k8s-a-eth0", "-n", "x",
                            "--port", "80")
    outside = explain(ctl, OUTSIDE, "x/a", "--port", "80")
    assert outside.startswith("DENIED: TCP port 80 from 198.51.100.7 to x/a")
    assert "egress of 198.51.100.7 (not a workload endpoint): allowed, not policed" in outside
    # From the pod's own host: not policed; to it: DefaultEndpointToHostAction.
    assert verdict_line(ctl, NODE1, "x/a", "--port", "80").startswith("ALLOWED")
    assert verdict_line(ctl, "x/a", NODE1, "--port", "80").startswith("ALLOWED")
    drop = ctl(["explain", "x/a", NODE1, "--port", "80", "--endpoint-to-host-action", "drop"])
    assert drop.out.startswith("DENIED") and "DefaultEndpointToHostAction Drop" in drop.out
    # Dual-stack: IPv4 unless asked.
    assert IP["x/dual6"] not in verdict_line(ctl, "x/dual", "x/dual")
    assert IP["x/dual6"] in verdict_line(ctl, "x/dual", "x/dual", "--ip-version", "6")


def test_json_for_tools(ctl, etcd_client):
    apply(ctl, SECURITY_TIER, DENY_INGRESS_X, ALLOW_FROM_Y)
    res = ctl(["explain", "y/a", "x/a", "--port", "80/TCP", "-o", "json"])
    assert res.rc == 0
    data = json.loads(res.out)
    assert list(data) == ["flow", "allowed", "egress", "ingress"]
    assert data["allowed"] is False and data["ingress"]["endpoint"] == "x/node1-k8s-a-eth0"
    assert [t["tier"] for t in data["ingress"]["tiers"]] == ["security"]
    # Exactly what policy.evaluate says over the same stored state.
    store = ResourceStore(etcd_client)
    stored = [r for kind in KINDS.values() for r in store.list(kind)]
    direct = evaluate(compile_state(stored, {"node1": frozenset(), "node2": frozenset()}),
                      Flow.of(IP["y/a"], IP["x/a"], "TCP", 80))
    assert data == direct.as_dict()


@pytest.mark.parametrize("args, message", [
    (["x/multi", "y/a"], "x/multi is ambiguous: pod multi has WorkloadEndpoints "
     "x/node1-k8s-multi-eth0, x/node1-k8s-multi-eth1; name one of them\n"),
    (["x/nope", "y/a"], "no workload endpoint or pod named nope in namespace x\n"),
    (["x/a", "b"], "no workload endpoint or pod named b in namespace default\n"),
    (["x/a", "y/a", "--port", "http"],
     "invalid port 'http': want PORT or PORT/PROTOCOL, PORT 1-65535\n"),
    (["x/a", "fd00::1"], "x/a (10.65.0.2) and fd00::1 (fd00::1) have no addresses of one IP "
     "version in common\n"),
])
def test_bad_input_exits_1_and_changes_nothing(ctl, etcd_client, args, message):
    before = dump(etcd_client)
    res = ctl(["explain", *args])
    assert (res.rc, res.out, res.err) == (1, "", message)
    assert dump(etcd_client) == before


def test_the_installed_script(ctl, etcd_endpoint):
    apply(ctl, DENY_INGRESS_X)
    res = run_script(["explain", "y/a", "x/a", "--port", "80"], etcd_endpoint,
                     extra_env={"FELIX_DEFAULTENDPOINTTOHOSTACTION": "DROP"})
    assert res.rc == 0 and res.out.startswith("DENIED"), res
    res = run_script(["explain", "x/a", NODE1], etcd_endpoint,
                     extra_env={"FELIX_DEFAULTENDPOINTTOHOSTACTION": "DROP"})
    assert res.rc == 0 and "DefaultEndpointToHostAction Drop" in res.out, res
    down = run_script(["explain", "x/a", "y/a"], "http://127.0.0.1:9")
    assert down.rc == 1 and down.out == "" and "Traceback" not in down.err and down.err
