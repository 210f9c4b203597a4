"""IPAM allocation throughput and latency, next to the raw CAS rate of the same etcd.

Run:  .venv/bin/python bench/ipam.py [--allocations 1000] [--processes 8]

Starts its own etcd (lab.etcd.start_single in a temporary directory) and stops
it by PID. Measures, in the same run against the same etcd with the same
client class:

  floor   EtcdClient.update (one compare-and-swap transaction) in a loop on one
          key, with a value the size of a half-full /26 block document;
  alloc   Allocator.auto_assign(node, new handle, 1): one address per call,
          each for a new handle, as the CNI plugin asks for pods.

Both single-process and with N processes at once (each its own node and
client; the floor processes each CAS their own key). Prints alloc/s, p50 and
p99 latency, the floor and the ratio, and etcd round trips per allocation.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datastore.config import load_env  # noqa: E402
from datastore.etcd import EtcdClient  # noqa: E402
from datastore.resources import parse_document  # noqa: E402
from datastore.store import ResourceStore  # noqa: E402
from ipam.allocator import Allocator  # noqa: E402
from ipam.block import Block  # noqa: E402
from lab.etcd import start_single  # noqa: E402

POOL_CIDR = "10.0.0.0/12"  # room for every run; 20 blocks per node cap = 1280 per node


def block_sized_value() -> bytes:
    """A half-full /26 block with CNI-like attributes: what an allocation writes."""
    block = Block.new("10.0.0.0/26", "bench", "2024-05-01T10:00:00Z")
    for i in range(32):
        block, _ = block.auto_assign(1, f"k8s-pod-network.{i:064x}", {
            "namespace": "default", "node": "bench", "pod": f"web-{i}",
            "timestamp": "2024-05-01 10:00:01.123456 +0000 UTC"})
    return block.to_json()


def client_for(endpoint: str) -> EtcdClient:
    return EtcdClient(load_env({"ETCD_ENDPOINTS": endpoint}))


class CountingClient:
    """Counts etcd round trips made through an EtcdClient."""

    def __init__(self, client: EtcdClient) -> None:
        self.calls = 0
        original = client._call

        def counted(fn: Any, *, idempotent: bool) -> object:
            self.calls += 1
            return original(fn, idempotent=idempotent)

        client._call = counted  # type: ignore[method-assign]


def run_floor(endpoint: str, key: str, count: int, barrier: Any = None,
              value: bytes | None = None) -> list[float]:
    client = client_for(endpoint)
    value = block_sized_value() if value is None else value
    rev = client.put(key, value)
    for _ in range(20):  # warm up the channel
        rev = client.update(key, value, rev)
    if barrier is not None:
        barrier.wait()
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        rev = client.update(key, value, rev)
        latencies.append(time.perf_counter() - start)
    client.close()
    return latencies


def run_alloc(endpoint: str, node: str, count: int, barrier: Any = None) -> tuple[list[float], int]:
    client = client_for(endpoint)
    counter = CountingClient(client)
    allocator = Allocator(client)
    allocator.auto_assign(node, f"{node}.warmup", 1)  # claim a block, fill the caches
    if barrier is not None:
        barrier.wait()
    counter.calls = 0
    latencies = []
    for i in range(count):
        start = time.perf_counter()
        allocator.auto_assign(node, f"k8s-pod-network.{node}-{i}", 1, {
            "namespace": "default", "pod": f"web-{i}",
            "timestamp": "2024-05-01 10:00:01.123456 +0000 UTC"})
        latencies.append(time.perf_counter() - start)
    calls = counter.calls
    client.close()
    return latencies, calls


def _floor_child(endpoint: str, key: str, count: int, barrier: Any, queue: Any) -> None:
    queue.put(("floor", run_floor(endpoint, key, count, barrier), 0))


def _alloc_child(endpoint: str, node: str, count: int, barrier: Any, queue: Any) -> None:
    latencies, calls = run_alloc(endpoint, node, count, barrier)
    queue.put(("alloc", latencies, calls))


def in_parallel(target: Any, endpoint: str, names: list[str], count: int) -> tuple[list[float], float, int]:
    """Run target in one process per name, all starting at once; (latencies, seconds, calls)."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(names) + 1)
    queue = ctx.Queue()
    procs = [ctx.Process(target=target, args=(endpoint, n, count, barrier, queue)) for n in names]
    for p in procs:
        p.start()
    try:
        barrier.wait(timeout=120)
        start = time.perf_counter()
        results = [queue.get(timeout=600) for _ in procs]
        elapsed = time.perf_counter() - start
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join()
    latencies = [x for _, lat, _ in results for x in lat]
    return latencies, elapsed, sum(calls for _, _, calls in results)


def pct(latencies: list[float], q: float) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def line(label: str, alloc_lat: list[float], alloc_s: float, floor_lat: list[float],
         floor_s: float, calls: int) -> str:
    alloc_rate = len(alloc_lat) / alloc_s
    floor_rate = len(floor_lat) / floor_s
    return (f"{label}: {alloc_rate:.0f} alloc/s p50 {pct(alloc_lat, 0.5):.1f} ms "
            f"p99 {pct(alloc_lat, 0.99):.1f} ms | floor {floor_rate:.0f} CAS txn/s "
            f"p50 {pct(floor_lat, 0.5):.1f} ms p99 {pct(floor_lat, 0.99):.1f} ms | "
            f"ratio {alloc_rate / floor_rate:.2f} | {calls / len(alloc_lat):.2f} etcd calls/alloc")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allocations", type=int, default=1000,
                        help="allocations per process (default 1000, at most 1200)")
    parser.add_argument("--processes", type=int, default=8)
    args = parser.parse_args(argv)
    count = min(args.allocations, 1200)  # one node may hold 20 blocks (1280 addresses)

    tmp = Path(tempfile.mkdtemp(prefix="tortie-bench-ipam-"))
    member = start_single(tmp)
    try:
        endpoint = member.client_url
        with client_for(endpoint) as client:
            ResourceStore(client).create(parse_document({
                "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                "metadata": {"name": "bench"}, "spec": {"cidr": POOL_CIDR}}))
        print(f"etcd {member.client_url} (data in {tmp}); value size "
              f"{len(block_sized_value())} bytes; {count} allocations per process")

        # Single process: rate = operations / time spent in them (warm-up excluded).
        floor_lat = run_floor(endpoint, "/bench/floor", count)
        alloc_lat, calls = run_alloc(endpoint, "bench-0", count)
        print(line("single-process", alloc_lat, sum(alloc_lat), floor_lat, sum(floor_lat), calls))
        small = run_floor(endpoint, "/bench/floor-small", count, value=b"x" * 64)
        print(f"  (floor with a 64-byte value: {len(small) / sum(small):.0f} CAS txn/s; "
              f"ratio {sum(small) / sum(alloc_lat):.2f})")

        names = [f"/bench/floor-{i}" for i in range(args.processes)]
        floor_lat, floor_s, _ = in_parallel(_floor_child, endpoint, names, count)
        nodes = [f"bench-{i + 1}" for i in range(args.processes)]
        alloc_lat, alloc_s, calls = in_parallel(_alloc_child, endpoint, nodes, count)
        print(line(f"{args.processes} processes", alloc_lat, alloc_s, floor_lat, floor_s, calls))
        print(f"  (latency percentiles over all processes' operations; mean alloc "
              f"{statistics.mean(alloc_lat) * 1000:.1f} ms)")
    finally:
        member.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
