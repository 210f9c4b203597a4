"""The syncer against a real etcd: snapshot, in-sync, events, restarts, compaction."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from datastore.config import load_env
from datastore.errors import ConnectionFailed, WatchCreateTimedOut
from datastore.etcd import EtcdClient
from datastore.keys import DATAPLANE_SYNC_PREFIXES
from datastore.syncer import FanOut, Syncer, SyncerCallbacks, SyncStatus, Update
from tests.support import wait_until

RES = "/calico/resources/v3/projectcalico.org/"
IPAM = "/calico/ipam/v2/"
PREFIXES = (RES, IPAM)
OUTSIDE = ("/calico/felix/v1/host/n1/x", "/calico/resources/v3/projectcalico.orgx/y")

WAIT = SyncStatus.WAIT_FOR_DATASTORE
RESYNC = SyncStatus.RESYNC
IN_SYNC = SyncStatus.IN_SYNC


class Recorder:
    """A consumer that applies updates to a dict and notes anything a consumer must never see."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[tuple[str, Any]] = []  # ("status", SyncStatus) | ("updates", [Update])
        self.state: dict[str, tuple[bytes, int]] = {}
        self.delivered: set[tuple[str, int]] = set()
        self.problems: list[str] = []
        self.threads: set[int] = set()

    def on_status(self, status: SyncStatus) -> None:
        with self.lock:
            self.threads.add(threading.get_ident())
            self.log.append(("status", status))

    def on_updates(self, updates: list[Update]) -> None:
        with self.lock:
            self.threads.add(threading.get_ident())
            self.log.append(("updates", list(updates)))
            for u in updates:
                if (u.key, u.revision) in self.delivered:
                    self.problems.append(f"delivered twice: {u}")
                self.delivered.add((u.key, u.revision))
                old = self.state.get(u.key)
                if old is not None and u.revision <= old[1]:
                    self.problems.append(f"revision went backwards: {u} after {old[1]}")
                if u.kind == "put":
                    self.state[u.key] = (u.value, u.revision)
                elif old is None:
                    self.problems.append(f"delete of a key never delivered: {u}")
                else:
                    del self.state[u.key]

    def statuses(self) -> list[SyncStatus]:
        with self.lock:
            return [item for kind, item in self.log if kind == "status"]

    def updates(self) -> list[Update]:
        with self.lock:
            return [u for kind, batch in self.log if kind == "updates" for u in batch]

    def updates_after(self, n_status: int) -> list[Update]:
        """Updates delivered after the n-th status callback (1-based)."""
        out: list[Update] = []
        seen = 0
        with self.lock:
            for kind, item in self.log:
                if kind == "status":
                    seen += 1
                elif seen >= n_status:
                    out.extend(item)
        return out

    def snapshot_state(self) -> dict[str, tuple[bytes, int]]:
        with self.lock:
            return dict(self.state)


def _client(url: str, timeout: float = 5.0) -> EtcdClient:
    return EtcdClient(load_env({"ETCD_ENDPOINTS": url}), timeout=timeout)


def etcd_state(client: EtcdClient) -> dict[str, tuple[bytes, int]]:
    kvs, rev = client.list(PREFIXES[0])
    more, _ = client.list(PREFIXES[1], revision=rev)
    return {kv.key: (kv.value, kv.mod_revision) for kv in kvs + more}


def wait_consistent(rec: Recorder, client: EtcdClient, timeout: float = 30.0) -> None:
    expected = etcd_state(client)
    wait_until(lambda: rec.snapshot_state() == expected, timeout, interval=0.02,
               what="consumer == etcd")


def wait_connected(url: str, timeout: float = 30.0) -> EtcdClient:
    """A fresh client once etcd answers again (gRPC reconnects with its own backoff)."""
    client = _client(url)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.revision()
            return client
        except ConnectionFailed:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def random_ops(client: EtcdClient, rng: random.Random, n: int, live: set[str]) -> None:
    """n random puts/deletes over a small key space in, and just outside, the prefixes."""
    names = [f"{p}k{i:02d}" for p in (*PREFIXES, "/calico/felix/v1/") for i in range(15)]
    for _ in range(n):
        key = rng.choice(names)
        if key in live and rng.random() < 0.4:
            client.delete(key)
            live.discard(key)
        else:
            client.put(key, rng.randbytes(rng.randint(0, 12)))
            live.add(key)


@pytest.fixture
def run_syncer() -> Iterator[Callable[..., tuple[Syncer, Recorder]]]:
    """Start syncers; every one is stopped (and checked stopped) at teardown."""
    started: list[tuple[Syncer, Any]] = []

    def start(client: Any, callbacks: SyncerCallbacks | None = None,
              **kw: Any) -> tuple[Syncer, Recorder]:
        rec = callbacks or Recorder()
        syncer = Syncer(client, kw.pop("prefixes", PREFIXES), rec,
                        retry_interval=kw.pop("retry_interval", 0.05), **kw)
        syncer.start()
        started.append((syncer, client))
        return syncer, rec  # type: ignore[return-value]

    yield start
    for syncer, client in started:
        gate = getattr(client, "open", None)
        if gate is not None:
            gate.set()
        syncer.stop()
        client.close()
    assert not [t for t in threading.enumerate() if t.name == "tortie-syncer"]


class GatedClient:
    """An EtcdClient whose watch_prefix blocks while the gate is closed (test hook)."""

    def __init__(self, client: EtcdClient) -> None:
        self._client = client
        self.open = threading.Event()
        self.open.set()
        self.blocked = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def watch_prefix(self, *args: Any, **kwargs: Any) -> Callable[[], None]:
        if not self.open.is_set():
            self.blocked.set()
            self.open.wait()
        return self._client.watch_prefix(*args, **kwargs)


class ReplayingClient:
    """An EtcdClient whose watches always start at revision 1: every event is replayed."""

    def __init__(self, client: EtcdClient) -> None:
        self._client = client
        self.watches = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def watch_prefix(self, prefix: str, start_revision: int, *args: Any,
                     **kwargs: Any) -> Callable[[], None]:
        self.watches += 1
        return self._client.watch_prefix(prefix, 1, *args, **kwargs)


class UnconfirmedWatchClient:
    """An EtcdClient whose first `misses` watch creations are not confirmed in time, as on
    a member too starved to answer (test hook: a real etcd answers at once here)."""

    def __init__(self, client: EtcdClient, misses: int) -> None:
        self._client = client
        self.misses = misses
        self.deadlines: list[float] = []  # the create_timeout of every attempt

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def watch_prefix(self, *args: Any, create_timeout: float, **kwargs: Any) -> Callable[[], None]:
        self.deadlines.append(create_timeout)
        if self.misses > 0:
            self.misses -= 1
            raise WatchCreateTimedOut(self._client.config.urls, create_timeout)
        return self._client.watch_prefix(*args, create_timeout=create_timeout, **kwargs)


# -- tests ----------------------------------------------------------------------------


def test_snapshot_then_in_sync_then_live_events(etcd_client, etcd_endpoint, run_syncer):
    c = etcd_client
    r1 = c.put(RES + "ippools/pool-a", b"a1")
    r2 = c.put(RES + "nodes/n1", b"n1")
    r3 = c.put(IPAM + "assignment/ipv4/block/10.0.0.0-26", b"blk")
    for key in OUTSIDE:
        c.put(key, b"outside")

    syncer, rec = run_syncer(_client(etcd_endpoint))
    assert syncer.wait_in_sync(10)
    assert rec.statuses() == [WAIT, RESYNC, IN_SYNC]
    snapshot = rec.updates()
    assert sorted(snapshot, key=lambda u: u.key) == [
        Update("put", IPAM + "assignment/ipv4/block/10.0.0.0-26", b"blk", r3),
        Update("put", RES + "ippools/pool-a", b"a1", r1),
        Update("put", RES + "nodes/n1", b"n1", r2),
    ]
    assert rec.log[1] == ("status", RESYNC) and rec.log[-1] == ("status", IN_SYNC)

    live = [
        Update("put", RES + "ippools/pool-b", b"b1", c.put(RES + "ippools/pool-b", b"b1")),
        Update("put", IPAM + "assignment/ipv4/block/10.0.0.0-26", b"blk2",
               c.put(IPAM + "assignment/ipv4/block/10.0.0.0-26", b"blk2")),
    ]
    c.put(OUTSIDE[0], b"changed")
    c.put(OUTSIDE[1], b"changed")
    live.append(Update("delete", RES + "nodes/n1", b"", c.delete(RES + "nodes/n1")))
    live.append(Update("put", IPAM + "handles/h1", b"h", c.put(IPAM + "handles/h1", b"h")))

    wait_until(lambda: len(rec.updates()) >= len(snapshot) + len(live), 10, interval=0.02,
               what="live events")
    got = rec.updates_after(3)
    assert sorted(got, key=lambda u: u.revision) == live
    for prefix in PREFIXES:  # each stream in order
        revs = [u.revision for u in got if u.key.startswith(prefix)]
        assert revs == sorted(revs)
    assert rec.statuses() == [WAIT, RESYNC, IN_SYNC]
    assert rec.snapshot_state() == etcd_state(c)
    assert rec.problems == []
    assert len(rec.threads) == 1 and threading.get_ident() not in rec.threads


def test_the_dataplane_prefixes_carry_blocks_and_host_affinities_to_every_consumer(
        etcd_client, etcd_endpoint, run_syncer):
    """What the agent and its in-process BGP daemon sync: one syncer, one watch per prefix,
    every change handed to both in the same order; IPAM handles (a write per pod add and
    delete) and virtual affinities are not watched, as neither reads them."""
    c = etcd_client
    block = IPAM + "assignment/ipv4/block/10.0.0.0-26"
    host = IPAM + "host/n1/ipv4/block/10.0.0.0-26"
    unread = (IPAM + "handle/k8s-pod-network.abc", IPAM + "virtual/lb/ipv4/block/10.9.0.0-26",
              IPAM + "config")
    wanted = [(block, c.put(block, b"b1")), (host, c.put(host, b"a1")),
              (RES + "nodes/n1", c.put(RES + "nodes/n1", b"n1"))]
    for key in unread:
        c.put(key, b"x")
    agent, bgp = Recorder(), Recorder()
    syncer, _ = run_syncer(_client(etcd_endpoint), FanOut(agent, bgp),
                           prefixes=DATAPLANE_SYNC_PREFIXES)
    assert syncer.wait_in_sync(10)
    wanted.append((block, c.put(block, b"b2")))
    for key in unread:
        c.put(key, b"y")
    wanted.append((host, c.delete(host)))
    wait_until(lambda: len(agent.updates()) >= len(wanted), 10, interval=0.02, what="live events")
    time.sleep(0.2)  # anything unread would have arrived with the last one
    assert sorted((u.key, u.revision) for u in agent.updates()) == sorted(wanted)
    assert agent.log == bgp.log
    assert agent.statuses() == [WAIT, RESYNC, IN_SYNC]
    assert agent.problems == bgp.problems == []


def test_burst_of_random_writes_converges(etcd_client, etcd_endpoint, run_syncer):
    rng, live = random.Random(7), set()
    random_ops(etcd_client, rng, 250, live)
    syncer, rec = run_syncer(_client(etcd_endpoint))
    random_ops(etcd_client, rng, 250, live)  # racing the initial listing and watch creation
    assert syncer.wait_in_sync(10)
    wait_consistent(rec, etcd_client)
    assert rec.problems == []
    assert not any(u.key.startswith("/calico/felix/") for u in rec.updates())


def test_survives_etcd_restart_without_loss_or_duplicates(private_etcd, run_syncer):
    url = private_etcd.client_url
    writer = _client(url, timeout=2)
    rng, live = random.Random(11), set()
    random_ops(writer, rng, 60, live)
    syncer, rec = run_syncer(_client(url))
    assert syncer.wait_in_sync(10)
    random_ops(writer, rng, 60, live)
    wait_consistent(rec, writer)

    private_etcd.stop()
    with pytest.raises(ConnectionFailed):
        writer.put(RES + "while-down", b"x")
    private_etcd.start()
    private_etcd.wait_healthy()
    writer.close()
    writer = wait_connected(url)
    random_ops(writer, rng, 120, live)

    wait_consistent(rec, writer)
    assert rec.problems == []
    # Disconnected, then re-watched where it left off: no re-list, the consumer kept its state.
    assert rec.statuses() == [WAIT, RESYNC, IN_SYNC, WAIT, IN_SYNC]
    assert syncer.relists == 1
    writer.close()


def test_compacted_revision_relists_and_sends_only_the_difference(private_etcd, run_syncer):
    url = private_etcd.client_url
    writer = _client(url, timeout=2)
    for i in range(20):
        writer.put(f"{RES}nodes/doomed-{i}", b"d")
        writer.put(f"{IPAM}handles/doomed-{i}", b"d")
    writer.put(RES + "nodes/keep", b"k")
    writer.put(IPAM + "handles/keep", b"k")
    writer.put(RES + "nodes/change", b"old")

    gated = GatedClient(_client(url))
    syncer, rec = run_syncer(gated)
    assert syncer.wait_in_sync(10)
    n_snapshot = len(rec.updates())

    # Cut the syncer off, and keep it from re-watching until history is compacted.
    gated.open.clear()
    private_etcd.stop()
    wait_until(gated.blocked.is_set, 30, interval=0.02, what="the syncer to try re-watching")
    private_etcd.start()
    private_etcd.wait_healthy()
    writer.close()
    writer = wait_connected(url)
    for i in range(20):
        writer.delete(f"{RES}nodes/doomed-{i}")
        writer.delete(f"{IPAM}handles/doomed-{i}")
    changed_rev = writer.put(RES + "nodes/change", b"new")
    for i in range(30):  # churn, and keys that come and go unseen
        writer.put(f"{IPAM}handles/churn", str(i).encode())
        writer.put(f"{RES}nodes/tmp-{i}", b"t")
        writer.delete(f"{RES}nodes/tmp-{i}")
    added_rev = writer.put(IPAM + "handles/new", b"n")
    writer.compact(writer.revision())
    gated.open.set()

    wait_consistent(rec, writer)
    assert syncer.relists == 2  # the compacted path really ran
    # etcd accepts the re-watch, then reports the compaction on it: a re-list follows.
    assert rec.statuses() == [WAIT, RESYNC, IN_SYNC, WAIT, IN_SYNC, RESYNC, IN_SYNC]
    assert rec.problems == []
    diff = rec.updates()[n_snapshot:]
    deletes = {u.key for u in diff if u.kind == "delete"}
    assert deletes == {f"{p}doomed-{i}" for p in (RES + "nodes/", IPAM + "handles/")
                       for i in range(20)}
    puts = {u.key: u for u in diff if u.kind == "put"}
    assert puts[RES + "nodes/change"] == Update("put", RES + "nodes/change", b"new", changed_rev)
    assert puts[IPAM + "handles/new"].revision == added_rev
    assert set(puts) == {RES + "nodes/change", IPAM + "handles/new", IPAM + "handles/churn"}
    writer.close()


def test_replayed_watch_events_are_not_delivered_twice(private_etcd, run_syncer):
    url = private_etcd.client_url
    writer = _client(url)
    rng, live = random.Random(3), set()
    random_ops(writer, rng, 100, live)  # history: puts, updates, deletes, re-creates
    replaying = ReplayingClient(_client(url))
    syncer, rec = run_syncer(replaying)
    assert syncer.wait_in_sync(10)
    random_ops(writer, rng, 100, live)
    wait_consistent(rec, writer)
    assert replaying.watches == len(PREFIXES)
    assert rec.problems == []
    assert all(u.revision > 0 for u in rec.updates())
    writer.close()


def test_a_raising_consumer_does_not_stop_the_syncer(etcd_client, etcd_endpoint, run_syncer):
    class Flaky(Recorder):
        calls = 0

        def on_updates(self, updates: list[Update]) -> None:
            super().on_updates(updates)
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("consumer bug")

    etcd_client.put(RES + "nodes/a", b"a")
    syncer, rec = run_syncer(_client(etcd_endpoint), Flaky())
    assert syncer.wait_in_sync(10)
    etcd_client.put(RES + "nodes/b", b"b")
    wait_consistent(rec, etcd_client)


def test_stop_leaves_no_thread_running(etcd_endpoint):
    client = _client(etcd_endpoint)
    syncer = Syncer(client, PREFIXES, Recorder(), retry_interval=0.05)
    syncer.start()
    assert syncer.wait_in_sync(10)
    syncer.stop()
    assert not [t for t in threading.enumerate() if t.name == "tortie-syncer"]
    client.close()


def test_waits_for_datastore_and_stops_cleanly_when_etcd_is_unreachable():
    client = _client("http://127.0.0.1:1", timeout=1)
    rec = Recorder()
    syncer = Syncer(client, PREFIXES, rec, retry_interval=0.05)
    syncer.start()
    assert not syncer.wait_in_sync(0.3)
    syncer.stop()
    assert rec.statuses() == [WAIT]
    assert syncer.relists == 0
    assert not [t for t in threading.enumerate() if t.name == "tortie-syncer"]
    client.close()


def test_an_unconfirmed_watch_creation_is_retried_with_a_longer_deadline(
        etcd_client, etcd_endpoint, run_syncer):
    """A member too slow to confirm a watch is given twice as long on each retry (not
    the same deadline again, missed again); a confirmed watch resets the deadline."""
    c = etcd_client
    c.put(RES + "nodes/slow", b"s1")
    client = UnconfirmedWatchClient(_client(etcd_endpoint, timeout=2.0), misses=3)
    syncer, rec = run_syncer(client)
    # three misses on the first prefix, then both prefixes watched on the fourth try
    wait_until(lambda: len(client.deadlines) >= 5, 30, what="five watch creations")
    assert client.deadlines == [2.0, 4.0, 8.0, 16.0, 16.0]
    assert syncer.wait_in_sync(30)
    r = c.put(RES + "nodes/slow", b"s2")  # reaches the consumer by the watch
    wait_until(lambda: rec.snapshot_state().get(RES + "nodes/slow") == (b"s2", r), 30,
               what="a change after the watches were confirmed")
    assert syncer._create_deadline.failures == 0  # confirmed: the next one starts at 2 s
