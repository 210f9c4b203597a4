"""The network configuration (cni/config.py): each bad input names its key, with its code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cni import config
from cni.errors import (
    DecodingFailure,
    IncompatibleVersion,
    InvalidConfig,
    TryAgainLater,
    UnsupportedField,
)

BASE = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "tortie",
        "ipam": {"type": "tortie-ipam"}}


def conf(**changes: object) -> bytes:
    doc = {**BASE, **changes}
    return json.dumps({k: v for k, v in doc.items() if v is not None}).encode()


def test_a_calico_style_configuration() -> None:
    c = config.parse(conf(
        mtu=1400, nodename="node1", etcd_endpoints="http://10.0.0.1:2379",
        etcd_ca_cert_file="/etc/ca.pem", log_level="DEBUG", log_file_path="/var/log/x.log",
        datastore_type="etcdv3", policy={"type": "k8s"}, kubernetes={"kubeconfig": "/k"},
        ipam={"type": "tortie-ipam", "assign_ipv4": "true", "assign_ipv6": "false"},
        args={"cni": {"labels": [{"key": "app", "value": "web"}], "ips": ["10.65.0.9/24"]}},
        somethingElse={"runtimes": "add keys"}))
    assert (c.cni_version, c.name, c.mtu, c.nodename, c.log_level) == (
        "1.0.0", "k8s-pod-network", 1400, "node1", "debug")
    assert c.etcd.endpoints == "http://10.0.0.1:2379" and c.etcd.ca_cert_file == "/etc/ca.pem"
    assert c.pod.labels == {"app": "web"} and c.pod.requested_ips == ("10.65.0.9",)
    assert c.ipam is not None and c.ipam.type == "tortie-ipam"


@pytest.mark.parametrize("data, err, fragment", [
    (b"not json", DecodingFailure, "not JSON"),
    (b"", DecodingFailure, "not JSON"),
    (b"[1, 2]", DecodingFailure, "not a JSON object"),
    (conf(cniVersion=None), InvalidConfig, "no cniVersion"),
    (conf(cniVersion=1), InvalidConfig, "cniVersion=1 must be a string"),
    (conf(cniVersion="0.2.0"), IncompatibleVersion, "'0.2.0'"),
    (conf(cniVersion="9.9.9"), IncompatibleVersion, "tortie supports"),
    (conf(name=None), InvalidConfig, "has no name"),
    (conf(name="bad name"), InvalidConfig, 'name="bad name" is not a valid network name'),
    (conf(type=None), InvalidConfig, "has no type"),
    (conf(ipam=None), InvalidConfig, "no ipam section"),
    (conf(ipam="tortie-ipam"), InvalidConfig, 'ipam="tortie-ipam" must be an object'),
    (conf(ipam={}), InvalidConfig, "ipam.type is missing"),
    (conf(ipam={"type": "tortie-ipam", "assign_ipv6": "true"}), UnsupportedField,
     'ipam.assign_ipv6="true"'),
    (conf(ipam={"type": "tortie-ipam", "assign_ipv4": "false"}), UnsupportedField,
     'ipam.assign_ipv4="false"'),
    (conf(ipam={"type": "tortie-ipam", "assign_ipv4": "maybe"}), InvalidConfig,
     'ipam.assign_ipv4="maybe" must be true or false'),
    (conf(ipam={"type": "tortie-ipam", "ipv4_pools": "pool-a"}), InvalidConfig,
     'ipam.ipv4_pools="pool-a" must be a list of IP pool names or CIDRs'),
    (conf(ipam={"type": "tortie-ipam", "ipv4_pools": [""]}), InvalidConfig,
     'ipam.ipv4_pools=[""]'),
    (conf(ipam={"type": "tortie-ipam", "ipv6_pools": ["fd00::/64"]}), UnsupportedField,
     "ipam.ipv6_pools"),
    (conf(kubernetes="/etc/kubeconfig"), InvalidConfig,
     'kubernetes="/etc/kubeconfig" must be an object'),
    (conf(kubernetes={"kubeconfig": 5}), InvalidConfig, "kubernetes.kubeconfig=5 must be a string"),
    (conf(kubernetes={"k8s_api_root": "10.96.0.1:443"}), InvalidConfig,
     'kubernetes.k8s_api_root="10.96.0.1:443" must be a URL'),
    (conf(policy={"type": "calico"}), UnsupportedField, 'policy.type="calico"'),
    (conf(policy="k8s"), InvalidConfig, 'policy="k8s" must be an object'),
    (conf(ipam={"type": "tortie-ipam", "routes": [{"dst": "nope"}]}), InvalidConfig,
     "ipam.routes[0]"),
    (conf(datastore_type="kubernetes"), UnsupportedField, 'datastore_type="kubernetes"'),
    (conf(mtu=50), InvalidConfig, "mtu=50 must be an integer between 68 and 65535"),
    (conf(mtu="1500"), InvalidConfig, 'mtu="1500"'),
    (conf(mtu=True), InvalidConfig, "mtu=true"),
    (conf(log_level="loud"), InvalidConfig, 'log_level="loud"'),
    (conf(etcd_endpoints=5), InvalidConfig, "etcd_endpoints=5 must be a string"),
    (conf(args={"cni": {"labels": [{"key": "a"}]}}), InvalidConfig, "args.cni.labels[0]"),
    (conf(args={"cni": {"ips": ["x"]}}), InvalidConfig, 'args.cni.ips[0]="x"'),
    (conf(prevResult={"ips": [{"address": "10.0.0.1"}]}), DecodingFailure, "no prefix"),
])
def test_bad_configuration(data: bytes, err: type, fragment: str) -> None:
    with pytest.raises(err) as caught:
        config.parse(data)
    assert fragment in caught.value.msg, caught.value.msg


def test_kubernetes_mode_and_pools() -> None:
    c = config.parse(conf(policy={"type": "k8s"},
                          kubernetes={"kubeconfig": "/etc/cni/net.d/tortie-kubeconfig"},
                          ipam={"type": "tortie-ipam",
                                "ipv4_pools": ["pool-a", "10.65.0.0/16", "pool-a"]}))
    assert c.kubernetes == config.KubernetesConf("/etc/cni/net.d/tortie-kubeconfig", None)
    assert c.kubernetes.enabled
    assert c.ipam is not None and c.ipam.ipv4_pools == ("pool-a", "10.65.0.0/16")
    # Calico cuts the API path off k8s_api_root; alone it turns Kubernetes mode on too.
    api = config.parse(conf(kubernetes={"k8s_api_root": "https://10.96.0.1:443/api/v1/"}))
    assert api.kubernetes == config.KubernetesConf(None, "https://10.96.0.1:443")
    assert api.kubernetes.enabled
    for off in (conf(), conf(policy={"type": "k8s"}), conf(kubernetes={"kubeconfig": ""})):
        assert not config.parse(off).kubernetes.enabled
    assert config.parse(conf(ipam={"type": "tortie-ipam", "ipv4_pools": []})).ipam == (
        config.IpamConf("tortie-ipam", (), {"type": "tortie-ipam", "ipv4_pools": []}, ()))


def test_error_codes_are_the_specs() -> None:
    assert (DecodingFailure.code, InvalidConfig.code, IncompatibleVersion.code,
            UnsupportedField.code, TryAgainLater.code) == (6, 7, 1, 2, 11)


def test_other_ipam_types_are_allowed_with_their_own_keys() -> None:
    c = config.parse(conf(ipam={"type": "host-local", "subnet": "10.1.0.0/24"}))
    assert c.ipam is not None and c.ipam.type == "host-local"
    assert c.ipam.raw["subnet"] == "10.1.0.0/24"


def test_etcd_settings_beat_the_environment() -> None:
    c = config.parse(conf(etcd_endpoints="http://a:2379"))
    env = c.etcd.as_env({"ETCD_ENDPOINTS": "http://b:2379", "CALICO_ETCD_ENDPOINTS": "x",
                         "ETCD_CERT_FILE": "/c", "HOME": "/root"})
    assert env == {"ETCD_ENDPOINTS": "http://a:2379", "ETCD_CERT_FILE": "/c"}
    assert config.parse(conf()).etcd.as_env({"ETCD_ENDPOINTS": "http://b:2379"}) == {
        "ETCD_ENDPOINTS": "http://b:2379"}


def test_node_name_precedence(tmp_path: Path) -> None:
    f = tmp_path / "nodename"
    assert config.node_name(config.parse(conf(nodename="n1", nodename_file=str(f)))) == "n1"
    f.write_text("stored\n")
    assert config.node_name(config.parse(conf(nodename_file=str(f)))) == "stored"
    f.unlink()
    with pytest.raises(TryAgainLater, match="is the tortie agent running"):
        config.node_name(config.parse(conf(nodename_file=str(f))))
    host = config.node_name(config.parse(conf(nodename_file=str(f),
                                              nodename_file_optional=True)))
    assert host and host == host.lower()


def test_mtu_precedence(tmp_path: Path) -> None:
    f = tmp_path / "mtu"
    assert config.pod_mtu(config.parse(conf(mtu=1400, mtu_file=str(f)))) == (1400, "mtu")
    assert config.pod_mtu(config.parse(conf(mtu_file=str(f)))) == (1450, "default")
    f.write_text("1430\n")
    assert config.pod_mtu(config.parse(conf(mtu_file=str(f)))) == (1430, f"file {f}")
    assert config.pod_mtu(config.parse(conf(mtu=0, mtu_file=str(f))))[0] == 1430
    f.write_text("garbage")
    assert config.pod_mtu(config.parse(conf(mtu_file=str(f)))) == (1450, "default")


def test_pod_args_labels_named_ports_and_service_account() -> None:
    c = config.parse(conf(args={"cni": {
        "labels": [{"key": "pod", "value": "a"}, {"key": "example.com/tier", "value": ""}],
        "ports": [{"name": "serve-80-tcp", "containerPort": 80},
                  {"name": "serve-81-udp", "containerPort": 81, "protocol": "UDP"}],
        "serviceAccountName": "builder"}}))
    assert c.pod.labels == {"pod": "a", "example.com/tier": ""}
    assert c.pod.ports == (config.NamedPort("serve-80-tcp", "tcp", 80),
                           config.NamedPort("serve-81-udp", "udp", 81))
    assert c.pod.service_account == "builder"
    assert config.parse(conf()).pod == config.PodArgs()


def cni_args(**cni: object) -> bytes:
    return conf(args={"cni": cni})


@pytest.mark.parametrize("data, fragment", [
    (cni_args(labels={"a": "b"}), 'args.cni.labels={"a": "b"} must be a list'),
    (cni_args(labels=[{"key": "-a", "value": "b"}]), "invalid label key '-a'"),
    (cni_args(labels=[{"key": "a", "value": "b c"}]), "invalid label value 'b c' for key 'a'"),
    (cni_args(labels=[{"key": "Bad_Prefix/a", "value": "b"}]),
     "invalid label key prefix 'Bad_Prefix'"),
    (cni_args(labels=[{"key": "a", "value": "v" * 64}]), "args.cni.labels[0]"),
    (cni_args(ports=[{"name": "http"}]), "args.cni.ports[0]={\"name\": \"http\"}: containerPort"),
    (cni_args(ports=[{"name": "http", "containerPort": 70000}]), "from 1 to 65535"),
    (cni_args(ports=[{"name": "http", "containerPort": "80"}]), "containerPort must be an integer"),
    (cni_args(ports=[{"name": "Http", "containerPort": 80}]), "name: port name must be"),
    (cni_args(ports=[{"name": "80", "containerPort": 80}]), "at least one letter"),
    (cni_args(ports=[{"containerPort": 80}]), "name: port name must be"),
    (cni_args(ports=[{"name": "h", "containerPort": 80, "protocol": "ICMP"}]),
     "protocol must be TCP, UDP or SCTP"),
    (cni_args(ports=[{"name": "h", "containerPort": 80, "hostPort": 8080}]),
     "unknown field 'hostPort'"),
    (cni_args(ports=[{"name": "h", "containerPort": 80}, {"name": "h", "containerPort": 81}]),
     "args.cni.ports[1]"),
    (cni_args(ports=["http:80"]), 'args.cni.ports[0]="http:80" must be'),
    (cni_args(serviceAccountName="Bad_SA"), 'args.cni.serviceAccountName="Bad_SA"'),
    (cni_args(serviceAccountName=7), "args.cni.serviceAccountName=7"),
])
def test_bad_pod_args_name_the_field_and_value(data: bytes, fragment: str) -> None:
    with pytest.raises(InvalidConfig) as err:
        config.parse(data)
    assert fragment in err.value.msg
