"""Identity and names (cni/naming.py), against Calico's rules and tortie's WEP model."""

from __future__ import annotations

import hashlib

import pytest

from cni.config import NamedPort, PodArgs
from cni.errors import InvalidConfig, InvalidEnvironment
from cni.naming import endpoint_document, identify
from datastore.resources import WorkloadEndpoint, parse_document

K8S = {"K8S_POD_NAMESPACE": "kube-system", "K8S_POD_NAME": "core-dns-7d8f",
       "K8S_POD_INFRA_CONTAINER_ID": "infra1", "IgnoreUnknown": "1"}


def test_kubernetes_pod() -> None:
    w = identify("k8s-pod-network", "node-a", "cid123", "eth0", K8S)
    assert w.orchestrator == "k8s" and w.namespace == "kube-system" and w.pod == "core-dns-7d8f"
    # Calico's VethNameForWorkload: cali + sha1("<namespace>.<pod>")[:11]
    assert w.veth_name == "cali" + hashlib.sha1(b"kube-system.core-dns-7d8f").hexdigest()[:11]
    assert len(w.veth_name) == 15
    # libcalico-go names: each '-' inside a part doubled
    assert w.endpoint_name == "node--a-k8s-core--dns--7d8f-eth0"
    assert w.handle_id == "k8s-pod-network.cid123"
    assert w.container_id == "infra1" and w.cni_container_id == "cid123"
    assert w.ipam_attributes == {"node": "node-a", "namespace": "kube-system",
                                 "pod": "core-dns-7d8f"}


def test_container_mac_is_stable_unicast_and_local() -> None:
    a = identify("n", "node1", "cid1", "eth0", K8S).container_mac
    assert a == identify("n", "node1", "cid1", "eth0", {}).container_mac
    assert a != identify("n", "node1", "cid2", "eth0", K8S).container_mac
    first = int(a.split(":")[0], 16)
    assert first & 0x01 == 0 and first & 0x02 == 2


def test_without_kubernetes_args_the_container_is_the_workload() -> None:
    w = identify("net", "node1", "0123456789abcdef", "eth0", {})
    assert (w.orchestrator, w.namespace, w.pod) == ("cni", "default", None)
    assert w.veth_name == "cali0123456789a"
    assert w.endpoint_name == "node1-cni-0123456789abcdef-eth0"


def test_podman_passes_only_a_pod_name() -> None:
    w = identify("net", "node1", "c1", "eth0", {"K8S_POD_NAME": "web1"})
    assert (w.orchestrator, w.namespace, w.pod) == ("k8s", "default", "web1")
    # podman's generated names hold '_': not a pod name, so the container is the workload
    w = identify("net", "node1", "c1", "eth0", {"K8S_POD_NAME": "sleepy_turing"})
    assert (w.orchestrator, w.pod) == ("cni", None)


def test_second_interface_gets_its_own_host_name() -> None:
    a = identify("n", "node1", "c", "eth0", K8S).veth_name
    b = identify("n", "node1", "c", "net1", K8S).veth_name
    assert a != b and b.startswith("cali")


@pytest.mark.parametrize("args, err, fragment", [
    ({"K8S_POD_NAMESPACE": "Bad_NS", "K8S_POD_NAME": "p"}, InvalidEnvironment,
     "K8S_POD_NAMESPACE='Bad_NS'"),
    ({"K8S_POD_NAMESPACE": "ns", "K8S_POD_NAME": "Bad_Pod"}, InvalidEnvironment,
     "K8S_POD_NAME='Bad_Pod'"),
])
def test_invalid_names_from_kubernetes(args, err, fragment) -> None:
    with pytest.raises(err, match=fragment):
        identify("n", "node1", "c", "eth0", args)


def test_invalid_node_and_interface_names() -> None:
    with pytest.raises(InvalidConfig, match="node name 'Node_1'"):
        identify("n", "Node_1", "c", "eth0", K8S)
    with pytest.raises(InvalidEnvironment, match="CNI_IFNAME='Eth_0'"):
        identify("n", "node1", "c", "Eth_0", K8S)


def test_endpoint_document_is_a_valid_calico_workload_endpoint() -> None:
    w = identify("k8s-pod-network", "node1", "cid1", "eth0", K8S)
    doc = endpoint_document(w, ["10.65.0.5/32"], PodArgs(labels={"app": "dns"}))
    wep = parse_document(doc)
    assert isinstance(wep, WorkloadEndpoint)
    assert wep.namespace == "kube-system" and wep.name == w.endpoint_name
    assert wep.spec.interfaceName == w.veth_name and wep.spec.ipNetworks == ["10.65.0.5/32"]
    assert wep.spec.profiles == ["kns.kube-system"] and wep.spec.containerID == "infra1"
    assert wep.metadata.labels == {"projectcalico.org/namespace": "kube-system",
                                   "projectcalico.org/orchestrator": "k8s", "app": "dns"}
    cni = parse_document(endpoint_document(identify("n", "node1", "cid9", "eth0", {}),
                                           ["10.65.0.6/32"]))
    assert cni.spec.orchestrator == "cni" and cni.spec.workload == "cid9"


def test_endpoint_document_carries_calicos_labels_profiles_and_named_ports() -> None:
    w = identify("k8s-pod-network", "node1", "cid1", "eth0", K8S)
    pod = PodArgs(labels={"pod": "a", "projectcalico.org/namespace": "spoofed"},
                  ports=(NamedPort("serve-80-tcp", "tcp", 80), NamedPort("dns", "udp", 53)),
                  service_account="builder")
    wep = parse_document(endpoint_document(w, ["10.65.0.5/32"], pod))
    assert isinstance(wep, WorkloadEndpoint)
    # Calico's own labels win over the pod's: a pod cannot claim another namespace.
    assert wep.metadata.labels == {"pod": "a", "projectcalico.org/namespace": "kube-system",
                                   "projectcalico.org/orchestrator": "k8s",
                                   "projectcalico.org/serviceaccount": "builder"}
    assert wep.spec.profiles == ["kns.kube-system", "ksa.kube-system.builder"]
    assert wep.spec.serviceAccountName == "builder"
    assert [(p.name, p.protocol, p.port) for p in wep.spec.ports or ()] == [
        ("serve-80-tcp", "tcp", 80), ("dns", "udp", 53)]


def test_a_long_service_account_is_a_profile_but_not_a_label() -> None:
    sa = "s" * 70  # over a label value's 63 characters: Calico leaves the label out
    doc = endpoint_document(identify("n", "node1", "c", "eth0", K8S), ["10.65.0.5/32"],
                            PodArgs(service_account=sa))
    assert "projectcalico.org/serviceaccount" not in doc["metadata"]["labels"]
    assert doc["spec"]["profiles"][-1] == f"ksa.kube-system.{sa}"
