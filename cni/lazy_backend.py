"""cni.lazy_backend: the plugin's datastore backend, chosen and opened on first use.

Owns the choice between the node's CNI server (cni.server.RemoteBackend) and
talking to etcd in-process (cni.backend.LocalBackend), and the one place that
makes the in-process backend: the RemoteBackend falls back to the same
factory. Nothing is opened, and nothing heavy imported, for commands that
fail before they need the datastore.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

from .backend import Backend, LocalBackend
from .config import EtcdSettings

_log = logging.getLogger(__name__)

# The CNI server's warm backend, offered to the plugin it runs in-process (a shim call):
# given the call's datastore settings, the server's own backend when they name the
# datastore it serves, else None. A borrowed backend is never closed by the call.
SharedBackend = Callable[[EtcdSettings, Mapping[str, str]], "Backend | None"]


class LazyBackend:
    """Opens the backend on first use (none at all for commands that fail early).

    With a CNI server socket configured and present, the calls go there
    (cni.server.RemoteBackend); when it is absent or refuses the connection
    (the server is not running, or serves another datastore), they are made
    here. Falling back is safe: both paths run the same idempotent operations
    against the same etcd.
    """

    def __init__(self, etcd: EtcdSettings, environ: Mapping[str, str], socket_path: str = "",
                 shared: SharedBackend | None = None) -> None:
        self.etcd, self.environ, self.socket_path = etcd, environ, socket_path
        self.shared = shared
        self._backend: Backend | None = None
        self._borrowed = False

    def __call__(self) -> Backend:
        if self._backend is None:
            if self.shared is not None:
                # Inside the CNI server: its backend, or (another datastore) our own; never
                # the socket, which is this very server.
                self._backend = self.shared(self.etcd, self.environ)
                self._borrowed = self._backend is not None
            elif self.socket_path and os.path.exists(self.socket_path):
                # Here, not at the top, for start-up time: without a server socket
                # the plugin never loads the client (~2.5 ms of import).
                from .server import connect

                self._backend = connect(self.socket_path, self.etcd, self.environ,
                                        fallback=self._local)
            if self._backend is None:
                self._backend = self._local()
        return self._backend

    def _local(self) -> Backend:
        """The in-process backend; also what a RemoteBackend falls back to."""
        return LocalBackend(self.etcd, self.environ)

    def close(self) -> None:
        if self._borrowed:
            self._backend, self._borrowed = None, False
        if self._backend is not None:
            try:
                self._backend.close()
            except Exception:  # noqa: BLE001 - closing must never mask the result
                _log.debug("closing the backend failed", exc_info=True)
            self._backend = None
