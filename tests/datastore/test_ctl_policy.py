"""ctl with the policy kinds against a real etcd: round trips with calicoctl's columns,
tier rules, and bad manifests (exit 1, one error naming the field and value, store
byte-identical)."""

from __future__ import annotations

import json

import pytest

from .ctlrun import dump, refused, run_inprocess

HEAD = "apiVersion: projectcalico.org/v3\n"
PREFIX = "/calico/resources/v3/projectcalico.org/"

POLICY = f"""{HEAD}kind: NetworkPolicy
metadata:
  name: allow-tcp-6379
  namespace: production
spec:
  selector: role == 'database'
  order: 100
  ingress:
  - action: Allow
    protocol: TCP
    source:
      selector: role == 'frontend'
    destination:
      ports: [6379, "7000:7010", redis]
  egress:
  - action: Allow
"""

GLOBAL_POLICY = f"""{HEAD}kind: GlobalNetworkPolicy
metadata:
  name: deny-blue
spec:
  tier: security
  order: 1000000
  selector: color == 'blue'
  types: [Ingress]
  ingress:
  - action: Deny
    protocol: ICMP
    icmp: {{type: 8}}
    source:
      notNets: [10.0.0.0/8]
"""

TIER = f"""{HEAD}kind: Tier
metadata:
  name: security
spec:
  order: 100
"""

PROFILE = f"""{HEAD}kind: Profile
metadata:
  name: kns.production
spec:
  ingress: [{{action: Allow}}]
  egress: [{{action: Allow}}]
  labelsToApply:
    pcns.env: prod
    pcns.projectcalico.org/name: production
"""

NETWORK_SET = f"""{HEAD}kind: NetworkSet
metadata:
  name: external-db
  namespace: production
  labels: {{role: db}}
spec:
  nets: [198.51.100.0/28, 203.0.113.7]
"""

GLOBAL_NETWORK_SET = f"""{HEAD}kind: GlobalNetworkSet
metadata:
  name: many
spec:
  nets: [{", ".join(f"10.{i}.0.0/16" for i in range(12))}]
"""


@pytest.fixture
def ctl(etcd_endpoint, monkeypatch):
    monkeypatch.setenv("ETCD_ENDPOINTS", etcd_endpoint)
    return run_inprocess


def rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.split("\n") if line.strip()]


def test_policy_round_trip_with_calicoctls_columns(ctl, etcd_client):
    res = ctl(["create", "-f", "-"], POLICY.encode())
    assert (res.rc, res.out) == (0, "Successfully created 1 'NetworkPolicy' resource(s)\n")
    assert rows(ctl(["get", "networkpolicy", "-n", "production"]).out) == [
        ["NAMESPACE", "NAME", "TIER"], ["production", "allow-tcp-6379", "default"]]
    assert rows(ctl(["get", "np"]).out) == [["NAME", "TIER"]]  # nothing in namespace default
    wide = ctl(["get", "policies", "-A", "-o", "wide"]).out.split("\n")
    assert wide[0].split() == ["NAMESPACE", "NAME", "TIER", "ORDER", "SELECTOR"]
    assert wide[1].rstrip().split(maxsplit=4) == ["production", "allow-tcp-6379", "default",
                                                  "100", "role == 'database'"]
    stored = json.loads(etcd_client.get(
        PREFIX + "networkpolicies/production/allow-tcp-6379").value)
    assert stored["metadata"]["labels"] == {"projectcalico.org/tier": "default"}
    assert stored["spec"]["types"] == ["Ingress", "Egress"]
    assert stored["spec"]["ingress"][0]["destination"]["ports"] == [6379, "7000:7010", "redis"]
    shown = json.loads(ctl(["get", "np", "allow-tcp-6379", "-n", "production", "-o",
                            "json"]).out)
    assert shown["spec"] == stored["spec"] and shown["metadata"]["resourceVersion"]
    changed = POLICY.replace("order: 100", "order: 50.5")
    assert ctl(["replace", "-f", "-"], changed.encode()).rc == 0
    assert "50.5" in ctl(["get", "np", "-n", "production", "-o", "wide"]).out
    assert ctl(["apply", "-f", "-"], POLICY.encode()).rc == 0
    res = ctl(["delete", "-f", "-"], POLICY.encode())
    assert (res.rc, res.out) == (0, "Successfully deleted 1 'NetworkPolicy' resource(s)\n")
    assert etcd_client.get(PREFIX + "networkpolicies/production/allow-tcp-6379") is None


def test_tiers_and_global_policies(ctl, etcd_client):
    # The default tier exists without being stored; calicoctl prints the order with %v.
    assert rows(ctl(["get", "tiers"]).out) == [["NAME", "ORDER"], ["default", "1e+06"]]
    missing = ctl(["apply", "-f", "-"], GLOBAL_POLICY.encode())
    assert missing.rc == 1
    assert missing.err == ("failed to apply 'GlobalNetworkPolicy' resource: "
                           "[resource does not exist: Tier(security) with error: <nil>]\n")
    both = (TIER + "---\n" + GLOBAL_POLICY).encode()
    assert ctl(["create", "-f", "-"], both).out == "Successfully created 2 resource(s)\n"
    assert rows(ctl(["get", "tier"]).out) == [
        ["NAME", "ORDER"], ["security", "100"], ["default", "1e+06"]]
    assert rows(ctl(["get", "gnp", "-o", "wide"]).out) == [
        ["NAME", "TIER", "ORDER", "SELECTOR"],
        ["deny-blue", "security", "1e+06", "color", "==", "'blue'"]]
    stored = json.loads(etcd_client.get(PREFIX + "tiers/security").value)
    assert stored["spec"] == {"order": 100, "defaultAction": "Deny"}
    assert json.loads(ctl(["get", "tier", "default", "-o", "json"]).out)["spec"] == {
        "order": 1000000, "defaultAction": "Deny"}

    before = dump(etcd_client)
    busy = ctl(["delete", "tier", "security"])
    # crud_commands.go delete: a "Failed to delete" line per error, then Fprintln's newline.
    assert busy.rc == 1 and busy.err == (
        "Failed to delete 'Tier' resource: operation delete is not supported on security: "
        "Cannot delete a non-empty tier\n\n")
    protected = ctl(["delete", "tier", "default"])
    assert protected.rc == 1 and "operation Delete is not supported on default: " \
        "Cannot delete default tier" in protected.err
    assert dump(etcd_client) == before
    # Deleting the policy first, in the same batch, empties the tier.
    res = ctl(["delete", "-f", "-"], (GLOBAL_POLICY + "---\n" + TIER).encode())
    assert (res.rc, res.out) == (0, "Successfully deleted 2 resource(s)\n")


def test_profiles_and_network_sets(ctl):
    manifest = "---\n".join([PROFILE, NETWORK_SET, GLOBAL_NETWORK_SET])
    assert ctl(["apply", "-f", "-"], manifest.encode()).out == \
        "Successfully applied 3 resource(s)\n"
    assert rows(ctl(["get", "profiles", "-o", "wide"]).out) == [
        ["NAME", "LABELS"],
        ["kns.production", "pcns.env=prod,pcns.projectcalico.org/name=production"]]
    assert rows(ctl(["get", "pro"]).out) == [["NAME"], ["kns.production"]]
    assert rows(ctl(["get", "networksets", "-n", "production", "-o", "wide"]).out) == [
        ["NAMESPACE", "NAME", "NETS"],
        ["production", "external-db", "198.51.100.0/28,203.0.113.7/32"]]
    wide = rows(ctl(["get", "gnetsets", "-o", "wide"]).out)
    nets = ",".join(f"10.{i}.0.0/16" for i in range(12))
    assert wide == [["NAME", "NETS"], ["many", nets[:77] + "..."]]
    assert rows(ctl(["get", "globalnetworkset", "-o", "custom-columns=NAME"]).out) == [
        ["NAME"], ["many"]]
    assert ctl(["delete", "networkset", "external-db", "-n", "production"]).rc == 0
    assert ctl(["delete", "profile", "kns.production"]).rc == 0


# --- bad input -------------------------------------------------------------------------


def policy(spec: str, name: str = "p", kind: str = "NetworkPolicy") -> str:
    return f"{HEAD}kind: {kind}\nmetadata:\n  name: {name}\nspec:\n{spec}"


def gnp(spec: str, name: str = "p") -> str:
    return policy(spec, name, "GlobalNetworkPolicy")


def rule(text: str, direction: str = "ingress") -> str:
    return f"  {direction}:\n  - action: Allow\n" + "".join(f"    {line}\n"
                                                             for line in text.split("\n"))


def tier(spec: str, name: str = "t") -> str:
    return f"{HEAD}kind: Tier\nmetadata:\n  name: {name}\nspec:\n{spec}"


def netset(spec: str, kind: str = "NetworkSet", extra_meta: str = "") -> str:
    return f"{HEAD}kind: {kind}\nmetadata:\n  name: s\n{extra_meta}spec:\n{spec}"


NP = "NetworkPolicy.Spec"
BAD: list[tuple[str, str, str]] = [
    ("action lower case", f"{HEAD}kind: NetworkPolicy\nmetadata: {{name: p}}\nspec:\n"
     "  ingress: [{action: allow}]\n", f"{NP}.Ingress[0].Action = 'allow'"),
    ("no action", policy("  ingress:\n  - protocol: TCP\n"),
     f"{NP}.Ingress[0].Action = '' (required field is missing)"),
    ("protocol lower case", policy(rule("protocol: tcp")),
     f"{NP}.Ingress[0].Protocol = 'tcp' (protocol name invalid"),
    ("protocol 0", policy(rule("protocol: 0")),
     f"{NP}.Ingress[0].Protocol = '0' (protocol number invalid)"),
    ("notProtocol 256", policy(rule("notProtocol: 256")), f"{NP}.Ingress[0].NotProtocol = '256'"),
    ("ports without protocol", policy(rule("destination: {ports: [80]}")),
     f"{NP}.Ingress[0].Destination.Ports = '80' (rules with numeric port or port range must "
     "set protocol to TCP or UDP or SCTP)"),
    ("ports with ICMP", policy(rule("protocol: ICMP\ndestination: {ports: [http]}")),
     f"{NP}.Ingress[0].Destination.Ports = 'http' (rules that specify ports must set protocol"),
    ("backwards range", policy(rule("protocol: TCP\ndestination: {ports: ['90:80']}")),
     f"{NP}.Ingress[0].Destination.Ports[0] = '90:80' (minimum port number (90) is greater "
     "than maximum port number (80) in port range)"),
    ("port 0", policy(rule("protocol: UDP\nsource: {notPorts: [0]}")),
     f"{NP}.Ingress[0].Source.NotPorts[0] = '0' (port range invalid, port number must be "
     "between 1 and 65535)"),
    ("port too big", policy(rule("protocol: TCP\ndestination: {ports: ['70000']}")),
     f"{NP}.Ingress[0].Destination.Ports[0] = '70000' (invalid port format (70000))"),
    ("port name with space", policy(rule("protocol: TCP\ndestination: {ports: ['my port']}")),
     "(invalid name for named port (my port))"),
    ("ports not a list", policy(rule("protocol: TCP\ndestination: {ports: 80}")),
     f"{NP}.Ingress[0].Destination.Ports = '80'"),
    ("icmp without protocol", policy(rule("icmp: {type: 8}")),
     f"{NP}.Ingress[0].ICMP = '{{'type': 8}}' (ICMP fields require protocol to be ICMP or "
     "ICMPv6)"),
    ("icmp code without type", policy(rule("protocol: ICMP\nicmp: {code: 0}")),
     "(ICMP code specified without an ICMP type)"),
    ("icmp type 255", policy(rule("protocol: ICMP\nnotICMP: {type: 255}")),
     f"{NP}.Ingress[0].NotICMP.Type = '255'"),
    ("ICMP on IPv6", policy(rule("protocol: ICMP\nipVersion: 6")),
     f"{NP}.Ingress[0].Protocol = 'ICMP' (protocol ICMP requires ipVersion 4)"),
    ("ipVersion 5", policy(rule("ipVersion: 5")), f"{NP}.Ingress[0].IPVersion = '5'"),
    ("net without prefix", policy(rule("source: {nets: [10.0.0.1]}")),
     f"{NP}.Ingress[0].Source.Nets[0] = '10.0.0.1' (invalid CIDR)"),
    ("net not masked", policy(rule("destination: {nets: [10.1.2.3/16]}")),
     f"{NP}.Ingress[0].Destination.Nets[0] = '10.1.2.3/16' (invalid CIDR: host bits set"),
    ("mixed families", policy(rule("source: {nets: [10.0.0.0/8]}\n"
                                   "destination: {notNets: ['fd00::/8']}")),
     f"{NP}.Ingress[0].Destination.NotNets = 'fd00::/8' (rule contains both IPv4 and IPv6"),
    ("ipVersion against nets", policy(rule("ipVersion: 6\nsource: {nets: [10.0.0.0/8]}")),
     "(rule IP version doesn't match CIDR version)"),
    ("catch-all notNets", policy(rule("source: {notNets: [0.0.0.0/0]}")),
     f"{NP}.Ingress[0].Source.NotNets = '0.0.0.0/0' (catch-all CIDR in negation"),
    ("bad rule selector", policy(rule("source: {selector: \"role = 'x'\"}")),
     f"{NP}.Ingress[0].Source.Selector = 'role = 'x'' (invalid selector"),
    ("bad notSelector", policy(rule("destination: {notSelector: 'has(a'}")),
     f"{NP}.Ingress[0].Destination.NotSelector = 'has(a'"),
    ("global() in rule selector", policy(rule("source: {selector: global()}")),
     "(global() can only be used in an EntityRule namespaceSelector)"),
    ("global() combined", policy(rule("source: {namespaceSelector: 'global() || all()'}")),
     f"{NP}.Ingress[0].Source.NamespaceSelector = 'global() || all()' (global() cannot be "
     "combined with other selectors)"),
    ("bad serviceAccounts selector", policy(rule("source: {serviceAccounts: {selector: '!'}}")),
     f"{NP}.Ingress[0].Source.ServiceAccounts.Selector = '!'"),
    ("bad policy selector", policy("  selector: app == frontend\n"),
     f"{NP}.Selector = 'app == frontend' (invalid selector"),
    ("types repeated", policy("  types: [Ingress, Ingress]\n"),
     f"{NP}.Types = 'Ingress,Ingress' ('Ingress' type specified more than once)"),
    ("types lower case", policy("  types: [egress]\n"), f"{NP}.Types[0] = 'egress'"),
    ("order a string", policy("  order: '100'\n"), f"{NP}.Order = '100' (order must be a number)"),
    ("unknown rule field", policy(rule("port: 80")),
     "field in document is not recognized or is in the wrong location: spec.ingress.0.port"),
    ("unknown entity field", policy(rule("source: {ports: [1], namespace: x}")),
     "not recognized or is in the wrong location: spec.ingress.0.source.namespace"),
    ("rules not a list", policy("  egress: {action: Allow}\n"), f"{NP}.Egress = "),
    ("policy name with dots", policy("  order: 1\n", name="a.b.c"),
     "NetworkPolicy.Metadata.Name = 'a.b.c' (name must consist of lower case alphanumeric"),
    ("tier name with a dot", policy("  tier: sec.ops\n"), f"{NP}.Tier = 'sec.ops'"),
    ("tier does not exist", policy("  tier: nowhere\n"), "resource does not exist: Tier(nowhere) with error: <nil>"),
    ("HTTP on Deny", policy("  ingress:\n  - action: Deny\n    http: {methods: [GET]}\n"),
     f"{NP}.Ingress[0].HTTP = '' (HTTP match is only valid on Allow rules)"),
    ("service in ingress destination",
     policy(rule("destination: {services: {name: db}}")),
     f"{NP}.Ingress[0].Destination.Services = 'db' (not allowed in ingress rule destination)"),
    ("preDNAT without applyOnForward", gnp("  preDNAT: true\n"),
     "GlobalNetworkPolicy.Spec.ApplyOnForward = 'false' (applyOnForward must be true if "
     "either preDNAT or doNotTrack is true)"),
    ("preDNAT with egress", gnp("  preDNAT: true\n  applyOnForward: true\n" + rule("", "egress")),
     "GlobalNetworkPolicy.Spec.Egress = '1 rule(s)' (preDNAT policy cannot have any egress "
     "rules)"),
    ("global() as GNP namespaceSelector", gnp("  namespaceSelector: global()\n"),
     "GlobalNetworkPolicy.Spec.NamespaceSelector = 'global()' (global() can only be used"),
    ("GNP service without namespace", gnp(rule("destination: {services: {name: db}}", "egress")),
     "GlobalNetworkPolicy.Spec.Egress[0].Destination.Services.Namespace = '' (must specify a "
     "namespace)"),
    ("doNotTrack a string", gnp("  doNotTrack: 'yes'\n"),
     "GlobalNetworkPolicy.Spec.DoNotTrack = 'yes'"),
    ("tier default action Allow", tier("  defaultAction: Allow\n"),
     "Tier.Spec.DefaultAction = 'Allow'"),
    ("tier name with a dot", tier("  order: 1\n", name="a.b"),
     "Tier.Metadata.Name = 'a.b' (name must consist of lower case alphanumeric characters or "
     "'-'"),
    ("default tier reordered", tier("  order: 5\n", name="default"),
     "Tier.Spec.Order = '5' (default tier order must be 1000000)"),
    ("kube-admin tier Deny", tier("  order: 1000\n", name="kube-admin"),
     "Tier.Spec.DefaultAction = 'Deny' (The 'kube-admin' tier must have default action 'Pass')"),
    ("tier order a word", tier("  order: first\n"), "Tier.Spec.Order = 'first'"),
    ("network set garbage", netset("  nets: [garbage]\n"),
     "NetworkSet.Spec.Nets[0] = 'garbage' (invalid CIDR)"),
    ("network set /33", netset("  nets: [10.0.0.0/33]\n", kind="GlobalNetworkSet"),
     "GlobalNetworkSet.Spec.Nets[0] = '10.0.0.0/33' (invalid CIDR)"),
    ("network set nets a string", netset("  nets: 10.0.0.0/8\n"), "NetworkSet.Spec.Nets = "),
    ("network set reserved label", netset(
        "  nets: [10.0.0.0/8]\n", extra_meta="  labels: {projectcalico.org/namespace: x}\n"),
     "NetworkSet.Metadata.Labels = 'projectcalico.org/namespace' (projectcalico.org/namespace "
     "is not a valid label name)"),
    ("profile bad labelsToApply", f"{HEAD}kind: Profile\nmetadata: {{name: pr}}\nspec:\n"
     "  labelsToApply: {'a b': c}\n", "Profile.Spec.LabelsToApply"),
    ("second document bad", TIER + "---\n" + policy("  tier: t\n" + rule("protocol: tcp")),
     "document 2: error with field NetworkPolicy.Spec.Ingress[0].Protocol = 'tcp'"),
]


@pytest.fixture
def seeded(etcd_endpoint, etcd_client, monkeypatch):
    monkeypatch.setenv("ETCD_ENDPOINTS", etcd_endpoint)
    assert run_inprocess(["apply", "-f", "-"], POLICY.encode()).rc == 0
    return etcd_client


@pytest.mark.parametrize("verb", ["apply", "create"])
@pytest.mark.parametrize("name, manifest, message", BAD, ids=[c[0] for c in BAD])
def test_bad_policy_manifest(seeded, verb, name, manifest, message):
    res = refused(seeded, [verb, "-f", "-"], manifest.encode(), message)
    assert res.err.count("\n") == 1, res.err  # one clear error


def test_bad_table_is_large_enough():
    assert len(BAD) >= 30
