"""ExaBGP 5.0.15 with tortie's patches: the program bgp/speaker.py runs instead of `exabgp`.

Run as `<exabgp's python> -I bgp/exabgp_launcher.py <exabgp script> <its arguments>`:
it applies the patches (`install()`), then runs ExaBGP's own main() with the arguments
it was given. Each patch replaces one ExaBGP 5.0.15 function in-process (one changes a
default); its docstring names the upstream function, what it changes and the
measurement that justifies it.

Invariants:
- Run by file path under `-I`, with the interpreter of whatever exabgp script the speaker
  was given: it imports only the standard library and exabgp, never tortie (`-I` keeps
  this directory off sys.path, where bgp/types.py would shadow the standard `types`).
- Importing it changes nothing; `install()` patches, and only the pinned release
  (another one runs stock, with a warning on stderr). Nothing of ExaBGP but its version
  is imported for another release, whose internals may differ.
- A patched function gives what stock gives for every input ExaBGP feeds it;
  tests/bgp/test_speaker.py runs the decoder, the JSON encoder and `read_message`
  side by side with stock, and real sessions through the launcher. The exceptions fix
  a stock bug and say so: `pending_adjribout` (reloads) and `new_connections` (a
  neighbour without a local address), each with the test that shows stock failing.

Receive figures below are for 10,000 /26 from BIRD, 256 per UPDATE (bench/bgp.py and
tests/bgp/test_speaker.py): stock ExaBGP spends ~35 us of CPU per received prefix
(~0.35 s, at 100% of a CPU), patched ~0.1 s per 10,000 in bench/bgp.py.
"""
# mypy: disable-error-code="import-untyped"
# (ExaBGP ships neither stubs nor a py.typed marker: its names are Any here.)

from __future__ import annotations

import select
import sys
import uuid
from collections.abc import Callable, Iterator
from socket import inet_ntoa
from typing import Any

import exabgp.version

PINNED_RELEASE = "5.0.15"

if exabgp.version.release == PINNED_RELEASE:
    from exabgp.bgp.fsm import FSM
    from exabgp.bgp.message import Update
    from exabgp.bgp.message.update.nlri import CIDR, INET, NLRI
    from exabgp.bgp.message.update.nlri.qualifier import PathInfo
    from exabgp.bgp.neighbor import Neighbor
    from exabgp.logger import log
    from exabgp.logger.option import option
    from exabgp.protocol.family import AFI, SAFI, Family
    from exabgp.protocol.ip import IP, NoNextHop
    from exabgp.reactor.listener import Listener, set_accepted_ttl
    from exabgp.reactor.loop import Reactor
    from exabgp.reactor.protocol import Protocol

    # the stock functions the patches fall back to or wrap (module globals: the patched
    # functions run per prefix, and a global is as cheap a lookup as they get)
    _stock_remove_self = Neighbor.remove_self
    _stock_unpack_nlri: Callable[..., tuple[Any, bytes]] = NLRI.unpack_nlri.__func__
    _stock_debug = log.debug.__func__
    _stock_read_message = Protocol.read_message
    _stock_new_connections = Listener.new_connections
    _stock_inet_json: Callable[..., str] = INET.json
    _ipv4, _unicast = AFI.create(AFI.ipv4), SAFI.create(SAFI.unicast)

_new = object.__new__
_families: dict[tuple[Any, Any], Any] = {}


# -- sending: reloads and the API's pace ---------------------------------------------------


def pending_adjribout(self: Reactor) -> bool:
    """Replaces exabgp.reactor.loop.Reactor._pending_adjribout.

    Stock: True while any active peer (not passive, or connected) has updates queued, and
    the reactor drops a SIGUSR1 (reload) while it is True. A peer that cannot connect
    never drains its queue, so with one peer down every later reload was dropped.
    Patched: only established peers count. Measured in tests/bgp/test_speaker.py: with a
    route queued for an unreachable neighbour, stock ignores 5 SIGUSR1 in a row and the
    speaker has to restart it (test_stock_exabgp_drops_the_reload_...); patched, the
    reload is applied at once (test_reload_adds_neighbor_without_touching_the_others).
    """
    return any(p.fsm == FSM.ESTABLISHED and p.neighbor.rib.outgoing.pending()
               for p in self._peers.values())


def wait_for_io(self: Reactor, sleeptime: int) -> Iterator[int]:
    """Replaces exabgp.reactor.loop.Reactor._wait_for_io.

    Stock polls for `sleeptime` ms (10 after a quiet turn) even while API commands are
    queued, and handles 50 routes per turn: ~2k routes/s. It also leaves a socket that
    collision handling closed registered, and its POLLNVAL then counts as a spin that
    sleeps 10 ms per loop turn for the life of the process. Patched: no wait while
    `asynchronous` has work; a POLLNVAL descriptor is unregistered. Stock's ^C
    handler is not kept (ExaBGP is stopped with signals, never with a KeyboardInterrupt).
    Measured, with remove_self below: 10,000 routes in one announce reach the peer's API
    process in ~1.2-1.3 s instead of 4.3 s (test_ten_thousand_routes_in_one_call).
    """
    if not self.asynchronous.ready():
        sleeptime = 0  # API commands are queued: do not sleep 10 ms per 50 routes
    spin = False
    try:
        for fd, event in self._poller.poll(sleeptime):
            if event & (select.POLLIN | select.POLLPRI):
                yield fd
            elif event & select.POLLNVAL:
                # a socket closed by collision handling but left registered: stock
                # slept 10 ms per loop turn on it for the life of the process
                self._poller.unregister(fd)
            elif event & (select.POLLHUP | select.POLLERR):
                spin = True
        if spin:
            self._prevent_spin()
    except Exception:
        self._prevent_spin()


def remove_self(self: Neighbor, change: Any) -> Any:
    """Replaces exabgp.bgp.neighbor.Neighbor.remove_self.

    Stock deep-copies every route it sends (~0.45 ms each) so that "next-hop self" can be
    rewritten in the copy. Patched: only a route with next-hop self is copied (by stock);
    the others are not shared, so they go as they are. Measured with wait_for_io above:
    10,000 routes ~1.2-1.3 s instead of 4.3 s.
    """
    return _stock_remove_self(self, change) if change.nlri.nexthop.SELF else change


# -- accepting: a neighbour without a local address ---------------------------------------


def new_connections(self: Listener) -> Iterator[None]:
    """Replaces exabgp.reactor.listener.Listener.new_connections.

    Stock matches an accepted connection to its neighbour by the peer's address and
    the neighbour's `local-address`, reading `neighbor['local-address'].address()`
    before it asks whether the neighbour has one. A neighbour without (auto-discovery:
    tortie's `sourceAddress: None`) has None there, so every connection from that peer
    died in an AttributeError and was closed: such a session came up only when ExaBGP
    dialled, never when the peer did (a passive side, or a peer calling another address
    of the node with `bindMode: None`). Patched: a neighbour with a local address takes
    connections to that address, one without takes them to any; anything else is
    stock's. Configurations with address ranges (which tortie never renders) go to
    stock unchanged. Shown in tests/bgp/test_bind_mode.py: a peer calling the node's
    second address is accepted and closed again and again by stock, established with
    the patch.
    """
    reactor = self._reactor
    if any(reactor.neighbor(key).range_size > 1 for key in reactor.peers()):
        yield from _stock_new_connections(self)
        return
    if not self.serving:
        return
    yield None
    for connection in self._connected():
        # ExaBGP's Incoming names the remote end `local` and our end `peer`
        remote, ours = IP.create(connection.local).address(), IP.create(connection.peer).address()
        for key in reactor.peers():
            neighbor = reactor.neighbor(key)
            if neighbor["peer-address"].address() != remote:
                continue
            if not neighbor.auto_discovery and neighbor["local-address"].address() != ours:
                continue
            set_accepted_ttl(connection, neighbor)
            if reactor.handle_connection(key, connection):
                log.debug(lambda c=connection: f"refused connection from {c.name()} due to "
                          "the state machine", "network")
            else:
                log.debug(lambda c=connection: f"accepted connection from {c.name()}",
                          "network")
            break
        else:
            log.debug(lambda c=connection: f"no session configured for {c.name()}", "network")
            reactor.asynchronous.schedule(
                str(uuid.uuid1()), "sending notification (6,3)",
                connection.notification(6, 3, "no session configured for the peer"))
            return  # as stock: the rest wait for the next turn


# -- receiving: per-prefix work nothing needs ----------------------------------------------


def turn_adj_rib_in_off_by_default() -> None:
    """Changes exabgp.bgp.neighbor.Neighbor.defaults["adj-rib-in"] from True to False.

    Stock keeps every received route in an adj-RIB-in that only `show adj-rib in`
    reads (~5 us per prefix); tortie keeps its own RIB.
    A config that says `adj-rib-in true;` still gets one.
    """
    Neighbor.defaults["adj-rib-in"] = False


def unpack_nlri(cls: type, afi: int, safi: int, data: bytes, action: Any,
                addpath: bool) -> tuple[Any, bytes]:
    """Replaces the classmethod exabgp.bgp.message.update.nlri.NLRI.unpack_nlri.

    Stock dispatches every prefix through a generic family lookup and INET's label and
    RD handling (~7 us a prefix), then builds the INET through three __init__s and two
    family lookups that each make a throw-away int (~2 us more). Patched: IPv4 unicast
    without ADD-PATH is decoded here, with the same checks as INET.unpack_nlri, into an
    INET holding exactly the attributes, in the order and with the objects, that
    INET(afi, safi, action) sets; everything else goes to stock. Measured: decoding 40
    UPDATEs of 256 /26 takes 20 ms against stock's 70 ms (timed offline, same messages);
    the differential test compares every mask, truncated and bad ones, ADD-PATH and
    another SAFI with stock, attribute by attribute.
    """
    if not addpath and afi == AFI.ipv4 and safi == SAFI.unicast and data:
        mask = data[0]
        size = (mask + 7) >> 3
        if mask <= 32 and len(data) > size:
            # what INET(afi, safi, action) sets, without its three __init__s and the
            # two family lookups that build a throw-away int each (~2 us a prefix)
            nlri = _new(INET)
            nlri.afi, nlri.safi, nlri.action = _ipv4, _unicast, action
            nlri.path_info = PathInfo.NOPATH
            nlri.cidr = CIDR(data[1:1 + size] + bytes(4 - size), mask)
            nlri.nexthop = NoNextHop
            return nlri, data[1 + size:]
    return _stock_unpack_nlri(cls, afi, safi, data, action, addpath)


def debug(cls: type, message: Any, source: str = "", level: str = "DEBUG") -> None:
    """Replaces the classmethod exabgp.logger.log.debug.

    Stock goes through its logger dispatch to decide not to log, on each of the ~4 debug
    calls made per received prefix. Patched: one dict lookup decides first. No figure of
    its own: it came with adj-RIB-in off, the decoder and the JSON patches, which together
    took receiving from ~15 us to ~4 us a prefix (10,000 routes from BIRD reached the
    daemon 0.45 s after the session came up instead of 1.39 s; commit 27d8317).
    """
    if option.logit.get("DEBUG"):
        _stock_debug(cls, message, source, level)


def read_message(self: Protocol) -> Iterator[Any]:
    """Wraps exabgp.reactor.protocol.Protocol.read_message.

    Peer._main walks every prefix of a received UPDATE only to put it in the adj-RIB-in
    cache and to log it at debug level. Patched: when neither is on (ours), _main gets
    the UPDATE with its attributes and no prefixes; the API has had the whole message
    by the time it is yielded. Other messages, and every message when either is on, go
    as stock yields them. Measured: ~1.3 us a prefix, ~13 ms of ExaBGP's CPU per 10,000
    received prefixes.
    """
    for message in _stock_read_message(self):
        if (message.TYPE == Update.TYPE and message.nlris
                and not self.neighbor.rib.incoming.cache
                and not option.logit.get("DEBUG")):
            message = Update((), message.attributes)
        yield message


# the JSON encoder (json.py JSON._update) asks each prefix for a new Family object and
# its text through three formats (~3 us per prefix); the two patches below halve that.
# Measured together: the JSON of 40 UPDATEs of 256 /26 takes 16-19 ms against stock's
# 34 ms (timed offline, same messages); the differential test compares the text, in
# both the compact and the object form, with stock.


def family(self: Family) -> Any:
    """Replaces exabgp.protocol.family.Family.family (so every NLRI's family()).

    Stock builds a new Family per call; callers only read it. Patched: one shared Family
    per (afi, safi).
    """
    key = (self.afi, self.safi)
    found = _families.get(key)
    if found is None:
        found = _families[key] = Family(self.afi, self.safi)
    return found


def inet_json(self: INET, announced: bool = True, compact: bool = False) -> str:
    """Replaces exabgp.bgp.message.update.nlri.INET.json.

    Stock formats the prefix through cidr.prefix(), IP.ntop and two str.format calls.
    Patched, for a plain INET without path-id: one f-string of inet_ntoa's text (what
    IP.ntop gives for 4 bytes), in the same form stock writes, compact or not. ~2 ms of
    the JSON figure above.
    """
    if type(self) is INET and self.path_info is PathInfo.NOPATH:
        cidr = self.cidr
        packed = cidr._packed
        # cidr.top() is IP.ntop, which is inet_ntop(AF_INET) for 4 bytes: inet_ntoa
        top = inet_ntoa(packed) if len(packed) == 4 else cidr.top()
        # f-strings: stock's '{}/{}'.format (str of the mask), and the cheapest to build
        if compact:
            return f'"{top}/{cidr.mask}"'
        return f'{{ "nlri": "{top}/{cidr.mask}" }}'
    return _stock_inet_json(self, announced, compact)


def install() -> bool:
    """Apply every patch above, if this ExaBGP is the pinned release; otherwise warn on
    stderr and leave it stock. Returns whether it patched."""
    if exabgp.version.release != PINNED_RELEASE:
        sys.stderr.write(f"tortie: exabgp {exabgp.version.release} is not "
                         f"{PINNED_RELEASE}: not patched\n")
        return False
    Reactor._pending_adjribout = pending_adjribout
    Reactor._wait_for_io = wait_for_io
    Neighbor.remove_self = remove_self
    Listener.new_connections = new_connections
    turn_adj_rib_in_off_by_default()
    if NLRI.registered_nlri.get("ipv4/unicast") is INET:
        NLRI.unpack_nlri = classmethod(unpack_nlri)
    log.debug = classmethod(debug)
    Protocol.read_message = read_message
    Family.family = family
    INET.json = inet_json
    return True


def main() -> None:
    """Patch, then run ExaBGP as its script would: sys.argv is [this file, the exabgp
    script, its arguments]."""
    install()
    from exabgp.application.main import main as exabgp_main

    sys.argv = sys.argv[1:]  # argv[0] is the exabgp script: its CLI helper re-runs it
    sys.exit(exabgp_main())


if __name__ == "__main__":
    main()
