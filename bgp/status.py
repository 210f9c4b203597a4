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

from dataclasses import asdict, dataclass, replace

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


class PeerStatusBook:
    """The status row of every configured peer. Not thread-safe."""

    def __init__(self) -> None:
        self._rows: dict[str, PeerRow] = {}
        self._passive: dict[str, bool] = {}
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
        if ev.state == "up":
            self._rows[ev.peer] = replace(row, state="up", since=now, info="Established",
                                          error="")
        elif ev.state == "connected":
            self._rows[ev.peer] = replace(row, state="start", since=now, info="OpenSent")
        elif ev.state == "down":
            self._rows[ev.peer] = replace(row, state="start", since=now,
                                          info=self._waiting_info(ev.peer, "Active"),
                                          error=ev.reason or row.error)

    def on_notification(self, ev: PeerNotification) -> None:
        row = self._rows.get(ev.peer)
        if row is not None:
            where = "Received" if ev.direction == "receive" else "Sent"
            self._rows[ev.peer] = replace(row, error=f"{where}: {ev.message}")

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
            "peers": [asdict(r) for r in self.rows()],
        }


def _ip_key(ip: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in ip.split("."))
    except ValueError:
        return (1 << 16,)
