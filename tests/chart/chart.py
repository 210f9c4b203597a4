"""Rendering charts/tortie with the real Helm, and the pure checks over what it renders.

Owns: which Helm binaries the chart tests use (scripts/fetch_helm.py's pins, fetched into
.cache/tools/), the value sets of the test matrix, and the cross-checks that catch drift
between the chart and the code: environment variables each container's program reads,
commands and paths the image must hold, and references between the rendered objects.

Every check is a pure function of rendered objects (plain dicts) returning what is wrong
(or what is needed), so a failing test names the object, container and value.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tortie"
RELEASE, NAMESPACE = "tortie", "kube-system"

# What the image holds besides the Python entry points (docs/install.md, "The image"):
# commands on PATH come from /opt/tortie/bin; the chained CNI plugins from Debian's
# containernetworking-plugins.
IMAGE_BIN_DIR = "/opt/tortie/bin"
IMAGE_CNI_PLUGIN_DIR = "/usr/lib/cni"
IMAGE_CNI_PLUGINS = frozenset({"portmap", "bandwidth", "host-local", "loopback"})


def _load_fetch_helm() -> Any:
    """scripts/fetch_helm.py, which is a script and not in a package."""
    if "fetch_helm" in sys.modules:
        return sys.modules["fetch_helm"]
    spec = importlib.util.spec_from_file_location("fetch_helm", ROOT / "scripts" / "fetch_helm.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fetch_helm"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def helm_binaries() -> dict[str, Path | None]:
    """Helm version -> its binary under .cache/tools/, or None when not fetched yet."""
    fetch_helm = _load_fetch_helm()
    out: dict[str, Path | None] = {}
    for pin in fetch_helm.PINS:
        path = fetch_helm.helm_path(pin)
        out[pin.helm_version] = path if path.exists() else None
    return out


# -- rendering ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    text: str                      # helm template's output, as printed
    objects: list[dict[str, Any]]  # its documents, empty ones dropped
    values: dict[str, Any]         # the values given (not merged with the defaults)


def helm(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=120)


def render(binary: Path, values_file: Path | None, values: Mapping[str, Any]) -> Rendered:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if values_file is not None:
        args += ["--values", str(values_file)]
    done = helm(binary, *args)
    if done.returncode != 0:
        raise AssertionError(f"helm template failed: {done.stderr.strip()}")
    objects = [d for d in yaml.safe_load_all(done.stdout) if d]
    return Rendered(done.stdout, objects, dict(values))


def chart_defaults() -> dict[str, Any]:
    loaded = yaml.safe_load((CHART / "values.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


# -- the value sets of the matrix -----------------------------------------------------------

_PEM = "-----BEGIN CERTIFICATE-----\nTUlJQg==\n-----END CERTIFICATE-----\n"

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "tls-from-values": {
        "etcd": {"endpoints": "https://10.0.0.1:2379,https://10.0.0.2:2379",
                 "tls": {"enabled": True, "ca": _PEM, "cert": _PEM, "key": _PEM}},
    },
    "tls-existing-secret": {
        "etcd": {"endpoints": "https://etcd.example:2379",
                 "tls": {"enabled": True, "existingSecret": "my-etcd-certs"}},
    },
    "vxlan-pools": {
        "backend": "vxlan",
        "defaultIPv4Pool": {"disabled": True},
        "ipPools": [{"name": "vxlan-pool", "spec": {"cidr": "10.244.0.0/16", "vxlanMode": "Always",
                                                    "ipipMode": "Never", "natOutgoing": True}}],
    },
    "ipip-pools": {
        "defaultIPv4Pool": {"cidr": "10.10.0.0/16", "ipipMode": "CrossSubnet", "blockSize": 24},
        "ipPools": [{"name": "ipip-a", "spec": {"cidr": "10.20.0.0/16", "ipipMode": "Always",
                                                "blockSize": 26, "nodeSelector": "rack == 'a'"}}],
    },
    "no-encap-pools": {
        "backend": "exabgp",
        "defaultIPv4Pool": {"ipipMode": "Never", "vxlanMode": "Never"},
        "ipPools": [{"name": "flat", "spec": {"cidr": "10.30.0.0/16", "ipipMode": "Never",
                                              "vxlanMode": "Never", "disableBGPExport": False}}],
    },
    "route-reflectors": {
        "node": {"as": "64512", "ipAutodetectionMethod": "can-reach=10.0.0.1"},
        "bgpConfiguration": {"nodeToNodeMeshEnabled": False, "asNumber": 64512,
                             "logSeverityScreen": "Info"},
        "bgpPeers": [
            {"name": "to-rr", "spec": {"peerSelector": "has(route-reflector)",
                                       "nodeSelector": "!has(route-reflector)"}},
            {"name": "rr-mesh", "spec": {"peerSelector": "has(route-reflector)",
                                         "nodeSelector": "has(route-reflector)"}},
            {"name": "tor", "spec": {"peerIP": "10.0.0.254", "asNumber": 65000,
                                     "password": {"secretKeyRef": {"name": "bgp-passwords",
                                                                   "key": "tor"}}}},
        ],
        "bgpPasswordSecrets": ["more-bgp-passwords"],
    },
    "bgp-in-agent": {"bgp": {"sidecar": False},
                     "bgpPasswordSecrets": ["bgp-passwords"]},
    # Also the CNI without Kubernetes mode: no token, no RBAC.
    "policy-only": {"backend": "none", "cni": {"bandwidth": False, "portmap": False,
                                               "kubernetesMode": False}},
    "custom-paths": {
        "hostPaths": {"cniBinDir": "/usr/libexec/cni", "cniConfDir": "/etc/kubernetes/cni/net.d",
                      "cniLogDir": "/var/log/calico/cni", "varRunCalico": "/run/calico",
                      "varLibCalico": "/var/lib/tortie-state", "varRunTortie": "/run/tortie",
                      "xtablesLock": "/var/run/xtables.lock"},
        "cni": {"confName": "05-tortie.conflist", "policySetupTimeoutSeconds": 10},
        "priorityClass": {"name": "tortie-critical", "create": True},
        "image": {"repository": "registry.example/tortie", "tag": "0123456789ab",
                  "pullPolicy": "Always"},
        "imagePullSecrets": ["registry-creds"],
        "vethMTU": 1400,
        "node": {"extraEnv": [{"name": "FELIX_ROUTEREFRESHINTERVAL", "value": "60"}]},
    },
    # Two controller replicas (so a Lease and its Role) reaching etcd over TLS.
    "kube-controllers-ha": {
        "etcd": {"endpoints": "https://etcd.example:2379",
                 "tls": {"enabled": True, "existingSecret": "my-etcd-certs"}},
        "kubeControllers": {"replicas": 2, "controllers": ["policy", "namespace"],
                            "reconcilerPeriod": "90s", "leakGracePeriod": 600,
                            "healthPort": 9095},
    },
    "kube-controllers-off": {"kubeControllers": {"enabled": False}},
}


# -- looking into rendered objects --------------------------------------------------------


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any] | None:
    for obj in objects:
        if obj.get("kind") == kind and obj.get("metadata", {}).get("name") == name:
            return obj
    return None


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(workload name, pod spec) of every object that runs pods."""
    for obj in objects:
        if obj.get("kind") in ("DaemonSet", "Deployment", "StatefulSet", "Job"):
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]


def containers(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """("<workload>/<container>", container) for every container and init container."""
    for workload, spec in pod_specs(objects):
        for c in [*spec.get("initContainers", []), *spec.get("containers", [])]:
            yield f"{workload}/{c['name']}", c


def env_names(container: Mapping[str, Any]) -> list[str]:
    return [e["name"] for e in container.get("env", [])]


def env_value(objects: list[dict[str, Any]], container: Mapping[str, Any], name: str) -> str | None:
    """The value `name` has in `container`, following configMapKeyRef into rendered ConfigMaps."""
    for e in container.get("env", []):
        if e["name"] != name:
            continue
        if "value" in e:
            return str(e["value"])
        ref = e.get("valueFrom", {}).get("configMapKeyRef")
        if ref:
            cm = find(objects, "ConfigMap", ref["name"])
            return None if cm is None else cm.get("data", {}).get(ref["key"])
        return None
    return None


# -- the checks ---------------------------------------------------------------------------


class _Recorder(dict[str, str]):
    """A mapping that remembers every name the code under test looks up in it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked.add(key)
        return super().__contains__(key)


def _datastore_env_names() -> set[str]:
    from datastore.config import load_env

    env = _Recorder()
    load_env(env)
    return env.asked


def _default_pool_env_names() -> set[str]:
    from ipam.errors import DefaultPoolConfigError
    from ipam.pools import default_pool_from_env

    asked: set[str] = set()
    for start in ({}, {"NO_DEFAULT_POOLS": "true", "CALICO_IPV4POOL_CIDR": "10.0.0.0/16"}):
        env = _Recorder(start)
        try:
            default_pool_from_env(env)
        except DefaultPoolConfigError:
            pass  # the second start is refused on purpose: it reads the IPv6 name first
        asked |= env.asked
    return asked


def _install_cni_env_names() -> set[str]:
    import contextlib
    import io

    from cni import install

    # A template that is not JSON stops main() after it read its settings, before it
    # writes anything.
    env = _Recorder({"CNI_NETWORK_CONFIG": "{"})
    with contextlib.redirect_stderr(io.StringIO()), contextlib.suppress(SystemExit):
        install.main([], env)
    return env.asked


def known_env(program: str) -> set[str]:
    """Environment variables `program` (a console script of the image) reads, from the code."""
    from agent.config import SETTINGS
    from bgp.secrets import ENV_VAR as BGP_SECRETS_DIR

    etcd = _datastore_env_names()
    agent = {s.name for s in SETTINGS} | etcd | {BGP_SECRETS_DIR}
    if program == "tortie-agent":
        return agent | _default_pool_env_names()
    if program == "tortie-bgp":
        return agent
    if program == "tortie-install-cni":
        return _install_cni_env_names()
    if program == "tortie-kube-controllers":
        from kube_controllers.config import SETTINGS as CONTROLLER_SETTINGS

        return {s.name for s in CONTROLLER_SETTINGS} | etcd
    if program == "tortie-cni-server":
        # cni.config.EtcdSettings.as_env passes only ETCD_* / CALICO_ETCD_* on to load_env.
        return {n for n in etcd if n.startswith(("ETCD_", "CALICO_ETCD_"))}
    raise KeyError(program)


def unknown_env(objects: list[dict[str, Any]]) -> list[str]:
    """'<container>: <NAME>' for every variable a container sets that its program never reads."""
    wrong = []
    for where, c in containers(objects):
        program = c["command"][0]
        known = known_env(program)
        wrong += [f"{where} ({program}): {n}" for n in env_names(c) if n not in known]
    return wrong


def project_scripts() -> set[str]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return set(tomllib.load(f)["project"]["scripts"])


def conflist(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The conflist install-cni writes: the ConfigMap's template rendered by cni.install with
    the settings install-cni's environment gives it (the node name made up)."""
    from cni.install import Settings, render_template

    cm = find(objects, "ConfigMap", "tortie-config")
    assert cm is not None, "no ConfigMap tortie-config"
    install = dict(containers(objects))["tortie-node/install-cni"]

    def env(name: str) -> str:
        return env_value(objects, install, name) or ""

    settings = Settings(
        nodename="node1", mtu=int(env("CNI_MTU") or 0), etcd_endpoints=env("ETCD_ENDPOINTS"),
        etcd_ca_cert_file=env("ETCD_CA_CERT_FILE"), etcd_cert_file=env("ETCD_CERT_FILE"),
        etcd_key_file=env("ETCD_KEY_FILE"), log_level=env("CNI_LOG_LEVEL") or "info",
        log_file_path=env("CNI_LOG_FILE_PATH"), server_socket=env("CNI_SERVER_SOCKET"),
        kubeconfig=env("CNI_KUBECONFIG_FILEPATH"),
        kubernetes_mode=env("CNI_WRITE_KUBECONFIG") == "true")
    return render_template(cm["data"]["cni_network_config"], settings)


def needed_in_image(objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(command, path in the image) for every program the chart runs: container commands and
    exec probes (looked up on PATH, /opt/tortie/bin), and the CNI plugins the conflist
    chains after tortie (install-cni installs them from /usr/lib/cni)."""
    needed: list[tuple[str, str]] = []
    for _, c in containers(objects):
        commands = [c["command"][0]]
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            exec_ = c.get(probe, {}).get("exec")
            if exec_:
                commands.append(exec_["command"][0])
        for cmd in commands:
            path = cmd if cmd.startswith("/") else f"{IMAGE_BIN_DIR}/{cmd}"
            if (cmd, path) not in needed:
                needed.append((cmd, path))
    for plugin in conflist(objects)["plugins"][1:]:
        pair = (plugin["type"], f"{IMAGE_CNI_PLUGIN_DIR}/{plugin['type']}")
        if pair not in needed:
            needed.append(pair)
    return needed


def missing_offline(needed: list[tuple[str, str]]) -> list[str]:
    """What of `needed` the image would not have, judged from pyproject's entry points and
    the image's documented content."""
    scripts = project_scripts()
    wrong = []
    for cmd, path in needed:
        if path == f"{IMAGE_BIN_DIR}/{cmd}":
            ok = cmd in scripts
        elif path == f"{IMAGE_CNI_PLUGIN_DIR}/{cmd}":
            ok = cmd in IMAGE_CNI_PLUGINS
        else:
            ok = False
        if not ok:
            wrong.append(f"{cmd} ({path})")
    return wrong


def references(objects: list[dict[str, Any]]) -> list[tuple[str, str, str | None, str]]:
    """(kind, name, key or None, where) for every ConfigMap, Secret, ServiceAccount and
    PriorityClass a pod refers to."""
    refs: list[tuple[str, str, str | None, str]] = []
    for workload, spec in pod_specs(objects):
        refs.append(("ServiceAccount", spec.get("serviceAccountName", "default"), None, workload))
        if "priorityClassName" in spec:
            refs.append(("PriorityClass", spec["priorityClassName"], None, workload))
        for s in spec.get("imagePullSecrets", []):
            refs.append(("Secret", s["name"], None, f"{workload} imagePullSecrets"))
        for v in spec.get("volumes", []):
            # A projected volume's sources are volumes of their own (the CNI token's CA).
            for source in [v, *v.get("projected", {}).get("sources", [])]:
                if "configMap" in source:
                    for item in source["configMap"].get("items", [{"key": None}]):
                        refs.append(("ConfigMap", source["configMap"]["name"], item["key"],
                                     f"{workload} volume {v['name']}"))
                if "secret" in source:
                    name = source["secret"].get("secretName") or source["secret"]["name"]
                    refs.append(("Secret", name, None, f"{workload} volume {v['name']}"))
    for where, c in containers(objects):
        for e in c.get("env", []):
            source = e.get("valueFrom", {})
            for field, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                if field in source:
                    ref = source[field]
                    refs.append((kind, ref["name"], ref["key"], f"{where} env {e['name']}"))
    return refs


def documented_existing(values: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(kind, name) of objects the operator creates, named in values (docs/install.md)."""
    out: set[tuple[str, str]] = {("PriorityClass", "system-node-critical"),
                                 ("PriorityClass", "system-cluster-critical"),
                                 # Published by Kubernetes into every namespace (from 1.20):
                                 # the API server's CA, as every automounted token gets it.
                                 ("ConfigMap", "kube-root-ca.crt")}
    tls = values.get("etcd", {}).get("tls", {})
    if tls.get("existingSecret"):
        out.add(("Secret", tls["existingSecret"]))
    out |= {("Secret", n) for n in values.get("bgpPasswordSecrets", [])}
    out |= {("Secret", n) for n in values.get("imagePullSecrets", [])}
    for peer in values.get("bgpPeers", []):
        name = peer.get("spec", {}).get("password", {}).get("secretKeyRef", {}).get("name")
        if name:
            out.add(("Secret", name))
    return out


def unresolved(objects: list[dict[str, Any]], values: Mapping[str, Any]) -> list[str]:
    """References that point at neither a rendered object (with the key) nor a documented
    existing one."""
    existing = documented_existing(values)
    wrong = []
    for kind, name, key, where in references(objects):
        obj = find(objects, kind, name)
        if obj is None:
            if (kind, name) not in existing:
                wrong.append(f"{where}: {kind} {name} is neither rendered nor documented")
            continue
        if key is not None and key not in {**obj.get("data", {}), **obj.get("stringData", {})}:
            wrong.append(f"{where}: {kind} {name} has no key {key}")
    return wrong


def startup_documents(objects: list[dict[str, Any]]) -> bytes:
    cm = find(objects, "ConfigMap", "tortie-config")
    assert cm is not None
    return str(cm["data"]["startup_resources.yaml"]).encode()


def kubernetes_versions(first: str = "1.28") -> list[str]:
    """Every Kubernetes minor kubernetes-validate has schemas for, from `first` on."""
    from kubernetes_validate.utils import all_versions  # type: ignore[import-untyped]
    from packaging.version import Version

    return sorted({v for v in all_versions() if Version(v) >= Version(first)}, key=Version)


def invalid_for_kubernetes(objects: list[dict[str, Any]], versions: list[str]) -> list[str]:
    """kubernetes-validate --strict, in-process, of every object against every version;
    Calico kinds (no schema there) are checked by tortie's own parser instead."""
    from kubernetes_validate import utils as kv  # type: ignore[import-untyped]

    wrong = []
    for version in versions:
        for obj in objects:
            what = f"{obj['kind']}/{obj['metadata']['name']} on {version}"
            try:
                kv.validate(obj, version, strict=True)
            except kv.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                wrong.append(f"{what}: {path}: {exc.message}")
            except kv.SchemaNotFoundError as exc:
                wrong.append(f"{what}: {exc.message}")
    return wrong


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)
