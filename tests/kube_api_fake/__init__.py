"""A small Kubernetes API server fake over HTTP: the one stand-in the tests use for one.

No Kubernetes API server can run on the development machines, so code that talks to one
(the kube-controllers, the CNI plugin's Kubernetes mode) is tested against this fake, driven
by the real `kubernetes` Python client, unchanged. It serves core/v1 namespaces, pods,
serviceaccounts and nodes, networking.k8s.io/v1 networkpolicies and coordination.k8s.io/v1
leases, with the API server's semantics for what it implements (each rule cites the
Kubernetes API Concepts or API conventions section it follows, in store.py, server.py and
selectors.py); docs/testing.md lists what it implements and what not.

Owns the fake's life cycle: `KubeApiFake` starts and stops the HTTP server, writes a
kubeconfig for it, and gives tests direct access to the store (the same code paths, so the
same validation and errors) and to the failure levers: `compact()` and `break_watches()`.

Invariant: everything a test does directly goes through `Store`, exactly as a request would;
there is no back door that skips resourceVersions, events or validation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from threading import Thread
from typing import Any

import yaml

from tests.kube_api_fake.selectors import parse_field_selector, parse_label_selector
from tests.kube_api_fake.server import FakeHTTPServer
from tests.kube_api_fake.store import (
    MERGE_PATCH,
    RESOURCES,
    ApiError,
    Obj,
    ResourceType,
    Store,
    resource_type,
)

__all__ = ["RESOURCES", "ApiError", "KubeApiFake", "ResourceType"]


def _where(rtype: ResourceType, obj: Mapping[str, Any]) -> tuple[str | None, str]:
    metadata = obj.get("metadata") or {}
    name = metadata.get("name")
    if not name:
        raise ValueError(f"{rtype.kind}: metadata.name is required, got {obj!r}")
    namespace = (metadata.get("namespace") or "default") if rtype.namespaced else None
    return namespace, str(name)


class KubeApiFake:
    """The fake API server. `start()` serves it; the other methods change it directly.

    `kind` arguments take a Kind (`Pod`), a plural (`pods`) or a singular (`pod`). A
    namespaced object without metadata.namespace goes to `default`, as kubectl does.
    """

    def __init__(self, *, namespaces: Iterable[str] = ("default", "kube-system"),
                 token: str | None = None, bookmark_interval: float = 1.0) -> None:
        """`namespaces` exist from the start (a real cluster has `default` and
        `kube-system`); `token`, when given, is the bearer token every request must carry
        (401 otherwise); `bookmark_interval` is how often a watch that allows bookmarks
        gets one (the API server sends them about once a minute; tests want them sooner)."""
        self.store = Store(namespaces)
        self.token = token
        self.bookmark_interval = bookmark_interval
        self._server: FakeHTTPServer | None = None
        self._thread: Thread | None = None

    # -- serving ------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0: a free port) in a background thread; the base URL."""
        if self._server is not None:
            raise RuntimeError(f"the fake API server already serves {self.url}")
        self._server = FakeHTTPServer((host, port), self.store, token=self.token,
                                      bookmark_interval=self.bookmark_interval)
        self._thread = Thread(target=self._server.serve_forever, name="kube-api-fake",
                              kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake API server is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host if isinstance(host, str) else host.decode()}:{port}"

    def stop(self) -> None:
        """Stop serving: every watch and connection is closed, the thread joined."""
        if self._server is None:
            return
        self._server.close_everything()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> KubeApiFake:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        """Write a kubeconfig for this server (and its token, if any) to `path`."""
        user: Obj = {"token": self.token} if self.token is not None else {}
        config = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "kube-api-fake", "cluster": {"server": self.url}}],
            "users": [{"name": "kube-api-fake", "user": user}],
            "contexts": [{"name": "kube-api-fake", "context": {
                "cluster": "kube-api-fake", "user": "kube-api-fake",
                "namespace": namespace}}],
            "current-context": "kube-api-fake",
        }
        target = Path(path)
        target.write_text(yaml.safe_dump(config, sort_keys=False))
        return target

    # -- the store, directly ------------------------------------------------------------

    def create(self, kind: str, obj: Mapping[str, Any]) -> Obj:
        rtype = resource_type(kind)
        namespace = ((obj.get("metadata") or {}).get("namespace") or "default"
                     ) if rtype.namespaced else None
        return self.store.create(rtype, namespace, dict(obj))

    def replace(self, kind: str, obj: Mapping[str, Any]) -> Obj:
        rtype = resource_type(kind)
        namespace, name = _where(rtype, obj)
        return self.store.replace(rtype, namespace, name, dict(obj))

    def patch(self, kind: str, obj: Mapping[str, Any]) -> Obj:
        """Apply `obj` as a JSON merge patch to the object it names (null deletes a key)."""
        rtype = resource_type(kind)
        namespace, name = _where(rtype, obj)
        return self.store.patch(rtype, namespace, name, dict(obj), MERGE_PATCH)

    def delete(self, kind: str, obj: Mapping[str, Any]) -> Obj:
        rtype = resource_type(kind)
        namespace, name = _where(rtype, obj)
        return self.store.delete(rtype, namespace, name)

    def get(self, kind: str, name: str, namespace: str | None = None) -> Obj:
        rtype = resource_type(kind)
        return self.store.get(rtype, (namespace or "default") if rtype.namespaced else None,
                              name)

    def list(self, kind: str, namespace: str | None = None, label_selector: str = "",
             field_selector: str = "") -> list[Obj]:
        rtype = resource_type(kind)
        items, _, _, _ = self.store.list(rtype, namespace,
                                         parse_label_selector(label_selector),
                                         parse_field_selector(field_selector, rtype.plural))
        return items

    @property
    def resource_version(self) -> int:
        """The current value of the global resourceVersion counter."""
        with self.store.cond:
            return self.store.rv

    def compact(self, before_rv: int | None = None) -> int:
        """Compact the history before `before_rv` (default: now); see `Store.compact`."""
        return self.store.compact(before_rv)

    def break_watches(self) -> int:
        """Cut every open watch mid-stream (no clean end); how many were cut."""
        return self._server.break_watches() if self._server is not None else 0
