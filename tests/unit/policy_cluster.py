"""Builders for policy tests: namespaces as kns. profiles, pods as endpoints, policies.

Everything goes through policy.model's compile functions from documents shaped like
the YAML, so the tests exercise the same compile step the agent uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from policy.evaluate import Flow, PolicyState, Verdict, evaluate
from policy.model import (
    CompiledPolicy,
    Endpoint,
    NetworkSet,
    Profile,
    Tier,
    compile_endpoint,
    compile_network_set,
    compile_policy,
    compile_profile,
    compile_tier,
)

ALLOW_ALL = [{"action": "Allow"}]


def namespace_profile(name: str, labels: Mapping[str, str] | None = None) -> Profile:
    """Profile kns.<name>, as Calico's Kubernetes conversion makes it."""
    apply = {f"pcns.{k}": v for k, v in (labels or {}).items()}
    apply["pcns.projectcalico.org/name"] = name
    return compile_profile(f"kns.{name}", {"ingress": ALLOW_ALL, "egress": ALLOW_ALL,
                                           "labelsToApply": apply})


def np(name: str, namespace: str, **spec: Any) -> CompiledPolicy:
    return compile_policy("NetworkPolicy", name, namespace, spec)


def gnp(name: str, **spec: Any) -> CompiledPolicy:
    return compile_policy("GlobalNetworkPolicy", name, None, spec)


def tier(name: str, order: float | None = None, default_action: str = "Deny") -> Tier:
    return compile_tier(name, {"order": order, "defaultAction": default_action})


@dataclass
class Cluster:
    """Namespaces and pods; `state()` adds policies, tiers and network sets."""

    profiles: dict[str, Profile] = field(default_factory=dict)
    pods: dict[str, Endpoint] = field(default_factory=dict)
    hosts: dict[str, frozenset[Any]] = field(default_factory=dict)

    def namespace(self, name: str, **labels: str) -> None:
        self.profiles[f"kns.{name}"] = namespace_profile(name, labels)

    def pod(self, key: str, ip: str, labels: Mapping[str, str] | None = None, *,
            ports: Sequence[Mapping[str, Any]] = (), node: str = "node1",
            profiles: Sequence[str] | None = None, service_account: str | None = None) -> Endpoint:
        ns, _, name = key.partition("/")
        spec: dict[str, Any] = {
            "orchestrator": "k8s", "node": node, "ipNetworks": [ip], "ports": list(ports),
            "profiles": [f"kns.{ns}"] if profiles is None else list(profiles),
        }
        if service_account:
            spec["serviceAccountName"] = service_account
        endpoint = compile_endpoint(name, ns, labels, spec, self.profiles)
        self.pods[key] = endpoint
        return endpoint

    def network_set(self, name: str, nets: Iterable[str], labels: Mapping[str, str] | None = None,
                    namespace: str | None = None) -> NetworkSet:
        return compile_network_set(name, namespace, labels, {"nets": list(nets)}, self.profiles)

    def state(self, policies: Iterable[CompiledPolicy] = (), tiers: Iterable[Tier] = (),
              network_sets: Iterable[NetworkSet] = (), **kwargs: Any) -> PolicyState:
        return PolicyState(endpoints=tuple(self.pods.values()),
                           network_sets=tuple(network_sets), policies=tuple(policies),
                           tiers=tuple(tiers), profiles=tuple(self.profiles.values()),
                           hosts=dict(self.hosts), **kwargs)

    def ip(self, key: str) -> str:
        return str(self.pods[key].ips[0])

    def verdict(self, state: PolicyState, src: str, dst: str, protocol: str = "TCP",
                port: int | None = 80, **kwargs: int | None) -> Verdict:
        """A flow between pods (by key) or addresses."""
        return evaluate(state, Flow.of(self.ip(src) if src in self.pods else src,
                                       self.ip(dst) if dst in self.pods else dst,
                                       protocol, port, **kwargs))
