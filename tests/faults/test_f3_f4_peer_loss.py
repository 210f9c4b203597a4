"""F3 and F4: a BGP peer lost by a TCP reset, and silently (FRR's BFD topotests black-hole
a peer with netem; RFC 4271's hold timer).

Both on node3 of a fault lab (tests/faults/conftest.py), whose pod block its three
peers route via node3:

* F3, reset: node3's namespace drops new BGP connections (SYNs to port 179) both
  ways, so nothing comes back, then `ss -K` aborts node3's BGP sockets, and the kernel
  sends each peer a RST.
  tortie always offers graceful restart and a reset is not a NOTIFICATION, so the
  peers keep the routes for the restart time; the test sets it to tortie's minimum,
  1 s (there is no switch that turns graceful restart off). Pass: node3's block is
  gone from every peer's kernel within restart time + 1 s of the reset.
* F4, silent: node3's namespace drops everything on `eth0` both ways, and everything
  it forwards for its pods (no RST, no FIN). Pass: the
  block is gone from every peer's kernel within hold time + 1 s; the hold time is 6 s
  here (restart time the default 120 s: a hold-timer expiry ends the session with a
  NOTIFICATION, which is not a graceful restart).
"""

from __future__ import annotations

import time

import pytest

from tests.support import need, wait_until

from .conftest import FaultLab, lost_from, print_withdrawal
from .prober import Prober

pytestmark = [pytest.mark.slow, pytest.mark.root]

VICTIM = "node3"
PEERS = ("node1", "node2", "node4")
RESTART_TIME = 1  # bgp/plan.py's minimum
HOLD_TIME = 6


def _in_victim(world: FaultLab, *argv: str) -> None:
    world.lab.exec(VICTIM, list(argv))


def _wait_withdrawn(world: FaultLab, since: float, bound: float) -> dict[str, float]:
    """Seconds from `since` until each peer's kernel lost node3's block (fails past `bound`)."""
    gone = {}
    for peer in PEERS:
        left = max(bound - (time.monotonic() - since), 0.1)
        wait_until(lambda peer=peer: world.block_route(peer, VICTIM) is None, timeout=left,
                   interval=0.05, what=f"{peer} to withdraw node3's block within {bound:g} s")
        gone[peer] = time.monotonic() - since
    return gone


def test_peer_lost_by_reset_is_withdrawn_within_the_restart_time_and_a_second(bgp_fault_lab):
    need("ss", "iptables")
    world = bgp_fault_lab(restart_time=RESTART_TIME)
    with Prober(world.pairs) as prober:
        _reset(world)
        reset = time.monotonic()
        gone = _wait_withdrawn(world, reset, RESTART_TIME + 1)
        report = prober.stop()
    print_withdrawal(f"F3 reset (restart time {RESTART_TIME} s)", gone, "the reset", report)
    assert lost_from(report, "node2", "node4") == 0, report.report()  # subnet 2: untouched


def _reset(world: FaultLab) -> None:
    """Reset node3's BGP sessions and keep new ones from starting: its namespace drops
    every SYN to port 179 both ways (RSTs pass), then `ss -K` aborts the established
    sockets, and the kernel sends each peer a RST (tcp_abort)."""
    for chain in ("INPUT", "OUTPUT"):
        _in_victim(world, "iptables", "-w", "-I", chain, "-p", "tcp", "--syn", "--dport", "179",
                   "-j", "DROP")
    _in_victim(world, "ss", "-K", "-t", "state", "established",
               "( sport = :179 or dport = :179 )")


def test_silently_lost_peer_is_withdrawn_within_the_hold_time_and_a_second(bgp_fault_lab):
    need("iptables")
    world = bgp_fault_lab(hold_time=HOLD_TIME)
    with Prober(world.pairs) as prober:
        _in_victim(world, "iptables", "-w", "-I", "INPUT", "-i", "eth0", "-j", "DROP")
        _in_victim(world, "iptables", "-w", "-I", "OUTPUT", "-o", "eth0", "-j", "DROP")
        _in_victim(world, "iptables", "-w", "-I", "FORWARD", "-j", "DROP")  # its pods' too
        cut = time.monotonic()
        gone = _wait_withdrawn(world, cut, HOLD_TIME + 1)
        report = prober.stop()
    print_withdrawal(f"F4 silent (hold time {HOLD_TIME} s)", gone, "the cut", report)
    assert lost_from(report, "node2", "node4") == 0, report.report()  # subnet 2: untouched
