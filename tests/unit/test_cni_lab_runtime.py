"""The lab's libcni-like runtime (lab/pods.py): how each plugin's configuration is built."""

from __future__ import annotations

from lab.pods import plugin_configs

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
    confs = plugin_configs(CONFLIST, {}, {"app": "web"})
    assert confs[0]["args"] == {"cni": {"labels": [{"key": "app", "value": "web"}]}}
    assert "args" not in plugin_configs(CONFLIST, {})[0]
