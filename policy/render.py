"""Felix's filter-table policy dataplane for one node, as backend-neutral structured rules.

Owns the rendering of the compiled policy state (policy.model) for this node's workload
endpoints into chains of `Rule`s (match terms, an action, comments) in Felix's names,
order and mark bits, and the ipsets those rules match on (projectcalico/calico
`felix/rules/{rule_defs,static,dispatch,endpoints,policy}.go`,
`felix/calc/rule_scanner.go`, `felix/ipsets/ipset_defs.go`). Match terms and actions
are small values, not iptables text: agent/calc/policy.py renders them for
iptables-restore, and an nftables renderer can render the same values.

What is rendered (IPv4; IPv6 workloads are not policed yet):
  * the top-level chains `cali-FORWARD`, `cali-INPUT` (its workload part), `cali-OUTPUT`,
    `cali-wl-to-host` and the empty host-endpoint chains they jump to, so that the
    rules and their hashes are Felix's own for a node without host endpoints. Felix
    appends two rules to the kernel FORWARD chain (accept what policy accepted, then
    mark the rest); tortie's writer only inserts hooks, so they end `cali-FORWARD`;
  * dispatch chains `cali-from-wl-dispatch` / `cali-to-wl-dispatch`, split by interface
    name prefix into `-<char>` sub-chains as Felix does, ending in "Unknown interface"
    drops: a `cali*` interface the agent does not know passes nothing;
  * per local endpoint `cali-tw-<iface>` (ingress) and `cali-fw-<iface>` (egress):
    conntrack, mark clearing, encapsulation drops (egress), each tier with a policy
    for that direction (policy.evaluate.tiers_for), then the profiles;
  * `cali-pi-` / `cali-po-` chains of the policies some local endpoint jumps to and
    `cali-pri-` / `cali-pro-` chains of its profiles (a profile the datastore lacks
    becomes Felix's default-drop profile, `DummyDropRules`);
  * one ipset per distinct selector and per named port, named as Felix names them,
    members from every endpoint and network set in the cluster (policy.evaluate).

Invariants: pure (no I/O); a chain is a function of what it names only: a policy's
chains of the compiled policy (cached by it, so one edit re-renders one policy), an
endpoint's chains of its policies' and profiles' names, never of other endpoints, and
no rule embeds ipset members, so a label change changes members only. Policy groups
(`cali-gi-`/`cali-go-`) are not rendered: every policy gets its own jump.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from datastore.selector import All, And, Not, Selector

from .evaluate import applicable, members, named_port_members, tiers_for
from .model import (
    PROTOCOL_NAMES,
    PROTOCOL_NUMBERS,
    CompiledPolicy,
    CompiledRule,
    Direction,
    Endpoint,
    EndpointToHostAction,
    EntityMatch,
    NetworkSet,
    PolicyState,
    Profile,
)

__all__ = [
    "Accept", "Action", "ClearMark", "Conntrack", "Drop", "EndpointPlan", "Goto", "ICMPMatch",
    "IPSetSpec", "InInterface", "Jump", "LocalEndpoint", "LogAction", "MarkMatch", "NetMatch",
    "OutInterface", "PolicyRender", "PortMatch", "ProtocolMatch", "RenderedChain", "Return",
    "RenderMemo", "Rule", "SetMark", "SetMatch", "SetMemberIndex", "Term", "dispatch_chains",
    "endpoint_chain", "endpoint_chain_name", "failsafe_chains", "input_rules",
    "length_limited_name", "policy_chain_name", "profile_chain_name", "render_node",
    "render_policy", "render_profile", "rule_to_rules", "selector_set_id", "static_chains",
]

# Felix's mark bits with the default IptablesMarkMask 0xffff0000 (felix/markbits).
MARK_ACCEPT = 0x10000
MARK_PASS = 0x20000
MARK_DROP = 0x40000
MARK_SCRATCH0 = 0x80000  # "all match blocks passed"
MARK_SCRATCH1 = 0x100000  # "this match block passed"
ALL_CALICO_MARKS = MARK_ACCEPT | MARK_PASS | MARK_SCRATCH0 | MARK_SCRATCH1

MAX_CHAIN_NAME = 28  # felix/iptables MaxChainNameLength
MAX_IPSET_NAME = 31
WORKLOAD_IFACE_WILDCARD = "cali+"
PROTO_IPIP = 4
PROTO_UDP = 17
# multiport takes at most 15 ports, a range counting as two (felix/rules SplitPortList).
MULTIPORT_SLOTS = 15

CHAIN_FORWARD = "cali-FORWARD"
CHAIN_INPUT = "cali-INPUT"
CHAIN_OUTPUT = "cali-OUTPUT"
CHAIN_WL_TO_HOST = "cali-wl-to-host"
CHAIN_FROM_WL_DISPATCH = "cali-from-wl-dispatch"
CHAIN_TO_WL_DISPATCH = "cali-to-wl-dispatch"
CHAIN_FROM_HOST_ENDPOINT = "cali-from-host-endpoint"
CHAIN_TO_HOST_ENDPOINT = "cali-to-host-endpoint"
CHAIN_FROM_HEP_FORWARD = "cali-from-hep-forward"
CHAIN_TO_HEP_FORWARD = "cali-to-hep-forward"
CHAIN_CIDR_BLOCK = "cali-cidr-block"
CHAIN_FAILSAFE_IN = "cali-failsafe-in"
CHAIN_FAILSAFE_OUT = "cali-failsafe-out"

Side = Literal["src", "dst"]


# --- match terms ------------------------------------------------------------------------
# Frozen dataclasses, not tuples: two different terms never compare equal.


@dataclass(frozen=True, slots=True)
class InInterface:
    name: str  # an interface or a wildcard ending in "+"


@dataclass(frozen=True, slots=True)
class OutInterface:
    name: str


@dataclass(frozen=True, slots=True)
class Conntrack:
    states: str  # "RELATED,ESTABLISHED", "INVALID", "DNAT"
    negated: bool = False


@dataclass(frozen=True, slots=True)
class MarkMatch:
    """The packet mark masked with `mask` equals `mark` (Felix's MarkClear when 0)."""

    mark: int
    mask: int
    negated: bool = False


@dataclass(frozen=True, slots=True)
class ProtocolMatch:
    protocol: int
    negated: bool = False
    by_name: bool = True  # Felix writes rule protocols by name, static ones by number


@dataclass(frozen=True, slots=True)
class NetMatch:
    side: Side
    cidr: str
    negated: bool = False


@dataclass(frozen=True, slots=True)
class SetMatch:
    side: Side
    name: str
    negated: bool = False
    with_port: bool = False  # a hash:ip,port set: matched on (address, port)


@dataclass(frozen=True, slots=True)
class PortMatch:
    side: Side
    ranges: tuple[tuple[int, int], ...]
    negated: bool = False


@dataclass(frozen=True, slots=True)
class ICMPMatch:
    icmp_type: int
    code: int | None = None
    negated: bool = False


Term = (InInterface | OutInterface | Conntrack | MarkMatch | ProtocolMatch | NetMatch | SetMatch
        | PortMatch | ICMPMatch)


# --- actions ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accept:
    pass


@dataclass(frozen=True, slots=True)
class Drop:
    pass


@dataclass(frozen=True, slots=True)
class Return:
    pass


@dataclass(frozen=True, slots=True)
class Jump:
    chain: str


@dataclass(frozen=True, slots=True)
class Goto:
    chain: str


@dataclass(frozen=True, slots=True)
class SetMark:
    """Set the bits `mark` within `mask` (Felix's SetMark when mask == mark)."""

    mark: int
    mask: int


@dataclass(frozen=True, slots=True)
class ClearMark:
    mask: int


@dataclass(frozen=True, slots=True)
class LogAction:
    prefix: str


Action = Accept | Drop | Return | Jump | Goto | SetMark | ClearMark | LogAction


@dataclass(frozen=True, slots=True)
class Rule:
    action: Action | None  # None: a rule that only counts (Felix's empty policy chain)
    match: tuple[Term, ...] = ()
    comments: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RenderedChain:
    name: str
    rules: tuple[Rule, ...]

    def __hash__(self) -> int:
        # By name and length only: the generated hash walks every term of every rule,
        # and the calculation hashes each chain (agent/calc/policy.py's cache) on every
        # run. Equal chains still hash equal; equality decides the rest.
        return hash((self.name, len(self.rules)))


@dataclass(frozen=True, slots=True)
class IPSetSpec:
    """An ipset a rule matches on: what it holds, not yet its members."""

    name: str
    set_type: Literal["hash:net", "hash:ip,port"]
    selector: Selector
    named_port: str | None = None
    protocol: int | None = None  # of a named-port set; None: any protocol


# --- names ------------------------------------------------------------------------------


def length_limited_name(prefix: str, suffix: str, max_length: int = MAX_CHAIN_NAME) -> str:
    """libcalico-go hash.GetLengthLimitedID: too long, or looking shortened, -> a hash."""
    if not suffix:
        suffix = "_"
    total = len(prefix) + len(suffix)
    if total > max_length or (total == max_length and suffix.startswith("_")):
        digest = base64.urlsafe_b64encode(hashlib.sha256(suffix.encode()).digest()).decode()
        return prefix + "_" + digest.rstrip("=")[: max_length - 1 - len(prefix)]
    return prefix + suffix


def endpoint_chain_name(prefix: str, interface: str) -> str:
    return length_limited_name(prefix, interface)


_KIND_SHORT = {"NetworkPolicy": "np", "GlobalNetworkPolicy": "gnp"}


def policy_chain_name(policy: CompiledPolicy, direction: Direction) -> str:
    """`cali-pi-<id>` / `cali-po-<id>`, id `np/<ns>/<name>` or `gnp/<name>` (PolicyID.ID)."""
    prefix = "cali-pi-" if direction == "ingress" else "cali-po-"
    short = _KIND_SHORT[policy.kind]
    ident = f"{short}/{policy.namespace}/{policy.name}" if policy.namespace else \
        f"{short}/{policy.name}"
    return length_limited_name(prefix, ident)


def profile_chain_name(name: str, direction: Direction) -> str:
    return length_limited_name("cali-pri-" if direction == "ingress" else "cali-pro-", name)


def _unique_id(prefix: str, content: str) -> str:
    """libcalico-go hash.MakeUniqueID: `<prefix>:` + base64url(SHA-224(`<prefix>:<content>`))."""
    digest = hashlib.sha224(f"{prefix}:{content}".encode()).digest()
    return f"{prefix}:" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


@lru_cache(maxsize=65536)
def selector_set_id(selector: Selector) -> str:
    # str() is Calico's canonical String(), the very string Felix's UniqueID() hashes.
    return _unique_id("s", str(selector))


def _set_name(set_id: str) -> str:
    # NameForMainIPSet: "cali40" + ID, cut to the kernel's limit.
    return ("cali40" + set_id)[:MAX_IPSET_NAME]


_NAMED_PORT_PROTOCOLS = {6: "tcp", 17: "udp", 132: "sctp"}


def _named_port_set(selector: Selector, port: str, protocol: int | None) -> IPSetSpec:
    proto = "any" if protocol is None else _NAMED_PORT_PROTOCOLS.get(protocol, "any")
    set_id = _unique_id("n", f"{selector_set_id(selector)},{proto},{port}")
    return IPSetSpec(_set_name(set_id), "hash:ip,port", selector, port,
                     None if proto == "any" else protocol)


def _selector_set(selector: Selector) -> IPSetSpec:
    return IPSetSpec(_set_name(selector_set_id(selector)), "hash:net", selector)


# --- one Calico rule -> iptables-shaped rules (felix/rules/policy.go) ------------------------


def _split_ports(ranges: Sequence[tuple[int, int]]) -> list[tuple[tuple[int, int], ...]]:
    splits: list[tuple[tuple[int, int], ...]] = []
    current: list[tuple[int, int]] = []
    slots = MULTIPORT_SLOTS
    for first, last in ranges:
        need = 1 if first == last else 2
        if slots < need:
            splits.append(tuple(current))
            current, slots = [], MULTIPORT_SLOTS
        current.append((first, last))
        slots -= need
    if current:
        splits.append(tuple(current))
    return splits


@dataclass
class _Side:
    """One side of a rule after Felix's rule scanner: nets, sets and ports to match."""

    side: Side
    nets: list[str]
    not_nets: list[str]
    sets: list[IPSetSpec]
    not_sets: list[IPSetSpec]
    ports: list[tuple[int, int]]
    named: list[IPSetSpec]
    not_ports: list[tuple[int, int]]
    not_named: list[IPSetSpec]


def _v4(nets: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> list[str]:
    return [str(n) for n in nets if n.version == 4]


def _scan_side(name: Side, side: EntityMatch, protocol: int | None) -> _Side | None:
    """The side's matches for IPv4, or None when Felix renders no rule for IPv4."""
    nets = _v4(side.nets)
    if side.nets and not nets:
        return None
    not_nets = _v4(side.not_nets)
    if "0.0.0.0/0" in not_nets:
        return None  # a negated catch-all: Felix drops the rule as a contradiction
    positive = side.selector
    negative = side.not_selector
    if positive is not None and negative is not None:
        # rule_scanner.go combineMatchesIfPossible: with a positive selector the rule only
        # matches known endpoints, so the negation narrows the positive set instead.
        positive, negative = And((positive, Not(negative))), None
    named_for = positive if positive is not None else All()
    named = [_named_port_set(named_for, p, protocol) for p in side.named_ports]
    not_named = [_named_port_set(named_for, p, protocol) for p in side.not_named_ports]
    sets = []
    if positive is not None and (side.ports or not side.named_ports):
        sets.append(_selector_set(positive))
    return _Side(name, nets, not_nets, sets,
                 [_selector_set(negative)] if negative is not None else [],
                 list(side.ports), named, list(side.not_ports), not_named)


class _MatchBlocks:
    """felix/rules/policy.go matchBlockBuilder: ORs iptables cannot say in one rule, as
    mark-bit blocks run before the rule's own match."""

    def __init__(self) -> None:
        self.rules: list[Rule] = []
        self.used = False
        self.done_first_positive = False

    def _start(self, initial: int) -> None:
        if not self.used:
            self.rules.append(Rule(SetMark(initial, MARK_SCRATCH0 | MARK_SCRATCH1)))
            self.used = True

    def _positive_mark(self) -> int:
        return MARK_SCRATCH1 if self.done_first_positive else MARK_SCRATCH0

    def _finish_positive(self) -> None:
        if not self.done_first_positive:
            self.done_first_positive = True
            return
        self.rules.append(Rule(ClearMark(MARK_SCRATCH0), (MarkMatch(0, MARK_SCRATCH1),)))

    def ports(self, protocol: tuple[Term, ...], splits: list[tuple[tuple[int, int], ...]],
              named: list[IPSetSpec], side: Side) -> None:
        self._start(0)
        mark = self._positive_mark()
        for split in splits:
            self.rules.append(Rule(SetMark(mark, mark), (*protocol, PortMatch(side, split))))
        for spec in named:
            self.rules.append(Rule(SetMark(mark, mark), (SetMatch(side, spec.name,
                                                                  with_port=True),)))
        self._finish_positive()

    def cidrs(self, cidrs: list[str], side: Side) -> None:
        self._start(0)
        mark = self._positive_mark()
        for cidr in cidrs:
            self.rules.append(Rule(SetMark(mark, mark), (NetMatch(side, cidr),)))
        self._finish_positive()

    def negated_cidrs(self, cidrs: list[str], side: Side) -> None:
        self._start(MARK_SCRATCH0)
        for cidr in cidrs:
            self.rules.append(Rule(ClearMark(MARK_SCRATCH0), (NetMatch(side, cidr),)))


def _protocol_terms(rule: CompiledRule) -> tuple[Term, ...]:
    return () if rule.protocol is None else (_protocol(rule.protocol),)


def _protocol(number: int, negated: bool = False) -> ProtocolMatch:
    return ProtocolMatch(number, negated, by_name=number in PROTOCOL_NAMES)


def _icmp_term(icmp: tuple[int, int | None] | None, negated: bool) -> list[Term]:
    return [] if icmp is None else [ICMPMatch(icmp[0], icmp[1], negated)]


def rule_to_rules(rule: CompiledRule, log_prefix: str = "calico-packet") -> tuple[
        tuple[Rule, ...], tuple[IPSetSpec, ...]]:
    """One Calico rule as Felix renders it for IPv4 (ProtoRuleToIptablesRules), with the
    ipsets it matches on. Empty when Felix renders nothing for IPv4."""
    if rule.ip_version == 6 or rule.source.services or rule.destination.services:
        return (), ()  # services matches are not modelled: they match nothing
    src = _scan_side("src", rule.source, rule.protocol)
    dst = _scan_side("dst", rule.destination, rule.protocol)
    if src is None or dst is None:
        return (), ()
    # Every set the rule matches on, taken before match blocks move some of them out.
    sets = [*src.sets, *src.not_sets, *src.named, *src.not_named,
            *dst.sets, *dst.not_sets, *dst.named, *dst.not_named]
    blocks = _MatchBlocks()
    protocol = _protocol_terms(rule)
    for sd in (src, dst):
        splits = _split_ports(sd.ports)
        if len(splits) + len(sd.named) > 1:
            blocks.ports(protocol, splits, sd.named, sd.side)
            sd.ports, sd.named = [], []
    for sd in (src, dst):
        if len(sd.nets) > 1:
            blocks.cidrs(sd.nets, sd.side)
            sd.nets = []
    for sd in (src, dst):
        if len(sd.nets) + len(sd.not_nets) > 1:
            blocks.negated_cidrs(sd.not_nets, sd.side)
            sd.not_nets = []

    # CalculateRuleMatch order: protocol; source net, sets, ports, named port; the same
    # for the destination; ICMP; then every negated match in the same order.
    match: list[Term] = list(protocol)
    for sd in (src, dst):
        match += [NetMatch(sd.side, n) for n in sd.nets]
        match += [SetMatch(sd.side, s.name) for s in sd.sets]
        if sd.ports:
            match.append(PortMatch(sd.side, tuple(sd.ports)))
        match += [SetMatch(sd.side, s.name, with_port=True) for s in sd.named]
    match += _icmp_term(rule.icmp, False)
    if rule.not_protocol is not None:
        match.append(_protocol(rule.not_protocol, negated=True))
    for sd in (src, dst):
        match += [NetMatch(sd.side, n, negated=True) for n in sd.not_nets]
        match += [SetMatch(sd.side, s.name, negated=True) for s in sd.not_sets]
        match += [PortMatch(sd.side, split, negated=True) for split in _split_ports(sd.not_ports)]
        match += [SetMatch(sd.side, s.name, negated=True, with_port=True) for s in sd.not_named]
    match += _icmp_term(rule.not_icmp, True)
    if blocks.used:
        match.append(MarkMatch(MARK_SCRATCH0, MARK_SCRATCH0))

    out = list(blocks.rules)
    terms = tuple(match)
    if rule.action == "Log":
        out.append(Rule(LogAction(log_prefix), terms))
    else:
        mark = {"Allow": MARK_ACCEPT, "Pass": MARK_PASS, "Deny": MARK_DROP}[rule.action]
        out.append(Rule(SetMark(mark, mark), terms))
        final: Action = Drop() if rule.action == "Deny" else Return()
        out.append(Rule(final, (MarkMatch(mark, mark),)))
    return tuple(out), tuple(sets)


def _rules_chain(name: str, rules: Sequence[CompiledRule],
                 comment: str) -> tuple[RenderedChain, frozenset[IPSetSpec]]:
    """ProtoRulesToIptablesRules: each rule's iptables rules, trailing RETURNs stripped,
    the chain's comment on the first rule."""
    out: list[Rule] = []
    sets: set[IPSetSpec] = set()
    for rule in rules:
        rendered, used = rule_to_rules(rule)
        out += rendered
        sets.update(used)
    while out and isinstance(out[-1].action, Return):
        out.pop()
    if not out:
        # Felix's empty rule: no match, no action; it only carries the chain's comment.
        out.append(Rule(None))
    first = out[0]
    out[0] = Rule(first.action, first.match, (*first.comments, comment))
    return RenderedChain(name, tuple(out)), frozenset(sets)


@lru_cache(maxsize=16384)
def render_policy(policy: CompiledPolicy,
                  direction: Direction) -> tuple[RenderedChain, frozenset[IPSetSpec]]:
    """A policy's chain for one direction (PolicyToIptablesChains), cached by the
    compiled policy: an unchanged policy is never rendered twice."""
    where = f"{policy.namespace}/{policy.name}" if policy.namespace else policy.name
    return _rules_chain(policy_chain_name(policy, direction), policy.rules(direction),
                        f"{policy.kind} {where} {direction}")


# A profile the endpoint names but the datastore lacks: Felix's DummyDropRules.
_DROP_RULE = CompiledRule(index=0, action="Deny", text="Deny")


@lru_cache(maxsize=16384)
def render_profile(profile: Profile,
                   direction: Direction) -> tuple[RenderedChain, frozenset[IPSetSpec]]:
    return _rules_chain(profile_chain_name(profile.name, direction), profile.rules(direction),
                        f"Profile {profile.name} {direction}")


# --- per-endpoint chains (felix/rules/endpoints.go) ----------------------------------------


@dataclass(frozen=True)
class EndpointPlan:
    """The policy and profile chains one endpoint direction jumps to, in order."""

    tiers: tuple[tuple[str, bool, tuple[str, ...]], ...]  # (tier, ends in drop, chains)
    profiles: tuple[str, ...]


@lru_cache(maxsize=16384)
def endpoint_chain(interface: str, direction: Direction, plan: EndpointPlan,
                   vxlan_port: int) -> RenderedChain:
    """`cali-tw-<iface>` (ingress) or `cali-fw-<iface>` (egress): endpointIptablesChain."""
    prefix = "cali-tw-" if direction == "ingress" else "cali-fw-"
    rules = [
        Rule(Accept(), (Conntrack("RELATED,ESTABLISHED"),)),
        Rule(Drop(), (Conntrack("INVALID"),)),
        Rule(ClearMark(MARK_ACCEPT | MARK_PASS)),
    ]
    if direction == "egress":
        rules += [
            Rule(Drop(), (ProtocolMatch(PROTO_UDP, by_name=False),
                          PortMatch("dst", ((vxlan_port, vxlan_port),))),
                 ("Drop VXLAN encapped packets originating in workloads",)),
            Rule(Drop(), (ProtocolMatch(PROTO_IPIP, by_name=False),),
                 ("Drop IPinIP encapped packets originating in workloads",)),
        ]
    for tier, drop_at_end, chains in plan.tiers:
        rules.append(Rule(ClearMark(MARK_PASS), (), (f"Start of tier {tier}",)))
        for chain in chains:
            rules.append(Rule(Jump(chain), (MarkMatch(0, MARK_PASS),)))
            rules.append(Rule(Return(), (MarkMatch(MARK_ACCEPT, MARK_ACCEPT),),
                              ("Return if policy accepted",)))
        if drop_at_end:
            rules.append(Rule(Drop(), (MarkMatch(0, MARK_PASS),),
                              (f"End of tier {tier}. Drop if no policies passed packet",)))
    for chain in plan.profiles:
        rules.append(Rule(Jump(chain)))
        rules.append(Rule(Return(), (MarkMatch(MARK_ACCEPT, MARK_ACCEPT),),
                          ("Return if profile accepted",)))
    rules.append(Rule(Drop(), (), ("Drop if no profiles matched",)))
    return RenderedChain(endpoint_chain_name(prefix, interface), tuple(rules))


# --- dispatch (felix/rules/dispatch.go) ------------------------------------------------------


def _common_prefix(names: Sequence[str]) -> str:
    first, last = min(names), max(names)
    i = 0
    while i < len(first) and i < len(last) and first[i] == last[i]:
        i += 1
    return first[:i]


def dispatch_chains(interfaces: Iterable[str]) -> tuple[RenderedChain, ...]:
    """cali-from-wl-dispatch and cali-to-wl-dispatch with their `-<char>` sub-chains:
    names sorted, grouped by the character after their common prefix; a group of one is
    dispatched from the root chain, a larger group from its own sub-chain."""
    return _dispatch_chains(tuple(sorted(set(interfaces))))


# This and the static chains below are cached: the agent calculates on every batch of
# changes, most of which leave the node's interfaces and its configuration as they were.
@lru_cache(maxsize=64)
def _dispatch_chains(names: tuple[str, ...]) -> tuple[RenderedChain, ...]:
    unknown = Rule(Drop(), (), ("Unknown interface",))
    groups: dict[str, list[str]] = {}
    common = _common_prefix(names) if names else ""
    for name in names:
        groups.setdefault(name[: len(common) + 1], []).append(name)
    out: list[RenderedChain] = []
    for root, prefix, term in ((CHAIN_FROM_WL_DISPATCH, "cali-fw-", InInterface),
                               (CHAIN_TO_WL_DISPATCH, "cali-tw-", OutInterface)):
        root_rules: list[Rule] = []
        for group, members_ in groups.items():
            if len(members_) == 1:
                name = members_[0]
                root_rules.append(Rule(Goto(endpoint_chain_name(prefix, name)), (term(name),)))
                continue
            child = f"{root}-{group[len(common):]}"
            root_rules.append(Rule(Goto(child), (term(group + "+"),)))
            out.append(RenderedChain(child, (
                *(Rule(Goto(endpoint_chain_name(prefix, n)), (term(n),)) for n in members_),
                unknown)))
        out.append(RenderedChain(root, (*root_rules, unknown)))
    return tuple(out)


# --- the static chains (felix/rules/static.go) -----------------------------------------------


_END_TO_HOST: dict[str, Action] = {"Drop": Drop(), "Return": Return(), "Accept": Accept()}


@lru_cache(maxsize=4)
def static_chains(endpoint_to_host_action: EndpointToHostAction) -> tuple[RenderedChain, ...]:
    """cali-FORWARD, cali-OUTPUT, cali-wl-to-host and the (empty) host-endpoint chains
    they name, for a node without host endpoints."""
    accepted = MarkMatch(MARK_ACCEPT, MARK_ACCEPT)
    forward = RenderedChain(CHAIN_FORWARD, (
        Rule(ClearMark(ALL_CALICO_MARKS & ~MARK_ACCEPT)),
        Rule(Jump(CHAIN_FROM_HEP_FORWARD), (MarkMatch(0, MARK_ACCEPT),)),
        Rule(Jump(CHAIN_FROM_WL_DISPATCH), (InInterface(WORKLOAD_IFACE_WILDCARD),)),
        Rule(Jump(CHAIN_TO_WL_DISPATCH), (OutInterface(WORKLOAD_IFACE_WILDCARD),)),
        Rule(Jump(CHAIN_TO_HEP_FORWARD)),
        Rule(Jump(CHAIN_CIDR_BLOCK)),
        # Felix appends these two to the kernel FORWARD chain (StaticFilterForwardAppendRules).
        Rule(Accept(), (accepted,), ("Policy explicitly accepted packet.",)),
        Rule(SetMark(MARK_ACCEPT, MARK_ACCEPT)),
    ))
    output = RenderedChain(CHAIN_OUTPUT, (
        Rule(Accept(), (accepted,)),
        # Host to local workload: not policed, so the node's probes reach its pods.
        Rule(Return(), (OutInterface(WORKLOAD_IFACE_WILDCARD),)),
        Rule(ClearMark(ALL_CALICO_MARKS)),
        Rule(Jump(CHAIN_TO_HOST_ENDPOINT), (Conntrack("DNAT", negated=True),)),
        Rule(Accept(), (accepted,), ("Host endpoint policy accepted packet.",)),
    ))
    wl_to_host = RenderedChain(CHAIN_WL_TO_HOST, (
        Rule(Jump(CHAIN_FROM_WL_DISPATCH)),
        Rule(_END_TO_HOST[endpoint_to_host_action], (),
             ("Configured DefaultEndpointToHostAction",)),
    ))
    empty = [RenderedChain(name, ()) for name in (
        CHAIN_FROM_HEP_FORWARD, CHAIN_TO_HEP_FORWARD, CHAIN_CIDR_BLOCK,
        CHAIN_FROM_HOST_ENDPOINT, CHAIN_TO_HOST_ENDPOINT)]
    return (forward, output, wl_to_host, *empty)


@lru_cache(maxsize=1)
def input_rules() -> tuple[Rule, ...]:
    """The policy part of cali-INPUT (after the encapsulation rules agent/calc/rules.py
    owns): workloads' traffic to the host goes to cali-wl-to-host."""
    return (
        Rule(Goto(CHAIN_WL_TO_HOST), (InInterface(WORKLOAD_IFACE_WILDCARD),)),
        Rule(Accept(), (MarkMatch(MARK_ACCEPT, MARK_ACCEPT),)),
        Rule(ClearMark(ALL_CALICO_MARKS)),
        Rule(Jump(CHAIN_FROM_HOST_ENDPOINT)),
        Rule(Accept(), (MarkMatch(MARK_ACCEPT, MARK_ACCEPT),),
             ("Host endpoint policy accepted packet.",)),
    )


def failsafe_chains(inbound: Sequence[tuple[str, str | None, int]],
                    outbound: Sequence[tuple[str, str | None, int]]) -> list[RenderedChain]:
    """cali-failsafe-in / -out (filter table): (protocol, CIDR or None, port) always
    allowed to and from the host, from or to the CIDR when one is given (failsafeInChain,
    failsafeOutChain). Only host endpoint chains jump to them, so a node without host
    endpoints does not program them (Felix programs no chain that nothing jumps to)."""
    def chain(name: str, ports: Sequence[tuple[str, str | None, int]],
              net_side: Side) -> RenderedChain:
        rules = []
        for proto, net, port in ports:
            if net is not None and ipaddress.ip_network(net).version != 4:
                continue
            match: list[Term] = [_protocol(PROTOCOL_NUMBERS[proto]),
                                 PortMatch("dst", ((port, port),))]
            if net is not None:
                match.append(NetMatch(net_side, net))
            rules.append(Rule(Accept(), tuple(match)))
        return RenderedChain(name, tuple(rules))
    return [chain(CHAIN_FAILSAFE_IN, inbound, "src"), chain(CHAIN_FAILSAFE_OUT, outbound, "dst")]


# --- the whole node --------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalEndpoint:
    """A workload endpoint of this node: its compiled form and its host-side interface."""

    endpoint: Endpoint
    interface: str


@dataclass(frozen=True)
class PolicyRender:
    """The filter-table chains (cali-INPUT's policy part apart) and the ipsets with members."""

    chains: tuple[RenderedChain, ...]
    input_rules: tuple[Rule, ...]
    ipsets: tuple[tuple[IPSetSpec, frozenset[str]], ...]


def _endpoint_plan(state: PolicyState, endpoint: Endpoint, direction: Direction,
                   policy_chains: dict[str, tuple[RenderedChain, frozenset[IPSetSpec]]],
                   profiles: Mapping[str, Profile]) -> EndpointPlan:
    tiers = []
    for tier, policies in tiers_for(state, endpoint, direction):
        names = []
        for policy in policies:
            rendered = render_policy(policy, direction)
            policy_chains[rendered[0].name] = rendered
            names.append(rendered[0].name)
        tiers.append((tier.name, tier.default_action != "Pass", tuple(names)))
    profile_names = []
    for name in endpoint.profiles:
        profile = profiles.get(name) or Profile(name, (_DROP_RULE,), (_DROP_RULE,))
        rendered = render_profile(profile, direction)
        policy_chains[rendered[0].name] = rendered
        profile_names.append(rendered[0].name)
    return EndpointPlan(tuple(tiers), tuple(profile_names))


def _set_members(spec: IPSetSpec, endpoints: Iterable[Endpoint],
                 network_sets: Iterable[NetworkSet]) -> frozenset[str]:
    if spec.named_port is None:
        found = members(spec.selector, endpoints, network_sets)
        return frozenset(m for m in found if ":" not in m)
    return frozenset(
        f"{ip},{PROTOCOL_NAMES.get(proto, str(proto))}:{port}"
        for ip, proto, port in named_port_members(spec.selector, spec.named_port,
                                                  spec.protocol, endpoints)
        if ip.version == 4)


def _may_hold(spec: IPSetSpec, endpoint: Endpoint) -> bool:
    """Whether `endpoint` can contribute to the set: a superset of what _set_members keeps
    (which decides exactly), so the index below only has to track these endpoints."""
    if spec.named_port is not None and not any(p.name == spec.named_port
                                               for p in endpoint.ports):
        return False
    return spec.selector is None or spec.selector.evaluate(endpoint.labels)


class _TrackedSet:
    """One set's share of SetMemberIndex: its candidate endpoints, what each contributes
    alone, how many contribute each member, and what the network sets contribute alone."""

    __slots__ = ("candidates", "contributions", "counts", "from_network_sets", "found")

    def __init__(self) -> None:
        self.candidates: dict[str, Endpoint] = {}
        self.contributions: dict[str, frozenset[str]] = {}
        self.counts: dict[str, int] = {}
        self.from_network_sets: frozenset[str] | None = None
        self.found: frozenset[str] | None = None

    def put(self, spec: IPSetSpec, endpoint: Endpoint) -> None:
        self.drop(endpoint.key)
        if not _may_hold(spec, endpoint):
            return
        self.candidates[endpoint.key] = endpoint
        contributed = _set_members(spec, (endpoint,), ())
        self.contributions[endpoint.key] = contributed
        for member in contributed:
            self.counts[member] = self.counts.get(member, 0) + 1
        self.found = None

    def drop(self, key: str) -> None:
        if self.candidates.pop(key, None) is None:
            return
        for member in self.contributions.pop(key):
            left = self.counts[member] - 1
            if left:
                self.counts[member] = left
            else:
                del self.counts[member]
        self.found = None


class SetMemberIndex:
    """Ipset members kept up to date from one policy state to the next, for a caller that
    calculates again and again (the agent's ClusterState holds one).

    Computing every set from every endpoint costs sets x endpoints selector evaluations
    per calculation (seconds at 500 sets and 16 000 endpoints); here each set keeps the
    endpoints that may belong to it and what each contributes alone, and a new state
    costs one evaluation per set and changed endpoint, as Felix's label index does
    (`felix/labelindex/`). An endpoint counts as changed when its object is not last
    state's (agent/calc/state.py keeps unchanged endpoints' objects). When no network
    set contributes to a set, its members are the union of the endpoints' contributions
    (counted, so a member two endpoints share stays while one remains); otherwise
    _set_members recomputes them from the candidates, since a net may cover addresses.
    Either way the result is exactly the full computation's. Sets no calculation asked
    for in the previous state are forgotten.
    """

    def __init__(self) -> None:
        self._state: PolicyState | None = None
        self._endpoints: dict[str, Endpoint] = {}
        self._sets: dict[IPSetSpec, _TrackedSet] = {}
        self._used: set[IPSetSpec] = set()

    def members(self, spec: IPSetSpec, state: PolicyState) -> frozenset[str]:
        if state is not self._state:
            self._advance(state)
        self._used.add(spec)
        tracked = self._sets.get(spec)
        if tracked is None:
            tracked = self._sets[spec] = _TrackedSet()
            for endpoint in state.endpoints:
                tracked.put(spec, endpoint)
        if tracked.from_network_sets is None:
            tracked.from_network_sets = _set_members(spec, (), state.network_sets)
            tracked.found = None
        if tracked.found is None:
            tracked.found = _set_members(spec, tracked.candidates.values(), state.network_sets) \
                if tracked.from_network_sets else frozenset(tracked.counts)
        return tracked.found

    def _advance(self, state: PolicyState) -> None:
        previous = self._state
        self._state = state
        self._sets = {spec: self._sets[spec] for spec in self._used}
        self._used = set()
        old, new = self._endpoints, {e.key: e for e in state.endpoints}
        self._endpoints = new
        changed = [e for key, e in new.items() if old.get(key) is not e]
        removed = [key for key in old if key not in new]
        nets_changed = previous is None or previous.network_sets != state.network_sets
        for spec, tracked in self._sets.items():
            for endpoint in changed:
                tracked.put(spec, endpoint)
            for key in removed:
                tracked.drop(key)
            if nets_changed:
                tracked.from_network_sets = None


class RenderMemo:
    """What render_node keeps from one call to the next, for a caller that renders again
    and again (the agent's ClusterState holds one): ipset members (SetMemberIndex) and
    each local endpoint's plans. A plan is a function of the endpoint, the policies that
    apply to it in its direction, and the state's tiers and profiles, so it is reused
    while the endpoint is the same object, the tiers and profiles compare equal (tuples
    of the same objects: one identity check each), and no policy that applies to it was
    added, removed or replaced. A label change elsewhere then costs no tier walk for
    this node's endpoints, and a policy edit re-plans only the endpoints the policy
    selected before or after it (agent/calc/state.py keeps unchanged policies' objects,
    so a policy counts as changed when its object is not last state's)."""

    def __init__(self) -> None:
        self.set_members = SetMemberIndex()
        self._basis: tuple[object, ...] | None = None
        self._policies: tuple[CompiledPolicy, ...] = ()
        # (endpoint key, direction) -> (the endpoint, its plan, the chains the plan uses)
        self._plans: dict[tuple[str, Direction], tuple[
            Endpoint, EndpointPlan, dict[str, tuple[RenderedChain, frozenset[IPSetSpec]]]]] = {}
        # The plans the last render asked for; begin() moves them here so that the plans of
        # endpoints that left the node are dropped rather than kept forever.
        self._previous: dict[tuple[str, Direction], tuple[
            Endpoint, EndpointPlan, dict[str, tuple[RenderedChain, frozenset[IPSetSpec]]]]] = {}
        self.plans_built = 0  # how many plans were walked, not reused (for tests)

    def begin(self, state: PolicyState) -> None:
        basis = (state.tiers, state.profiles)
        if basis != self._basis:
            self._basis = basis
            self._plans = {}
        elif state.policies != self._policies:
            self._forget_plans_of(self._changed_policies(state.policies))
        self._policies = state.policies
        self._previous, self._plans = self._plans, {}

    def _changed_policies(self, policies: tuple[CompiledPolicy, ...]) -> list[CompiledPolicy]:
        """The policies added, removed or replaced since the last state, old and new objects
        both. By identity: the old tuple is still held, so no live id is reused."""
        old = {id(p): p for p in self._policies}
        new = {id(p): p for p in policies}
        return [p for key, p in old.items() if key not in new] + \
            [p for key, p in new.items() if key not in old]

    def _forget_plans_of(self, changed: Sequence[CompiledPolicy]) -> None:
        # Exactly the plans whose tier walk includes a changed policy: the others walk the
        # same policies, in the same order, to the same chains.
        stale = [slot for slot, (endpoint, _, _) in self._plans.items()
                 if applicable(changed, endpoint, slot[1])]
        for slot in stale:
            del self._plans[slot]

    def plan(self, state: PolicyState, endpoint: Endpoint, direction: Direction,
             policy_chains: dict[str, tuple[RenderedChain, frozenset[IPSetSpec]]]
             ) -> EndpointPlan:
        slot = (endpoint.key, direction)
        known = self._previous.get(slot)
        if known is None or known[0] is not endpoint:
            used: dict[str, tuple[RenderedChain, frozenset[IPSetSpec]]] = {}
            plan = _endpoint_plan(state, endpoint, direction, used, state.profiles_by_name)
            known = (endpoint, plan, used)
            self.plans_built += 1
        self._plans[slot] = known
        policy_chains.update(known[2])
        return known[1]


def render_node(state: PolicyState, local: Sequence[LocalEndpoint], *, vxlan_port: int,
                endpoint_to_host_action: EndpointToHostAction,
                memo: RenderMemo | None = None) -> PolicyRender:
    """Everything the filter table needs for this node's endpoints `local`; with `memo`,
    what did not change since its last call is taken from it (the same result)."""
    policy_chains: dict[str, tuple[RenderedChain, frozenset[IPSetSpec]]] = {}
    chains: list[RenderedChain] = []
    profiles = state.profiles_by_name
    if memo is not None:
        memo.begin(state)
    for item in sorted(local, key=lambda e: e.interface):
        for direction in ("ingress", "egress"):
            plan = _endpoint_plan(state, item.endpoint, direction, policy_chains, profiles) \
                if memo is None else memo.plan(state, item.endpoint, direction, policy_chains)
            chains.append(endpoint_chain(item.interface, direction, plan, vxlan_port))
    chains += dispatch_chains(e.interface for e in local)
    chains += static_chains(endpoint_to_host_action)
    specs: dict[str, IPSetSpec] = {}
    for name in sorted(policy_chains):
        chain, used = policy_chains[name]
        chains.append(chain)
        for spec in used:
            specs[spec.name] = spec
    if memo is None:
        ipsets = tuple((spec, _set_members(spec, state.endpoints, state.network_sets))
                       for _, spec in sorted(specs.items()))
    else:
        ipsets = tuple((spec, memo.set_members.members(spec, state))
                       for _, spec in sorted(specs.items()))
    return PolicyRender(tuple(chains), input_rules(), ipsets)
