"""ADD's wait for the agent's "policy programmed" file of the new endpoint.

Calico's plugin does this from v3.28 on (cni-plugin/pkg/k8s/k8s.go,
cni-plugin/pkg/wait/wait.go): with `policy_setup_timeout_seconds` > 0 in the
network configuration, ADD, once the veth is wired and the WorkloadEndpoint
written, blocks until the endpoint's status file exists in
`endpoint_status_dir` (default /var/run/calico/endpoint-status). The agent
writes that file after the apply that programmed the endpoint's routes and
policy succeeded (agent/endpoint_status.py); both sides name it with
datastore.names.endpoint_status_filename.

The file must also name this sandbox's MAC (the agent writes the endpoint's
`mac`), where Calico's plugin only checks that the file exists: a new sandbox
of a pod, or a pod created again under its old name before the agent saw it
go, has the same endpoint name and so the same file name as before; only the
content tells the new sandbox's file from the old one's.

On timeout ADD still succeeds, as Calico's does: it logs "Error waiting for
endpoint to become ready. Unblocking pod creation..." and the pod starts
without the guarantee (the agent programs it when it can).

The plugin runs on the host, so the directory is a host path. The wait polls
with one open() per round, 5 ms apart at first and doubling up to 100 ms, so it
adds at most ~100 ms after the file appears and costs nothing measurable.
Standard library and datastore.names only: the plugin's start-up stays light.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable

from datastore.names import endpoint_status_filename

_log = logging.getLogger(__name__)

FIRST_POLL = 0.005
MAX_POLL = 0.1


def wait_for(ready: Callable[[], bool], timeout: float, *,
             clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep) -> bool:
    """Whether `ready()` holds within `timeout` seconds (checked at once, then polled)."""
    deadline = clock() + timeout
    interval = FIRST_POLL
    while not ready():
        remaining = deadline - clock()
        if remaining <= 0:
            return False
        sleep(min(interval, remaining))
        interval = min(interval * 2, MAX_POLL)
    return True


def names_mac(path: str, mac: str) -> bool:
    """Whether the status file at `path` exists and names `mac` (one failed open if not)."""
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("mac") == mac


def wait_until_programmed(directory: str, namespace: str, name: str, mac: str, timeout: float,
                          *, clock: Callable[[], float] = time.monotonic,
                          sleep: Callable[[float], None] = time.sleep) -> bool:
    """Wait for WorkloadEndpoint `namespace/name`'s status file, naming the sandbox's `mac`
    (lower case, ':' separated); False (logged) on timeout."""
    filename = endpoint_status_filename(namespace, name)
    if filename is None:  # not a name the agent can key (never one this plugin writes)
        _log.warning("endpoint %s/%s has no status file name; not waiting for its policy",
                     namespace, name)
        return False
    path = os.path.join(directory, filename)
    started = clock()
    if wait_for(lambda: names_mac(path, mac), timeout, clock=clock, sleep=sleep):
        _log.info("endpoint %s/%s programmed by the agent after %.3f s", namespace, name,
                  clock() - started)
        return True
    _log.warning("timed out after %g s waiting for endpoint status file '%s'. Error waiting for "
                 "endpoint to become ready. Unblocking pod creation...", timeout, path)
    return False
