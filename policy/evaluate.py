"""Evaluation: selector members, which policies apply, the tier walk, rule matching, verdicts.

Owns Calico's semantics over the compiled state of policy.model, as Felix renders
them (projectcalico/calico `felix/rules/endpoints.go`, `felix/rules/policy.go`,
`felix/calc/policy_sorter.go`):

* per endpoint and direction, the tiers that hold at least one policy selecting the
  endpoint for that direction, by tier order (nil last, then name); within a tier,
  policies by order (nil = +Inf) then `name/namespace/kind`;
* in a policy the first matching rule decides: Allow accepts, Deny drops, Pass leaves
  the tier (its remaining policies and its end are skipped); Log rules log and go on;
* a tier in which nothing decided ends in a drop, unless its defaultAction is Pass;
* then the endpoint's profiles in order: the first Allow or Deny decides, a Pass ends
  that profile only; when none allows, the packet is dropped ("Drop if no profiles
  matched"), also for an endpoint with neither policies nor profiles;
* selectors match IP addresses, as the ipsets Felix builds from them do: an address
  matches when an endpoint with that address, or a network set holding it, has
  matching labels. An address that is neither is matched only by nets rules and
  negated matches (a `notSelector` matches it);
* a rule with nets of only the other IP family, or with a negated catch-all net, or
  for the other ipVersion, is not rendered for this family and so matches nothing.

A flow is allowed when the source's egress and the destination's ingress both allow it.
Only workload endpoints are policed: traffic from a non-endpoint address skips egress,
to a non-endpoint address skips ingress, from an endpoint's own host to it is not policed
(Felix returns `-o cali+` early in cali-OUTPUT), and from an endpoint to its own host
meets the configured DefaultEndpointToHostAction after its egress policy. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from datastore.selector import Selector

from .model import (
    CompiledPolicy,
    CompiledRule,
    Direction,
    Endpoint,
    EntityMatch,
    IPAddress,
    IPNetwork,
    NetworkSet,
    PolicyState,
    Tier,
    protocol_number,
)

Outcome = Literal["allow", "deny", "pass", "no-match"]
ICMP_PROTOCOLS = frozenset({1, 58})

__all__ = [
    "DirectionVerdict",
    "Flow",
    "PolicyState",
    "PolicyStep",
    "ProfileStep",
    "RuleHit",
    "TierStep",
    "Verdict",
    "applicable",
    "evaluate",
    "members",
    "named_port_members",
    "rule_matches",
    "tiers_for",
    "walk",
]


@dataclass(frozen=True, slots=True)
class Flow:
    """The first packet of a connection. Ports are None for protocols without them."""

    src: IPAddress
    dst: IPAddress
    protocol: int
    dst_port: int | None = None
    src_port: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None

    def __post_init__(self) -> None:
        if self.src.version != self.dst.version:
            raise ValueError(f"{self.src} and {self.dst} are of different IP versions")

    @classmethod
    def of(cls, src: str, dst: str, protocol: str | int = "TCP", dst_port: int | None = None,
           **kwargs: int | None) -> Flow:
        """Flow.of("10.0.0.1", "10.0.0.2", "TCP", 80)."""
        return cls(ipaddress.ip_address(src), ipaddress.ip_address(dst),
                   protocol_number(protocol), dst_port, **kwargs)

    @property
    def ip_version(self) -> int:
        return self.src.version


# --- what ipsets hold --------------------------------------------------------------------


def members(selector: Selector, endpoints: Iterable[Endpoint],
            network_sets: Iterable[NetworkSet] = ()) -> frozenset[str]:
    """What a selector's ipset holds, as `ipset save` writes members: the address of every
    matching endpoint and the nets of every matching network set, without members inside
    a wider member (Felix's memberDeduplicator); a single-address net is its address."""
    evaluate = selector.evaluate
    addresses: set[IPAddress] = set()
    for endpoint in endpoints:
        if endpoint.ips and evaluate(endpoint.labels):
            addresses.update(endpoint.ips)
    nets: set[IPNetwork] = set()
    for network_set in network_sets:
        if evaluate(network_set.labels):
            nets.update(network_set.nets)
    if nets:
        # Single-address nets join the addresses; the rest cover what lies inside them.
        addresses.update(n.network_address for n in nets if n.prefixlen == n.max_prefixlen)
        nets = {n for n in nets if n.prefixlen != n.max_prefixlen}
        covers = _Covers(nets)
        nets = {n for n in nets if not covers.covers(n.version, int(n.network_address),
                                                     n.prefixlen)}
        addresses = {a for a in addresses
                     if not covers.covers(a.version, int(a), a.max_prefixlen)}
    return frozenset([*map(str, addresses), *map(str, nets)])


class _Covers:
    """Whether some net of a set strictly contains a given prefix: one lookup per distinct
    prefix length in the set (usually a handful), not one per net."""

    def __init__(self, nets: Iterable[IPNetwork]) -> None:
        self.lengths = sorted({(n.version, n.prefixlen) for n in nets})
        self.keys = {(n.version, int(n.network_address), n.prefixlen) for n in nets}

    def covers(self, version: int, address: int, prefixlen: int) -> bool:
        bits = 32 if version == 4 else 128
        for net_version, length in self.lengths:
            if net_version == version and length < prefixlen:
                mask = ((1 << length) - 1) << (bits - length) if length else 0
                if (version, address & mask, length) in self.keys:
                    return True
        return False


def named_port_members(selector: Selector | None, port_name: str, protocol: int | None,
                       endpoints: Iterable[Endpoint]) -> frozenset[tuple[IPAddress, int, int]]:
    """What a named-port ipset holds: (ip, protocol, port) of each matching endpoint that
    declares `port_name` (for `protocol`, any protocol when None); the rule's positive
    selector filters it (felix/calc/rule_scanner.go)."""
    found: set[tuple[IPAddress, int, int]] = set()
    for endpoint in endpoints:
        for port in endpoint.ports:
            if port.name != port_name or (protocol is not None and port.protocol != protocol):
                continue
            if selector is None or selector.evaluate(endpoint.labels):
                found.update((ip, port.protocol, port.port) for ip in endpoint.ips)
    return frozenset(found)


# --- which policies apply ----------------------------------------------------------------


def applicable(policies: Iterable[CompiledPolicy], endpoint: Endpoint,
               direction: Direction) -> list[CompiledPolicy]:
    """The policies that select workload `endpoint` and govern `direction`, in the given
    order."""
    return [p for p in policies if p.applies_to_workloads and p.applies_in(direction)
            and p.selector.evaluate(endpoint.labels)]


def tiers_for(state: PolicyState, endpoint: Endpoint,
              direction: Direction) -> list[tuple[Tier, list[CompiledPolicy]]]:
    """The tiers an endpoint's chain for `direction` walks, each with its policies, in
    Felix's order. Tiers with no applicable policy are absent."""
    by_tier: dict[str, list[CompiledPolicy]] = {}
    for policy in applicable(state.policies, endpoint, direction):
        by_tier.setdefault(policy.tier, []).append(policy)
    walk_order = [(state.tier(name), sorted(ps, key=lambda p: p.sort_key))
                  for name, ps in by_tier.items()]
    walk_order.sort(key=lambda tier_policies: tier_policies[0].sort_key)
    return walk_order


# --- rule matching -----------------------------------------------------------------------


def _icmp_matches(icmp: tuple[int, int | None], flow: Flow) -> bool:
    icmp_type, icmp_code = icmp
    return (flow.protocol in ICMP_PROTOCOLS and flow.icmp_type == icmp_type
            and (icmp_code is None or flow.icmp_code == icmp_code))


def _in_ranges(port: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(first <= port <= last for first, last in ranges)


def _named_port_matches(names: tuple[str, ...], side: EntityMatch, ip: IPAddress, port: int,
                        rule: CompiledRule, flow: Flow, state: PolicyState) -> bool:
    for endpoint in state.endpoints_by_ip.get(ip, ()):
        if side.selector is not None and not side.selector.evaluate(endpoint.labels):
            continue
        for named in endpoint.ports:
            if (named.name in names and named.port == port and named.protocol == flow.protocol
                    and (rule.protocol is None or named.protocol == rule.protocol)):
                return True
    return False


def _side_matches(side: EntityMatch, ip: IPAddress, port: int | None, rule: CompiledRule,
                  flow: Flow, state: PolicyState) -> bool:
    if side.services:
        return False
    version = ip.version
    if side.nets:
        nets = [n for n in side.nets if n.version == version]
        # Only nets of the other family: the rule is not rendered for this one.
        if not nets or not any(ip in n for n in nets):
            return False
    for net in side.not_nets:
        # A negated catch-all makes Felix drop the rule ("logical contradiction").
        if net.version == version and (net.prefixlen == 0 or ip in net):
            return False
    if side.selector is not None and not state.ip_matches(side.selector, ip):
        return False
    if side.not_selector is not None and state.ip_matches(side.not_selector, ip):
        return False
    if side.ports or side.named_ports:
        if port is None:
            return False
        if not (_in_ranges(port, side.ports) or (side.named_ports and _named_port_matches(
                side.named_ports, side, ip, port, rule, flow, state))):
            return False
    if side.not_ports or side.not_named_ports:
        if port is None:
            return False
        if _in_ranges(port, side.not_ports) or (side.not_named_ports and _named_port_matches(
                side.not_named_ports, side, ip, port, rule, flow, state)):
            return False
    return True


def rule_matches(rule: CompiledRule, flow: Flow, state: PolicyState) -> bool:
    """Whether `rule`'s match criteria (not its action) select `flow`."""
    if rule.ip_version is not None and rule.ip_version != flow.ip_version:
        return False
    if rule.protocol is not None and rule.protocol != flow.protocol:
        return False
    if rule.not_protocol is not None and rule.not_protocol == flow.protocol:
        return False
    if rule.icmp is not None and not _icmp_matches(rule.icmp, flow):
        return False
    if rule.not_icmp is not None and (flow.protocol not in ICMP_PROTOCOLS
                                      or _icmp_matches(rule.not_icmp, flow)):
        return False
    return (_side_matches(rule.source, flow.src, flow.src_port, rule, flow, state)
            and _side_matches(rule.destination, flow.dst, flow.dst_port, rule, flow, state))


# --- the path ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleHit:
    index: int
    action: str
    text: str

    @classmethod
    def of(cls, rule: CompiledRule) -> RuleHit:
        return cls(rule.index, rule.action, rule.text)


@dataclass(frozen=True, slots=True)
class PolicyStep:
    """One policy the walk ran: its first deciding rule, or no-match; Log rules hit."""

    policy: str
    order: float | None
    outcome: Outcome
    rule: RuleHit | None = None
    logged: tuple[RuleHit, ...] = ()


@dataclass(frozen=True, slots=True)
class TierStep:
    """One tier walked. outcome "end-of-tier": nothing decided and default_action applied."""

    tier: str
    default_action: str
    policies: tuple[PolicyStep, ...]
    outcome: Literal["allow", "deny", "pass", "end-of-tier"]


@dataclass(frozen=True, slots=True)
class ProfileStep:
    profile: str
    outcome: Outcome | Literal["missing"]
    rule: RuleHit | None = None


@dataclass(frozen=True, slots=True)
class DirectionVerdict:
    """The source's egress or the destination's ingress. `endpoint` is None, and
    `policed` False, when that side is not a workload endpoint (or not policed)."""

    direction: Direction
    endpoint: str | None
    policed: bool
    allowed: bool
    reason: str
    tiers: tuple[TierStep, ...] = ()
    profiles: tuple[ProfileStep, ...] = ()


@dataclass(frozen=True, slots=True)
class Verdict:
    flow: Flow
    allowed: bool
    egress: DirectionVerdict
    ingress: DirectionVerdict

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data: addresses as strings, an infinite order as None."""
        return _jsonable(dataclasses.asdict(self))  # type: ignore[no-any-return]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(value)
    if isinstance(value, float) and math.isinf(value):
        return None
    return value


def _first_decision(rules: tuple[CompiledRule, ...], flow: Flow,
                    state: PolicyState) -> tuple[CompiledRule | None, tuple[RuleHit, ...]]:
    logged: list[RuleHit] = []
    for rule in rules:
        if rule_matches(rule, flow, state):
            if rule.action != "Log":
                return rule, tuple(logged)
            logged.append(RuleHit.of(rule))
    return None, tuple(logged)


_OUTCOME: dict[str, Outcome] = {"Allow": "allow", "Deny": "deny", "Pass": "pass"}


def walk(state: PolicyState, endpoint: Endpoint, direction: Direction,
         flow: Flow) -> DirectionVerdict:
    """The tier walk and then the profiles, for one endpoint and direction."""
    tiers: list[TierStep] = []
    for tier, policies in tiers_for(state, endpoint, direction):
        steps: list[PolicyStep] = []
        decided: CompiledRule | None = None
        for policy in policies:
            rule, logged = _first_decision(policy.rules(direction), flow, state)
            steps.append(PolicyStep(policy.label, policy.order,
                                    _OUTCOME[rule.action] if rule else "no-match",
                                    RuleHit.of(rule) if rule else None, logged))
            if rule is not None:
                decided = rule
                break
        if decided is None:
            tiers.append(TierStep(tier.name, tier.default_action, tuple(steps), "end-of-tier"))
            if tier.default_action == "Pass":
                continue
            return DirectionVerdict(
                direction, endpoint.key, True, False,
                f"end of tier {tier.name}: no policy allowed or passed it (defaultAction Deny)",
                tuple(tiers))
        tiers.append(TierStep(tier.name, tier.default_action, tuple(steps),
                              _OUTCOME[decided.action]))  # type: ignore[arg-type]
        if decided.action != "Pass":
            where = f"{steps[-1].policy} rule {decided.index} ({decided.text}) in tier {tier.name}"
            return DirectionVerdict(direction, endpoint.key, True, decided.action == "Allow",
                                    f"{decided.action} by {where}", tuple(tiers))
    return _profiles(state, endpoint, direction, flow, tuple(tiers))


def _profiles(state: PolicyState, endpoint: Endpoint, direction: Direction, flow: Flow,
              tiers: tuple[TierStep, ...]) -> DirectionVerdict:
    steps: list[ProfileStep] = []
    for name in endpoint.profiles:
        profile = state.profiles_by_name.get(name)
        if profile is None:
            steps.append(ProfileStep(name, "missing"))
            continue
        rule, _ = _first_decision(profile.rules(direction), flow, state)
        steps.append(ProfileStep(name, _OUTCOME[rule.action] if rule else "no-match",
                                 RuleHit.of(rule) if rule else None))
        # A Pass in a profile only ends that profile: the endpoint chain goes on.
        if rule is not None and rule.action != "Pass":
            return DirectionVerdict(
                direction, endpoint.key, True, rule.action == "Allow",
                f"{rule.action} by profile {name} rule {rule.index} ({rule.text})",
                tiers, tuple(steps))
    if not tiers and not endpoint.profiles:
        reason = "no policy and no profile: denied"
    else:
        reason = "no profile allowed it: denied (Drop if no profiles matched)"
    return DirectionVerdict(direction, endpoint.key, True, False, reason, tiers, tuple(steps))


def _endpoint_at(state: PolicyState, ip: IPAddress) -> Endpoint | None:
    found = state.endpoints_by_ip.get(ip, ())
    return found[0] if found else None


def evaluate(state: PolicyState, flow: Flow) -> Verdict:
    """The verdict on `flow` with its path: the source's egress, then the destination's
    ingress."""
    source, destination = _endpoint_at(state, flow.src), _endpoint_at(state, flow.dst)
    if source is not None and source is destination:
        same = DirectionVerdict("egress", source.key, False, True,
                                "to itself: the packet never leaves the endpoint")
        return Verdict(flow, True, same, dataclasses.replace(same, direction="ingress"))
    if source is None:
        egress = DirectionVerdict("egress", None, False, True,
                                  f"source {flow.src} is not a workload endpoint: no egress policy")
    else:
        egress = walk(state, source, "egress", flow)
    ingress = _ingress(state, flow, source, destination)
    return Verdict(flow, egress.allowed and ingress.allowed, egress, ingress)


def _ingress(state: PolicyState, flow: Flow, source: Endpoint | None,
             destination: Endpoint | None) -> DirectionVerdict:
    if destination is None:
        host = state.node_by_ip.get(flow.dst)
        if source is not None and host is not None and host == source.node:
            action = state.endpoint_to_host_action
            return DirectionVerdict(
                "ingress", None, True, action != "Drop",
                f"destination {flow.dst} is the endpoint's own host: "
                f"DefaultEndpointToHostAction {action}")
        return DirectionVerdict("ingress", None, False, True,
                                f"destination {flow.dst} is not a workload endpoint: "
                                "no ingress policy")
    host = state.node_by_ip.get(flow.src)
    if host is not None and host == destination.node:
        return DirectionVerdict("ingress", destination.key, False, True,
                                f"from its own host ({host}): not policed")
    return walk(state, destination, "ingress", flow)
