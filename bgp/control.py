"""The BGP side's control socket: status for `ctl node status`, learned routes for the agent.

An abstract Unix socket (`@tortie-bgp` by default), so it is private to the
network namespace it lives in, like the node it describes: `ctl node status`
run on a node (or in a lab node's namespace) reaches that node's speaker and
no other, and the socket vanishes with its process. One request line per
connection:
  * `status`  -> one JSON line (bgp.status snapshot), then close;
  * `routes`  -> the best paths as a stream of changes (bgp.types.BestPathChanges),
                 one JSON line each, until either side closes. This is how
                 `tortie-agent` gets learned routes from a separate `tortie-bgp`
                 (the chart's sidecar).
A `routes` line maps each prefix to `[next_hop, peer]` of its best path, or to null
once it has none:
  {"reset": true, "routes": {"10.244.1.0/26": ["10.0.0.2", "10.0.0.2"]}}
  {"reset": false, "routes": {"10.244.1.0/26": ["10.0.0.3", "10.0.0.3"], "10.244.2.0/26": null}}
A reset line is the whole table (the receiver forgets every prefix it does not name)
and holds no null.

Invariants: the server keeps the whole current table, and each `routes` connection a
pending change that every publication is merged into. The connection's first line is
a reset with the whole table (so a follower that reconnects, after either side
restarted, starts from a complete picture); after that its thread sends the pending
change whenever it is not empty, swapping it out under the lock. Applying the lines
of a connection in order always gives the table as it was when the last one was
taken: a slow reader gets fewer, larger lines (changes to one prefix coalesce, so
what waits for it is one entry per prefix changed since its last line, never a
backlog of lines), and never misses a change.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable

from .types import BestPathChanges

_log = logging.getLogger(__name__)

DEFAULT_NAME = os.environ.get("TORTIE_BGP_CONTROL", "tortie-bgp")
Table = dict[str, tuple[str, str]]  # prefix -> (next hop, peer)


def _address(name: str) -> str:
    return "\0" + name


class _Pending:
    """What one `routes` connection has yet to send: a change, or (reset) a whole table."""

    __slots__ = ("reset", "routes")

    def __init__(self, table: Table) -> None:
        self.reset = True
        self.routes: dict[str, tuple[str, str] | None] = dict(table)

    def merge(self, changes: BestPathChanges, table: Table) -> None:
        """Fold a publication in; `table` is the server's, with the publication applied."""
        if changes.reset:
            self.reset, self.routes = True, dict(table)
        elif self.reset:
            changes.apply_to(self.routes)  # a reset line holds no null
        else:
            self.routes.update(changes.routes)


class ControlServer:
    """Serves `status` and `routes` requests from a thread per connection."""

    def __init__(self, name: str, status: Callable[[], dict]) -> None:
        self._status = status
        self._cond = threading.Condition()  # guards everything below but the socket
        self._table: Table = {}
        self._pending: set[_Pending] = set()  # one per `routes` connection
        self._closed = False
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.bind(_address(name))  # EADDRINUSE: another speaker runs in this netns
            self._sock.listen(16)
        except OSError:
            self._sock.close()
            raise
        self._thread = threading.Thread(target=self._accept, name="bgp-control", daemon=True)

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def publish_routes(self, changes: BestPathChanges) -> None:
        """Apply a change to the table and queue it for every `routes` connection."""
        with self._cond:
            changes.apply_to(self._table)
            for pending in self._pending:
                pending.merge(changes, self._table)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # ends the accept() of _accept
        except OSError:
            pass
        # An accept() under way holds the socket, and with it the name: wait it out, so
        # that the name is free once close() returns (a new server may take it at once).
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(5)
                request = conn.makefile("r").readline().strip()
                conn.settimeout(None)
                if request == "status":
                    conn.sendall(json.dumps(self._status()).encode() + b"\n")
                elif request == "routes":
                    self._stream_routes(conn)
                else:
                    conn.sendall(json.dumps({"error": f"unknown request {request!r}"}).encode()
                                 + b"\n")
            except OSError as exc:
                _log.debug("control connection ended: %s", exc)

    def _stream_routes(self, conn: socket.socket) -> None:
        with self._cond:
            pending = _Pending(self._table)
            self._pending.add(pending)
        try:
            while True:
                with self._cond:
                    while not (pending.reset or pending.routes or self._closed):
                        self._cond.wait()
                    if self._closed:
                        return
                    line = {"reset": pending.reset, "routes": pending.routes}
                    pending.reset, pending.routes = False, {}
                # Encoded and sent unlocked: publications keep merging into `pending`
                # meanwhile, however slowly this reader reads.
                conn.sendall(json.dumps(line).encode() + b"\n")
        finally:
            with self._cond:
                self._pending.discard(pending)


def query_status(name: str = DEFAULT_NAME, timeout: float = 5.0) -> dict:
    """Ask the speaker in this network namespace for its status. Raises OSError if none."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(_address(name))
        s.sendall(b"status\n")
        line = s.makefile("r").readline()
    if not line:
        raise ConnectionError("the BGP speaker closed the connection without an answer")
    return json.loads(line)


def follow_routes(name: str, on_routes: Callable[[BestPathChanges], None],
                  stop: threading.Event, retry: float = 1.0) -> None:
    """Feed every best-path change to on_routes until stop is set; reconnects forever.

    The first change after every (re)connect is a reset: the server's whole table.
    """
    while not stop.is_set():
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(_address(name))
                s.sendall(b"routes\n")
                for line in s.makefile("r"):
                    on_routes(_decode(line))
                    if stop.is_set():
                        return
        except (OSError, ValueError) as exc:
            _log.debug("BGP routes from %s unavailable (%s); retrying", name, exc)
        stop.wait(retry)


def _decode(line: str) -> BestPathChanges:
    """One `routes` line; ValueError if it is not one."""
    message = json.loads(line)
    try:
        return BestPathChanges({prefix: tuple(route) if route is not None else None
                                for prefix, route in message["routes"].items()},
                               reset=message.get("reset") is True)
    except (AttributeError, KeyError, TypeError) as exc:
        raise ValueError(f"not a routes line: {line[:80]!r}") from exc
