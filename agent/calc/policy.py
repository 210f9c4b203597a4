"""The policy engine's part of the desired dataplane: policy.render's rules as iptables text.

Owns the iptables-restore form of policy.render's structured rules (Felix's
`felix/iptables/match_builder.go` and `actions.go` fragments), the filter-table hooks
from INPUT, FORWARD and OUTPUT, and the composition of cali-INPUT: agent/calc/rules.py's
encapsulation rules first, then the workload-to-host rules. Pure.

Invariants: a rendered chain's text is cached by the chain value, so an unchanged chain
costs one dictionary lookup and yields the identical Chain; every rule carries Felix's
`cali:<hash>` comment (agent/calc/rules.py), and comments are escaped and cut as Felix
does (`felix/iptables/renderer.go` escapeComment).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from policy.model import PROTOCOL_NAMES, EndpointToHostAction, PolicyState
from policy.render import (
    CHAIN_FORWARD,
    CHAIN_OUTPUT,
    Accept,
    Action,
    ClearMark,
    Conntrack,
    Drop,
    Goto,
    ICMPMatch,
    InInterface,
    Jump,
    LocalEndpoint,
    LogAction,
    MarkMatch,
    NetMatch,
    OutInterface,
    PortMatch,
    ProtocolMatch,
    RenderedChain,
    RenderMemo,
    Return,
    Rule,
    SetMark,
    SetMatch,
    Term,
    render_node,
)

from ..types import Chain, Hook, IPSet
from .rules import IptablesRule, make_chain, make_hook

MAX_COMMENT = 256
_SHELL_UNSAFE = re.compile(r"[^\w @%+=:,./-]")


def _mark(value: int) -> str:
    # Go's %#x prints 0 as "0x0"; Felix's MarkClear writes a literal 0 instead.
    return f"{value:#x}"


def _ports(ranges: Sequence[tuple[int, int]]) -> str:
    return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in ranges)


def _bang(negated: bool) -> str:
    return "! " if negated else ""


def term_text(term: Term) -> str:
    """One match term as Felix's iptables match builder writes it."""
    if isinstance(term, InInterface):
        return f"--in-interface {term.name}"
    if isinstance(term, OutInterface):
        return f"--out-interface {term.name}"
    if isinstance(term, Conntrack):
        return f"-m conntrack {_bang(term.negated)}--ctstate {term.states}"
    if isinstance(term, MarkMatch):
        mark = "0" if term.mark == 0 else _mark(term.mark)
        return f"-m mark {_bang(term.negated)}--mark {mark}/{_mark(term.mask)}"
    if isinstance(term, ProtocolMatch):
        name = PROTOCOL_NAMES[term.protocol] if term.by_name else str(term.protocol)
        return f"{_bang(term.negated)}-p {name}"
    if isinstance(term, NetMatch):
        flag = "--source" if term.side == "src" else "--destination"
        return f"{_bang(term.negated)}{flag} {term.cidr}"
    if isinstance(term, SetMatch):
        dims = f"{term.side},{term.side}" if term.with_port else term.side
        return f"-m set {_bang(term.negated)}--match-set {term.name} {dims}"
    if isinstance(term, PortMatch):
        flag = "--source-ports" if term.side == "src" else "--destination-ports"
        return f"-m multiport {_bang(term.negated)}{flag} {_ports(term.ranges)}"
    if isinstance(term, ICMPMatch):
        value = str(term.icmp_type) if term.code is None else f"{term.icmp_type}/{term.code}"
        return f"-m icmp {_bang(term.negated)}--icmp-type {value}"
    raise TypeError(f"unknown match term {term!r}")


def _target(action: Action | None) -> tuple[str, str, bool]:
    """(target, target arguments, goto) of an action, as Felix's actions write them."""
    if action is None:
        return "", "", False
    if isinstance(action, Accept):
        return "ACCEPT", "", False
    if isinstance(action, Drop):
        return "DROP", "", False
    if isinstance(action, Return):
        return "RETURN", "", False
    if isinstance(action, Jump):
        return action.chain, "", False
    if isinstance(action, Goto):
        return action.chain, "", True
    if isinstance(action, SetMark):
        return "MARK", f"--set-mark {_mark(action.mark)}/{_mark(action.mask)}", False
    if isinstance(action, ClearMark):
        return "MARK", f"--set-mark 0/{_mark(action.mask)}", False
    if isinstance(action, LogAction):
        return "LOG", f'--log-prefix "{action.prefix}: " --log-level 5', False
    raise TypeError(f"unknown action {action!r}")


def _comment(text: str) -> str:
    return _SHELL_UNSAFE.sub("_", text)[:MAX_COMMENT]


def iptables_rule(rule: Rule) -> IptablesRule:
    target, target_args, goto = _target(rule.action)
    return IptablesRule(match=" ".join(term_text(t) for t in rule.match), target=target,
                        target_args=target_args, goto=goto,
                        comments=tuple(_comment(c) for c in rule.comments))


@lru_cache(maxsize=65536)
def filter_chain(chain: RenderedChain) -> Chain:
    return make_chain("filter", chain.name, [iptables_rule(r) for r in chain.rules])


@dataclass(frozen=True)
class PolicyPlan:
    chains: frozenset[Chain]
    hooks: frozenset[Hook]
    ipsets: frozenset[IPSet]
    input_rules: tuple[IptablesRule, ...]  # cali-INPUT's policy part, after the encap rules


def plan_policy(state: PolicyState, local: Sequence[LocalEndpoint], *, vxlan_port: int,
                endpoint_to_host_action: EndpointToHostAction,
                memo: RenderMemo | None = None) -> PolicyPlan:
    """The filter chains, hooks and ipsets that police this node's workloads `local`."""
    rendered = render_node(state, local, vxlan_port=vxlan_port,
                           endpoint_to_host_action=endpoint_to_host_action,
                           memo=memo)
    return PolicyPlan(
        chains=frozenset(filter_chain(c) for c in rendered.chains),
        hooks=_policy_hooks(),
        ipsets=frozenset(IPSet(spec.name, spec.set_type, members)
                         for spec, members in rendered.ipsets),
        input_rules=_input_rules(rendered.input_rules),
    )


@lru_cache(maxsize=1)
def _policy_hooks() -> frozenset[Hook]:
    return frozenset({make_hook("filter", "FORWARD", CHAIN_FORWARD),
                      make_hook("filter", "OUTPUT", CHAIN_OUTPUT)})


@lru_cache(maxsize=4)
def _input_rules(rules: tuple[Rule, ...]) -> tuple[IptablesRule, ...]:
    return tuple(iptables_rule(r) for r in rules)
