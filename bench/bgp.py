"""BGP: 10,000 routes from a generator peer into a node's kernel, tortie beside FRR and BIRD;
and a block claim reaching the other nodes of a 4-node mesh.

Run: .venv/bin/python bench/bgp.py [--routes 10000] [--receivers frr,bird,tortie]
                                    [--rounds 1] [--mesh-claims 5] [--no-mesh]
Needs root, etcd, BIRD 2 and FRR. Everything runs in a lab (lab.Lab) of its own
(`bgpb<hex>-*` namespaces), torn down at the end, also on Ctrl-C.

Receive (peer side: tortie's goal is to be no slower than FRR)::

    <lab>-router   generator BIRD, AS 65000: N static /26 blackholes from 172.16.0.0/12,
        |          one eBGP protocol per receiver, all `disabled` at start
        |-- node1  FRR (zebra + bgpd), AS 64512        -> kernel routes "proto bgp"
        |-- node2  BIRD (kernel protocol), AS 64512     -> kernel routes "proto bird"
        |-- node3  tortie-agent (backend bird: ExaBGP in-process) -> kernel routes "proto 80"
        |-- node4  tortie-agent + tortie-bgp (the chart's sidecar layout: BGP in a
                   process of its own, learned routes over the control socket)
                   both with a global BGPPeer {peerIP: generator, asNumber: 65000}

Every receiver only receives: FRR and BIRD announce nothing back to the
generator (`receive_only`), as a tortie node without blocks announces nothing.
(Re-announcing 10,000 routes slowed FRR by ~0.2-0.3 s; it also hides a
generator quirk: BIRD 2.0.12 sometimes sends its last UPDATE and End-of-RIB
only with its next KEEPALIVE, up to hold/3 later, to a peer that sends it
nothing; a silent receiver sees that, whichever it is. The generator's
keepalive time is 1 s, which bounds that stall to 1 s.)

All receivers are started and idle first; then, one receiver at a time, the
generator's protocol for it is enabled (`birdc enable`) and the receiver's
kernel is watched until all N routes are there. Before each receiver the bench
waits (up to 5 s) until the CPUs are 85% idle: the previous receiver's
leftover work (zebra's, BIRD's) otherwise lands on whoever is measured next;
without this wait the third receiver measured ~0.05 s slower than the fourth
running the same code. Per receiver: when the session came up (the
generator's "since" for the protocol, to the microsecond), the first route,
all N routes; "receive" is session up -> all N, which leaves out
the time to connect, which depends on who dials first (BIRD waits >= 1 s
before it connects; FRR and BIRD receivers retry their own connects).
"up->99%" is session up -> 99% of N seen in the notifications: the generator's
stall above lands at random on any receiver's last routes, so "all" can flip a
comparison from round to round and 99% cannot. Every round's pair is printed.
Ratios are to FRR.

Watching costs the receiver next to nothing: the kernel's route notifications
(RTMGRP_IPV4_ROUTE) say when routes of the receiver's protocol arrive, and a
netlink dump filtered in the kernel (table main + that protocol) that only
counts messages confirms the number once the notifications add up to N. A
completion time is when the batch of notifications that completed it was read.
`--poll S` polls that dump every S seconds instead (at 10,000 routes one dump
takes ~11 ms of Python, so 5 ms polling takes ~2/3 of a CPU from the receiver).

Mesh (goal: under 1 s): 4 nodes on one subnet, tortie-agent (backend bird,
node-to-node mesh) on each, a no-encap /26 pool. A helper process in node k's
namespace claims a block for node k (ipam Allocator.auto_assign, one address);
the time runs from just before that call until the block's route (`proto 80`)
is in the kernel of each other node. Reported per claim: the slowest of the
other nodes; then p50 and max over the claims.

The tortie parts depend on the agent's BGP side (bgp/daemon.py); if it does not
work, that row says why and the FRR and BIRD figures stand on their own.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import os
import select
import socket
import statistics
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.dataplane.netns import open_socket  # noqa: E402
from lab import Lab, LabNode  # noqa: E402
from lab.netns import pids_in  # noqa: E402
from lab.routers import (  # noqa: E402
    Bird,
    bird_peer,
    bird_proto_name,
    frr_tor,
    start_bird,
    start_frr,
)

BIN = Path(sys.executable).parent
GEN_AS = 65000
NODE_AS = 64512  # Calico's default, which tortie nodes use too
ROUTE_BASE = ipaddress.ip_network("172.16.0.0/12")  # outside every lab underlay and pool
POOL = "10.244.0.0/16"
BLOCK_SIZE = 26
HOLD = 9

# Kernel route protocols (rtm_protocol) each receiver writes with.
RTPROT_BIRD = 12
RTPROT_BGP = 186  # zebra's "bgp"
RTPROT_TORTIE = 80


# ---- watching a kernel's routes cheaply ----------------------------------------

_NLMSG = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
NETLINK_ROUTE, SOL_NETLINK, NETLINK_GET_STRICT_CHK = 0, 270, 12
RTM_NEWROUTE, RTM_GETROUTE, NLMSG_DONE, NLMSG_ERROR = 24, 26, 3, 2
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
RTMGRP_IPV4_ROUTE = 0x40
SO_RCVBUFFORCE = 33
RT_TABLE_MAIN = 254


def _netlink(netns: str, groups: int = 0) -> socket.socket:
    s = open_socket(netns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    try:  # root may exceed rmem_max: 10,000 route events must never overflow the queue
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
    s.bind((0, groups))
    return s


class RouteCounter:
    """`counter()`: the number of main-table IPv4 routes of one protocol in a namespace.

    The kernel filters the dump (NETLINK_GET_STRICT_CHK, Linux >= 4.20), so
    only matching routes cross to user space, where they are counted, not
    decoded: ~11 ms for 10,000 routes here, under 1 ms for none.
    """

    def __init__(self, netns: str, proto: int) -> None:
        self.proto = proto
        self.sock = _netlink(netns)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
        self.seq = 0

    def __call__(self) -> int:
        self.seq += 1
        body = _RTMSG.pack(socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, self.proto, 0, 0, 0)
        self.sock.send(_NLMSG.pack(_NLMSG.size + len(body), RTM_GETROUTE,
                                   NLM_F_REQUEST | NLM_F_DUMP, self.seq, 0) + body)
        count = 0
        while True:
            data = self.sock.recv(1 << 20)
            off = 0
            while off + _NLMSG.size <= len(data):
                ln, typ, _flags, seq, _pid = _NLMSG.unpack_from(data, off)
                if ln < _NLMSG.size:
                    break
                if seq == self.seq:
                    if typ == NLMSG_DONE:
                        return count
                    if typ == NLMSG_ERROR:
                        (code,) = struct.unpack_from("=i", data, off + _NLMSG.size)
                        raise OSError(-code, f"route dump: {os.strerror(-code)}")
                    if typ == RTM_NEWROUTE:
                        count += 1
                off += (ln + 3) & ~3

    def close(self) -> None:
        self.sock.close()


class RouteEvents:
    """Route notifications (RTMGRP_IPV4_ROUTE) of one protocol in a namespace, as they happen.

    Why: polling a 10,000-route dump every few ms would take most of a CPU
    from the receiver being timed (on a 2-core machine). Events cost one
    header read per route, once. They only say *when* to count: a route
    replaced is a second RTM_NEWROUTE, so the count itself comes from a dump.

    The kernel queues each notification on its own, so reading costs a
    syscall per route whatever the buffer. Reading them one wake-up at a time,
    with a fresh 4 MiB buffer per recv, cost this reader 240-330 ms of CPU per
    10,000 routes (measured alone against `ip -batch`): more than a receiver's
    own work, taken from the same two CPUs. So it naps NAP after each wake-up,
    lets the notifications pile up, and drains them into one buffer: ~25 ms.
    A time it reports is when the batch that holds the event was read, at
    most ~NAP after the event, for every receiver alike.
    """

    NAP = 0.001

    def __init__(self, netns: str, proto: int) -> None:
        self.proto = proto
        self.sock = _netlink(netns, RTMGRP_IPV4_ROUTE)
        self.sock.setblocking(False)
        self.buf = bytearray(1 << 16)  # a route notification is ~100 bytes

    def wait(self, timeout: float) -> tuple[int, float | None]:
        """Block up to `timeout` for notifications; (new routes of our protocol, time seen)."""
        if not select.select([self.sock], [], [], max(timeout, 0.001))[0]:
            return 0, None
        time.sleep(self.NAP)
        n = 0
        buf, view = self.buf, memoryview(self.buf)
        while True:
            try:
                size = self.sock.recv_into(buf)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:  # events lost: make the caller count now
                    return 1 << 30, time.time()
                raise
            off = 0
            while off + _NLMSG.size + _RTMSG.size <= size:
                ln, typ = _NLMSG.unpack_from(view, off)[:2]
                if ln < _NLMSG.size:
                    break
                if typ == RTM_NEWROUTE:
                    table, proto = _RTMSG.unpack_from(view, off + _NLMSG.size)[4:6]
                    if proto == self.proto and table == RT_TABLE_MAIN:
                        n += 1
                off += (ln + 3) & ~3
        view.release()
        return n, time.time()

    def close(self) -> None:
        self.sock.close()


# ---- the measurement ----------------------------------------------------------


@dataclass
class Timing:
    session_up: float | None  # seconds after the start, from the generator's "since"
    first: float | None       # first route in the kernel
    all: float | None         # all N routes in the kernel
    error: str | None = None
    # 99% of the N seen arriving (route notifications; None when polling): apart
    # from the generator's tail (docs/bgp.md, Measured: BIRD holds its last
    # UPDATE until its next keepalive to a silent peer), which hits every
    # receiver at random.
    most: float | None = None
    watch_cpu: float | None = None  # CPU the watching itself took (this thread)
    cpu: dict[str, float] = field(default_factory=dict)  # receiver's processes, over the run

    @property
    def receive_most(self) -> float | None:
        if self.most is None or self.session_up is None:
            return None
        return self.most - self.session_up

    @property
    def receive(self) -> float | None:
        if self.all is None or self.session_up is None:
            return None
        return self.all - self.session_up


def measure(receiver_start: Callable[[], None], count_routes: Callable[[], int], n: int, *,
            events: RouteEvents | None = None,
            session_up: Callable[[], float | None] = lambda: None,
            timeout: float = 120.0, poll: float = 0.005) -> Timing:
    """Start a receiver's session and time until `count_routes()` has grown by `n`.

    `receiver_start()` makes the routes start flowing (here: the generator
    enables its protocol for that receiver); `count_routes()` counts them in
    the receiver's kernel; `session_up()` returns the wall-clock time the
    session came up, read afterwards (None if unknown). With `events`, the
    kernel's route notifications pace the counting (a count only once they
    add up to `n`, and at least every 0.5 s); without, it polls every `poll`.
    """
    base = count_routes()
    cpu0 = time.thread_time()
    t0 = time.time()
    receiver_start()
    first = most = None
    seen = 0
    last_count = t0
    while True:
        if events is not None:
            got, at = events.wait(min(0.5, max(0.0, t0 + timeout - time.time())))
            if got and first is None:
                first = at - t0
            seen += got
            if most is None and seen >= 0.99 * n:
                most = at - t0 if at is not None else time.time() - t0
            due = seen >= n or time.time() - last_count >= 0.5
            if not due:
                continue
            now = at if at is not None else time.time()
        else:
            time.sleep(poll)
            now = time.time()
        c = count_routes() - base
        last_count = time.time()
        if events is None and c > 0 and first is None:
            first = now - t0
        if c >= n:
            up = session_up()
            return Timing(None if up is None else up - t0, first, now - t0, most=most,
                          watch_cpu=time.thread_time() - cpu0)
        if time.time() - t0 > timeout:
            up = session_up()
            return Timing(None if up is None else up - t0, first, None,
                          f"{c} of {n} routes after {timeout:g}s")


def generator_routes(n: int) -> list[str]:
    if n * 64 > ROUTE_BASE.num_addresses:
        raise SystemExit(f"--routes {n}: at most {ROUTE_BASE.num_addresses // 64} fit in {ROUTE_BASE}")
    base = int(ROUTE_BASE.network_address)
    return [f"{ipaddress.IPv4Address(base + 64 * i)}/26" for i in range(n)]


def since(gen: Bird, proto: str) -> float | None:
    """When `proto` last changed state (the generator's config prints epoch seconds)."""
    p = gen.protocols().get(proto)
    if not p or p["state"] != "up":
        return None
    try:
        return float(p["since"])
    except ValueError:
        return None


# ---- receivers ---------------------------------------------------------------


@dataclass
class Receiver:
    name: str
    node: LabNode
    proto: int
    error: str | None = None  # set when it could not be started


def start_frr_receiver(lab: Lab, node: LabNode, gen_ip: str) -> Receiver:
    start_frr(lab, frr_tor(node.ip, NODE_AS, [(gen_ip, GEN_AS)], hold_time=HOLD,
                           hostname=node.name, receive_only=True), name="rx-frr", netns=node)
    return Receiver("FRR", node, RTPROT_BGP)


def start_bird_receiver(lab: Lab, node: LabNode, gen_ip: str) -> Receiver:
    start_bird(lab, bird_peer(node.ip, NODE_AS, [(gen_ip, GEN_AS, node.ip)], hold_time=HOLD,
                              install_learned=True, receive_only=True),
               name="rx-bird", netns=node)
    return Receiver("BIRD", node, RTPROT_BIRD)


def ctl(lab: Lab, args: list[str], stdin: str | None = None) -> str:
    return lab.exec("node1", [str(BIN / "ctl"), *args], input=stdin,
                    env={"ETCD_ENDPOINTS": ",".join(lab.etcd_endpoints)}).stdout


def agent_env(lab: Lab, node: str) -> dict[str, str]:
    """As tests/e2e/test_agent_vxlan.py::agent_env, with the BGP backend."""
    return {
        "ETCD_ENDPOINTS": ",".join(lab.etcd_endpoints), "NODENAME": node, "IP": "autodetect",
        "CALICO_NETWORKING_BACKEND": "bird", "FELIX_HEALTHENABLED": "true",
        "NO_DEFAULT_POOLS": "true",
        "CALICO_NODENAME_FILE": str(lab.state_dir / f"{node}.nodename"),
        "CALICO_MTU_FILE": str(lab.state_dir / "cni" / node / "mtu"),
        "TORTIE_RUN_DIR": str(lab.state_dir / "run"),
    }


def pool_yaml(encap: str = "Never") -> str:
    return f"""apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {{name: pods}}
spec:
  cidr: {POOL}
  blockSize: {BLOCK_SIZE}
  ipipMode: Never
  vxlanMode: {encap}
"""


def start_agents(lab: Lab, nodes: list[LabNode], timeout: float = 60.0, *,
                 sidecar: bool = False) -> None:
    """tortie-agent on each node: BGP in-process, or (`sidecar`) in a tortie-bgp beside it."""
    # e.g. a profiler command line, put before tortie-agent and tortie-bgp
    wrap = os.environ.get("BENCH_AGENT_WRAP", "").split()
    procs = {}
    for node in nodes:
        env = agent_env(lab, node.name) | ({"TORTIE_BGP_SIDECAR": "true"} if sidecar else {})
        procs[node.name] = lab.start_process(node.name, [*wrap, str(BIN / "tortie-agent")],
                                             role="agent", name=f"agent-{node.name}", env=env)
        if sidecar:
            lab.start_process(node.name, [*wrap, str(BIN / "tortie-bgp")], role="bgp",
                              name=f"bgp-{node.name}", env=env)
    for node in nodes:
        deadline = time.monotonic() + timeout
        while True:
            res = lab.exec(node.name, [str(BIN / "tortie-agent"), "--ready"], check=False,
                           env=agent_env(lab, node.name))
            if res.returncode == 0:
                break
            exited = procs[node.name].poll()
            if exited is not None or time.monotonic() > deadline:
                tail = (lab.state_dir / f"agent-{node.name}.log").read_text(errors="replace")
                why = f"exited with {exited}" if exited is not None else f"not ready after {timeout:g}s"
                raise RuntimeError(f"tortie-agent on {node.name} {why}: "
                                   + " | ".join(tail.strip().splitlines()[-6:]))
            time.sleep(0.3)


def start_tortie_receiver(lab: Lab, node: LabNode, gen_ip: str, *,
                          sidecar: bool = False) -> Receiver:
    ctl(lab, ["apply", "-f", "-"], stdin=pool_yaml())
    ctl(lab, ["apply", "-f", "-"], stdin=f"""apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {{name: generator}}
spec: {{peerIP: {gen_ip}, asNumber: {GEN_AS}}}
""")
    start_agents(lab, [node], sidecar=sidecar)
    return Receiver("tortie-sidecar" if sidecar else "tortie", node, RTPROT_TORTIE)


STARTERS = {"frr": start_frr_receiver, "bird": start_bird_receiver,
            "tortie": start_tortie_receiver,
            "tortie-sidecar": lambda *a: start_tortie_receiver(*a, sidecar=True)}


def _cpu_busy_idle() -> tuple[int, int]:
    """Busy and idle jiffies of all CPUs so far (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, idle


def settle(idle: float = 0.85, window: float = 0.2, limit: float = 5.0) -> float:
    """Wait until the CPUs are at least `idle` idle over `window` (at most `limit` s).

    Why: a receiver leaves work behind once its routes are in (zebra's and BIRD's
    own bookkeeping of 10,000 routes, the generator's), and on a 2-CPU machine
    whoever is measured next would pay for it. Returns the last window's idle share.
    """
    deadline = time.monotonic() + limit
    share = 0.0
    while time.monotonic() < deadline:
        b0, i0 = _cpu_busy_idle()
        time.sleep(window)
        b1, i1 = _cpu_busy_idle()
        share = (i1 - i0) / max(1, (b1 - b0) + (i1 - i0))
        if share >= idle:
            break
    return share


def netns_cpu(netns: str) -> dict[str, float]:
    """CPU seconds used so far by each process in `netns`, by name (all threads:
    /proc/<pid>/task/*/schedstat, in ns, so a 0.2 s burst is not lost in 10 ms ticks)."""
    out: dict[str, float] = {}
    for pid in pids_in([netns]).get(netns, []):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            used = sum(int((t / "schedstat").read_text().split()[0])
                       for t in Path(f"/proc/{pid}/task").iterdir())
        except (OSError, ValueError):
            continue  # exited meanwhile
        name = _process_name([a.decode(errors="replace") for a in argv if a])
        out[name] = out.get(name, 0.0) + used / 1e9
    return out


def _process_name(argv: list[str]) -> str:
    """'exabgp', 'tortie-agent', 'zebra', ...: the program, or the script a Python runs."""
    for arg in argv[:3]:
        base = os.path.basename(arg)
        if base and not base.startswith(("python", "-")):
            return base.removesuffix(".py")
    return os.path.basename(argv[0]) if argv else "?"


def keep_logs(lab: Lab, dest: Path | None) -> None:
    """Copy the lab's logs (routers, agents, etcd) to `dest`/<lab name>/ before teardown."""
    if dest is None:
        return
    out = dest / lab.name
    out.mkdir(parents=True, exist_ok=True)
    for f in lab.state_dir.rglob("*.log"):
        target = out / f.relative_to(lab.state_dir).as_posix().replace("/", "_")
        target.write_bytes(f.read_bytes())
    print(f"  logs kept in {out}")


def receive_round(n: int, kinds: list[str], poll: float, timeout: float,
                  logs: Path | None = None) -> dict[str, Timing]:
    lab = Lab("bgpb" + uuid.uuid4().hex[:6], nodes=len(kinds), subnets=1)
    results: dict[str, Timing] = {}
    try:
        lab.up()
        gw = lab.subnets[0].gateway
        nodes = dict(zip(kinds, lab.nodes, strict=True))
        t = time.monotonic()
        gen = start_bird(lab, bird_peer(
            gw, GEN_AS, [(node.ip, NODE_AS, gw) for node in nodes.values()],
            generator_routes(n), hold_time=HOLD, disabled=True, keepalive=1),
            name="generator")
        assert gen.route_count() >= n
        print(f"  lab {lab.name}: generator up with {n} routes in {time.monotonic() - t:.2f}s",
              flush=True)
        receivers: dict[str, Receiver] = {}
        for kind, node in nodes.items():
            try:
                receivers[kind] = STARTERS[kind](lab, node, gw)
            except Exception as e:  # report it in the table; the others still run
                results[kind] = Timing(None, None, None, f"did not start: {_one_line(e)}")
        time.sleep(1.0)  # let start-up work (first connects, syncs) settle before timing
        for kind, rx in receivers.items():
            share = settle()  # every receiver starts on idle CPUs, whatever ran before it
            if share < 0.85:
                print(f"  (CPUs only {share:.0%} idle before {rx.name} after 5 s)", flush=True)
            proto = bird_proto_name(rx.node.ip)
            counter = RouteCounter(rx.node.netns, rx.proto)
            events = RouteEvents(rx.node.netns, rx.proto) if not poll else None
            cpu_before = netns_cpu(rx.node.netns)
            try:
                results[kind] = measure(lambda proto=proto: gen.enable(proto), counter, n,
                                        events=events,
                                        session_up=lambda proto=proto: since(gen, proto),
                                        timeout=timeout, poll=poll)
            finally:
                counter.close()
                if events is not None:
                    events.close()
            r = results[kind]
            r.cpu = {name: used - cpu_before.get(name, 0.0)
                     for name, used in netns_cpu(rx.node.netns).items()}
            print(f"  {rx.name:<14} " + (f"all {n} in {r.all:.3f}s; CPU ms: " + ", ".join(
                f"{name} {used * 1e3:.0f}" for name, used in sorted(
                    r.cpu.items(), key=lambda kv: -kv[1]) if used >= 0.001)
                + f", watching {r.watch_cpu * 1e3:.0f}"
                if r.all is not None else f"FAILED: {r.error}"), flush=True)
            if kind.startswith("tortie") and r.all is None:
                tail = (lab.state_dir / f"agent-{rx.node.name}.log").read_text(errors="replace")
                print("    agent log tail:\n      " + "\n      ".join(tail.splitlines()[-10:]))
        for rx in receivers.values():
            sample = lab.exec(rx.node, ["ip", "route", "show", generator_routes(1)[0]]).stdout
            print(f"  {rx.name:<14} e.g. {sample.strip()}")
        keep_logs(lab, logs)
    finally:
        lab.down()
    return results


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]


# ---- mesh: block claim to routes on the other nodes ---------------------------

# Runs in the owner's namespace (etcd is only reachable from lab namespaces). Allocates
# one address at a time, untimed while they come from blocks the node already has, and
# reports the allocation that had to claim a new block: a pod's block being claimed.
CLAIM = r"""
import ipaddress, json, sys, time
from datastore.config import load_env
from datastore.etcd import EtcdClient
from ipam.allocator import Allocator
node, handle, block_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
alloc = Allocator(EtcdClient(load_env()))
before = set(alloc.affine_blocks(node))
for i in range(1 << (32 - block_size)):
    t0 = time.time()
    ip = alloc.auto_assign(node, f"{handle}.{i}", 1)[0]
    t1 = time.time()
    block = str(ipaddress.ip_network(f"{ip}/{block_size}", strict=False))
    if block not in before:
        print(json.dumps({"ip": ip, "block": block, "t0": t0, "t1": t1}))
        break
else:
    sys.exit(f"no new block claimed for {node} (affine blocks: {sorted(before)})")
"""


def mesh_round(claims: int, timeout: float, poll: float, logs: Path | None = None) -> list[dict]:
    lab = Lab("bgpb" + uuid.uuid4().hex[:6], nodes=4, subnets=1)
    out: list[dict] = []
    try:
        lab.up()
        ctl(lab, ["apply", "-f", "-"], stdin=pool_yaml())
        start_agents(lab, lab.nodes)
        counters = {n.name: RouteCounter(n.netns, RTPROT_TORTIE) for n in lab.nodes}
        repo = str(Path(__file__).resolve().parent.parent)
        # The first claim doubles as a warm-up: the mesh sessions must be up for it to spread.
        for i in range(claims + 1):
            owner = lab.nodes[i % len(lab.nodes)]
            others = [n for n in lab.nodes if n is not owner]
            before = {n.name: counters[n.name]() for n in others}
            res = lab.exec(owner, [sys.executable, "-c", CLAIM, owner.name, f"bench.{i}",
                                   str(BLOCK_SIZE)],
                           env={"ETCD_ENDPOINTS": ",".join(lab.etcd_endpoints),
                                "PYTHONPATH": repo})
            claim = json.loads(res.stdout.strip().splitlines()[-1])
            block = claim["block"]
            seen: dict[str, float] = {}
            limit = time.time() + (60.0 if i == 0 else min(timeout, 10.0))
            while len(seen) < len(others) and time.time() < limit:
                for n in others:
                    if n.name not in seen and counters[n.name]() > before[n.name]:
                        seen[n.name] = time.time()
                time.sleep(poll)
            for n in others:  # the new proto-80 route must be this block, via the owner
                if n.name in seen:
                    r = lab.exec(n, ["ip", "route", "show", block, "proto", "80"]).stdout
                    if owner.ip not in r:
                        seen.pop(n.name)
                        print(f"    {n.name}: unexpected route for {block}: {r.strip()!r}")
            rec = {"owner": owner.name, "block": block, "claim": claim["t1"] - claim["t0"],
                   "seen": {k: v - claim["t0"] for k, v in seen.items()},
                   "missing": [n.name for n in others if n.name not in seen]}
            if i == 0:
                if rec["missing"]:
                    raise RuntimeError(f"warm-up block {block} of {owner.name} never reached "
                                       f"{', '.join(rec['missing'])}")
                continue
            out.append(rec)
            reached = (f"on all others after {max(rec['seen'].values()):.3f}s"
                       if not rec["missing"] else f"MISSING on {', '.join(rec['missing'])}")
            print(f"  claim {i}: {block} on {owner.name}: allocation {rec['claim'] * 1e3:.0f} ms, "
                  f"{reached}", flush=True)
        for c in counters.values():
            c.close()
        keep_logs(lab, logs)
    finally:
        lab.down()
    return out


# ---- main ---------------------------------------------------------------------


def fmt(x: float | None) -> str:
    return f"{x:8.3f}" if x is not None else "       -"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--routes", type=int, default=10000)
    ap.add_argument("--receivers", default="frr,bird,tortie,tortie-sidecar",
                    help="comma-separated, measured in this order (default: frr,bird,tortie)")
    ap.add_argument("--rounds", type=int, default=1, help="fresh lab per round; medians shown")
    ap.add_argument("--poll", type=float, default=0.0,
                    help="count by polling every POLL seconds instead of following the "
                         "kernel's route notifications (0, the default)")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--mesh-claims", type=int, default=5)
    ap.add_argument("--no-mesh", action="store_true")
    ap.add_argument("--no-receive", action="store_true")
    ap.add_argument("--keep-logs", type=Path, metavar="DIR",
                    help="copy each lab's logs (routers, agents, etcd) to DIR/<lab>/")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/bgp.py needs root (lab namespaces)")
    kinds = [k.strip() for k in a.receivers.split(",") if k.strip()]
    for k in kinds:
        if k not in STARTERS:
            raise SystemExit(f"--receivers: unknown receiver {k!r} (choose from {', '.join(STARTERS)})")

    if not a.no_receive:
        how = f"polling every {a.poll * 1e3:g} ms" if a.poll else "route notifications"
        print(f"receive: {a.routes} /26 routes from a BIRD generator (AS {GEN_AS}, eBGP), "
              f"{a.rounds} round(s), watching by {how}; cpus {os.cpu_count()}")
        rounds = []
        for r in range(a.rounds):
            print(f"round {r + 1}:", flush=True)
            rounds.append(receive_round(a.routes, kinds, a.poll, a.timeout, a.keep_logs))
        report_receive(a.routes, kinds, rounds)

    if not a.no_mesh:
        print(f"\nmesh: block claim -> route on the 3 other nodes (4-node mesh, "
              f"{a.mesh_claims} claims)", flush=True)
        try:
            # Mesh tables hold a few routes: a dump costs well under 1 ms, so poll.
            recs = mesh_round(a.mesh_claims, a.timeout, a.poll or 0.005, a.keep_logs)
        except Exception as e:  # the receive figures above stand on their own
            print(f"  mesh NOT MEASURED: {_one_line(e)}")
        else:
            worst = [max(r["seen"].values()) for r in recs if not r["missing"]]
            missing = sum(1 for r in recs if r["missing"])
            if worst:
                print(f"  slowest other node per claim: p50 {statistics.median(worst):.3f}s  "
                      f"max {max(worst):.3f}s  (goal < 1 s: "
                      f"{'met' if max(worst) < 1.0 else 'NOT met'})"
                      + (f"; {missing} claim(s) never arrived everywhere" if missing else ""))
            else:
                print(f"  no claim reached all other nodes ({missing} missing)")


def report_receive(n: int, kinds: list[str], rounds: list[dict[str, Timing]]) -> None:
    def med(kind: str, attr: str) -> float | None:
        vals = [getattr(r[kind], attr) for r in rounds if kind in r]
        vals = [v for v in vals if v is not None]
        return statistics.median(vals) if vals else None

    def ratio(value: float | None, floor: float | None, width: int) -> str:
        return f"{value / floor:{width}.2f}" if value and floor else " " * (width - 1) + "-"

    frr_rx, frr_most = (med("frr", "receive"), med("frr", "receive_most")) if "frr" in kinds \
        else (None, None)
    print(f"\nreceive {n} routes: seconds after `birdc enable` (median of {len(rounds)} round(s))")
    print("receiver       session up    first   all in kernel   receive (up->all)   up->99%   "
          "ratio receive/FRR   ratio 99%/FRR")
    for kind in kinds:
        t_rx, t_most = med(kind, "receive"), med(kind, "receive_most")
        print(f"{kind:<14} {fmt(med(kind, 'session_up'))}   {fmt(med(kind, 'first'))}   "
              f"{fmt(med(kind, 'all'))}        {fmt(t_rx)}         {fmt(t_most)}   "
              f"{ratio(t_rx, frr_rx, 17)}   {ratio(t_most, frr_most, 13)}")
        errors = sorted({r[kind].error for r in rounds if kind in r and r[kind].error})
        for e in errors:
            print(f"          NOT MEASURED: {e}")
    print("each round, up->all (up->99%):")
    for kind in kinds:
        pairs = [(r[kind].receive, r[kind].receive_most) for r in rounds if kind in r]
        print(f"  {kind:<14} " + "  ".join(
            f"{fmt(a).strip()} ({fmt(m).strip()})" for a, m in pairs))
    for kind in ("tortie", "tortie-sidecar"):
        if kind in kinds and frr_rx and med(kind, "receive"):
            verdict = "met" if med(kind, "receive") <= frr_rx else "NOT met"
            print(f"goal ({kind} no slower than FRR, session up -> all in kernel): {verdict}")
            # The generator's tail (Timing.most) lands at random on either side: the
            # 99% figure is the comparison that tail cannot flip.
            t_most = med(kind, "receive_most")
            if frr_most and t_most:
                verdict = "met" if t_most <= frr_most else "NOT met"
                print(f"     ({kind} no slower than FRR, session up -> 99% in kernel): {verdict}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"bench/bgp.py: {e}") from None
