"""Policy resources: Calico's validation vectors, defaulting, stored form, parse_port.

The accept/reject cases follow libcalico-go's `lib/validator/v3/validator_test.go`
(policy, rule, tier and network-set entries), written as the JSON documents a user
would apply; each rejection also names the field and gives the reason tortie prints.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from datastore.errors import ValidationError
from datastore.resources import (
    GlobalNetworkPolicy,
    GlobalNetworkSet,
    NetworkPolicy,
    NetworkSet,
    Profile,
    Tier,
    kind_for,
    parse_document,
)
from datastore.resources.policy import (
    PortRange,
    Rule,
    default_tier,
    default_types,
    go_float,
    parse_port,
)


def doc(kind: str, spec: dict[str, Any], name: str = "thing",
        meta: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": kind,
            "metadata": {"name": name, **(meta or {})}, "spec": spec}


def np(spec: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    return doc("NetworkPolicy", spec or {}, **kw)


def gnp(spec: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    return doc("GlobalNetworkPolicy", spec or {}, **kw)


def ingress(**rule: Any) -> dict[str, Any]:
    """A GlobalNetworkPolicy with one ingress rule (action Allow unless given)."""
    return gnp({"ingress": [{"action": "Allow", **rule}]})


def egress(**rule: Any) -> dict[str, Any]:
    return gnp({"egress": [{"action": "Allow", **rule}]})


def tier(name: str, **spec: Any) -> dict[str, Any]:
    return doc("Tier", spec, name=name)


TCP, UDP, SCTP = "TCP", "UDP", "SCTP"
NETV4_1, NETV4_2, NETV4_3, NETV4_4 = "1.2.3.4/32", "1.2.0.0/32", "1.2.3.0/26", "1.0.0.0/10"
NETV6_1, NETV6_2, NETV6_3 = "aabb:aabb::ffff/128", "aabb:aabb::/128", "aabb:aabb::/122"

ACCEPT: list[tuple[str, dict[str, Any]]] = [
    ("allow action", ingress()),
    ("deny action", ingress(action="Deny")),
    ("log action", ingress(action="Log")),
    ("pass action", ingress(action="Pass")),
    ("IP version 4", ingress(ipVersion=4)),
    ("IP version 6", ingress(ipVersion=6)),
    ("protocol TCP", ingress(protocol="TCP")),
    ("protocol UDPLite", ingress(protocol="UDPLite")),
    ("protocol ICMPv6", ingress(protocol="ICMPv6")),
    ("protocol 1 as int", ingress(protocol=1)),
    ("protocol 255 as int", ingress(protocol=255)),
    ("protocol 255 as string", ingress(protocol="255")),
    ("valid selector", ingress(source={"selector": 'foo == "bar"'})),
    ("selector has() with '/'", ingress(source={"selector": "has(calico/k8s_ns)"})),
    # (validator_test.go also accepts has(calico/k8s_NS-.1/role); datastore.selector keeps
    # keys to valid Kubernetes label keys, which have at most one '/'.)
    ("selector key with '-.'", ingress(source={"selector": "has(calico/k8s_NS-.1)"})),
    ("ICMP with type 0", ingress(protocol="ICMP", icmp={"type": 0})),
    ("ICMP with type 254", ingress(protocol="ICMP", icmp={"type": 254})),
    ("ICMP type and code 255", ingress(protocol="ICMPv6", icmp={"type": 128, "code": 255})),
    ("icmp and no ipVersion", ingress(protocol="ICMP", icmp={"type": 0})),
    ("icmp with ipVersion 4", ingress(protocol="ICMP", ipVersion=4, icmp={"type": 0})),
    ("icmpv6 with ipVersion 6", ingress(protocol="ICMPv6", ipVersion=6, icmp={"type": 0})),
    ("protocol SCTP alone", ingress(protocol=SCTP)),
    ("source ports and protocol 6", ingress(protocol=6, source={"ports": [1]})),
    ("source named ports, protocol 6", ingress(protocol=6, source={"ports": ["telnet"]})),
    ("source named ports, protocol UDP", ingress(protocol=UDP, source={"ports": ["dns"]})),
    ("source !ports and protocol 17", ingress(protocol=17, source={"notPorts": [1]})),
    ("empty source ports, protocol 7", ingress(protocol=7, source={"ports": []})),
    ("dest ports and protocol TCP", ingress(protocol=TCP, destination={"ports": [80, "81:90"]})),
    ("dest named ports, no protocol", ingress(destination={"ports": ["http"]})),
    ("source !named ports, no protocol", ingress(source={"notPorts": ["http"]})),
    ("dest ports and protocol SCTP", ingress(protocol=SCTP, destination={"ports": [1]})),
    ("nets of one family", ingress(source={"nets": [NETV4_3]}, destination={"nets": [NETV4_4]})),
    ("v6 nets with ipVersion 6", ingress(ipVersion=6, source={"nets": [NETV6_3]})),
    ("HTTP on an Allow rule", ingress(http={"methods": ["GET"]})),
    ("HTTP with protocol TCP", ingress(protocol=TCP, http={"methods": ["GET"]})),
    ("HTTP paths", ingress(http={"paths": [{"exact": "/foo"}, {"prefix": "/bar"}]})),
    ("rule annotations", ingress(metadata={"annotations": {"foo": "bar"}})),
    ("global() alone in namespaceSelector", ingress(source={"namespaceSelector": "global()"})),
    ("service in an egress destination",
     egress(destination={"services": {"name": "svc", "namespace": "ns"}})),
    ("service in an ingress source, with ports",
     ingress(protocol=TCP, source={"services": {"name": "svc", "namespace": "ns"},
                                   "ports": [80]})),
    ("preDNAT with applyOnForward", gnp({"preDNAT": True, "applyOnForward": True,
                                         "ingress": [{"action": "Allow"}]})),
    ("doNotTrack with applyOnForward", gnp({"doNotTrack": True, "applyOnForward": True})),
    ("applyOnForward alone", gnp({"applyOnForward": True})),
    ("all three off", gnp({"doNotTrack": False, "preDNAT": False, "applyOnForward": False})),
    ("types missing", gnp({})),
    ("types Ingress+Egress", gnp({"types": ["Ingress", "Egress"]})),
    ("types Egress without egress rules", gnp({"types": ["Egress"]})),
    ("NetworkPolicy name", np()),
    ("NetworkPolicy name with one dot", np(name="th.ing")),
    ("NetworkPolicy name of 253 characters", np(name="x" * 253)),
    ("NetworkPolicy k8s-converted name", np(name="knp.default.thing")),
    ("performance hint", np({"performanceHints": ["AssumeNeededOnEveryNode"]})),
    ("policy in a named tier", np({"tier": "security"})),
    ("tier", tier("security", order=100)),
    ("tier with dash", tier("sec-ops")),
    ("tier name of 63 characters", tier("t" * 63)),
    ("default tier as Calico makes it", tier("default", order=1_000_000, defaultAction="Deny")),
    ("kube-admin tier", tier("kube-admin", order=1000, defaultAction="Pass")),
    ("kube-baseline tier", tier("kube-baseline", order=10_000_000, defaultAction="Pass")),
    ("tier defaultAction Pass", tier("t", order=5.5, defaultAction="Pass")),
    ("NetworkSet CIDRs and IPs", doc("NetworkSet", {"nets": [
        "10.0.0.1", "11.0.0.0/8", "dead:beef::", "dead:beef::/96"]})),
    ("GlobalNetworkSet with labels", doc("GlobalNetworkSet", {"nets": ["10.0.0.1"]},
                                         meta={"labels": {"a": "b"}})),
    ("profile labelsToApply", doc("Profile", {"labelsToApply": {
        "project.calico.org/my-valid-label": "v" * 63}})),
    ("profile with rules", doc("Profile", {"ingress": [{"action": "Allow"}],
                                           "egress": [{"action": "Allow"}]}, name="kns.x")),
]

REJECT: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown action", ingress(action="Jump"), "Ingress[0].Action", "Input should be"),
    ("lower-case action", ingress(action="allow"), "Ingress[0].Action", "Input should be"),
    ("no action", gnp({"ingress": [{}]}), "Ingress[0].Action", "required field is missing"),
    ("IP version 0", ingress(ipVersion=0), "Ingress[0].IPVersion", "Input should be 4 or 6"),
    ("protocol 0", ingress(protocol=0), "Ingress[0].Protocol", "protocol number invalid"),
    ("protocol 256 as string", ingress(protocol="256"), "Ingress[0].Protocol",
     "protocol name invalid"),
    ("protocol 0 as string", ingress(protocol="0"), "Ingress[0].Protocol",
     "protocol number invalid"),
    ("protocol tcpfoo", ingress(protocol="tcpfoo"), "Ingress[0].Protocol", "protocol name invalid"),
    ("protocol tcp (case matters)", ingress(protocol="tcp"), "Ingress[0].Protocol",
     "protocol name invalid"),
    ("notProtocol 300", ingress(notProtocol=300), "Ingress[0].NotProtocol", "protocol"),
    ("invalid selector", ingress(source={"selector": "thing=hello &"}),
     "Ingress[0].Source.Selector", "invalid selector"),
    ("ICMP code without type", ingress(protocol="ICMP", icmp={"code": 1}), "Ingress[0].ICMP",
     "ICMP code specified without an ICMP type"),
    ("ICMP type 255", ingress(protocol="ICMP", icmp={"type": 255}), "Ingress[0].ICMP.Type",
     "between 0 and 254"),
    ("ICMP code 256", ingress(protocol="ICMP", icmp={"type": 128, "code": 256}),
     "Ingress[0].ICMP.Code", "between 0 and 255"),
    ("icmp fields and no protocol", ingress(ipVersion=4, icmp={"type": 0}), "Ingress[0].ICMP",
     "ICMP fields require protocol to be ICMP or ICMPv6"),
    ("icmp fields with protocol TCP", ingress(protocol=TCP, icmp={"type": 0}), "Ingress[0].ICMP",
     "ICMP fields require protocol"),
    ("ICMP with ipVersion 6", ingress(protocol="ICMP", ipVersion=6), "Ingress[0].Protocol",
     "protocol ICMP requires ipVersion 4"),
    ("ICMPv6 with ipVersion 4", ingress(protocol="ICMPv6", ipVersion=4), "Ingress[0].Protocol",
     "protocol ICMPv6 requires ipVersion 6"),
    ("notProtocol 58 with ipVersion 4", ingress(notProtocol=58, ipVersion=4),
     "Ingress[0].NotProtocol", "protocol ICMPv6 requires ipVersion 6"),
    ("source ports, protocol 7", ingress(protocol=7, source={"ports": [1]}),
     "Ingress[0].Source.Ports", "rules that specify ports must set protocol to TCP or UDP or SCTP"),
    ("source !ports, protocol 100", ingress(protocol=100, source={"notPorts": [1]}),
     "Ingress[0].Source.NotPorts", "must set protocol to TCP or UDP or SCTP"),
    ("dest !ports, protocol ICMP", ingress(protocol="ICMP", ipVersion=4,
                                          destination={"notPorts": [1]}),
     "Ingress[0].Destination.NotPorts", "rules that specify ports must set protocol"),
    ("named port, protocol ICMP", ingress(protocol="ICMP", destination={"ports": ["http"]}),
     "Ingress[0].Destination.Ports", "rules that specify ports must set protocol"),
    ("dest ports, no protocol", ingress(destination={"ports": [80]}),
     "Ingress[0].Destination.Ports",
     "rules with numeric port or port range must set protocol to TCP or UDP or SCTP"),
    ("backwards port range", ingress(protocol=TCP, source={"ports": ["200:100"]}),
     "Ingress[0].Source.Ports[0]", "minimum port number (200) is greater than maximum"),
    ("backwards !port range", ingress(protocol=TCP, destination={"notPorts": ["200:100"]}),
     "Ingress[0].Destination.NotPorts[0]", "minimum port number (200)"),
    ("port 0", ingress(protocol=TCP, destination={"ports": [0]}),
     "Ingress[0].Destination.Ports[0]", "port number must be between 1 and 65535"),
    ("range from 0", ingress(protocol=TCP, destination={"notPorts": ["0:456"]}),
     "Ingress[0].Destination.NotPorts[0]", "port number must be between 1 and 65535"),
    ("port 65536", ingress(protocol=TCP, destination={"ports": ["65536"]}),
     "Ingress[0].Destination.Ports[0]", "invalid port format (65536)"),
    ("bad port name", ingress(protocol=TCP, destination={"ports": ["a b"]}),
     "Ingress[0].Destination.Ports[0]", "invalid name for named port (a b)"),
    ("port as a bool", ingress(protocol=TCP, destination={"ports": [True]}),
     "Ingress[0].Destination.Ports[0]", "invalid port format"),
    ("v4 source, v6 destination", ingress(protocol=TCP, source={"nets": [NETV4_3]},
                                          destination={"nets": [NETV6_3]}),
     "Ingress[0].Destination.Nets", "rule contains both IPv4 and IPv6 CIDRs"),
    ("v6 source, v4 destination", ingress(protocol=TCP, source={"nets": [NETV6_2]},
                                          destination={"nets": [NETV4_2]}),
     "Ingress[0].Destination.Nets", "rule contains both IPv4 and IPv6 CIDRs"),
    ("ipVersion 6 and v4 nets", ingress(ipVersion=6, source={"nets": [NETV4_4]}),
     "Ingress[0].Source.Nets", "rule IP version doesn't match CIDR version"),
    ("ipVersion 6 and v4 notNets", ingress(ipVersion=6, destination={"notNets": [NETV4_2]}),
     "Ingress[0].Destination.NotNets", "rule IP version doesn't match CIDR version"),
    ("ipVersion 4 and v6 dest nets", ingress(ipVersion=4, destination={"nets": [NETV6_1]}),
     "Ingress[0].Destination.Nets", "rule IP version doesn't match CIDR version"),
    ("both families in one list", ingress(source={"nets": [NETV4_1, NETV6_1]}),
     "Ingress[0].Source.Nets", "rule contains both IPv4 and IPv6 CIDRs"),
    ("catch-all v4 notNets", ingress(source={"notNets": ["0.0.0.0/0"]}),
     "Ingress[0].Source.NotNets", "catch-all CIDR in negation"),
    ("catch-all v6 notNets", ingress(source={"notNets": ["::0/0"]}),
     "Ingress[0].Source.NotNets", "catch-all CIDR in negation"),
    ("catch-all v6 notNets, long form", ingress(source={"notNets": ["0:0:0::/0"]}),
     "Ingress[0].Source.NotNets", "catch-all CIDR in negation"),
    ("rule net without prefix", ingress(source={"nets": ["10.0.0.1"]}),
     "Ingress[0].Source.Nets[0]", "invalid CIDR"),
    ("rule net not masked", ingress(source={"nets": ["10.0.0.1/8"]}),
     "Ingress[0].Source.Nets[0]", "host bits set"),
    ("rule net garbage", ingress(destination={"notNets": ["garbage"]}),
     "Ingress[0].Destination.NotNets[0]", "invalid CIDR"),
    ("HTTP on a Deny rule", ingress(action="Deny", http={"methods": ["GET"]}),
     "Ingress[0].HTTP", "HTTP match is only valid on Allow rules"),
    ("HTTP with protocol UDP", ingress(protocol=UDP, http={"methods": ["GET"]}),
     "Ingress[0].Protocol", "rules with HTTP match must have protocol TCP or unset"),
    ("HTTP in an egress rule", egress(http={"methods": ["GET"]}), "Egress[0].HTTP",
     "not allowed in egress rule"),
    ("HTTP path both exact and prefix",
     ingress(http={"paths": [{"exact": "/foo", "prefix": "/bar"}]}), "Ingress[0].HTTP.Paths[0]",
     "Both 'exact' and 'prefix' are set"),
    ("HTTP path with '?'", ingress(http={"paths": [{"exact": "/fo?o"}]}),
     "Ingress[0].HTTP.Paths[0]", "must start with `/`"),
    ("HTTP path empty", ingress(http={"paths": [{}]}), "Ingress[0].HTTP.Paths[0]",
     "Either 'exact' or 'prefix' must be set"),
    ("HTTP duplicate methods", ingress(http={"methods": ["GET", "GET", "Foo"]}),
     "Ingress[0].HTTP.Methods", "duplicates"),
    ("rule annotation key", ingress(metadata={"annotations": {"...": "bar"}}),
     "Ingress[0].Metadata.Annotations", "invalid annotation key"),
    ("global() in policy selector", gnp({"selector": "global()"}), "Spec.Selector",
     "global() can only be used in an EntityRule namespaceSelector"),
    ("global() in serviceAccountSelector", np({"serviceAccountSelector": "global()"}),
     "Spec.ServiceAccountSelector", "global() can only be used"),
    ("global() in GNP namespaceSelector", gnp({"namespaceSelector": "global()"}),
     "Spec.NamespaceSelector", "global() can only be used"),
    ("global() in rule selector", ingress(source={"selector": "global()"}),
     "Ingress[0].Source.Selector", "global() can only be used"),
    ("global() AND'd in namespaceSelector",
     ingress(source={"namespaceSelector": "global() && projectcalico.org/name == 'x'"}),
     "Ingress[0].Source.NamespaceSelector", "global() cannot be combined with other selectors"),
    ("global() OR'd in namespaceSelector",
     ingress(source={"namespaceSelector": "global() || all()"}),
     "Ingress[0].Source.NamespaceSelector", "global() cannot be combined"),
    ("service in an egress source", egress(source={"services": {"name": "s", "namespace": "n"}}),
     "Egress[0].Source.Services", "not allowed in egress rule source"),
    ("service in an ingress destination",
     ingress(destination={"services": {"name": "s", "namespace": "n"}}),
     "Ingress[0].Destination.Services", "not allowed in ingress rule destination"),
    ("service and serviceAccounts", egress(destination={
        "services": {"name": "s", "namespace": "n"}, "serviceAccounts": {"names": ["sa"]}}),
     "Egress[0].Destination.ServiceAccounts",
     "cannot specify ServiceAccounts and Services on the same rule"),
    ("service and ports on egress destination", egress(protocol=TCP, destination={
        "services": {"name": "s", "namespace": "n"}, "ports": [80]}),
     "Egress[0].Destination.Ports", "ports and notPorts cannot be specified with services"),
    ("service and nets", egress(destination={
        "services": {"name": "s", "namespace": "n"}, "nets": ["10.0.0.0/8"]}),
     "Egress[0].Destination.Nets", "cannot specify Nets/NotNets and Services"),
    ("service and notSelector", egress(destination={
        "services": {"name": "s", "namespace": "n"}, "notSelector": "a == 'b'"}),
     "Egress[0].Destination.Selector", "cannot specify Selector/NotSelector and Services"),
    ("service and namespaceSelector", egress(destination={
        "services": {"name": "s", "namespace": "n"}, "namespaceSelector": "all()"}),
     "Egress[0].Destination.NamespaceSelector", "cannot specify NamespaceSelector and Services"),
    ("GNP service without a namespace", egress(destination={"services": {"name": "s"}}),
     "Egress[0].Destination.Services.Namespace", "must specify a namespace"),
    ("preDNAT and doNotTrack", gnp({"preDNAT": True, "doNotTrack": True,
                                    "applyOnForward": True}),
     "Spec.PreDNAT", "preDNAT and doNotTrack cannot both be true"),
    ("preDNAT egress rules", gnp({"preDNAT": True, "applyOnForward": True,
                                  "egress": [{"action": "Allow"}]}),
     "Spec.Egress", "preDNAT policy cannot have any egress rules"),
    ("preDNAT Egress type", gnp({"preDNAT": True, "applyOnForward": True,
                                 "types": ["Ingress", "Egress"]}),
     "Spec.Types", "preDNAT policy cannot have 'Egress' type"),
    ("preDNAT without applyOnForward", gnp({"preDNAT": True}), "Spec.ApplyOnForward",
     "applyOnForward must be true if either preDNAT or doNotTrack is true"),
    ("doNotTrack without applyOnForward", gnp({"doNotTrack": True}), "Spec.ApplyOnForward",
     "applyOnForward must be true"),
    ("repeated Egress type", np({"types": ["Egress", "Egress"]}), "Spec.Types",
     "'Egress' type specified more than once"),
    ("unexpected type", np({"types": ["Ingress", "Unexpected"]}), "Spec.Types[1]",
     "Input should be 'Ingress' or 'Egress'"),
    ("junk performance hint", np({"performanceHints": ["Bananas"]}), "Spec.PerformanceHints[0]",
     "Input should be"),
    ("duplicate performance hints", gnp({"performanceHints": ["AssumeNeededOnEveryNode"] * 2}),
     "Spec.PerformanceHints", "must not repeat"),
    ("GNP name with invalid characters", gnp(name="t~!s.h.i.ng"), "Metadata.Name", "name must"),
    ("GNP name in mixed case", gnp(name="tHiNg"), "Metadata.Name", "name must"),
    ("GNP k8s policy name", gnp(name="knp.default.thing"), "Metadata.Name", "at most one '.'"),
    ("GNP name with dots", gnp(name="t.h.i.ng"), "Metadata.Name", "at most one '.'"),
    ("NP name with dots", np(name="t.h.i.ng"), "Metadata.Name", "at most one '.'"),
    ("NP name in mixed case", np(name="tHiNg"), "Metadata.Name", "name must"),
    ("NP name of 254 characters", np(name="x" * 254), "Metadata.Name", "name must"),
    ("policy tier with a dot", np({"tier": "a.b"}), "Spec.Tier", "name must consist"),
    ("order as a string", np({"order": "10"}), "Spec.Order", "order must be a number"),
    ("order infinite", np({"order": float("inf")}), "Spec.Order", "finite"),
    ("selector too long", np({"selector": "a == '" + "x" * 1100 + "'"}), "Spec.Selector",
     "at most 1024 characters"),
    ("tier with a dot", tier("a.b"), "Tier.Metadata.Name", "name must consist"),
    ("tier of 64 characters", tier("t" * 64), "Tier.Metadata.Name", "too long by 1 bytes"),
    ("tier with other characters", tier("t$"), "Tier.Metadata.Name", "name must"),
    ("default tier order", tier("default", order=10), "Tier.Spec.Order",
     "default tier order must be 1000000"),
    ("default tier Pass", tier("default", defaultAction="Pass"), "Tier.Spec.DefaultAction",
     "The 'default' tier must have default action 'Deny'"),
    ("kube-admin order", tier("kube-admin", order=5, defaultAction="Pass"), "Tier.Spec.Order",
     "kube-admin tier order must be 1000"),
    ("kube-admin Deny", tier("kube-admin", order=1000), "Tier.Spec.DefaultAction",
     "The 'kube-admin' tier must have default action 'Pass'"),
    ("kube-baseline order", tier("kube-baseline", defaultAction="Pass"), "Tier.Spec.Order",
     "kube-baseline tier order must be 10000000"),
    ("tier defaultAction Allow", tier("t", defaultAction="Allow"), "Tier.Spec.DefaultAction",
     "Input should be 'Deny' or 'Pass'"),
    ("NetworkSet bad CIDR", doc("NetworkSet", {"nets": ["garbage"]}), "NetworkSet.Spec.Nets[0]",
     "invalid CIDR"),
    ("GlobalNetworkSet bad CIDR", doc("GlobalNetworkSet", {"nets": ["1.2.3.4/33"]}),
     "GlobalNetworkSet.Spec.Nets[0]", "invalid CIDR"),
    ("NetworkSet reserved label", doc("NetworkSet", {}, meta={
        "labels": {"projectcalico.org/namespace": "foo"}}), "NetworkSet.Metadata.Labels",
     "projectcalico.org/namespace is not a valid label name"),
    ("GlobalNetworkSet reserved label", doc("GlobalNetworkSet", {}, meta={
        "labels": {"projectcalico.org/namespace": "foo"}}), "GlobalNetworkSet.Metadata.Labels",
     "projectcalico.org/namespace is not a valid label name"),
    ("NetworkSet bad name", doc("NetworkSet", {}, name="test$set"), "NetworkSet.Metadata.Name",
     "name must"),
    ("labelsToApply value of 64", doc("Profile", {"labelsToApply": {"k": "v" * 64}}),
     "Profile.Spec.LabelsToApply", "invalid label value"),
    ("labelsToApply key starting with '.'", doc("Profile", {"labelsToApply": {".my": "v"}}),
     "Profile.Spec.LabelsToApply", "invalid label key"),
    ("labelsToApply key with '!'", doc("Profile", {"labelsToApply": {"my!label": "v"}}),
     "Profile.Spec.LabelsToApply", "invalid label key"),
    ("profile rule checked too", doc("Profile", {"ingress": [{"action": "Allow",
                                                              "destination": {"ports": [80]}}]}),
     "Profile.Spec.Ingress[0].Destination.Ports", "must set protocol"),
]


@pytest.mark.parametrize("name, document", ACCEPT, ids=[c[0] for c in ACCEPT])
def test_calico_accepts(name: str, document: dict[str, Any]) -> None:
    parse_document(document)


@pytest.mark.parametrize("name, document, field, reason", REJECT, ids=[c[0] for c in REJECT])
def test_calico_rejects_with_the_field_and_the_reason(name: str, document: dict[str, Any],
                                                      field: str, reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_document(document)
    text = str(info.value)
    assert text.startswith("error with field "), text
    assert field in text and reason in text, text


def test_the_tables_are_large() -> None:
    assert len(ACCEPT) >= 50 and len(REJECT) >= 90


# --- defaulting ------------------------------------------------------------------------

RULE = {"action": "Allow"}


@pytest.mark.parametrize("spec, types", [
    ({}, ["Ingress"]),
    ({"ingress": [RULE]}, ["Ingress"]),
    ({"egress": [RULE]}, ["Egress"]),
    ({"ingress": [RULE], "egress": [RULE]}, ["Ingress", "Egress"]),
    ({"types": []}, ["Ingress"]),
    ({"types": ["Egress"], "ingress": [RULE]}, ["Egress"]),
])
def test_types_default_as_calico(spec: dict[str, Any], types: list[str]) -> None:
    for document in (np(spec), gnp(spec)):
        res = parse_document(document)
        assert isinstance(res, (NetworkPolicy, GlobalNetworkPolicy))
        assert res.spec.types == types


def test_default_types_helper() -> None:
    rule = Rule(action="Allow")
    assert default_types([], []) == ["Ingress"]
    assert default_types([rule], [rule]) == ["Ingress", "Egress"]


def test_policy_defaults_are_resolved_in_the_model() -> None:
    res = parse_document(np({"selector": "", "tier": ""}))
    assert isinstance(res, NetworkPolicy)
    assert (res.namespace, res.spec.tier, res.spec.selector) == ("default", "default", "all()")
    assert res.metadata.labels == {"projectcalico.org/tier": "default"}
    assert res.spec.order is None
    assert res.key() == "/calico/resources/v3/projectcalico.org/networkpolicies/default/thing"
    # Built directly (the policy engine's tests do), the same defaults apply.
    built = NetworkPolicy.model_validate({"metadata": {"name": "x", "namespace": "ns"}})
    assert (built.spec.tier, built.spec.selector, built.spec.types) == ("default", "all()",
                                                                        ["Ingress"])


def test_tier_label_follows_the_tier() -> None:
    res = parse_document(gnp({"tier": "security"}, meta={"labels": {
        "projectcalico.org/tier": "other", "app": "x"}}))
    assert res.metadata.labels == {"projectcalico.org/tier": "security", "app": "x"}
    assert res.key() == "/calico/resources/v3/projectcalico.org/globalnetworkpolicies/thing"


def test_tier_defaults_and_the_implicit_default_tier() -> None:
    res = parse_document(tier("security"))
    assert isinstance(res, Tier)
    assert (res.spec.order, res.spec.defaultAction) == (1_000_000.0, "Deny")
    implicit = default_tier()
    assert (implicit.name, implicit.spec.order, implicit.spec.defaultAction) == (
        "default", 1_000_000.0, "Deny")
    assert implicit.validate_semantics() == []


def test_namespaced_kinds() -> None:
    assert NetworkPolicy.namespaced and NetworkSet.namespaced
    assert not (GlobalNetworkPolicy.namespaced or GlobalNetworkSet.namespaced
                or Tier.namespaced or Profile.namespaced)
    res = parse_document(doc("NetworkSet", {"nets": ["10.0.0.0/8"]}, meta={"namespace": "x"}))
    assert res.key() == "/calico/resources/v3/projectcalico.org/networksets/x/thing"


@pytest.mark.parametrize("alias, kind", [
    ("np", NetworkPolicy), ("policies", NetworkPolicy), ("pol", NetworkPolicy),
    ("gnp", GlobalNetworkPolicy), ("GlobalNetworkPolicies", GlobalNetworkPolicy),
    ("tiers", Tier), ("pro", Profile), ("netsets", NetworkSet),
    ("gnetsets", GlobalNetworkSet),
])
def test_calicoctl_aliases(alias: str, kind: type) -> None:
    assert kind_for(alias) is kind


# --- stored form -----------------------------------------------------------------------

def test_stored_form_is_calicos_json() -> None:
    res = parse_document(np({
        "order": 100,
        "egress": [{"action": "Allow", "protocol": "6", "destination": {
            "ports": ["80", "1000:2000", "http", 443, "5:5"], "nets": ["10.0.0.0/8"]}}],
        "ingress": [{"action": "Deny", "source": {}}],
    }))
    stored = json.loads(res.to_stored())
    assert stored["spec"] == {
        "tier": "default", "order": 100, "selector": "all()", "types": ["Ingress", "Egress"],
        "ingress": [{"action": "Deny"}],
        "egress": [{"action": "Allow", "protocol": 6, "destination": {
            "nets": ["10.0.0.0/8"], "ports": [80, "1000:2000", "http", 443, 5]}}],
    }
    assert b'"order":100,' in res.to_stored()
    # Calico's Go field order, as kube-controllers writes the document.
    assert list(stored["spec"]) == ["tier", "order", "ingress", "egress", "selector", "types"]
    assert list(stored["spec"]["egress"][0]["destination"]) == ["nets", "ports"]
    gnp_spec = parse_document(gnp({"applyOnForward": True, "namespaceSelector": "a == 'b'",
                                   "egress": [RULE]})).dump()["spec"]
    assert list(gnp_spec) == ["tier", "egress", "selector", "types", "applyOnForward",
                              "namespaceSelector"]
    again = type(res).from_stored(res.to_stored(), 7)
    assert again.to_stored() == res.to_stored()
    assert again.resource_version == 7


def test_empty_rule_lists_are_left_out() -> None:
    res = parse_document(doc("Profile", {}, name="p"))
    assert json.loads(res.to_stored())["spec"] == {}
    assert parse_document(np({"order": 2.5})).dump()["spec"]["order"] == 2.5


def test_network_set_nets_are_canonical() -> None:
    res = parse_document(doc("GlobalNetworkSet", {"nets": ["10.0.0.1", "10.1.2.3/16",
                                                           "DEAD:beef::/96"]}))
    assert isinstance(res, GlobalNetworkSet)
    assert res.spec.nets == ["10.0.0.1/32", "10.1.0.0/16", "dead:beef::/96"]


# --- parse_port and go_float -----------------------------------------------------------

@pytest.mark.parametrize("value, parsed", [
    (80, PortRange(80, 80)), ("80", PortRange(80, 80)), ("1000:2000", PortRange(1000, 2000)),
    ("7:7", PortRange(7, 7)), (65535, PortRange(65535, 65535)), ("http", "http"),
    ("my_port.v-2", "my_port.v-2"), ("x" * 128, "x" * 128),
])
def test_parse_port(value: int | str, parsed: PortRange | str) -> None:
    assert parse_port(value) == parsed


@pytest.mark.parametrize("value, message", [
    (0, "port number must be between 1 and 65535"),
    (65536, "port number must be between 1 and 65535"),
    ("99999", "invalid port format (99999)"),
    ("99999:100000", "invalid minimum port number in range (99999:100000)"),
    ("1:100000", "invalid maximum port number in range (1:100000)"),
    ("20:10", "minimum port number (20) is greater than maximum port number (10) in port range"),
    ("0:10", "port number must be between 1 and 65535"),
    ("", "invalid name for named port ()"),
    ("x" * 129, "invalid name for named port"),
    ("a:b", "invalid name for named port (a:b)"),
    (True, "invalid port format"),
    (1.5, "invalid port format"),
])
def test_parse_port_refuses(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        parse_port(value)
    assert message in str(info.value)


@pytest.mark.parametrize("value, text", [
    (None, "<nil>"), (0.0, "0"), (100.0, "100"), (2.5, "2.5"), (100000.0, "100000"),
    (1_000_000.0, "1e+06"), (1234567.0, "1.234567e+06"), (10_000_000.0, "1e+07"),
    (0.0001, "0.0001"), (0.00001, "1e-05"), (-3.25, "-3.25"),
])
def test_go_float_prints_like_calicoctl(value: float | None, text: str) -> None:
    assert go_float(value) == text
