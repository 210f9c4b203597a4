"""The lab's libcni-like runtime (lab/pods.py): how each plugin's configuration is built."""

from __future__ import annotations

import pytest

from cni.config import NamedPort
from lab.pods import PodError, parse_label, parse_named_port, plugin_configs, pod_cni_args

CONFLIST = {
    "name": "k8s-pod-network", "cniVersion": "0.4.0",
    "plugins": [
        {"type": "tortie", "ipam": {"type": "tortie-ipam"}},
        {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}},
        {"type": "bandwidth", "capabilities": {"bandwidth": False}},
    ],
}


def test_name_and_version_are_injected_and_runtime_config_follows_capabilities() -> None:
    mappings = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    confs = plugin_configs(CONFLIST, {"portMappings": mappings, "bandwidth": {"x": 1}})
    assert [c["type"] for c in confs] == ["tortie", "portmap", "bandwidth"]
    assert all(c["name"] == "k8s-pod-network" and c["cniVersion"] == "0.4.0" for c in confs)
    assert "runtimeConfig" not in confs[0]
    assert confs[1]["runtimeConfig"] == {"portMappings": mappings}
    assert "runtimeConfig" not in confs[2]  # capability present but off


def test_labels_travel_as_cni_args() -> None:
    confs = plugin_configs(CONFLIST, {}, pod_cni_args({"app": "web"}))
    assert confs[0]["args"] == {"cni": {"labels": [{"key": "app", "value": "web"}]}}
    assert "args" not in plugin_configs(CONFLIST, {})[0]


def test_named_ports_and_service_account_travel_as_cni_args() -> None:
    args = pod_cni_args({"pod": "a"}, [NamedPort("serve-80-udp", "udp", 80)], "builder")
    assert args == {"labels": [{"key": "pod", "value": "a"}],
                    "ports": [{"name": "serve-80-udp", "containerPort": 80, "protocol": "UDP"}],
                    "serviceAccountName": "builder"}
    assert pod_cni_args() == {}


def test_command_line_labels_and_named_ports() -> None:
    assert parse_label("app=web") == ("app", "web")
    assert parse_label("example.com/tier=") == ("example.com/tier", "")
    assert parse_named_port("http:TCP/80") == NamedPort("http", "tcp", 80)
    assert parse_named_port("dns:udp/53") == NamedPort("dns", "udp", 53)


@pytest.mark.parametrize("text, fragment", [
    ("app", "label 'app': not KEY=VALUE"),
    ("-app=web", "invalid label key '-app'"),
    ("app=a b", "invalid label value 'a b' for key 'app'"),
])
def test_bad_command_line_labels(text: str, fragment: str) -> None:
    with pytest.raises(PodError, match=fragment):
        parse_label(text)


@pytest.mark.parametrize("text, fragment", [
    ("http", "port name|protocol"),
    ("HTTP:TCP/80", "port name must be"),
    ("http:ICMP/80", "the protocol is TCP, UDP or SCTP"),
    ("http:TCP/0", "the port is a number from 1 to 65535"),
    ("http:TCP/x", "the port is a number"),
    ("http:TCP", "the port is a number"),
])
def test_bad_command_line_named_ports(text: str, fragment: str) -> None:
    with pytest.raises(PodError, match=fragment):
        parse_named_port(text)
