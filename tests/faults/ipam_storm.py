"""F7's storm client: one process allocating and releasing through the IPAM library.

Run inside a lab node's namespace (the lab's etcd is reachable only from there):
    python -m tests.faults.ipam_storm NODE WORKER COUNT HISTORY_FILE
with ETCD_ENDPOINTS naming every member. It makes COUNT allocations of one address,
each for a handle of its own (`f7-NODE-wWORKER-K`), and after every third one releases
the oldest handle it still holds, as a CNI DEL would. Every operation is appended to
HISTORY_FILE as one JSON line (tests/faults/ipam_history.Op) the moment it ends, so
the history survives this process being killed; a failure records the error and
whether its outcome is unknown (a write that timed out). Times are CLOCK_MONOTONIC,
shared by every process on the machine.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import IO, Any

from datastore.config import load_env
from datastore.etcd import EtcdClient
from ipam.allocator import Allocator

from .ipam_history import ALLOCATE, RELEASE

RELEASE_EVERY = 3
# What the etcd client says when a write's outcome cannot be known (datastore.etcd).
UNKNOWN_OUTCOME = "outcome is unknown"


def _attempt(out: IO[str], kind: str, handle: str, node: str, run: Callable[[], list[str]]
             ) -> bool:
    """Run one operation and append what the client was told to the history; True if it
    succeeded."""
    start = time.monotonic()
    op: dict[str, Any] = {"kind": kind, "handle": handle, "node": node, "start": start}
    try:
        op["ips"] = run()
        op["ok"] = True
    except Exception as exc:  # noqa: BLE001 - every failure is part of the history
        op.update(ok=False, error=f"{type(exc).__name__}: {exc}",
                  ambiguous=UNKNOWN_OUTCOME in str(exc))
    op["end"] = time.monotonic()
    out.write(json.dumps(op) + "\n")
    out.flush()
    return bool(op["ok"])


def main(node: str, worker: str, count: int, path: str) -> None:
    held: deque[str] = deque()
    with EtcdClient(load_env()) as client, open(path, "a") as out:
        allocator = Allocator(client)
        for k in range(count):
            handle = f"f7-{node}-w{worker}-{k}"
            if _attempt(out, ALLOCATE, handle, node,
                        partial(allocator.auto_assign, node, handle, 1, new_handle=True)):
                held.append(handle)
            if k % RELEASE_EVERY == RELEASE_EVERY - 1 and held:
                victim = held.popleft()
                _attempt(out, RELEASE, victim, node,
                         partial(allocator.release_by_handle, victim))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
