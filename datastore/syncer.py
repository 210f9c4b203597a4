"""The syncer: list-then-watch of etcd prefixes, feeding the agent's calculation.

Owns: one background thread, the watches it creates, and a cache
{key: (value, mod_revision)} of exactly what it has delivered. Callbacks run on
that thread only, in order. Like Calico's syncers it reports a status:
WAIT_FOR_DATASTORE until the first listing, RESYNC while a snapshot (or the
difference a re-list found) is being delivered, IN_SYNC after it.

Invariants:
  * All prefixes are listed at one revision R (one consistent snapshot) and
    watched from R+1; a stream that breaks is re-watched from the last
    revision it is known to be complete to, plus one. The consumer's state is
    kept across reconnects (no re-delivery); the status reads
    WAIT_FOR_DATASTORE while disconnected and IN_SYNC again once re-watched.
  * No duplicates: an event at or below its stream's seen revision, or at or
    below the cached revision of its key, is dropped; so is a delete of a key
    the consumer never saw.
  * When etcd has compacted the revision a watch needs, the syncer re-lists
    and delivers only the difference from its cache (puts for new or changed
    keys, deletes at the listing's revision for keys that vanished): a
    consumer never sees a spurious delete-then-add and never misses a delete.
  * Nothing kills the thread: failures are logged and retried after a backoff
    that doubles from `retry_interval` to MAX_RETRY_INTERVAL (2 s), +/-20 % jitter
    (datastore.backoff), reset only once a stream has said something or a
    listing succeeded; never a busy loop.
  * A watch creation etcd does not confirm in time is retried (on a new stream,
    on the next member if there are several) with a deadline that doubles from
    the client's timeout to WATCH_CREATE_MAX: a slow but alive member (a starved
    host) gets the time it needs instead of a fixed deadline it misses forever,
    each miss adding load.
  * A watch stream that breaks, or stalls (nothing heard, not even the answer
    to a progress request, for the client's watch_stall_timeout; see
    datastore.liveness), is re-established from its last complete revision on
    the next etcd member, and the status reads WAIT_FOR_DATASTORE meanwhile.

The syncer should have its client to itself: EtcdClient's watch cancel goes to
whatever stream the client has now, where watch ids restart from 0.
"""

from __future__ import annotations

import enum
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from .backoff import Backoff, Schedule
from .errors import DatastoreError, RevisionCompacted, WatchCreateTimedOut
from .liveness import StallDetector

if TYPE_CHECKING:
    from .etcd import EtcdClient, WatchEvent

_log = logging.getLogger(__name__)

_Event = TypeVar("_Event")

# The longest wait between reconnection attempts while etcd is away. It bounds how
# long after etcd's return the agent is back in step (F5 wants a full reconcile within
# 10 s; gRPC's own reconnect backoff adds up to 2 s), and an attempt against a stopped
# etcd is one refused connection: 0.3 % of a CPU over a 120 s outage at 5 s (F5).
MAX_RETRY_INTERVAL = 2.0
WATCH_CREATE_MAX = 60.0  # the longest a watch creation is given, after repeated misses
SNAPSHOT_BATCH = 1000
# etcd (mvcc watchBatchMaxRevs) sends at most 1000 revisions of events per watch
# response while a watcher catches up, yet stamps the response with the store's
# current revision. A response with fewer events than this is complete up to its
# header revision; a larger one is trusted only up to its last event.
_WATCH_BATCH_MAX_REVS = 1000


@dataclass(frozen=True)
class Update:
    """One key's change."""

    kind: str  # "put" | "delete"
    key: str
    value: bytes  # b"" for delete
    revision: int  # mod revision of the change (for deletes: the delete's revision)


class SyncStatus(enum.Enum):
    WAIT_FOR_DATASTORE = "wait-for-datastore"
    RESYNC = "resync"
    IN_SYNC = "in-sync"


class SyncerCallbacks(Protocol):
    def on_status(self, status: SyncStatus) -> None: ...

    def on_updates(self, updates: list[Update]) -> None: ...


class FanOut:
    """One syncer's callbacks handed to several consumers in one process, in the order
    given: each change is watched, decoded and cached once however many follow it.
    The consumers share each `updates` list and must not change it."""

    def __init__(self, *consumers: SyncerCallbacks) -> None:
        self._consumers = consumers

    def on_status(self, status: SyncStatus) -> None:
        for consumer in self._consumers:
            consumer.on_status(status)

    def on_updates(self, updates: list[Update]) -> None:
        for consumer in self._consumers:
            consumer.on_updates(updates)


@dataclass(frozen=True)
class _WatchMsg:
    """What a watch thread hands to the syncer thread."""

    generation: int
    prefix: str
    events: list[WatchEvent]
    header_revision: int
    error: DatastoreError | None = None


@dataclass(frozen=True)
class _ProgressMsg:
    """etcd answered a progress request on the watch stream of `generation`."""

    generation: int


_STOP = object()


class Syncer:
    """Keeps a consumer in step with the keys under `prefixes`."""

    def __init__(
        self,
        client: EtcdClient,
        prefixes: Sequence[str],
        callbacks: SyncerCallbacks,
        *,
        retry_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not prefixes:
            raise ValueError("the syncer needs at least one prefix")
        self._client = client
        self._prefixes = list(dict.fromkeys(prefixes))
        self._callbacks = callbacks
        self._retry = Backoff(Schedule(first=retry_interval, cap=MAX_RETRY_INTERVAL))
        # Not jittered: a patience, not a retry time (the pause before the retry is).
        self._create_deadline = Backoff(
            Schedule(first=client.timeout, cap=max(client.timeout, WATCH_CREATE_MAX), jitter=0.0)
        )

        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._queue: queue.Queue[_WatchMsg | _ProgressMsg | object] = queue.Queue()
        self._clock = clock
        self._stall = StallDetector(client.config.keepalive.watch_stall_timeout, clock())
        self._status_cond = threading.Condition()
        self._status: SyncStatus | None = None

        # Owned by the syncer thread.
        self._cache: dict[str, tuple[bytes, int]] = {}
        self._seen: dict[str, int] = {}  # per prefix: stream complete up to this revision
        self._cancels: list[Callable[[], None]] = []
        self._generation = 0  # bumped whenever watches are torn down; older messages are stale
        self._need_list = True
        self._need_watch = False
        self.relists = 0  # listings done (the first snapshot counts); for tests and metrics
        self.stalls = 0  # watch streams found stalled and replaced; for tests and metrics
        self.rewatches = 0  # watch streams re-established after a break or a stall

    # -- public -----------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The etcd member the syncer's client talks to now."""
        return self._client.endpoint_in_use

    @property
    def status(self) -> SyncStatus | None:
        with self._status_cond:
            return self._status

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("syncer already started")
        self._thread = threading.Thread(target=self._run, name="tortie-syncer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (after the callback in progress, if any) and cancel the watches."""
        self._stopping.set()
        self._queue.put(_STOP)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def wait_in_sync(self, timeout: float) -> bool:
        """Block until the status is IN_SYNC; False if it is not after `timeout` seconds."""
        with self._status_cond:
            return self._status_cond.wait_for(
                lambda: self._status is SyncStatus.IN_SYNC, timeout=timeout
            )

    # -- the thread -------------------------------------------------------------

    def _run(self) -> None:
        self._set_status(SyncStatus.WAIT_FOR_DATASTORE)
        try:
            while not self._stopping.is_set():
                try:
                    self._step()
                except RevisionCompacted as exc:
                    _log.info("syncer: %s; re-listing", exc)
                    self._start_relist()
                    self._pause(self._retry_wait())
                except DatastoreError as exc:
                    wait = self._retry_wait()
                    _log.warning("syncer: %s; retrying in %.1fs", exc, wait)
                    self._set_status(SyncStatus.WAIT_FOR_DATASTORE)
                    self._pause(wait)
                except Exception:
                    wait = self._retry_wait()
                    _log.exception("syncer: unexpected failure; retrying in %.1fs", wait)
                    self._pause(wait)
        finally:
            self._cancel_watches()

    def _step(self) -> None:
        if self._need_list:
            self._resync()
            self._need_list, self._need_watch = False, True
            self._retry.succeeded()
        if self._need_watch:
            self._watch()
            self._need_watch = False
            self._stall.restart(self._clock())
            if self._status is SyncStatus.WAIT_FOR_DATASTORE:
                # Reconnected from where we left off: what was delivered is current again.
                self._set_status(SyncStatus.IN_SYNC)
        try:
            msg = self._queue.get(timeout=self._stall.next_check(self._clock()))
        except queue.Empty:
            msg = None
        if msg is _STOP:
            return
        if isinstance(msg, (_WatchMsg, _ProgressMsg)) and msg.generation == self._generation:
            self._stall.heard(self._clock())
            if not (isinstance(msg, _WatchMsg) and msg.error is not None):
                self._retry.succeeded()  # the stream works: the next failure starts afresh
        if self._check_stall():
            return
        if not isinstance(msg, _WatchMsg) or msg.generation != self._generation:
            return  # a progress answer, or from watches already torn down (re-read later)
        if msg.error is None:
            self._on_events(msg)
        elif isinstance(msg.error, RevisionCompacted):
            _log.info("syncer: watch on %s: %s; re-listing", msg.prefix, msg.error)
            self._start_relist()
        else:
            wait = self._retry_wait()
            _log.warning(
                "syncer: watch on %s failed (%s); re-watching from revision %d in %.1fs",
                msg.prefix, msg.error, self._seen[msg.prefix] + 1, wait,
            )
            self._replace_watch_stream()
            self._pause(wait)

    def _check_stall(self) -> bool:
        """Probe a quiet stream; replace a stalled one. True when it was replaced."""
        now = self._clock()
        if self._stall.stalled(now):
            self.stalls += 1
            _log.warning(
                "syncer: the watch stream on %s said nothing for %.1fs (not even to a "
                "progress request); re-watching elsewhere",
                self._client.endpoint_in_use, now - self._stall.last_heard,
            )
            self._replace_watch_stream()
            return True
        if self._stall.probe_due(now):
            gen = self._generation
            self._client.request_watch_progress(lambda _rev: self._queue.put(_ProgressMsg(gen)))
            self._stall.probed(now)
        return False

    def _replace_watch_stream(self) -> None:
        """Drop every watch and its stream; re-watch (next step) on the next member."""
        self._cancel_watches()
        endpoint = self._client.fail_over()
        self.rewatches += 1
        _log.info("syncer: re-watching from revisions %s on %s",
                  {p: r + 1 for p, r in self._seen.items()}, endpoint)
        self._need_watch = True
        # Tell consumers the datastore is gone (for readiness); they keep their state.
        self._set_status(SyncStatus.WAIT_FOR_DATASTORE)

    def _retry_wait(self) -> float:
        """Count a failure; the jittered wait before trying again."""
        return self._retry.failed(random.random())

    def _pause(self, wait: float) -> None:
        self._stopping.wait(wait)

    def _start_relist(self) -> None:
        self._cancel_watches()
        self._need_list, self._need_watch = True, False
        if self._status is not SyncStatus.WAIT_FOR_DATASTORE:
            self._set_status(SyncStatus.RESYNC)

    # -- listing ----------------------------------------------------------------

    def _resync(self) -> None:
        """List every prefix at one revision and deliver the difference from the cache."""
        first, *others = self._prefixes
        kvs, revision = self._client.list(first)
        listing = {kv.key: kv for kv in kvs}
        for prefix in others:
            more, _ = self._client.list(prefix, revision=revision)
            listing.update((kv.key, kv) for kv in more)
        self.relists += 1
        _log.info(
            "syncer: listed %d keys at revision %d (listing #%d)",
            len(listing), revision, self.relists,
        )

        updates = [
            Update("put", key, kv.value, kv.mod_revision)
            for key, kv in listing.items()
            if self._cache.get(key) != (kv.value, kv.mod_revision)
        ]
        updates += [
            Update("delete", key, b"", revision) for key in self._cache if key not in listing
        ]
        updates.sort(key=lambda u: u.key)
        for u in updates:
            if u.kind == "put":
                self._cache[u.key] = (u.value, u.revision)
            else:
                del self._cache[u.key]
        self._seen = dict.fromkeys(self._prefixes, revision)

        self._set_status(SyncStatus.RESYNC)
        for i in range(0, len(updates), SNAPSHOT_BATCH):
            self._deliver(updates[i : i + SNAPSHOT_BATCH])
        self._set_status(SyncStatus.IN_SYNC)

    # -- watching ---------------------------------------------------------------

    def _watch(self) -> None:
        gen = self._generation
        try:
            for prefix in self._prefixes:
                self._cancels.append(
                    self._client.watch_prefix(
                        prefix,
                        self._seen[prefix] + 1,
                        self._watch_callback(gen, prefix),
                        self._error_callback(gen, prefix),
                        create_timeout=self._create_deadline.current(),
                    )
                )
        except WatchCreateTimedOut:
            # Unconfirmed, not refused: give the next attempt longer. The stream still
            # holds the unanswered request (a late "created" would be taken for the
            # next watch's), so it is dropped all the same.
            self._create_deadline.missed()
            self._cancel_watches()
            self._client.fail_over()
            raise
        except DatastoreError:
            # Watch creation failed or timed out: this member is no use now.
            self._cancel_watches()
            self._client.fail_over()
            raise
        except BaseException:
            self._cancel_watches()
            raise
        self._create_deadline.succeeded()
        _log.debug("syncer: watching %s", {p: r + 1 for p, r in self._seen.items()})

    def _watch_callback(self, gen: int, prefix: str) -> Callable[[list[WatchEvent], int], None]:
        def on_events(events: list[WatchEvent], header_revision: int) -> None:
            self._queue.put(_WatchMsg(gen, prefix, events, header_revision))

        return on_events

    def _error_callback(self, gen: int, prefix: str) -> Callable[[DatastoreError], None]:
        def on_error(error: DatastoreError) -> None:
            self._queue.put(_WatchMsg(gen, prefix, [], 0, error))

        return on_error

    def _cancel_watches(self) -> None:
        """Tear down every watch; messages they still send are ignored."""
        self._generation += 1
        cancels, self._cancels = self._cancels, []
        for cancel in cancels:
            try:
                cancel()
            except Exception:  # noqa: BLE001 - a dead stream has nothing to cancel
                _log.debug("syncer: cancelling a watch failed", exc_info=True)

    def _on_events(self, msg: _WatchMsg) -> None:
        seen = self._seen[msg.prefix]
        updates: list[Update] = []
        for ev in msg.events:
            if ev.mod_revision <= seen:
                continue  # replayed: already delivered, or covered by a listing
            cached = self._cache.get(ev.key)
            if cached is not None and ev.mod_revision <= cached[1]:
                continue
            if ev.kind == "delete":
                if cached is None:
                    continue
                del self._cache[ev.key]
                updates.append(Update("delete", ev.key, b"", ev.mod_revision))
            else:
                self._cache[ev.key] = (ev.value, ev.mod_revision)
                updates.append(Update("put", ev.key, ev.value, ev.mod_revision))
        top = max((ev.mod_revision for ev in msg.events), default=seen)
        if len(msg.events) < _WATCH_BATCH_MAX_REVS:
            top = max(top, msg.header_revision)
        self._seen[msg.prefix] = max(seen, top)
        if updates:
            self._deliver(updates)

    # -- callbacks --------------------------------------------------------------

    def _set_status(self, status: SyncStatus) -> None:
        if status is self._status:
            return
        try:
            self._callbacks.on_status(status)
        except Exception:
            _log.exception("syncer: on_status(%s) raised; carrying on", status.name)
        with self._status_cond:  # waiters wake after the consumer has heard it
            self._status = status
            self._status_cond.notify_all()

    def _deliver(self, updates: list[Update]) -> None:
        try:
            self._callbacks.on_updates(updates)
        except Exception:
            # The cache already holds these; re-sending would not make a broken
            # consumer whole, and stopping would starve every other update.
            _log.exception("syncer: on_updates raised; the batch counts as delivered")


# -- events for the loops the syncer feeds (the agent's, the BGP daemon's) --------------
# Each loop's queue carries these beside its own event types; the loop `match`es them.


@dataclass(frozen=True, slots=True)
class SyncStatusChanged:
    """`SyncerCallbacks.on_status`, queued."""

    status: SyncStatus


@dataclass(frozen=True, slots=True)
class DatastoreUpdates:
    """`SyncerCallbacks.on_updates`, queued: one batch of key changes, in order."""

    updates: list[Update]


@dataclass(frozen=True, slots=True)
class StopRequested:
    """Asks the loop to end (queued so that a loop waiting on its queue wakes)."""


def drain_events(events: queue.Queue[_Event], wait: float) -> list[_Event]:
    """For the loops fed by syncer callbacks: wait up to `wait` seconds for one event,
    then take every event already queued, so a burst is handled as one batch."""
    try:
        batch = [events.get(timeout=wait)]
    except queue.Empty:
        return []
    while True:
        try:
            batch.append(events.get_nowait())
        except queue.Empty:
            return batch
