"""bgp.status liveness/readiness (tortie-bgp --live/--ready): calico-node's -bird-ready rules
on the status document, and the probe's verdict when no daemon answers."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from agent.bgp_sidecar import probe
from bgp.control import ControlServer
from bgp.status import liveness, readiness

NOW = 1_000_000.0


def doc(*states: str, started: float = NOW - 600, speaker: str = "running",
        in_sync: bool = True) -> dict[str, Any]:
    peers = [{"address": f"10.0.0.{i + 2}", "state": s} for i, s in enumerate(states)]
    return {"time": NOW - 1, "started": started, "inSync": in_sync, "speaker": speaker,
            "peers": peers}


def test_no_peers_is_ready() -> None:
    assert readiness(doc(), NOW) == (True, "tortie-bgp is ready: no BGP peers configured")


def test_not_ready_before_the_datastore_is_in_sync() -> None:
    assert readiness(doc(in_sync=False), NOW) == (
        False, "tortie-bgp is not ready: waiting for the datastore to be in sync")
    assert readiness({}, NOW)[0] is False  # nothing published yet


def test_not_ready_while_the_datastore_watch_is_lost_and_ready_again_after() -> None:
    lost = {**doc("up"), "datastore": "wait-for-datastore"}
    assert readiness(lost, NOW) == (
        False, "tortie-bgp is not ready: the datastore connection is lost (re-watching)")
    assert readiness({**lost, "datastore": "in-sync"}, NOW)[0] is True
    assert readiness({**lost, "datastore": "resync"}, NOW)[0] is True  # connected, re-listing


def test_just_started_every_peer_must_be_established() -> None:
    young = NOW - 5
    assert readiness(doc("up", "start", started=young), NOW) == (
        False, "tortie-bgp is not ready: BGP not established with 10.0.0.3")
    assert readiness(doc("up", "up", started=young), NOW) == (
        True, "tortie-bgp is ready: 2 of 2 BGP sessions established")


def test_later_one_established_peer_is_enough() -> None:
    assert readiness(doc("up", "start", "start"), NOW) == (
        True, "tortie-bgp is ready: 1 of 3 BGP sessions established")
    assert readiness(doc("start", "start"), NOW) == (
        False, "tortie-bgp is not ready: BGP not established with 10.0.0.2,10.0.0.3")


def test_the_threshold_is_the_callers() -> None:
    started = NOW - 45
    assert readiness(doc("up", "start", started=started), NOW)[0] is True
    assert readiness(doc("up", "start", started=started), NOW, threshold=60)[0] is False


def test_a_stopped_speaker_is_said() -> None:
    assert readiness(doc("down", speaker="stopped"), NOW) == (
        False, "tortie-bgp is not ready: BGP not established with 10.0.0.2 "
               "(BGP speaker not running)")


def test_liveness_is_a_fresh_status() -> None:
    assert liveness(doc(), NOW) == (True, "tortie-bgp is live: BGP speaker running")
    assert liveness({}, NOW) == (True, "tortie-bgp is live: starting")
    stuck = {**doc(), "time": NOW - 90}
    assert liveness(stuck, NOW) == (
        False, "tortie-bgp is not live: its loop last refreshed its status 90s ago")


@pytest.mark.parametrize("live", [True, False])
def test_nothing_answering_is_neither_live_nor_ready(live: bool, capsys) -> None:
    name = f"tortie-test-{uuid.uuid4().hex[:8]}"
    assert probe(live=live, control=name) == 1
    kind = "live" if live else "ready"
    assert capsys.readouterr().out.startswith(
        f"tortie-bgp is not {kind}: no BGP daemon answers on @{name} (")


def test_the_probe_asks_the_control_socket(capsys) -> None:
    name = f"tortie-test-{uuid.uuid4().hex[:8]}"
    server = ControlServer(name, lambda: {**doc("up"), "time": time.time()}).start()
    try:
        assert probe(live=True, control=name) == 0
        assert capsys.readouterr().out == "tortie-bgp is live: BGP speaker running\n"
    finally:
        server.close()
