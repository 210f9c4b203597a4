"""lab.chart_pods: a rendered DaemonSet (a fixture shaped like charts/tortie's) -> a node's Pod
for podman, with every change the module docstring lists and nothing else."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
import yaml

from lab.chart_pods import ChartPodError, NodePod, load_objects, node_pod

RENDERED = """
---
# Source: tortie/templates/configmap.yaml
apiVersion: v1
kind: ConfigMap
metadata: {name: tortie-config, namespace: kube-system}
data:
  etcd_endpoints: http://10.9.1.2:2379
  calico_backend: bird
  startup_resources.yaml: |
    kind: IPPool
---
apiVersion: v1
kind: ConfigMap
metadata: {name: unused-config, namespace: kube-system}
data: {a: b}
---
apiVersion: v1
kind: Secret
metadata: {name: tortie-etcd-secrets, namespace: kube-system}
type: Opaque
data:
  etcd-key: a2V5LXBlbQo=
stringData:
  etcd-ca: ca-pem
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: tortie-node, namespace: kube-system, labels: {app.kubernetes.io/name: tortie}}
spec:
  selector: {matchLabels: {k8s-app: tortie-node}}
  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 1}}
  template:
    metadata:
      labels: {k8s-app: tortie-node}
      annotations: {checksum/config: 5cb7e1c2ecb0481edbf12d0de81b3c371c730001714bcd320dadc27cfd93011a, kept: short}
    spec:
      hostNetwork: true
      dnsPolicy: ClusterFirstWithHostNet
      serviceAccountName: tortie-node
      priorityClassName: system-node-critical
      tolerations: [{operator: Exists, effect: NoSchedule}]
      initContainers:
      - name: install-cni
        image: localhost/tortie:0123456789ab
        imagePullPolicy: IfNotPresent
        command: [tortie-install-cni]
        env:
        - {name: CNI_NETWORK_CONFIG, valueFrom: {configMapKeyRef: {name: tortie-config, key: cni_network_config}}}
        - {name: KUBERNETES_NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
        volumeMounts: [{name: cni-bin-dir, mountPath: /host/opt/cni/bin}]
      containers:
      - name: tortie-node
        image: localhost/tortie:0123456789ab
        imagePullPolicy: IfNotPresent
        command: [tortie-agent]
        env:
        - {name: NODENAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
        - {name: FELIX_LOGSEVERITYSCREEN, value: Info}
        - {name: ETCD_KEY, valueFrom: {secretKeyRef: {name: tortie-etcd-secrets, key: etcd-key}}}
        - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        envFrom: [{configMapRef: {name: tortie-config}}]
        securityContext: {privileged: true}
        livenessProbe: {exec: {command: [tortie-agent, --live]}, periodSeconds: 10}
        readinessProbe: {exec: {command: [tortie-agent, --ready]}, periodSeconds: 10}
        volumeMounts:
        - {name: startup-resources, mountPath: /etc/tortie/startup, readOnly: true}
        - {name: etcd-certs, mountPath: /calico-secrets, readOnly: true}
      - name: tortie-cni-server
        image: localhost/tortie:0123456789ab
        command: [tortie-cni-server, --socket, /var/run/tortie/cni.sock]
      volumes:
      - {name: cni-bin-dir, hostPath: {path: /run/tortie-lab/t/chart/node1/opt/cni/bin, type: DirectoryOrCreate}}
      - name: startup-resources
        configMap: {name: tortie-config, items: [{key: startup_resources.yaml, path: startup_resources.yaml}]}
      - {name: etcd-certs, secret: {secretName: tortie-etcd-secrets, defaultMode: 256}}
"""

LABELS = {"tortie.lab": "t"}


def play(**kwargs: Any) -> NodePod:
    args = {"lab_labels": LABELS, "pod_name": "t-node1", "host_ip": "10.9.1.11"} | kwargs
    return node_pod(load_objects(RENDERED), "node1", **args)


def template_spec() -> dict[str, Any]:
    ds = next(o for o in load_objects(RENDERED) if o["kind"] == "DaemonSet")
    return copy.deepcopy(ds["spec"]["template"]["spec"])


def test_the_template_becomes_a_pod_named_and_labelled_for_the_node() -> None:
    pod = play().pod
    assert (pod["apiVersion"], pod["kind"]) == ("v1", "Pod")
    assert pod["metadata"] == {
        "name": "t-node1", "namespace": "kube-system",
        "labels": {"k8s-app": "tortie-node", "tortie.lab": "t"},
        "annotations": {"kept": "short"}}  # checksum/config (64 characters) dropped
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["install-cni"]
    assert play().container_names() == ["t-node1-tortie-node", "t-node1-tortie-cni-server"]


def test_only_the_listed_changes_are_made() -> None:
    """Undo the documented changes on the Pod's spec: what is left is the template's spec."""
    spec = play().pod["spec"]
    assert spec.pop("restartPolicy") == "OnFailure"
    for c in [*spec["initContainers"], *spec["containers"]]:
        assert c.pop("imagePullPolicy") == "Never"
    want = template_spec()
    for c in [*want["initContainers"], *want["containers"]]:
        c.pop("imagePullPolicy", None)
    init_env = {e["name"]: e for e in spec["initContainers"][0]["env"]}
    assert init_env["KUBERNETES_NODE_NAME"] == {"name": "KUBERNETES_NODE_NAME", "value": "node1"}
    assert init_env["CNI_NETWORK_CONFIG"]["valueFrom"]["configMapKeyRef"]["name"] == \
        "t-node1-tortie-config"
    agent = spec["containers"][0]
    env = {e["name"]: e for e in agent["env"]}
    assert env["NODENAME"]["value"] == "node1" and env["POD_IP"]["value"] == "10.9.1.11"
    assert env["ETCD_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "t-node1-tortie-etcd-secrets"
    assert agent["envFrom"] == [{"configMapRef": {"name": "t-node1-tortie-config"}}]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["startup-resources"]["configMap"]["name"] == "t-node1-tortie-config"
    assert volumes["etcd-certs"]["secret"] == {
        "secretName": "t-node1-tortie-etcd-secrets-files", "defaultMode": 256, "optional": False}
    # put the rendered values back: nothing else may differ
    init_env["KUBERNETES_NODE_NAME"] = {"name": "KUBERNETES_NODE_NAME",
                                        "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
    spec["initContainers"][0]["env"] = list(init_env.values())
    spec["initContainers"][0]["env"][0]["valueFrom"]["configMapKeyRef"]["name"] = "tortie-config"
    env["NODENAME"] = {"name": "NODENAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
    env["POD_IP"] = {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    env["ETCD_KEY"]["valueFrom"]["secretKeyRef"]["name"] = "tortie-etcd-secrets"
    agent["env"] = list(env.values())
    agent["envFrom"][0]["configMapRef"]["name"] = "tortie-config"
    volumes["startup-resources"]["configMap"]["name"] = "tortie-config"
    volumes["etcd-certs"]["secret"] = {"secretName": "tortie-etcd-secrets", "defaultMode": 256}
    spec["volumes"] = list(volumes.values())
    assert spec == want


def test_config_maps_are_the_used_ones_renamed_per_pod() -> None:
    node = play()
    assert [m["metadata"]["name"] for m in node.config_maps] == ["t-node1-tortie-config"]
    assert node.config_maps[0]["data"]["etcd_endpoints"] == "http://10.9.1.2:2379"
    docs = list(yaml.safe_load_all(node.kube_yaml()))
    assert [d["kind"] for d in docs] == ["ConfigMap", "Pod"]
    assert docs[1] == node.pod
    assert node.volume_names() == ["t-node1-tortie-config", "t-node1-tortie-etcd-secrets-files"]
    other = node_pod(load_objects(RENDERED), "node2", lab_labels=LABELS, pod_name="t-node2",
                     host_ip="10.9.2.11")
    assert other.config_maps[0]["metadata"]["name"] == "t-node2-tortie-config"


def test_a_secret_becomes_one_podman_secret_per_way_podman_reads_it() -> None:
    secrets = {s.name: s for s in play().secrets}
    assert set(secrets) == {"t-node1-tortie-etcd-secrets", "t-node1-tortie-etcd-secrets-files"}
    env = json.loads(secrets["t-node1-tortie-etcd-secrets"].data)
    assert {k: base64.b64decode(v) for k, v in env.items()} == {
        "etcd-key": b"key-pem\n", "etcd-ca": b"ca-pem"}
    files = json.loads(secrets["t-node1-tortie-etcd-secrets-files"].data)
    assert files == {"data": {"etcd-ca": "ca-pem", "etcd-key": "key-pem\n"}}
    assert {s.source for s in secrets.values()} == {"tortie-etcd-secrets"}


def test_an_extra_secret_object_satisfies_a_reference_the_chart_does_not_render() -> None:
    objs = [o for o in load_objects(RENDERED) if o["kind"] != "Secret"]
    with pytest.raises(ChartPodError, match="container tortie-node: env ETCD_KEY: Secret "
                                            "'tortie-etcd-secrets' is neither rendered"):
        node_pod(objs, "node1", lab_labels=LABELS, pod_name="t-node1", host_ip="10.9.1.11")
    extra = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tortie-etcd-secrets"},
             "stringData": {"etcd-key": "k"}}
    node = node_pod([*objs, extra], "node1", lab_labels=LABELS, pod_name="t-node1", host_ip="10.9.1.11")
    assert len(node.secrets) == 2


def test_an_optional_missing_reference_is_kept_without_an_object() -> None:
    objs = load_objects(RENDERED)
    ds = next(o for o in objs if o["kind"] == "DaemonSet")
    ds["spec"]["template"]["spec"]["containers"][1]["env"] = [
        {"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k",
                                                      "optional": True}}}]
    node = node_pod(objs, "node1", lab_labels=LABELS, pod_name="p", host_ip="10.9.1.11")
    ref = node.pod["spec"]["containers"][1]["env"][0]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "p-absent", "key": "k", "optional": True}
    assert "absent" not in {s.source for s in node.secrets}


def test_bad_input_is_named() -> None:
    with pytest.raises(ChartPodError, match=r"no DaemonSet named 'calico-node' .*DaemonSet/tortie-node"):
        node_pod(load_objects(RENDERED), "node1", lab_labels=LABELS, pod_name="p", daemonset="calico-node")
    with pytest.raises(ChartPodError, match=r"env POD_IP: fieldRef fieldPath 'status.podIP' has "
                                            r"no value in the lab"):
        node_pod(load_objects(RENDERED), "node1", lab_labels=LABELS, pod_name="p")  # no host_ip
    objs = load_objects(RENDERED)
    next(o for o in objs if o["kind"] == "Secret")["data"]["etcd-key"] = "not base64!"
    with pytest.raises(ChartPodError, match="Secret tortie-etcd-secrets: data.etcd-key is not base64"):
        node_pod(objs, "node1", lab_labels=LABELS, pod_name="p", host_ip="10.9.1.11")
    objs = load_objects(RENDERED)
    next(o for o in objs if o["kind"] == "Secret")["data"]["etcd-key"] = "//79"  # 0xff 0xfe 0xfd
    with pytest.raises(ChartPodError, match="data.etcd-key is not text"):
        node_pod(objs, "node1", lab_labels=LABELS, pod_name="p", host_ip="10.9.1.11")
