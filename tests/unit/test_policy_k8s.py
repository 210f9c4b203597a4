"""policy.k8s: Kubernetes NetworkPolicy, Namespace and ServiceAccount to Calico documents.

The conversion cases are ports of projectcalico/calico's
libcalico-go/lib/backend/k8s/conversion/conversion_test.go (NetworkPolicy, the
"k8s <= 1.7, no policyTypes" suite, Namespace, ServiceAccount, the selector and
port-simplification tables) and kube-controllers/pkg/converter/*_test.go, each
asserting the whole output document. Where Calico drops a rule the API server
would never have let through, the port asserts the error instead; names Calico's
tests write in camel case ("testPolicy") are lower-cased, as the API server
requires.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from datastore import selector as calico_selector
from policy.k8s import (
    MISSING,
    KubernetesObjectError,
    k8s_network_policy_to_calico,
    k8s_selector_to_calico,
    kubernetes_object_to_calico,
    namespace_to_profile,
    service_account_to_profile,
    simplify_ports,
)

K8S = "projectcalico.org/orchestrator == 'k8s'"


def k8s_np(spec: dict[str, Any], name: str = "test.policy", namespace: str | None = "default",
           **meta: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, **meta}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": metadata, "spec": spec}


def calico_np(selector: str, types: list[str], ingress: list[Any] | None = None,
              egress: list[Any] | None = None, name: str = "test.policy",
              namespace: str = "default") -> dict[str, Any]:
    spec: dict[str, Any] = {"tier": "default", "order": 1000}
    if ingress:
        spec["ingress"] = ingress
    if egress:
        spec["egress"] = egress
    spec["selector"] = selector
    spec["types"] = types
    return {"kind": "NetworkPolicy", "apiVersion": "projectcalico.org/v3",
            "metadata": {"name": f"knp.default.{name}", "namespace": namespace,
                         "labels": {"projectcalico.org/tier": "default"}},
            "spec": spec}


def allow(protocol: str | None = None, source: dict[str, Any] | None = None,
          destination: dict[str, Any] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"action": "Allow"}
    if protocol:
        rule["protocol"] = protocol
    if source:
        rule["source"] = source
    if destination:
        rule["destination"] = destination
    return rule


def pods(**labels: str) -> dict[str, Any]:
    return {"matchLabels": labels}


LABEL_VALUE = {"matchLabels": {"label": "value", "label2": "value2"}}
K_V = pods(k="v", k2="v2")
SEL_K_V = f"{K8S} && k == 'v' && k2 == 'v2'"
SEL_LABEL = f"{K8S} && label == 'value'"
SEL_LABELS = f"{K8S} && label == 'value' && label2 == 'value2'"
BLOCK = {"cidr": "192.168.0.0/16", "except": ["192.168.3.0/24", "192.168.4.0/24"]}
BLOCK3 = {"cidr": "192.168.0.0/16",
          "except": ["192.168.3.0/24", "192.168.4.0/24", "192.168.5.0/24"]}


# --- conversion_test.go "Test selector conversion" ----------------------------------------

SELECTORS = [
    ("empty pod selector", {}, True, K8S),
    ("empty namespace selector", {}, False, "all()"),
    ("DoesNotExist namespace selector",
     {"matchExpressions": [{"key": "toast", "operator": "DoesNotExist"}]}, False, "! has(toast)"),
    ("Exists namespace selector",
     {"matchExpressions": [{"key": "toast", "operator": "Exists"}]}, False, "has(toast)"),
    ("In namespace selector",
     {"matchExpressions": [{"key": "toast", "operator": "In", "values": ["butter", "jam"]}]},
     False, "toast in { 'butter', 'jam' }"),
    ("NotIn namespace selector",
     {"matchExpressions": [{"key": "toast", "operator": "NotIn", "values": ["marmite", "milk"]}]},
     False, "toast not in { 'marmite', 'milk' }"),
    ("DoesNotExist pod selector",
     {"matchExpressions": [{"key": "toast", "operator": "DoesNotExist"}]}, True,
     f"{K8S} && ! has(toast)"),
    ("nil pod selector", None, True, K8S),
    ("nil namespace selector", None, False, ""),
]


@pytest.mark.parametrize(("selector", "pod", "expected"), [s[1:] for s in SELECTORS],
                         ids=[s[0] for s in SELECTORS])
def test_selector_conversion_table(selector, pod, expected):
    assert k8s_selector_to_calico(selector, pod=pod) == expected


def test_selector_terms_labels_sorted_then_expressions_in_order():
    selector = {"matchLabels": {"zone": "a", "app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]},
                                     {"key": "canary", "operator": "Exists"}]}
    assert k8s_selector_to_calico(selector, pod=True) == (
        f"{K8S} && app == 'web' && zone == 'a' && tier not in {{ 'db' }} && has(canary)")


# --- conversion_test.go "Test port simplification" ----------------------------------------

def _ports(text: str) -> list[Any]:
    out: list[Any] = []
    for item in filter(None, text.split(",")):
        if item.isdigit():
            out.append((int(item), int(item)))
        elif ":" in item:
            first, last = item.split(":")
            out.append((int(first), int(last)))
        else:
            out.append(item)
    return out


def _text(ports: list[Any]) -> str:
    return ",".join(p if isinstance(p, str) else str(p[0]) if p[0] == p[1] else f"{p[0]}:{p[1]}"
                    for p in ports)


@pytest.mark.parametrize(("given", "expected"), [
    ("", ""), ("0", "0"), ("1", "1"), ("65535", "65535"), ("0:65535", "0:65535"),
    ("1,2", "1:2"), ("2,1", "1:2"), ("1,2,4", "1:2,4"),
    ("1,2,3,4,80:81,81:90,9090", "1:4,80:90,9090"),
    ("81:90,4,2,80:81,3,1,9090", "1:4,80:90,9090"),
    ("81:90,4,2,foo,80:81,3,1,9090,http", "foo,http,1:4,80:90,9090"),
    ("foo", "foo"),
])
def test_port_simplification_table(given, expected):
    assert _text(simplify_ports(_ports(given))) == expected


# --- conversion_test.go "Test NetworkPolicy conversion" -----------------------------------

def test_basic_policy():
    doc = k8s_np({"podSelector": LABEL_VALUE, "policyTypes": ["Ingress"],
                  "ingress": [{"ports": [{"port": 80}, {"port": "foo"}], "from": [{"podSelector": K_V}]}]})
    assert k8s_network_policy_to_calico(doc) == calico_np(SEL_LABELS, ["Ingress"], ingress=[
        allow("TCP", {"selector": SEL_K_V}, {"ports": [80, "foo"]})])


def test_no_ports_gives_no_protocol():
    doc = k8s_np({"podSelector": LABEL_VALUE, "policyTypes": ["Ingress"],
                  "ingress": [{"from": [{"podSelector": K_V}]}]})
    assert k8s_network_policy_to_calico(doc) == calico_np(SEL_LABELS, ["Ingress"], ingress=[
        allow(None, {"selector": SEL_K_V})])


def test_blank_port_opens_every_tcp_port():
    doc = k8s_np({"podSelector": LABEL_VALUE, "policyTypes": ["Ingress"],
                  "ingress": [{"ports": [{"port": 80}, {}], "from": [{"podSelector": K_V}]}]})
    assert k8s_network_policy_to_calico(doc) == calico_np(SEL_LABELS, ["Ingress"], ingress=[
        allow("TCP", {"selector": SEL_K_V})])


def test_egress_blank_ports():
    doc = k8s_np({"podSelector": LABEL_VALUE, "policyTypes": ["Egress"], "egress": [
        {"ports": [{}, {"port": 80}], "to": [{"podSelector": K_V}]},
        {"ports": [{"port": 53, "protocol": "UDP"}]}]})
    assert k8s_network_policy_to_calico(doc) == calico_np(SEL_LABELS, ["Egress"], egress=[
        allow("TCP", None, {"selector": SEL_K_V}),
        allow("UDP", None, {"ports": [53]})])


def test_invalid_port_is_refused_where_calico_drops_the_rule():
    # Calico drops the rule with "invalid name for named port (-50:-1)" and keeps the rest;
    # the API server never lets such a port through, so the whole object is refused.
    doc = k8s_np({"podSelector": LABEL_VALUE, "policyTypes": ["Ingress"], "ingress": [
        {"ports": [{"port": 80}, {"port": "foo"}], "from": [{"podSelector": K_V}]},
        {"ports": [{"port": 80}, {"port": "-50:-1"}], "from": [{"podSelector": K_V}]}]})
    with pytest.raises(KubernetesObjectError) as err:
        k8s_network_policy_to_calico(doc)
    assert (err.value.field, err.value.value) == ("spec.ingress[1].ports[1].port", "-50:-1")


def test_no_rules():
    doc = k8s_np({"podSelector": pods(label="value"), "policyTypes": ["Ingress"]})
    assert k8s_network_policy_to_calico(doc) == calico_np(SEL_LABEL, ["Ingress"])


def test_default_deny_egress():
    doc = k8s_np({"podSelector": {}, "policyTypes": ["Egress"]}, name="test-policy")
    assert k8s_network_policy_to_calico(doc) == calico_np(K8S, ["Egress"], name="test-policy")


def test_multiple_peers():
    doc = k8s_np({"podSelector": pods(label="value"), "policyTypes": ["Ingress"], "ingress": [
        {"ports": [{}], "from": [{"podSelector": pods(k="v")}, {"podSelector": pods(k2="v2")}]}]})
    assert k8s_network_policy_to_calico(doc) == calico_np(SEL_LABEL, ["Ingress"], ingress=[
        allow("TCP", {"selector": f"{K8S} && k == 'v'"}),
        allow("TCP", {"selector": f"{K8S} && k2 == 'v2'"})])


def test_does_not_exist_expression():
    doc = k8s_np({"podSelector": LABEL_VALUE, "policyTypes": ["Ingress"], "ingress": [
        {"ports": [{"port": 80}, {"port": "foo"}],
         "from": [{"podSelector": {"matchExpressions": [
             {"key": "toast", "operator": "DoesNotExist"}]}}]}]})
    assert k8s_network_policy_to_calico(doc) == calico_np(SEL_LABELS, ["Ingress"], ingress=[
        allow("TCP", {"selector": f"{K8S} && ! has(toast)"}, {"ports": [80, "foo"]})])


MULTI_PEERS_AND_PORTS = {
    "podSelector": pods(label="value"),
    "ingress": [{"ports": [{"port": 90, "protocol": "UDP"}, {"port": 80, "protocol": "TCP"}],
                 "from": [{"podSelector": pods(k="v")}, {"podSelector": pods(k2="v2")}]}]}
MULTI_PEERS_AND_PORTS_RULES = [
    allow("TCP", {"selector": f"{K8S} && k == 'v'"}, {"ports": [80]}),
    allow("TCP", {"selector": f"{K8S} && k2 == 'v2'"}, {"ports": [80]}),
    allow("UDP", {"selector": f"{K8S} && k == 'v'"}, {"ports": [90]}),
    allow("UDP", {"selector": f"{K8S} && k2 == 'v2'"}, {"ports": [90]}),
]


def test_multiple_peers_and_ports_one_rule_per_protocol_and_peer():
    doc = k8s_np({**MULTI_PEERS_AND_PORTS, "policyTypes": ["Ingress"]})
    assert k8s_network_policy_to_calico(doc) == calico_np(
        SEL_LABEL, ["Ingress"], ingress=MULTI_PEERS_AND_PORTS_RULES)


def test_empty_pod_selector():
    doc = k8s_np({"podSelector": {}, "policyTypes": ["Ingress"]})
    assert k8s_network_policy_to_calico(doc) == calico_np(K8S, ["Ingress"])


def test_namespace_selector():
    doc = k8s_np({"podSelector": pods(label="value"), "policyTypes": ["Ingress"], "ingress": [
        {"from": [{"namespaceSelector": pods(namespaceRole="dev", namespaceFoo="bar")}]}]})
    assert k8s_network_policy_to_calico(doc) == calico_np(SEL_LABEL, ["Ingress"], ingress=[
        allow(None, {"selector": K8S,
                     "namespaceSelector": "namespaceFoo == 'bar' && namespaceRole == 'dev'"})])


def test_nil_namespace_selector_means_own_namespace():
    doc = k8s_np({"podSelector": pods(label="value"), "policyTypes": ["Ingress"], "ingress": [
        {"from": [{"namespaceSelector": None, "podSelector": {}}]}]})
    assert k8s_network_policy_to_calico(doc) == calico_np(SEL_LABEL, ["Ingress"], ingress=[
        allow(None, {"selector": K8S})])


def test_empty_namespace_selector_means_every_namespace():
    doc = k8s_np({"podSelector": pods(label="value"), "policyTypes": ["Ingress"], "ingress": [
        {"from": [{"namespaceSelector": {"matchLabels": {}}}]}]})
    assert k8s_network_policy_to_calico(doc) == calico_np(SEL_LABEL, ["Ingress"], ingress=[
        allow(None, {"selector": K8S, "namespaceSelector": "all()"})])


def test_pod_and_namespace_selectors_in_one_peer():
    doc = k8s_np({"podSelector": pods(label="value"), "policyTypes": ["Ingress"], "ingress": [
        {"from": [{"namespaceSelector": pods(namespaceRole="dev", namespaceFoo="bar"),
                   "podSelector": pods(podA="B", podC="D")}]}]})
    assert k8s_network_policy_to_calico(doc) == calico_np(SEL_LABEL, ["Ingress"], ingress=[
        allow(None, {"selector": f"{K8S} && podA == 'B' && podC == 'D'",
                     "namespaceSelector": "namespaceFoo == 'bar' && namespaceRole == 'dev'"})])


def test_pod_selector_match_expressions():
    doc = k8s_np({"podSelector": {"matchExpressions": [
        {"key": "k", "operator": "In", "values": ["v1", "v2"]}]}, "policyTypes": ["Ingress"]})
    assert k8s_network_policy_to_calico(doc) == calico_np(
        f"{K8S} && k in {{ 'v1', 'v2' }}", ["Ingress"])


@pytest.mark.parametrize("direction", ["ingress", "egress"])
@pytest.mark.parametrize(("port", "calico_port"), [
    ({"protocol": "TCP", "port": 80}, 80),
    ({"protocol": "TCP", "port": 32000, "endPort": 32768}, "32000:32768"),
])
def test_ports_only(direction, port, calico_port):
    policy_type = direction.capitalize()
    doc = k8s_np({"podSelector": {}, "policyTypes": [policy_type], direction: [{"ports": [port]}]})
    rules = [allow("TCP", None, {"ports": [calico_port]})]
    assert k8s_network_policy_to_calico(doc) == calico_np(K8S, [policy_type], **{direction: rules})


def test_ingress_ip_block_peer():
    doc = k8s_np({"podSelector": {}, "policyTypes": ["Ingress"],
                  "ingress": [{"from": [{"ipBlock": BLOCK}]}]})
    assert k8s_network_policy_to_calico(doc) == calico_np(K8S, ["Ingress"], ingress=[
        allow(None, {"nets": ["192.168.0.0/16"], "notNets": ["192.168.3.0/24", "192.168.4.0/24"]})])


def test_egress_ip_block_peer():
    doc = k8s_np({"podSelector": {}, "policyTypes": ["Egress"],
                  "egress": [{"to": [{"ipBlock": BLOCK3}]}]})
    assert k8s_network_policy_to_calico(doc) == calico_np(K8S, ["Egress"], egress=[
        allow(None, None, {"nets": ["192.168.0.0/16"], "notNets": BLOCK3["except"]})])


def test_egress_ip_block_and_ports_protocols_sorted():
    doc = k8s_np({"podSelector": {}, "policyTypes": ["Egress"], "egress": [
        {"ports": [{"port": 90, "protocol": "UDP"}, {"port": 80, "protocol": "TCP"}],
         "to": [{"ipBlock": BLOCK3}]}]})
    entity = {"nets": ["192.168.0.0/16"], "notNets": BLOCK3["except"]}
    assert k8s_network_policy_to_calico(doc) == calico_np(K8S, ["Egress"], egress=[
        allow("TCP", None, {"nets": entity["nets"], "ports": [80], "notNets": entity["notNets"]}),
        allow("UDP", None, {"nets": entity["nets"], "ports": [90], "notNets": entity["notNets"]})])


def test_ip_block_without_except_has_no_not_nets():
    doc = k8s_np({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "192.168.0.0/16"}}]}]})
    assert k8s_network_policy_to_calico(doc) == calico_np(K8S, ["Ingress"], ingress=[
        allow(None, {"nets": ["192.168.0.0/16"]})])


def test_ip_block_with_except_peer_fields():
    doc = k8s_np({"podSelector": {}, "ingress": [{"from": [{"ipBlock": BLOCK3}]}]})
    source = k8s_network_policy_to_calico(doc)["spec"]["ingress"][0]["source"]
    # nets, then notNets; no selector: an ipBlock peer matches pods too.
    assert source == {"nets": ["192.168.0.0/16"], "notNets": BLOCK3["except"]}
    assert list(source) == ["nets", "notNets"]


def test_both_egress_and_ingress_types_in_calicos_order():
    doc = k8s_np({"podSelector": {}, "policyTypes": ["Egress", "Ingress"],
                  "ingress": [{"from": [{"ipBlock": BLOCK}]}],
                  "egress": [{"to": [{"ipBlock": {"cidr": "10.10.0.0/16", "except": [
                      "10.10.13.0/24", "10.10.14.0/24", "10.10.15.0/24"]}}]}]})
    assert k8s_network_policy_to_calico(doc) == calico_np(K8S, ["Ingress", "Egress"], ingress=[
        allow(None, {"nets": ["192.168.0.0/16"], "notNets": BLOCK["except"]})], egress=[
        allow(None, None, {"nets": ["10.10.0.0/16"],
                           "notNets": ["10.10.13.0/24", "10.10.14.0/24", "10.10.15.0/24"]})])


# --- conversion_test.go "k8s <= 1.7, no policyTypes": the API server's defaulting ---------

def test_no_policy_types_basic():
    doc = k8s_np({"podSelector": LABEL_VALUE,
                  "ingress": [{"ports": [{"port": 80}], "from": [{"podSelector": K_V}]}]})
    assert k8s_network_policy_to_calico(doc) == calico_np(SEL_LABELS, ["Ingress"], ingress=[
        allow("TCP", {"selector": SEL_K_V}, {"ports": [80]})])


def test_no_policy_types_no_rules():
    doc = k8s_np({"podSelector": pods(label="value")})
    assert k8s_network_policy_to_calico(doc) == calico_np(SEL_LABEL, ["Ingress"])


def test_no_policy_types_multiple_peers():
    doc = k8s_np({"podSelector": pods(label="value"), "ingress": [
        {"ports": [{}], "from": [{"podSelector": pods(k="v")}, {"podSelector": pods(k2="v2")}]}]})
    assert k8s_network_policy_to_calico(doc) == calico_np(SEL_LABEL, ["Ingress"], ingress=[
        allow("TCP", {"selector": f"{K8S} && k == 'v'"}),
        allow("TCP", {"selector": f"{K8S} && k2 == 'v2'"})])


def test_no_policy_types_multiple_peers_and_ports():
    assert k8s_network_policy_to_calico(k8s_np(MULTI_PEERS_AND_PORTS)) == calico_np(
        SEL_LABEL, ["Ingress"], ingress=MULTI_PEERS_AND_PORTS_RULES)


def test_no_policy_types_empty_pod_selector():
    assert k8s_network_policy_to_calico(k8s_np({"podSelector": {}})) == calico_np(K8S, ["Ingress"])


def test_no_policy_types_match_expressions():
    doc = k8s_np({"podSelector": {"matchExpressions": [
        {"key": "k", "operator": "In", "values": ["v1", "v2"]}]}})
    assert k8s_network_policy_to_calico(doc) == calico_np(
        f"{K8S} && k in {{ 'v1', 'v2' }}", ["Ingress"])


def test_no_policy_types_ports_only():
    doc = k8s_np({"podSelector": {}, "ingress": [{"ports": [{"protocol": "TCP", "port": 80}]}]})
    assert k8s_network_policy_to_calico(doc) == calico_np(K8S, ["Ingress"], ingress=[
        allow("TCP", None, {"ports": [80]})])


def test_no_policy_types_with_egress_rules_governs_both_directions():
    # SetDefaults_NetworkPolicy: Ingress always, Egress when there are egress rules.
    doc = k8s_np({"podSelector": {}, "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]})
    assert k8s_network_policy_to_calico(doc) == calico_np(K8S, ["Ingress", "Egress"], egress=[
        allow("UDP", None, {"ports": [53]})])


def test_empty_policy_types_list_is_defaulted_too():
    doc = k8s_np({"podSelector": {}, "policyTypes": [], "egress": [{}]})
    assert k8s_network_policy_to_calico(doc)["spec"]["types"] == ["Ingress", "Egress"]


def test_egress_rules_kept_when_types_leave_egress_out():
    # Calico converts them anyway (with a warning); the types decide what applies.
    doc = k8s_np({"podSelector": {}, "policyTypes": ["Ingress"], "egress": [{}]})
    assert k8s_network_policy_to_calico(doc) == calico_np(
        K8S, ["Ingress"], egress=[allow()])


def test_duplicate_policy_types_collapse():
    doc = k8s_np({"podSelector": {}, "policyTypes": ["Egress", "Egress"]})
    assert k8s_network_policy_to_calico(doc)["spec"]["types"] == ["Egress"]


# --- kube-controllers/pkg/converter/networkpolicy_converter_test.go ----------------------

def test_kube_controllers_basic_policy():
    doc = k8s_np({"podSelector": LABEL_VALUE, "policyTypes": ["Ingress"],
                  "ingress": [{"ports": [{"port": 80}], "from": [{"podSelector": K_V}]}]},
                 name="testpolicy", uid="30316465-6365-4463-ad63-3564622d3638",
                 resourceVersion="12", labels={"team": "a"}, annotations={"note": "x"})
    # Only name and namespace survive (plus the tier label Calico's client adds).
    assert k8s_network_policy_to_calico(doc) == calico_np(SEL_LABELS, ["Ingress"], ingress=[
        allow("TCP", {"selector": SEL_K_V}, {"ports": [80]})], name="testpolicy")


def test_kube_controllers_empty_namespace_selector():
    doc = k8s_np({"podSelector": pods(label="value"), "policyTypes": ["Ingress"],
                  "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {}}}]}]},
                 name="testpolicy")
    assert k8s_network_policy_to_calico(doc)["spec"]["ingress"] == [
        allow(None, {"selector": K8S, "namespaceSelector": "all()"})]


def test_kube_controllers_egress_rule():
    doc = k8s_np({"podSelector": LABEL_VALUE, "policyTypes": ["Egress"],
                  "egress": [{"ports": [{"port": 80}], "to": [{"podSelector": K_V}]}]},
                 name="testpolicy")
    assert k8s_network_policy_to_calico(doc) == calico_np(SEL_LABELS, ["Egress"], egress=[
        allow("TCP", None, {"selector": SEL_K_V, "ports": [80]})], name="testpolicy")


# --- Details of the conversion beyond Calico's own tests ---------------------------------

def test_end_port_equal_to_port_is_a_single_port():
    doc = k8s_np({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 80}]}]})
    assert k8s_network_policy_to_calico(doc)["spec"]["ingress"] == [
        allow("TCP", None, {"ports": [80]})]


def test_ports_of_one_protocol_merge_into_ranges_named_first():
    doc = k8s_np({"podSelector": {}, "ingress": [{"ports": [
        {"port": 82}, {"port": 80}, {"port": "http"}, {"port": 81}, {"port": 8000, "endPort": 8080},
        {"port": 8081}]}]})
    assert k8s_network_policy_to_calico(doc)["spec"]["ingress"] == [
        allow("TCP", None, {"ports": ["http", "80:82", "8000:8081"]})]


def test_protocols_sorted_sctp_tcp_udp():
    doc = k8s_np({"podSelector": {}, "ingress": [{"ports": [
        {"protocol": "UDP", "port": 81}, {"port": 80}, {"protocol": "SCTP", "port": 80}]}]})
    assert k8s_network_policy_to_calico(doc)["spec"]["ingress"] == [
        allow("SCTP", None, {"ports": [80]}), allow("TCP", None, {"ports": [80]}),
        allow("UDP", None, {"ports": [81]})]


def test_protocol_without_port_opens_every_port_of_that_protocol():
    doc = k8s_np({"podSelector": {}, "ingress": [{"ports": [
        {"protocol": "UDP", "port": 53}, {"protocol": "UDP"}, {"protocol": "UDP", "port": 54}]}]})
    assert k8s_network_policy_to_calico(doc)["spec"]["ingress"] == [allow("UDP")]


def test_named_port_egress():
    doc = k8s_np({"podSelector": {}, "policyTypes": ["Egress"], "egress": [
        {"to": [{"namespaceSelector": pods(ns="y")}], "ports": [{"port": "serve-80", "protocol": "UDP"}]}]})
    assert k8s_network_policy_to_calico(doc)["spec"]["egress"] == [
        allow("UDP", None, {"selector": K8S, "namespaceSelector": "ns == 'y'", "ports": ["serve-80"]})]


def test_cidrs_are_masked_and_canonical():
    doc = k8s_np({"podSelector": {}, "ingress": [
        {"from": [{"ipBlock": {"cidr": "10.10.1.12/24", "except": ["10.10.1.12/32"]}},
                  {"ipBlock": {"cidr": "2001:DB8:0:0::1/64", "except": ["2001:db8:0:0:1::/80"]}}]}]})
    assert k8s_network_policy_to_calico(doc)["spec"]["ingress"] == [
        allow(None, {"nets": ["10.10.1.0/24"], "notNets": ["10.10.1.12/32"]}),
        allow(None, {"nets": ["2001:db8::/64"], "notNets": ["2001:db8:0:0:1::/80"]})]


@pytest.mark.parametrize("rule", [{}, {"from": []}, {"from": None, "ports": []}])
def test_empty_or_absent_from_and_ports_allow_everything(rule):
    doc = k8s_np({"podSelector": {}, "ingress": [rule]})
    assert k8s_network_policy_to_calico(doc)["spec"]["ingress"] == [{"action": "Allow"}]


def test_empty_ingress_list_is_deny_all():
    doc = k8s_np({"podSelector": {}, "ingress": []})
    assert k8s_network_policy_to_calico(doc) == calico_np(K8S, ["Ingress"])


def test_missing_namespace_is_the_default_one_or_the_callers():
    doc = k8s_np({"podSelector": {}}, namespace=None)
    assert k8s_network_policy_to_calico(doc)["metadata"]["namespace"] == "default"
    converted = k8s_network_policy_to_calico(doc, default_namespace="x")
    assert converted["metadata"]["namespace"] == "x"


def test_missing_spec_selects_every_pod_for_ingress():
    doc = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": "deny", "namespace": "x"}}
    assert k8s_network_policy_to_calico(doc) == calico_np(K8S, ["Ingress"], name="deny", namespace="x")


def test_input_untouched_and_output_not_shared():
    doc = k8s_np({"podSelector": {}, "ingress": [{"from": [{"ipBlock": BLOCK}]}],
                  "policyTypes": ["Ingress", "Egress"], "egress": [{"to": [{"ipBlock": BLOCK}]}]})
    before = copy.deepcopy(doc)
    converted = k8s_network_policy_to_calico(doc)
    assert doc == before
    converted["spec"]["ingress"][0]["source"]["notNets"].append("x")
    assert BLOCK["except"] == ["192.168.3.0/24", "192.168.4.0/24"]
    assert converted["spec"]["egress"][0]["destination"]["notNets"] == BLOCK["except"]


def test_json_is_in_gos_field_order():
    doc = k8s_np({"podSelector": pods(pod="a"), "ingress": [
        {"from": [{"podSelector": pods(pod="b")}], "ports": [{"port": 80}]}]}, namespace="x",
        name="allow-b")
    assert json.dumps(k8s_network_policy_to_calico(doc), separators=(",", ":")) == (
        '{"kind":"NetworkPolicy","apiVersion":"projectcalico.org/v3","metadata":{"name":'
        '"knp.default.allow-b","namespace":"x","labels":{"projectcalico.org/tier":"default"}},'
        '"spec":{"tier":"default","order":1000,"ingress":[{"action":"Allow","protocol":"TCP",'
        '"source":{"selector":"projectcalico.org/orchestrator == \'k8s\' && pod == \'b\'"},'
        '"destination":{"ports":[80]}}],"selector":"projectcalico.org/orchestrator == \'k8s\' && '
        'pod == \'a\'","types":["Ingress"]}}')


def test_every_selector_written_is_one_calico_parses():
    doc = k8s_np({"podSelector": {"matchLabels": {"app.kubernetes.io/name": "web"},
                                  "matchExpressions": [
                                      {"key": "tier", "operator": "NotIn", "values": ["db", "cache"]},
                                      {"key": "x.io/canary", "operator": "DoesNotExist"}]},
                  "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
                      {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["x", "y"]}]},
                      "podSelector": {"matchExpressions": [{"key": "pod", "operator": "Exists"}]}}]}]})
    spec = k8s_network_policy_to_calico(doc)["spec"]
    source = spec["ingress"][0]["source"]
    for text in (spec["selector"], source["selector"], source["namespaceSelector"]):
        calico_selector.validate(text)
    labels = {"projectcalico.org/orchestrator": "k8s", "app.kubernetes.io/name": "web", "tier": "web"}
    assert calico_selector.parse(spec["selector"]).evaluate(labels)
    assert not calico_selector.parse(spec["selector"]).evaluate({**labels, "tier": "db"})


def test_dispatch_by_api_version_and_kind():
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}
    assert kubernetes_object_to_calico(ns) == namespace_to_profile(ns)
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"}}
    assert kubernetes_object_to_calico(sa, default_namespace="x")["metadata"]["name"] == "ksa.x.sa"
    np = k8s_np({"podSelector": {}}, namespace=None)
    assert kubernetes_object_to_calico(np, default_namespace="y")["metadata"]["namespace"] == "y"
    assert kubernetes_object_to_calico({"apiVersion": "projectcalico.org/v3",
                                        "kind": "NetworkPolicy"}) is None
    assert kubernetes_object_to_calico({"apiVersion": ["v1"], "kind": "Namespace"}) is None


# --- Namespaces and service accounts (conversion_test.go, kube-controllers) --------------

def profile(name: str, labels: dict[str, str], rules: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if rules:
        spec["ingress"] = [{"action": "Allow"}]
        spec["egress"] = [{"action": "Allow"}]
    spec["labelsToApply"] = labels
    return {"kind": "Profile", "apiVersion": "projectcalico.org/v3",
            "metadata": {"name": name}, "spec": spec}


def namespace(name: str = "default", **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, **meta}}


def test_namespace_to_profile():
    doc = namespace(labels={"foo": "bar", "roger": "rabbit"}, annotations={},
                    uid="30316465-6365-4463-ad63-3564622d3638")
    assert namespace_to_profile(doc) == profile("kns.default", {
        "pcns.foo": "bar", "pcns.kubernetes.io/metadata.name": "default",
        "pcns.projectcalico.org/name": "default", "pcns.roger": "rabbit"})


def test_namespace_without_labels():
    assert namespace_to_profile(namespace()) == profile("kns.default", {
        "pcns.kubernetes.io/metadata.name": "default", "pcns.projectcalico.org/name": "default"})


@pytest.mark.parametrize("annotation", ['{"ingress": {"isolation": "DefaultDeny"}}',
                                        "invalidJSON", "{}"])
def test_namespace_network_policy_annotation_is_ignored(annotation):
    doc = namespace(annotations={"net.beta.kubernetes.io/network-policy": annotation})
    assert namespace_to_profile(doc) == namespace_to_profile(namespace())


def test_namespace_prefixed_label_keys_and_name_labels_win():
    doc = namespace("prod", labels={"foo.org/bar": "baz", "projectcalico.org/name": "other",
                                    "kubernetes.io/metadata.name": "other"})
    assert namespace_to_profile(doc) == profile("kns.prod", {
        "pcns.foo.org/bar": "baz", "pcns.kubernetes.io/metadata.name": "prod",
        "pcns.projectcalico.org/name": "prod"})


def service_account(name: str = "sa-test", **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, **meta}}


def test_service_account_in_default_namespace():
    doc = service_account(labels={"foo": "bar", "roger": "rabbit"}, annotations={})
    assert service_account_to_profile(doc) == profile("ksa.default.sa-test", {
        "pcsa.foo": "bar", "pcsa.projectcalico.org/name": "sa-test", "pcsa.roger": "rabbit"},
        rules=False)


def test_service_account_in_namespace():
    doc = service_account(namespace="test")
    assert service_account_to_profile(doc) == profile(
        "ksa.test.sa-test", {"pcsa.projectcalico.org/name": "sa-test"}, rules=False)


def test_service_account_without_labels():
    assert service_account_to_profile(service_account()) == profile(
        "ksa.default.sa-test", {"pcsa.projectcalico.org/name": "sa-test"}, rules=False)


def test_service_account_prefixed_label_key():
    doc = service_account("serviceaccount", namespace="foo", labels={"foo.org/bar": "baz"})
    assert service_account_to_profile(doc) == profile("ksa.foo.serviceaccount", {
        "pcsa.foo.org/bar": "baz", "pcsa.projectcalico.org/name": "serviceaccount"}, rules=False)


# --- Bad input: one error naming the field and the value ---------------------------------

def _np_with(**spec: Any) -> dict[str, Any]:
    return k8s_np({"podSelector": {}, **spec})


def _port(**port: Any) -> dict[str, Any]:
    return _np_with(ingress=[{"ports": [port]}])


def _peer(**peer: Any) -> dict[str, Any]:
    return _np_with(ingress=[{"from": [peer]}])


def _block(cidr: str, *excepts: str) -> dict[str, Any]:
    return _peer(ipBlock={"cidr": cidr, "except": list(excepts)})


def _expr(**expression: Any) -> dict[str, Any]:
    return _np_with(podSelector={"matchExpressions": [expression]})


P0 = "spec.ingress[0].ports[0]"
F0 = "spec.ingress[0].from[0]"
E0 = "spec.podSelector.matchExpressions[0]"

BAD_POLICIES = [
    ("no name", k8s_np({}, name=""), "metadata.name", MISSING, "name or generateName is required"),
    ("no metadata", {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "spec": {}},
     "metadata.name", MISSING, "required"),
    ("upper-case name", k8s_np({}, name="testPolicy"), "metadata.name", "testPolicy", "RFC 1123"),
    ("name too long once prefixed", k8s_np({}, name="a" * 250), "metadata.name", "a" * 250,
     "no more than 241 characters"),
    ("bad namespace", k8s_np({}, namespace="a.b"), "metadata.namespace", "a.b", "RFC 1123 label"),
    ("wrong apiVersion", {**k8s_np({}), "apiVersion": "extensions/v1beta1"}, "apiVersion",
     "extensions/v1beta1", "must be networking.k8s.io/v1"),
    ("wrong kind", {**k8s_np({}), "kind": "GlobalNetworkPolicy"}, "kind",
     "GlobalNetworkPolicy", "must be NetworkPolicy"),
    ("unknown top-level field", {**k8s_np({}), "status": {}}, "status", "status", "unknown field"),
    ("unknown spec field", _np_with(podSelecter={}), "spec.podSelecter", "podSelecter",
     "unknown field"),
    ("typo from", _np_with(ingress=[{"form": [{"podSelector": {}}]}]), "spec.ingress[0].form",
     "form", "unknown field"),
    ("to in an ingress rule", _np_with(ingress=[{"to": []}]), "spec.ingress[0].to", "to",
     "unknown field"),
    ("unknown peer field", _peer(podSelectors={}), f"{F0}.podSelectors", "podSelectors",
     "unknown field"),
    ("unknown port field", _port(ports=80), f"{P0}.ports", "ports", "unknown field"),
    ("ingress not a list", _np_with(ingress={"from": []}), "spec.ingress", {"from": []},
     "must be a list"),
    ("empty peer", _peer(), F0, MISSING, "must specify a peer"),
    ("ipBlock and podSelector", _peer(ipBlock={"cidr": "10.0.0.0/8"}, podSelector={}), F0,
     ["ipBlock", "podSelector"], "may not specify both ipBlock and another peer"),
    ("ipBlock without cidr", _peer(ipBlock={"except": ["10.0.0.0/16"]}), f"{F0}.ipBlock.cidr",
     MISSING, "must be specified"),
    ("prefix too long", _block("10.0.0.0/33"), f"{F0}.ipBlock.cidr", "10.0.0.0/33",
     "must be a valid CIDR value"),
    ("not a cidr", _block("ten/8"), f"{F0}.ipBlock.cidr", "ten/8", "must be a valid CIDR value"),
    ("bare address", _block("10.0.0.1"), f"{F0}.ipBlock.cidr", "10.0.0.1",
     "must be a valid CIDR value"),
    ("netmask form", _block("10.0.0.0/255.0.0.0"), f"{F0}.ipBlock.cidr", "10.0.0.0/255.0.0.0",
     "must be a valid CIDR value"),
    ("leading zeros", _block("010.0.0.0/8"), f"{F0}.ipBlock.cidr", "010.0.0.0/8",
     "must not have leading 0s"),
    ("prefix with leading zero", _block("10.0.0.0/08"), f"{F0}.ipBlock.cidr", "10.0.0.0/08",
     "must not have leading 0s"),
    ("IPv4-mapped IPv6", _block("::ffff:10.0.0.0/104"), f"{F0}.ipBlock.cidr",
     "::ffff:10.0.0.0/104", "IPv4-mapped"),
    ("except outside cidr", _block("10.0.0.0/16", "10.1.0.0/24"), f"{F0}.ipBlock.except[0]",
     "10.1.0.0/24", "must be a strict subset of `cidr`"),
    ("except equal to cidr", _block("10.0.0.0/16", "10.0.0.0/16"), f"{F0}.ipBlock.except[0]",
     "10.0.0.0/16", "must be a strict subset of `cidr`"),
    ("except of the other family", _block("10.0.0.0/8", "2001:db8::/64"),
     f"{F0}.ipBlock.except[0]", "2001:db8::/64", "must be a strict subset of `cidr`"),
    ("bad except", _block("10.0.0.0/8", "10.0.0.0/40"), f"{F0}.ipBlock.except[0]",
     "10.0.0.0/40", "must be a valid CIDR value"),
    ("port 0", _port(port=0), f"{P0}.port", 0, "must be between 1 and 65535, inclusive"),
    ("port 65536", _port(port=65536), f"{P0}.port", 65536, "between 1 and 65535"),
    ("port number as a string", _port(port="80"), f"{P0}.port", "80",
     "must contain at least one letter"),
    ("port true", _port(port=True), f"{P0}.port", True, "must be an integer"),
    ("port name too long", _port(port="a-very-long-port-name"), f"{P0}.port",
     "a-very-long-port-name", "no more than 15 characters"),
    ("port name upper case", _port(port="HTTP"), f"{P0}.port", "HTTP",
     "only alpha-numeric characters (a-z, 0-9), and hyphens"),
    ("port name double hyphen", _port(port="a--b"), f"{P0}.port", "a--b",
     "consecutive hyphens"),
    ("port name ends with hyphen", _port(port="http-"), f"{P0}.port", "http-",
     "must not begin or end with a hyphen"),
    ("endPort without port", _port(endPort=90), f"{P0}.endPort", 90,
     "may not be specified when `port` is not specified"),
    ("endPort below port", _port(port=90, endPort=80), f"{P0}.endPort", 80,
     "must be greater than or equal to `port`"),
    ("endPort with a named port", _port(port="http", endPort=90), f"{P0}.endPort", 90,
     "non-numeric"),
    ("endPort out of range", _port(port=80, endPort=70000), f"{P0}.endPort", 70000,
     "between 1 and 65535"),
    ("endPort a string", _port(port=80, endPort="90"), f"{P0}.endPort", "90",
     "must be an integer"),
    ("protocol ICMP", _port(protocol="ICMP"), f"{P0}.protocol", "ICMP",
     'supported values: "SCTP", "TCP", "UDP"'),
    ("protocol lower case", _port(protocol="tcp", port=80), f"{P0}.protocol", "tcp",
     "supported values"),
    ("three policyTypes", _np_with(policyTypes=["Ingress", "Egress", "Ingress"]),
     "spec.policyTypes", ["Ingress", "Egress", "Ingress"], "more than two policyTypes"),
    ("lower-case policy type", _np_with(policyTypes=["ingress"]), "spec.policyTypes[0]",
     "ingress", 'supported values: "Ingress", "Egress"'),
    ("operator Equals", _expr(key="k", operator="Equals", values=["v"]), f"{E0}.operator",
     "Equals", "not a valid selector operator"),
    ("In without values", _expr(key="k", operator="In"), f"{E0}.values", MISSING,
     "must be specified when `operator` is 'In' or 'NotIn'"),
    ("Exists with values", _expr(key="k", operator="Exists", values=["v"]), f"{E0}.values",
     ["v"], "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"),
    ("bad expression key", _expr(key="-k", operator="Exists"), f"{E0}.key", "-k",
     "name part must consist of"),
    ("bad expression value", _expr(key="k", operator="In", values=["a b"]), f"{E0}.values[0]",
     "a b", "a valid label must be"),
    ("matchLabels value a number", _np_with(podSelector={"matchLabels": {"version": 1}}),
     "spec.podSelector.matchLabels.version", 1, "must be a string"),
    ("matchLabels bad value", _np_with(podSelector={"matchLabels": {"app": "web'"}}),
     "spec.podSelector.matchLabels.app", "web'", "a valid label must be"),
    ("matchLabels bad key prefix", _peer(podSelector={"matchLabels": {"Ex.com/app": "web"}}),
     f"{F0}.podSelector.matchLabels", "Ex.com/app", "prefix part a lowercase RFC 1123"),
    ("namespaceSelector not an object", _peer(namespaceSelector="all()"),
     f"{F0}.namespaceSelector", "all()", "must be an object"),
]


@pytest.mark.parametrize(("doc", "field", "value", "reason"), [b[1:] for b in BAD_POLICIES],
                         ids=[b[0] for b in BAD_POLICIES])
def test_bad_network_policy(doc, field, value, reason):
    before = copy.deepcopy(doc)
    with pytest.raises(KubernetesObjectError) as err:
        k8s_network_policy_to_calico(doc)
    assert (err.value.field, err.value.value) == (field, value)
    assert reason in err.value.reason
    assert err.value.kind == "NetworkPolicy"
    assert doc == before


def test_error_message_names_object_field_and_value():
    with pytest.raises(KubernetesObjectError) as err:
        k8s_network_policy_to_calico(_port(port=0))
    assert str(err.value) == ('NetworkPolicy "test.policy" is invalid: spec.ingress[0].ports[0].'
                              'port: Invalid value: 0: must be between 1 and 65535, inclusive')
    with pytest.raises(KubernetesObjectError) as err:
        k8s_network_policy_to_calico(_peer())
    assert str(err.value) == ('NetworkPolicy "test.policy" is invalid: spec.ingress[0].from[0]: '
                              'Required value: must specify a peer')
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize(("convert", "doc", "field", "value", "reason"), [
    (namespace_to_profile, namespace("a.b"), "metadata.name", "a.b", "RFC 1123 label"),
    (namespace_to_profile, namespace("x", labels={"bad key": "v"}), "metadata.labels", "bad key",
     "name part must consist of"),
    (namespace_to_profile, {**namespace("x"), "kind": "Namespaces"}, "kind", "Namespaces",
     "must be Namespace"),
    (namespace_to_profile, {"apiVersion": "v1", "kind": "Namespace", "metadata": {}},
     "metadata.name", MISSING, "required"),
    (service_account_to_profile, service_account("Sa"), "metadata.name", "Sa", "RFC 1123"),
    (service_account_to_profile, service_account(namespace="A"), "metadata.namespace", "A",
     "RFC 1123 label"),
    (service_account_to_profile, {**service_account(), "spec": {}}, "spec", "spec",
     "unknown field"),
], ids=["namespace name", "namespace label key", "namespace kind", "namespace without name",
        "service account name", "service account namespace", "service account spec"])
def test_bad_namespace_and_service_account(convert, doc, field, value, reason):
    with pytest.raises(KubernetesObjectError) as err:
        convert(doc)
    assert (err.value.field, err.value.value) == (field, value)
    assert reason in err.value.reason
