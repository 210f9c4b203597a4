"""Kubernetes mode (cni/k8s.py): a pod and its namespace become the endpoint's labels,
service account, named ports, requested address and pool restriction, as Calico's CNI
plugin reads them; an API server that cannot be reached is a code-11 error naming it."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from cni import k8s
from cni.config import KubernetesConf, NamedPort
from cni.errors import InvalidConfig, TryAgainLater, UnsupportedField


def pod(labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
        containers: list[dict[str, Any]] | None = None, sa: str | None = "builder",
        ) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "web", "namespace": "shop"}
    if labels is not None:
        meta["labels"] = labels
    if annotations is not None:
        meta["annotations"] = annotations
    spec: dict[str, Any] = {"containers": containers or [{"name": "c"}]}
    if sa is not None:
        spec["serviceAccountName"] = sa
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def namespace(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "shop"}
    if annotations is not None:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def test_labels_service_account_and_named_ports() -> None:
    containers = [
        {"name": "app", "ports": [
            {"name": "http", "containerPort": 8080},  # protocol defaults to TCP
            {"containerPort": 9090, "hostPort": 9090},  # unnamed: portmap's, not policy's
            {"name": "dns", "containerPort": 53, "protocol": "UDP", "hostIP": "0.0.0.0"}]},
        {"name": "sidecar", "ports": [
            {"name": "http", "containerPort": 8081},  # a name seen already: the first wins
            {"name": "metrics", "containerPort": 9100, "protocol": "SCTP"}]},
    ]
    got = k8s.convert(pod({"app": "web", "tier": "front"}, containers=containers), namespace())
    assert dict(got.pod.labels) == {"app": "web", "tier": "front"}
    assert got.pod.service_account == "builder"
    assert got.pod.ports == (NamedPort("http", "tcp", 8080), NamedPort("dns", "udp", 53),
                             NamedPort("metrics", "sctp", 9100))
    assert got.ip_addrs == () and got.ipv4_pools is None


def test_a_pod_without_labels_ports_or_service_account() -> None:
    got = k8s.convert(pod(sa=None), namespace())
    assert (dict(got.pod.labels), got.pod.ports, got.pod.service_account) == ({}, (), None)


def test_ip_addrs_annotation() -> None:
    got = k8s.convert(pod(annotations={k8s.IP_ADDRS: '["10.65.0.7"]'}), namespace())
    assert got.ip_addrs == ("10.65.0.7",)


def test_ipv4_pools_pod_over_namespace() -> None:
    ns = namespace({k8s.IPV4_POOLS: '["ns-pool"]'})
    assert k8s.convert(pod(), ns).ipv4_pools == ("ns-pool",)
    both = k8s.convert(pod(annotations={k8s.IPV4_POOLS: '["10.66.0.0/16", "b"]'}), ns)
    assert both.ipv4_pools == ("10.66.0.0/16", "b")
    # An empty pod annotation leaves the namespace's in force, as Calico.
    assert k8s.convert(pod(annotations={k8s.IPV4_POOLS: ""}), ns).ipv4_pools == ("ns-pool",)


@pytest.mark.parametrize(("p", "ns", "err", "fragment"), [
    (pod(annotations={k8s.IP_ADDRS: "10.65.0.7"}), namespace(), InvalidConfig,
     'pod shop/web annotation "cni.projectcalico.org/ipAddrs"=\'10.65.0.7\': failed to parse'),
    (pod(annotations={k8s.IP_ADDRS: "[]"}), namespace(), InvalidConfig,
     "specified but empty"),
    (pod(annotations={k8s.IP_ADDRS: '["10.65.0.7", "10.65.0.8"]'}), namespace(), InvalidConfig,
     "cannot have more than one IPv4 address"),
    (pod(annotations={k8s.IP_ADDRS: '["fd00::1"]'}), namespace(), InvalidConfig,
     "IPv4 addresses only"),
    (pod(annotations={k8s.IP_ADDRS: '["nope"]'}), namespace(), InvalidConfig,
     '[0]="nope" is not an IP address'),
    (pod(annotations={k8s.IP_ADDRS_NO_IPAM: '["10.65.0.7"]'}), namespace(), UnsupportedField,
     "requested feature is not enabled: ip_addrs_no_ipam"),
    (pod(), namespace({k8s.IPV4_POOLS: "pool-a"}), InvalidConfig,
     "namespace shop annotation cni.projectcalico.org/ipv4pools='pool-a'"),
    (pod(annotations={k8s.IPV4_POOLS: '[1]'}), namespace(), InvalidConfig,
     "pod shop/web annotation cni.projectcalico.org/ipv4pools=[1] must be a list"),
    (pod(annotations={k8s.IPV6_POOLS: '["fd00::/64"]'}), namespace(), UnsupportedField,
     "ipv6pools"),
    (pod({"-bad": "x"}), namespace(), InvalidConfig, 'pod shop/web.labels[0]={"key": "-bad"'),
    (pod(containers=[{"name": "c", "ports": [{"name": "HTTP", "containerPort": 80}]}]),
     namespace(), InvalidConfig, "pod shop/web.ports[0]"),
])
def test_bad_pods_are_refused_naming_the_source(p: dict[str, Any], ns: dict[str, Any],
                                                err: type, fragment: str) -> None:
    with pytest.raises(err) as caught:
        k8s.convert(p, ns)
    assert fragment in caught.value.msg, caught.value.msg


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_api_server_is_code_11_naming_it() -> None:
    server = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(TryAgainLater) as caught:
        k8s.read_pod(KubernetesConf(None, server), "shop", "web")
    assert caught.value.code == 11
    msg = caught.value.msg
    assert msg.startswith(f"error getting namespace shop from the Kubernetes API server {server}")
    assert f'Get "{server}/api/v1/namespaces/shop"' in msg and "refused" in msg, msg


def test_a_kubeconfig_that_cannot_be_loaded_is_code_7(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(InvalidConfig, match=rf'kubernetes.kubeconfig="{missing}"'):
        k8s.read_pod(KubernetesConf(str(missing)), "shop", "web")
    broken = tmp_path / "kubeconfig"
    broken.write_text(json.dumps({"apiVersion": "v1", "kind": "Config", "clusters": []}))
    with pytest.raises(InvalidConfig, match="error building Kubernetes client config"):
        k8s.read_pod(KubernetesConf(str(broken)), "shop", "web")
