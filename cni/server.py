"""The node's CNI server: whole CNI calls from the shim, and the Python plugin's datastore calls.

One unix socket (mode 0600), two protocols told apart by a connection's first
byte: b"T" (b"TCNI") is the host-side shim's (shim/tortie-cni-shim.c): one
whole CNI call, which the server runs in-process (cni/shim_server.py) with the
container's network namespace passed as a file descriptor; b"{" is protocol 1
below, the Python plugin's datastore calls. A thread per connection: runtimes
run ADDs in parallel, and the backend and logging are safe to share
(cni/skel.py keeps logging per call).

With the shim, the server runs in the node's network namespace (host network)
and does the kernel work itself, so it needs `ip`, `nsenter` and a writable
/proc/sys; the rest of this docstring is about the Python plugin's protocol.

Why: a plugin process that talks to etcd itself spends ~0.4 s of CPU importing
grpc, pydantic and the resource models before its first request (measured:
docs/cni.md). Kubernetes starts pods in parallel, so on a 2-core node 100
ADDs would queue for ~20 s of CPU. The Cilium/Antrea answer is a node-local
daemon; tortie's is this server: it keeps one `LocalBackend` (etcd
connection, IPAM caches: a node's steady-state assignment is one etcd
transaction), and the plugin, which then imports only the standard library,
sends it the same calls it would otherwise make itself.

The plugin still does all the kernel work (veth, routes, sysctls) in its own
process: the server needs no access to container namespaces and can run
anywhere on the node that reaches etcd (its own process, or inside the agent:
`CniServer(...).start()` runs it on a thread).

Protocol (PROTOCOL = 1): one connection per plugin invocation, newline-
delimited JSON. The first request is `hello` with the client's protocol
version and datastore settings; the server refuses (and the plugin falls back
to its in-process backend) when the version differs or the settings name
another etcd. Then `{"op": <name>, "args": {...}}` -> `{"ok": true,
"result": ...}` or `{"ok": false, "code": N, "msg": ..., "details": ...}`
(the CniError, rebuilt on the client with its code).

Failure handling: if the server is absent, refuses, or the connection breaks
mid-call, the plugin (`RemoteBackend`) repeats the call in-process. That is
safe because every operation is idempotent (cni/backend.py), and it keeps
the server an optimisation, never a dependency.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .backend import Backend, LocalBackend
from .config import DEFAULT_SERVER_SOCKET, EtcdSettings
from .errors import CniError, InternalError, error_for_code
from .naming import Workload

_log = logging.getLogger(__name__)

PROTOCOL = 1
CONNECT_TIMEOUT = 1.0
CALL_TIMEOUT = 60.0
REQUEST_TIMEOUT = 30.0  # the shim sends its whole request at once; a stuck one is dropped
OPS = ("assign", "addresses", "release", "put_endpoint", "delete_endpoint", "get_endpoint")


def _settings_doc(etcd: EtcdSettings, environ: Mapping[str, str]) -> dict[str, str]:
    """The ETCD_* variables the client would connect with (the configuration's keys win)."""
    return etcd.as_env(environ)


# -- client ----------------------------------------------------------------------------------


class _Refused(Exception):
    """The server said no at hello, or the connection failed: use the local backend."""


class _Connection:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(CONNECT_TIMEOUT)
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self.sock.settimeout(CALL_TIMEOUT)
        self.reader = self.sock.makefile("rb")

    def call(self, op: str, args: Mapping[str, Any]) -> dict[str, Any]:
        self.sock.sendall(json.dumps({"op": op, "args": args}).encode() + b"\n")
        line = self.reader.readline()
        if not line:
            raise ConnectionError("the CNI server closed the connection")
        return json.loads(line)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.reader.close()
            self.sock.close()


class RemoteBackend:
    """cni.backend.Backend over the server's socket, falling back to an in-process backend.

    `fallback` makes that backend (once, on the first call the server fails);
    the plugin passes its own (cni.lazy_backend), the default is a LocalBackend
    of the same settings.
    """

    def __init__(self, path: str, etcd: EtcdSettings, environ: Mapping[str, str],
                 fallback: Callable[[], Backend] | None = None) -> None:
        self.path, self.etcd, self.environ = path, etcd, environ
        self._make_local = fallback or (lambda: LocalBackend(etcd, environ))
        self._local: Backend | None = None
        try:
            self._conn: _Connection | None = _Connection(path)
            answer = self._conn.call("hello", {"protocol": PROTOCOL,
                                               "etcd": _settings_doc(etcd, environ)})
        except (OSError, ValueError) as exc:
            self.close()
            raise _Refused(f"cannot reach the CNI server at {path}: {exc}") from None
        if not answer.get("ok"):
            self.close()
            raise _Refused(f"the CNI server at {path} refused: {answer.get('msg')}")

    def _fallback(self) -> Backend:
        if self._local is None:
            self._local = self._make_local()
        return self._local

    def _call(self, op: str, args: Mapping[str, Any], local: Any) -> Any:
        if self._conn is not None:
            try:
                answer = self._conn.call(op, args)
            except (OSError, ValueError) as exc:
                _log.warning("the CNI server at %s failed during %s (%s); continuing without "
                             "it", self.path, op, exc)
                self._conn.close()
                self._conn = None
            else:
                if answer.get("ok"):
                    return answer.get("result")
                raise error_for_code(int(answer.get("code", 999)), str(answer.get("msg")),
                                     str(answer.get("details") or ""))
        return local(self._fallback())

    def assign(self, w: Workload, requested: Sequence[str] = (),
               pools: Sequence[str] = ()) -> list[str]:
        return self._call("assign", {"workload": w._asdict(), "requested": list(requested),
                                     "pools": list(pools)},
                          lambda b: b.assign(w, requested, pools))

    def addresses(self, handle_id: str) -> list[str]:
        return self._call("addresses", {"handle_id": handle_id},
                          lambda b: b.addresses(handle_id))

    def release(self, handle_id: str) -> list[str]:
        return self._call("release", {"handle_id": handle_id}, lambda b: b.release(handle_id))

    def put_endpoint(self, doc: Mapping[str, Any]) -> None:
        self._call("put_endpoint", {"doc": doc}, lambda b: b.put_endpoint(doc))

    def delete_endpoint(self, namespace: str, name: str, container_id: str) -> bool:
        return self._call("delete_endpoint",
                          {"namespace": namespace, "name": name, "container_id": container_id},
                          lambda b: b.delete_endpoint(namespace, name, container_id))

    def get_endpoint(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._call("get_endpoint", {"namespace": namespace, "name": name},
                          lambda b: b.get_endpoint(namespace, name))

    def close(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None:
            conn.close()
            self._conn = None
        if self._local is not None:
            self._local.close()
            self._local = None


def connect(path: str, etcd: EtcdSettings, environ: Mapping[str, str],
            fallback: Callable[[], Backend] | None = None) -> RemoteBackend | None:
    """A RemoteBackend, or None (logged) when the server is absent or refuses."""
    try:
        return RemoteBackend(path, etcd, environ, fallback)
    except _Refused as exc:
        _log.info("%s; talking to etcd directly", exc)
        return None


# -- server ----------------------------------------------------------------------------------


if TYPE_CHECKING:
    import socketserver
    import threading


class CniServer:
    """Serves one LocalBackend to plugin processes on `path` (see the module docstring).

    (The server-side modules are imported here, not at the top: this module is
    also the plugin's client, whose start-up time counts.)
    """

    def __init__(self, path: str = DEFAULT_SERVER_SOCKET, etcd: EtcdSettings | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.path = path
        self.environ = dict(os.environ if environ is None else environ)
        self.etcd = etcd or EtcdSettings()
        self.backend = LocalBackend(self.etcd, self.environ)
        self._identity = self._datastore_identity(_settings_doc(self.etcd, self.environ))
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def _datastore_identity(
        env: Mapping[str, str],
    ) -> tuple[tuple[str, ...], str | None, str | None, str | None, str | None]:
        from datastore.config import load_env

        cfg = load_env(env)
        return (tuple(sorted(cfg.urls)), cfg.ca_cert_file, cfg.cert_file, cfg.key_file,
                cfg.username)

    # -- requests --------------------------------------------------------------------------

    def handle(self, op: str, args: Mapping[str, Any]) -> Any:
        b = self.backend
        if op == "assign":
            return b.assign(Workload(**args["workload"]), tuple(args.get("requested") or ()),
                            tuple(args.get("pools") or ()))
        if op == "addresses":
            return b.addresses(args["handle_id"])
        if op == "release":
            return b.release(args["handle_id"])
        if op == "put_endpoint":
            return b.put_endpoint(args["doc"])
        if op == "delete_endpoint":
            return b.delete_endpoint(args["namespace"], args["name"], args["container_id"])
        if op == "get_endpoint":
            return b.get_endpoint(args["namespace"], args["name"])
        raise InternalError(f"unknown CNI server operation {op!r}")

    def hello(self, args: Mapping[str, Any]) -> dict[str, Any]:
        if args.get("protocol") != PROTOCOL:
            return {"ok": False, "msg": f"protocol {args.get('protocol')} is not {PROTOCOL}"}
        try:
            theirs = self._datastore_identity(args.get("etcd") or {})
        except Exception as exc:  # noqa: BLE001 - the client will report it itself
            return {"ok": False, "msg": f"their datastore settings are invalid: {exc}"}
        if theirs != self._identity:
            return {"ok": False, "msg": f"this server serves etcd {', '.join(self._identity[0])}"
                                        f", not {', '.join(theirs[0])}"}
        return {"ok": True, "protocol": PROTOCOL}

    def _answer(self, request: Mapping[str, Any], greeted: bool) -> dict[str, Any]:
        op, args = request.get("op"), request.get("args") or {}
        if op == "hello":
            return self.hello(args)
        if not greeted:
            return {"ok": False, "code": 999, "msg": "hello first"}
        try:
            return {"ok": True, "result": self.handle(str(op), args)}
        except CniError as exc:
            return {"ok": False, "code": exc.code, "msg": exc.msg, "details": exc.details}
        except Exception as exc:  # noqa: BLE001 - one bad request must not end the server
            _log.exception("CNI server: %s failed", op)
            return {"ok": False, "code": 999, "msg": f"CNI server error in {op}: {exc}"}

    # -- serving ---------------------------------------------------------------------------

    def shared_backend(self, etcd: EtcdSettings, environ: Mapping[str, str]) -> Backend | None:
        """This server's backend for a shim call whose settings name its datastore, else
        None (the call then makes its own; cni.lazy_backend.SharedBackend)."""
        try:
            theirs = self._datastore_identity(_settings_doc(etcd, environ))
        except Exception:  # noqa: BLE001 - the call's own backend reports bad settings
            return None
        return self.backend if theirs == self._identity else None

    def _serve_json(self, sock: socket.socket, first: bytes) -> None:
        """Protocol 1: the Python plugin's datastore calls, one JSON document a line."""
        greeted = False
        for line in _lines(sock, first):
            try:
                request = json.loads(line)
            except ValueError:
                return
            answer = self._answer(request, greeted)
            greeted = greeted or (request.get("op") == "hello" and answer.get("ok"))
            sock.sendall(json.dumps(answer).encode() + b"\n")

    def _serve_shim(self, sock: socket.socket, first: bytes, netns_fd: int | None) -> None:
        """The shim's protocol: one whole CNI call, run here (cni/shim_server.py)."""
        from .shim_protocol import FrameError, encode_reply, read_request
        from .shim_server import run_call

        sock.settimeout(REQUEST_TIMEOUT)
        try:
            request = read_request(_SocketReader(sock, first).read)
        except (FrameError, OSError) as exc:
            _log.warning("CNI server: refused a shim request: %s", exc)
            err = InternalError(f"the tortie CNI server refused the shim's request: {exc}",
                                "the shim and the server come from different tortie versions, "
                                "or the shim was interrupted")
            with contextlib.suppress(OSError):
                sock.sendall(encode_reply(1, err.to_json("1.0.0").encode() + b"\n", b""))
            return
        reply = run_call(request, netns_fd, self.shared_backend, self.environ)
        sock.settimeout(None)
        try:
            sock.sendall(encode_reply(*reply))
        except OSError as exc:  # the runtime gave up (killed the shim); the call is done
            _log.warning("CNI server: could not send the reply to %s: %s", request.program, exc)

    def _make_server(self) -> socketserver.ThreadingUnixStreamServer:
        import socketserver

        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                try:
                    first, fds, flags, _ = socket.recv_fds(sock, 65536, 1,
                                                           socket.MSG_CMSG_CLOEXEC)
                except OSError:
                    return
                try:
                    if flags & socket.MSG_CTRUNC:
                        _log.warning("CNI server: refused a connection that passed more than "
                                     "one file descriptor")
                    elif first.startswith(b"{"):
                        outer._serve_json(sock, first)
                    elif first.startswith(b"T"):
                        outer._serve_shim(sock, first, fds[0] if fds else None)
                finally:
                    for fd in fds:
                        os.close(fd)

        _claim_socket_path(self.path)
        server = socketserver.ThreadingUnixStreamServer(self.path, Handler)
        server.daemon_threads = True
        os.chmod(self.path, 0o600)
        return server

    def start(self) -> CniServer:
        """Serve on a background thread (for embedding, e.g. in the agent)."""
        import threading

        self._server = self._make_server()
        self._thread = threading.Thread(target=self._server.serve_forever, name="cni-server",
                                        daemon=True)
        self._thread.start()
        _log.info("CNI server listening on %s", self.path)
        return self

    def serve_forever(self) -> None:
        self._server = self._make_server()
        _log.info("CNI server listening on %s", self.path)
        self._server.serve_forever()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.backend.close()


def _lines(sock: socket.socket, first: bytes) -> Iterator[bytes]:
    """The newline-terminated lines of a connection whose first bytes are `first`."""
    buf = first
    while True:
        end = buf.find(b"\n")
        if end >= 0:
            yield buf[:end]
            buf = buf[end + 1:]
            continue
        chunk = sock.recv(65536)
        if not chunk:
            return
        buf += chunk


class _SocketReader:
    """read_exact over a socket whose first bytes were already received (shim_protocol)."""

    def __init__(self, sock: socket.socket, first: bytes) -> None:
        self.sock, self.buf = sock, bytearray(first)

    def read(self, n: int, what: str) -> bytes:
        from .shim_protocol import FrameError

        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise FrameError(f"truncated request: the connection ended inside {what} "
                                 f"({len(self.buf)} of {n} bytes)")
            self.buf += chunk
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


def _claim_socket_path(path: str) -> None:
    """Remove a stale socket (its server is gone); refuse if a server still answers."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(CONNECT_TIMEOUT)
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: a crashed server's leftover
        return
    finally:
        probe.close()
    raise RuntimeError(f"another CNI server is already listening on {path}")


def main(argv: Sequence[str] | None = None) -> None:
    # The server's own imports, here: this module is also the plugin's client.
    import argparse
    import signal
    import sys
    import threading

    parser = argparse.ArgumentParser(
        prog="python -m cni.server",
        description="Serve tortie-cni's datastore calls on a unix socket (see docs/cni.md). "
                    "The datastore comes from ETCD_ENDPOINTS / ETCD_*_FILE or the options.")
    parser.add_argument("--socket", default=DEFAULT_SERVER_SOCKET)
    parser.add_argument("--etcd-endpoints")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    opts = parser.parse_args(argv)
    from .skel import CallContext

    # The server's own log: its level fixed on the handler, because the shim calls it runs
    # may lower the root logger's level for their log files (cni/skel.py); records of a
    # call carry its command and container ID.
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(opts.log_level.upper())
    handler.addFilter(CallContext())
    handler.setFormatter(logging.Formatter(
        "%(asctime)s [%(levelname)s] %(name)s: %(cni)s%(message)s"))
    logging.basicConfig(level=opts.log_level.upper(), handlers=[handler])
    try:
        server = CniServer(opts.socket, EtcdSettings(endpoints=opts.etcd_endpoints))
    except CniError as exc:
        sys.exit(f"tortie CNI server: {exc}")
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.stop).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:
        sys.exit(f"tortie CNI server: {exc}")
    finally:
        with contextlib.suppress(Exception):
            server.stop()


if __name__ == "__main__":
    main()
