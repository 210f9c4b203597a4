"""Route programming: tortie's RouteTable beside `ip -batch` of the same routes (the floor).

Run: .venv/bin/python bench/routes.py [--n 10000] [--rounds 3] [--samples 300]
Needs root. Works in network namespaces of its own (`tdb<hex>`), removed at the end.

Measures, with N routes (workload /32s on cali veths, blackholes, CrossSubnet-style
`via <node> dev eth0 onlink` blocks of 500 nodes; the same lines for both):
  * cold start: a fresh RouteTable programming N routes into an empty namespace
    (dump + diff + netlink route requests), beside `ip -n NS -batch -` of the same
    lines into another fresh namespace; rate and ratio (goal: >= 50% of the floor);
  * single-route add latency with N present: set_desired(N + 1) + apply, p50/p99
    (and the apply alone);
  * restart: a fresh RouteTable against the programmed kernel with the same desired
    set: time and kernel writes (goal: < 1 s, 0 writes); and a periodic resync();
  * dump: reading the programmed N-route table back, pyroute2's `IPRoute.route("dump")`
    (the attributes RouteTable compares pulled out of its messages) beside the decoder
    RouteTable uses (NetlinkRouteKernel.dump, agent/dataplane/route_netlink.py and netlink.py); the ratio is
    why that decoder exists, re-measured whenever pyroute2 changes.
The rtnl lock is shared by every namespace on the machine, so other work makes
single runs noisy: each cold-start figure is the median of --rounds runs.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.dataplane.common import ip_argv  # noqa: E402
from agent.dataplane.route_kernel import render_replace  # noqa: E402
from agent.dataplane.route_netlink import NetlinkRouteKernel  # noqa: E402
from agent.dataplane.routes import RouteTable  # noqa: E402
from agent.types import PROTO_BOOT, Route, RouteClass  # noqa: E402

VETHS = 20
NODES = 500


def ip(ns: str, *args: str) -> None:
    subprocess.run(ip_argv(ns, *args), check=True, capture_output=True)


@contextmanager
def namespaces(count: int, veths: int = VETHS) -> Iterator[list[str]]:
    """`count` prepared namespaces with `veths` cali veths (`cali<11 hex digits>`, peer
    `pod<i>`), all created before and removed after the timings (bench/policy.py too):
    removing a namespace makes the kernel clean it up in the background under the
    locks route writes need, which would land in the next measurement."""
    names: list[str] = []
    try:
        for _ in range(count):
            name = "tdb" + uuid.uuid4().hex[:8]
            subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
            names.append(name)
            lines = ["link set lo up",
                     "link add eth0 type veth peer name eth0peer",
                     "addr add 192.168.0.1/16 dev eth0",
                     "link set eth0 up", "link set eth0peer up"]
            for i in range(veths):
                lines += [f"link add cali{i:011x} type veth peer name pod{i}",
                          f"link set cali{i:011x} up", f"link set pod{i} up"]
            subprocess.run(ip_argv(name, "-batch", "-"), input="\n".join(lines) + "\n",
                           text=True, check=True, capture_output=True)
        time.sleep(0.5)
        yield names
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def make_routes(n: int) -> list[Route]:
    out: list[Route] = []
    workloads = n // 20
    blackholes = n // 100
    for i in range(workloads):
        out.append(Route(f"10.{64 + i // 65536}.{(i // 256) % 256}.{i % 256}/32",
                         RouteClass.LOCAL_WORKLOAD, dev=f"cali{i % VETHS:011x}", scope="link",
                         proto=PROTO_BOOT))
    for i in range(blackholes):
        out.append(Route(f"10.96.{i // 4}.{(i % 4) * 64}/26", RouteClass.IPAM_BLOCK_BLACKHOLE,
                         type="blackhole"))
    i = 0
    while len(out) < n:
        # Blocks of NODES remote nodes: the kernel keeps one fib_info per distinct
        # next hop, and a next hop per route (10,000 distinct gateways) would cost
        # the kernel ~20x more per route than a cluster's few hundred nodes do.
        node = i % NODES
        out.append(Route(f"10.{128 + i // 1024}.{(i // 4) % 256}.{(i % 4) * 64}/26",
                         RouteClass.VXLAN_SAME_SUBNET, dev="eth0",
                         gateway=f"192.168.{1 + node // 250}.{1 + node % 250}", onlink=True))
        i += 1
    return out


def floor_batch(ns: str, lines: list[str]) -> float:
    text = "\n".join(lines) + "\n"
    t0 = time.perf_counter()
    subprocess.run(ip_argv(ns, "-batch", "-"), input=text, text=True, check=True,
                   capture_output=True)
    return time.perf_counter() - t0


def count_routes(ns: str) -> int:
    out = subprocess.run(ip_argv(ns, "route", "show"), capture_output=True, text=True, check=True)
    return len(out.stdout.splitlines())


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=300)
    a = ap.parse_args()
    n = a.n
    routes = make_routes(n)
    lines = [render_replace(r) for r in routes]
    print(f"routes: {n} ({n // 20} workload /32 on {VETHS} cali veths, {n // 100} blackholes, "
          f"the rest `<block>/26 via <node> dev eth0 proto 80 onlink` to {NODES} nodes)")

    floor_t: list[float] = []
    ours_t: list[float] = []
    with namespaces(2 * a.rounds + 1) as spaces:
        # Alternate floor and ours so that background load hits both alike.
        for k in range(a.rounds):
            ns_floor, ns_ours = spaces[2 * k], spaces[2 * k + 1]
            floor_t.append(floor_batch(ns_floor, lines))
            assert count_routes(ns_floor) >= n
            t0 = time.perf_counter()
            rt = RouteTable(ns_ours)
            rt.set_desired(routes)
            res = rt.apply()
            ours_t.append(time.perf_counter() - t0)
            assert res.ok and res.writes == n, res
            rt.close()
        fm, om = statistics.median(floor_t), statistics.median(ours_t)
        fb, ob = min(floor_t), min(ours_t)
        print(f"\ncold start, {a.rounds} rounds (floor {' '.join(f'{x:.3f}' for x in floor_t)} s; "
              f"ours {' '.join(f'{x:.3f}' for x in ours_t)} s)")
        print(f"  ip -batch (floor)  median {fm:6.3f} s {n / fm:8.0f}/s   best {fb:6.3f} s "
              f"{n / fb:8.0f}/s")
        print(f"  RouteTable         median {om:6.3f} s {n / om:8.0f}/s   best {ob:6.3f} s "
              f"{n / ob:8.0f}/s")
        print(f"  ratio              median {fm / om:6.1%}             best {fb / ob:6.1%}"
              "   (goal >= 50% of the floor's rate)")
        dump_lane(spaces[1], a.rounds)
        latency_and_restart(spaces[-1], routes, a.samples)


def pyroute2_dump(ns: str) -> tuple[float, int]:
    """pyroute2 reading the main table, reduced to the fields RouteTable compares."""
    import pyroute2

    ipr = pyroute2.IPRoute(netns=ns, flags=0)  # flags=0: never create a missing namespace
    try:
        t0 = time.perf_counter()
        out = []
        for m in ipr.route("dump", family=socket.AF_INET):
            if m.get("table") != 254:
                continue
            metrics = m.get("metrics")
            out.append((m.get("dst"), m["dst_len"], m["proto"], m["scope"], m["type"],
                        m["flags"], m.get("oif"), m.get("gateway"), m.get("priority"),
                        metrics.get("mtu") if metrics else None))
        return time.perf_counter() - t0, len(out)
    finally:
        ipr.close()


def decoder_dump(ns: str) -> tuple[float, int]:
    """RouteTable's own read of the main table (routes and link names, decoded)."""
    kernel = NetlinkRouteKernel(ns)
    try:
        kernel.dump("lo")  # opens the socket in the namespace, outside the timing
        t0 = time.perf_counter()
        routes = kernel.dump()
        return time.perf_counter() - t0, len(routes or ())
    finally:
        kernel.close()


def dump_lane(ns: str, rounds: int) -> None:
    import pyroute2

    theirs_t: list[float] = []
    ours_t: list[float] = []
    for _ in range(rounds):
        theirs, theirs_n = pyroute2_dump(ns)
        ours, ours_n = decoder_dump(ns)
        assert theirs_n == ours_n, (theirs_n, ours_n)
        theirs_t.append(theirs)
        ours_t.append(ours)
    tm, om = statistics.median(theirs_t), statistics.median(ours_t)
    tb, ob = min(theirs_t), min(ours_t)
    print(f"\ndump of the programmed table ({ours_n} main-table routes), {rounds} rounds "
          f"(pyroute2 {' '.join(f'{x:.3f}' for x in theirs_t)} s; "
          f"ours {' '.join(f'{x:.3f}' for x in ours_t)} s)")
    print(f"  pyroute2 {pyroute2.__version__:<9} median {tm:6.3f} s {ours_n / tm:8.0f}/s   "
          f"best {tb:6.3f} s {ours_n / tb:8.0f}/s")
    print(f"  RouteTable decoder median {om:6.3f} s {ours_n / om:8.0f}/s   "
          f"best {ob:6.3f} s {ours_n / ob:8.0f}/s")
    print(f"  ratio              median {tm / om:5.1f}x              best {tb / ob:5.1f}x"
          "   (pyroute2's time over ours)")


def latency_and_restart(ns: str, routes: list[Route], samples: int) -> None:
    n = len(routes)
    rt = RouteTable(ns)
    rt.set_desired(routes)
    assert rt.apply().writes == n
    total: list[float] = []
    apply_only: list[float] = []
    desired = list(routes)
    for i in range(samples):
        desired.append(Route(f"10.200.{i // 256}.{i % 256}/32", RouteClass.LOCAL_WORKLOAD,
                             dev=f"cali{i % VETHS:011x}", scope="link", proto=PROTO_BOOT))
        t0 = time.perf_counter()
        rt.set_desired(desired)
        t1 = time.perf_counter()
        res = rt.apply()
        t2 = time.perf_counter()
        assert res.writes == 1, res
        total.append(t2 - t0)
        apply_only.append(t2 - t1)
    print(f"\nsingle-route add with {n} present ({samples} samples)")
    print(f"  set_desired + apply  p50 {pct(total, 50) * 1e3:6.2f} ms  "
          f"p99 {pct(total, 99) * 1e3:6.2f} ms")
    print(f"  apply alone          p50 {pct(apply_only, 50) * 1e3:6.2f} ms  "
          f"p99 {pct(apply_only, 99) * 1e3:6.2f} ms")
    rt.close()

    present = len(desired)
    t0 = time.perf_counter()
    fresh = RouteTable(ns)
    fresh.set_desired(desired)
    res = fresh.apply()
    restart = time.perf_counter() - t0
    print(f"\nrestart against {present} programmed routes")
    print(f"  new RouteTable + set_desired + apply  {restart:.3f} s  "
          f"kernel writes {res.writes}, deletes {res.deletes} (goal < 1 s, 0 writes)")
    t0 = time.perf_counter()
    fresh.resync()
    res = fresh.apply()
    periodic = time.perf_counter() - t0
    print(f"  periodic resync() + apply             {periodic:.3f} s  "
          f"kernel writes {res.writes}, deletes {res.deletes}")
    fresh.close()


if __name__ == "__main__":
    main()
