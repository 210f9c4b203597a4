"""The agent's loop against a fake dataplane: what it applies, when, and from which events.

The loop is driven only through the Agent's public event API (the callbacks
the syncer, the link monitor and the BGP side call) and its `Dataplane`
Protocol; the fake records every call and answers each apply() with the next
scripted result. The real writers and their order are tested against the
kernel in tests/dataplane. No root, etcd or namespace: the loop never reads
etcd (start-up, which does, is not run here).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from agent.config import load
from agent.dataplane.common import ApplyResult
from agent.dataplane.errors import DataplaneError
from agent.dataplane.facade import (
    DataplaneResult,
    HostInterface,
    LinkCallback,
    ResyncKind,
    RouteRemovedCallback,
)
from agent.main import MIN_APPLY_INTERVAL, Agent
from agent.types import DesiredDataplane, Route, RouteClass
from bgp.types import BestPathChanges
from datastore.syncer import SyncStatus
from tests.support import wait_until
from tests.unit.test_calc_state import node, owned, pool, wep


@dataclass
class FakeDataplane:
    """Implements agent.dataplane.facade.Dataplane; records calls, scripts apply() results."""

    script: list[DataplaneResult] = field(default_factory=list)
    interfaces: dict[str, HostInterface] = field(default_factory=dict)  # IP -> interface
    applies: list[float] = field(default_factory=list)
    desired: list[DesiredDataplane] = field(default_factory=list)
    learned: list[Mapping[str, Route | None]] = field(default_factory=list)
    resyncs: list[ResyncKind] = field(default_factory=list)
    interface_changes: list[str] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)
    closed: bool = False
    on_apply: Callable[[], None] | None = None
    removed_routes: list[tuple[str, int]] = field(default_factory=list)
    host_route_changes: list[str | None] = field(default_factory=list)
    drift_checks: int = 0
    neighbour_removals: list[str] = field(default_factory=list)
    drift_script: list[list[str]] = field(default_factory=list)  # check_drift()'s answers

    def start(self, on_link: LinkCallback,
              on_route_removed: RouteRemovedCallback | None = None,
              on_host_route: Callable[[str | None], None] | None = None) -> None:
        pass

    def on_route_removed(self, dst: str, metric: int) -> None:
        self.removed_routes.append((dst, metric))

    def on_host_route_change(self, dev: str | None) -> bool:
        self.host_route_changes.append(dev)
        return dev is not None

    def on_neighbour_removed(self, device: str) -> None:
        self.neighbour_removals.append(device)

    def check_drift(self) -> list[str]:
        self.drift_checks += 1
        return self.drift_script.pop(0) if self.drift_script else []

    def set_desired(self, desired: DesiredDataplane) -> None:
        self.desired.append(desired)

    def update_learned_routes(self, changes: Mapping[str, Route | None]) -> None:
        self.learned.append(dict(changes))

    def apply(self) -> DataplaneResult:
        if self.on_apply is not None:
            self.on_apply()
        self.applies.append(time.monotonic())
        return self.script.pop(0) if self.script else DataplaneResult()

    def resync(self, kind: ResyncKind) -> None:
        self.resyncs.append(kind)

    def on_interface_change(self, name: str) -> None:
        self.interface_changes.append(name)

    def host_interface(self, ip: str) -> HostInterface | None:
        self.lookups.append(ip)
        return self.interfaces.get(ip)

    def routes_by_class(self) -> dict[RouteClass, int]:
        return {}

    def close(self) -> None:
        self.closed = True


def result(**by_writer: ApplyResult) -> DataplaneResult:
    return DataplaneResult(results=dict(by_writer))


def make_agent(dataplane: FakeDataplane, tmp_path, **env: str) -> Agent:
    config = load({"NODENAME": "node1", "CALICO_MTU_FILE": str(tmp_path / "mtu"),
                   "FELIX_ENDPOINTSTATUSPATHPREFIX": str(tmp_path), **env}, log=False)
    # No client: run_loop() never reads etcd (start-up, which does, is not run here).
    return Agent(config, client=None, dataplane=dataplane,  # type: ignore[arg-type]
                 nodename="node1")


@contextmanager
def running(agent: Agent) -> Iterator[None]:
    """The loop in a thread for the `with` block; stopped (and joined) after it."""
    thread = threading.Thread(target=agent.run_loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        agent.stop()
        thread.join(timeout=5)
    assert not thread.is_alive()


def run_until(agent: Agent, until: Callable[[], bool], what: str) -> None:
    """Run the loop until `until()` holds, then stop it."""
    with running(agent):
        wait_until(until, timeout=10.0, interval=0.01, what=what)


def wait_applies(dp: FakeDataplane, count: int, what: str) -> None:
    """Until the loop (running) has applied `count` times."""
    wait_until(lambda: len(dp.applies) >= count, timeout=10.0, interval=0.01, what=what)


def run_for(agent: Agent, seconds: float) -> None:
    """Run the loop for a fixed window, to observe that nothing (more) happens in it."""
    with running(agent):
        time.sleep(seconds)


def test_a_held_back_deletion_is_applied_when_due_without_new_input(tmp_path) -> None:
    # The first apply holds a deletion back for 0.2 s (the route table's grace period).
    dp = FakeDataplane(script=[result(routes=ApplyResult(skipped=1, retry_after=0.2))])
    agent = make_agent(dp, tmp_path)
    agent.on_status(SyncStatus.IN_SYNC)
    run_until(agent, lambda: len(dp.applies) >= 2, "the apply of the held-back deletion")
    assert len(dp.applies) == 2
    gap = dp.applies[1] - dp.applies[0]
    assert gap >= 0.2, f"applied again after {gap:.3f} s, before the deletion was due"


def test_without_a_request_the_loop_stays_idle(tmp_path) -> None:
    dp = FakeDataplane()
    agent = make_agent(dp, tmp_path)
    agent.on_status(SyncStatus.IN_SYNC)
    run_for(agent, 0.5)
    assert len(dp.applies) == 1  # the initial apply, then nothing until input arrives
    assert len(dp.desired) == 1


def test_nothing_is_programmed_before_the_datastore_is_in_sync(tmp_path) -> None:
    dp = FakeDataplane()
    agent = make_agent(dp, tmp_path)
    agent.on_status(SyncStatus.RESYNC)
    agent.on_updates([pool("pods", "10.65.0.0/16")])
    run_for(agent, 0.3)
    assert dp.applies == [] and dp.desired == []


def test_datastore_updates_reach_the_dataplane_as_desired_state(tmp_path) -> None:
    dp = FakeDataplane(interfaces={"10.0.0.5": HostInterface("eth0", 9000)})
    agent = make_agent(dp, tmp_path)
    agent.on_updates([pool("pods", "10.65.0.0/16"), node("node1", "10.0.0.5/24"),
                      *owned("node1", "10.65.0.0/26"),
                      wep("node1", "web", ["10.65.0.2/32"], iface="cali1234567890a")])
    agent.on_status(SyncStatus.IN_SYNC)
    run_until(agent, lambda: len(dp.applies) >= 1, "the first apply")
    assert dp.lookups == ["10.0.0.5"]  # the parent interface, looked up through the dataplane
    routes = {r.dst: r for r in dp.desired[-1].routes}
    assert routes["10.65.0.2/32"].dev == "cali1234567890a"
    assert routes["10.65.0.0/26"].type == "blackhole"
    assert (tmp_path / "mtu").read_text() == "9000\n"  # the parent's MTU, as published


def test_a_link_event_goes_to_the_dataplane_and_the_parent_is_looked_up_again(tmp_path) -> None:
    dp = FakeDataplane(interfaces={"10.0.0.5": HostInterface("eth0", 1500)})
    agent = make_agent(dp, tmp_path)
    agent.on_updates([node("node1", "10.0.0.5/24")])
    agent.on_status(SyncStatus.IN_SYNC)
    with running(agent):
        wait_until(lambda: len(dp.applies) >= 1, timeout=10.0, interval=0.01,
                   what="the first apply")
        dp.interfaces["10.0.0.5"] = HostInterface("eth0", 9000)
        agent.on_link("cali1234567890a", "added")
        agent.on_link("eth0", "up")
        wait_until(lambda: (tmp_path / "mtu").read_text() == "9000\n", timeout=10.0,
                   interval=0.01, what="the parent's new MTU published")
    assert dp.interface_changes == ["cali1234567890a", "eth0"]
    assert dp.lookups == ["10.0.0.5", "10.0.0.5"]  # the parent's event invalidated the look-up
    assert (tmp_path / "mtu").read_text() == "9000\n"


def test_a_route_deleted_behind_the_agents_back_goes_to_the_dataplane_and_is_applied(
    tmp_path,
) -> None:
    dp = FakeDataplane(interfaces={"10.0.0.5": HostInterface("eth0", 1500)})
    agent = make_agent(dp, tmp_path, FELIX_DRIFTCHECKINTERVAL="0")
    agent.on_updates([node("node1", "10.0.0.5/24")])
    agent.on_status(SyncStatus.IN_SYNC)
    with running(agent):
        wait_until(lambda: len(dp.applies) >= 1, timeout=10.0, interval=0.01,
                   what="the first apply")
        agent.on_route_removed("10.65.0.2/32", 0)
        wait_until(lambda: len(dp.applies) >= 2, timeout=10.0, interval=0.01,
                   what="an apply after the deletion")
        agent.on_link("vxlan.calico", "neighbour-removed")
        wait_until(lambda: len(dp.applies) >= 3, timeout=10.0, interval=0.01,
                   what="an apply after the neighbour's deletion")
    assert dp.removed_routes == [("10.65.0.2/32", 0)]
    assert dp.neighbour_removals == ["vxlan.calico"]
    assert dp.interface_changes == []  # not a link event: no route grace period
    assert dp.drift_checks == 0  # disabled by FELIX_DRIFTCHECKINTERVAL=0


def test_the_drift_check_applies_only_when_a_writer_found_drift(tmp_path) -> None:
    dp = FakeDataplane(interfaces={"10.0.0.5": HostInterface("eth0", 1500)},
                       drift_script=[[], ["iptables-filter"]])
    agent = make_agent(dp, tmp_path, FELIX_DRIFTCHECKINTERVAL="0.05")
    agent.on_updates([node("node1", "10.0.0.5/24")])
    agent.on_status(SyncStatus.IN_SYNC)
    with running(agent):
        wait_until(lambda: dp.drift_checks >= 3, timeout=10.0, interval=0.01,
                   what="three drift checks")
    # The first apply, then one more for the one check that found drift.
    assert len(dp.applies) == 2
    assert b"drift-iptables-filter" in agent.metrics.render()


def test_lost_link_events_resync_routes_and_devices_and_apply(tmp_path) -> None:
    # The link monitor overran its socket (ENOBUFS): ("*", "resync"), not a link named "*".
    dp = FakeDataplane()
    agent = make_agent(dp, tmp_path)
    agent.on_status(SyncStatus.IN_SYNC)
    with running(agent):
        wait_applies(dp, 1, "the first apply")
        agent.on_link("*", "resync")
        wait_applies(dp, 2, "an apply after the resync")
    assert dp.resyncs == ["routes"]
    assert dp.interface_changes == []
    assert "link-overrun" in agent.metrics.render().decode()


def test_learned_routes_reach_the_dataplane_as_a_delta(tmp_path) -> None:
    dp = FakeDataplane(interfaces={"10.0.0.5": HostInterface("eth0", 1500)})
    agent = make_agent(dp, tmp_path)
    agent.on_updates([pool("pods", "10.65.0.0/16"), node("node1", "10.0.0.5/24")])
    agent.on_status(SyncStatus.IN_SYNC)
    agent.on_learned(BestPathChanges({"10.65.9.0/26": ("10.0.0.9", "10.0.0.9")}, reset=True))
    with running(agent):
        wait_until(lambda: dp.learned, timeout=10.0, interval=0.01, what="learned routes")
        # A peer on the node's subnet, in a pool without encapsulation: via it, on eth0.
        assert dp.learned == [
            {"10.65.9.0/26": Route("10.65.9.0/26", RouteClass.NO_ENCAP, gateway="10.0.0.9",
                                   dev="eth0", onlink=True)}]
        agent.on_learned(BestPathChanges({"10.65.9.0/26": None}))
        wait_until(lambda: len(dp.learned) >= 2, timeout=10.0, interval=0.01,
                   what="the withdrawal")
    assert dp.learned[1] == {"10.65.9.0/26": None}


def test_a_failed_apply_is_retried_with_backoff_and_reported(tmp_path) -> None:
    failure = ApplyResult(errors=(DataplaneError("EPERM"),))
    dp = FakeDataplane(script=[result(routes=failure)])
    agent = make_agent(dp, tmp_path)
    agent.on_status(SyncStatus.IN_SYNC)
    dataplane_ready: list[bool] = []

    def second_apply() -> bool:
        dataplane_ready.append(agent.health.summary()["components"]["dataplane"]["ready"])
        return len(dp.applies) >= 2

    run_until(agent, second_apply, "the retry of the failed apply")
    assert len(dp.applies) == 2, "the failed apply was not retried"
    assert dp.applies[1] - dp.applies[0] >= 1.0  # MIN_BACKOFF
    assert agent.stats.apply_errors == 1 and agent.stats.last_error == "routes: EPERM"
    assert False in dataplane_ready  # not ready while the failure stood
    assert agent.health.summary()["components"]["dataplane"]["ready"]  # ready once it applied


def test_each_kind_is_resynced_on_its_own_interval(tmp_path) -> None:
    dp = FakeDataplane()
    agent = make_agent(dp, tmp_path, FELIX_ROUTEREFRESHINTERVAL="0.1",
                       FELIX_IPTABLESREFRESHINTERVAL="3600", FELIX_IPSETSREFRESHINTERVAL="0.2")
    agent.on_status(SyncStatus.IN_SYNC)
    run_until(agent, lambda: dp.resyncs.count("ipsets") >= 2, "two ipset resyncs")
    assert dp.resyncs.count("routes") >= 2 * dp.resyncs.count("ipsets") - 1
    assert "iptables" not in dp.resyncs
    assert len(dp.applies) >= 2  # each resync is followed by an apply that repairs drift


def test_a_burst_of_changes_is_applied_in_batches_at_least_the_minimum_interval_apart(
        tmp_path) -> None:
    # Pods being added: a link event every 10 ms. Each apply costs the same iptables
    # processes, so the loop starts applies MIN_APPLY_INTERVAL apart, and the last
    # change of the burst is still applied.
    dp = FakeDataplane()
    agent = make_agent(dp, tmp_path)
    # When the loop started each apply, by its own clock: the fake's own timestamps
    # would also count the time the loop's thread waited to be scheduled in between.
    started: list[float] = []
    dp.on_apply = lambda: started.append(agent._next_apply_at - MIN_APPLY_INTERVAL)
    agent.on_status(SyncStatus.IN_SYNC)
    with running(agent):
        wait_applies(dp, 1, "the initial apply")
        for i in range(40):
            # Taken before the event: the apply that carries the last event may start
            # before this loop's sleep ends, and no apply follows it.
            sent = time.monotonic()
            agent.on_link(f"cali{i:011d}", "added")
            time.sleep(0.01)
        wait_until(lambda: dp.applies[-1] > sent, timeout=30.0, interval=0.01,
                   what="an apply after the last link event")
    assert dp.interface_changes[-1] == "cali00000000039"
    gaps = [b - a for a, b in zip(started, started[1:], strict=False)]
    assert min(gaps) >= MIN_APPLY_INTERVAL, f"applies {min(gaps):.3f} s apart"
    assert len(dp.applies) < 40  # batched, not one per event


def test_a_change_the_calculation_cannot_see_is_neither_calculated_nor_applied(tmp_path) -> None:
    """agent.calc.unchanged_by in the loop: another node's pod inside its node's block
    (a VXLAN pool, no policy) changes nothing here; this node's pod does."""
    dp = FakeDataplane(interfaces={"10.0.0.5": HostInterface("eth0", 1500)})
    agent = make_agent(dp, tmp_path)
    agent.on_updates([pool("pods", "10.65.0.0/16", vxlan="Always"),
                      node("node1", "10.0.0.5/24", vxlan_tunnel="10.65.0.0"),
                      node("node2", "10.0.0.6/24", vxlan_tunnel="10.65.1.0"),
                      *owned("node1", "10.65.0.0/26"), *owned("node2", "10.65.1.0/26")])
    agent.on_status(SyncStatus.IN_SYNC)
    with running(agent):
        wait_until(lambda: len(dp.applies) >= 1, timeout=10.0, what="the first apply")
        calculated, applies = agent.stats.calculations, len(dp.applies)
        agent.on_updates([wep("node2", "remote", ["10.65.1.7/32"], iface="cali0000000000a"),
                          owned("node2", "10.65.1.0/26", {7: "node2"})[0]])
        wait_until(lambda: agent.stats.calculations_skipped == 1, timeout=10.0,
                   what="the skipped batch")
        assert (agent.stats.calculations, len(dp.applies)) == (calculated, applies)
        assert b'tortie_calculations_total{result="skipped"} 1.0' in agent.metrics.render()
        agent.on_updates([wep("node1", "local", ["10.65.0.7/32"], iface="cali0000000000b")])
        wait_until(lambda: len(dp.applies) > applies, timeout=10.0, what="the local pod's apply")
    assert agent.stats.calculations == calculated + 1
    assert "10.65.0.7/32" in {r.dst for r in dp.desired[-1].routes}
