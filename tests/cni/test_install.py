"""tortie-install-cni: launchers and conflist, atomic and idempotent (no root needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cni import install
from tests.support import need

BIN = Path(sys.executable).parent


CHECKOUT = Path(__file__).resolve().parents[2]


def run_install(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
                ) -> subprocess.CompletedProcess[str]:
    # This checkout's installer (the venv's console script may import another checkout's).
    return subprocess.run(
        [sys.executable, "-m", "cni.install", "--bin-dir", str(tmp_path / "bin"),
         "--conf-dir", str(tmp_path / "net.d"), *args],
        capture_output=True, text=True, cwd=CHECKOUT,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(CHECKOUT), **(env or {})})


@pytest.fixture(scope="module")
def shim() -> Path:
    need("musl-gcc", "file")
    res = subprocess.run([str(CHECKOUT / "scripts" / "build-shim.sh")], capture_output=True,
                         text=True, check=True)
    return CHECKOUT / res.stdout.strip()


def test_default_conflist_chains_portmap() -> None:
    doc = install.render_conflist(install.Settings(nodename="node1", mtu=1400,
                                                   etcd_endpoints="http://e:2379"))
    assert doc["name"] == "k8s-pod-network" and doc["cniVersion"] == "1.0.0"
    main, portmap = doc["plugins"]
    assert main["type"] == "tortie" and main["ipam"] == {"type": "tortie-ipam"}
    assert (main["nodename"], main["mtu"], main["etcd_endpoints"]) == ("node1", 1400,
                                                                      "http://e:2379")
    assert portmap == {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}}
    with_bw = install.render_conflist(install.Settings(portmap=False, bandwidth=True))
    assert [p["type"] for p in with_bw["plugins"]] == ["tortie", "bandwidth"]


def test_template_placeholders() -> None:
    template = json.dumps({"name": "net", "cniVersion": "0.3.1", "plugins": [
        {"type": "tortie", "nodename": "__KUBERNETES_NODE_NAME__", "mtu": 0,
         "etcd_endpoints": "__ETCD_ENDPOINTS__", "ipam": {"type": "tortie-ipam"}}]})
    template = template.replace('"mtu": 0', '"mtu": __CNI_MTU__')
    doc = install.render_template(template, install.Settings(nodename="n7", mtu=1410,
                                                             etcd_endpoints="http://x:1"))
    assert doc["plugins"][0]["nodename"] == "n7" and doc["plugins"][0]["mtu"] == 1410
    with pytest.raises(install.InstallError, match="not JSON"):
        install.render_template("{", install.Settings())
    with pytest.raises(install.InstallError, match="first plugin"):
        install.render_template('{"plugins": [{"type": "bridge"}]}', install.Settings())


def test_install_writes_launchers_and_conflist_once(tmp_path: Path) -> None:
    res = run_install(tmp_path, "--nodename", "node1", "--etcd-endpoints", "http://e:2379",
                      "--python", sys.executable)
    assert res.returncode == 0, res.stderr
    for name in ("tortie", "tortie-ipam"):
        path = tmp_path / "bin" / name
        assert os.access(path, os.X_OK)
        # The installer's own interpreter (its script's shebang: the venv's python3) is this
        # one by another name when the tests run as `.venv/bin/python -m pytest`.
        shebang = path.read_text().splitlines()[0]
        assert shebang.startswith("#!") and shebang.endswith(" -IS"), shebang
        python = shebang[2:-len(" -IS")]
        assert Path(python).parent == BIN and os.path.samefile(python, sys.executable), shebang
    conflist = json.loads((tmp_path / "net.d" / "10-tortie.conflist").read_text())
    assert conflist["plugins"][0]["nodename"] == "node1"
    again = run_install(tmp_path, "--nodename", "node1", "--etcd-endpoints", "http://e:2379",
                        "--python", sys.executable)
    assert "already up to date" in again.stdout
    assert not [p for p in (tmp_path / "bin").iterdir() if p.name.startswith(".tortie-")]


def test_installed_launchers_answer_version(tmp_path: Path) -> None:
    assert run_install(tmp_path, "--python", sys.executable).returncode == 0
    for name in ("tortie", "tortie-ipam"):
        res = subprocess.run([str(tmp_path / "bin" / name)], env={"CNI_COMMAND": "VERSION"},
                             capture_output=True, text=True, input="")
        assert res.returncode == 0, res.stderr
        assert "1.0.0" in json.loads(res.stdout)["supportedVersions"]


def test_environment_configures_like_calicos_install_cni(tmp_path: Path) -> None:
    env = {"KUBERNETES_NODE_NAME": "k1", "CNI_MTU": "1300", "ETCD_ENDPOINTS": "http://e:1",
           "CNI_CONF_NAME": "05-x.conflist", "SKIP_CNI_BINARIES": "true"}
    assert run_install(tmp_path, env=env).returncode == 0
    assert not (tmp_path / "bin").exists()
    main = json.loads((tmp_path / "net.d" / "05-x.conflist").read_text())["plugins"][0]
    assert (main["nodename"], main["mtu"], main["etcd_endpoints"]) == ("k1", 1300, "http://e:1")


def test_bad_template_writes_nothing(tmp_path: Path) -> None:
    res = run_install(tmp_path, env={"CNI_NETWORK_CONFIG": '{"plugins": [{"type": "bridge"}]}'})
    assert res.returncode == 1 and "first plugin" in res.stderr
    assert not (tmp_path / "net.d").exists()


def test_install_puts_the_shim_under_both_names_and_ships_missing_chained_plugins(
        tmp_path: Path, shim: Path) -> None:
    src = tmp_path / "reference"
    src.mkdir()
    for name in ("portmap", "bandwidth"):
        (src / name).write_bytes(b"#!/bin/sh\necho reference " + name.encode() + b"\n")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "portmap").write_bytes(b"the host's own portmap")
    res = run_install(tmp_path, "--shim", str(shim), "--bandwidth", "--plugins-src-dir",
                      str(src))
    assert res.returncode == 0, res.stderr
    assert f"are the shim {shim}" in res.stdout
    for name in ("tortie", "tortie-ipam"):
        assert (tmp_path / "bin" / name).read_bytes() == shim.read_bytes()
        assert os.access(tmp_path / "bin" / name, os.X_OK)
    assert (tmp_path / "bin" / "portmap").read_bytes() == b"the host's own portmap"
    assert (tmp_path / "bin" / "bandwidth").read_bytes() == (src / "bandwidth").read_bytes()
    again = run_install(tmp_path, "--shim", str(shim), "--bandwidth", "--plugins-src-dir",
                        str(src))
    assert "already up to date" in again.stdout


def test_installed_shim_without_server_says_so(tmp_path: Path, shim: Path) -> None:
    assert run_install(tmp_path, "--shim", str(shim), "--server-socket",
                       str(tmp_path / "none.sock")).returncode == 0
    conflist = json.loads((tmp_path / "net.d" / "10-tortie.conflist").read_text())
    # What a runtime gives the plugin: its own entry, with the list's name and version.
    conf = json.dumps({**conflist["plugins"][0], "name": conflist["name"],
                       "cniVersion": conflist["cniVersion"]})
    res = subprocess.run([str(tmp_path / "bin" / "tortie")], input=conf, capture_output=True,
                         text=True, env={"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1",
                                         "CNI_IFNAME": "eth0", "CNI_NETNS": "/proc/self/ns/net"})
    assert res.returncode == 1
    err = json.loads(res.stdout)
    assert err["code"] == 11 and err["cniVersion"] == "1.0.0"
    assert f"cannot connect to {tmp_path / 'none.sock'}" in err["msg"]


def test_missing_shim_option_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    res = run_install(tmp_path, "--shim", str(tmp_path / "nope"))
    assert res.returncode == 1
    assert f"--shim='{tmp_path / 'nope'}': no such file" in res.stderr
    assert not (tmp_path / "bin").exists() and not (tmp_path / "net.d").exists()


def test_shim_answers_version_itself_as_the_plugin_does(tmp_path: Path, shim: Path) -> None:
    """Runtimes ask VERSION with only the cniVersion on stdin (podman, when it validates a
    conflist), before any server may run: the shim answers it, with the plugin's words."""
    from cni.spec import version_result

    assert run_install(tmp_path, "--shim", str(shim)).returncode == 0
    for name in ("tortie", "tortie-ipam"):
        res = subprocess.run([str(tmp_path / "bin" / name)], input='{"cniVersion": "0.4.0"}',
                             text=True,
                             capture_output=True, env={"CNI_COMMAND": "VERSION"})
        assert (res.returncode, res.stdout) == (0, json.dumps(version_result()) + "\n"), name


# -- the kubeconfig for Kubernetes mode ----------------------------------------------------

CA_PEM = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


def service_account(tmp_path: Path, token: str = "eyJhbGciOi.token.sig\n") -> Path:
    """A service account directory as the kubelet mounts it (token, ca.crt, namespace)."""
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(token)
    (sa / "ca.crt").write_bytes(CA_PEM)
    (sa / "namespace").write_text("kube-system")
    return sa


def test_in_a_pod_install_writes_the_kubeconfig_the_plugin_reads(tmp_path: Path) -> None:
    import base64

    import yaml
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config

    env = {"CNI_SERVICE_ACCOUNT_DIR": str(service_account(tmp_path)),
           "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443",
           "SKIP_CNI_BINARIES": "true"}
    res = run_install(tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    path = tmp_path / "net.d" / "tortie-kubeconfig"
    assert f"wrote {path}" in res.stdout
    assert os.stat(path).st_mode & 0o777 == 0o600  # it holds the token
    doc = yaml.safe_load(path.read_text())
    cluster = doc["clusters"][0]["cluster"]
    assert cluster == {"server": "https://10.96.0.1:443",
                       "certificate-authority-data": base64.b64encode(CA_PEM).decode()}
    assert doc["users"][0]["user"] == {"token": "eyJhbGciOi.token.sig"}
    # The client the plugin uses loads it as it is.
    cfg = k8s_client.Configuration()
    k8s_config.load_kube_config(config_file=str(path), client_configuration=cfg)
    assert cfg.host == "https://10.96.0.1:443"
    assert cfg.api_key["BearerToken"] == "Bearer eyJhbGciOi.token.sig"
    assert Path(cfg.ssl_ca_cert).read_bytes() == CA_PEM
    main = json.loads((tmp_path / "net.d" / "10-tortie.conflist").read_text())["plugins"][0]
    assert main["kubernetes"] == {"kubeconfig": str(path)}
    assert main["policy"] == {"type": "k8s"}
    again = run_install(tmp_path, env=env)
    assert "already up to date" in again.stdout, again.stdout


def test_kubeconfig_placeholder_and_ipv6_api_server(tmp_path: Path) -> None:
    template = json.dumps({"name": "net", "cniVersion": "1.0.0", "plugins": [
        {"type": "tortie", "ipam": {"type": "tortie-ipam"},
         "kubernetes": {"kubeconfig": "__KUBECONFIG_FILEPATH__"}}]})
    env = {"CNI_SERVICE_ACCOUNT_DIR": str(service_account(tmp_path)),
           "KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443",
           "SKIP_TLS_VERIFY": "true", "SKIP_CNI_BINARIES": "true",
           "CNI_NETWORK_CONFIG": template}
    assert run_install(tmp_path, env=env).returncode == 0
    main = json.loads((tmp_path / "net.d" / "10-tortie.conflist").read_text())["plugins"][0]
    assert main["kubernetes"] == {"kubeconfig": str(tmp_path / "net.d" / "tortie-kubeconfig")}
    text = (tmp_path / "net.d" / "tortie-kubeconfig").read_text()
    assert "server: https://[fd00::1]:6443" in text and "insecure-skip-tls-verify: true" in text


def test_outside_a_pod_there_is_no_kubeconfig_unless_forced(tmp_path: Path) -> None:
    env = {"CNI_SERVICE_ACCOUNT_DIR": str(tmp_path / "none"), "SKIP_CNI_BINARIES": "true"}
    assert run_install(tmp_path, env=env).returncode == 0
    assert not (tmp_path / "net.d" / "tortie-kubeconfig").exists()
    main = json.loads((tmp_path / "net.d" / "10-tortie.conflist").read_text())["plugins"][0]
    assert "kubernetes" not in main and "policy" not in main
    forced = run_install(tmp_path / "forced", "--write-kubeconfig", env=env)
    assert forced.returncode == 1
    assert "cannot read the service account token" in forced.stderr, forced.stderr
    assert not (tmp_path / "forced").exists()
    # A token without the API server's address is refused, naming the variables.
    env["CNI_SERVICE_ACCOUNT_DIR"] = str(service_account(tmp_path))
    no_host = run_install(tmp_path / "nohost", env=env)
    assert no_host.returncode == 1 and "KUBERNETES_SERVICE_HOST" in no_host.stderr
    assert not (tmp_path / "nohost").exists()
