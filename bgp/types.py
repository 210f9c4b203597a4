"""Value types shared by the BGP side: path attributes, speaker events, routes out.

Everything here is immutable and free of I/O. A peer is identified by its
address as ExaBGP prints it (the `neighbor.address.peer` of its JSON).
`BestPathChanges.routes` is a Mapping that may be a plain dict: whoever builds
one hands it out and never changes it afterwards, and receivers only read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

ORIGINS = ("igp", "egp", "incomplete")  # best first (RFC 4271 9.1.2.2 c)
DEFAULT_LOCAL_PREF = 100


@dataclass(frozen=True, slots=True)
class PathAttributes:
    """The attributes of one path, as received or as to be sent."""

    next_hop: str
    origin: str = "igp"
    as_path: tuple[int, ...] = ()
    med: int | None = None
    local_pref: int | None = None
    communities: tuple[str, ...] = ()  # "aa:nn"
    originator_id: str | None = None
    cluster_list: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()  # "aa:nn:mm" (RFC 8092)


# -- events from the speaker (ExaBGP, parsed) ------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerState:
    """A session state change: `connected`, `up` or `down` (with ExaBGP's reason)."""

    peer: str
    state: str
    reason: str = ""
    time: float = 0.0


@dataclass(frozen=True, slots=True)
class PeerOpen:
    """The OPEN a peer sent us: its identity and whether it can restart gracefully."""

    peer: str
    router_id: str
    asn: int
    hold_time: int
    restart_time: int | None  # the peer's graceful-restart time; None: no GR capability


@dataclass(frozen=True, slots=True)
class RouteUpdate:
    """One UPDATE from a peer: prefixes announced (with attributes) and withdrawn."""

    peer: str
    announced: dict[str, PathAttributes] = field(default_factory=dict)
    withdrawn: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EndOfRib:
    peer: str


@dataclass(frozen=True, slots=True)
class PeerNotification:
    """A NOTIFICATION sent to or received from a peer (the session is closing)."""

    peer: str
    code: int
    subcode: int
    message: str
    direction: str = "receive"  # or "send"


@dataclass(frozen=True, slots=True)
class NeighborStatus:
    """One row of `show neighbor json`: the FSM state of a configured peer."""

    peer: str
    fsm: str  # IDLE, ACTIVE, CONNECT, OPENSENT, OPENCONFIRM, ESTABLISHED
    duration: float  # seconds since the last state change
    sent: int = 0  # UPDATE messages
    received: int = 0


@dataclass(frozen=True, slots=True)
class NeighborTable:
    rows: tuple[NeighborStatus, ...]


@dataclass(frozen=True, slots=True)
class SpeakerStarted:
    """A (re)started ExaBGP: every session is new and every adj-RIB-out is empty."""

    generation: int


@dataclass(frozen=True, slots=True)
class SpeakerStopped:
    reason: str


SpeakerEvent = (PeerState | PeerOpen | RouteUpdate | EndOfRib | PeerNotification | NeighborTable
                | SpeakerStarted | SpeakerStopped)


# -- routes out -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutRoute:
    """A route to announce to one peer: the prefix and every attribute to send."""

    prefix: str
    attrs: PathAttributes


class BestPathChanges(NamedTuple):
    """How the best paths changed, for the kernel side (the agent).

    `routes`: prefix -> (next hop, peer) of its best path now, or None where the
    prefix has no best path any more. `reset`: `routes` is the whole set; the
    receiver forgets every prefix it does not name (the first message after a
    start or a reconnect).
    """

    routes: Mapping[str, tuple[str, str] | None]
    reset: bool = False

    def apply_to(self, table: dict[str, tuple[str, str]]) -> None:
        """Make `table` (prefix -> (next hop, peer)) what it is after this change."""
        if self.reset:
            table.clear()
        for prefix, route in self.routes.items():
            if route is None:
                table.pop(prefix, None)
            else:
                table[prefix] = route


# -- the peering plan (rendered from the datastore by bgp.plan) --------------------------

MESH, GLOBAL, NODE_SPECIFIC = "node-to-node mesh", "global", "node specific"
DEFAULT_HOLD_TIME = 240  # BIRD's default, which Calico inherits
DEFAULT_PORT = 179


@dataclass(frozen=True, slots=True)
class PeerPlan:
    """One BGP session of this node, fully resolved (no defaults left to apply)."""

    name: str  # Calico's protocol name: Mesh_10_0_0_2, Global_10_0_0_9, Node_10_0_0_9[_port_N]
    peer_type: str  # MESH | GLOBAL | NODE_SPECIFIC
    peer_ip: str
    peer_as: int
    local_as: int
    peer_port: int = DEFAULT_PORT
    local_address: str | None = None  # sourceAddress UseNodeIP: the node's IPv4
    passive: bool = False  # wait for the peer to connect
    # Resolved clear text; lives only in memory and the conf file, never in a log line.
    password: str | None = field(default=None, repr=False)
    hold_time: int = DEFAULT_HOLD_TIME
    restart_time: int | None = None  # graceful-restart time to advertise; None: 120 s
    ttl_security: int | None = None  # GTSM hop count
    rr_client: bool = False  # this node reflects to this peer
    peer_node: str | None = None  # the tortie node at peer_ip, if it is one
    peer_cluster_id: str | None = None  # that node's routeReflectorClusterID
    next_hop_mode: str = "Auto"  # Auto | Self | Keep

    @property
    def ebgp(self) -> bool:
        return self.peer_as != self.local_as


@dataclass(frozen=True, slots=True)
class NodePlan:
    """Everything this node's BGP speaker needs; equal plans render equal configs."""

    node: str
    node_ip: str  # the node's IPv4: next hop self for the routes it originates
    router_id: str
    local_as: int
    # bindMode NodeIP: the node's IPv4, the only address ExaBGP listens on; None (bindMode
    # None, Calico's default): every IPv4 address of the node.
    listen_address: str | None
    listen_port: int = DEFAULT_PORT
    cluster_id: str | None = None  # routeReflectorClusterID: this node is a reflector
    peers: tuple[PeerPlan, ...] = ()  # sorted by name
    problems: tuple[str, ...] = ()  # peers left out, and why
