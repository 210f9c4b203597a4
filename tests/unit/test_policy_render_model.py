"""The rendered chains, run: they must decide every flow as policy.evaluate does.

A small interpreter of policy.render's structured rules (iptables semantics: jump and
goto, RETURN, marks, ipset membership, first match) carries a new TCP or UDP
connection between two local pods through cali-FORWARD, as the kernel would. Over the
upstream netpol truth-table cases (tests/unit/test_policy_truth_table.py: nine pods,
all on this node), its verdict for every ordered pair, port and protocol must equal
evaluate()'s, and for TCP 80 the upstream expectation.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pytest
from hypothesis import given

from policy.evaluate import Flow, evaluate
from policy.model import PROTOCOL_NAMES, PolicyState
from policy.render import (
    Accept,
    ClearMark,
    Conntrack,
    Drop,
    Goto,
    ICMPMatch,
    InInterface,
    Jump,
    LocalEndpoint,
    MarkMatch,
    NetMatch,
    OutInterface,
    PortMatch,
    ProtocolMatch,
    RenderedChain,
    Return,
    SetMark,
    SetMatch,
    Term,
    render_node,
)

from .policy_cluster import Cluster
from .test_policy_properties import FAST, POD_KEYS, flows, states
from .test_policy_truth_table import ALL, CASES, address, state_for


@dataclass
class Packet:
    src: ipaddress.IPv4Address
    dst: ipaddress.IPv4Address
    protocol: int
    port: int
    iin: str
    iout: str
    mark: int = 0
    state: str = "NEW"


class Table:
    """The rendered filter table and ipsets of one node."""

    def __init__(self, state: PolicyState, local: list[LocalEndpoint]) -> None:
        out = render_node(state, local, vxlan_port=4789, endpoint_to_host_action="Return")
        self.chains = {c.name: c for c in out.chains}
        self.sets = {spec.name: members for spec, members in out.ipsets}

    def _in_set(self, name: str, ip: ipaddress.IPv4Address, p: Packet, with_port: bool) -> bool:
        members = self.sets[name]
        if with_port:
            return f"{ip},{PROTOCOL_NAMES[p.protocol]}:{p.port}" in members
        return any(ip in ipaddress.ip_network(m) for m in members)

    def matches(self, term: Term, p: Packet) -> bool:
        if isinstance(term, InInterface | OutInterface):
            iface = p.iin if isinstance(term, InInterface) else p.iout
            name = term.name
            return iface.startswith(name[:-1]) if name.endswith("+") else iface == name
        negated = getattr(term, "negated", False)
        if isinstance(term, Conntrack):
            hit = p.state in term.states.split(",")
        elif isinstance(term, MarkMatch):
            hit = p.mark & term.mask == term.mark
        elif isinstance(term, ProtocolMatch):
            hit = p.protocol == term.protocol
        elif isinstance(term, NetMatch):
            hit = (p.src if term.side == "src" else p.dst) in ipaddress.ip_network(term.cidr)
        elif isinstance(term, SetMatch):
            ip = p.src if term.side == "src" else p.dst
            hit = self._in_set(term.name, ip, p, term.with_port)
        elif isinstance(term, PortMatch):
            assert term.side == "dst", "flows here have no source port"
            hit = any(a <= p.port <= b for a, b in term.ranges)
        elif isinstance(term, ICMPMatch):
            hit = False  # TCP and UDP flows only
        else:
            raise AssertionError(f"unknown term {term!r}")
        return hit is not negated

    def run(self, name: str, p: Packet) -> str:
        """ACCEPT, DROP, or RETURN when the chain ends or returns."""
        chain: RenderedChain = self.chains[name]
        for rule in chain.rules:
            if not all(self.matches(t, p) for t in rule.match):
                continue
            action = rule.action
            if isinstance(action, Accept):
                return "ACCEPT"
            if isinstance(action, Drop):
                return "DROP"
            if isinstance(action, Return):
                return "RETURN"
            if isinstance(action, SetMark):
                p.mark = (p.mark & ~action.mask) | action.mark
            elif isinstance(action, ClearMark):
                p.mark &= ~action.mask
            elif isinstance(action, Jump | Goto):
                verdict = self.run(action.chain, p)
                if verdict != "RETURN":
                    return verdict
                if isinstance(action, Goto):
                    return "RETURN"  # a RETURN in a goto'd chain returns from this one
        return "RETURN"


def iface(key: str) -> str:
    return "cali" + key.replace("/", "")


def local_endpoints(state: PolicyState) -> list[LocalEndpoint]:
    key_of = {address(k): k for k in ALL}
    return [LocalEndpoint(e, iface(key_of[str(e.ips[0])])) for e in state.endpoints]


def forwarded(table: Table, src: str, dst: str, protocol: int, port: int) -> bool:
    p = Packet(ipaddress.ip_address(address(src)), ipaddress.ip_address(address(dst)),  # type: ignore[arg-type]
               protocol, port, iface(src), iface(dst))
    return table.run("cali-FORWARD", p) == "ACCEPT"


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_dataplane_decides_as_the_model(case: str) -> None:
    docs, reachability = CASES[case]()
    state = state_for(docs)
    table = Table(state, local_endpoints(state))
    wrong = []
    for src in ALL:
        for dst in ALL:
            if src == dst:
                continue
            for protocol, port in ((6, 80), (6, 81), (17, 80)):
                model = evaluate(state, Flow.of(address(src), address(dst), protocol, port))
                rendered = forwarded(table, src, dst, protocol, port)
                if rendered is not model.allowed:
                    wrong.append(f"{src} -> {dst} {protocol}/{port}: chains say {rendered}, "
                                 f"the model {model.allowed}")
            if forwarded(table, src, dst, 6, 80) is not reachability.expected[(src, dst)]:
                wrong.append(f"{src} -> {dst} TCP/80: not the upstream expectation")
    assert not wrong, "\n".join(wrong[:20])


def test_established_replies_pass_whatever_the_policy() -> None:
    docs, _ = CASES["default_deny_all"]()
    state = state_for(docs)
    table = Table(state, local_endpoints(state))
    p = Packet(ipaddress.ip_address(address("x/a")), ipaddress.ip_address(address("x/b")),  # type: ignore[arg-type]
               6, 80, iface("x/a"), iface("x/b"), state="ESTABLISHED")
    assert table.run("cali-FORWARD", p) == "ACCEPT"
    p.state, p.mark = "NEW", 0
    assert table.run("cali-FORWARD", p) == "DROP"


def test_an_unknown_interface_is_dropped_and_the_host_reaches_its_pods() -> None:
    state = state_for(CASES["default_deny_all"]()[0])
    table = Table(state, local_endpoints(state))
    p = Packet(ipaddress.ip_address("10.65.9.9"), ipaddress.ip_address(address("x/b")),  # type: ignore[arg-type]
               6, 80, "calinew", iface("x/b"))
    assert table.run("cali-FORWARD", p) == "DROP"
    # The host's own traffic leaves through OUTPUT: cali-OUTPUT returns early for cali+.
    out = Packet(ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address(address("x/b")),  # type: ignore[arg-type]
                 6, 80, "", iface("x/b"))
    assert table.run("cali-OUTPUT", out) == "RETURN"


@FAST
@given(states())
def test_the_dataplane_decides_as_the_model_on_random_policies(
        cluster_state: tuple[Cluster, PolicyState]) -> None:
    # Every pod rendered as local (the pod-to-pod verdict does not depend on the node),
    # and an outside address reached through the uplink.
    cluster, state = cluster_state
    ifaces = {cluster.ip(k): iface(k) for k in POD_KEYS}
    table = Table(state, [LocalEndpoint(cluster.pods[k], iface(k)) for k in POD_KEYS])
    for flow in flows(cluster):
        p = Packet(flow.src, flow.dst, flow.protocol, flow.dst_port or 0,  # type: ignore[arg-type]
                   ifaces.get(str(flow.src), "eth0"), ifaces.get(str(flow.dst), "eth0"))
        rendered = table.run("cali-FORWARD", p)
        assert (rendered == "ACCEPT") is evaluate(state, flow).allowed, (flow, rendered)
