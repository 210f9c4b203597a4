"""Child-process bodies for the IPAM concurrency and crash tests (run via forkserver)."""

from __future__ import annotations

import json
import os
import random
from typing import Any

from datastore.config import load_env
from datastore.etcd import EtcdClient
from ipam.allocator import Allocator


def _allocator(endpoint: str) -> Allocator:
    return Allocator(EtcdClient(load_env({"ETCD_ENDPOINTS": endpoint})))


def _write(path: str, doc: Any) -> None:
    with open(path, "w") as f:
        json.dump(doc, f)


def allocate_many(endpoint: str, node: str, count: int, out_path: str, barrier: Any) -> None:
    """One address per handle, `count` times, starting together with the others."""
    allocator = _allocator(endpoint)
    allocator.affine_blocks(node)  # connect before the start line
    barrier.wait()
    got: list[tuple[str, list[str]]] = []
    try:
        for i in range(count):
            handle = f"{node}.pod-{i}"
            got.append((handle, allocator.auto_assign(
                node, handle, 1, {"pod": f"pod-{i}", "namespace": "test"})))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        _write(out_path, {"error": f"{type(exc).__name__}: {exc}", "got": got})
        return
    _write(out_path, {"got": got})


def claim_once(endpoint: str, node: str, count: int, out_path: str, barrier: Any) -> None:
    allocator = _allocator(endpoint)
    allocator.affine_blocks(node)
    barrier.wait()
    try:
        _write(out_path, {"ips": allocator.auto_assign(node, f"{node}.h", count)})
    except Exception as exc:  # noqa: BLE001
        _write(out_path, {"error": f"{type(exc).__name__}: {exc}"})


def allocate_until_killed(endpoint: str, node: str, out_path: str, ready: Any, seed: int) -> None:
    """Assign and release forever, journaling each step; the parent SIGKILLs us.

    "A <handle> <ip>..." is written after an assignment returned; "R <handle>" before a
    release starts. One os.write per line, so a kill never leaves half a line.
    """
    rng = random.Random(seed)
    allocator = _allocator(endpoint)
    allocator.affine_blocks(node)
    fd = os.open(out_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    ready.set()
    held: list[str] = []
    step = 0
    while True:
        step += 1
        if held and rng.random() < 0.25:
            handle = held.pop(rng.randrange(len(held)))
            os.write(fd, f"R {handle}\n".encode())
            allocator.release_by_handle(handle)
            continue
        handle = f"{node}.{os.getpid()}.{step}"
        ips = allocator.auto_assign(node, handle, rng.randint(1, 3))
        os.write(fd, ("A " + handle + " " + " ".join(ips) + "\n").encode())
        held.append(handle)
