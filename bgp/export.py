"""What this node sends to each peer (its adj-RIBs-out), and how they change. Pure.

ExaBGP keeps no export policy of ours: it sends exactly the routes it is told, with the
attributes given (an explicit AS_PATH goes out as is; LOCAL_PREF is dropped towards eBGP
peers). So every attribute of every route out is decided here, per peer.

Nothing is sent for a prefix that `exportable(prefix)` refuses (outside every IP pool, or in a
pool with disableBGPExport), whether originated here or learned.

Locally originated prefixes (this node's confirmed affine blocks and the /32s it borrowed) go
to every peer: next hop this node (`plan.node_ip`), ORIGIN igp; towards iBGP AS_PATH () and
LOCAL_PREF 100, towards eBGP AS_PATH (the session's local AS,) (`PeerPlan.local_as`, which
localASNumber may set) and no LOCAL_PREF. When a prefix is both originated here and learned,
only the local route goes out. The service ranges of `bgp.advertise` are originated here too,
and go out although no pool holds them. Every local route carries the communities
`Advertising.communities` gives its prefix (prefixAdvertisements), towards every peer.

Learned best paths (from `bgp.rib`):
  * never back to the peer they came from, never to a peer whose router id is the path's
    originator (ORIGINATOR_ID, else the source peer's router id);
  * never to an eBGP peer, and eBGP-learned paths go to nobody. tortie exports only its own
    routes to a top-of-rack router, which peers with every node itself. (Calico's BIRD
    re-exports whatever matches a pool, so a ToR can learn node A's block through node B and
    pick that path; traffic then takes a detour or, with IPIP, is dropped by B.)
  * a node that is not a route reflector (`plan.cluster_id` None) sends none at all: iBGP
    split horizon, since every iBGP speaker hears the originator itself (mesh) or via a
    reflector.
  * a route reflector (RFC 4456) reflects a best path from iBGP peer P: from a client
    (`PeerPlan.rr_client`) to every other iBGP peer, clients and non-clients; from a
    non-client to clients only. A source no longer in the plan is reflected to nobody. The
    attributes are kept (next hop, AS_PATH, ORIGIN, MED, LOCAL_PREF, communities) except
    ORIGINATOR_ID (set to P's router id unless already there) and CLUSTER_LIST (our cluster
    id prepended). Towards a peer whose nextHopMode is Self the next hop is this node, as
    BIRD's `next hop self` does for reflected routes; Auto and Keep leave it as it was.

Peer router ids: `PeerPlan` has none, so the originator check uses `router_ids[peer_ip]` when
given (`Rib.router_ids()` knows them from the OPENs), and otherwise assumes the peer's address
is its router id, which holds for tortie nodes (router id = node IPv4).

Shapes: the adj-RIBs-out are `{peer_ip: {prefix: OutRoute}}` with a (possibly empty) entry
for every peer of the plan; routes with equal attributes share one OutRoute. `routes_out`
builds them whole (on a plan or pool change), `ExportPolicy.patch` redoes only some
prefixes in place (after a RIB update: O(changed prefixes x peers)), and `diff` turns two of
them into announcements and withdrawals per peer.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from dataclasses import replace
from types import MappingProxyType

from .advertise import NO_COMMUNITIES, Advertising, Communities
from .rib import Path
from .types import DEFAULT_LOCAL_PREF, NodePlan, OutRoute, PathAttributes, PeerPlan

RoutesOut = dict[str, dict[str, OutRoute]]  # peer_ip -> prefix -> route
_NO_TARGETS: Mapping[str, OutRoute] = MappingProxyType({})
Announce = dict[str, list[OutRoute]]  # peer_ip -> routes to (re)announce
Withdraw = dict[str, list[str]]  # peer_ip -> prefixes to withdraw


def pool_exporter(pools: Iterable[tuple[str, bool]]) -> Callable[[str], bool]:
    """`(cidr, disable_bgp_export)` pairs -> is a prefix inside (or equal to) an exported pool.

    IPv4 only: IPv6 pools are skipped and IPv6 or malformed prefixes are refused. When pools
    overlap the most specific one decides. A malformed pool CIDR raises ValueError.
    """
    tables: dict[int, dict[int, bool]] = {}  # pool length -> pool base -> exported
    for cidr, disable_bgp_export in pools:
        net = ipaddress.ip_network(cidr, strict=False)
        if net.version == 4:
            tables.setdefault(net.prefixlen, {})[int(net.network_address)] = not disable_bgp_export
    by_length = [(length, (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF, tables[length])
                 for length in sorted(tables, reverse=True)]

    def exportable(prefix: str) -> bool:
        address, _, length_text = prefix.partition("/")
        try:
            base = int.from_bytes(socket.inet_pton(socket.AF_INET, address), "big")
            length = int(length_text) if length_text else 32
        except (OSError, ValueError):
            return False
        if not 0 <= length <= 32:
            return False
        for pool_length, mask, table in by_length:
            if pool_length <= length:
                exported = table.get(base & mask)
                if exported is not None:
                    return exported
        return False

    return exportable


class ExportPolicy:
    """The export rules above, prepared for one plan, pool set and set of peer router ids."""

    def __init__(self, plan: NodePlan, exportable: Callable[[str], bool],
                 router_ids: Mapping[str, str] | None = None,
                 advertising: Advertising | None = None) -> None:
        self.plan, self.exportable = plan, exportable
        self.advertising = advertising or Advertising()
        self._router_ids = dict(router_ids or {})
        self._peers = {p.peer_ip: p for p in plan.peers}
        self._ibgp = [p for p in plan.peers if not p.ebgp]
        self._local_ibgp = PathAttributes(next_hop=plan.node_ip, local_pref=DEFAULT_LOCAL_PREF)
        self._local_ebgp: dict[tuple[int, Communities], PathAttributes] = {}  # local AS, ...
        self._local_ibgp_with: dict[Communities, PathAttributes] = {NO_COMMUNITIES: self._local_ibgp}
        self._reflect_to: dict[str, list[PeerPlan]] = {}  # source peer -> targets, cached

    def routes_out(self, local_prefixes: Iterable[str], best: Mapping[str, Path]) -> RoutesOut:
        """Every route to send, per peer (every peer of the plan has an entry)."""
        out: RoutesOut = {p.peer_ip: {} for p in self.plan.peers}
        local = set(local_prefixes)
        for prefix in local:
            for peer_ip, route in self._targets(prefix, True, None):
                out[peer_ip][prefix] = route
        if self.plan.cluster_id is not None:  # only a reflector sends learned paths
            for prefix, path in best.items():
                if prefix not in local:
                    for peer_ip, route in self._targets(prefix, False, path):
                        out[peer_ip][prefix] = route
        return out

    def patch(self, out: RoutesOut, prefixes: Iterable[str], local_prefixes: Container[str],
              best: Mapping[str, Path]) -> tuple[Announce, Withdraw]:
        """Redo `prefixes` in `out` (built by this policy) in place; return what changed."""
        announce: Announce = {}
        withdraw: Withdraw = {}
        for prefix in prefixes:
            local, path = prefix in local_prefixes, best.get(prefix)
            # A ToR's 10,000 prefixes, and every learned path on a node that is no
            # reflector, go to nobody: no generator and dict per prefix to find that out.
            targets = (dict(self._targets(prefix, local, path))
                       if local or self._may_reflect(path) else _NO_TARGETS)
            for peer_ip, routes in out.items():
                new, old = targets.get(peer_ip), routes.get(prefix)
                if new is None:
                    if old is not None:
                        del routes[prefix]
                        withdraw.setdefault(peer_ip, []).append(prefix)
                elif new != old:
                    routes[prefix] = new
                    announce.setdefault(peer_ip, []).append(new)
        return announce, withdraw

    def _targets(self, prefix: str, local: bool, path: Path | None
                 ) -> Iterator[tuple[str, OutRoute]]:
        """(peer_ip, route) for every peer that gets `prefix`."""
        if local:
            if prefix not in self.advertising.services and not self.exportable(prefix):
                return
            communities = self.advertising.communities(prefix)
            ibgp_route = OutRoute(prefix, self._ibgp_attrs(communities))
            for peer in self.plan.peers:
                yield peer.peer_ip, (OutRoute(prefix, self._ebgp_attrs(peer.local_as, communities))
                                     if peer.ebgp else ibgp_route)
            return
        # The cheap tests first: 10,000 paths from a ToR stop here, unparsed.
        if not self._may_reflect(path):
            return
        assert path is not None
        if not self.exportable(prefix):
            return
        targets = self._reflection_targets(path.peer)
        if not targets:
            return
        originator = path.attrs.originator_id or path.peer_router_id
        attrs = replace(path.attrs, originator_id=originator,
                        cluster_list=(self.plan.cluster_id, *path.attrs.cluster_list))
        kept = OutRoute(prefix, attrs)
        self_hop = None
        for peer in targets:
            if self._router_ids.get(peer.peer_ip, peer.peer_ip) == originator:
                continue
            if peer.next_hop_mode == "Self":
                self_hop = self_hop or OutRoute(prefix, replace(attrs, next_hop=self.plan.node_ip))
                yield peer.peer_ip, self_hop
            else:
                yield peer.peer_ip, kept

    def _may_reflect(self, path: Path | None) -> bool:
        """Whether a learned best path can go to anyone (the tests that need no parsing)."""
        return path is not None and not path.ebgp and self.plan.cluster_id is not None

    def _ibgp_attrs(self, communities: Communities) -> PathAttributes:
        attrs = self._local_ibgp_with.get(communities)
        if attrs is None:
            attrs = self._local_ibgp_with[communities] = replace(
                self._local_ibgp, communities=communities[0], large_communities=communities[1])
        return attrs

    def _ebgp_attrs(self, local_as: int, communities: Communities) -> PathAttributes:
        attrs = self._local_ebgp.get((local_as, communities))
        if attrs is None:
            attrs = self._local_ebgp[(local_as, communities)] = PathAttributes(
                next_hop=self.plan.node_ip, as_path=(local_as,), communities=communities[0],
                large_communities=communities[1])
        return attrs

    def _reflection_targets(self, source: str) -> list[PeerPlan]:
        targets = self._reflect_to.get(source)
        if targets is None:
            origin = self._peers.get(source)
            if origin is None or origin.ebgp:
                targets = []
            else:
                targets = [p for p in self._ibgp if p.peer_ip != source
                           and (origin.rr_client or p.rr_client)]
            self._reflect_to[source] = targets
        return targets


def routes_out(plan: NodePlan, local_prefixes: Iterable[str], best: Mapping[str, Path],
               exportable: Callable[[str], bool],
               router_ids: Mapping[str, str] | None = None,
               advertising: Advertising | None = None) -> RoutesOut:
    """Every route this node sends, per peer: `ExportPolicy(...).routes_out(...)`."""
    return ExportPolicy(plan, exportable, router_ids, advertising).routes_out(local_prefixes, best)


def diff(old: RoutesOut, new: RoutesOut) -> tuple[Announce, Withdraw]:
    """Per peer, the routes of `new` that `old` lacks or has with other attributes, and the
    prefixes of `old` that `new` lacks; both sorted by prefix, peers without change left out."""
    announce: Announce = {}
    withdraw: Withdraw = {}
    empty: dict[str, OutRoute] = {}
    for peer_ip in sorted(old.keys() | new.keys()):
        before, after = old.get(peer_ip, empty), new.get(peer_ip, empty)
        if before is after:
            continue
        routes = [route for prefix, route in after.items() if before.get(prefix) != route]
        gone = [prefix for prefix in before if prefix not in after]
        if routes:
            announce[peer_ip] = sorted(routes, key=lambda r: r.prefix)
        if gone:
            withdraw[peer_ip] = sorted(gone)
    return announce, withdraw
