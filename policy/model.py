"""Compiled policy state: what evaluation needs, in hashable frozen forms.

Owns the one compile step from datastore resources (`compile_state`; each kind's
`compile_*` takes its `spec` as a plain mapping, the shape `model_dump()` and the YAML
give) to a PolicyState of Endpoint, NetworkSet, Tier, CompiledPolicy, Profile and
CompiledRule; evaluation and rendering never see pydantic objects. Invariants: every compiled object is immutable and hashable; selectors are
already scoped (policy.scope) and parsed once; nets are masked networks; protocols are
IANA numbers; a policy's `types` are Calico's defaulted ones; an endpoint's labels are
the ones Calico matches selectors against (its own, then its profiles' labelsToApply
for keys it lacks, in profile order: Felix's label inheritance, projectcalico/calico
`felix/labelindex/`).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, NoReturn

from datastore.resources.base import Resource
from datastore.resources.policy import DEFAULT_TIER, DEFAULT_TIER_ORDER, parse_port
from datastore.selector import Selector, parse

from . import scope

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Direction = Literal["ingress", "egress"]
Action = Literal["Allow", "Deny", "Pass", "Log"]
PolicyKind = Literal["NetworkPolicy", "GlobalNetworkPolicy"]
EndpointToHostAction = Literal["Drop", "Return", "Accept"]

# Calico's protocol names (numorstring.Protocol), case-insensitive, and their numbers.
PROTOCOL_NUMBERS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "sctp": 132, "udplite": 136}
PROTOCOL_NAMES = {number: name for name, number in PROTOCOL_NUMBERS.items()}

__all__ = [
    "DEFAULT_TIER",
    "DEFAULT_TIER_ORDER",
    "PROTOCOL_NUMBERS",
    "CompiledPolicy",
    "CompiledRule",
    "Endpoint",
    "EntityMatch",
    "Labels",
    "NamedPort",
    "NetworkSet",
    "PolicyState",
    "Profile",
    "Tier",
    "compile_endpoint",
    "compile_network_set",
    "compile_policy",
    "compile_profile",
    "compile_rule",
    "compile_state",
    "compile_tier",
    "effective_labels",
    "protocol_number",
]


class Labels(dict[str, str]):
    """A label mapping that is hashable and never changed after construction.

    A dict subclass (not a Mapping wrapper) because selector evaluation calls
    `labels.get` on every endpoint for every selector: the C-level dict lookup is the
    fast path (members() over 100 000 endpoints).
    """

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def _frozen(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("Labels are immutable")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _frozen
    __ior__ = _frozen


def protocol_number(value: str | int) -> int:
    """'TCP' / 'sctp' / 6 -> 6. Raises ValueError for an unknown name or number."""
    if isinstance(value, int):
        number = value
    elif value.isdigit():
        number = int(value)
    else:
        try:
            return PROTOCOL_NUMBERS[value.lower()]
        except KeyError:
            raise ValueError(f"unknown protocol {value!r}") from None
    if not 1 <= number <= 255:
        raise ValueError(f"protocol number {number} is not between 1 and 255")
    return number


def _network(cidr: str) -> IPNetwork:
    # Calico masks a CIDR with host bits set (NormalizeIPNets); a bare IP is its /32.
    return ipaddress.ip_network(cidr, strict=False)


@dataclass(frozen=True, slots=True)
class NamedPort:
    name: str
    protocol: int
    port: int


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A workload endpoint as policy sees it. `key` is `<namespace>/<name>`."""

    key: str
    namespace: str | None
    labels: Labels
    ips: tuple[IPAddress, ...]
    profiles: tuple[str, ...] = ()
    ports: tuple[NamedPort, ...] = ()
    node: str | None = None


@dataclass(frozen=True, slots=True)
class NetworkSet:
    """A NetworkSet (`key` `<namespace>/<name>`) or GlobalNetworkSet (`key` `<name>`)."""

    key: str
    namespace: str | None
    labels: Labels
    nets: tuple[IPNetwork, ...]


@dataclass(frozen=True, slots=True)
class Tier:
    """A tier. `valid` is False for a tier policies name but no Tier resource defines:
    Felix sorts those after every real tier (felix/calc/policy_sorter.go TierLess)."""

    name: str
    order: float | None
    default_action: Literal["Deny", "Pass"] = "Deny"
    valid: bool = True

    @property
    def sort_key(self) -> tuple[bool, bool, float, str]:
        return (not self.valid, self.order is None, self.order or 0.0, self.name)


@dataclass(frozen=True, slots=True)
class EntityMatch:
    """One side (source or destination) of a rule, selectors already scoped."""

    nets: tuple[IPNetwork, ...] = ()
    not_nets: tuple[IPNetwork, ...] = ()
    selector: Selector | None = None
    not_selector: Selector | None = None
    ports: tuple[tuple[int, int], ...] = ()
    named_ports: tuple[str, ...] = ()
    not_ports: tuple[tuple[int, int], ...] = ()
    not_named_ports: tuple[str, ...] = ()
    # A `services` match needs Kubernetes Services, which tortie does not model: such a
    # side matches nothing, so an Allow with it never opens more than was written.
    services: bool = False


@dataclass(frozen=True, slots=True)
class CompiledRule:
    index: int
    action: Action
    text: str
    ip_version: int | None = None
    protocol: int | None = None
    not_protocol: int | None = None
    icmp: tuple[int, int | None] | None = None
    not_icmp: tuple[int, int | None] | None = None
    source: EntityMatch = field(default_factory=EntityMatch)
    destination: EntityMatch = field(default_factory=EntityMatch)


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    kind: PolicyKind
    name: str
    namespace: str | None
    tier: str
    order: float | None
    selector: Selector
    ingress: bool
    egress: bool
    ingress_rules: tuple[CompiledRule, ...] = ()
    egress_rules: tuple[CompiledRule, ...] = ()
    # doNotTrack and preDNAT policies go to host endpoints' raw/mangle chains only; a
    # workload endpoint's chains hold the others (felix/calc/event_sequencer.go
    # tierInfoToProtoTierInfo).
    applies_to_workloads: bool = True

    @property
    def label(self) -> str:
        """'NetworkPolicy ns/name' or 'GlobalNetworkPolicy name', as Felix comments them."""
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"

    @property
    def sort_key(self) -> tuple[float, str]:
        # felix/calc/policy_sorter.go PolKVLess: order (nil = +Inf), then name/namespace/kind.
        order = math.inf if self.order is None else self.order
        return (order, f"{self.name}/{self.namespace or ''}/{self.kind}")

    def applies_in(self, direction: Direction) -> bool:
        return self.ingress if direction == "ingress" else self.egress

    def rules(self, direction: Direction) -> tuple[CompiledRule, ...]:
        return self.ingress_rules if direction == "ingress" else self.egress_rules


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    ingress_rules: tuple[CompiledRule, ...] = ()
    egress_rules: tuple[CompiledRule, ...] = ()
    labels_to_apply: Labels = field(default_factory=Labels)

    def rules(self, direction: Direction) -> tuple[CompiledRule, ...]:
        return self.ingress_rules if direction == "ingress" else self.egress_rules


@dataclass(frozen=True)
class PolicyState:
    """Everything evaluation reads: the cluster's endpoints, network sets, policies, tiers
    and profiles, and each node's own addresses (`hosts`: node name -> addresses,
    tunnel addresses included) for the host rules. Treated as immutable."""

    endpoints: tuple[Endpoint, ...] = ()
    network_sets: tuple[NetworkSet, ...] = ()
    policies: tuple[CompiledPolicy, ...] = ()
    tiers: tuple[Tier, ...] = ()
    profiles: tuple[Profile, ...] = ()
    hosts: Mapping[str, frozenset[IPAddress]] = field(default_factory=dict)
    endpoint_to_host_action: EndpointToHostAction = "Accept"

    @cached_property
    def endpoints_by_ip(self) -> dict[IPAddress, tuple[Endpoint, ...]]:
        index: dict[IPAddress, list[Endpoint]] = {}
        for endpoint in self.endpoints:
            for ip in endpoint.ips:
                index.setdefault(ip, []).append(endpoint)
        return {ip: tuple(eps) for ip, eps in index.items()}

    @cached_property
    def node_by_ip(self) -> dict[IPAddress, str]:
        return {ip: node for node, ips in self.hosts.items() for ip in ips}

    @cached_property
    def profiles_by_name(self) -> dict[str, Profile]:
        return {profile.name: profile for profile in self.profiles}

    @cached_property
    def tiers_by_name(self) -> dict[str, Tier]:
        tiers = {tier.name: tier for tier in self.tiers}
        # The default tier exists whether or not a Tier resource says so.
        tiers.setdefault(DEFAULT_TIER, Tier(DEFAULT_TIER, DEFAULT_TIER_ORDER))
        return tiers

    def tier(self, name: str) -> Tier:
        """The named tier; one no resource defines sorts last and ends in Deny."""
        return self.tiers_by_name.get(name) or Tier(name, None, "Deny", valid=False)

    def ip_matches(self, selector: Selector, ip: IPAddress) -> bool:
        """Whether `ip` is a member of `selector`'s ipset."""
        for endpoint in self.endpoints_by_ip.get(ip, ()):
            if selector.evaluate(endpoint.labels):
                return True
        for network_set in self.network_sets:
            if any(ip in net for net in network_set.nets) and selector.evaluate(
                    network_set.labels):
                return True
        return False


# --- compile ---------------------------------------------------------------------------


def _port_ranges(values: Iterable[int | str]) -> tuple[tuple[tuple[int, int], ...], tuple[str, ...]]:
    """Rule ports -> (numeric ranges, named ports)."""
    ranges: list[tuple[int, int]] = []
    names: list[str] = []
    for value in values:
        port = parse_port(value)
        if isinstance(port, str):
            names.append(port)
        else:
            ranges.append((port.first, port.last))
    return tuple(ranges), tuple(names)


def _entity(doc: Mapping[str, Any] | None, policy_namespace: str | None) -> EntityMatch:
    if not doc:
        return EntityMatch()
    accounts: Mapping[str, Any] = doc.get("serviceAccounts") or {}
    not_selector = doc.get("notSelector") or ""
    ports, named = _port_ranges(doc.get("ports") or ())
    not_ports, not_named = _port_ranges(doc.get("notPorts") or ())
    return EntityMatch(
        nets=tuple(_network(n) for n in doc.get("nets") or ()),
        not_nets=tuple(_network(n) for n in doc.get("notNets") or ()),
        selector=scope.entity_selector(
            policy_namespace,
            selector=doc.get("selector") or "",
            not_selector=not_selector,
            namespace_selector=doc.get("namespaceSelector") or "",
            service_account_names=tuple(accounts.get("names") or ()),
            service_account_selector=accounts.get("selector") or "",
        ),
        not_selector=parse(not_selector) if not_selector else None,
        ports=ports,
        named_ports=named,
        not_ports=not_ports,
        not_named_ports=not_named,
        services=bool(doc.get("services")),
    )


def _icmp(doc: Mapping[str, Any] | None) -> tuple[int, int | None] | None:
    if not doc or doc.get("type") is None:
        return None
    code = doc.get("code")
    return (int(doc["type"]), None if code is None else int(code))


def _text(doc: Mapping[str, Any]) -> str:
    """The rule as written, on one line: `Allow protocol=TCP source.selector="..."`."""
    parts = [str(doc.get("action", ""))]
    for key in ("ipVersion", "protocol", "notProtocol", "icmp", "notICMP"):
        value = doc.get(key)
        if value not in (None, "", {}):
            parts.append(f"{key}={_flat(value)}")
    for side in ("source", "destination"):
        for key, value in (doc.get(side) or {}).items():
            if value not in (None, "", [], {}):
                parts.append(f"{side}.{key}={_flat(value)}")
    return " ".join(parts)


def _flat(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_flat(v)}" for k, v in value.items() if v is not None) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_flat(v) for v in value) + "]"
    if isinstance(value, str) and (" " in value or not value):
        return f'"{value}"'
    return str(value)


def compile_rule(index: int, doc: Mapping[str, Any], policy_namespace: str | None) -> CompiledRule:
    """One rule (`action`, `protocol`, `source`, ...) of a policy or profile."""
    protocol, not_protocol = doc.get("protocol"), doc.get("notProtocol")
    ip_version = doc.get("ipVersion")
    return CompiledRule(
        index=index,
        action=doc["action"],
        text=_text(doc),
        ip_version=None if ip_version is None else int(ip_version),
        protocol=None if protocol is None else protocol_number(protocol),
        not_protocol=None if not_protocol is None else protocol_number(not_protocol),
        icmp=_icmp(doc.get("icmp")),
        not_icmp=_icmp(doc.get("notICMP")),
        source=_entity(doc.get("source"), policy_namespace),
        destination=_entity(doc.get("destination"), policy_namespace),
    )


def _rules(docs: Sequence[Mapping[str, Any]] | None, namespace: str | None) -> tuple[CompiledRule, ...]:
    return tuple(compile_rule(i, doc, namespace) for i, doc in enumerate(docs or ()))


def _types(spec: Mapping[str, Any]) -> tuple[bool, bool]:
    """(applies to ingress, applies to egress), with Calico's defaulting for a missing
    `types` (api/pkg/defaults: egress rules only -> [Egress], else Ingress, both when
    both kinds of rules are present)."""
    types = [str(t).lower() for t in spec.get("types") or ()]
    if not types:
        has_ingress, has_egress = bool(spec.get("ingress")), bool(spec.get("egress"))
        return (has_ingress or not has_egress, has_egress)
    return ("ingress" in types, "egress" in types)


def compile_policy(kind: PolicyKind, name: str, namespace: str | None,
                   spec: Mapping[str, Any]) -> CompiledPolicy:
    """A NetworkPolicy (namespace set) or GlobalNetworkPolicy (namespace None) spec."""
    if kind == "GlobalNetworkPolicy":
        namespace = None
    ingress, egress = _types(spec)
    order = spec.get("order")
    return CompiledPolicy(
        kind=kind,
        name=name,
        namespace=namespace,
        tier=spec.get("tier") or DEFAULT_TIER,
        order=None if order is None else float(order),
        selector=scope.policy_selector(
            spec.get("selector") or "",
            namespace,
            service_account_selector=spec.get("serviceAccountSelector") or "",
            namespace_selector=spec.get("namespaceSelector") or "",
        ),
        ingress=ingress,
        egress=egress,
        ingress_rules=_rules(spec.get("ingress"), namespace),
        egress_rules=_rules(spec.get("egress"), namespace),
        applies_to_workloads=not (spec.get("doNotTrack") or spec.get("preDNAT")),
    )


def compile_tier(name: str, spec: Mapping[str, Any]) -> Tier:
    # Since Calico v3.32 a tier without an order sorts with the default tier
    # (libcalico-go DefaultTierFields), as datastore.resources.policy resolves it.
    order = spec.get("order")
    if order is None:
        order = DEFAULT_TIER_ORDER
    action = spec.get("defaultAction") or "Deny"
    return Tier(name, float(order), "Pass" if action == "Pass" else "Deny")


def compile_profile(name: str, spec: Mapping[str, Any]) -> Profile:
    # Profile rules are never namespace-scoped: Calico converts them with ns "".
    return Profile(
        name=name,
        ingress_rules=_rules(spec.get("ingress"), None),
        egress_rules=_rules(spec.get("egress"), None),
        labels_to_apply=Labels(spec.get("labelsToApply") or {}),
    )


def effective_labels(own: Mapping[str, str], profile_names: Iterable[str],
                     profiles: Mapping[str, Profile]) -> Labels:
    """Own labels first; each profile's labelsToApply fills only keys still missing."""
    merged = dict(own)
    for name in profile_names:
        profile = profiles.get(name)
        if profile is not None:
            for key, value in profile.labels_to_apply.items():
                merged.setdefault(key, value)
    return Labels(merged)


def compile_endpoint(name: str, namespace: str, labels: Mapping[str, str] | None,
                     spec: Mapping[str, Any], profiles: Mapping[str, Profile]) -> Endpoint:
    """A WorkloadEndpoint, with the labels Felix sees: Calico stores the namespace and
    orchestrator labels over whatever the document says (clientv3 workloadendpoint.go
    updateLabelsForStorage), and its syncer drops own `pcns.`/`pcsa.` labels, so an
    endpoint cannot pretend to be in another namespace, and sets the serviceaccount
    label from the spec (workloadendpointprocessor.go)."""
    own = {k: v for k, v in (labels or {}).items()
           if not k.startswith((scope.NAMESPACE_LABEL_PREFIX, scope.SERVICE_ACCOUNT_LABEL_PREFIX))}
    own[scope.NAMESPACE_LABEL] = namespace
    own[scope.ORCHESTRATOR_LABEL] = spec.get("orchestrator") or ""
    if spec.get("serviceAccountName"):
        own[scope.SERVICE_ACCOUNT_LABEL] = spec["serviceAccountName"]
    profile_names = tuple(spec.get("profiles") or ())
    return Endpoint(
        key=f"{namespace}/{name}",
        namespace=namespace,
        labels=effective_labels(own, profile_names, profiles),
        ips=tuple(_network(n).network_address for n in spec.get("ipNetworks") or ()),
        profiles=profile_names,
        ports=tuple(
            NamedPort(p["name"], protocol_number(p["protocol"]), int(p["port"]))
            for p in spec.get("ports") or ()
        ),
        node=spec.get("node"),
    )


def compile_network_set(name: str, namespace: str | None, labels: Mapping[str, str] | None,
                        spec: Mapping[str, Any], profiles: Mapping[str, Profile]) -> NetworkSet:
    """A NetworkSet (namespace set) or GlobalNetworkSet. A namespaced set carries the
    namespace label and inherits its namespace profile `kns.<ns>`'s labels, as Calico's
    networksetprocessor.go gives it."""
    own = dict(labels or {})
    if namespace:
        own[scope.NAMESPACE_LABEL] = namespace
        merged = effective_labels(own, (f"kns.{namespace}",), profiles)
    else:
        merged = Labels(own)
    return NetworkSet(
        key=f"{namespace}/{name}" if namespace else name,
        namespace=namespace,
        labels=merged,
        nets=tuple(_network(n) for n in spec.get("nets") or ()),
    )



def compile_state(resources: Iterable[Resource],
                  hosts: Mapping[str, frozenset[IPAddress]] | None = None,
                  endpoint_to_host_action: EndpointToHostAction = "Accept") -> PolicyState:
    """The PolicyState of validated datastore resources (other kinds are ignored).

    Profiles compile first: endpoints and network sets inherit their labelsToApply.
    """
    resources = list(resources)
    by_kind: dict[str, list[Resource]] = {}
    for res in resources:
        by_kind.setdefault(res.kind_name, []).append(res)

    def specs(kind: str) -> list[tuple[Resource, dict[str, Any]]]:
        return [(res, res.spec.model_dump(exclude_none=True))  # type: ignore[attr-defined]
                for res in by_kind.get(kind, ())]

    profiles = {res.name: compile_profile(res.name, spec) for res, spec in specs("Profile")}
    policies = [compile_policy("NetworkPolicy", res.name, res.namespace, spec)
                for res, spec in specs("NetworkPolicy")]
    policies += [compile_policy("GlobalNetworkPolicy", res.name, None, spec)
                 for res, spec in specs("GlobalNetworkPolicy")]
    network_sets = [compile_network_set(res.name, res.namespace, res.metadata.labels, spec,
                                        profiles) for res, spec in specs("NetworkSet")]
    network_sets += [compile_network_set(res.name, None, res.metadata.labels, spec, profiles)
                     for res, spec in specs("GlobalNetworkSet")]
    return PolicyState(
        endpoints=tuple(compile_endpoint(res.name, res.namespace or "", res.metadata.labels,
                                         spec, profiles)
                        for res, spec in specs("WorkloadEndpoint")),
        network_sets=tuple(network_sets),
        policies=tuple(policies),
        tiers=tuple(compile_tier(res.name, spec) for res, spec in specs("Tier")),
        profiles=tuple(profiles.values()),
        hosts=dict(hosts or {}),
        endpoint_to_host_action=endpoint_to_host_action,
    )
