"""The BGP side of a node: datastore in, ExaBGP sessions, best paths out.

`BGPDaemon` runs in `tortie-agent` (CALICO_NETWORKING_BACKEND `bird`, Calico's
default, or `exabgp`) or alone as `tortie-bgp` (the chart's sidecar, whose
agent then follows the routes over the control socket).

Threads: the syncer, the speaker's reader and the control server only put
events on a queue (`DaemonEvent`: the syncer's events and the speaker's own,
bgp.types.SpeakerEvent, each a frozen type); one loop thread owns the view,
the plan, the RIB, the adj-RIB-out and the status book.

Invariants:
  * nothing is configured or announced before the syncer's first IN_SYNC;
  * ExaBGP is reconfigured only when the plan changes (equal plans render
    equal text), and a reload leaves unchanged sessions alone; the password
    files a plan read are re-read every SECRET_POLL, so a rotated secret is a
    plan change too;
  * each route change is sent to ExaBGP once (ExaBGP keeps its adj-RIB-out
    across session flaps); everything is re-sent only to a new ExaBGP process;
  * End-of-RIB (RFC 4724) is ours to send, not ExaBGP's (`manual-eor`): once per
    session that comes up, after the routes pass that follows its `up`, so every
    route meant for that peer, the whole re-announcement to a new ExaBGP included,
    is queued before it (the speaker keeps commands in order);
  * when a session drops without a NOTIFICATION and the peer advertised
    graceful restart, its routes stay (stale) until it sends End-of-RIB after
    coming back or its restart time passes; otherwise they go at once;
  * when ExaBGP itself dies, the routes learned so far are kept as stale (the
    kernel keeps forwarding, as BIRD's `persist` does) while it restarts;
  * the best paths are handed out (to `on_routes` and the control socket) as
    changes: the first publication is a reset with every best path, each later
    one names exactly the prefixes whose next hop or peer moved since the last,
    and none is made when nothing moved. A normal pass costs O(prefixes whose
    best path changed), so every RIB mutation reports its prefixes through
    `_rib_changed`; the only full diff is the first.
  * the service ranges this node announces itself (bgp.advertise) are never handed
    out as learned routes: every node announces them, so another node's path to
    one is no reason to route there (Calico's BIRD prefers its own static route).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from datastore.errors import DatastoreError
from datastore.etcd import EtcdClient
from datastore.keys import DATAPLANE_SYNC_PREFIXES
from datastore.resources.bgp import SecretKeyRef
from datastore.syncer import (
    DatastoreUpdates,
    StopRequested,
    Syncer,
    SyncStatus,
    SyncStatusChanged,
    Update,
    drain_events,
)

from .advertise import Advertising, advertising
from .control import DEFAULT_NAME, ControlServer
from .export import ExportPolicy, diff, pool_exporter
from .plan import plan_node
from .render import render_config, speaker_env
from .rib import Path as RibPath
from .rib import Rib
from .secrets import SecretsDir
from .speaker import ExaBGPSpeaker
from .status import PeerStatusBook, status_key
from .types import (
    DEFAULT_HOLD_TIME,
    BestPathChanges,
    EndOfRib,
    NeighborTable,
    NodePlan,
    OutRoute,
    PeerNotification,
    PeerOpen,
    PeerPlan,
    PeerState,
    RouteUpdate,
    SpeakerEvent,
    SpeakerStarted,
    SpeakerStopped,
)
from .view import BGPView

_log = logging.getLogger(__name__)

BAD_BGP_IDENTIFIER = (2, 3)  # OPEN Message Error, Bad BGP Identifier (RFC 4271 6.2)
NEIGHBOR_POLL = 2.0  # seconds between `show neighbor json` polls (status only)
STATUS_REFRESH = 10.0  # the etcd copy is rewritten at least this often while anything runs
# Password files the plan read are read again this often: a rotated Kubernetes secret
# (kubelet rewrites the mounted file) reaches ExaBGP without a restart.
SECRET_POLL = 10.0
STATUS_MIN_GAP = 1.0  # and at most this often
# The etcd copy is written when it says something new, and otherwise this often, to show
# it is current (`ctl node status --all` calls a copy older than 60 s stale). Writing it on
# every refresh made the neighbour poll a Put per node every 2 s: 25 Puts/s at 50 nodes
# with nothing changing.
STATUS_HEARTBEAT = 30.0

DaemonEvent = SyncStatusChanged | DatastoreUpdates | SpeakerEvent | StopRequested


class BGPDaemon:
    def __init__(self, client: EtcdClient, nodename: str, *, workdir: Path,
                 on_routes: Callable[[BestPathChanges], None] | None = None,
                 control_name: str | None = DEFAULT_NAME,
                 hold_time: int = DEFAULT_HOLD_TIME,
                 router_id: str | None = None,
                 password_for: Callable[[SecretKeyRef], str | None] | None = None,
                 publish_status: bool = True,
                 route_problems: Callable[[], Sequence[str]] | None = None,
                 own_syncer: bool = True,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.client = client
        self.nodename = nodename
        self.workdir = workdir
        self.on_routes = on_routes
        self.hold_time = hold_time
        self.router_id = router_id  # CALICO_ROUTER_ID (bgp.plan.plan_node)
        self.password_for = password_for or SecretsDir.from_env()
        self.publish_status = publish_status
        # The agent's learned routes it cannot install (an unresolved next hop): shown
        # with the sessions they came from (`ctl node status -o wide`).
        self.route_problems = route_problems
        # False: the caller feeds on_updates/on_status from a syncer of its own on
        # DATAPLANE_SYNC_PREFIXES (the agent's, through datastore.syncer.FanOut), so a
        # node watches and decodes each change once, not once per loop.
        self.own_syncer = own_syncer
        self.clock, self.wall = clock, wall
        self.view = BGPView(nodename)
        self.book = PeerStatusBook()
        self.plan: NodePlan | None = None
        self.rib: Rib | None = None
        self.in_sync = False
        self.datastore_status = SyncStatus.WAIT_FOR_DATASTORE
        self.speaker = ExaBGPSpeaker(workdir, self._events_put)
        self.control = ControlServer(control_name, self.status) if control_name else None
        self._events: queue.Queue[DaemonEvent] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._view_dirty = True
        self._routes_dirty = True
        # Export is patched per changed prefix; these force the next pass to rebuild it.
        self._full_export = True
        self._changed: set[str] = set()
        self._policy: ExportPolicy | None = None
        self._local: set[str] = set()
        self._advertising = Advertising()
        self._sent: dict[str, dict[str, OutRoute]] = {}  # adj-RIB-out as sent to ExaBGP
        self._opens: dict[str, PeerOpen] = {}
        self._notified: set[str] = set()  # peers whose session is closing with a NOTIFICATION
        self._eor_due: set[str] = set()  # sessions up whose End-of-RIB is not sent yet
        self._id_collisions: set[str] = set()  # peers refused for our router id, reported
        self._published: dict[str, tuple[str, str]] = {}  # best paths handed out
        self._publish_reset = True  # nothing handed out yet: the next publication is a reset
        self._status_lock = threading.Lock()
        self._status_doc: dict[str, Any] = {}
        self._status_dirty = True  # the served document is out of date
        self._status_unstored = False  # the etcd copy is behind the served document
        self._status_written = -1e9
        self._status_stored: tuple[float, dict[str, Any]] = (-1e9, {})  # etcd copy: when, what
        self._started = wall()  # readiness is stricter in the first moments (bgp.status)
        # The passwords the current plan was made with: (name, key) -> (ref, value).
        self._passwords: dict[tuple[str, str], tuple[SecretKeyRef, str | None]] = {}

    # -- lifecycle --------------------------------------------------------------------

    def _events_put(self, event: SpeakerEvent) -> None:
        self._events.put(event)

    def on_status(self, status: SyncStatus) -> None:
        self._events.put(SyncStatusChanged(status))

    def on_updates(self, updates: list[Update]) -> None:
        self._events.put(DatastoreUpdates(updates))

    def start(self) -> BGPDaemon:
        self._thread = threading.Thread(target=self.run, name="bgp", daemon=True)
        self._thread.start()
        return self

    def request_stop(self) -> None:
        """Ask the loop to end (safe from a signal handler)."""
        self._stop.set()
        self._events.put(StopRequested())

    def stop(self) -> None:
        self.request_stop()
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(timeout=15)

    def run(self) -> None:
        self._started = self.wall()
        self.workdir.mkdir(parents=True, exist_ok=True)
        syncer = Syncer(self.client, DATAPLANE_SYNC_PREFIXES, self) if self.own_syncer else None
        if self.control:
            self.control.start()
        if syncer:
            syncer.start()
        try:
            self._loop()
        finally:
            # ExaBGP first: its peers then see the session close (graceful restart keeps
            # our routes there), and nothing below can hold it up.
            self.speaker.stop()
            if self.control:
                self.control.close()
            if syncer:
                syncer.stop()
            self._delete_status()
            _log.info("BGP stopped")

    # -- the loop -------------------------------------------------------------------------

    def _loop(self) -> None:
        next_poll = self.clock()
        next_secret_poll = next_poll + SECRET_POLL
        while not self._stop.is_set():
            now = self.clock()
            deadlines = [next_poll, self._status_written + STATUS_REFRESH]
            if self._status_unstored:
                deadlines.append(self._status_written + STATUS_MIN_GAP)
            if self.rib and self.rib.next_deadline() is not None:
                deadlines.append(self.rib.next_deadline())
            self._drain(max(0.0, min(deadlines) - now))
            if self._stop.is_set():
                return
            now = self.clock()
            if self.rib:
                self._rib_changed(self.rib.sweep(now))
            if now >= next_secret_poll:  # woken at least every NEIGHBOR_POLL
                next_secret_poll = now + SECRET_POLL
                self._view_dirty |= self._passwords_changed()
            if self.in_sync and self._view_dirty:
                self._replan()
            if self.plan and self._routes_dirty:
                self._update_routes()
            if now >= next_poll:
                next_poll = now + NEIGHBOR_POLL
                if self.plan and self.book.speaker_running:
                    self.speaker.request_neighbors()
            self._refresh_status(now)

    def _drain(self, wait: float) -> None:
        for ev in drain_events(self._events, wait):
            match ev:
                case DatastoreUpdates(updates):
                    self._view_dirty |= self.view.apply(updates)
                case SyncStatusChanged(status):
                    self.datastore_status = status  # for readiness: connected or not, now
                    self._status_dirty = True
                    if status is SyncStatus.IN_SYNC and not self.in_sync:
                        _log.info("datastore in sync: configuring BGP")
                        self.in_sync = True
                        self._status_dirty = True
                case StopRequested():
                    pass  # self._stop is set: the loop ends after this batch
                case _:
                    self._on_speaker(ev)

    # -- datastore -> plan -> ExaBGP ------------------------------------------------------

    def _replan(self) -> None:
        self._view_dirty = False
        self._routes_dirty = self._full_export = True
        self._passwords = {}
        adv = advertising(self.nodename, self.view.nodes, self.view.configs)
        if adv.services != self._advertising.services:
            self._publish_reset = True  # learned paths to those ranges appear or vanish
        self._advertising = adv
        plan = plan_node(self.nodename, self.view.nodes, self.view.peers.values(),
                         self.view.configs, password_for=self._read_password,
                         hold_time=self.hold_time, router_id=self.router_id)
        if plan == self.plan:
            return
        previous = self.plan
        for problem in sorted(set(plan.problems if plan else ()) -
                              set(self.plan.problems if self.plan else ())):
            _log.warning("BGP peering left out: %s", problem)
        self.plan = plan
        self.book.set_plan(plan, self.wall())
        self._status_dirty = True
        if plan is None:
            _log.warning("node %s has no IPv4 address in the datastore: BGP is idle",
                         self.nodename)
            self.speaker.stop()
            self._sent.clear()
            return
        if self.rib is None:
            self.rib = Rib(plan.router_id, plan.cluster_id, plan.local_as)
        else:
            self.rib.set_identity(plan.router_id, plan.cluster_id, plan.local_as)
        _log.info("BGP plan: router id %s, AS %s, %d peers%s", plan.router_id, plan.local_as,
                  len(plan.peers), f", reflector for cluster {plan.cluster_id}"
                  if plan.cluster_id else "")
        # Peers that went away, or whose identity changed (ExaBGP then starts them with an
        # empty adj-RIB-out): forget what was sent to them and what they sent us.
        old = {p.peer_ip: _identity(p, previous) for p in previous.peers} if previous else {}
        configured = {p.peer_ip: _identity(p, plan) for p in plan.peers}
        for ip in list(self._sent):
            if ip not in configured or old.get(ip) != configured[ip]:
                del self._sent[ip]
        for ip in self.rib.peers():
            if ip not in configured:
                self._rib_changed(self.rib.peer_down(ip, self.clock(), graceful=False))
        self.speaker.configure(render_config(plan, self.speaker.api_argv()), speaker_env(plan))

    def _read_password(self, ref: SecretKeyRef) -> str | None:
        """`password_for`, remembering what the plan read (see _passwords_changed)."""
        value = self.password_for(ref)
        self._passwords[(ref.name, ref.key)] = (ref, value)
        return value

    def _passwords_changed(self) -> bool:
        """Whether a password file the plan read now says something else (or appeared,
        or went): the plan is then made again, and only the peers it changes reset."""
        for (name, key), (ref, value) in self._passwords.items():
            if self.password_for(ref) != value:
                _log.info("BGP password %s/%s changed: reconfiguring its peers", name, key)
                return True
        return False

    def _update_routes(self) -> None:
        self._routes_dirty = False
        plan, rib = self.plan, self.rib
        assert plan is not None and rib is not None
        # Taken whether or not ExaBGP runs: it only starts running with a SpeakerStarted,
        # which forces a full export, so no patch ever needs changes from before.
        changed, self._changed = self._changed, set()
        if self.book.speaker_running:
            if self._full_export or self._policy is None:
                exportable = pool_exporter(self.view.pool_export_rules())
                self._local = {p for p in self.view.local_prefixes() if exportable(p)}
                self._local |= self._advertising.services
                self._policy = ExportPolicy(plan, exportable, rib.router_ids(),
                                            self._advertising)
                desired = self._policy.routes_out(self._local, rib.best_paths())
                announce, withdraw = diff(self._sent, desired)
                self._sent = desired
            else:
                announce, withdraw = self._policy.patch(self._sent, changed, self._local,
                                                        rib.best_paths())
            self._full_export = False
            for peer, prefixes in withdraw.items():
                self.speaker.withdraw(peer, prefixes)
            for peer, routes in announce.items():
                self.speaker.announce(peer, routes)
            # after every announcement above: the speaker and ExaBGP keep the order
            for peer in sorted(self._eor_due):
                self.speaker.end_of_rib(peer)
            self._eor_due.clear()
        self.book.set_counts({p.peer_ip: (rib.received_count(p.peer_ip),
                                          len(self._sent.get(p.peer_ip, ())))
                              for p in plan.peers})
        self._status_dirty = True
        self._publish(rib.best_paths(), None if self._publish_reset else changed)

    def _publish(self, best: Mapping[str, RibPath], prefixes: set[str] | None) -> None:
        """Hand out how the best paths moved since the last publication (None: diff all)."""
        reset, self._publish_reset = self._publish_reset, False
        services = self._advertising.services
        if services:
            best = _Without(best, services)
            if prefixes is not None:
                prefixes = prefixes - services
        delta = best_path_delta(best, self._published, prefixes)
        if not (delta or reset):
            return
        was = len(self._published)
        changes = BestPathChanges(delta, reset)
        changes.apply_to(self._published)
        if abs(len(self._published) - was) >= 100:
            _log.info("BGP best paths: %d (was %d)", len(self._published), was)
        if self.on_routes:
            self.on_routes(changes)
        if self.control:
            self.control.publish_routes(changes)

    def _rib_changed(self, prefixes: set[str]) -> None:
        if prefixes:
            self._changed |= prefixes
            self._routes_dirty = True

    # -- ExaBGP events --------------------------------------------------------------------

    def _on_speaker(self, ev: SpeakerEvent) -> None:
        now, wall = self.clock(), self.wall()
        rib = self.rib
        match ev:
            case RouteUpdate(peer, announced, withdrawn):
                if rib:
                    self._rib_changed(rib.update(peer, announced, withdrawn))
                self._status_dirty = True
            case PeerState(peer, state, reason):
                self.book.on_state(ev, wall)
                self._status_dirty = True
                if state == "up":
                    self._eor_due.add(peer)
                    self._routes_dirty = True  # the pass that sends its End-of-RIB
                elif state == "down":
                    self._eor_due.discard(peer)
                if state == "up" and rib:
                    self._peer_up(peer)
                elif state == "down" and rib:
                    graceful = peer not in self._notified
                    self._notified.discard(peer)
                    _log.info("BGP session with %s down (%s)%s", peer, reason or "no reason",
                              "; keeping its routes while it restarts" if graceful else "")
                    self._rib_changed(rib.peer_down(peer, now, graceful=graceful))
            case PeerOpen(peer):
                self._opens[peer] = ev
            case EndOfRib(peer):
                if rib:
                    self._rib_changed(rib.end_of_rib(peer))
            case PeerNotification(peer, code, subcode):
                if (code, subcode) == BAD_BGP_IDENTIFIER:
                    self._report_id_collision(ev)
                self._notified.add(peer)
                self.book.on_notification(ev)
                self._status_dirty = True
            case NeighborTable():
                self.book.on_table(ev, wall)
                self._status_dirty = True
            case SpeakerStarted(generation):
                _log.info("ExaBGP running (generation %d): announcing everything", generation)
                self.book.on_speaker(True, wall)
                self._sent = {}
                self._eor_due.clear()  # sessions of the old process
                self._routes_dirty = self._full_export = True
                self._status_dirty = True
            case SpeakerStopped(reason):
                _log.warning("ExaBGP stopped (%s); keeping learned routes while it restarts",
                             reason)
                self.book.on_speaker(False, wall, reason)
                self._status_dirty = True
                self._eor_due.clear()
                if rib:
                    for peer in rib.peers():
                        self._rib_changed(rib.peer_down(peer, now, graceful=True))

    def _peer_up(self, peer: str) -> None:
        assert self.rib is not None and self.plan is not None
        opened = self._opens.get(peer)
        spec = next((p for p in self.plan.peers if p.peer_ip == peer), None)
        if spec is None:
            return
        self._rib_changed(self.rib.peer_up(
            peer, router_id=opened.router_id if opened else peer,
            peer_as=opened.asn if opened else spec.peer_as, local_as=spec.local_as,
            restart_time=opened.restart_time if opened else None))
        self._routes_dirty = self._full_export = True  # its router id joins the export policy
        self._notified.discard(peer)
        self._id_collisions.discard(peer)
        _log.info("BGP session with %s (%s) established", peer, spec.name)

    def _report_id_collision(self, ev: PeerNotification) -> None:
        """A session refused with Bad BGP Identifier (either side may send it): name both
        nodes and the id, once until the session comes up. Two nodes of one AS with one
        router id can never peer (RFC 4271 6.2); ExaBGP refuses it, BIRD too."""
        if ev.peer in self._id_collisions:
            return
        self._id_collisions.add(ev.peer)
        plan = self.plan
        spec = next((p for p in plan.peers if p.peer_ip == ev.peer), None) if plan else None
        opened = self._opens.get(ev.peer)
        theirs = opened.router_id if opened else None
        ours = plan.router_id if plan else None
        other = f"node {spec.peer_node}" if spec and spec.peer_node else f"peer {ev.peer}"
        if theirs is not None and theirs == ours:
            what = f"node {self.nodename} and {other} ({ev.peer}) both use BGP router id {ours}"
        else:
            what = (f"node {self.nodename} (router id {ours}) and {other} ({ev.peer}, router "
                    f"id {theirs or 'unknown'}) have a bad or colliding BGP router id")
        _log.error("BGP router id conflict: %s; their session is refused with Bad BGP "
                   "Identifier (2,3) (%s, %s). Give one of them another CALICO_ROUTER_ID.",
                   what, "sent" if ev.direction == "send" else "received", ev.message)

    # -- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The latest status document (called from the control server's threads)."""
        with self._status_lock:
            doc = self._status_doc
        if self.route_problems is not None:
            doc = {**doc, "routeProblems": list(self.route_problems())}
        return doc

    def _refresh_status(self, now: float) -> None:
        # The served document is rebuilt once per change (every neighbour poll marks it
        # dirty), not on every wake of the loop: while pods churn the loop wakes for each
        # datastore batch, and rebuilding it each time within STATUS_MIN_GAP was half of
        # the BGP thread's work. The etcd copy follows at most every STATUS_MIN_GAP.
        if self._status_dirty or now >= self._status_written + STATUS_REFRESH:
            doc = self.book.snapshot(self.nodename, self.wall())
            doc.update(started=self._started, inSync=self.in_sync,
                       datastore=self.datastore_status.value)
            with self._status_lock:
                self._status_doc = doc
            self._status_dirty = False
            self._status_unstored = True
        if not self._status_unstored or now < self._status_written + STATUS_MIN_GAP:
            return
        self._status_unstored = False
        self._status_written = now
        if self.publish_status and self.in_sync:
            with self._status_lock:
                doc = self._status_doc
            content = {k: v for k, v in doc.items() if k != "time"}
            stored_at, stored = self._status_stored
            if content == stored and now < stored_at + STATUS_HEARTBEAT:
                return
            try:
                self.client.put(status_key(self.nodename), json.dumps(doc).encode())
                self._status_stored = (now, content)
            except DatastoreError as exc:
                _log.debug("BGP status not published: %s", exc)

    def _delete_status(self) -> None:
        """Best effort, bounded: a stopping node must not wait on an etcd that is gone."""
        def delete() -> None:
            try:
                self.client.delete(status_key(self.nodename))
            except DatastoreError:
                pass
        if self.publish_status and self.in_sync:
            worker = threading.Thread(target=delete, name="bgp-status-delete", daemon=True)
            worker.start()
            worker.join(timeout=1.0)


class _Without(Mapping[str, RibPath]):
    """`best` without some prefixes, unchanged (no copy of a ToR's 10,000 paths)."""

    def __init__(self, best: Mapping[str, RibPath], left_out: frozenset[str]) -> None:
        self.best, self.left_out = best, left_out

    def __getitem__(self, prefix: str) -> RibPath:
        if prefix in self.left_out:
            raise KeyError(prefix)
        return self.best[prefix]

    def __iter__(self) -> Iterator[str]:
        return (p for p in self.best if p not in self.left_out)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def best_path_delta(best: Mapping[str, RibPath], published: Mapping[str, tuple[str, str]],
                    prefixes: Iterable[str] | None) -> dict[str, tuple[str, str] | None]:
    """Prefix -> (next hop, peer) of its best path, or None for a prefix that lost it,
    for each prefix in `prefixes` (None: every prefix of `best` or `published`) whose
    value differs from `published`. Paths differing in anything else (the stale mark,
    other attributes) are the same route to the kernel and are left out.
    """
    if prefixes is None:
        prefixes = best.keys() | published.keys()
    delta: dict[str, tuple[str, str] | None] = {}
    for prefix in prefixes:
        path = best.get(prefix)
        route = (path.attrs.next_hop, path.peer) if path is not None else None
        if published.get(prefix) != route:
            delta[prefix] = route
    return delta


def default_workdir(nodename: str) -> Path:
    base = Path(os.environ.get("TORTIE_RUN_DIR", "/var/run/tortie"))
    return base / "bgp" / nodename


def _identity(peer: PeerPlan, plan: NodePlan) -> tuple[str, str | None, int, int, str]:
    """What makes ExaBGP treat a neighbour as new on reload (and drop its adj-RIB-out)."""
    return (peer.peer_ip, peer.local_address, peer.peer_as, peer.local_as, plan.router_id)
