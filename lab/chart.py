"""The Helm chart in the lab: render it per node and run each node's pod with podman.

Owns the lab's use of charts/tortie: the values of one lab node (`node_values`, pure),
rendering them with the pinned helm binary, playing the node's pod with
`podman kube play` inside the node's network namespace (host networking there means
the node's namespace), waiting for its readiness, replacing it (the rolling update's
step) and removing everything the chart left (`remove_chart_objects`, which
`lab.cluster.teardown` calls).

Invariants:

* Every host path of a node lives under `<state>/chart/<node>/` (the chart's
  `hostPaths` values), so the nodes of one machine never share a file; the node's
  rendered values, chart and played YAML are kept there too for reading.
* Everything made in podman's storage carries the lab's name: pods and their
  containers the label `tortie.lab=<lab>`, secrets and named volumes (podman names
  the latter after the ConfigMap or Secret) the name prefix `<lab>-<node>-` that
  lab.chart_pods gives them. Removal goes by those and nothing else (lab names hold
  no dash, so one lab's prefix is never another's).
* A node's pod is played only after its previous one, its secrets and volumes are
  gone: a replaced pod never sees a stale ConfigMap or Secret.
* podman 4.3 runs no probes here (readiness is ignored, liveness needs systemd
  timers), so `wait_ready` runs each container's readinessProbe command with
  `podman exec`, as the kubelet would, and records liveness once with
  `podman healthcheck run` (so `podman ps` shows it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lab import chart_pods
from lab.cluster import Lab
from lab.errors import LabError
from lab.podman import LAB_LABEL, Podman

REPO = Path(__file__).resolve().parent.parent
CHART_DIR = REPO / "charts" / "tortie"
FETCH_HELM = REPO / "scripts" / "fetch_helm.py"
RELEASE = "tortie"
NAMESPACE = "kube-system"
DAEMONSET = "tortie-node"
# hostPaths value -> where it goes under <state>/chart/<node>/ (the host path it stands for)
HOST_PATHS = {
    "cniBinDir": "opt/cni/bin",
    "cniConfDir": "etc/cni/net.d",
    "cniLogDir": "var/log/tortie",
    "varRunCalico": "var/run/calico",
    "varLibCalico": "var/lib/calico",
    "varRunTortie": "var/run/tortie",
    "xtablesLock": "run/xtables.lock",
}
READY_TIMEOUT = 120.0
NODE_LABEL = "tortie.lab-node"  # on each node's pod, beside lab.podman's LAB_LABEL


@dataclass(frozen=True)
class LabChart:
    """What every node of one lab's chart shares: the image and the values beyond the
    per-node ones (e.g. `{"node": {"logSeverity": "Debug"}}` for a rolling update)."""

    image: str  # repository:tag
    values: Mapping[str, Any]


def node_dir(lab: Lab, node: str) -> Path:
    return lab.state_dir / "chart" / node


def pod_name(lab: Lab, node: str) -> str:
    return f"{lab.name}-{node}"


def host_path(lab: Lab, node: str, key: str) -> Path:
    """Where hostPaths.<key> of `node` is (e.g. "cniConfDir")."""
    return node_dir(lab, node) / HOST_PATHS[key]


def conflist_path(lab: Lab, node: str, conf_name: str = "10-tortie.conflist") -> Path:
    return host_path(lab, node, "cniConfDir") / conf_name


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` merged into `base` key by key, as helm merges -f files (lists replaced). Pure."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def node_values(chart: LabChart, *, etcd_endpoints: Sequence[str], node_dir: Path
                ) -> dict[str, Any]:
    """The chart values of one lab node: its host paths under `node_dir`, the lab's etcd,
    the image (never pulled), then `chart.values` over them. Pure."""
    repository, _, tag = chart.image.rpartition(":")
    if not repository or "/" in tag:
        raise LabError(f"image {chart.image!r} is not REPOSITORY:TAG")
    base = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "etcd": {"endpoints": ",".join(etcd_endpoints)},
        # No Kubernetes API server in the lab (podman plays the pod; nothing mounts a
        # service account token): pods reach the CNI with args.cni, as without the chart.
        "cni": {"kubernetesMode": False},
        "hostPaths": {key: str(node_dir / rel) for key, rel in HOST_PATHS.items()},
    }
    return merge(base, chart.values)


# -- helm -------------------------------------------------------------------------------------


def helm_binary() -> str:
    """The pinned helm: $TORTIE_HELM, else what scripts/fetch_helm.py fetches (Helm 4)."""
    explicit = os.environ.get("TORTIE_HELM")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise LabError(f"TORTIE_HELM={explicit!r} is not an executable file")
        return explicit
    res = subprocess.run([sys.executable, str(FETCH_HELM)], capture_output=True, text=True,
                         timeout=600)
    paths = [line for line in res.stdout.split() if line.endswith("/helm")]
    if res.returncode != 0 or not paths:
        raise LabError(f"no helm binary: {FETCH_HELM.name} failed: "
                       f"{(res.stderr or res.stdout).strip()[-500:]}")
    return next((p for p in paths if "/helm-v4" in p), paths[-1])


def render(helm: str, values: Mapping[str, Any], work: Path, chart_dir: Path = CHART_DIR
           ) -> list[dict[str, Any]]:
    """`helm template` of the chart with `values` (kept in work/values.yaml, the output in
    work/rendered.yaml); the rendered objects."""
    work.mkdir(parents=True, exist_ok=True)
    values_file = work / "values.yaml"
    values_file.write_text(yaml.safe_dump(dict(values), sort_keys=False))
    argv = [helm, "template", RELEASE, str(chart_dir), "--namespace", NAMESPACE,
            "--values", str(values_file)]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise LabError(f"helm template failed ({' '.join(argv)}): {res.stderr.strip()}")
    (work / "rendered.yaml").write_text(res.stdout)
    return chart_pods.load_objects(res.stdout)


# -- podman -----------------------------------------------------------------------------------


def podman_for(lab: Lab, node: str) -> Podman:
    return Podman(netns=lab.netns_of(node))


def render_node(lab: Lab, node: str, chart: LabChart, helm: str,
                extra_objects: Sequence[Mapping[str, Any]] = ()) -> chart_pods.NodePod:
    """Render the chart for `node` and turn it into the node's pod (files in node_dir)."""
    work = node_dir(lab, node)
    values = node_values(chart, etcd_endpoints=lab.etcd_endpoints, node_dir=work)
    objects = render(helm, values, work)
    node_pod = chart_pods.node_pod([*objects, *extra_objects], node,
                                   pod_name=pod_name(lab, node),
                                   lab_labels={LAB_LABEL: lab.name, NODE_LABEL: node},
                                   host_ip=lab.node(node).ip, daemonset=DAEMONSET)
    (work / "pod.yaml").write_text(node_pod.kube_yaml())
    return node_pod


def play(lab: Lab, node: str, node_pod: chart_pods.NodePod) -> None:
    """Run `node_pod` in the node's namespace, replacing the node's pod if it has one."""
    remove_node_pod(lab, node)
    # The parents of file host paths: podman creates FileOrCreate files, not their dirs.
    for key in HOST_PATHS:
        path = host_path(lab, node, key)
        (path.parent if key == "xtablesLock" else path).mkdir(parents=True, exist_ok=True)
    podman = podman_for(lab, node)
    for secret in node_pod.secrets:
        podman.run("secret", "create", "--label", f"{LAB_LABEL}={lab.name}",
                   secret.name, "-", input=secret.data)
    podman.run("kube", "play", str(node_dir(lab, node) / "pod.yaml"), timeout=300)


def remove_node_pod(lab: Lab, node: str, grace: int = 10) -> bool:
    """Stop and remove `node`'s pod (each container gets SIGTERM and `grace` seconds), then
    its secrets and volumes. False if there was no pod."""
    podman = podman_for(lab, node)
    name = pod_name(lab, node)
    had = podman.run("pod", "exists", name, check=False).returncode == 0
    if had:
        podman.run("pod", "stop", "--time", str(grace), name, timeout=grace + 60)
        podman.run("pod", "rm", "--force", name)
    _remove_named(podman, f"{name}-")
    return had


def _names(podman: Podman, *listing: str) -> list[str]:
    return podman.run(*listing, "--format", "{{.Name}}").stdout.split()


def _named(podman: Podman, prefix: str) -> tuple[list[str], list[str]]:
    """The secrets and volumes whose names start with `prefix` (podman 4.3 cannot filter
    secrets by label, and names volumes after their ConfigMap or Secret)."""
    secrets = [s for s in _names(podman, "secret", "ls") if s.startswith(prefix)]
    volumes = [v for v in _names(podman, "volume", "ls") if v.startswith(prefix)]
    return secrets, volumes


def _remove_named(podman: Podman, prefix: str) -> tuple[list[str], list[str]]:
    secrets, volumes = _named(podman, prefix)
    if secrets:
        podman.run("secret", "rm", *secrets)
    if volumes:
        podman.run("volume", "rm", "--force", *volumes)
    return secrets, volumes


def containers(lab: Lab, node: str) -> list[dict[str, Any]]:
    """`podman ps --all` of the node's pod as JSON objects (init containers included)."""
    res = podman_for(lab, node).run("ps", "--all", "--format", "json", "--filter",
                                    f"pod={pod_name(lab, node)}")
    found = json.loads(res.stdout or "[]")
    return found if isinstance(found, list) else []


def wait_ready(lab: Lab, node: str, node_pod: chart_pods.NodePod,
               timeout: float = READY_TIMEOUT) -> float:
    """Until every container of the pod runs and its readinessProbe command succeeds (run
    with podman exec); then liveness once. Seconds waited; LabError with the logs if not."""
    started = time.monotonic()
    deadline = started + timeout
    podman = podman_for(lab, node)
    spec = node_pod.pod["spec"]
    probes = {f"{node_pod.name}-{c['name']}": (c.get("readinessProbe") or {}).get("exec", {})
              .get("command") for c in spec.get("containers", ())}
    pending = dict(probes)
    while pending:
        states = {c["Names"][0]: c for c in containers(lab, node)}
        for ctr in list(pending):
            state = states.get(ctr, {})
            if state.get("Exited") or state.get("State") == "exited":
                raise LabError(f"{ctr} on {node} exited with {state.get('ExitCode')}:\n"
                               f"{_logs(podman, ctr)}")
            if state.get("State") != "running":
                continue
            command = pending[ctr]
            if not command or podman.run("exec", ctr, *command, check=False,
                                         timeout=30).returncode == 0:
                del pending[ctr]
        if pending and time.monotonic() > deadline:
            ctr = next(iter(pending))
            raise LabError(f"{', '.join(pending)} on {node} not ready after {timeout:.0f}s; "
                           f"the last lines of {ctr}:\n{_logs(podman, ctr)}")
        if pending:
            time.sleep(0.5)
    for c in spec.get("containers", ()):
        if c.get("livenessProbe"):
            ctr = f"{node_pod.name}-{c['name']}"
            res = podman.run("healthcheck", "run", ctr, check=False)
            if res.returncode != 0:
                raise LabError(f"{ctr} on {node}: liveness probe failed: "
                               f"{(res.stdout + res.stderr).strip()}\n{_logs(podman, ctr)}")
    return time.monotonic() - started


def _logs(podman: Podman, container: str, lines: int = 40) -> str:
    res = podman.run("logs", "--tail", str(lines), container, check=False)
    return (res.stdout + res.stderr).strip()


def running_env(lab: Lab, node: str, container: str) -> dict[str, str]:
    """The environment of the main process of a running container of the node's pod (what
    it runs with, not only what it was created with)."""
    res = podman_for(lab, node).run("exec", f"{pod_name(lab, node)}-{container}",
                                    "cat", "/proc/1/environ")
    return dict(item.partition("=")[::2] for item in res.stdout.split("\0") if item)


# -- removal ----------------------------------------------------------------------------------


def remove_chart_objects(lab_name: str) -> list[str]:
    """Remove the pods, containers, secrets and volumes lab `lab_name` made in podman's
    storage and the dangling images image builds left; what was removed, one line each.
    Quick and quiet when the storage or podman is absent."""
    from lab import podman

    if not podman.storage_exists() or not shutil.which("podman"):
        return []
    p = Podman()
    running = p.ids("pod", "ps", "--filter", f"label={LAB_LABEL}={lab_name}")
    if running:
        # Stopped first, all at once: `pod rm --force` of a running pod takes ~4 s each.
        p.run("pod", "stop", "--time", "10", *running, timeout=120)
    removed = [f"{podman.remove_lab_objects(lab_name)} pod(s) and container(s)"]
    secrets, volumes = _remove_named(p, f"{lab_name}-")
    # Only dangling images of tortie's builds (lab.image's stages, untagged older builds):
    # tagged images stay for the next lab, and image.prune's other rules are its own.
    images = p.run("image", "prune", "--force", "--filter", f"label={podman.BUILD_LABEL}=1"
                   ).stdout.split()
    removed += [f"secret {s}" for s in secrets] + [f"volume {v}" for v in volumes]
    removed += [f"image {i}" for i in images]
    return removed


def find_chart_leftovers(lab_name: str) -> list[str]:
    """What lab `lab_name` still has in podman's storage (pods, containers, secrets by
    label, volumes by name), one line each; [] when it has nothing there."""
    from lab import podman

    if not podman.storage_exists():
        return []
    p = Podman()
    selector = f"label={LAB_LABEL}={lab_name}"
    found = [f"pod {n}" for n in _names(p, "pod", "ps", "--filter", selector)]
    found += [f"container {n}" for n in p.run("ps", "--all", "--filter", selector, "--format",
                                               "{{.Names}}").stdout.split()]
    secrets, volumes = _named(p, f"{lab_name}-")
    return found + [f"secret {n}" for n in secrets] + [f"volume {n}" for n in volumes]
