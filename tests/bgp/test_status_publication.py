"""The BGP daemon's status document in etcd (what `ctl node status --all` reads), against
a real etcd: written for news, and otherwise only often enough to show it is current."""

from __future__ import annotations

import json
from pathlib import Path as FsPath

from bgp.daemon import STATUS_HEARTBEAT, STATUS_MIN_GAP, BGPDaemon
from bgp.rib import Rib
from bgp.status import status_key
from tests.unit.test_bgp_daemon import AS, ME, PLAN, B, Clock


def test_the_etcd_copy_of_the_status_is_written_when_it_changes_or_to_show_it_is_current(
        etcd_client) -> None:
    """The neighbour poll refreshes the status every 2 s; etcd gets a Put only for news, or
    after STATUS_HEARTBEAT (idle 50-node lab: 25 Puts/s before, for nothing)."""
    clock = Clock()
    d = BGPDaemon(etcd_client, "n1", workdir=FsPath("/nonexistent/tortie-test-bgp"),
                  control_name=None, publish_status=True, clock=clock, wall=clock)
    d.plan, d.rib, d.in_sync = PLAN, Rib(ME, None, AS), True
    d.book.set_plan(PLAN, clock.now)

    def stored_revision() -> int:
        kv = etcd_client.get(status_key("n1"))
        return kv.mod_revision if kv else 0

    def refresh_after(seconds: float) -> int:
        clock.now += seconds
        d._status_dirty = True  # what every neighbour poll does
        d._refresh_status(clock.now)
        return stored_revision()

    first = refresh_after(0)
    assert first > 0
    assert json.loads(etcd_client.get(status_key("n1")).value)["node"] == "n1"
    # Nothing new: polls every 2 s write nothing until the heartbeat is due.
    assert [refresh_after(2.0) for _ in range(int(STATUS_HEARTBEAT // 2) - 1)] \
        == [first] * (int(STATUS_HEARTBEAT // 2) - 1)
    heartbeat = refresh_after(2.0 + STATUS_MIN_GAP)
    assert heartbeat > first
    # News (a peer's prefix counts) is written at the next refresh.
    d.book.set_counts({B: (3, 1)})
    changed = refresh_after(STATUS_MIN_GAP)
    assert changed > heartbeat
    assert json.loads(etcd_client.get(status_key("n1")).value)["peers"][0]["received"] == 3
