"""Peer status as `ctl node status` shows it: state, since, info, last error, counts. Pure.

Fed the plan (which peers exist), ExaBGP's state events and its polled
`show neighbor json` table. Rows use BIRD's vocabulary, because Calico users
read `calicoctl node status` in it:
  * state `up` when Established, `start` while trying, `down` while ExaBGP
    itself is not running;
  * info is the FSM state (`Established`, `Active`, `Connect`, `OpenSent`,
    `OpenConfirm`, `Idle`; `Passive` for a passive peer waiting to be called),
    followed by the last error while the session is not up;
  * since is the wall-clock time of the last state change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from .types import NeighborTable, NodePlan, PeerNotification, PeerState

# Where each node publishes its status document (`ctl node status --all` reads them).
STATUS_PREFIX = "/calico/tortie/v1/bgpstatus/"

_FSM_INFO = {
    "IDLE": "Idle", "ACTIVE": "Active", "CONNECT": "Connect", "OPENSENT": "OpenSent",
    "OPENCONFIRM": "OpenConfirm", "ESTABLISHED": "Established",
}


def status_key(node: str) -> str:
    return STATUS_PREFIX + node


@dataclass(frozen=True, slots=True)
class PeerRow:
    address: str
    port: int
    name: str  # Calico's protocol name (Mesh_..., Global_..., Node_...)
    peer_type: str
    state: str  # up | start | down
    since: float  # wall-clock seconds
    info: str
    error: str = ""
    received: int = 0  # prefixes in the adj-RIB-in
    sent: int = 0  # prefixes in the adj-RIB-out


_ROW_FIELDS = tuple(f.name for f in fields(PeerRow))


class PeerStatusBook:
    """The status row of every configured peer. Not thread-safe."""

    def __init__(self) -> None:
        self._rows: dict[str, PeerRow] = {}
        self._passive: dict[str, bool] = {}
        # The text of the NOTIFICATION that is closing a session, until its `down`: ExaBGP's
        # down reason says only "notification sent (2,3)", the text says why.
        self._notices: dict[str, str] = {}
        self.speaker_running = False
        self.plan: NodePlan | None = None

    def set_plan(self, plan: NodePlan | None, now: float) -> None:
        self.plan = plan
        peers = {p.peer_ip: p for p in plan.peers} if plan else {}
        for ip in list(self._rows):
            if ip not in peers:
                del self._rows[ip]
        for ip, p in peers.items():
            self._passive[ip] = p.passive
            row = self._rows.get(ip)
            if row is None:
                self._rows[ip] = PeerRow(ip, p.peer_port, p.name, p.peer_type,
                                         "start" if self.speaker_running else "down", now,
                                         self._waiting_info(ip, "Idle"))
            else:
                self._rows[ip] = replace(row, port=p.peer_port, name=p.name,
                                         peer_type=p.peer_type)

    def _waiting_info(self, ip: str, info: str) -> str:
        return "Passive" if self._passive.get(ip) and info in ("Idle", "Active") else info

    def on_speaker(self, running: bool, now: float, reason: str = "") -> None:
        self.speaker_running = running
        for ip, row in self._rows.items():
            self._rows[ip] = replace(row, state="start" if running else "down", since=now,
                                     info=self._waiting_info(ip, "Idle"),
                                     error="" if running else reason)

    def on_state(self, ev: PeerState, now: float) -> None:
        row = self._rows.get(ev.peer)
        if row is None:
            return
        notice = self._notices.pop(ev.peer, "") if ev.state in ("up", "down") else ""
        if ev.state == "up":
            self._rows[ev.peer] = replace(row, state="up", since=now, info="Established",
                                          error="")
        elif ev.state == "connected":
            self._rows[ev.peer] = replace(row, state="start", since=now, info="OpenSent")
        elif ev.state == "down":
            self._rows[ev.peer] = replace(row, state="start", since=now,
                                          info=self._waiting_info(ev.peer, "Active"),
                                          error=f"{ev.reason}: {notice}"
                                          if notice and ev.reason.startswith("notification")
                                          else ev.reason or row.error)

    def on_notification(self, ev: PeerNotification) -> None:
        row = self._rows.get(ev.peer)
        if row is not None:
            where = "Received" if ev.direction == "receive" else "Sent"
            self._rows[ev.peer] = replace(row, error=f"{where}: {ev.message}")
            if ev.message:
                self._notices[ev.peer] = ev.message

    def on_table(self, table: NeighborTable, now: float) -> None:
        for n in table.rows:
            row = self._rows.get(n.peer)
            if row is None:
                continue
            info = self._waiting_info(n.peer, _FSM_INFO.get(n.fsm.upper(), n.fsm.title()))
            state = "up" if info == "Established" else "start"
            since = row.since if (state, info) == (row.state, row.info) else now - n.duration
            self._rows[n.peer] = replace(row, state=state, info=info, since=since,
                                         error="" if state == "up" else row.error)

    def set_counts(self, counts: dict[str, tuple[int, int]]) -> None:
        """(received, sent) prefix counts per peer address."""
        for ip, row in self._rows.items():
            received, sent = counts.get(ip, (0, 0))
            if (received, sent) != (row.received, row.sent):
                self._rows[ip] = replace(row, received=received, sent=sent)

    def rows(self) -> list[PeerRow]:
        return [self._rows[ip] for ip in sorted(self._rows, key=_ip_key)]

    def snapshot(self, node: str, now: float) -> dict:
        """The JSON document `ctl node status` reads (locally and from etcd)."""
        plan = self.plan
        return {
            "node": node,
            "time": now,
            "speaker": "running" if self.speaker_running else "stopped",
            "routerID": plan.router_id if plan else None,
            "asNumber": plan.local_as if plan else None,
            # Not dataclasses.asdict: it deep-copies every field (0.19 ms for 20 rows; this 0.014).
            "peers": [{name: getattr(r, name) for name in _ROW_FIELDS} for r in self.rows()],
        }


# -- probes (tortie-bgp --live / --ready) ---------------------------------------------------

# calico-node's -threshold-time default: within this long of the start every peer must
# be Established for readiness, afterwards one is enough.
READY_THRESHOLD = 30.0
# The loop rewrites its status document at least every 10 s (bgp.daemon STATUS_REFRESH);
# one this old means the loop is stuck while the control socket still answers.
LIVE_MAX_AGE = 60.0


def liveness(doc: Mapping[str, Any], now: float, max_age: float = LIVE_MAX_AGE
             ) -> tuple[bool, str]:
    """Live: the daemon answered (the caller got `doc`) and its loop keeps its status fresh.
    Pure; `now` is wall-clock time."""
    if "time" not in doc:
        return True, "tortie-bgp is live: starting"
    age = now - float(doc["time"])
    if age > max_age:
        return False, (f"tortie-bgp is not live: its loop last refreshed its status "
                       f"{age:.0f}s ago")
    return True, f"tortie-bgp is live: BGP speaker {doc.get('speaker', 'stopped')}"


def readiness(doc: Mapping[str, Any], now: float, threshold: float = READY_THRESHOLD
              ) -> tuple[bool, str]:
    """calico-node's -bird-ready (node/pkg/health/health.go checkBIRDReady), on the status
    document. Pure; `now` is wall-clock time.

    No peers: ready. Within `threshold` of the daemon's start: ready only when every
    peer is Established (so a rolling update waits for BGP to be back). Afterwards: ready
    when at least one is (so a mesh does not turn unready when some nodes go down).
    Not ready names the peers that are not Established. Not ready either while the
    watch on the datastore is lost (after the first sync): changes would not reach BGP."""
    if not doc.get("inSync"):
        return False, "tortie-bgp is not ready: waiting for the datastore to be in sync"
    if doc.get("datastore", "in-sync") == "wait-for-datastore":
        # Sessions may well be up, but nothing that changes in etcd reaches BGP now.
        return False, "tortie-bgp is not ready: the datastore connection is lost (re-watching)"
    peers = list(doc.get("peers") or [])
    if not peers:
        return True, "tortie-bgp is ready: no BGP peers configured"
    down = [p["address"] for p in peers if p.get("state") != "up"]
    up = len(peers) - len(down)
    young = now - float(doc.get("started", 0)) < threshold
    if (down and young) or not up:
        why = "" if doc.get("speaker") == "running" else " (BGP speaker not running)"
        return False, f"tortie-bgp is not ready: BGP not established with {','.join(down)}{why}"
    return True, f"tortie-bgp is ready: {up} of {len(peers)} BGP sessions established"


def _ip_key(ip: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in ip.split("."))
    except ValueError:
        return (1 << 16,)
