"""Per-endpoint "policy programmed" status files, which the CNI plugin's ADD waits for.

Owns the directory `<FELIX_ENDPOINTSTATUSPATHPREFIX>/endpoint-status/`
(default /var/run/calico/endpoint-status, Felix's): one file per local
workload endpoint whose routes and policy are in the kernel, as Felix's
status file reporter keeps it (felix/statusrep/status_file_reporter.go,
libcalico-go/lib/epstatusfile). The CNI plugin (cni/endpoint_status.py)
blocks ADD until its endpoint's file exists, so a pod starts only once its
policy is enforced.

Invariants:
  * A file appears only after an apply with its endpoint in the desired state
    succeeded: `expect()` records, when the calculation hands the dataplane a
    new desired state, which endpoints it programs (local endpoints whose
    interface is among the desired workload interfaces); `publish()`, called
    after a successful apply, makes the directory hold exactly those. A
    failed apply publishes nothing, so a file never runs ahead of the kernel.
    (A route skipped because its interface vanished does not fail an apply:
    that pod is being deleted, and its file goes with its endpoint.)
  * Name and content are Felix's: datastore.names.endpoint_status_filename,
    and the WorkloadEndpointStatus JSON as Go encodes it (no spaces, empty
    fields left out): {"ifaceName":..,"mac":..,"ipv4Nets":[..]}. tortie
    routes IPv4 only, so ipv6Nets is never written.
  * Atomic: each file is written to a temporary name in the directory and
    renamed into place, so a reader sees no file or the whole file.
  * Only differences are written. What is on disk is read on the first
    publish (a restart with nothing changed writes nothing), after a failure,
    and every RESCAN_INTERVAL (a file removed by someone else comes back);
    files that are not wanted (endpoints gone, strays) are removed.
  * Never raises: an I/O error is logged and the next publish (after the next
    successful apply, at the latest the next periodic resync) retries.
Not thread-safe: the agent's loop thread owns it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from agent.calc import ClusterState
from agent.calc.prefixes import dotted
from agent.calc.state import WorkloadInfo
from agent.types import DesiredDataplane
from datastore.names import ENDPOINT_STATUS_DIR, endpoint_status_filename

_log = logging.getLogger(__name__)

# How often the directory is re-read to repair files changed behind the agent's back
# (Felix re-reads its own every 10 s; once per route refresh is plenty for tortie).
RESCAN_INTERVAL = 90.0


def status_content(wep: WorkloadInfo) -> bytes:
    """Felix's WorkloadEndpointStatus of `wep`, encoded as Go's json.Marshal does."""
    doc: dict[str, object] = {"ifaceName": wep.interface}
    if wep.mac:
        # Felix holds the MAC parsed (net.HardwareAddr): lower case, ':' separated.
        doc["mac"] = wep.mac.lower().replace("-", ":")
    if wep.ipv4:
        doc["ipv4Nets"] = [f"{dotted(address)}/32" for address in wep.ipv4]
    return json.dumps(doc, separators=(",", ":")).encode()


class EndpointStatusPublisher:
    """Keeps the status directory equal to the endpoints of the last successful apply."""

    def __init__(self, path_prefix: str, *, clock: Callable[[], float] = time.monotonic,
                 rescan_interval: float = RESCAN_INTERVAL) -> None:
        self.directory = Path(path_prefix) / ENDPOINT_STATUS_DIR
        self._clock = clock
        self._rescan_interval = rescan_interval
        # File name -> content the next successful apply programs (None before the first).
        self._expected: dict[str, bytes] | None = None
        # What the directory holds, as far as we know (None: read it before writing).
        self._on_disk: dict[str, bytes] | None = None
        self._scanned_at = 0.0
        # (namespace, name) -> (the WorkloadInfo rendered, its file name, content): a
        # WorkloadInfo is replaced on every change, so an identical object needs no rendering.
        self._rendered: dict[tuple[str, str], tuple[WorkloadInfo, str | None, bytes]] = {}
        self.writes = 0  # files written or removed, for tests and the restart check

    def expect(self, state: ClusterState, nodename: str, desired: DesiredDataplane) -> None:
        """Record the endpoints `desired` programs (call when it goes to the dataplane)."""
        interfaces = desired.workload_interfaces
        expected: dict[str, bytes] = {}
        rendered: dict[tuple[str, str], tuple[WorkloadInfo, str | None, bytes]] = {}
        for ident, wep in state.workloads_by_node.get(nodename, {}).items():
            if wep.interface is None or wep.interface not in interfaces:
                continue
            cached = self._rendered.get(ident)
            if cached is None or cached[0] is not wep:
                cached = (wep, endpoint_status_filename(*ident), status_content(wep))
            rendered[ident] = cached
            if cached[1] is not None:
                expected[cached[1]] = cached[2]
        self._rendered = rendered
        self._expected = expected

    def publish(self) -> None:
        """Make the directory hold exactly the expected files (call after a successful apply)."""
        expected = self._expected
        if expected is None:
            return
        now = self._clock()
        if self._on_disk is None or now - self._scanned_at >= self._rescan_interval:
            self._on_disk = self._scan()
            self._scanned_at = now
            if self._on_disk is None:
                return
        on_disk = self._on_disk
        if on_disk == expected:
            return
        failed = False
        for name in [n for n in on_disk if n not in expected]:
            try:
                os.unlink(self.directory / name)
            except FileNotFoundError:
                pass
            except OSError as exc:
                _log.warning("cannot remove endpoint status file %s: %s", name, exc)
                failed = True
                continue
            del on_disk[name]
            self.writes += 1
            _log.debug("endpoint status: removed %r", name)
        for name, content in expected.items():
            if on_disk.get(name) == content:
                continue
            try:
                self._write(name, content)
            except OSError as exc:
                _log.warning("cannot write endpoint status file %s: %s", name, exc)
                failed = True
                continue
            on_disk[name] = content
            self.writes += 1
            _log.debug("endpoint status: wrote %r", name)
        if failed:
            self._on_disk = None  # read it again before the next attempt

    def _scan(self) -> dict[str, bytes] | None:
        """The directory's files and contents, creating it if missing; None on failure."""
        found: dict[str, bytes] = {}
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            try:
                self.directory.mkdir(mode=0o755, parents=True, exist_ok=True)
            except OSError as exc:
                _log.warning("cannot create the endpoint status directory %s: %s",
                             self.directory, exc)
                return None
            return found
        except OSError as exc:
            _log.warning("cannot read the endpoint status directory %s: %s", self.directory, exc)
            return None
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                continue
            try:
                with open(entry.path, "rb") as f:
                    found[entry.name] = f.read()
            except OSError:
                found[entry.name] = b""  # unreadable: rewritten if wanted, else removed
        return found

    def _write(self, name: str, content: bytes) -> None:
        path = self.directory / name
        tmp = self.directory / f".tmp-{os.getpid()}"
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), "wb") as f:
            f.write(content)
        try:
            os.replace(tmp, path)
        except OSError:
            os.unlink(tmp)
            raise
