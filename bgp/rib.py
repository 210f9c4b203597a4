"""The adj-RIB-in of every peer, graceful restart, and the best path per prefix. Pure.

ExaBGP keeps no RIB for us, so this module owns what the peers told us: one path per
(peer, prefix), filtered on import, and the best of them per prefix. Time comes in as
arguments (`now`), never from a clock. Every mutator returns the prefixes whose best path
changed (appeared, went, or differs in any field, the stale mark included), and costs
O(prefixes touched): `best_paths()` is maintained incrementally, never rescanned.

Import filter (loop prevention), applied in `update`; a filtered path counts as a withdrawal
of whatever that peer had for the prefix:
  * ORIGINATOR_ID is our router id (RFC 4456 8);
  * CLUSTER_LIST holds our cluster id (RFC 4456 8): a route from a reflector of our own
    cluster, which is how two reflectors of one cluster do not re-reflect to each other;
  * from an eBGP peer, AS_PATH holds our AS (the session's local AS, or the node's).
  The identity (`set_identity`) applies to later updates only: paths already held are not
  re-filtered. A change of router id, cluster id or AS re-renders the speaker and resets the
  sessions, so every path is re-announced and filtered again anyway.

Best path (RFC 4271 9.1.2.2 with RFC 4456 9), each step among the survivors of the last:
  1. highest LOCAL_PREF (None counts as 100; ignored, i.e. 100, on paths from eBGP peers,
     RFC 4271 5.1.5);
  2. shortest AS_PATH;  3. lowest ORIGIN (igp < egp < incomplete);
  4. lowest MED among paths from the same neighbour AS (the first AS of the AS_PATH; an empty
     AS_PATH is our own AS); a missing MED is 0. Done as an elimination over the whole set,
     so the non-transitive MED rule still gives an answer that ignores arrival order;
  5. eBGP over iBGP;
  6. tortie's tie-break: a fresh path over a stale one (a peer in graceful restart keeps
     forwarding, but an equal path from a live peer is the safer choice);
  7. lowest router id: the ORIGINATOR_ID when present, else the peer's router id;
  8. shortest CLUSTER_LIST;  9. lowest peer address (as an IP integer).
  A peer holds one path per prefix, so step 9 always leaves exactly one: the result depends
  on the set of paths only, never on the order they arrived in.

Graceful restart (RFC 4724, receiving side). `peer_down(graceful=True)` from a peer whose
OPEN carried a restart time keeps its paths, marked stale, until a deadline of `now +
restart_time`. A re-announcement clears a path's mark; `end_of_rib` drops what is still
stale; `sweep(now)` drops stale paths whose deadline passed. The deadline is set by the first
outage and holds across the reconnect and any further outage until the stale paths are gone
(re-announced, end-of-RIB or swept): a flapping peer cannot keep old routes alive forever,
and paths learned in between go stale on the same clock. A new session whose OPEN has no
restart time, or a different router id or AS, drops the stale paths at once. A non-graceful
down drops everything from the peer. The caller reports every session end (including a
restart of ExaBGP) with `peer_down`; `peer_up` for a session already up with the same
identity is a duplicate and changes nothing.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

from .types import DEFAULT_LOCAL_PREF, ORIGINS, PathAttributes

log = logging.getLogger(__name__)


class Path(NamedTuple):
    """One path in the RIB: a prefix as one peer announced it.

    (A NamedTuple: a peer's full table is 10,000 of them, and a frozen
    dataclass costs ~3x more to construct.)
    """

    prefix: str
    attrs: PathAttributes
    peer: str  # the peer's address
    peer_router_id: str
    ebgp: bool
    stale: bool = False

    @property
    def router_id(self) -> str:
        """The router id best-path selection compares (RFC 4456 9)."""
        return self.attrs.originator_id or self.peer_router_id


@functools.lru_cache(maxsize=4096)
def ip_key(address: str) -> tuple[int, int, str]:
    """Sort key of an address as an integer; a malformed one sorts last, by its text."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return (99, 0, address)
    return (ip.version, int(ip), "")


_ORIGIN_RANK = {origin: rank for rank, origin in enumerate(ORIGINS)}


def _first_steps(path: Path) -> tuple[int, int, int]:
    """Steps 1-3, smaller is better."""
    attrs = path.attrs
    local_pref = DEFAULT_LOCAL_PREF if path.ebgp or attrs.local_pref is None else attrs.local_pref
    return (-local_pref, len(attrs.as_path), _ORIGIN_RANK.get(attrs.origin, len(ORIGINS)))


def _last_steps(path: Path) -> tuple:
    """Steps 5-9, smaller is better."""
    return (not path.ebgp, path.stale, ip_key(path.router_id), len(path.attrs.cluster_list),
            ip_key(path.peer))


def best_of(paths: Iterable[Path]) -> Path | None:
    """The best of some paths for one prefix, one per peer (see the module docstring)."""
    candidates = list(paths)
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    top = min(map(_first_steps, candidates))
    candidates = [p for p in candidates if _first_steps(p) == top]
    if len(candidates) > 1:  # step 4
        lowest: dict[int | None, int] = {}
        for p in candidates:
            neighbour, med = _neighbour_as(p), p.attrs.med or 0
            lowest[neighbour] = min(med, lowest.get(neighbour, med))
        candidates = [p for p in candidates if (p.attrs.med or 0) == lowest[_neighbour_as(p)]]
    return min(candidates, key=_last_steps)


def _neighbour_as(path: Path) -> int | None:
    return path.attrs.as_path[0] if path.attrs.as_path else None


@dataclass(slots=True)
class _Peer:
    router_id: str
    peer_as: int
    local_as: int
    restart_time: int | None
    up: bool = True
    paths: dict[str, Path] = field(default_factory=dict)
    stale: int = 0  # how many of `paths` are stale
    deadline: float | None = None  # when the stale paths go; None when there are none

    @property
    def ebgp(self) -> bool:
        return self.peer_as != self.local_as


class Rib:
    """Adj-RIB-in per peer plus the best path per prefix. Not thread-safe."""

    def __init__(self, router_id: str, cluster_id: str | None, local_as: int) -> None:
        self.router_id, self.cluster_id, self.local_as = router_id, cluster_id, local_as
        self._peers: dict[str, _Peer] = {}
        self._candidates: dict[str, dict[str, Path]] = {}  # prefix -> peer -> path
        self._best: dict[str, Path] = {}
        self._best_view = MappingProxyType(self._best)

    def set_identity(self, router_id: str, cluster_id: str | None, local_as: int) -> None:
        """New identity for the import filter; held paths are not re-filtered (see above)."""
        self.router_id, self.cluster_id, self.local_as = router_id, cluster_id, local_as

    # -- reading --------------------------------------------------------------------------

    def best(self, prefix: str) -> Path | None:
        return self._best.get(prefix)

    def best_paths(self) -> Mapping[str, Path]:
        """Prefix -> best path: a live read-only view, copy it to keep a snapshot."""
        return self._best_view

    def paths(self, prefix: str) -> list[Path]:
        """Every path held for a prefix, best first, then by peer address."""
        held = sorted(self._candidates.get(prefix, {}).values(), key=lambda p: ip_key(p.peer))
        best = self._best.get(prefix)
        return sorted(held, key=lambda p: p is not best)

    def received_count(self, peer: str) -> int:
        """Prefixes held from a peer after the import filter, stale ones included."""
        state = self._peers.get(peer)
        return len(state.paths) if state else 0

    def stale_count(self, peer: str) -> int:
        state = self._peers.get(peer)
        return state.stale if state else 0

    def peers(self) -> list[str]:
        """Every peer known: in session, or down and still holding stale paths."""
        return list(self._peers)

    def router_ids(self) -> dict[str, str]:
        """Peer address -> the router id of its last OPEN, for every peer known."""
        return {peer: state.router_id for peer, state in self._peers.items()}

    def next_deadline(self) -> float | None:
        """When `sweep` next has something to do; None when nothing is stale."""
        deadlines = [s.deadline for s in self._peers.values() if s.deadline is not None]
        return min(deadlines, default=None)

    # -- sessions -------------------------------------------------------------------------

    def peer_up(self, peer: str, *, router_id: str, peer_as: int, local_as: int,
                restart_time: int | None) -> set[str]:
        """A session is established (the peer's OPEN is known)."""
        changed: set[str] = set()
        state = self._peers.get(peer)
        if state is None:
            self._peers[peer] = _Peer(router_id, peer_as, local_as, restart_time)
            return changed
        same = (state.router_id, state.peer_as, state.local_as) == (router_id, peer_as, local_as)
        if state.up and same:
            state.restart_time = restart_time  # a duplicate event
            return changed
        state.up = True  # first: _drop forgets a down peer it leaves empty
        if not same:
            log.info("peer %s: new session (router id %s, AS %d) replaces the old one's paths",
                     peer, router_id, peer_as)
            self._drop(peer, state, changed, stale_only=False)
        elif not restart_time:  # RFC 4724 4.2: no GR capability in the new session
            self._drop(peer, state, changed, stale_only=True)
        state.router_id, state.peer_as, state.local_as = router_id, peer_as, local_as
        state.restart_time = restart_time
        return changed

    def peer_down(self, peer: str, now: float, *, graceful: bool) -> set[str]:
        """A session ended. Graceful (and the peer can restart): keep its paths as stale."""
        changed: set[str] = set()
        state = self._peers.get(peer)
        if state is None:
            return changed
        state.up = False
        if not (graceful and state.restart_time and state.paths):
            self._drop(peer, state, changed, stale_only=False)
            return changed
        deadline = now + state.restart_time
        # Paths still stale from an earlier outage keep that outage's clock.
        state.deadline = min(state.deadline, deadline) if state.stale else deadline
        candidates, paths = self._candidates, state.paths
        for prefix, path in paths.items():
            if not path.stale:
                stale = Path(prefix, path.attrs, peer, path.peer_router_id, path.ebgp, True)
                paths[prefix] = candidates[prefix][peer] = stale
                self._reselect(prefix, changed)
        state.stale = len(paths)
        return changed

    def end_of_rib(self, peer: str) -> set[str]:
        """The peer has re-sent everything: what is still stale was withdrawn meanwhile."""
        changed: set[str] = set()
        state = self._peers.get(peer)
        if state is not None and state.stale:
            self._drop(peer, state, changed, stale_only=True)
        return changed

    def sweep(self, now: float) -> set[str]:
        """Drop the stale paths of every peer whose restart deadline has passed."""
        changed: set[str] = set()
        for peer, state in list(self._peers.items()):
            if state.deadline is not None and state.deadline <= now:
                log.info("peer %s: graceful restart time over, %d stale paths dropped",
                         peer, state.stale)
                self._drop(peer, state, changed, stale_only=True)
        return changed

    # -- routes ---------------------------------------------------------------------------

    def update(self, peer: str, announced: Mapping[str, PathAttributes],
               withdrawn: Iterable[str] = ()) -> set[str]:
        """One UPDATE: withdrawals first, then announcements (RFC 4271 order)."""
        changed: set[str] = set()
        state = self._peers.get(peer)
        if state is None or not state.up:
            log.warning("peer %s: UPDATE outside a session ignored", peer)
            return changed
        for prefix in withdrawn:
            if prefix not in announced:  # else replaced below; `changed` stays exact
                self._remove(peer, state, prefix, changed)
        paths, ebgp, router_id = state.paths, state.ebgp, state.router_id
        # The prefixes of one UPDATE share one attributes object: test it once.
        seen: PathAttributes | None = None
        looped = False
        for prefix, attrs in announced.items():
            if attrs is not seen:
                seen, looped = attrs, self._looped(state, attrs)
            if looped:
                self._remove(peer, state, prefix, changed)
                continue
            path = Path(prefix, attrs, peer, router_id, ebgp)
            old = paths.get(prefix)
            if old == path:
                continue
            if old is not None and old.stale:
                state.stale -= 1
            paths[prefix] = path
            self._candidates.setdefault(prefix, {})[peer] = path
            self._reselect(prefix, changed)
        if not state.stale:
            state.deadline = None
        return changed

    # -- internals ------------------------------------------------------------------------

    def _looped(self, state: _Peer, attrs: PathAttributes) -> bool:
        if attrs.originator_id is not None and attrs.originator_id == self.router_id:
            return True
        if self.cluster_id is not None and self.cluster_id in attrs.cluster_list:
            return True
        return state.ebgp and (state.local_as in attrs.as_path or self.local_as in attrs.as_path)

    def _remove(self, peer: str, state: _Peer, prefix: str, changed: set[str]) -> None:
        old = state.paths.pop(prefix, None)
        if old is None:
            return
        if old.stale:
            state.stale -= 1
            if not state.stale:
                state.deadline = None
        held = self._candidates[prefix]
        del held[peer]
        if not held:
            del self._candidates[prefix]
        self._reselect(prefix, changed)

    def _drop(self, peer: str, state: _Peer, changed: set[str], *, stale_only: bool) -> None:
        """Drop a peer's paths (only the stale ones, or all); forget a down peer left empty."""
        for prefix, path in list(state.paths.items()):
            if path.stale or not stale_only:
                self._remove(peer, state, prefix, changed)
        state.stale, state.deadline = 0, None
        if not state.up and not state.paths:
            del self._peers[peer]

    def _reselect(self, prefix: str, changed: set[str]) -> None:
        held = self._candidates.get(prefix)
        if not held:
            new = None
        elif len(held) == 1:
            (new,) = held.values()  # the usual case: one peer has the prefix
        else:
            new = best_of(held.values())
        old = self._best.get(prefix)
        if new is old or new == old:
            return
        if new is None:
            del self._best[prefix]
        else:
            self._best[prefix] = new
        changed.add(prefix)
