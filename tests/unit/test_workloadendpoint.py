"""WorkloadEndpoint: Calico's fields, key layout, validation messages, ctl columns."""

import json

import pytest

from ctl.printers import PrintContext, render
from datastore.errors import ParseError, ValidationError
from datastore.resources import KINDS, WorkloadEndpoint, kind_for, parse_document

NAME = "node1-k8s-nginx--7c5ddbdf54--x2b4q-eth0"


def wep(name: str = NAME, namespace: str | None = "default", **spec):
    meta = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    base = {"orchestrator": "k8s", "node": "node1", "pod": "nginx-7c5ddbdf54-x2b4q",
            "endpoint": "eth0", "containerID": "1b2c3d", "ipNetworks": ["10.65.0.2/32"],
            "interfaceName": "cali29f56ea1abf", "mac": "0a:58:0a:41:00:02",
            "profiles": ["kns.default", "ksa.default.default"]}
    return {"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
            "metadata": meta, "spec": {**base, **spec}}


def test_calicos_document_parses_and_keys_under_its_namespace():
    res = parse_document(wep(namespace="prod"))
    assert isinstance(res, WorkloadEndpoint)
    assert res.key() == (
        f"/calico/resources/v3/projectcalico.org/workloadendpoints/prod/{NAME}")
    assert res.spec.ipNetworks == ["10.65.0.2/32"]
    assert KINDS["WorkloadEndpoint"] is WorkloadEndpoint


def test_missing_namespace_means_default_as_in_calicoctl():
    res = parse_document(wep(namespace=None))
    assert res.namespace == "default"
    assert res.key().endswith(f"/workloadendpoints/default/{NAME}")


@pytest.mark.parametrize("alias", ["workloadendpoint", "workloadendpoints", "wep", "weps",
                                   "WorkloadEndpoint"])
def test_aliases(alias):
    assert kind_for(alias) is WorkloadEndpoint


def test_stored_form_round_trips():
    res = parse_document(wep(ipNATs=[{"internalIP": "10.65.0.2", "externalIP": "172.16.0.9"}],
                             ports=[{"name": "http", "protocol": "TCP", "port": 80}]))
    doc = json.loads(res.to_stored())
    assert "resourceVersion" not in doc["metadata"]
    assert doc["metadata"]["namespace"] == "default"
    back = WorkloadEndpoint.from_stored(res.to_stored(), 9)
    assert back.spec == res.spec and back.resource_version == 9


def test_addresses_are_canonical():
    res = parse_document(wep(ipNetworks=["10.65.0.2", "fd00:10::0002/128"],
                             mac="0A-58-0A-41-00-02",
                             allowSpoofedSourcePrefixes=["192.168.7.9/24"]))
    assert res.spec.ipNetworks == ["10.65.0.2/32", "fd00:10::2/128"]
    assert res.spec.mac == "0a:58:0a:41:00:02"
    assert res.spec.allowSpoofedSourcePrefixes == ["192.168.7.0/24"]


@pytest.mark.parametrize("name", [
    NAME,  # Calico's form, '-' doubled inside parts
    "node1.example.com-k8s-web-eth0",
    "a",
])
def test_valid_names(name):
    assert parse_document(wep(name=name)).name == name


@pytest.mark.parametrize("change, fragment", [
    ({"ipNetworks": ["10.65.0.0/26"]},
     "WorkloadEndpoint.Spec.IPNetworks[0] = '10.65.0.0/26' (IP network contains multiple addresses)"),
    ({"ipNetworks": ["banana"]}, "WorkloadEndpoint.Spec.IPNetworks[0] = 'banana'"),
    ({"ipNetworks": ["10.65.0.2/32", "10.65.0.2"]}, "ipNetworks must not repeat an address"),
    ({"interfaceName": "cali29f56ea1abf0"},
     "WorkloadEndpoint.Spec.InterfaceName = 'cali29f56ea1abf0' (interface name must be 1-15"),
    ({"interfaceName": "cali/1"}, "WorkloadEndpoint.Spec.InterfaceName = 'cali/1'"),
    ({"interfaceName": "eth 0"}, "WorkloadEndpoint.Spec.InterfaceName = 'eth 0'"),
    ({"interfaceName": ".."}, "WorkloadEndpoint.Spec.InterfaceName = '..'"),
    ({"interfaceName": ""}, "WorkloadEndpoint.Spec.InterfaceName = ''"),
    ({"mac": "0a:58:0a:41:00"}, "WorkloadEndpoint.Spec.MAC = '0a:58:0a:41:00' (must be a MAC"),
    ({"ipv4Gateway": "fd00::1"},
     "WorkloadEndpoint.Spec.IPv4Gateway = 'fd00::1' (invalid IPv4 gateway address specified)"),
    ({"ipv6Gateway": "10.0.0.1"}, "invalid IPv6 gateway address specified"),
    ({"ipNATs": [{"internalIP": "10.65.0.9", "externalIP": "172.16.0.9"}]},
     "WorkloadEndpoint.Spec.IPNATs[0].InternalIP = '10.65.0.9' (NAT is not in the endpoint networks)"),
    ({"ipNATs": [{"internalIP": "10.65.0.2", "externalIP": "fd00::9"}]}, "mismatched IP versions"),
    ({"ipNATs": [{"internalIP": "10.65.0.2"}]},
     "WorkloadEndpoint.Spec.IPNATs[0].ExternalIP = '' (required field is missing)"),
    ({"node": "Node_1"}, "WorkloadEndpoint.Spec.Node = 'Node_1'"),
    ({"containerID": "abc_def"}, "WorkloadEndpoint.Spec.ContainerID = 'abc_def' (containerID"),
    ({"ports": [{"protocol": "TCP", "port": 80, "hostPort": 0}]},
     "WorkloadEndpoint.Spec.Ports[0].Name = '' (WorkloadEndpointPort name must not be empty if "
     "no HostPort is specified)"),
    ({"profiles": ["kns.default", "Bad Profile"]}, "invalid profile name 'Bad Profile'"),
    ({"ports": [{"name": "http", "protocol": "ICMP", "port": 80}]},
     "WorkloadEndpoint.Spec.Ports[0].Protocol = 'ICMP'"),
    ({"ports": [{"name": "http", "protocol": "TCP", "port": 0}]},
     "WorkloadEndpoint.Spec.Ports[0].Port = '0' (port must be between 1 and 65535)"),
    ({"ports": [{"name": "Http_Port", "protocol": "TCP", "port": 80}]},
     "WorkloadEndpoint.Spec.Ports[0].Name = 'Http_Port'"),
    ({"ports": [{"name": "http", "protocol": "UDP", "port": 53, "hostIP": "nope"}]},
     "WorkloadEndpoint.Spec.Ports[0].HostIP = 'nope'"),
    ({"allowSpoofedSourcePrefixes": ["10.0.0.0/33"]},
     "WorkloadEndpoint.Spec.AllowSpoofedSourcePrefixes[0] = '10.0.0.0/33'"),
    ({"ipNetworks": "10.65.0.2/32"}, "WorkloadEndpoint.Spec.IPNetworks"),
])
def test_validation_names_field_and_value(change, fragment):
    with pytest.raises(ValidationError) as err:
        parse_document(wep(**change))
    assert fragment in str(err.value)


@pytest.mark.parametrize("name, namespace, fragment", [
    ("Bad_Name", "default", "WorkloadEndpoint.Metadata.Name = 'Bad_Name'"),
    ("-leading", "default", "WorkloadEndpoint.Metadata.Name = '-leading'"),
    (NAME, "Prod", "WorkloadEndpoint.Metadata.Namespace = 'Prod'"),
    (NAME, "a.b", "WorkloadEndpoint.Metadata.Namespace = 'a.b'"),
    (NAME, "x" * 64, "WorkloadEndpoint.Metadata.Namespace"),
])
def test_name_and_namespace_rules(name, namespace, fragment):
    with pytest.raises(ValidationError) as err:
        parse_document(wep(name=name, namespace=namespace))
    assert fragment in str(err.value)


def test_unknown_field_is_refused_with_calicoctl_wording():
    with pytest.raises(ParseError) as err:
        parse_document(wep(ipAddress="10.65.0.2"))
    assert str(err.value) == ("field in document is not recognized or is in the wrong "
                              "location: spec.ipAddress")


def _table(output: str, items) -> list[list[str]]:
    text = render(WorkloadEndpoint, items, output, PrintContext())
    return [line.split() for line in text.splitlines() if line.strip()]


def test_ctl_columns_default_and_wide():
    # calicoctl/calicoctl/resourcemgr/workloadendpoint.go: NAMESPACE only with -n/-A
    # (tests/unit/test_printers.py), NATS is Go's %v of each IPNAT struct.
    items = [parse_document(wep(namespace="prod",
                                ipNATs=[{"internalIP": "10.65.0.2", "externalIP": "172.16.0.9"}])),
             parse_document(wep(name="node2-k8s-db-eth0", workload="db", node="node2",
                                ipNetworks=["10.65.1.7", "fd00::7"], profiles=None))]
    assert _table("ps", items) == [
        ["WORKLOAD", "NODE", "NETWORKS", "INTERFACE"],
        ["nginx-7c5ddbdf54-x2b4q", "node1", "10.65.0.2/32", "cali29f56ea1abf"],
        ["db", "node2", "10.65.1.7/32,fd00::7/128", "cali29f56ea1abf"],
    ]
    wide = _table("wide", items)
    assert wide[0] == ["NAME", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE", "PROFILES", "NATS"]
    assert wide[1][-3:] == ["kns.default,ksa.default.default", "{10.65.0.2", "172.16.0.9}"]
    assert _table("custom-columns=NAME,MAC", items[:1]) == [
        ["NAME", "MAC"], [NAME, "0a:58:0a:41:00:02"]]
