"""The fake API server's HTTP side: URL routing, query parameters, responses and watches.

Owns the wire: which path names which resource and object, how a request becomes a
`Store` call, how Status errors and lists are sent, and every open watch stream (replay,
live events, bookmarks, timeouts, being cut). State is the store's; this module keeps only
the set of open connections and watches, so that `break_watches()` and `stop()` can end them.

Invariants:
- A watch sends, in resourceVersion order, exactly the changes after its starting version
  that concern its resource, namespace and selectors, each once.
- A watch's cursor advances over every change the server makes, matching or not, so an
  idle watch is never behind the compaction point.
- Errors found before a watch starts (bad selector, bad version) are HTTP errors; an
  expired version is a 200 response carrying one ERROR event, as the API server sends it.
"""

from __future__ import annotations

import bisect
import json
import math
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.kube_api_fake.selectors import (
    FieldSelector,
    LabelSelector,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)
from tests.kube_api_fake.store import (
    RESOURCES,
    ApiError,
    Event,
    Obj,
    ResourceType,
    Store,
    bad_request,
    matches,
)

# How often an idle watch checks whether its client has gone away.
_CLIENT_POLL_SECONDS = 0.5


@dataclass(eq=False)
class OpenWatch:
    """One watch stream being served; `cut()` ends it abruptly from any thread."""

    connection: socket.socket
    broken: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def cut(self) -> None:
        with self.lock:
            self.broken = True
            try:
                # No terminating chunk: the client sees the connection end mid-stream, as it
                # does when an API server or a load balancer drops it.
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class FakeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], store: Store, *, token: str | None,
                 bookmark_interval: float) -> None:
        self.store = store
        self.token = token
        self.bookmark_interval = bookmark_interval
        self.watches: set[OpenWatch] = set()
        self.connections: set[socket.socket] = set()
        self.registry_lock = threading.Lock()
        self.stopping = False
        super().__init__(address, Handler)

    def break_watches(self) -> int:
        with self.registry_lock:
            watches = list(self.watches)
        for watch in watches:
            watch.cut()
        with self.store.cond:
            self.store.cond.notify_all()
        return len(watches)

    def close_everything(self) -> None:
        self.stopping = True
        self.break_watches()
        with self.registry_lock:
            connections = list(self.connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _resource_for(group: str, version: str, plural: str) -> ResourceType | None:
    for rtype in RESOURCES:
        if (rtype.group, rtype.version, rtype.plural) == (group, version, plural):
            return rtype
    return None


_NO_ROUTE = ApiError(404, "NotFound", "the server could not find the requested resource")


def route(path: str) -> tuple[ResourceType, str | None, str | None]:
    """(resource, namespace, name) for a resource path; namespace None means all of them.

    "API terminology" (API Concepts): cluster-scoped `/apis/GROUP/VERSION/RESOURCE[/NAME]`,
    namespaced `/apis/GROUP/VERSION/namespaces/NS/RESOURCE[/NAME]`, the core group under
    `/api/v1`; a namespaced collection without a namespace lists across all of them.
    """
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise _NO_ROUTE
    if len(rest) in (3, 4) and rest[0] == "namespaces":
        rtype = _resource_for(group, version, rest[2])
        if rtype is None or not rtype.namespaced:
            raise _NO_ROUTE
        return rtype, rest[1], rest[3] if len(rest) == 4 else None
    if len(rest) in (1, 2):
        rtype = _resource_for(group, version, rest[0])
        if rtype is None or (len(rest) == 2 and rtype.namespaced):
            raise _NO_ROUTE
        return rtype, None, rest[1] if len(rest) == 2 else None
    raise _NO_ROUTE


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return (_one(query, name) or "").lower() in ("true", "1")


def _int_param(query: dict[str, list[str]], name: str) -> int | None:
    value = _one(query, name)
    if value in (None, ""):
        return None
    try:
        number = int(str(value))
    except ValueError:
        raise bad_request(f"{name}: Invalid value: {value!r}: must be an integer") from None
    if number < 0:
        raise bad_request(f"{name}: Invalid value: {value!r}: must not be negative")
    return number


def watch_event(event: Event, labels: LabelSelector, fields: FieldSelector) -> Obj | None:
    """What a watch with these selectors is sent for `event`, or None.

    The API server's watch cache (cacheWatcher.convertToWatchEvent in k8s.io/apiserver;
    the API Concepts page documents watches but not this case) decides by whether the
    object matched before and after the change: an object that starts matching is ADDED,
    one that stops matching is DELETED (its previous content with the change's
    resourceVersion), one that matches both times is MODIFIED.
    """
    now = event.type != "DELETED" and matches(event.obj, labels, fields)
    before = event.prev is not None and matches(event.prev, labels, fields)
    if now and not before:
        return {"type": "ADDED", "object": event.obj}
    if now and before:
        return {"type": "MODIFIED", "object": event.obj}
    if before:
        if event.type == "DELETED":
            return {"type": "DELETED", "object": event.obj}
        gone = json.loads(json.dumps(event.prev))
        gone["metadata"]["resourceVersion"] = str(event.rv)
        return {"type": "DELETED", "object": gone}
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass  # tests read Status objects and events, not an access log

    def setup(self) -> None:
        super().setup()
        with self.server.registry_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.registry_lock:
            self.server.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    # -- responses ----------------------------------------------------------------------

    def _send_json(self, code: int, body: Obj) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise bad_request(f"the request body is not valid JSON: {exc}") from None

    def _handle(self, action: Callable[[str, dict[str, list[str]]], None]) -> None:
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        try:
            if self.server.token is not None and (
                    self.headers.get("Authorization") != f"Bearer {self.server.token}"):
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if _one(query, "dryRun"):
                raise bad_request("dryRun is not implemented by the fake API server")
            action(split.path, query)
        except ApiError as err:
            self._send_json(err.code, err.status)
        except SelectorError as err:
            self._send_json(400, bad_request(str(err)).status)

    def do_GET(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler's naming
        self._handle(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._handle(self._post)

    def do_PUT(self) -> None:  # noqa: N802
        self._handle(self._put)

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle(self._patch)

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle(self._delete)

    # -- verbs --------------------------------------------------------------------------

    def _get(self, path: str, query: dict[str, list[str]]) -> None:
        if path in ("/healthz", "/readyz", "/livez"):
            data = b"ok"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if path == "/version":
            self._send_json(200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0-kubefake",
                                  "platform": "linux/amd64"})
            return
        rtype, namespace, name = route(path)
        store = self.server.store
        if name is not None:
            if _flag(query, "watch"):
                raise bad_request("watch of a single object by its path is not served; watch "
                                  "the collection with fieldSelector=metadata.name=<name>")
            self._send_json(200, store.get(rtype, namespace, name))
            return
        labels = parse_label_selector(_one(query, "labelSelector"))
        fields = parse_field_selector(_one(query, "fieldSelector"), rtype.plural)
        if _flag(query, "watch"):
            self._watch(rtype, namespace, labels, fields, query)
            return
        items, rv, token, remaining = store.list(
            rtype, namespace, labels, fields,
            resource_version=_one(query, "resourceVersion"),
            resource_version_match=_one(query, "resourceVersionMatch"),
            limit=_int_param(query, "limit"), continue_token=_one(query, "continue"))
        metadata: Obj = {"resourceVersion": rv}
        if token:
            metadata["continue"] = token
            metadata["remainingItemCount"] = remaining
        for item in items:  # items of a list carry no kind or apiVersion of their own
            item.pop("kind", None)
            item.pop("apiVersion", None)
        self._send_json(200, {"kind": f"{rtype.kind}List", "apiVersion": rtype.api_version,
                              "metadata": metadata, "items": items})

    def _post(self, path: str, query: dict[str, list[str]]) -> None:
        rtype, namespace, name = route(path)
        if name is not None or (rtype.namespaced and namespace is None):
            raise ApiError(405, "MethodNotAllowed",
                           "the server does not allow this method on the requested resource")
        self._send_json(201, self.server.store.create(rtype, namespace, self._body()))

    def _object_path(self, path: str, verb: str) -> tuple[ResourceType, str | None, str]:
        rtype, namespace, name = route(path)
        if name is None:
            raise ApiError(405, "MethodNotAllowed",
                           f"the server does not allow {verb} on a collection")
        return rtype, namespace, name

    def _put(self, path: str, query: dict[str, list[str]]) -> None:
        rtype, namespace, name = self._object_path(path, "PUT")
        self._send_json(200, self.server.store.replace(rtype, namespace, name, self._body()))

    def _patch(self, path: str, query: dict[str, list[str]]) -> None:
        rtype, namespace, name = self._object_path(path, "PATCH")
        content_type = self.headers.get("Content-Type") or ""
        self._send_json(200, self.server.store.patch(rtype, namespace, name, self._body(),
                                                     content_type))

    def _delete(self, path: str, query: dict[str, list[str]]) -> None:
        rtype, namespace, name = self._object_path(path, "DELETE")
        options = self._body() or {}
        if not isinstance(options, dict):
            raise bad_request(f"DeleteOptions must be a JSON object, not {options!r}")
        deleted = self.server.store.delete(rtype, namespace, name, options.get("preconditions"))
        if rtype.returns_deleted_object:
            self._send_json(200, deleted)
            return
        details: Obj = {"name": name, "kind": rtype.plural, "uid": deleted["metadata"]["uid"]}
        if rtype.group:
            details["group"] = rtype.group
        self._send_json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                              "status": "Success", "details": details})

    # -- watch ("Efficient detection of changes" and "Watch bookmarks", API Concepts) ----

    def _chunk(self, body: Obj) -> None:
        data = json.dumps(body).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _watch(self, rtype: ResourceType, namespace: str | None, labels: LabelSelector,
               fields: FieldSelector, query: dict[str, list[str]]) -> None:
        """Serve one watch until its timeout, its client leaving, or being cut.

        Starting point ("Semantics for watch", API Concepts): no resourceVersion or "0"
        sends a synthetic ADDED for every object that matches now, then the changes after
        now; a resourceVersion N sends exactly the changes after N. N older than the
        compaction point is answered with one ERROR event carrying a 410 Expired Status
        ("410 Gone responses"), which is what the API server sends on a watch; a watch that
        falls behind compaction while open gets the same. timeoutSeconds ends the stream
        cleanly. allowWatchBookmarks sends BOOKMARK events whose object carries only its
        kind, apiVersion and metadata.resourceVersion: every change up to that version has
        been sent ("Watch bookmarks").
        """
        if _flag(query, "sendInitialEvents"):
            raise bad_request("sendInitialEvents is forbidden for watch unless the WatchList "
                              "feature gate is enabled (the fake does not implement it)")
        store = self.server.store
        timeout = _int_param(query, "timeoutSeconds")
        deadline = time.monotonic() + timeout if timeout else math.inf
        interval = self.server.bookmark_interval
        bookmarks = _flag(query, "allowWatchBookmarks") and interval > 0
        wanted = _one(query, "resourceVersion")
        initial: list[Obj] = []
        with store.cond:
            if wanted in (None, "", "0"):
                cursor = store.rv
                initial = [{"type": "ADDED", "object": obj}
                           for (plural, ns, _), obj in sorted(store.objects.items())
                           if plural == rtype.plural and namespace in (None, ns)
                           and matches(obj, labels, fields)]
                initial = json.loads(json.dumps(initial))
            else:
                try:
                    cursor = int(str(wanted))
                except ValueError:
                    raise bad_request(f"resourceVersion: Invalid value: {wanted!r}: must be a "
                                      "resourceVersion this server returned") from None
                if cursor > store.rv:
                    raise ApiError(504, "Timeout", f"Too large resource version: {cursor}, "
                                                   f"current: {store.rv}")
        watch = OpenWatch(self.connection)
        with self.server.registry_lock:
            self.server.watches.add(watch)
        self.close_connection = True  # one watch per connection, as the client uses it
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for event in initial:
                self._chunk(event)
            self._stream(watch, rtype, namespace, labels, fields, cursor, deadline,
                         bookmarks, interval)
        except OSError:
            pass  # the client went away, or the stream was cut
        finally:
            with self.server.registry_lock:
                self.server.watches.discard(watch)

    def _stream(self, watch: OpenWatch, rtype: ResourceType, namespace: str | None,
                labels: LabelSelector, fields: FieldSelector, cursor: int, deadline: float,
                bookmarks: bool, interval: float) -> None:
        store = self.server.store
        next_bookmark = time.monotonic() + interval if bookmarks else math.inf
        while True:
            pending: list[Event] = []
            send_bookmark = False
            too_old = False
            with store.cond:
                while True:
                    if watch.broken or self.server.stopping:
                        return
                    if cursor < store.compacted:
                        too_old = True
                        break
                    start = bisect.bisect_right(store.events, cursor, key=lambda e: e.rv)
                    pending = store.events[start:]
                    if pending:
                        cursor = pending[-1].rv
                        break
                    now = time.monotonic()
                    if now >= deadline:
                        break
                    if now >= next_bookmark:
                        send_bookmark = True
                        next_bookmark = now + interval
                        break
                    if self._client_gone():
                        return
                    store.cond.wait(min(deadline, next_bookmark, now + _CLIENT_POLL_SECONDS)
                                    - now)
            with watch.lock:
                if watch.broken:
                    return
                if too_old:
                    self._chunk({"type": "ERROR", "object": ApiError(
                        410, "Expired", f"too old resource version: {cursor} "
                                        f"({store.compacted})").status})
                    self.wfile.write(b"0\r\n\r\n")
                    return
                for event in pending:
                    if event.rtype == rtype and namespace in (None, event.namespace) and (
                            sent := watch_event(event, labels, fields)):
                        self._chunk(sent)
                if send_bookmark:
                    self._chunk({"type": "BOOKMARK", "object": {
                        "kind": rtype.kind, "apiVersion": rtype.api_version,
                        "metadata": {"resourceVersion": str(cursor)}}})
                if not pending and not send_bookmark:  # the deadline: end cleanly
                    self.wfile.write(b"0\r\n\r\n")
                    return
