"""policy.render and agent.calc.policy against Felix's own vectors.

Sources (projectcalico/calico): the verbatim filter table of a node without endpoints
(`felix/fv/cali-iptables-dump.txt`: rule hashes included), `felix/rules/dispatch_test.go`,
the CIDR split table of `felix/rules/policy_test.go` (written there with test marks
accept 0x80, scratch0 0x200, scratch1 0x400; here with the default marks 0x10000,
0x80000, 0x100000), `endpoints.go` for the endpoint chain's rule order.
"""

from __future__ import annotations

import ipaddress

import pytest

from agent.calc.policy import filter_chain, iptables_rule
from agent.calc.rules import make_hook
from datastore.selector import parse
from policy.model import (
    Endpoint,
    Labels,
    NamedPort,
    PolicyState,
    compile_policy,
    compile_profile,
    compile_rule,
)
from policy.render import (
    LocalEndpoint,
    dispatch_chains,
    failsafe_chains,
    length_limited_name,
    policy_chain_name,
    render_node,
    render_policy,
    rule_to_rules,
    selector_set_id,
    static_chains,
)


def texts(chain) -> list[str]:
    """A chain as `-A <chain> <rule>` lines, without the hash comments (Felix's RenderAppend
    with an empty hash)."""
    return [iptables_rule(r).hash_input(chain.name).replace(" HASH", "") for r in chain.rules]


def hashed(chain) -> list[str]:
    return list(filter_chain(chain).rules)


def by_name(chains) -> dict:
    return {c.name: c for c in chains}


# --- the static chains, verbatim from Felix ----------------------------------------------------


def test_static_chains_carry_felixs_rules_and_hashes():
    chains = by_name(static_chains("Accept"))
    forward = hashed(chains["cali-FORWARD"])
    assert forward[:6] == [
        '-m comment --comment "cali:W_vvds1Nw3n9QE2f" -j MARK --set-mark 0/0x1a0000',
        '-m comment --comment "cali:ZfgmjuiLaA8Pg0kp" -m mark --mark 0/0x10000 '
        "-j cali-from-hep-forward",
        '-m comment --comment "cali:tAzwBLPaV-j53OOZ" --in-interface cali+ '
        "-j cali-from-wl-dispatch",
        '-m comment --comment "cali:4Z0Pf0byo05NFe-P" --out-interface cali+ '
        "-j cali-to-wl-dispatch",
        '-m comment --comment "cali:hQ7Oc16wmUtLuneJ" -j cali-to-hep-forward',
        '-m comment --comment "cali:rnKNH2WxGcRQcIlD" -j cali-cidr-block',
    ]
    # Felix appends these to FORWARD itself; tortie's writer inserts hooks only.
    assert texts(chains["cali-FORWARD"])[6:] == [
        '-A cali-FORWARD -m comment --comment "Policy explicitly accepted packet." '
        "-m mark --mark 0x10000/0x10000 --jump ACCEPT",
        "-A cali-FORWARD --jump MARK --set-mark 0x10000/0x10000",
    ]
    assert hashed(chains["cali-OUTPUT"])[:2] == [
        '-m comment --comment "cali:Mq1_rAdXXH3YkrzW" -m mark --mark 0x10000/0x10000 -j ACCEPT',
        '-m comment --comment "cali:69FkRTJDvD5Vu6Vl" --out-interface cali+ -j RETURN',
    ]
    assert hashed(chains["cali-wl-to-host"]) == [
        '-m comment --comment "cali:Ee9Sbo10IpVujdIY" -j cali-from-wl-dispatch',
        '-m comment --comment "cali:nSZbcOoG1xPONxb8" -m comment --comment '
        '"Configured DefaultEndpointToHostAction" -j ACCEPT',
    ]
    for name in ("cali-from-hep-forward", "cali-to-hep-forward", "cali-cidr-block",
                 "cali-from-host-endpoint", "cali-to-host-endpoint"):
        assert chains[name].rules == ()


def test_hooks_and_unknown_interface_drops_are_felixs():
    assert make_hook("filter", "FORWARD", "cali-FORWARD").rule == \
        '-m comment --comment "cali:wUHhoiAYhphO9Mso" -j cali-FORWARD'
    assert make_hook("filter", "OUTPUT", "cali-OUTPUT").rule == \
        '-m comment --comment "cali:tVnHkvAo15HuiPy0" -j cali-OUTPUT'
    chains = by_name(dispatch_chains([]))
    assert hashed(chains["cali-from-wl-dispatch"]) == [
        '-m comment --comment "cali:zTj6P0TIgYvgz-md" -m comment --comment "Unknown interface" '
        "-j DROP"]
    assert hashed(chains["cali-to-wl-dispatch"]) == [
        '-m comment --comment "cali:7KNphB1nNHw80nIO" -m comment --comment "Unknown interface" '
        "-j DROP"]


@pytest.mark.parametrize("action, target", [("Drop", "DROP"), ("Return", "RETURN"),
                                            ("Accept", "ACCEPT")])
def test_default_endpoint_to_host_action(action, target):
    chain = by_name(static_chains(action))["cali-wl-to-host"]
    assert texts(chain)[-1].endswith(f"--jump {target}")


# --- dispatch ------------------------------------------------------------------------------


def test_dispatch_single_interface():
    chains = by_name(dispatch_chains(["cali1234"]))
    assert texts(chains["cali-from-wl-dispatch"]) == [
        "-A cali-from-wl-dispatch --in-interface cali1234 --goto cali-fw-cali1234",
        '-A cali-from-wl-dispatch -m comment --comment "Unknown interface" --jump DROP']
    assert texts(chains["cali-to-wl-dispatch"])[0] == \
        "-A cali-to-wl-dispatch --out-interface cali1234 --goto cali-tw-cali1234"


def test_dispatch_splits_interfaces_sharing_a_prefix():
    chains = by_name(dispatch_chains(["cali2444", "cali1234", "cali2333"]))
    assert set(chains) == {"cali-from-wl-dispatch", "cali-from-wl-dispatch-2",
                           "cali-to-wl-dispatch", "cali-to-wl-dispatch-2"}
    assert texts(chains["cali-from-wl-dispatch"])[:2] == [
        "-A cali-from-wl-dispatch --in-interface cali1234 --goto cali-fw-cali1234",
        "-A cali-from-wl-dispatch --in-interface cali2+ --goto cali-from-wl-dispatch-2"]
    assert texts(chains["cali-to-wl-dispatch-2"]) == [
        "-A cali-to-wl-dispatch-2 --out-interface cali2333 --goto cali-tw-cali2333",
        "-A cali-to-wl-dispatch-2 --out-interface cali2444 --goto cali-tw-cali2444",
        '-A cali-to-wl-dispatch-2 -m comment --comment "Unknown interface" --jump DROP']


def test_dispatch_multiple_prefixes():
    chains = by_name(dispatch_chains(["cali11", "cali12", "cali13", "cali21", "cali22"]))
    assert texts(chains["cali-from-wl-dispatch"])[:2] == [
        "-A cali-from-wl-dispatch --in-interface cali1+ --goto cali-from-wl-dispatch-1",
        "-A cali-from-wl-dispatch --in-interface cali2+ --goto cali-from-wl-dispatch-2"]
    assert len(chains["cali-from-wl-dispatch-1"].rules) == 4


# --- one rule: policy_test.go's CIDR split table -------------------------------------------

CLEAR_BOTH = "-A test --jump MARK --set-mark 0x0/0x180000"
PRESET_ALL = "-A test --jump MARK --set-mark 0x80000/0x180000"
ALLOW_IF_ALL = "-A test -m mark --mark 0x80000/0x80000 --jump MARK --set-mark 0x10000/0x10000"
RETURN = "-A test -m mark --mark 0x10000/0x10000 --jump RETURN"
THIS_BLOCK = "-A test -m mark --mark 0/0x100000 --jump MARK --set-mark 0/0x80000"


def split_rule(src: int, not_src: int, dst: int, not_dst: int) -> list[str]:
    doc = {"action": "Allow",
           "source": {"nets": ["10.0.0.0/24", "10.0.1.0/24"][:src],
                      "notNets": ["11.0.0.0/24", "11.0.1.0/24"][:not_src]},
           "destination": {"nets": ["12.0.0.0/24", "12.0.1.0/24"][:dst],
                           "notNets": ["13.0.0.0/24", "13.0.1.0/24"][:not_dst]}}
    rules, _ = rule_to_rules(compile_rule(0, doc, None))
    return [iptables_rule(r).hash_input("test").replace(" HASH", "") for r in rules]


@pytest.mark.parametrize("counts, expected", [
    ((2, 0, 0, 0), [CLEAR_BOTH, "-A test --source 10.0.0.0/24 --jump MARK --set-mark 0x80000/0x80000",
                    "-A test --source 10.0.1.0/24 --jump MARK --set-mark 0x80000/0x80000",
                    ALLOW_IF_ALL, RETURN]),
    ((0, 2, 0, 0), [PRESET_ALL, "-A test --source 11.0.0.0/24 --jump MARK --set-mark 0/0x80000",
                    "-A test --source 11.0.1.0/24 --jump MARK --set-mark 0/0x80000",
                    ALLOW_IF_ALL, RETURN]),
    ((1, 1, 0, 0), [PRESET_ALL, "-A test --source 11.0.0.0/24 --jump MARK --set-mark 0/0x80000",
                    "-A test --source 10.0.0.0/24 -m mark --mark 0x80000/0x80000 "
                    "--jump MARK --set-mark 0x10000/0x10000", RETURN]),
    ((2, 1, 0, 0), [CLEAR_BOTH, "-A test --source 10.0.0.0/24 --jump MARK --set-mark 0x80000/0x80000",
                    "-A test --source 10.0.1.0/24 --jump MARK --set-mark 0x80000/0x80000",
                    "-A test ! --source 11.0.0.0/24 -m mark --mark 0x80000/0x80000 "
                    "--jump MARK --set-mark 0x10000/0x10000", RETURN]),
    ((1, 1, 1, 1), [PRESET_ALL, "-A test --source 11.0.0.0/24 --jump MARK --set-mark 0/0x80000",
                    "-A test --destination 13.0.0.0/24 --jump MARK --set-mark 0/0x80000",
                    "-A test --source 10.0.0.0/24 --destination 12.0.0.0/24 "
                    "-m mark --mark 0x80000/0x80000 --jump MARK --set-mark 0x10000/0x10000",
                    RETURN]),
    ((2, 2, 2, 2), [CLEAR_BOTH,
                    "-A test --source 10.0.0.0/24 --jump MARK --set-mark 0x80000/0x80000",
                    "-A test --source 10.0.1.0/24 --jump MARK --set-mark 0x80000/0x80000",
                    "-A test --destination 12.0.0.0/24 --jump MARK --set-mark 0x100000/0x100000",
                    "-A test --destination 12.0.1.0/24 --jump MARK --set-mark 0x100000/0x100000",
                    THIS_BLOCK,
                    "-A test --source 11.0.0.0/24 --jump MARK --set-mark 0/0x80000",
                    "-A test --source 11.0.1.0/24 --jump MARK --set-mark 0/0x80000",
                    "-A test --destination 13.0.0.0/24 --jump MARK --set-mark 0/0x80000",
                    "-A test --destination 13.0.1.0/24 --jump MARK --set-mark 0/0x80000",
                    ALLOW_IF_ALL, RETURN]),
])
def test_cidr_split_as_felix(counts, expected):
    assert split_rule(*counts) == expected


@pytest.mark.parametrize("doc, match", [
    ({"action": "Allow", "protocol": "TCP"}, "-p tcp"),
    ({"action": "Allow", "protocol": 8}, "-p 8"),
    ({"action": "Allow", "source": {"nets": ["10.0.0.0/16"]}}, "--source 10.0.0.0/16"),
    ({"action": "Allow", "protocol": "TCP", "source": {"ports": ["10:12", "20:30", 8080]}},
     "-p tcp -m multiport --source-ports 10:12,20:30,8080"),
    ({"action": "Allow", "protocol": "ICMP", "icmp": {"type": 10, "code": 12}},
     "-p icmp -m icmp --icmp-type 10/12"),
    ({"action": "Allow", "protocol": "ICMP", "notICMP": {"type": 10}},
     "-p icmp -m icmp ! --icmp-type 10"),
    ({"action": "Allow", "protocol": "TCP",
      "source": {"notPorts": ["1:2", "3:4", "5:6", "7:8", "9:10", "11:12", "13:14", "15:16"]}},
     "-p tcp -m multiport ! --source-ports 1:2,3:4,5:6,7:8,9:10,11:12,13:14 "
     "-m multiport ! --source-ports 15:16"),
    ({"action": "Allow", "notProtocol": "UDP"}, "! -p udp"),
])
def test_rule_matches_as_felix(doc, match):
    rules, _ = rule_to_rules(compile_rule(0, doc, None))
    assert iptables_rule(rules[0]).match == match


@pytest.mark.parametrize("action, last", [
    ("Allow", "-A test -m mark --mark 0x10000/0x10000 --jump RETURN"),
    ("Pass", "-A test -m mark --mark 0x20000/0x20000 --jump RETURN"),
    ("Deny", "-A test -m mark --mark 0x40000/0x40000 --jump DROP"),
])
def test_actions_set_a_mark_then_act(action, last):
    rules, _ = rule_to_rules(compile_rule(0, {"action": action}, None))
    lines = [iptables_rule(r).hash_input("test").replace(" HASH", "") for r in rules]
    mark = {"Allow": "0x10000", "Pass": "0x20000", "Deny": "0x40000"}[action]
    assert lines == [f"-A test --jump MARK --set-mark {mark}/{mark}", last]


def test_rules_felix_does_not_render_for_ipv4():
    for doc in ({"action": "Allow", "ipVersion": 6},
                {"action": "Allow", "source": {"nets": ["fd00::/64"]}},
                {"action": "Allow", "destination": {"notNets": ["0.0.0.0/0"]}}):
        assert rule_to_rules(compile_rule(0, doc, None)) == ((), ())


# --- names and sets ------------------------------------------------------------------------


def test_chain_names_as_felix():
    gnp = compile_policy("GlobalNetworkPolicy", "policy-1", None, {"selector": "all()"})
    assert policy_chain_name(gnp, "ingress") == "cali-pi-gnp/policy-1"
    knp = compile_policy("NetworkPolicy", "knp.default.allow-b", "x", {})
    name = policy_chain_name(knp, "egress")
    assert name.startswith("cali-po-_") and len(name) == 28
    assert length_limited_name("cali-pri-", "kns.default") == "cali-pri-kns.default"


def test_selector_sets_use_calicos_canonical_form_and_are_shared():
    sel = parse("a == 'b' && (has(c) || d in {'y', 'x'})")
    assert str(sel) == '(a == "b" && (has(c) || d in {"x", "y"}))'
    assert selector_set_id(sel).startswith("s:") and len(selector_set_id(sel)) == 2 + 38
    rule = {"action": "Allow", "source": {"selector": "role == 'db'"}}
    p1 = compile_policy("GlobalNetworkPolicy", "one", None, {"ingress": [rule]})
    p2 = compile_policy("GlobalNetworkPolicy", "two", None, {"ingress": [rule, rule]})
    (set1,), (set2,) = render_policy(p1, "ingress")[1], render_policy(p2, "ingress")[1]
    assert set1 == set2 and set1.set_type == "hash:net" and set1.name.startswith("cali40s:")
    assert len(set1.name) == 31


def endpoint(key: str, ip: str, labels: dict, profiles=(), ports=()) -> Endpoint:
    ns, _ = key.split("/")
    return Endpoint(key, ns, Labels({"projectcalico.org/namespace": ns, **labels}),
                    (ipaddress.ip_address(ip),), tuple(profiles), tuple(ports), "node1")


def test_named_port_set_filtered_by_selector_replaces_the_selector_set():
    web = endpoint("x/a", "10.65.0.2", {"app": "web"}, ports=[NamedPort("http", 6, 8080)])
    other = endpoint("x/b", "10.65.0.3", {"app": "db"}, ports=[NamedPort("http", 6, 9090)])
    policy = compile_policy("NetworkPolicy", "p", "x", {"egress": [
        {"action": "Allow", "protocol": "TCP",
         "destination": {"selector": "app == 'web'", "ports": ["http"]}}]})
    state = PolicyState(endpoints=(web, other), policies=(policy,))
    out = render_node(state, [LocalEndpoint(web, "calia")], vxlan_port=4789,
                      endpoint_to_host_action="Return")
    ((ipset, members),) = out.ipsets
    assert ipset.set_type == "hash:ip,port" and ipset.name.startswith("cali40n:")
    assert members == {"10.65.0.2,tcp:8080"}
    chain = by_name(out.chains)[policy_chain_name(policy, "egress")]
    assert f"-p tcp -m set --match-set {ipset.name} dst,dst" in texts(chain)[0]


def test_a_rule_returns_the_sets_its_match_blocks_use():
    # Numeric and named ports together need a port block; its named-port set is still
    # one the rule matches on (found by the interpreter test on random policies).
    rule = compile_rule(0, {"action": "Allow", "protocol": "TCP",
                            "destination": {"selector": "app == 'web'",
                                            "ports": [80, "http"]}}, None)
    rules, sets = rule_to_rules(rule)
    used = {t.name for r in rules for t in r.match if hasattr(t, "name") and
            t.name.startswith("cali40")}
    assert used == {s.name for s in sets} and len(sets) == 2


# --- endpoints, policies, profiles ---------------------------------------------------------


def test_endpoint_chain_in_felixs_order():
    pod = endpoint("x/a", "10.65.0.2", {"pod": "a"}, profiles=["kns.x", "gone"])
    policy = compile_policy("NetworkPolicy", "deny-b", "x", {
        "selector": "pod == 'a'", "ingress": [
            {"action": "Deny", "source": {"selector": "pod == 'b'"}}]})
    state = PolicyState(endpoints=(pod,), policies=(policy,),
                        profiles=(compile_profile("kns.x", {"ingress": [{"action": "Allow"}],
                                                            "egress": [{"action": "Allow"}]}),))
    out = by_name(render_node(state, [LocalEndpoint(pod, "calia")], vxlan_port=4789,
                              endpoint_to_host_action="Return").chains)
    pi = policy_chain_name(policy, "ingress")
    assert texts(out["cali-tw-calia"]) == [
        "-A cali-tw-calia -m conntrack --ctstate RELATED,ESTABLISHED --jump ACCEPT",
        "-A cali-tw-calia -m conntrack --ctstate INVALID --jump DROP",
        "-A cali-tw-calia --jump MARK --set-mark 0/0x30000",
        '-A cali-tw-calia -m comment --comment "Start of tier default" '
        "--jump MARK --set-mark 0/0x20000",
        f"-A cali-tw-calia -m mark --mark 0/0x20000 --jump {pi}",
        '-A cali-tw-calia -m comment --comment "Return if policy accepted" '
        "-m mark --mark 0x10000/0x10000 --jump RETURN",
        '-A cali-tw-calia -m comment --comment "End of tier default. Drop if no policies '
        'passed packet" -m mark --mark 0/0x20000 --jump DROP',
        "-A cali-tw-calia --jump cali-pri-kns.x",
        '-A cali-tw-calia -m comment --comment "Return if profile accepted" '
        "-m mark --mark 0x10000/0x10000 --jump RETURN",
        "-A cali-tw-calia --jump cali-pri-gone",
        '-A cali-tw-calia -m comment --comment "Return if profile accepted" '
        "-m mark --mark 0x10000/0x10000 --jump RETURN",
        '-A cali-tw-calia -m comment --comment "Drop if no profiles matched" --jump DROP',
    ]
    egress = texts(out["cali-fw-calia"])
    assert egress[3:5] == [
        '-A cali-fw-calia -m comment --comment "Drop VXLAN encapped packets originating in '
        'workloads" -p 17 -m multiport --destination-ports 4789 --jump DROP',
        '-A cali-fw-calia -m comment --comment "Drop IPinIP encapped packets originating in '
        'workloads" -p 4 --jump DROP',
    ]
    assert "Start of tier" not in " ".join(egress)  # the policy has no egress part
    # The policy chain: its comment on the first rule, the Deny's mark then drop.
    assert texts(out[pi])[0].startswith(
        f'-A {pi} -m comment --comment "NetworkPolicy x/deny-b ingress" -m set --match-set '
        "cali40s:")
    assert texts(out[pi])[1] == f"-A {pi} -m mark --mark 0x40000/0x40000 --jump DROP"
    # A single Allow: the trailing RETURN is stripped.
    assert texts(out["cali-pri-kns.x"]) == [
        '-A cali-pri-kns.x -m comment --comment "Profile kns.x ingress" '
        "--jump MARK --set-mark 0x10000/0x10000"]
    # A profile the datastore lacks: Felix's default-drop profile.
    assert texts(out["cali-pri-gone"])[-1].endswith("--jump DROP")
    assert pi in out and policy_chain_name(policy, "egress") not in out


def test_empty_policy_chain_is_a_comment_only_rule():
    policy = compile_policy("GlobalNetworkPolicy", "quiet", None, {"types": ["Ingress"]})
    (chain, sets) = render_policy(policy, "ingress")
    assert texts(chain) == [
        f'-A {chain.name} -m comment --comment "GlobalNetworkPolicy quiet ingress"']
    assert sets == frozenset()


def test_pass_tier_has_no_end_of_tier_drop():
    from policy.model import Tier
    pod = endpoint("x/a", "10.65.0.2", {})
    policy = compile_policy("GlobalNetworkPolicy", "p", None, {"tier": "t", "ingress": []})
    state = PolicyState(endpoints=(pod,), policies=(policy,),
                        tiers=(Tier("t", 10.0, "Pass"),))
    out = by_name(render_node(state, [LocalEndpoint(pod, "calia")], vxlan_port=4789,
                              endpoint_to_host_action="Return").chains)
    assert not any("End of tier" in t for t in texts(out["cali-tw-calia"]))


def test_failsafe_chains():
    fin, fout = failsafe_chains([("tcp", None, 22), ("udp", "10.0.0.0/8", 68)],
                                [("udp", None, 53)])
    assert texts(fin) == [
        "-A cali-failsafe-in -p tcp -m multiport --destination-ports 22 --jump ACCEPT",
        "-A cali-failsafe-in -p udp -m multiport --destination-ports 68 "
        "--source 10.0.0.0/8 --jump ACCEPT"]
    assert texts(fout) == [
        "-A cali-failsafe-out -p udp -m multiport --destination-ports 53 --jump ACCEPT"]
