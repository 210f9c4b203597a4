"""`ctl explain FROM TO [--port PORT[/PROTO]]`: why a flow is allowed or denied.

Owns the command's edges only: reading the live datastore once (every kind policy
evaluation needs, all at one etcd revision, so the answer is about one consistent
state), resolving FROM and TO to addresses, building the Flow, and printing the
Verdict. The semantics are not here: the verdict and its path come from
policy.evaluate.evaluate on policy.model.compile_state, the code whose model the
agent renders into the dataplane, so `explain` and the dataplane agree by
construction (docs/policy.md, "Evaluation model").

FROM and TO are each one of:

  NS/NAME   the WorkloadEndpoint of pod NAME in namespace NS (its `spec.pod`), or the
            WorkloadEndpoint named NAME there;
  NAME      the same in the namespace given by `-n` (default `default`);
  ADDRESS   an IPv4 or IPv6 address: the endpoint holding it, else a plain address
            (a node's, the internet's), explained as evaluate treats it.

A name that matches several endpoints (a pod with two interfaces), an address held by
several, and a name that matches none are errors that name what was found. Exit code
0 whatever the verdict (it is a query), 1 for bad input or datastore errors, with one
line on stderr.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import click

from datastore.resources import (
    GlobalNetworkPolicy,
    GlobalNetworkSet,
    NetworkPolicy,
    NetworkSet,
    Node,
    Profile,
    Resource,
    Tier,
    WorkloadEndpoint,
)
from datastore.resources.base import DEFAULT_NAMESPACE
from datastore.resources.policy import go_float
from datastore.store import ResourceStore
from policy.evaluate import (
    DirectionVerdict,
    Flow,
    PolicyStep,
    ProfileStep,
    RuleHit,
    TierStep,
    Verdict,
)
from policy.evaluate import evaluate as evaluate_flow
from policy.model import (
    Endpoint,
    EndpointToHostAction,
    IPAddress,
    PolicyState,
    compile_state,
    protocol_number,
)

from .common import CtlFailure

# Everything compile_state reads, plus Nodes for the host rules (their addresses).
EXPLAIN_KINDS: tuple[type[Resource], ...] = (
    WorkloadEndpoint, Profile, NetworkPolicy, GlobalNetworkPolicy, Tier, NetworkSet,
    GlobalNetworkSet, Node,
)

# Protocols whose packets carry ports (Calico allows ports in rules for TCP, UDP and
# SCTP; UDPLite packets have them too).
PORTED_PROTOCOLS = frozenset({6, 17, 132, 136})
ICMP_VERSIONS = {1: 4, 58: 6}  # ICMP is IPv4's, ICMPv6 IPv6's
PROTOCOL_DISPLAY = {6: "TCP", 17: "UDP", 1: "ICMP", 58: "ICMPv6", 132: "SCTP", 136: "UDPLite"}

ENDPOINT_TO_HOST_ACTIONS = ("Drop", "Return", "Accept")


# --- the flow ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FlowSpec:
    """What the options say about the packet; addresses come from FROM and TO."""

    protocol: int
    dst_port: int | None = None
    src_port: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None

    @property
    def ip_version(self) -> int | None:
        """The IP version the protocol implies (ICMP: 4, ICMPv6: 6), else None."""
        return ICMP_VERSIONS.get(self.protocol)


def _protocol(text: str, what: str) -> int:
    try:
        return protocol_number(text.strip())
    except ValueError as exc:
        raise CtlFailure(f"invalid {what} '{text}': {exc}") from None


def parse_port(text: str) -> tuple[int, int | None]:
    """'80/TCP' -> (80, 6); '53/udp' -> (53, 17); '80' -> (80, None)."""
    number, sep, protocol = text.partition("/")
    if not number.strip().isdigit() or not 1 <= int(number) <= 65535:
        raise CtlFailure(f"invalid port '{text}': want PORT or PORT/PROTOCOL, PORT 1-65535")
    if sep and not protocol.strip():
        raise CtlFailure(f"invalid port '{text}': no protocol after '/'")
    return int(number), _protocol(protocol, f"port '{text}': protocol") if sep else None


def flow_spec(port: str | None = None, protocol: str | None = None,
              source_port: int | None = None, icmp_type: int | None = None,
              icmp_code: int | None = None) -> FlowSpec:
    """The options as a FlowSpec, or CtlFailure saying which option is wrong. TCP when
    no protocol is given; a flow without --port has no destination port, so rules that
    name ports do not match it."""
    dst_port, port_protocol = parse_port(port) if port is not None else (None, None)
    number = _protocol(protocol, "protocol") if protocol is not None else None
    if number is not None and port_protocol is not None and number != port_protocol:
        raise CtlFailure(f"--port {port} and --protocol {protocol} name different protocols")
    number = number or port_protocol or 6
    name = PROTOCOL_DISPLAY.get(number, f"protocol {number}")
    if (dst_port is not None or source_port is not None) and number not in PORTED_PROTOCOLS:
        raise CtlFailure(f"{name} has no ports: --port and --source-port are for TCP, UDP, "
                         "SCTP and UDPLite")
    if icmp_code is not None and icmp_type is None:
        raise CtlFailure("--icmp-code needs --icmp-type")
    if icmp_type is not None and number not in ICMP_VERSIONS:
        raise CtlFailure(f"--icmp-type is for --protocol ICMP or ICMPv6, not {name}")
    return FlowSpec(number, dst_port, source_port, icmp_type, icmp_code)


# --- the datastore ----------------------------------------------------------------------


def read_cluster(store: ResourceStore) -> list[Resource]:
    """Every resource of EXPLAIN_KINDS, read at the revision of the first read, so the
    state is one consistent point in etcd's history."""
    resources: list[Resource] = []
    revision: int | None = None
    for kind in EXPLAIN_KINDS:
        found, read_at = store.list_with_revision(kind, None, revision)
        revision = revision or read_at
        resources.extend(found)
    return resources


def _address(text: str) -> IPAddress:
    # Node addresses are written with or without a prefix length (10.0.0.5/24).
    return ipaddress.ip_interface(text).ip


def host_addresses(nodes: Iterable[Node]) -> dict[str, frozenset[IPAddress]]:
    """Node name -> the node's own addresses (BGP addresses, tunnel addresses and
    `spec.addresses`): what the host rules of evaluate() compare against."""
    hosts: dict[str, frozenset[IPAddress]] = {}
    for node in nodes:
        spec, bgp = node.spec, node.spec.bgp
        texts = [spec.ipv4VXLANTunnelAddr, spec.ipv6VXLANTunnelAddr]
        if bgp is not None:
            texts += [bgp.ipv4Address, bgp.ipv6Address, bgp.ipv4IPIPTunnelAddr]
        texts += [a.address for a in spec.addresses or ()]
        found: set[IPAddress] = set()
        for text in texts:
            try:
                if text:
                    found.add(_address(text))
            except ValueError:
                continue  # a free-form address entry that is no IP: not a host address
        hosts[node.name] = frozenset(found)
    return hosts


# --- FROM and TO ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Party:
    """FROM or TO, resolved: the addresses it may send from or be reached at, and for a
    workload endpoint, which one (`endpoint`: `ns/name`, evaluate's endpoint key)."""

    name: str
    addresses: tuple[IPAddress, ...]
    endpoint: str | None = None
    node: str | None = None

    @property
    def what(self) -> str:
        """What the party is, for the section headers."""
        if self.endpoint is not None:
            where = f" on node {self.node}" if self.node else ""
            return f"WorkloadEndpoint {self.endpoint}{where}"
        if self.node is not None:
            return f"an address of node {self.node}"
        return "not a workload endpoint"


def _endpoint_party(endpoint: Endpoint, pods: Mapping[str, str],
                    addresses: tuple[IPAddress, ...]) -> Party:
    ns, _, name = endpoint.key.partition("/")
    return Party(f"{ns}/{pods.get(endpoint.key) or name}", addresses, endpoint.key,
                 endpoint.node)


def _keys(endpoints: Iterable[Endpoint]) -> str:
    return ", ".join(sorted(e.key for e in endpoints))


def resolve(text: str, namespace: str | None, state: PolicyState,
            pods: Mapping[str, str]) -> Party:
    """FROM or TO as typed -> a Party, or CtlFailure naming what is unknown or ambiguous.

    Addresses are looked up in the index evaluate() uses (`state.endpoints_by_ip`,
    `state.node_by_ip`); `pods` maps an endpoint's key to its pod's name."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        ip = None
    if ip is not None:
        holders = state.endpoints_by_ip.get(ip, ())
        if len(holders) > 1:
            raise CtlFailure(f"address {text} is ambiguous: held by WorkloadEndpoints "
                             f"{_keys(holders)}")
        if holders:
            return _endpoint_party(holders[0], pods, (ip,))
        return Party(str(ip), (ip,), node=state.node_by_ip.get(ip))
    if "/" in text and _is_network(text):
        raise CtlFailure(f"{text} is a network: FROM and TO are single addresses")
    ns, sep, name = text.partition("/")
    if not sep:
        ns, name = namespace or DEFAULT_NAMESPACE, text
    if not ns or not name or "/" in name:
        raise CtlFailure(f"invalid endpoint '{text}': want NAMESPACE/POD, NAMESPACE/ENDPOINT, "
                         "POD or ENDPOINT (with -n), or an IP address")
    key = f"{ns}/{name}"
    found = ([e for e in state.endpoints if e.key == key]
             or [e for e in state.endpoints if e.namespace == ns and pods.get(e.key) == name])
    if not found:
        raise CtlFailure(f"no workload endpoint or pod named {name} in namespace {ns}")
    if len(found) > 1:
        raise CtlFailure(f"{key} is ambiguous: pod {name} has WorkloadEndpoints "
                         f"{_keys(found)}; name one of them")
    if not found[0].ips:
        raise CtlFailure(f"WorkloadEndpoint {found[0].key} has no IP address")
    return _endpoint_party(found[0], pods, found[0].ips)


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def build_flow(spec: FlowSpec, source: Party, destination: Party,
               ip_version: int | None = None) -> Flow:
    """The Flow between the two parties: one address of each of one IP version (IPv4
    when both are possible, unless `ip_version` or the protocol says otherwise)."""
    wanted = ip_version or spec.ip_version
    if ip_version is not None and spec.ip_version not in (None, ip_version):
        raise CtlFailure(f"{PROTOCOL_DISPLAY[spec.protocol]} is for IPv{spec.ip_version}, "
                         f"not IPv{ip_version}")
    for version in (wanted,) if wanted else (4, 6):
        src = next((a for a in source.addresses if a.version == version), None)
        dst = next((a for a in destination.addresses if a.version == version), None)
        if src is not None and dst is not None:
            return Flow(src, dst, spec.protocol, spec.dst_port, spec.src_port,
                        spec.icmp_type, spec.icmp_code)
    versions = f"IPv{wanted}" if wanted else "one IP version"
    raise CtlFailure(f"{source.name} ({_list(source.addresses)}) and {destination.name} "
                     f"({_list(destination.addresses)}) have no addresses of {versions} "
                     "in common")


def _list(addresses: Iterable[IPAddress]) -> str:
    return ", ".join(map(str, addresses))


class Explainer:
    """One read of the cluster, compiled once, to ask about many flows (the command asks
    one; a conformance harness asks one per pod pair)."""

    def __init__(self, resources: Sequence[Resource],
                 endpoint_to_host_action: EndpointToHostAction = "Accept") -> None:
        hosts = host_addresses(r for r in resources if isinstance(r, Node))
        self.state = compile_state(resources, hosts, endpoint_to_host_action)
        self.pods = {f"{r.namespace}/{r.name}": r.spec.pod for r in resources
                     if isinstance(r, WorkloadEndpoint) and r.spec.pod}

    @classmethod
    def from_store(cls, store: ResourceStore,
                   endpoint_to_host_action: EndpointToHostAction = "Accept") -> Explainer:
        return cls(read_cluster(store), endpoint_to_host_action)

    def resolve(self, text: str, namespace: str | None = None) -> Party:
        return resolve(text, namespace, self.state, self.pods)

    def explain(self, source: str, destination: str, spec: FlowSpec, *,
                namespace: str | None = None,
                ip_version: int | None = None) -> tuple[Verdict, Party, Party]:
        """Resolve FROM and TO, build the flow, evaluate: the verdict and both parties."""
        src, dst = self.resolve(source, namespace), self.resolve(destination, namespace)
        flow = build_flow(spec, src, dst, ip_version)
        return evaluate_flow(self.state, flow), src, dst


# --- printing ---------------------------------------------------------------------------


def describe_flow(flow: Flow, source: Party, destination: Party) -> str:
    """'TCP port 80 from x/a (10.65.0.2) to y/b (10.65.1.3)'."""
    parts = [PROTOCOL_DISPLAY.get(flow.protocol, f"protocol {flow.protocol}")]
    if flow.dst_port is not None:
        parts.append(f"port {flow.dst_port}")
    if flow.icmp_type is not None:
        parts.append(f"type {flow.icmp_type}")
        if flow.icmp_code is not None:
            parts.append(f"code {flow.icmp_code}")
    if flow.src_port is not None:
        parts.append(f"source port {flow.src_port}")

    def who(party: Party, ip: IPAddress) -> str:
        return str(ip) if party.name == str(ip) else f"{party.name} ({ip})"

    return f"{' '.join(parts)} from {who(source, flow.src)} to {who(destination, flow.dst)}"


def _order(order: float | None) -> str:
    return "no order" if order is None else f"order {go_float(order)}"


def _decision(outcome: str, rule: RuleHit | None) -> str:
    if rule is None:
        return "no rule matched"
    return f"{outcome} by rule {rule.index}: {rule.text}"


def _policy_lines(step: PolicyStep) -> list[str]:
    lines = [f"    {step.policy} ({_order(step.order)}): {_decision(step.outcome, step.rule)}"]
    lines += [f"      logged by rule {hit.index}: {hit.text}" for hit in step.logged]
    return lines


_TIER_OUTCOMES = {"allow": "allowed", "deny": "denied", "pass": "passed to the next tier"}


def _tier_lines(step: TierStep) -> list[str]:
    if step.outcome == "end-of-tier":
        outcome = f"end of tier {step.tier} (defaultAction {step.default_action})"
        if step.default_action == "Pass":
            outcome += ": on to the next tier"
    else:
        outcome = _TIER_OUTCOMES[step.outcome]
    lines = [f"  tier {step.tier}: {outcome}"]
    for policy in step.policies:
        lines += _policy_lines(policy)
    return lines


def _profile_line(step: ProfileStep) -> str:
    if step.outcome == "missing":
        return f"  profile {step.profile}: not in the datastore (contributes nothing)"
    return f"  profile {step.profile}: {_decision(step.outcome, step.rule)}"


def _direction_lines(part: DirectionVerdict, party: Party) -> list[str]:
    if not part.policed:
        state = "allowed, not policed"
    else:
        state = "allowed" if part.allowed else "denied"
    lines = [f"{part.direction} of {party.name} ({party.what}): {state}"]
    if part.policed and part.endpoint is not None and not part.tiers:
        lines.append(f"  no policy selects it for {part.direction}")
    for tier in part.tiers:
        lines += _tier_lines(tier)
    lines += [_profile_line(profile) for profile in part.profiles]
    lines.append(f"  => {part.reason}")
    return lines


def format_verdict(verdict: Verdict, source: Party, destination: Party) -> str:
    """The human form: the verdict line, then the source's egress and the destination's
    ingress, each tier walked with its policies, the profiles, and the reason."""
    lines = [f"{'ALLOWED' if verdict.allowed else 'DENIED'}: "
             f"{describe_flow(verdict.flow, source, destination)}", ""]
    lines += _direction_lines(verdict.egress, source)
    lines.append("")
    lines += _direction_lines(verdict.ingress, destination)
    return "\n".join(lines)


def format_json(verdict: Verdict) -> str:
    """Verdict.as_dict() as JSON: its keys in the dataclasses' field order, stable."""
    return json.dumps(verdict.as_dict(), indent=2)


# --- the command ------------------------------------------------------------------------


def register(cli: click.Group) -> None:
    @cli.command(name="explain")
    @click.argument("source", metavar="FROM")
    @click.argument("destination", metavar="TO")
    @click.option("--port", metavar="PORT[/PROTO]", default=None,
                  help="Destination port and protocol: 80/TCP, 53/udp; 80 alone is TCP.")
    @click.option("--protocol", metavar="PROTO", default=None,
                  help="Protocol by name (TCP UDP ICMP ICMPv6 SCTP UDPLite) or number. "
                       "Default TCP.")
    @click.option("--source-port", type=click.IntRange(1, 65535), default=None,
                  help="Source port, for rules that match on it.")
    @click.option("--icmp-type", type=click.IntRange(0, 255), default=None,
                  help="ICMP type (with --protocol ICMP or ICMPv6).")
    @click.option("--icmp-code", type=click.IntRange(0, 255), default=None,
                  help="ICMP code (with --icmp-type).")
    @click.option("-n", "--namespace", default=None, metavar="NS",
                  help="Namespace of FROM and TO given without one (default: default).")
    @click.option("--ip-version", type=click.Choice(["4", "6"]), default=None,
                  help="Which addresses of dual-stack endpoints to use (default 4).")
    @click.option("--endpoint-to-host-action", envvar="FELIX_DEFAULTENDPOINTTOHOSTACTION",
                  type=click.Choice(ENDPOINT_TO_HOST_ACTIONS, case_sensitive=False),
                  default="Accept", show_default=True,
                  help="The agents' DefaultEndpointToHostAction (pod to its own host); "
                       "also read from FELIX_DEFAULTENDPOINTTOHOSTACTION.")
    @click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
                  show_default=True, help="text for people, json for tools.")
    @click.pass_obj
    def explain_command(obj: Any, source: str, destination: str, port: str | None,
                        protocol: str | None, source_port: int | None, icmp_type: int | None,
                        icmp_code: int | None, namespace: str | None, ip_version: str | None,
                        endpoint_to_host_action: str, output: str) -> None:
        """Why a flow from FROM to TO is allowed or denied: the source's egress, then the
        destination's ingress, each tier and policy walked, against the live datastore.
        FROM and TO: NAMESPACE/POD, a WorkloadEndpoint name, or an IP address."""
        # The options are checked before etcd is asked anything.
        spec = flow_spec(port, protocol, source_port, icmp_type, icmp_code)
        explainer = Explainer.from_store(
            obj.store, cast(EndpointToHostAction, endpoint_to_host_action))
        verdict, src, dst = explainer.explain(source, destination, spec, namespace=namespace,
                                              ip_version=int(ip_version) if ip_version else None)
        click.echo(format_json(verdict) if output == "json" else format_verdict(verdict, src, dst))
