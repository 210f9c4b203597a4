"""The peering plan: which BGP sessions one node has, computed from the datastore. Pure.

`plan_node` turns Nodes, BGPPeers and BGPConfigurations into a `NodePlan`
with every default applied, following confd's rules (confd/pkg/backends/calico/bgp_processor.go):

* Identity. Router id, node IP = the node's IPv4; listen address = the node's
  IPv4 only with the global BGPConfiguration's `bindMode: NodeIP`, else every
  address (confd's getBindMode: only the global configuration counts); AS = the
  Node's asNumber, else the global BGPConfiguration's, else 64512; listen
  port = `node.<name>` BGPConfiguration listenPort, else the global one,
  else 179; cluster id = the Node's routeReflectorClusterID.
* BGPPeers, first pass: global ones (neither node nor nodeSelector); second
  pass: node-specific ones that apply here (`node` is this node or
  `nodeSelector` matches its labels). `peerIP` gives one peer (its AS is
  spec.asNumber); `peerSelector` gives each selected node that has an IPv4
  (AS = that node's, else global). Names: `Global_<ip>` / `Node_<ip>`, with
  `_port_<n>` when a port is explicit: from peerIP, or, for a peer that is a
  Calico node, its configured listenPort (as confd's `Port > 0`).
* Reverse peerings, third pass (confd `updatePeersV1`): for every BGPPeer
  without `reversePeering: Manual`, the nodes on its *remote* side - those
  its peerSelector matches, or for a peerIP the nodes whose IPv4 is that
  IP, whose AS is spec.asNumber (global if 0) and, if the peerIP has a port,
  whose listen port is that port - peer back with every node on its *local*
  side: those its nodeSelector matches, its `node`, or all nodes for a
  global BGPPeer. Reverse peerings are node-specific (`Node_<ip>`) and carry
  the BGPPeer's session settings (password, keepalive, restart time, TTL
  security, sourceAddress). tortie deviations: the reverse side's peer AS
  is the BGPPeer's localASNumber when set (the AS the forward side speaks),
  and localASNumber / nextHopMode are not applied to the reverse side.
* Dedup, in pass order (BGPPeers by name within a pass): the first peering
  per (kind, ip, port) wins, and a node-specific one is dropped when a
  global one has the same (ip, port). tortie adds: one session per peer IP
  (ExaBGP and the speaker key peers by address), so a later peering to an IP
  already taken with another port is dropped with a problem.
* Mesh, last: only when nodeToNodeMeshEnabled (default true); every other
  node with an IPv4, as `Mesh_<ip>`, with its AS (else global) and its
  listen port; password from nodeMeshPassword, restart time from
  nodeMeshMaxRestartTime. An IP with an explicit peering gets no mesh
  session (explicit wins, nothing recorded). tortie deviation: route
  reflectors stay in the mesh while it is on. confd's template takes a node
  out of the mesh the moment it gets a cluster id, so the order Calico's
  documentation gives for moving to reflectors (cluster id and label, then
  the BGPPeer, then the mesh off) cuts the reflectors' pods off until the
  BGPPeer exists (6.5 s of lost probes in tests/faults F15). Kept in the
  mesh, each reflector's mesh sessions become the BGPPeer's sessions to the
  same address (the same ExaBGP neighbor, not reset) and are the only ones
  left once the mesh is off: make-before-break.
* Passive: for a peer that is another node (mesh, peerSelector, reverse, or a
  peerIP equal to a node's IPv4), this side waits when peer_ip > own_ip
  compared as strings. Calico applies this to the mesh (and, at HEAD,
  global peers); tortie applies it to every node-to-node session so both
  ends always agree on who connects and BGP collisions never flap them.
* Route reflection: rr_client when the peer's AS equals the effective local
  AS, this node has a cluster id, and the peer has none or another one (the
  peer's cluster id is known for any peer that is a node; Calico only knows
  it for selector peers).
* Secrets: a configured password that cannot be read (or is empty, or longer
  than the 80-byte TCP-MD5 key limit) leaves the peer out with a problem -
  never connect without it - and its IP stays taken, so the mesh does not
  step in with a password-less session.
* Never peer with yourself; IPv6 peers are left out with a problem (only IPv4
  is routed). Peers are sorted by name, problems sorted: equal inputs give
  equal plans.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from datastore import selector as selectors
from datastore.resources.bgp import (
    DEFAULT_AS_NUMBER,
    BGPConfiguration,
    BGPPeer,
    SecretKeyRef,
    parse_peer_ip,
)
from datastore.resources.node import Node

from .types import (
    DEFAULT_HOLD_TIME,
    DEFAULT_PORT,
    GLOBAL,
    MESH,
    NODE_SPECIFIC,
    NodePlan,
    PeerPlan,
)

PasswordFor = Callable[[SecretKeyRef], str | None]

MAX_HOLD_TIME = 65535  # the OPEN's 16-bit field
MAX_RESTART_TIME = 4095  # RFC 4724: the graceful-restart time is 12 bits
MD5_MAX_KEY = 80  # Linux TCP_MD5SIG_MAXKEYLEN: a longer key is refused by the kernel
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _seconds(text: str) -> float:
    return sum(float(n) * _UNIT[unit] for n, unit in _DURATION_PART.findall(text))


def duration_seconds(text: str) -> int:
    """A Go duration as the models accept it ("120s", "2m", "1h30m") in whole seconds, rounded."""
    return int(_seconds(text) + 0.5)  # Go's math.Round, for the non-negative values these are


def clamp_hold_time(seconds: int) -> int:
    """RFC 4271 4.2: the hold time is 0 (no keepalives) or at least 3 seconds."""
    if seconds <= 0:
        return 0
    return min(max(seconds, 3), MAX_HOLD_TIME)


def _restart_time(text: str | None) -> int | None:
    # At least 1: ExaBGP reads a graceful-restart time of 0 as "use the hold time".
    return None if text is None else min(max(duration_seconds(text), 1), MAX_RESTART_TIME)


def _ipv4(node: Node) -> str | None:
    cidr = node.ipv4_address
    return str(ipaddress.ip_interface(cidr).ip) if cidr else None


def _cluster_id(node: Node) -> str | None:
    return node.spec.bgp.routeReflectorClusterID if node.spec.bgp else None


def _ip_name(ip: str) -> str:
    return ip.replace(".", "_").replace(":", "_")


@dataclass(frozen=True, slots=True)
class _Remote:
    """Another node as a BGP peer."""

    name: str
    ip: str
    asn: int
    cluster_id: str | None
    port: int | None  # its configured listenPort (node-specific, else global); None: unset


@dataclass(frozen=True, slots=True)
class _Candidate:
    kind: str  # GLOBAL | NODE_SPECIFIC
    ip: str
    port: int | None
    peer_as: int
    source: BGPPeer
    remote: _Remote | None
    reverse: bool = False

    @property
    def name(self) -> str:
        prefix = "Global" if self.kind == GLOBAL else "Node"
        return f"{prefix}_{_ip_name(self.ip)}" + (f"_port_{self.port}" if self.port else "")


class _Planner:
    def __init__(self, nodename: str, local: Node, own_ip: str, nodes: Mapping[str, Node],
                 configs: Mapping[str, BGPConfiguration], password_for: PasswordFor,
                 hold_time: int) -> None:
        self.nodename, self.own_ip = nodename, own_ip
        self.nodes = {name: nodes[name] for name in sorted(nodes)}
        self.configs = configs
        self.glob = configs["default"].spec if "default" in configs else None
        glob_as = self.glob.asNumber if self.glob else None
        self.global_as = int(glob_as) if glob_as is not None else DEFAULT_AS_NUMBER
        self.local_as = local.as_number if local.as_number is not None else self.global_as
        self.cluster_id = _cluster_id(local)
        self.password_for = password_for
        self.hold_time = clamp_hold_time(hold_time)
        self.remotes = {n: r for n, node in self.nodes.items() if (r := self._remote(n, node))}
        self.peers: list[PeerPlan] = []
        self.problems: set[str] = set()
        self._keys: set[tuple[str, str, int | None]] = set()
        self._taken: dict[str, str] = {}  # peer ip -> name of the peering that has it

    # -- lookups ----------------------------------------------------------------------

    def configured_port(self, nodename: str) -> int | None:
        per_node = self.configs.get(f"node.{nodename}")
        if per_node and per_node.spec.listenPort:
            return per_node.spec.listenPort
        return self.glob.listenPort if self.glob and self.glob.listenPort else None

    def _remote(self, name: str, node: Node) -> _Remote | None:
        ip = _ipv4(node)
        if ip is None:
            return None
        asn = node.as_number if node.as_number is not None else self.global_as
        return _Remote(name, ip, asn, _cluster_id(node), self.configured_port(name))

    def remote_at(self, ip: str) -> _Remote | None:
        """The node whose IPv4 is `ip` (the first by name if several claim it)."""
        return next((r for r in self.remotes.values() if r.ip == ip), None)

    def matching(self, text: str, owner: BGPPeer) -> list[str]:
        """Names of the nodes a selector matches, sorted; a bad selector matches nothing."""
        try:
            sel = selectors.parse(text)
        except selectors.SelectorError as exc:
            self.problems.add(f"BGPPeer {owner.name}: selector {text!r} is invalid ({exc})")
            return []
        return [n for n, node in self.nodes.items() if sel.evaluate(node.metadata.labels or {})]

    def applies_here(self, peer: BGPPeer) -> bool:
        s = peer.spec
        if s.node:
            return s.node == self.nodename
        return bool(s.nodeSelector) and self.nodename in self.matching(s.nodeSelector, peer)

    def password(self, ref: SecretKeyRef | None, who: str, what: str) -> tuple[bool, str | None]:
        """(usable, password). Unusable: the secret is configured but cannot be used."""
        if ref is None:
            return True, None
        password = self.password_for(ref)
        where = f"secret {ref.name}/{ref.key}"
        if password is None:
            reason = f"{where} not found"
        elif not password:
            reason = f"{where} is empty"
        elif len(password.encode()) > MD5_MAX_KEY:
            reason = f"{where} is longer than {MD5_MAX_KEY} bytes (the TCP-MD5 key limit)"
        else:
            return True, password
        self.problems.add(f"{who}: {reason}; {what} left out (never connect without the password)")
        return False, None

    # -- passes -----------------------------------------------------------------------

    def forward(self, peer: BGPPeer, kind: str) -> None:
        s = peer.spec
        if s.peerSelector:
            for name in self.matching(s.peerSelector, peer):
                r = self.remotes.get(name)
                if r and name != self.nodename:
                    self.emit(_Candidate(kind, r.ip, r.port, r.asn, peer, r))
            return
        if not s.peerIP:
            return
        ip, port = parse_peer_ip(s.peerIP)
        if ipaddress.ip_address(ip).version == 6:
            self.problems.add(f"BGPPeer {peer.name}: peer {s.peerIP}: "
                              "IPv6 peering is not supported yet")
            return
        peer_as = int(s.asNumber or 0) or self.global_as  # confd: AS 0 means the global AS
        remote = self.remote_at(ip)
        if port is None and remote and remote.asn == peer_as:
            port = remote.port  # a Calico node at that IP: dial its listen port
        self.emit(_Candidate(kind, ip, port, peer_as, peer, remote))

    def reverse(self, peer: BGPPeer) -> None:
        s = peer.spec
        if s.reversePeering == "Manual":
            return
        if s.peerSelector:
            here = self.nodename in self.matching(s.peerSelector, peer)
        elif s.peerIP:
            ip, port = parse_peer_ip(s.peerIP)
            wanted_as = int(s.asNumber or 0) or self.global_as
            own_port = self.configured_port(self.nodename) or DEFAULT_PORT
            here = ip == self.own_ip and self.local_as == wanted_as and port in (None, own_port)
        else:
            here = False
        if not here:
            return
        if s.nodeSelector:
            names = self.matching(s.nodeSelector, peer)
        elif s.node:
            names = [s.node]
        else:
            names = list(self.nodes)
        for name in names:
            r = self.remotes.get(name)
            if r and name != self.nodename:
                peer_as = int(s.localASNumber) if s.localASNumber is not None else r.asn
                self.emit(_Candidate(NODE_SPECIFIC, r.ip, r.port, peer_as, peer, r, reverse=True))

    def mesh(self) -> None:
        enabled = self.glob is None or self.glob.nodeToNodeMeshEnabled is not False
        if not enabled:
            return
        remotes = [r for name, r in self.remotes.items() if name != self.nodename
                   and r.ip != self.own_ip and r.ip not in self._taken]
        if not remotes:
            return
        mesh_password = self.glob.nodeMeshPassword if self.glob else None
        ref = mesh_password.secretKeyRef if mesh_password else None
        usable, password = self.password(ref, "BGPConfiguration default nodeMeshPassword",
                                         "node-to-node mesh peers")
        if not usable:
            return
        restart = _restart_time(self.glob.nodeMeshMaxRestartTime if self.glob else None)
        for r in remotes:
            if r.ip in self._taken:  # two nodes claiming one IP: the first by name has it
                continue
            self._taken[r.ip] = name = f"Mesh_{_ip_name(r.ip)}"
            self.peers.append(PeerPlan(
                name=name, peer_type=MESH, peer_ip=r.ip, peer_as=r.asn, local_as=self.local_as,
                peer_port=r.port or DEFAULT_PORT, local_address=self.own_ip,
                passive=r.ip > self.own_ip, password=password, hold_time=self.hold_time,
                restart_time=restart, peer_node=r.name, peer_cluster_id=r.cluster_id))

    # -- one peering --------------------------------------------------------------------

    def emit(self, c: _Candidate) -> None:
        if c.ip == self.own_ip:
            return
        key = (c.kind, c.ip, c.port)
        if key in self._keys or (c.kind == NODE_SPECIFIC and (GLOBAL, c.ip, c.port) in self._keys):
            return  # confd: the first peering per key wins; a global one beats a node one
        self._keys.add(key)
        if c.ip in self._taken:
            self.problems.add(f"BGPPeer {c.source.name}: peering {c.name} left out: "
                              f"{c.ip} already has session {self._taken[c.ip]}")
            return
        self._taken[c.ip] = c.name  # taken even if the password is missing: no fallback
        s = c.source.spec
        ref = s.password.secretKeyRef if s.password else None
        usable, password = self.password(ref, f"BGPPeer {c.source.name}", f"peer {c.name}")
        if not usable:
            return
        local_as = self.local_as
        if not c.reverse and s.localASNumber is not None:
            local_as = int(s.localASNumber)
        hold = self.hold_time
        if s.keepaliveTime is not None:
            # 3 x keepalive, rounded up so that a sub-second keepalive does not mean "none"
            hold = clamp_hold_time(math.ceil(3 * _seconds(s.keepaliveTime)))
        next_hop = "Auto"
        if not c.reverse:
            if s.nextHopMode:
                next_hop = s.nextHopMode
            elif s.keepOriginalNextHop and c.peer_as != local_as:  # deprecated; eBGP only
                next_hop = "Keep"
        peer_cluster = c.remote.cluster_id if c.remote else None
        self.peers.append(PeerPlan(
            name=c.name, peer_type=c.kind, peer_ip=c.ip, peer_as=c.peer_as, local_as=local_as,
            peer_port=c.port or DEFAULT_PORT,
            local_address=None if s.sourceAddress == "None" else self.own_ip,
            passive=c.remote is not None and c.ip > self.own_ip,
            password=password, hold_time=hold, restart_time=_restart_time(s.maxRestartTime),
            ttl_security=s.ttlSecurity or None,
            rr_client=bool(c.peer_as == local_as and self.cluster_id
                           and peer_cluster != self.cluster_id),
            peer_node=c.remote.name if c.remote else None, peer_cluster_id=peer_cluster,
            next_hop_mode=next_hop))


def hashed_router_id(nodename: str) -> str:
    """confd's HashToIPv4 (CALICO_ROUTER_ID=hash): the first 4 bytes of the SHA-256 of the
    node name, the first one moved out of 224-255 (multicast and reserved) by -32."""
    first, *rest = hashlib.sha256(nodename.encode()).digest()[:4]
    return ".".join(str(b) for b in (first - 32 if first > 223 else first, *rest))


def plan_node(nodename: str, nodes: Mapping[str, Node], peers: Iterable[BGPPeer],
              configs: Mapping[str, BGPConfiguration], *, password_for: PasswordFor,
              hold_time: int = DEFAULT_HOLD_TIME, router_id: str | None = None
              ) -> NodePlan | None:
    """This node's sessions; None when the node is unknown or has no IPv4 address.
    `router_id` is CALICO_ROUTER_ID: None for the node's IPv4, `hash`, or an address."""
    local = nodes.get(nodename)
    own_ip = _ipv4(local) if local else None
    if local is None or own_ip is None:
        return None
    p = _Planner(nodename, local, own_ip, nodes, configs, password_for, hold_time)
    by_name = sorted(peers, key=lambda peer: peer.name)
    for peer in by_name:
        if not peer.spec.node and not peer.spec.nodeSelector:
            p.forward(peer, GLOBAL)
    for peer in by_name:
        if p.applies_here(peer):
            p.forward(peer, NODE_SPECIFIC)
    for peer in by_name:
        p.reverse(peer)
    p.mesh()
    return NodePlan(
        node=nodename, node_ip=own_ip,
        router_id=(own_ip if router_id is None else
                   hashed_router_id(nodename) if router_id == "hash" else router_id),
        local_as=p.local_as,
        listen_address=own_ip if p.glob and p.glob.bindMode == "NodeIP" else None,
        listen_port=p.configured_port(nodename) or DEFAULT_PORT,
        cluster_id=p.cluster_id, peers=tuple(sorted(p.peers, key=lambda pp: pp.name)),
        problems=tuple(sorted(p.problems)))
