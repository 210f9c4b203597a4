"""The agent's "policy programmed" status files (agent/endpoint_status.py) and their names
(datastore.names): Calico's names and content, written only after a successful apply,
only what changed, atomically, and nothing at all on a restart with nothing changed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent.calc import CalcConfig, ClusterState, calculate
from agent.dataplane.common import ApplyResult
from agent.dataplane.errors import DataplaneError
from agent.endpoint_status import EndpointStatusPublisher, status_content
from agent.types import DesiredDataplane
from datastore.names import dash_separated_parts, endpoint_status_filename, path_escape
from datastore.resources import WorkloadEndpoint
from datastore.syncer import SyncStatus, Update
from tests.support import wait_until
from tests.unit.test_agent_loop import FakeDataplane, make_agent, result, running
from tests.unit.test_calc_state import delete, node, owned, pool, wep, wep_key

# -- names: libcalico-go's test vectors (names/workloadendpointstatus_test.go) ---------------


@pytest.mark.parametrize(("text", "escaped"), [
    ("default/testpod1", "default%2Ftestpod1"),
    ("defaul/t/testp/od1", "defaul%2Ft%2Ftestp%2Fod1"),
    ("default/t est pod1", "default%2Ft%20est%20pod1"),
    ("a;b,c?d", "a%3Bb%2Cc%3Fd"),
    ("keep-_.~$&+:=@", "keep-_.~$&+:=@"),
    ("100%", "100%25"),
    ("é", "%C3%A9"),
])
def test_path_escape_is_gos(text: str, escaped: str) -> None:
    assert path_escape(text) == escaped


def test_the_file_name_comes_from_the_endpoint_name_as_felix_keys_it() -> None:
    assert endpoint_status_filename("default", "node1-k8s-pod1-eth0") == "k8s default%2Fpod1 eth0"
    # An FV endpoint of Calico's: dashes doubled inside each part.
    name = ("felix--0--821432--15--felixfv-felixfv-workload--endpoint--status--tests--0--idx7-"
            "workload--endpoint--status--tests--0--idx7")
    assert endpoint_status_filename("default", name) == (
        "felixfv default%2Fworkload-endpoint-status-tests-0-idx7 "
        "workload-endpoint-status-tests-0-idx7")
    assert endpoint_status_filename("ns-1", "my--node-cni-0123abc-eth1") == (
        "cni ns-1%2F0123abc eth1")


@pytest.mark.parametrize("name", ["node1-k8s-pod1", "a-b-c-d-e", "ab", "node1-k8s-pod1-eth0-"])
def test_a_name_without_four_parts_has_no_file(name: str) -> None:
    assert endpoint_status_filename("default", name) is None


def test_dash_separated_parts_undo_the_doubling() -> None:
    assert dash_separated_parts("a--b-c---d--e", 3) == ["a-b", "c-", "d-e"]
    assert dash_separated_parts("-a-b", 2) == ["-a", "b"]  # a leading dash never separates


# -- content -------------------------------------------------------------------------------


def workload(namespace: str, name: str, spec: dict) -> Update:
    res = WorkloadEndpoint.model_validate(
        {"metadata": {"name": name, "namespace": namespace}, "spec": spec})
    return Update("put", res.key(), res.to_stored(), 1)


def test_the_content_is_felixs_workload_endpoint_status_json() -> None:
    state = ClusterState()
    state.apply([workload("default", "node1-k8s-pod1-eth0", {
        "orchestrator": "k8s", "node": "node1", "pod": "pod1", "endpoint": "eth0",
        "interfaceName": "cali0123456789a", "mac": "01-02-03-04-05-AA",
        "ipNetworks": ["10.0.240.2/32"]})])
    (info,) = state.workloads.values()
    # Go's json.Marshal of epstatusfile.WorkloadEndpointStatus: declared field order, no
    # spaces, empty fields left out; the MAC as net.HardwareAddr prints it.
    assert status_content(info) == (b'{"ifaceName":"cali0123456789a","mac":"01:02:03:04:05:aa",'
                                    b'"ipv4Nets":["10.0.240.2/32"]}')


# -- the publisher against a directory -----------------------------------------------------

IFACE = "cali1234567890a"
CONFIG = CalcConfig(host_mtu=1500, parent_interface="eth0")


class Cluster:
    """A node with pods, its desired state, and a publisher over `tmp`."""

    def __init__(self, tmp: Path, clock: list[float] | None = None) -> None:
        self.state = ClusterState()
        self.state.apply([pool("pods", "10.65.0.0/16"), node("node1", "10.0.0.5/24"),
                          *owned("node1", "10.65.0.0/26")])
        self.clock = clock if clock is not None else [0.0]
        self.publisher = EndpointStatusPublisher(str(tmp), clock=lambda: self.clock[0])

    def apply(self, *updates: Update) -> DesiredDataplane:
        self.state.apply(updates)
        desired = calculate(self.state, "node1", CONFIG).dataplane
        self.publisher.expect(self.state, "node1", desired)
        return desired


def published_web(tmp: Path) -> Cluster:
    """A cluster whose pod default/web on node1 is expected and published to `tmp`."""
    c = Cluster(tmp)
    c.apply(wep("node1", "web", ["10.65.0.2/32"], iface=IFACE))
    c.publisher.publish()
    return c


def files(tmp: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_bytes()) for p in (tmp / "endpoint-status").iterdir()}


def test_local_endpoints_with_an_interface_get_a_file_after_publish(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    c.apply(wep("node1", "web", ["10.65.0.2/32"], iface=IFACE),
            wep("node1", "no-iface", ["10.65.0.3/32"]),          # not programmed: no interface
            wep("node2", "remote", ["10.65.1.2/32"], iface="cali000000000aa"))  # not local
    assert not (tmp_path / "endpoint-status").exists()  # expected, not yet applied
    c.publisher.publish()
    assert files(tmp_path) == {
        "k8s default%2Fweb eth0": {"ifaceName": IFACE, "ipv4Nets": ["10.65.0.2/32"]}}
    assert c.publisher.writes == 1
    assert not [p for p in (tmp_path / "endpoint-status").iterdir() if p.name.startswith(".")]


def test_only_changes_are_written_and_gone_endpoints_lose_their_file(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    c.apply(wep("node1", "web", ["10.65.0.2/32"], iface=IFACE),
            wep("node1", "db", ["10.65.0.3/32"], iface="cali0000000000b"))
    c.publisher.publish()
    assert c.publisher.writes == 2
    c.publisher.publish()  # a periodic resync's apply: nothing changed
    c.apply(pool("other", "10.66.0.0/16"))  # a recalculation that leaves the endpoints alone
    c.publisher.publish()
    assert c.publisher.writes == 2
    c.apply(wep("node1", "web", ["10.65.0.9/32"], iface=IFACE))  # its address changed
    c.publisher.publish()
    assert c.publisher.writes == 3
    assert files(tmp_path)["k8s default%2Fweb eth0"]["ipv4Nets"] == ["10.65.0.9/32"]
    c.apply(delete(wep_key("node1", "db")))
    c.publisher.publish()
    assert c.publisher.writes == 4
    assert list(files(tmp_path)) == ["k8s default%2Fweb eth0"]


def test_a_restart_with_nothing_changed_writes_nothing_and_strays_are_removed(
        tmp_path: Path) -> None:
    published_web(tmp_path)
    path = tmp_path / "endpoint-status" / "k8s default%2Fweb eth0"
    before = path.stat().st_mtime_ns, path.stat().st_ino
    assert published_web(tmp_path).publisher.writes == 0  # a restart
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == before
    # Felix's FV "should cleanup stale files after a restart": anything not wanted goes.
    (tmp_path / "endpoint-status" / "sdfsdf").write_text("")
    (tmp_path / "endpoint-status" / ".tmp-1").write_text("{")  # a crash mid-write
    assert published_web(tmp_path).publisher.writes == 2
    assert list(files(tmp_path)) == ["k8s default%2Fweb eth0"]


def test_a_file_removed_behind_the_agents_back_comes_back_at_the_next_rescan(
        tmp_path: Path) -> None:
    c = published_web(tmp_path)
    (tmp_path / "endpoint-status" / "k8s default%2Fweb eth0").unlink()
    c.clock[0] = 10.0
    c.publisher.publish()
    assert files(tmp_path) == {}  # not re-read yet: the publisher trusts its own writes
    c.clock[0] = 100.0
    c.publisher.publish()
    assert list(files(tmp_path)) == ["k8s default%2Fweb eth0"]


def test_a_directory_that_cannot_be_made_is_logged_and_retried(tmp_path: Path,
                                                                caplog) -> None:
    blocker = tmp_path / "prefix"
    blocker.write_text("a file where the directory should be")
    c = Cluster(blocker)
    c.apply(wep("node1", "web", ["10.65.0.2/32"], iface=IFACE))
    c.publisher.publish()  # must not raise
    assert "cannot" in caplog.text and c.publisher.writes == 0
    blocker.unlink()
    c.publisher.publish()
    assert list(files(blocker)) == ["k8s default%2Fweb eth0"]


# -- in the agent's loop ---------------------------------------------------------------------


def status_path(tmp: Path) -> Path:
    return tmp / "endpoint-status" / "k8s default%2Fweb eth0"


class WatchingDataplane(FakeDataplane):
    """Notes, at each apply, whether the status file existed before it."""

    path: Path = Path("/nonexistent")
    existed: list[bool] = []

    def apply(self):  # type: ignore[no-untyped-def]
        self.existed.append(self.path.exists())
        return super().apply()


def test_the_agent_publishes_only_after_the_apply_that_programmed_the_endpoint_succeeded(
        tmp_path: Path) -> None:
    failure = ApplyResult(errors=(DataplaneError("EPERM"),))
    dp = WatchingDataplane(script=[result(routes=failure)])
    dp.path, dp.existed = status_path(tmp_path), []
    agent = make_agent(dp, tmp_path)
    agent.on_updates([pool("pods", "10.65.0.0/16"), node("node1", "10.0.0.5/24"),
                      *owned("node1", "10.65.0.0/26"),
                      wep("node1", "web", ["10.65.0.2/32"], iface=IFACE)])
    agent.on_status(SyncStatus.IN_SYNC)
    with running(agent):
        wait_until(lambda: status_path(tmp_path).exists(), timeout=10.0, interval=0.01,
                   what="the status file")
        # Before the failed first apply and before its retry, there was no file.
        assert dp.existed[:2] == [False, False]
        agent.on_updates([delete(wep_key("node1", "web"))])
        wait_until(lambda: not status_path(tmp_path).exists(), timeout=10.0, interval=0.01,
                   what="the status file removed with its endpoint")
    assert os.listdir(tmp_path / "endpoint-status") == []
