"""The plugin's Kubernetes mode end to end: the real plugin in a node namespace with its
own etcd (conftest.CniNode) reads pods from the fake Kubernetes API server
(tests/kube_api_fake, the one stand-in the suite uses for an API server), served on the
node namespace's loopback, as the kubelet's pods would be read from a real one.

Covered: a pod's labels, service account and named ports reach its WorkloadEndpoint (and
win over args.cni); the ipAddrs annotation picks the address; the ipv4pools annotation
(namespace default, pod override) restricts the pool; an unreachable API server is a
code-11 error naming its URL, and a pod that does not exist is code 3, both leaving
nothing behind; a podman container (no K8S_POD_NAMESPACE) is never looked up; and a
shim call run in the node's CNI server (what production runs) reads the pod the same way.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.probe import in_netns
from tests.kube_api_fake import KubeApiFake

from .conftest import CniNode
from .test_server import shim_call

pytestmark = pytest.mark.root

SPECIAL_POOL = "10.99.0.0/24"


@pytest.fixture
def kube(node: CniNode) -> Iterator[KubeApiFake]:
    """Name: kube. Depends: node. The fake API server, listening on the node namespace's
    loopback (its socket is made there; the test reaches its store directly)."""
    fake = KubeApiFake(namespaces=("default", "shop"))
    with in_netns(node.ns):
        fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def k8s_conf(node: CniNode, kube: Any, **changes: Any) -> dict[str, Any]:
    kubeconfig = kube.kubeconfig(node.tmp / "kubeconfig")
    return node.conf(policy={"type": "k8s"}, kubernetes={"kubeconfig": str(kubeconfig)},
                     **changes)


def make_pod(kube: Any, name: str = "web", namespace: str = "shop",
             annotations: dict[str, str] | None = None) -> None:
    meta: dict[str, Any] = {"name": name, "namespace": namespace,
                            "labels": {"app": "web", "tier": "front"}}
    if annotations:
        meta["annotations"] = annotations
    kube.create("Pod", {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {
        "serviceAccountName": "builder",
        "containers": [{"name": "app", "image": "web", "ports": [
            {"name": "http", "containerPort": 8080},
            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
            {"containerPort": 9000}]}]}})


def add_special_pool(node: CniNode) -> None:
    from datastore.resources import parse_document

    pool = parse_document({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                           "metadata": {"name": "special"},
                           "spec": {"cidr": SPECIAL_POOL, "blockSize": 28,
                                    "nodeSelector": "!all()"}})
    node.sh("etcdctl", "--endpoints", "http://127.0.0.1:2379", "put", pool.key(),
            pool.to_stored().decode())


def assert_nothing_left(node: CniNode) -> None:
    assert (node.veths(), node.allocated(), node.handles(), node.endpoints()) == (
        [], [], [], {})


def test_the_pods_labels_service_account_and_ports_reach_its_endpoint(
        node: CniNode, kube: Any) -> None:
    make_pod(kube)
    conf = k8s_conf(node, kube, args={"cni": {
        "labels": [{"key": "app", "value": "from-args"}], "serviceAccountName": "other"}})
    pod = node.new_pod()
    out = node.run("ADD", conf, netns=pod, pod="web", namespace="shop")
    assert out.rc == 0, out
    wep = node.endpoints()["shop/node1-k8s-web-eth0"]
    assert wep["metadata"]["labels"] == {
        "app": "web", "tier": "front", "projectcalico.org/namespace": "shop",
        "projectcalico.org/orchestrator": "k8s", "projectcalico.org/serviceaccount": "builder"}
    assert wep["spec"]["serviceAccountName"] == "builder"
    assert wep["spec"]["profiles"] == ["kns.shop", "ksa.shop.builder"]
    # internalapi.WorkloadEndpointPort has no omitempty: hostPort 0 and hostIP "" are stored.
    assert wep["spec"]["ports"] == [
        {"name": "http", "protocol": "tcp", "port": 8080, "hostPort": 0, "hostIP": ""},
        {"name": "dns", "protocol": "udp", "port": 53, "hostPort": 0, "hostIP": ""}]
    assert node.run("DEL", conf, netns=pod, pod="web", namespace="shop").rc == 0
    assert_nothing_left(node)


def test_ip_addrs_annotation_assigns_that_address(node: CniNode, kube: Any) -> None:
    make_pod(kube, annotations={"cni.projectcalico.org/ipAddrs": '["10.244.7.7"]'})
    conf = k8s_conf(node, kube)
    pod = node.new_pod()
    out = node.run("ADD", conf, netns=pod, pod="web", namespace="shop")
    assert out.rc == 0, out
    assert out.out is not None and out.out["ips"][0]["address"] == "10.244.7.7/32"
    assert node.allocated() == ["10.244.7.7"]
    assert node.run("DEL", conf, netns=pod, pod="web", namespace="shop").rc == 0
    assert_nothing_left(node)


def test_ipv4pools_restricts_the_pool_pod_over_namespace(node: CniNode, kube: Any) -> None:
    add_special_pool(node)  # selects no node: only a request can use it
    ns = kube.get("Namespace", "shop")
    ns["metadata"]["annotations"] = {"cni.projectcalico.org/ipv4pools": '["special"]'}
    kube.replace("Namespace", ns)
    make_pod(kube, "in-special")
    make_pod(kube, "in-pods", annotations={"cni.projectcalico.org/ipv4pools": '["10.244.0.0/16"]'})
    conf = k8s_conf(node, kube)
    got, netns = {}, {}
    for name in ("in-special", "in-pods", "nowhere"):
        netns[name] = node.new_pod()
    for name in ("in-special", "in-pods"):
        out = node.run("ADD", conf, netns=netns[name], pod=name, namespace="shop",
                       container_id=name)
        assert out.rc == 0, out
        assert out.out is not None
        got[name] = ipaddress.ip_interface(out.out["ips"][0]["address"]).ip
    assert got["in-special"] in ipaddress.ip_network(SPECIAL_POOL)
    assert got["in-pods"] in ipaddress.ip_network("10.244.0.0/16")
    # A pool named in the annotation that does not exist: code 100, nothing allocated.
    make_pod(kube, "nowhere", annotations={"cni.projectcalico.org/ipv4pools": '["nope"]'})
    bad = node.run("ADD", conf, netns=netns["nowhere"], pod="nowhere", namespace="shop",
                   container_id="nowhere")
    assert bad.code == 100 and "the given pool (nope) does not exist" in bad.msg, bad
    for name in ("in-special", "in-pods", "nowhere"):
        assert node.run("DEL", conf, netns=netns[name], pod=name, namespace="shop",
                        container_id=name).rc == 0
    assert_nothing_left(node)


def test_an_unreachable_api_server_is_code_11_naming_it(node: CniNode, kube: Any) -> None:
    make_pod(kube)
    conf = k8s_conf(node, kube)
    url = kube.url
    kube.stop()
    out = node.run("ADD", conf, netns=node.new_pod(), pod="web", namespace="shop")
    assert out.rc == 1 and out.code == 11, out
    assert f"the Kubernetes API server {url}" in out.msg
    assert f'Get "{url}/api/v1/namespaces/shop"' in out.msg
    assert_nothing_left(node)


def test_a_pod_the_api_server_does_not_know_is_code_3(node: CniNode, kube: Any) -> None:
    out = node.run("ADD", k8s_conf(node, kube), netns=node.new_pod(), pod="ghost",
                   namespace="shop")
    assert out.code == 3 and "error getting pod shop/ghost" in out.msg, out
    assert_nothing_left(node)


def test_a_container_without_a_pod_namespace_is_not_looked_up(node: CniNode, kube: Any,
                                                              tmp_path: Path) -> None:
    # podman passes only K8S_POD_NAME; the fake has no such pod, so a lookup would fail.
    conf = k8s_conf(node, kube)
    pod = node.new_pod()
    env = {"CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=sleepy"}
    out = node.run("ADD", conf, netns=pod, extra_env=env)
    assert out.rc == 0, out
    assert "default/node1-k8s-sleepy-eth0" in node.endpoints()
    assert node.run("DEL", conf, netns=pod, extra_env=env).rc == 0
    assert_nothing_left(node)


def test_a_shim_call_reads_the_pod_in_the_cni_server(node: CniNode, kube: Any) -> None:
    import json
    import os

    from cni import shim_protocol

    make_pod(kube)
    socket_path = node.tmp / "k8s-server.sock"
    node.start_server(socket_path)
    conf = k8s_conf(node, kube, cni_server_socket=str(socket_path))
    pod = node.new_pod()
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "shim-k8s", "CNI_IFNAME": "eth0",
           "CNI_NETNS": pod, "CNI_PATH": "/opt/cni/bin",
           "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web"}
    fd = os.open(pod, os.O_RDONLY)
    try:
        reply = shim_protocol.decode_reply(shim_call(str(socket_path), shim_protocol.encode_request(
            env, "tortie", json.dumps(conf).encode()), [fd]))
    finally:
        os.close(fd)
    assert reply.code == 0, reply
    wep = node.endpoints()["shop/node1-k8s-web-eth0"]
    assert wep["metadata"]["labels"]["app"] == "web"
    assert wep["spec"]["serviceAccountName"] == "builder"
    assert node.run("DEL", conf, netns=pod, pod="web", namespace="shop",
                    container_id="shim-k8s").rc == 0
    assert_nothing_left(node)
