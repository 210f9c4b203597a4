"""Who a CNI invocation is for, and the names that follow from it. Pure.

Owns the identity rules (Calico's VethNameForWorkload and cni-plugin's GetHandleID):

  * workload: Kubernetes (`k8s`) when CNI_ARGS names the pod
    (K8S_POD_NAMESPACE, K8S_POD_NAME); the namespace defaults to `default`
    when only the pod name is given (podman passes just K8S_POD_NAME, the
    container name). Without a usable pod name the workload is the container
    itself (orchestrator `cni`, as Calico names non-Kubernetes workloads).
  * host veth: `cali` + the first 11 hex digits of sha1("<namespace>.<pod>")
    (Calico's VethNameForWorkload), or `cali` + the container ID's first 11
    characters for a `cni` workload. An interface other than eth0 (a second
    network) hashes "<namespace>.<pod>.<ifname>" so two interfaces of one pod
    never share a host name (Calico supports one per pod).
  * WorkloadEndpoint: `<node>-k8s-<pod>-<ifname>` / `<node>-cni-<containerID>-<ifname>`,
    every '-' inside a part doubled (libcalico-go names), in the pod's namespace.
  * IPAM handle: `<network name>.<CNI_CONTAINERID>` (Calico's GetHandleID).
  * container-side MAC: derived from the container ID and interface name, so a
    retried ADD returns the same result (locally administered, unicast).

Invalid names from the runtime are refused with InvalidEnvironment, naming the
variable, except an unusable pod name without a namespace (podman's container
names may hold '_'), which falls back to the `cni` identity.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from policy.pod_endpoint import pod_endpoint_labels, pod_endpoint_profiles

from .config import NO_POD_ARGS, PodArgs
from .errors import InvalidConfig, InvalidEnvironment

HOST_MAC = "ee:ee:ee:ee:ee:ee"
GATEWAY = "169.254.1.1"
DEFAULT_NAMESPACE = "default"
VETH_PREFIX = "cali"

try:
    # CPython's own SHA-1: hashlib would load OpenSSL's libcrypto first (~3 ms of every
    # plugin start); the digests are the same.
    from _sha1 import sha1
except ImportError:  # pragma: no cover - a Python built without it
    from hashlib import sha1

_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def is_subdomain(name: str) -> bool:
    return len(name) <= 253 and bool(_SUBDOMAIN_RE.match(name))


def is_label(name: str) -> bool:
    return len(name) <= 63 and bool(_LABEL_RE.match(name))


def escape(part: str) -> str:
    return part.replace("-", "--")


class Workload(NamedTuple):
    network: str          # the network configuration's name
    node: str
    orchestrator: str     # "k8s" or "cni"
    namespace: str
    pod: str | None       # k8s only
    cni_container_id: str  # CNI_CONTAINERID: the handle's key
    container_id: str     # K8S_POD_INFRA_CONTAINER_ID, else CNI_CONTAINERID
    endpoint: str         # CNI_IFNAME

    @property
    def handle_id(self) -> str:
        return f"{self.network}.{self.cni_container_id}"

    @property
    def veth_name(self) -> str:
        if self.pod is None:
            return VETH_PREFIX + self.cni_container_id[:11]
        key = f"{self.namespace}.{self.pod}"
        if self.endpoint != "eth0":
            key += f".{self.endpoint}"
        return VETH_PREFIX + sha1(key.encode()).hexdigest()[:11]

    @property
    def endpoint_name(self) -> str:
        middle = self.pod if self.pod is not None else self.container_id
        return f"{escape(self.node)}-{self.orchestrator}-{escape(middle)}-{escape(self.endpoint)}"

    @property
    def container_mac(self) -> str:
        digest = bytearray(sha1(
            f"{self.cni_container_id}/{self.endpoint}".encode()).digest()[:6])
        digest[0] = (digest[0] & 0xFE) | 0x02  # unicast, locally administered
        return ":".join(f"{b:02x}" for b in digest)

    @property
    def ipam_attributes(self) -> dict[str, str]:
        """The allocation's attributes (Calico's CNI: node, pod, namespace, timestamp)."""
        attrs = {"node": self.node, "namespace": self.namespace}
        if self.pod is not None:
            attrs["pod"] = self.pod
        else:
            attrs["container"] = self.container_id
        return attrs

    def describe(self) -> str:
        who = f"pod {self.namespace}/{self.pod}" if self.pod else f"container {self.container_id}"
        return f"{who} ({self.endpoint}, container {self.cni_container_id[:12]})"


def identify(network: str, node: str, container_id: str, ifname: str,
             cni_args: Mapping[str, str]) -> Workload:
    """The workload of one invocation, with the fall-backs in the module docstring."""
    if not is_subdomain(node):
        raise InvalidConfig(
            f"node name {node!r} is not valid: node names are lower-case letters, digits, '-' "
            "and '.' (set nodename in the network configuration)")
    namespace = cni_args.get("K8S_POD_NAMESPACE", "")
    pod = cni_args.get("K8S_POD_NAME", "")
    if namespace and not is_label(namespace):
        raise InvalidEnvironment(
            f"K8S_POD_NAMESPACE={namespace!r} in CNI_ARGS is not a valid namespace name "
            "(at most 63 lower-case letters, digits and '-')")
    if pod and not is_subdomain(pod):
        if namespace:
            raise InvalidEnvironment(
                f"K8S_POD_NAME={pod!r} in CNI_ARGS is not a valid pod name (lower-case letters, "
                "digits, '-' and '.')")
        pod = ""  # a runtime's container name (podman): identify the container instead
    infra = cni_args.get("K8S_POD_INFRA_CONTAINER_ID") or container_id
    workload = Workload(
        network=network, node=node, orchestrator="k8s" if pod else "cni",
        namespace=namespace or DEFAULT_NAMESPACE, pod=pod or None,
        cni_container_id=container_id, container_id=infra, endpoint=ifname)
    name = workload.endpoint_name
    if not is_subdomain(name):
        culprit = (f"CNI_IFNAME={ifname!r}" if not is_subdomain(escape(ifname))
                   else f"CNI_CONTAINERID={container_id!r}")
        raise InvalidEnvironment(
            f"cannot name the WorkloadEndpoint {name!r} (lower-case letters, digits, '-' and "
            f"'.', at most 253 characters): {culprit} does not fit")
    return workload


def endpoint_document(w: Workload, ip_networks: list[str], pod: PodArgs = NO_POD_ARGS,
                      ) -> dict[str, Any]:
    """The WorkloadEndpoint the CNI writes for `w`, with Calico's labels, profiles and ports.

    As libcalico-go converts a pod (conversion/workload_endpoint_default.go) and
    stores an endpoint (clientv3/workloadendpoint.go updateLabelsForStorage):
    the pod's labels, then `projectcalico.org/namespace` and
    `projectcalico.org/orchestrator`, which no pod label can override, and
    `projectcalico.org/serviceaccount` when the account is known and its name
    is under 63 characters (a label value's limit). A Kubernetes pod gets the
    profiles `kns.<namespace>` and, with a service account, `ksa.<namespace>.<sa>`.
    """
    account = pod.service_account if w.pod is not None else None
    labels = pod_endpoint_labels(w.namespace, pod.labels, account, w.orchestrator)
    spec: dict[str, Any] = {
        "orchestrator": w.orchestrator,
        "node": w.node,
        "containerID": w.container_id,
        "endpoint": w.endpoint,
        "interfaceName": w.veth_name,
        "mac": w.container_mac,
        "ipNetworks": list(ip_networks),
    }
    if w.pod is not None:
        spec["pod"] = w.pod
        spec["profiles"] = pod_endpoint_profiles(w.namespace, account)
        if account:
            spec["serviceAccountName"] = account
    else:
        spec["workload"] = w.container_id
    if pod.ports:
        spec["ports"] = [{"name": p.name, "protocol": p.protocol, "port": p.port}
                         for p in pod.ports]
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "WorkloadEndpoint",
        "metadata": {"name": w.endpoint_name, "namespace": w.namespace, "labels": labels},
        "spec": spec,
    }
