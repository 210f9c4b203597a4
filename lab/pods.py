"""Pods in the lab, made the way a container runtime makes them: through the CNI plugin.

Owns: the lab's CNI installation and a minimal CNI runtime (libcni's conflist
semantics, enough for the e2e tests, the benchmark and the demo).

  * `install_cni(lab, node)` runs tortie-install-cni for a node, as production
    runs it: the static shim (build/tortie-cni-shim, built if needed) as
    `tortie` and `tortie-ipam` in <state>/cni/<node>/bin, and the node's CNI
    server (started if none answers on its socket), which runs every call;
    `plugin="python"` installs the Python launchers instead (they use the
    server only for datastore calls, if one runs). The node's conflist goes in <state>/cni/<node>/net.d
    (nodename, the lab's etcd, a per-node log file, MTU file, endpoint status
    directory and CNI server socket), tortie followed by portmap. The lab's
    nodes share one file system, so every file an agent and its node's plugin
    share is per node; `policy_setup_timeout` makes ADD wait for the agent.
  * `add_pod(lab, node, namespace, name, labels=..., named_ports=...)` creates the
    pod's network namespace `<lab>-pod-<namespace>-<name>` (so `lab.down()`
    removes it), brings its loopback up and runs the conflist's ADD inside the
    node's namespace (the pod's labels and named ports in `args.cni`), each
    plugin with the previous one's result as prevResult and the runtimeConfig
    its capabilities ask for, exactly as libcni does. The result is kept in
    <state>/cni/<node>/pods/ for DEL (a runtime's result cache). The pod's
    namespace gets its Profile `kns.<namespace>` first when it has none
    (`ensure_namespace`), as calico-kube-controllers keeps one per Namespace.
  * `delete_pod` runs DEL in reverse order with that prevResult, then removes
    the namespace; it is idempotent.
  * `label_pod` changes a pod's WorkloadEndpoint labels afterwards (`ctl label`).
  * `use_installed_cni(lab, node, conflist, plugin_dirs)` makes a node's pods use a
    conflist and plugins installed by someone else (the chart's install-cni, lab.chart)
    instead of install_cni's.
  * `start_cni_server(lab, node)` runs the node's CNI server (cni/server.py)
    as a recorded lab process, unless one already answers; the shim needs it,
    the Python plugin without one talks to etcd itself.

A failed ADD is undone like a runtime undoes it (DEL of the whole list, the
namespace removed) and raises PodError carrying the plugin's CNI error.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cni.config import NamedPort
from datastore.backoff import Backoff, Schedule
from datastore.names import label_key_problem, label_value_problem, port_name_problem
from lab import netns
from lab.cluster import Lab
from lab.errors import LabError
from lab.topology import LabNode

REFERENCE_PLUGINS = "/usr/lib/cni"  # Debian's containernetworking-plugins
CONF_NAME = "10-tortie.conflist"
BIN = Path(sys.executable).parent
CHECKOUT = Path(__file__).resolve().parent.parent
PLUGIN_KINDS = ("shim", "python")
# ensure_namespace against an etcd too starved to accept a connection: 2, 4, 8, 16 s
NAMESPACE_RETRY, NAMESPACE_TRIES = Schedule(first=2.0, cap=16.0), 5
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class PodError(LabError):
    """A CNI command failed; `code` and `cni_msg` are the plugin's error object."""

    def __init__(self, message: str, code: int | None = None, cni_msg: str = "") -> None:
        super().__init__(message)
        self.code, self.cni_msg = code, cni_msg


@dataclass
class PodInfo:
    name: str
    namespace: str
    node: str
    netns: str          # the pod's namespace name (ip netns)
    ip: str
    iface: str          # the host-side veth
    container_id: str
    mac: str = ""
    result: dict[str, Any] = field(default_factory=dict)  # the conflist's final result
    port_mappings: list[dict[str, Any]] = field(default_factory=list)


# -- paths and installation ------------------------------------------------------------------


def cni_dir(lab: Lab) -> Path:
    return lab.state_dir / "cni"


def bin_dir(lab: Lab, node: str) -> Path:
    """`node`'s CNI bin directory: the shim or the launchers, as installed for it (a node
    of its own each, so one lab can run both kinds), and the chained plugins."""
    return node_dir(lab, node) / "bin"


def node_dir(lab: Lab, node: str) -> Path:
    return cni_dir(lab) / node


def conf_path(lab: Lab, node: str) -> Path:
    return node_dir(lab, node) / "net.d" / CONF_NAME


def socket_path(lab: Lab, node: str) -> Path:
    return node_dir(lab, node) / "cni.sock"


def mtu_file(lab: Lab, node: str) -> Path:
    """Where the node's agent publishes the pod MTU (the plugin reads it when mtu is 0)."""
    return node_dir(lab, node) / "mtu"


def endpoint_status_dir(lab: Lab, node: str) -> Path:
    """Where the node's agent publishes "policy programmed" per endpoint (its
    FELIX_ENDPOINTSTATUSPATHPREFIX is node_dir; the plugin waits on this directory)."""
    return node_dir(lab, node) / "endpoint-status"


def cni_path(lab: Lab, node: str) -> str:
    return f"{bin_dir(lab, node)}:{REFERENCE_PLUGINS}"


def build_shim() -> Path:
    """The static shim of this checkout, (re)built by scripts/build-shim.sh when stale."""
    res = subprocess.run([str(CHECKOUT / "scripts" / "build-shim.sh")], capture_output=True,
                         text=True)
    if res.returncode != 0:
        raise LabError(f"building the CNI shim failed: {res.stderr.strip()}")
    return CHECKOUT / res.stdout.strip()


def _node_name(lab: Lab, node: str | LabNode) -> str:
    return node.name if isinstance(node, LabNode) else lab.node(node).name


def install_cni(lab: Lab, node: str | LabNode, *, mtu: int = 0, log_level: str = "info",
                portmap: bool = True, policy_setup_timeout: int = 0,
                plugin: str = "shim") -> Path:
    """Install (idempotently) the plugins and `node`'s conflist; returns the conflist path.
    `policy_setup_timeout` > 0: ADD waits up to that many seconds for the node's agent to
    program the pod (policy_setup_timeout_seconds). `plugin`: "shim" (and the node's CNI
    server, started here) or "python" (the launchers; see the module docstring)."""
    if plugin not in PLUGIN_KINDS:
        raise LabError(f"plugin={plugin!r}: expected one of {', '.join(PLUGIN_KINDS)}")
    name = _node_name(lab, node)
    node_bin = node_dir(lab, name) / "bin"
    if plugin == "shim":
        binaries = ["--shim", str(build_shim()), "--bin-dir", str(node_bin)]
    else:
        # `python -m` with the lab's own interpreter, not the console script (whose
        # shebang may name the venv's python3 where sys.executable says python):
        # install.py writes its fast site-less launcher only when --python is the
        # interpreter it runs under, and that launcher then imports tortie from where
        # this process does. A node's own bin directory names the kind installed.
        binaries = ["--python", sys.executable, "--bin-dir", str(node_bin)]
    argv = [sys.executable, "-m", "cni.install", *binaries,
            "--conf-dir", str(conf_path(lab, name).parent), "--conf-name", CONF_NAME,
            "--nodename", name, "--mtu", str(mtu), "--mtu-file", str(mtu_file(lab, name)),
            "--etcd-endpoints", ",".join(lab.etcd_endpoints), "--log-level", log_level,
            "--log-file-path", str(node_dir(lab, name) / "cni.log"),
            "--server-socket", str(socket_path(lab, name)),
            "--plugins-src-dir", REFERENCE_PLUGINS,
            "--endpoint-status-dir", str(endpoint_status_dir(lab, name)),
            "--policy-setup-timeout-seconds", str(policy_setup_timeout)]
    if not portmap:
        argv.append("--no-portmap")
    res = subprocess.run(argv, capture_output=True, text=True)
    if res.returncode != 0:
        raise LabError(f"installing the CNI plugin for {name} failed: {res.stderr.strip()}")
    if plugin == "shim":
        start_cni_server(lab, name)
    return conf_path(lab, name)


def cni_server_answers(lab: Lab, node: str) -> bool:
    """Whether a CNI server listens on `node`'s socket (a stale socket file does not count)."""
    import socket

    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(socket_path(lab, node)))
    except OSError:
        return False
    finally:
        probe.close()
    return True


# A deadline, not a figure: the server opens its socket in ~0.5 s on a quiet machine,
# 2.5 s at load average 15, and more than 15 s was seen at 30-100 (its imports).
CNI_SERVER_START_TIMEOUT = 60.0


def start_cni_server(lab: Lab, node: str | LabNode,
                     timeout: float = CNI_SERVER_START_TIMEOUT) -> subprocess.Popen[bytes] | None:
    """Run `node`'s CNI server (recorded: `lab.down()` stops it) and wait for its socket;
    None when one already answers there (install_cni starts it for the shim). A server
    that exits fails at once; one still starting gets `timeout` (15 s was missed by a
    live server on the 50-node lab at load average 35: a patience, not a failure check)."""
    name = _node_name(lab, node)
    if cni_server_answers(lab, name):
        return None
    sock = socket_path(lab, name)
    sock.parent.mkdir(parents=True, exist_ok=True)
    proc = lab.start_process(
        name, [sys.executable, "-m", "cni.server", "--socket", str(sock),
               "--etcd-endpoints", ",".join(lab.etcd_endpoints)],
        role="cni-server", name=f"cni-server-{name}")
    deadline = time.monotonic() + timeout
    while not cni_server_answers(lab, name):
        if proc.poll() is not None:
            log = lab.state_dir / f"cni-server-{name}.log"
            raise LabError(f"the CNI server of {name} exited with {proc.returncode}: "
                           f"{log.read_text()[-500:] if log.exists() else ''}")
        if time.monotonic() > deadline:
            raise LabError(f"the CNI server of {name} did not open {sock} in {timeout:g}s")
        time.sleep(0.02)
    return proc


# -- a minimal CNI runtime -------------------------------------------------------------------


def _find(plugin_type: str, path: str) -> str:
    for directory in path.split(":"):
        candidate = os.path.join(directory, plugin_type)
        if os.access(candidate, os.X_OK):
            return candidate
    raise PodError(f"no CNI plugin {plugin_type!r} in {path}")


def pod_cni_args(labels: Mapping[str, str] | None = None,
                 named_ports: Sequence[NamedPort] = (),
                 service_account: str | None = None) -> dict[str, Any]:
    """What the runtime tells the plugins about the pod, as `args.cni` (docs/cni.md). Pure."""
    args: dict[str, Any] = {}
    if labels:
        args["labels"] = [{"key": k, "value": v} for k, v in labels.items()]
    if named_ports:
        args["ports"] = [{"name": p.name, "containerPort": p.port,
                          "protocol": p.protocol.upper()} for p in named_ports]
    if service_account:
        args["serviceAccountName"] = service_account
    return args


def parse_label(text: str) -> tuple[str, str]:
    """'key=value' (a command line's --label) -> (key, value); PodError names what is wrong."""
    key, sep, value = text.partition("=")
    problem = "not KEY=VALUE"
    if sep:
        problem = label_key_problem(key) or label_value_problem(key, value) or ""
    if problem:
        raise PodError(f"label {text!r}: {problem}, e.g. app=web")
    return key, value


def parse_named_port(text: str) -> NamedPort:
    """'NAME:PROTO/PORT' (a command line's --named-port), e.g. 'http:TCP/80'. Pure."""
    name, _, rest = text.partition(":")
    proto, _, port = rest.partition("/")
    problem = port_name_problem(name)
    if not problem and proto.upper() not in ("TCP", "UDP", "SCTP"):
        problem = "the protocol is TCP, UDP or SCTP"
    if not problem and not (port.isdigit() and 1 <= int(port) <= 65535):
        problem = "the port is a number from 1 to 65535"
    if problem:
        raise PodError(f"named port {text!r} is not NAME:PROTO/PORT ({problem}), "
                       "e.g. http:TCP/80")
    return NamedPort(name, proto.lower(), int(port))


def plugin_configs(conflist: Mapping[str, Any], runtime_config: Mapping[str, Any],
                   cni_args: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Each plugin's network configuration as libcni builds it (without prevResult). Pure.

    `cni_args` (see pod_cni_args) travel as `args.cni` (CNI's CONVENTIONS.md), which
    tortie turns into the WorkloadEndpoint's labels and ports."""
    args = dict(cni_args or {})
    out = []
    for plugin in conflist["plugins"]:
        conf = {**plugin, "cniVersion": conflist["cniVersion"], "name": conflist["name"]}
        if args:
            conf["args"] = {"cni": args}
        caps = {c for c, on in (plugin.get("capabilities") or {}).items() if on}
        rc = {k: v for k, v in runtime_config.items() if k in caps}
        if rc:
            conf["runtimeConfig"] = rc
        out.append(conf)
    return out


def exec_plugin(lab: Lab, node: str, conf: Mapping[str, Any], command: str,
                env: Mapping[str, str]) -> dict[str, Any] | None:
    """Run one plugin inside the node's namespace; its result, or PodError with its error."""
    binary = _find(conf["type"], env["CNI_PATH"])
    res = lab.exec(node, [binary], check=False, input=json.dumps(conf),
                   env={**env, "CNI_COMMAND": command})
    out = res.stdout.strip()
    if res.returncode != 0:
        try:
            err = json.loads(out)
            code, msg = err.get("code"), err.get("msg", "")
        except ValueError:
            code, msg = None, out or res.stderr.strip()
        raise PodError(f"CNI {command} of plugin {conf['type']} failed"
                       f"{f' (code {code})' if code is not None else ''}: {msg}", code, msg)
    return json.loads(out) if out else None


def run_conflist(lab: Lab, node: str, conflist: Mapping[str, Any], command: str,
                 env: Mapping[str, str], runtime_config: Mapping[str, Any] | None = None,
                 prev: Mapping[str, Any] | None = None,
                 cni_args: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """ADD in order (prevResult chained), DEL in reverse, CHECK in order (libcni)."""
    confs = plugin_configs(conflist, runtime_config or {}, cni_args)
    if command == "ADD":
        result: dict[str, Any] | None = None
        for conf in confs:
            if result is not None:
                conf["prevResult"] = result
            result = exec_plugin(lab, node, conf, "ADD", env) or result
        return result
    errors = []
    for conf in (reversed(confs) if command == "DEL" else confs):
        if prev is not None:
            conf["prevResult"] = prev
        try:
            exec_plugin(lab, node, conf, command, env)
        except PodError as exc:
            if command != "DEL":
                raise
            errors.append(exc)
    if errors:
        raise errors[0]
    return None


# -- pods ------------------------------------------------------------------------------------


def pod_netns(lab: Lab, namespace: str, name: str) -> str:
    return f"{lab.name}-pod-{namespace}-{name}"


def _record_path(lab: Lab, node: str, namespace: str, name: str) -> Path:
    return node_dir(lab, node) / "pods" / f"{namespace}_{name}.json"


def use_installed_cni(lab: Lab, node: str, conflist: Path, plugin_dirs: Sequence[Path]) -> None:
    """From now on `node`'s pods run `conflist` with CNI_PATH `plugin_dirs`, as a runtime
    configured with that conf dir and bin dirs would (kept in the node's cni dir)."""
    record = node_dir(lab, node) / "installed-cni.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"conflist": str(conflist),
                                  "cni_path": ":".join(str(d) for d in plugin_dirs)}))


def _installed(lab: Lab, node: str) -> tuple[Path, str] | None:
    record = node_dir(lab, node) / "installed-cni.json"
    if not record.exists():
        return None
    data = json.loads(record.read_text())
    return Path(data["conflist"]), data["cni_path"]


def _env(lab: Lab, pod: PodInfo, ifname: str = "eth0") -> dict[str, str]:
    installed = _installed(lab, pod.node)
    return {
        "CNI_CONTAINERID": pod.container_id,
        "CNI_NETNS": f"{netns.NETNS_DIR}/{pod.netns}",
        "CNI_IFNAME": ifname,
        "CNI_PATH": installed[1] if installed else cni_path(lab, pod.node),
        "CNI_ARGS": (f"IgnoreUnknown=1;K8S_POD_NAMESPACE={pod.namespace};"
                     f"K8S_POD_NAME={pod.name};K8S_POD_INFRA_CONTAINER_ID={pod.container_id}"),
    }


def _load_conflist(lab: Lab, node: str) -> dict[str, Any]:
    installed = _installed(lab, node)
    if installed:
        if not installed[0].exists():
            raise PodError(f"{node} has no network configuration {installed[0]} (yet)")
        return json.loads(installed[0].read_text())
    path = conf_path(lab, node)
    if not path.exists():
        install_cni(lab, node)
    return json.loads(path.read_text())


def ensure_namespace(lab: Lab, namespace: str) -> None:
    """Create namespace `namespace` (a v1 Namespace through `ctl create`, stored as the
    Profile `kns.<namespace>`) unless it exists. A pod's endpoint names that profile, and
    the agent, like Felix, drops all traffic of an endpoint whose profile is missing; in
    Kubernetes every pod's namespace exists. An existing one, labels and all, is kept."""
    manifest = json.dumps({"apiVersion": "v1", "kind": "Namespace",
                           "metadata": {"name": namespace}})
    # An etcd that cannot even be reached (a starved host: 50 agents starting on 2 CPUs
    # kept etcd from answering a connection in time) is tried again after a jittered
    # backoff; a create is safe to repeat, "already exists" counts as done.
    retry = Backoff(NAMESPACE_RETRY)
    while True:
        res = lab.exec("node1", [str(BIN / "ctl"), "create", "-f", "-"], input=manifest,
                       check=False, env={"ETCD_ENDPOINTS": ",".join(lab.etcd_endpoints)})
        output = res.stderr + res.stdout
        if res.returncode == 0 or "already exists" in output:
            return
        if "etcd connection failed" not in output or retry.failures >= NAMESPACE_TRIES - 1:
            raise PodError(f"creating namespace {namespace}: {(res.stderr or res.stdout).strip()}")
        time.sleep(retry.failed(random.random()))


def add_pod(lab: Lab, node: str | LabNode, namespace: str = "default", name: str = "pod",
            *, port_mappings: Sequence[Mapping[str, Any]] = (),
            labels: Mapping[str, str] | None = None,
            named_ports: Sequence[NamedPort] = (),
            service_account: str | None = None,
            container_id: str | None = None,
            namespace_exists: bool = False) -> PodInfo:
    """Create pod `namespace/name` on `node` through the CNI plugin (see the module docstring).

    port_mappings: portmap's runtimeConfig entries, e.g.
    [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]; labels, named_ports
    and service_account: the pod's, passed as a runtime passes them (`args.cni`), which
    the WorkloadEndpoint carries. `namespace_exists`: the caller made the namespace
    already (`ensure_namespace`), so the `ctl` call that checks it is skipped (churn at
    10 pods per second cannot afford a Python process per pod for it).
    """
    node_name = _node_name(lab, node)
    for what, value in (("namespace", namespace), ("pod name", name)):
        if not _NAME_RE.match(value):
            raise PodError(f"{what} {value!r} is invalid: lower-case letters, digits, '-', '.'")
    record = _record_path(lab, node_name, namespace, name)
    if record.exists():
        raise PodError(f"pod {namespace}/{name} already exists on {node_name}")
    if not namespace_exists:
        ensure_namespace(lab, namespace)
    conflist = _load_conflist(lab, node_name)
    pod = PodInfo(name, namespace, node_name, pod_netns(lab, namespace, name), "", "",
                  container_id or uuid.uuid4().hex, port_mappings=[dict(p) for p in port_mappings])
    netns.batch([f"netns add {pod.netns}"])
    env = _env(lab, pod)
    runtime_config = {"portMappings": pod.port_mappings} if pod.port_mappings else {}
    try:
        netns.batch(["link set lo up"], pod.netns)
        result = run_conflist(lab, node_name, conflist, "ADD", env, runtime_config,
                              cni_args=pod_cni_args(labels, named_ports, service_account)) or {}
    except BaseException:
        try:  # what a runtime does after a failed ADD: DEL, then drop the sandbox
            run_conflist(lab, node_name, conflist, "DEL", env, runtime_config)
        except PodError:
            pass
        netns.batch([f"netns del {pod.netns}"], force=True)
        raise
    pod.result = result
    pod.ip = result["ips"][0]["address"].split("/")[0]
    host = [i for i in result.get("interfaces", ()) if not i.get("sandbox")]
    inside = [i for i in result.get("interfaces", ()) if i.get("sandbox")]
    pod.iface = host[0]["name"] if host else ""
    pod.mac = inside[0].get("mac", "") if inside else ""
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(asdict(pod), indent=1))
    return pod


def list_pods(lab: Lab, node: str | None = None) -> list[PodInfo]:
    out = []
    nodes = [node] if node else [n.name for n in lab.nodes]
    for n in nodes:
        directory = node_dir(lab, n) / "pods"
        if directory.is_dir():
            out += [PodInfo(**json.loads(p.read_text())) for p in sorted(directory.glob("*.json"))]
    return out


def find_pod(lab: Lab, namespace: str, name: str) -> PodInfo | None:
    for pod in list_pods(lab):
        if (pod.namespace, pod.name) == (namespace, name):
            return pod
    return None


def check_pod(lab: Lab, pod: PodInfo) -> None:
    """The conflist's CHECK with the stored result (PodError if something differs)."""
    run_conflist(lab, pod.node, _load_conflist(lab, pod.node), "CHECK", _env(lab, pod),
                 {"portMappings": pod.port_mappings} if pod.port_mappings else {}, pod.result)


def delete_pod(lab: Lab, pod: PodInfo | str, namespace: str = "default") -> bool:
    """DEL the pod (by PodInfo or name) and remove its namespace. False if it was not there."""
    if isinstance(pod, str):
        found = find_pod(lab, namespace, pod)
        if found is None:
            return False
        pod = found
    conflist = _load_conflist(lab, pod.node)
    run_conflist(lab, pod.node, conflist, "DEL", _env(lab, pod),
                 {"portMappings": pod.port_mappings} if pod.port_mappings else {}, pod.result)
    netns.batch([f"netns del {pod.netns}"], force=True)
    _record_path(lab, pod.node, pod.namespace, pod.name).unlink(missing_ok=True)
    return True


def endpoint_name(lab: Lab, pod: PodInfo) -> str:
    """The WorkloadEndpoint the plugin wrote for `pod` (named by cni.naming's rules)."""
    from cni.naming import identify

    k8s = {"K8S_POD_NAMESPACE": pod.namespace, "K8S_POD_NAME": pod.name}
    return identify("lab", pod.node, pod.container_id, "eth0", k8s).endpoint_name


def label_pod(lab: Lab, namespace: str, name: str, labels: Mapping[str, str],
              remove: Sequence[str] = ()) -> list[str]:
    """Change the labels of pod `namespace/name`'s WorkloadEndpoint: `remove` keys, then set
    `labels` (overwriting), each a `ctl label` run in node1's namespace (a compare-and-swap
    on the endpoint; ctl/label.py). Returns ctl's lines; PodError names what failed."""
    pod = find_pod(lab, namespace, name)
    if pod is None:
        raise PodError(f"no pod {namespace}/{name} in lab {lab.name}")
    wep = endpoint_name(lab, pod)
    changes = [[key, "--remove"] for key in remove]
    changes += [[f"{key}={value}", "--overwrite"] for key, value in labels.items()]
    said = []
    for change in changes:
        res = lab.exec("node1", [str(BIN / "ctl"), "label", "workloadendpoints", wep, *change,
                                 "-n", namespace], check=False,
                       env={"ETCD_ENDPOINTS": ",".join(lab.etcd_endpoints)})
        if res.returncode != 0:
            raise PodError(f"labelling pod {namespace}/{name}: {res.stderr.strip()}")
        said.append(res.stdout.strip())
    return said


def pod_exec(pod: PodInfo, argv: Sequence[str], check: bool = False, timeout: float = 30,
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(netns.exec_argv(pod.netns, argv), capture_output=True, text=True,
                          check=check, timeout=timeout)


def ping(pod: PodInfo, ip: str, count: int = 1, wait: int = 2) -> bool:
    return pod_exec(pod, ["ping", "-c", str(count), "-W", str(wait), "-q", ip]).returncode == 0
