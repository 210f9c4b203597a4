"""What a pod's WorkloadEndpoint carries for policy: its labels and its profiles.

Owns the one rule, shared by the CNI plugin (which writes the endpoint at ADD)
and tortie-kube-controllers (which keeps it in step with the pod afterwards), as
libcalico-go converts a pod (conversion/workload_endpoint_default.go) and stores
an endpoint (clientv3/workloadendpoint.go updateLabelsForStorage).

Imports nothing beyond the standard library's typing: the Python-launched CNI
plugin imports it on every invocation (policy.k8s costs ~20 ms to import).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

# The labels every Kubernetes WorkloadEndpoint carries besides its pod's (libcalico-go's
# apiv3 label names); no pod label can override them.
NAMESPACE_ENDPOINT_LABEL: Final = "projectcalico.org/namespace"
ORCHESTRATOR_LABEL: Final = "projectcalico.org/orchestrator"
SERVICE_ACCOUNT_ENDPOINT_LABEL: Final = "projectcalico.org/serviceaccount"
K8S_ORCHESTRATOR: Final = "k8s"
NAMESPACE_PROFILE_PREFIX: Final = "kns."
SERVICE_ACCOUNT_PROFILE_PREFIX: Final = "ksa."


def pod_endpoint_labels(
    namespace: str, pod_labels: Mapping[str, str], service_account: str | None,
    orchestrator: str = K8S_ORCHESTRATOR,
) -> dict[str, str]:
    """The labels of a pod's WorkloadEndpoint.

    The pod's labels, then `projectcalico.org/namespace` and `.../orchestrator`,
    and `.../serviceaccount` when the account's name fits a label value (under 63
    characters, as libcalico-go's updateLabelsForStorage checks).
    """
    labels = {**pod_labels, NAMESPACE_ENDPOINT_LABEL: namespace, ORCHESTRATOR_LABEL: orchestrator}
    if service_account and len(service_account) < 63:
        labels[SERVICE_ACCOUNT_ENDPOINT_LABEL] = service_account
    return labels


def pod_endpoint_profiles(namespace: str, service_account: str | None) -> list[str]:
    """`kns.<namespace>` and, with a service account, `ksa.<namespace>.<sa>`."""
    profiles = [NAMESPACE_PROFILE_PREFIX + namespace]
    if service_account:
        profiles.append(f"{SERVICE_ACCOUNT_PROFILE_PREFIX}{namespace}.{service_account}")
    return profiles
