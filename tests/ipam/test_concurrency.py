"""Many processes at once, and processes killed mid-write: never a duplicate, never drift."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import random
import signal
from collections import Counter
from pathlib import Path

import pytest

from datastore.keys import parse_affinity_key
from ipam.affinity import Affinity
from ipam.allocator import Allocator
from ipam.check import default_sources, load_snapshot, run_check

from . import workers
from .conftest import make_node, make_pool

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mp():
    """forkserver: children fork from a clean server process that never opened a gRPC channel."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.ipam.workers"])
    return ctx


@contextlib.contextmanager
def running(procs):
    """Start processes; on the way out make sure every one of them is gone."""
    for p in procs:
        p.start()
    try:
        yield procs
    finally:
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
            p.join(30)


def check(client):
    sources = default_sources()
    return run_check(load_snapshot(client, sources), sources)


def assert_blocks_and_handles_agree(result) -> None:
    tortie = result.report["tortie"]
    assert tortie["handleRepairs"] == [], "handle counts drifted from the blocks"
    assert result.report["leakedHandles"] == []
    assert tortie["invalidBlocks"] == []


def test_eight_processes_allocate_2000_addresses(mp, etcd_endpoint, etcd_client, store,
                                                 tmp_path, ctl):
    make_pool(store, "p", "10.70.0.0/21")  # 32 blocks of 64 = 2048 addresses
    nodes = [f"node{i}" for i in range(8)]
    for n in [*nodes, "hog"]:
        make_node(store, n)
    hog = Allocator(etcd_client)
    for i in range(3):  # three blocks held by a bystander: the eight must borrow
        hog.assign_ip(f"10.70.{i}.1", "hog", f"hog.{i}")
    barrier = mp.Barrier(len(nodes))
    outs = [tmp_path / f"{n}.json" for n in nodes]
    procs = [mp.Process(target=workers.allocate_many,
                        args=(etcd_endpoint, n, 250, str(o), barrier))
             for n, o in zip(nodes, outs, strict=True)]
    with running(procs):
        for p in procs:
            p.join(240)
    assert [p.exitcode for p in procs] == [0] * 8
    results = [json.loads(o.read_text()) for o in outs]
    assert [r.get("error") for r in results] == [None] * 8
    got = [(h, ip) for r in results for h, ips in r["got"] for ip in ips]
    assert len(got) == 2000
    assert len({ip for _, ip in got}) == 2000, "an address was handed out twice"
    for handle, ip in got:
        assert hog.get_assignment(ip).handle_id == handle
    result = check(etcd_client)
    assert_blocks_and_handles_agree(result)
    assert result.problems == 0
    borrowed = [ip for ip, recs in result.report["allocations"].items()
                if recs[0].get("borrowed")]
    assert borrowed, "with three blocks held by the bystander, some node had to borrow"
    r = ctl("ipam", "check")
    assert r.out.endswith("Check complete; found 0 problems.\n")


def test_claim_race_gives_each_claimer_one_block(mp, etcd_endpoint, etcd_client, store,
                                                 tmp_path):
    make_pool(store, "p", "10.71.0.0/24")  # exactly 4 blocks
    nodes = [f"racer{i}" for i in range(4)]
    barrier = mp.Barrier(4)
    outs = [tmp_path / f"{n}.json" for n in nodes]
    procs = [mp.Process(target=workers.claim_once, args=(etcd_endpoint, n, 64, str(o), barrier))
             for n, o in zip(nodes, outs, strict=True)]
    with running(procs):
        for p in procs:
            p.join(60)
    results = [json.loads(o.read_text()) for o in outs]
    assert [r.get("error") for r in results] == [None] * 4
    blocks_by_node = {}
    for node, r in zip(nodes, results, strict=True):
        cidrs = {ip.rsplit(".", 1)[0] + f".{int(ip.rsplit('.', 1)[1]) // 64 * 64}/26"
                 for ip in r["ips"]}
        assert len(r["ips"]) == 64 and len(cidrs) == 1, f"{node} did not get one whole block"
        blocks_by_node[node] = cidrs.pop()
    assert len(set(blocks_by_node.values())) == 4
    kvs, _ = etcd_client.list("/calico/ipam/v2/host/")
    per_block = Counter()
    for kv in kvs:
        _, node, cidr = parse_affinity_key(kv.key)
        assert Affinity.from_json(kv.value).state == "confirmed", kv.key
        assert blocks_by_node[node] == cidr
        per_block[cidr] += 1
    assert set(per_block.values()) == {1}, "a block with two affinities"


def test_sigkill_at_random_moments_never_hands_out_an_address_twice(
        mp, etcd_endpoint, etcd_client, store, tmp_path, ctl):
    make_pool(store, "p", "10.72.0.0/16")
    rng = random.Random(1234)
    journals = []
    for k in range(50):
        journal = tmp_path / f"j{k}.log"
        journals.append(journal)
        ready = mp.Event()
        proc = mp.Process(target=workers.allocate_until_killed,
                          args=(etcd_endpoint, f"crash{k % 5}", str(journal), ready, k))
        with running([proc]):
            assert ready.wait(30), "child did not start"
            proc.join(rng.uniform(0.0, 0.3))
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(30)
        assert proc.exitcode == -signal.SIGKILL

    assigned: dict[str, list[str]] = {}
    released: set[str] = set()
    for journal in journals:
        for line in Path(journal).read_text().splitlines():
            kind, handle, *ips = line.split()
            if kind == "A":
                assigned[handle] = ips
            else:
                released.add(handle)
    assert assigned, "the children never got to allocate"
    held = {h: ips for h, ips in assigned.items() if h not in released}
    all_ips = [ip for ips in held.values() for ip in ips]
    assert len(all_ips) == len(set(all_ips)), "an address was handed out twice"
    probe = Allocator(etcd_client)
    for handle, ips in held.items():
        for ip in ips:
            assert probe.get_assignment(ip).handle_id == handle

    # The only damage a kill can do: leaks (addresses whose node is gone) and claims
    # interrupted between their two steps (pending affinities). Never drift.
    result = check(etcd_client)
    assert_blocks_and_handles_agree(result)
    tortie = result.report["tortie"]
    assert all(r["state"] == "pending" and r["action"] == "delete"
               for r in tortie["affinityRepairs"]), tortie["affinityRepairs"]
    assert result.problems == len(result.leaked) + len(tortie["affinityRepairs"])
    assert len(result.leaked) >= len(all_ips)

    report = tmp_path / "report.json"
    r = ctl("ipam", "check", "-o", str(report))
    assert r.rc == 0 and f"found {result.problems} problems" in r.out
    r = ctl("ipam", "release", "--from-report", str(report))
    assert r.rc == 0, r.err
    assert f"Released {len(result.leaked)} IPs successfully" in r.out
    assert ctl("ipam", "check").out.endswith("Check complete; found 0 problems.\n")
