"""The chart's rendered objects -> what `podman kube play` runs as one lab node's pod.

Owns the translation from `helm template` output (a DaemonSet, ConfigMaps, Secrets) to
one node's Pod, its ConfigMaps and the podman secrets behind its Secrets. Pure: no
podman, no files; `lab.chart` runs the result.

The point is to run what the chart renders, so the pod spec is kept as rendered except
for these changes, each because podman 4.3 or the lab differs from a kubelet:

1. Kind: the DaemonSet's `spec.template` becomes a `v1` Pod (podman plays Pods and
   Deployments, not DaemonSets). Its name is the node's pod name (`<lab>-<node>`), its
   labels are the template's plus the lab's (`lab_labels`: lab.chart gives
   `tortie.lab=<lab>`), by which `tortie-lab down` finds it. The DaemonSet's own fields (selector,
   updateStrategy) have no Pod equivalent; the lab's rolling update does their job.
2. `fieldRef` env values are resolved, as the kubelet resolves them: `spec.nodeName` is
   the lab node's name, `metadata.name`/`metadata.namespace` the pod's,
   `spec.serviceAccountName` the template's, `status.hostIP`/`status.podIP`/
   `status.hostIPs`/`status.podIPs` the node's address (host network). podman 4.3 does not
   resolve fieldRefs; any other fieldPath is refused with an error naming it.
3. `imagePullPolicy` is `Never` on every container: the image is the locally built one
   and there is no registry to pull from.
4. ConfigMaps and Secrets are renamed `<pod name>-<name>` and every reference follows
   (configMapKeyRef, secretKeyRef, envFrom, configMap and secret volumes): podman keeps
   a configMap or secret volume as a named volume called after the object, and secrets
   by name, in one storage for all labs and nodes, so equal names would share contents
   between nodes.
5. A Secret becomes two podman secrets, because podman 4.3 reads them two ways:
   `secretKeyRef` env reads the podman secret as JSON `{key: base64(value)}`, while a
   secret volume reads YAML `{data: {key: value}}` and writes each value verbatim (it
   does not base64-decode; and a `Secret` document in the played YAML is stored as YAML,
   which secretKeyRef then cannot parse). So env references name `<pod>-<name>` (the
   first form) and secret volumes `<pod>-<name>-files` (the second, values decoded).
6. Secret volumes get `optional: false` when the chart left `optional` unset: podman
   4.3 dereferences it unchecked and panics (VolumeFromSecret, nil pointer).
7. `restartPolicy` is `OnFailure` (a DaemonSet's pods have `Always`): podman 4.3 gives
   the init containers the pod's restart policy too, so under `Always` install-cni
   restarts each time it succeeds, never counts as done, and `kube play` fails removing
   it ("cannot remove container ... as it is running"). The long-running containers
   still restart when they fail; they do not exit successfully on their own.
8. Pod annotations longer than 63 characters are dropped: podman 4.3 holds annotation
   values to the label limit and refuses the pod ("value length exceeds Kubernetetes
   max 63"). The chart's `checksum/config` (a sha256) is one; it exists to roll the
   pods when the ConfigMap changes, which the lab's rolling update does explicitly.

Kept as rendered and worth knowing: podman 4.3 ignores readinessProbe, and turns a
livenessProbe into a healthcheck it can only run on a systemd timer (none here), so
`lab.chart` runs the readiness probes' commands itself as a kubelet would; secret
volumes' defaultMode is not applied (files are 0644). serviceAccountName, tolerations,
nodeSelector, priorityClassName and dnsPolicy mean nothing without a cluster and podman
ignores them.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

PULL_POLICY = "Never"
RESTART_POLICY = "OnFailure"
FILES_SUFFIX = "-files"
MAX_ANNOTATION = 63  # podman 4.3 refuses longer annotation values

Obj = dict[str, Any]


class ChartPodError(ValueError):
    """The rendered chart cannot become a node's pod; the message names the object and field."""


@dataclass(frozen=True)
class PodmanSecret:
    """One podman secret: `podman secret create --label tortie.lab=<lab> NAME -` < data."""

    name: str
    data: str
    source: str  # the chart's Secret it comes from


@dataclass(frozen=True)
class NodePod:
    """One node's pod as podman plays it: the Pod, its ConfigMaps, the secrets it needs."""

    pod: Obj
    config_maps: tuple[Obj, ...]
    secrets: tuple[PodmanSecret, ...]

    @property
    def name(self) -> str:
        return str(self.pod["metadata"]["name"])

    def kube_yaml(self) -> str:
        """The YAML stream for `podman kube play`: the ConfigMaps, then the Pod."""
        return yaml.safe_dump_all([*self.config_maps, self.pod], sort_keys=False)

    def container_names(self) -> list[str]:
        """Names of the pod's containers as podman names them (`<pod>-<container>`)."""
        spec = self.pod["spec"]
        return [f"{self.name}-{c['name']}" for c in spec.get("containers", ())]

    def volume_names(self) -> list[str]:
        """The named volumes podman makes for the pod's configMap and secret volumes."""
        names = []
        for vol in self.pod["spec"].get("volumes", ()):
            if "configMap" in vol:
                names.append(vol["configMap"]["name"])
            elif "secret" in vol:
                names.append(vol["secret"]["secretName"])
        return names


def load_objects(text: str) -> list[Obj]:
    """The objects of a multi-document YAML stream (`helm template` output), empty ones out."""
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and d]


def node_pod(objects: Iterable[Mapping[str, Any]], node: str, *, pod_name: str,
             lab_labels: Mapping[str, str], host_ip: str | None = None,
             daemonset: str = "tortie-node") -> NodePod:
    """Node `node`'s pod of DaemonSet `daemonset` among `objects` (see the module docstring)."""
    objs = [dict(o) for o in objects]
    ds = _find(objs, "DaemonSet", daemonset)
    template = ds.get("spec", {}).get("template")
    if not isinstance(template, dict) or not isinstance(template.get("spec"), dict):
        raise ChartPodError(f"DaemonSet {daemonset}: spec.template.spec is missing")
    meta = template.get("metadata") or {}
    namespace = str(ds.get("metadata", {}).get("namespace") or "default")
    spec = copy.deepcopy(template["spec"])
    config_maps = {o["metadata"]["name"]: o for o in objs if o.get("kind") == "ConfigMap"}
    secrets = {o["metadata"]["name"]: o for o in objs if o.get("kind") == "Secret"}
    fields = {
        "spec.nodeName": node, "metadata.name": pod_name, "metadata.namespace": namespace,
        "spec.serviceAccountName": str(spec.get("serviceAccountName") or "default"),
    }
    if host_ip:
        fields.update({k: host_ip for k in ("status.hostIP", "status.podIP",
                                           "status.hostIPs", "status.podIPs")})

    def renamed(name: str) -> str:
        return f"{pod_name}-{name}"

    used_maps: set[str] = set()
    env_secrets: set[str] = set()
    file_secrets: set[str] = set()
    for container in _containers(spec):
        where = f"container {container.get('name')}"
        container["imagePullPolicy"] = PULL_POLICY
        for env in container.get("env") or ():
            source = env.get("valueFrom")
            if not source:
                continue
            if "fieldRef" in source:
                path = source["fieldRef"].get("fieldPath", "")
                if path not in fields:
                    raise ChartPodError(
                        f"{where}: env {env.get('name')}: fieldRef fieldPath {path!r} has no "
                        f"value in the lab (known: {', '.join(sorted(fields))})")
                env.pop("valueFrom")
                env["value"] = fields[path]
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                _check_ref(config_maps, "ConfigMap", ref, where, env.get("name"))
                used_maps.add(ref["name"])
                ref["name"] = renamed(ref["name"])
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                _check_ref(secrets, "Secret", ref, where, env.get("name"))
                env_secrets.add(ref["name"])
                ref["name"] = renamed(ref["name"])
        for env_from in container.get("envFrom") or ():
            if "configMapRef" in env_from:
                ref = env_from["configMapRef"]
                _check_ref(config_maps, "ConfigMap", ref, where, "envFrom")
                used_maps.add(ref["name"])
                ref["name"] = renamed(ref["name"])
            if "secretRef" in env_from:
                ref = env_from["secretRef"]
                _check_ref(secrets, "Secret", ref, where, "envFrom")
                env_secrets.add(ref["name"])
                ref["name"] = renamed(ref["name"])
    for vol in spec.get("volumes") or ():
        where = f"volume {vol.get('name')}"
        if "configMap" in vol:
            ref = vol["configMap"]
            _check_ref(config_maps, "ConfigMap", ref, where, None)
            used_maps.add(ref["name"])
            ref["name"] = renamed(ref["name"])
        elif "secret" in vol:
            ref = vol["secret"]
            name = ref.get("secretName", "")
            _check_ref(secrets, "Secret", {"name": name, "optional": ref.get("optional")},
                       where, None)
            ref.setdefault("optional", False)
            file_secrets.add(name)
            ref["secretName"] = renamed(name) + FILES_SUFFIX

    spec["restartPolicy"] = RESTART_POLICY
    labels = {**(meta.get("labels") or {}), **lab_labels}
    pod_meta: Obj = {"name": pod_name, "namespace": namespace, "labels": labels}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if len(str(v)) <= MAX_ANNOTATION}
    if annotations:
        pod_meta["annotations"] = annotations
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": spec}
    maps = tuple(_renamed_object(config_maps[n], renamed(n)) for n in sorted(used_maps)
                 if n in config_maps)
    made = [PodmanSecret(renamed(n), env_secret_data(secrets[n]), n)
            for n in sorted(env_secrets) if n in secrets]
    made += [PodmanSecret(renamed(n) + FILES_SUFFIX, volume_secret_data(secrets[n]), n)
             for n in sorted(file_secrets) if n in secrets]
    return NodePod(pod, maps, tuple(made))


def secret_values(secret: Mapping[str, Any]) -> dict[str, bytes]:
    """A Secret's keys and decoded values (`data` base64, `stringData` plain; the latter
    wins, as the API server merges it)."""
    name = secret.get("metadata", {}).get("name")
    values = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            values[key] = base64.b64decode(str(value), validate=True)
        except binascii.Error as e:
            raise ChartPodError(f"Secret {name}: data.{key} is not base64: {e}") from e
    for key, value in (secret.get("stringData") or {}).items():
        values[key] = str(value).encode()
    return values


def env_secret_data(secret: Mapping[str, Any]) -> str:
    """What podman 4.3's secretKeyRef reads: JSON `{key: base64(value)}`."""
    return json.dumps({k: base64.b64encode(v).decode()
                       for k, v in sorted(secret_values(secret).items())})


def volume_secret_data(secret: Mapping[str, Any]) -> str:
    """What podman 4.3's secret volume reads: `{"data": {key: value}}`, values as text
    (it writes them verbatim), so values must be UTF-8."""
    name = secret.get("metadata", {}).get("name")
    data = {}
    for key, value in sorted(secret_values(secret).items()):
        try:
            data[key] = value.decode()
        except UnicodeDecodeError as e:
            raise ChartPodError(f"Secret {name}: data.{key} is not text; podman 4.3 secret "
                                "volumes carry text only") from e
    return json.dumps({"data": data})


def _find(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objs if o.get("kind") == kind
             and (o.get("metadata") or {}).get("name") == name]
    if not found:
        have = ", ".join(sorted(f"{o.get('kind')}/{(o.get('metadata') or {}).get('name')}"
                                for o in objs)) or "nothing"
        raise ChartPodError(f"no {kind} named {name!r} in the rendered chart (it has {have})")
    return found[0]


def _containers(spec: Obj) -> Iterator[Obj]:
    yield from spec.get("initContainers") or ()
    yield from spec.get("containers") or ()


def _check_ref(known: Mapping[str, Obj], kind: str, ref: Mapping[str, Any], where: str,
               env: str | None) -> None:
    name = ref.get("name", "")
    if name in known or ref.get("optional"):
        return
    what = f"{where}: env {env}" if env else where
    raise ChartPodError(f"{what}: {kind} {name!r} is neither rendered by the chart nor "
                        "given with the extra objects, and not optional")


def _renamed_object(obj: Mapping[str, Any], name: str) -> Obj:
    out = copy.deepcopy(dict(obj))
    out["metadata"] = {**out.get("metadata", {}), "name": name}
    return out
