"""The BGP side's control socket: status for `ctl node status`, learned routes for the agent.

An abstract Unix socket (`@tortie-bgp` by default), so it is private to the
network namespace it lives in, like the node it describes: `ctl node status`
run on a node (or in a lab node's namespace) reaches that node's speaker and
no other, and the socket vanishes with its process. One request line per
connection:
  * `status`  -> one JSON line (bgp.status snapshot), then close;
  * `routes`  -> a JSON line with the current best paths, then one more line
                 every time they change, until either side closes. This is how
                 `tortie-agent` gets learned routes from a separate `tortie-bgp`
                 (the chart's sidecar).
A route is `[prefix, next_hop, peer]`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable

_log = logging.getLogger(__name__)

DEFAULT_NAME = os.environ.get("TORTIE_BGP_CONTROL", "tortie-bgp")
Route = tuple[str, str, str]


def _address(name: str) -> str:
    return "\0" + name


class ControlServer:
    """Serves `status` and `routes` requests from a thread per connection."""

    def __init__(self, name: str, status: Callable[[], dict]) -> None:
        self._status = status
        self._routes: list[Route] = []
        self._version = 0
        self._changed = threading.Condition()
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

    def publish_routes(self, routes: list[Route]) -> None:
        with self._changed:
            self._routes = routes
            self._version += 1
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
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
        seen = -1
        while True:
            with self._changed:
                while self._version == seen and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
                seen, routes = self._version, self._routes
            conn.sendall(json.dumps(routes).encode() + b"\n")


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


def follow_routes(name: str, on_routes: Callable[[list[Route]], None],
                  stop: threading.Event, retry: float = 1.0) -> None:
    """Feed every best-path snapshot to on_routes until stop is set; reconnects forever."""
    while not stop.is_set():
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(_address(name))
                s.sendall(b"routes\n")
                for line in s.makefile("r"):
                    on_routes([tuple(r) for r in json.loads(line)])
                    if stop.is_set():
                        return
        except (OSError, ValueError) as exc:
            _log.debug("BGP routes from %s unavailable (%s); retrying", name, exc)
        stop.wait(retry)
