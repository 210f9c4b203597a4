"""The etcd v3 client: the only module that talks gRPC to etcd.

Owns: connections (several endpoints, fail-over, TLS with client
certificates), the compare-and-swap primitives every racing write uses, and
watches. Everything above this module speaks KeyValue and the exceptions in
`datastore.errors`; no pyetcd or grpc type leaks out.

Invariants:
  * create = txn(version(key) == 0 -> put); update = txn(mod_revision(key)
    == rev -> put); delete = txn(mod_revision(key) == rev -> delete). A lost
    compare raises KeyExists / KeyConflict / KeyMissing carrying what etcd
    holds now; nothing is ever written blind except by `put`.
  * An operation is retried on the next endpoint only when the failure
    proves the request never reached a server (UNAVAILABLE because the channel
    could not connect). A timeout, a connection cut mid-call, INTERNAL or etcd's own
    UNAVAILABLE ("leader changed") is ambiguous for writes: they surface it as
    ConnectionFailed "...; its outcome is unknown" instead of re-sending (a
    re-sent compare-and-swap that had committed fails its compare, and a write
    that happened would be reported as refused).
  * A write goes only to a member that has answered since the client last
    moved to it: a fresh client (a CNI plugin run, ctl) proves its member with a
    read first, so a silently dead member costs a read's timeout, not a write.
  * Every channel sends gRPC keepalive pings (config.keepalive): a connection
    whose packets are silently dropped is closed within time + timeout, and
    the watch stream on it fails instead of waiting forever.
  * `list` reads a prefix in pages of LIST_PAGE_KEYS keys, every page at the
    first page's revision, so the result is one consistent snapshot whatever its
    size: one Range answer must fit gRPC's 4 MiB message limit, which 10,000
    IPAM blocks (~0.9 KB each) exceed.

The client library is etcd-sdk-python (import name `pyetcd`): the etcd3
package's API with stubs regenerated for protobuf >= 4. See docs/datastore.md
for the choice and its measured figures.
"""

from __future__ import annotations

import builtins
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc
import pyetcd
import pyetcd.exceptions as pyexc
from pyetcd import etcdrpc
from pyetcd.utils import prefix_range_end
from pyetcd.watch import Watcher

from .config import EtcdConfig, Liveness
from .errors import ConnectionFailed, DatastoreError, RevisionCompacted, WatchCreateTimedOut

_log = logging.getLogger(__name__)

_T = TypeVar("_T")

# An endpoint that failed is not tried again for this long (pyetcd's default is 300 s,
# far too long for a cluster where etcd members restart in seconds).
ENDPOINT_RETRY_SECONDS = 2.0

# gRPC's own reconnect backoff (1 s, x1.6, up to 120 s) would keep a restarted etcd
# unreachable for a long time after it is healthy again; keep it short.
# Keys per Range request of `list`: 500 IPAM blocks are ~0.5 MB, far below gRPC's
# 4 MiB answer limit, and 10,000 keys still take only 20 round trips.
LIST_PAGE_KEYS = 500

GRPC_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]

# etcd's watch response that answers a progress request belongs to no watch.
_STREAM_WATCH_ID = -1


def channel_options(liveness: Liveness) -> list[tuple[str, int]]:
    """gRPC options for one etcd channel: fast reconnects and keepalive pings."""
    return [
        *GRPC_CHANNEL_OPTIONS,
        ("grpc.keepalive_time_ms", int(liveness.time * 1000)),
        ("grpc.keepalive_timeout_ms", int(liveness.timeout * 1000)),
        # gRPC stops pinging after 2 pings with no data frame in between unless told
        # otherwise; a quiet watch stream is exactly the connection that needs them.
        ("grpc.http2.max_pings_without_data", 0),
        # etcd counts pings on a connection with no call in flight as abuse (its
        # PermitWithoutStream is false); a watch is a call, so this loses nothing.
        ("grpc.keepalive_permit_without_calls", 0),
    ]


class _StreamWatcher(Watcher):  # type: ignore[misc]  # pyetcd ships no types
    """pyetcd's Watcher, also reporting the stream-wide answers to progress requests
    (watch id -1), which pyetcd drops, and the time of the stream's last response."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_progress: Callable[[int], None] | None = None

    def _handle_response(self, rs: Any) -> None:
        if rs.watch_id == _STREAM_WATCH_ID and not (rs.created or rs.canceled):
            listener = self.on_progress
            if listener is not None:
                listener(rs.header.revision)
            return
        super()._handle_response(rs)

    def request_progress(self) -> None:
        with self._lock:
            if self._callback_thread is None or self._stopping:
                return  # no stream: nothing to ask
            try:
                self._request_queue.put_nowait(
                    etcdrpc.WatchRequest(progress_request=etcdrpc.WatchProgressRequest())
                )
            except Exception:  # noqa: BLE001 - a full queue: the stream is stuck anyway
                _log.debug("etcd: progress request not queued", exc_info=True)


# gRPC metadata that makes etcd refuse a watch stream on a member without a leader and
# cancel one whose member loses its leader for three election timeouts (etcd's
# rpctypes.MetadataRequireLeaderKey; clientv3.WithRequireLeader, which Calico's
# watchers use). A member cut off from its peers still answers its clients, and
# progress requests too, so neither keepalive nor the stall detector would notice it:
# its watchers would see nothing ever again.
REQUIRE_LEADER = ("hasleader", "true")


class _Client(pyetcd.MultiEndpointEtcd3Client):  # type: ignore[misc]
    def get_watcher(self) -> _StreamWatcher:
        return _StreamWatcher(
            etcdrpc.WatchStub(self.channel),
            timeout=self.timeout,
            call_credentials=self.call_credentials,
            metadata=(*(self.metadata or ()), REQUIRE_LEADER),
        )


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int = 0
    version: int = 0


class KeyExists(DatastoreError):
    def __init__(self, key: str, current: KeyValue | None) -> None:
        self.key, self.current = key, current
        super().__init__(f"key already exists: {key}")


class KeyMissing(DatastoreError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"key does not exist: {key}")


class KeyConflict(DatastoreError):
    def __init__(self, key: str, expected: int, current: KeyValue | None) -> None:
        self.key, self.expected, self.current = key, expected, current
        super().__init__(
            f"compare-and-swap failed on {key}: expected revision {expected}, "
            f"found {current.mod_revision if current else 'none'}"
        )


@dataclass(frozen=True)
class WatchEvent:
    kind: str  # "put" or "delete"
    key: str
    value: bytes  # empty for deletes
    mod_revision: int
    prev_value: bytes | None = None


@dataclass(frozen=True)
class Compare:
    """A transaction guard: `target` of `key` `op` `value` (target: mod/version/create/value)."""

    key: str
    target: str
    op: str
    value: int | bytes
    prefix: bool = False


_RESULTS = {"==": 0, ">": 1, "<": 2, "!=": 3}
_TARGETS = {"version": 0, "create": 1, "mod": 2, "value": 3}
_TARGET_FIELDS = {"version": "version", "create": "create_revision", "mod": "mod_revision",
                  "value": "value"}


class _CompareGuard(Protocol):
    """What a transaction's compare list holds: pyetcd's compares and _RawCompare."""

    def build_message(self) -> object: ...


class _RawCompare:
    """A Compare rendered straight to the protobuf (pyetcd has no range compares)."""

    def __init__(self, c: Compare) -> None:
        self.c = c

    def build_message(self) -> object:
        c = self.c
        msg = etcdrpc.Compare(result=_RESULTS[c.op], target=_TARGETS[c.target], key=c.key.encode())
        setattr(msg, _TARGET_FIELDS[c.target], c.value)
        if c.prefix:
            msg.range_end = _prefix_end(c.key)
        return msg


@dataclass(frozen=True)
class Op:
    """A transaction operation: put (with value), delete or get."""

    kind: str
    key: str
    value: bytes = b""


def put_op(key: str, value: bytes) -> Op:
    return Op("put", key, value)


def delete_op(key: str) -> Op:
    return Op("delete", key)


def get_op(key: str) -> Op:
    return Op("get", key)


def _kv(kv: Any) -> KeyValue:
    # kv: an etcdrpc KeyValue protobuf message; pyetcd ships no type information.
    return KeyValue(
        key=kv.key.decode(),
        value=kv.value,
        mod_revision=kv.mod_revision,
        create_revision=kv.create_revision,
        version=kv.version,
    )


def _prefix_end(prefix: str) -> bytes:
    b = bytearray(prefix.encode())
    for i in reversed(range(len(b))):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\0"


class EtcdClient:
    """A thread-safe etcd v3 client with endpoint fail-over.

    Failure handling: a request that fails with UNAVAILABLE marks its endpoint
    failed for ENDPOINT_RETRY_SECONDS and is re-sent to the next endpoint;
    when every endpoint has failed, ConnectionFailed names them all.
    """

    def __init__(self, config: EtcdConfig, timeout: float = 5.0) -> None:
        self.config = config
        self.timeout = timeout
        creds = None
        if config.tls:
            try:
                creds = pyetcd.MultiEndpointEtcd3Client.get_secure_creds(
                    config.ca_cert_file, config.key_file, config.cert_file
                ) if config.ca_cert_file else grpc.ssl_channel_credentials()
            except OSError as exc:
                raise ConnectionFailed(config.urls, f"cannot read TLS files: {exc}") from None
        endpoints = [
            pyetcd.Endpoint(
                e.host,
                e.port,
                secure=creds is not None,
                creds=creds,
                time_retry=ENDPOINT_RETRY_SECONDS,
                opts=channel_options(config.keepalive),
            )
            for e in config.endpoints
        ]
        self._lock = threading.Lock()
        # The member that last answered (pyetcd's endpoint label); see _call.
        self._proven: str | None = None
        try:
            self._client = _Client(
                endpoints=endpoints,
                timeout=timeout,
                user=config.username,
                password=config.password,
                failover=True,
            )
        except grpc.RpcError as exc:
            raise ConnectionFailed(config.urls, _rpc_detail(exc)) from None
        # Start on the first configured endpoint (pyetcd picks one at random).
        self._client._current_endpoint_label = endpoints[0].netloc

    # -- plumbing --------------------------------------------------------------

    def _call(self, fn: Callable[[], _T], *, idempotent: bool) -> _T:
        if not idempotent and self._client._current_endpoint_label != self._proven:
            # A write to a member that never answered would, if the member is silently
            # gone, time out with an unknown outcome and fail. A read first proves a
            # member (failing over if need be), at the cost of one round trip.
            self.revision()
        result = self._call_once(fn, idempotent=idempotent)
        self._proven = self._client._current_endpoint_label
        return result

    def _call_once(self, fn: Callable[[], _T], *, idempotent: bool) -> _T:
        attempts = len(self.config.endpoints) + 1
        last: Exception | None = None
        first_cause = ""  # the gRPC detail of the first failure says the most
        for _ in range(attempts):
            if last is not None and not first_cause:
                first_cause = _describe(last)
            try:
                return fn()
            except pyexc.ConnectionFailedError as exc:
                last = exc
                if not idempotent and not _never_sent(exc):
                    raise ConnectionFailed(
                        self.config.urls, f"{_describe(exc)}; its outcome is unknown"
                    ) from None
            except pyexc.ConnectionTimeoutError as exc:
                last = exc
                if not idempotent:
                    raise ConnectionFailed(
                        self.config.urls, "request timed out; its outcome is unknown"
                    ) from None
            except pyexc.NoServerAvailableError as exc:
                last = exc
                break
            except pyexc.PreconditionFailedError as exc:
                raise DatastoreError(f"etcd refused the request: {exc}") from None
            except pyexc.InternalServerError as exc:
                last = exc
                # INTERNAL comes after the request went out (a stream reset by the
                # server or a proxy, an answer that did not decode): a write may have
                # been applied, so it is not re-sent, as for UNAVAILABLE above.
                if not idempotent:
                    raise ConnectionFailed(
                        self.config.urls, f"{_describe(exc)}; its outcome is unknown"
                    ) from None
            except grpc.RpcError as exc:
                raise ConnectionFailed(self.config.urls, _rpc_detail(exc)) from None
            except ValueError as exc:  # pyetcd: "Trying to use a failed node"
                last = exc
                break
        self._reset_failed_endpoints()
        detail = first_cause or _describe(last)
        if self.config.tls and not self.config.cert_file:
            detail += " (no client certificate configured: set ETCD_CERT_FILE and ETCD_KEY_FILE"\
                      " if etcd requires client certificates)"
        raise ConnectionFailed(self.config.urls, detail) from None

    def _reset_failed_endpoints(self) -> None:
        # After a full round of failures, let the next call try everything again
        # rather than refusing for ENDPOINT_RETRY_SECONDS.
        for ep in self._client.endpoints.values():
            ep.last_failed = 0

    # -- reads -------------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        def do() -> KeyValue | None:
            resp = self._client.get_response(key)
            return _kv(resp.kvs[0]) if resp.kvs else None

        return self._call(do, idempotent=True)

    # From here on, `list` in this class's signatures would name this method (class
    # scope), so they spell the type builtins.list.
    def list(self, prefix: str, revision: int | None = None) -> tuple[list[KeyValue], int]:
        """All keys under prefix, sorted by key, and the store revision they were read at."""
        end = prefix_range_end(prefix.encode())
        out: builtins.list[KeyValue] = []
        start: bytes = prefix.encode()
        at = revision or 0  # 0: the first page reads the current revision and pins it

        def page() -> tuple[builtins.list[KeyValue], int, bool]:
            resp = self._client.get_range_response(
                start, end, sort_order="ascend", sort_target="key", limit=LIST_PAGE_KEYS,
                revision=at or None)
            return [_kv(kv) for kv in resp.kvs], resp.header.revision, bool(resp.more)

        header_revision = 0  # what a single Range would have said: the first page's
        try:
            while True:
                kvs, read_at, more = self._call(page, idempotent=True)
                header_revision = header_revision or read_at
                at = at or read_at
                out += kvs
                if not more or not kvs:
                    return out, header_revision
                start = kvs[-1].key.encode() + b"\0"  # the next key after the last one read
        except DatastoreError as exc:
            if at and "compacted" in str(exc):
                raise RevisionCompacted(at, 0) from None
            raise

    def revision(self) -> int:
        """The store's current revision."""

        def do() -> int:
            rev: int = self._client.get_response("\0").header.revision
            return rev

        return self._call(do, idempotent=True)

    # -- writes ------------------------------------------------------------------

    def put(self, key: str, value: bytes, lease: object | None = None) -> int:
        """Unconditional write. Only for keys nobody else races on."""

        def do() -> int:
            rev: int = self._client.put(key, value, lease=lease).header.revision
            return rev

        return self._call(do, idempotent=True)

    def create(self, key: str, value: bytes, lease: object | None = None) -> int:
        """Create-if-absent. Returns the new mod revision; raises KeyExists."""
        t = self._client.transactions
        ok, responses, rev = self._txn(
            [t.version(key) == 0], [t.put(key, value, lease=lease)], [t.get(key)]
        )
        if not ok:
            raise KeyExists(key, _first_kv(responses))
        return rev

    def update(self, key: str, value: bytes, mod_revision: int) -> int:
        """Compare-and-swap on mod revision. Raises KeyConflict or KeyMissing."""
        t = self._client.transactions
        ok, responses, rev = self._txn(
            [t.mod(key) == mod_revision], [t.put(key, value)], [t.get(key)]
        )
        if not ok:
            current = _first_kv(responses)
            if current is None:
                raise KeyMissing(key)
            raise KeyConflict(key, mod_revision, current)
        return rev

    def delete(self, key: str, mod_revision: int | None = None) -> int:
        """Compare-and-delete (exact key, never a prefix). Raises KeyConflict/KeyMissing."""
        t = self._client.transactions
        if mod_revision is None:
            guard = [t.version(key) > 0]
        else:
            guard = [t.mod(key) == mod_revision]
        ok, responses, rev = self._txn(guard, [t.delete(key)], [t.get(key)])
        if not ok:
            current = _first_kv(responses)
            if current is None:
                raise KeyMissing(key)
            raise KeyConflict(key, mod_revision or 0, current)
        return rev

    def transaction(
        self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> tuple[bool, builtins.list[builtins.list[KeyValue]], int]:
        """A general multi-key transaction. Returns (succeeded, get results, revision).

        Get results hold one list per `get` op in the branch that ran. A Compare
        with `prefix=True` guards every key under `key` (etcd range compare),
        e.g. "nothing under the pools prefix changed since revision R".
        """
        t = self._client.transactions

        def ops(items: Iterable[Op]) -> list[object]:
            out: list[object] = []
            for op in items:
                if op.kind == "put":
                    out.append(t.put(op.key, op.value))
                elif op.kind == "delete":
                    out.append(t.delete(op.key))
                else:
                    out.append(t.get(op.key))
            return out

        ok, responses, rev = self._txn(
            [_RawCompare(c) for c in compare], ops(success), ops(failure)
        )
        gets = [r for r in responses if isinstance(r, list)]
        return ok, gets, rev

    def _txn(
        self,
        compare: builtins.list[_CompareGuard],
        success: builtins.list[object],
        failure: builtins.list[object],
    ) -> tuple[bool, builtins.list[object], int]:
        def do() -> tuple[bool, list[object], int]:
            client = self._client
            req = etcdrpc.TxnRequest(
                compare=[c.build_message() for c in compare],
                success=client._ops_to_requests(success),
                failure=client._ops_to_requests(failure),
            )
            try:
                resp = client.kvstub.Txn(
                    req, client.timeout, credentials=client.call_credentials,
                    metadata=client.metadata,
                )
            except grpc.RpcError as exc:
                client._manage_grpc_errors(exc)
                raise  # unreachable: _manage_grpc_errors always raises
            out: list[object] = []
            for r in resp.responses:
                which = r.WhichOneof("response")
                if which == "response_range":
                    out.append([_kv(kv) for kv in r.response_range.kvs])
                else:
                    out.append(r)
            return resp.succeeded, out, resp.header.revision

        return self._call(do, idempotent=False)

    # -- leases ------------------------------------------------------------------

    def lease(self, ttl: int) -> object:
        return self._call(lambda: self._client.lease(ttl), idempotent=False)

    # -- watches -----------------------------------------------------------------

    def watch_prefix(
        self,
        prefix: str,
        start_revision: int,
        on_events: Callable[[builtins.list[WatchEvent], int], None],
        on_error: Callable[[DatastoreError], None],
        *,
        create_timeout: float | None = None,
    ) -> Callable[[], None]:
        """Watch everything under prefix from start_revision (inclusive).

        on_events(events, header_revision) is called on the watch thread for each
        response; on_error once if the stream breaks (RevisionCompacted when etcd
        no longer has start_revision). Returns a cancel function. etcd must confirm
        the watch within `create_timeout` (the client's timeout by default), else
        WatchCreateTimedOut; the stream then still holds the unanswered request, so
        the caller must drop the stream (fail_over) before watching again.
        """
        wait = self.timeout if create_timeout is None else create_timeout

        def callback(resp: object) -> None:
            if isinstance(resp, pyexc.RevisionCompactedError):
                on_error(RevisionCompacted(start_revision, resp.compacted_revision))
                return
            if isinstance(resp, BaseException) or resp is None:
                on_error(ConnectionFailed(self.config.urls, _describe(resp)))
                return
            events = []
            # resp: a pyetcd WatchResponse, which is untyped; `object` keeps the checks above.
            for ev in resp.events:  # type: ignore[attr-defined]
                kv = ev._event.kv
                is_delete = ev._event.type == 1
                events.append(
                    WatchEvent(
                        kind="delete" if is_delete else "put",
                        key=kv.key.decode(),
                        value=b"" if is_delete else kv.value,
                        mod_revision=kv.mod_revision,
                    )
                )
            on_events(events, resp.header.revision)  # type: ignore[attr-defined]

        def do() -> int:
            # pyetcd waits for the "created" answer for its watcher's `timeout`; the
            # watcher is this client's own (the syncer has its client to itself).
            self._client.watcher.timeout = wait
            added: int = self._client.add_watch_prefix_callback(
                prefix, callback, start_revision=start_revision
            )
            return added

        try:
            watch_id = self._call(do, idempotent=True)
        except pyexc.RevisionCompactedError as exc:
            raise RevisionCompacted(start_revision, exc.compacted_revision) from None
        except pyexc.WatchTimedOut:
            raise WatchCreateTimedOut(self.config.urls, wait) from None
        # Watch ids restart at 0 on every new gRPC stream: remember which watcher owns
        # ours so a late cancel never cancels somebody else's watch on a newer stream.
        watcher = self._client.watcher

        def cancel() -> None:
            if watcher._callbacks.get(watch_id) is not callback:
                return  # our stream is gone, and our watch with it
            try:
                watcher.cancel(watch_id)
            except Exception:  # noqa: BLE001 - cancelling a dead stream is fine
                pass

        return cancel

    def request_watch_progress(self, on_progress: Callable[[int], None]) -> None:
        """Ask etcd, on the current watch stream, to confirm it is alive.

        etcd answers with the store's revision; on_progress(revision) is called on
        the watch thread. A stream that does not answer is stalled or dead.
        """
        watcher = self._client.watcher
        if isinstance(watcher, _StreamWatcher):
            watcher.on_progress = on_progress
            watcher.request_progress()

    @property
    def endpoint_in_use(self) -> str:
        """The URL of the member this client talks to now."""
        netloc = str(self._client._current_endpoint_label)
        scheme = "https" if self.config.tls else "http"
        return f"{scheme}://{netloc}"

    def fail_over(self) -> str:
        """Leave the member in use for the next one (in configured order), whose
        channel gets a new watch stream; returns its URL. With one endpoint, the
        same member is kept and only its watch stream is dropped."""
        labels = list(self._client.endpoints)
        current = self._client._current_endpoint_label
        if len(labels) > 1:
            self._client.endpoints[current].fail()  # not chosen again for a while
            nxt = labels[(labels.index(current) + 1) % len(labels)]
            self._client._current_endpoint_label = nxt  # drops the old watch stream
        else:
            self._client._clear_old_stubs()
        return self.endpoint_in_use

    def compact(self, revision: int) -> None:
        self._call(lambda: self._client.compact(revision, physical=True), idempotent=True)

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> EtcdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _first_kv(responses: list[object]) -> KeyValue | None:
    for r in responses:
        if isinstance(r, list):
            return r[0] if r else None
    return None


# gRPC's words for a call that failed because the channel could not connect: no server
# ever saw the request. Every other UNAVAILABLE may come after a server got it: a
# connection reset mid-call, or etcd's own "leader changed" / "request timed out" for a
# proposal that can still commit.
_NOT_SENT = "failed to connect to all addresses"


def _never_sent(exc: BaseException) -> bool:
    """Whether a ConnectionFailedError proves its request reached no server."""
    cause = exc.__context__
    return not isinstance(cause, grpc.RpcError) or _NOT_SENT in _rpc_detail(cause)


def _rpc_detail(exc: BaseException | None) -> str:
    if isinstance(exc, grpc.RpcError):
        try:
            return f"{exc.code().name}: {exc.details()}"
        except Exception:  # noqa: BLE001
            return str(exc)
    return str(exc) if exc else ""


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no endpoint answered"
    cause = exc.__context__
    if isinstance(cause, grpc.RpcError):
        return _rpc_detail(cause)
    return str(exc) or type(exc).__name__
