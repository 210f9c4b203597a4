"""List and watch of one Kubernetes kind through the official client, on its own thread.

Owns the conversation with the API server for a kind: a list (its
resourceVersion), then watches from that version with bookmarks, resumed from
the last version seen when a watch ends or breaks; `410 Gone` (the version was
compacted away) means a fresh list; any other error a back-off with jitter
(0.5 s doubling to 30 s). The thread only puts events on the loop's queue:
`Listed` (the whole kind, replacing what the loop had, so a re-list neither
loses nor duplicates anything) and `Changed` (one ADDED/MODIFIED/DELETED).
Objects are plain JSON dicts in the API's field names, what policy.k8s reads.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

__all__ = ["Changed", "KindWatch", "Listed", "WatchFailed", "list_calls"]

_log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
WATCH_SECONDS = 300  # the server ends each watch after this; we resume from the last version


@dataclass(frozen=True)
class Listed:
    kind: str
    objects: list[dict[str, Any]]
    resource_version: str


@dataclass(frozen=True)
class Changed:
    kind: str
    type: str  # ADDED, MODIFIED, DELETED
    object: dict[str, Any]


@dataclass(frozen=True)
class WatchFailed:
    kind: str
    error: str


class _Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


def list_calls(api_client: Any) -> dict[str, Callable[..., Any]]:
    """The client's list function of each kind the controllers watch."""
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    networking = client.NetworkingV1Api(api_client)
    return {
        "Namespace": core.list_namespace,
        "Pod": core.list_pod_for_all_namespaces,
        "ServiceAccount": core.list_service_account_for_all_namespaces,
        "Node": core.list_node,
        "NetworkPolicy": networking.list_network_policy_for_all_namespaces,
    }


class KindWatch:
    """One kind's list + watch thread. `stop()` ends it (closing an open watch)."""

    def __init__(self, kind: str, list_call: Callable[..., Any], events: queue.Queue[Any],
                 *, watch_seconds: int = WATCH_SECONDS,
                 rand: Callable[[], float] = random.random) -> None:
        self.kind = kind
        self._list_call = list_call
        self._events = events
        self._watch_seconds = watch_seconds
        self._rand = rand
        self._stop = threading.Event()
        self._response: Any = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"kube-watch-{kind}", daemon=True)
        self.lists = 0  # how many times it listed (1 + re-lists), for tests and metrics

    def start(self) -> KindWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            response = self._response
        if response is not None:
            try:
                response.close()
            except Exception:  # noqa: BLE001 - closing a dead connection is fine
                pass
        self._thread.join(timeout=10)

    def _run(self) -> None:
        delay = BACKOFF_FIRST
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list()
                version = self._watch(version)
                delay = BACKOFF_FIRST
            except _Gone:
                _log.info("%s: resourceVersion %s is gone (410); listing again", self.kind, version)
                version = None
            except Exception as exc:  # noqa: BLE001 - any failure: back off and resume
                if self._stop.is_set():
                    return
                if isinstance(exc, ApiException) and exc.status == 410:
                    version = None
                    continue
                _log.warning("%s: list/watch failed (%s); retrying in %.1fs",
                             self.kind, _describe(exc), delay)
                self._events.put(WatchFailed(self.kind, _describe(exc)))
                # Jitter, so replicas and kinds do not hammer a recovering server together.
                self._stop.wait(delay * (0.5 + self._rand()))
                delay = min(delay * 2, BACKOFF_MAX)

    def _list(self) -> str:
        response = self._list_call(_preload_content=False, _request_timeout=(5, 60))
        body = json.loads(response.data)
        self.lists += 1
        version = str(body.get("metadata", {}).get("resourceVersion", ""))
        self._events.put(Listed(self.kind, list(body.get("items") or []), version))
        return version

    def _watch(self, version: str) -> str:
        """Watch from `version` until the server ends the watch; the last version seen."""
        response = self._list_call(
            watch=True, resource_version=version, allow_watch_bookmarks=True,
            timeout_seconds=self._watch_seconds, _preload_content=False,
            _request_timeout=(5, self._watch_seconds + 30))
        with self._lock:
            self._response = response
        try:
            for line in iter_resp_lines(response):
                if self._stop.is_set():
                    break
                if not line:
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone()
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                new_version = (obj.get("metadata") or {}).get("resourceVersion")
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._events.put(Changed(self.kind, kind, obj))
                if new_version:
                    version = str(new_version)
        finally:
            with self._lock:
                self._response = None
            response.close()
        return version


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"
