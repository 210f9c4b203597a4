"""100 pods on one node: from the first CNI ADD until all are reachable from another node.

Run:  .venv/bin/python bench/pods.py [--pods 100] [--parallel 4] [--mode shim|server|local|all]
                                    [--stages]

Brings up a lab (2 nodes on 2 subnets, a VXLAN pool, the agent on each node),
puts a prober pod on node2, creates the pods' network namespaces (the
runtime's sandboxes: not timed), then runs tortie's ADD for every pod on node1,
`--parallel` at a time as a runtime does, executing the installed plugin in
node1's namespace exactly as a runtime would (nsenter, the network
configuration on stdin). As soon as an ADD returns, the prober starts pinging
the new address (`ping -c1 -i 0.1`, until the first reply).

Modes: `shim` (the default, what production runs) executes the installed
static shim, which hands the whole call to node1's warm CNI server
(cni/server.py), where the plugin runs in-process; `server` executes the
Python launcher, which sends only its datastore calls to that server;
`local` the Python launcher talking to etcd itself. `all` runs the three in
the same lab, one after the other.

Prints, per mode: the time from the first ADD until all pods answered (goal
for the shim: under 2 s for 100 pods), the ADD latency p50/p99/max (goal for
the shim: at most 3x the floor's p50), the DEL latency, and
side by side the floor measured in the same run: the same veths, addresses
and routes made by one `ip -batch` per pod (no Python, no IPAM, no etcd),
with the ratio. Afterwards checks that DEL left nothing: no cali veth, no
route, no endpoint, no allocation (`ctl ipam check`).

`--stages` installs node1's plugin at log_level debug and prints, per mode, the
median of each stage of `cmd_add` as the plugin logged it (cni/plugin.py): where
the ADD's time goes inside the plugin. Debug logging costs time of its own, so
compare ratios to the floor from runs without it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab import Lab  # noqa: E402
from lab import pods as lab_pods  # noqa: E402

BIN = Path(sys.executable).parent
POOL = """apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: bench}
spec: {cidr: 10.247.0.0/16, blockSize: 26, vxlanMode: Always}
"""


def ctl(lab: Lab, *args: str, stdin: str | None = None) -> str:
    return lab.exec("node1", [str(BIN / "ctl"), *args], input=stdin,
                    env={"ETCD_ENDPOINTS": ",".join(lab.etcd_endpoints)}).stdout


def agent_env(lab: Lab, node: str) -> dict[str, str]:
    return {"ETCD_ENDPOINTS": ",".join(lab.etcd_endpoints), "NODENAME": node,
            "IP": "autodetect", "CALICO_NETWORKING_BACKEND": "vxlan", "NO_DEFAULT_POOLS": "true",
            "FELIX_HEALTHENABLED": "true",
            "CALICO_NODENAME_FILE": str(lab.state_dir / f"{node}.nodename"),
            "CALICO_MTU_FILE": str(lab.state_dir / "cni" / node / "mtu")}


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(0.2)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Run:
    """One mode's measurement: ADDs, pings as soon as each ADD returns, then DELs."""

    def __init__(self, lab: Lab, prober: lab_pods.PodInfo, conf: dict, n: int, parallel: int,
                 tag: str, plugin: Path) -> None:
        self.lab, self.prober, self.conf, self.n, self.parallel = lab, prober, conf, n, parallel
        self.plugin_path = plugin
        self.node_ns = lab.netns_of("node1")
        self.pods = [f"{lab.name}-pod-{tag}{i:03d}" for i in range(n)]
        self.cids = [uuid.uuid4().hex for _ in range(n)]
        self.add_latency: list[float] = []
        self.del_latency: list[float] = []
        self.reached: dict[int, float] = {}
        self.lock = threading.Lock()
        self.pingers: list[threading.Thread] = []

    def plugin(self, command: str, i: int) -> tuple[float, dict]:
        env = {"PATH": os.environ["PATH"], "CNI_COMMAND": command,
               "CNI_CONTAINERID": self.cids[i], "CNI_NETNS": f"/run/netns/{self.pods[i]}",
               "CNI_IFNAME": "eth0", "CNI_PATH": lab_pods.cni_path(self.lab, "node1"),
               "CNI_ARGS": f"K8S_POD_NAMESPACE=bench;K8S_POD_NAME=p{i:03d}"}
        t0 = time.monotonic()
        res = subprocess.run(["nsenter", f"--net=/run/netns/{self.node_ns}",
                              str(self.plugin_path)],
                             input=json.dumps(self.conf).encode(), env=env, capture_output=True)
        took = time.monotonic() - t0
        if res.returncode != 0:
            raise SystemExit(f"bench: {command} {i} failed: {res.stdout.decode()}")
        out = res.stdout.decode().strip()
        return took, (json.loads(out) if out else {})

    def ping_until_reply(self, i: int, ip: str, start: float) -> None:
        # nsenter, not `ip netns exec` (which also unshares and remounts /sys): the prober
        # competes with the ADDs for the CPUs, so it should cost as little as it can.
        res = subprocess.run(["nsenter", f"--net=/run/netns/{self.prober.netns}", "ping",
                              "-c1", "-i", "0.1", "-w", "30", "-q", ip], capture_output=True)
        if res.returncode == 0:
            with self.lock:
                self.reached[i] = time.monotonic() - start

    def add_all(self) -> float:
        lab_nsbatch = [f"netns add {p}" for p in self.pods]
        subprocess.run(["ip", "-batch", "-"], input="\n".join(lab_nsbatch) + "\n", text=True,
                       check=True)
        start = time.monotonic()

        def add(i: int) -> None:
            took, result = self.plugin("ADD", i)
            ip = result["ips"][0]["address"].split("/")[0]
            with self.lock:
                self.add_latency.append(took)
            t = threading.Thread(target=self.ping_until_reply, args=(i, ip, start))
            t.start()
            with self.lock:
                self.pingers.append(t)

        with ThreadPoolExecutor(self.parallel) as pool:
            list(pool.map(add, range(self.n)))
        adds_done = time.monotonic() - start
        for t in self.pingers:
            t.join()
        missing = self.n - len(self.reached)
        if missing:
            raise SystemExit(f"bench: {missing} pods never answered the prober")
        return adds_done

    def delete_all(self) -> None:
        def delete(i: int) -> None:
            took, _ = self.plugin("DEL", i)
            with self.lock:
                self.del_latency.append(took)

        with ThreadPoolExecutor(self.parallel) as pool:
            list(pool.map(delete, range(self.n)))
        subprocess.run(["ip", "-force", "-batch", "-"], text=True, check=False,
                       input="".join(f"netns del {p}\n" for p in self.pods))


def floor(lab: Lab, n: int, parallel: int) -> list[float]:
    """The kernel work alone: one `ip -batch` per pod making the same veth, addresses, routes."""
    node_ns = lab.netns_of("node1")
    pods = [f"{lab.name}-pod-floor{i:03d}" for i in range(n)]
    subprocess.run(["ip", "-batch", "-"], input="".join(f"netns add {p}\n" for p in pods),
                   text=True, check=True)
    latencies: list[float] = []

    def one(i: int) -> None:
        ip = f"10.250.{i // 250}.{i % 250 + 1}"
        host = f"calf{i:011d}"
        t0 = time.monotonic()
        subprocess.run(["ip", "-n", node_ns, "-batch", "-"], check=True, text=True, input=(
            f"link add {host} mtu 1450 address ee:ee:ee:ee:ee:ee type veth peer name eth0 "
            f"mtu 1450 netns {pods[i]}\nlink set {host} up\n"
            f"route add {ip}/32 dev {host} scope link\n"))
        subprocess.run(["ip", "-n", pods[i], "-batch", "-"], check=True, text=True, input=(
            f"link set eth0 up\naddr add {ip}/32 dev eth0\n"
            "route add 169.254.1.1 dev eth0 scope link\n"
            "route add default via 169.254.1.1 dev eth0\n"))
        latencies.append(time.monotonic() - t0)

    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, range(n)))
    subprocess.run(["ip", "-force", "-batch", "-"], text=True, check=False,
                   input="".join(f"netns del {p}\n" for p in pods))
    return latencies


def python_launchers(lab: Lab) -> Path:
    """The Python launchers (modes server and local), beside the shim node1 runs."""
    directory = lab.state_dir / "cni" / "bench-python"
    subprocess.run([sys.executable, "-m", "cni.install", "--python", sys.executable,
                    "--bin-dir", str(directory / "bin"), "--conf-dir", str(directory),
                    "--no-portmap"], check=True, capture_output=True)
    return directory / "bin"


def cpu_seconds(lab: Lab) -> dict[str, float]:
    """CPU time so far of each lab process (agents, CNI server, etcd) and of our children."""
    import resource

    out: dict[str, float] = {}
    for proc in lab.status()["processes"]:
        try:
            fields = Path(f"/proc/{proc['pid']}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime, stime, and the same for waited-for children (ip netns exec's etcd/agent)
        ticks = sum(int(f) for f in fields[11:15])
        out[proc["name"]] = out.get(proc["name"], 0.0) + ticks / os.sysconf("SC_CLK_TCK")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["plugins+pings"] = usage.ru_utime + usage.ru_stime
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["bench"] = usage.ru_utime + usage.ru_stime
    return out


def stage_medians(log_text: str) -> dict[str, float]:
    """The median of each stage over the plugin's `ADD stages (ms):` lines (cni/plugin.py)."""
    from cni.plugin import STAGES_LOG

    samples: dict[str, list[float]] = {}
    for line in log_text.splitlines():
        _, found, rest = line.partition(STAGES_LOG)
        if not found:
            continue
        words = rest.split()
        for name, value in zip(words[::2], words[1::2], strict=True):
            samples.setdefault(name, []).append(float(value))
    return {name: statistics.median(values) for name, values in samples.items()}


def leftovers(lab: Lab) -> list[str]:
    problems = []
    links = lab.exec("node1", ["ip", "-o", "link"]).stdout
    veths = [ln.split(":")[1].strip() for ln in links.splitlines()
             if ln.split(":")[1].strip().startswith("cali")]
    if veths:
        problems.append(f"{len(veths)} cali veths")
    routes = [r for r in lab.exec("node1", ["ip", "route"]).stdout.splitlines()
              if " dev cali" in r]
    if routes:
        problems.append(f"{len(routes)} workload routes")
    weps = [line for line in ctl(lab, "get", "workloadendpoints", "-n", "bench").splitlines()
            if " node1 " in line]
    if weps:
        problems.append(f"{len(weps)} endpoints")
    check = ctl(lab, "ipam", "check")
    if "found 0 problems" not in check:
        problems.append("ipam check: " + check.strip().splitlines()[-1])
    return problems


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pods", type=int, default=100)
    p.add_argument("--parallel", type=int, default=4,
                   help="ADDs at a time (a runtime starts pods in parallel; 2 CPUs here)")
    p.add_argument("--mode", choices=["shim", "server", "local", "all"], default="shim")
    p.add_argument("--stages", action="store_true",
                   help="log at debug on node1 and print the median of each ADD stage")
    opts = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench: needs root (it builds a lab of network namespaces)")
    lab = Lab("b" + uuid.uuid4().hex[:8], nodes=2, subnets=2).up()
    try:
        ctl(lab, "apply", "-f", "-", stdin=POOL)
        for n in lab.nodes:
            lab.start_process(n.name, [str(BIN / "tortie-agent")], role="agent",
                              name=f"agent-{n.name}", env=agent_env(lab, n.name))
            lab_pods.install_cni(lab, n.name, portmap=False,
                                 log_level="debug" if opts.stages else "info")
        cni_log = lab_pods.node_dir(lab, "node1") / "cni.log"
        for n in lab.nodes:
            wait(lambda n=n: lab.exec(n.name, [str(BIN / "tortie-agent"), "--ready"],
                                      check=False, env=agent_env(lab, n.name)).returncode == 0,
                 60, f"the agent on {n.name}")
        prober = lab_pods.add_pod(lab, "node2", "bench", "prober")
        conflist = json.loads(lab_pods.conf_path(lab, "node1").read_text())
        base = {**conflist["plugins"][0], "cniVersion": conflist["cniVersion"],
                "name": conflist["name"]}
        t0 = time.monotonic()
        floor_lat = floor(lab, opts.pods, opts.parallel)
        floor_total = time.monotonic() - t0
        modes = ["shim", "server", "local"] if opts.mode == "all" else [opts.mode]
        launchers = python_launchers(lab)
        print(f"bench/pods.py: {opts.pods} pods on node1, {opts.parallel} ADDs at a time, "
              f"reachability from a pod on node2 (VXLAN); {os.cpu_count()} CPUs")
        print(f"  floor (ip -batch per pod, no IPAM/etcd/Python): all {opts.pods} wired in "
              f"{floor_total:.2f} s; p50 {statistics.median(floor_lat) * 1000:.1f} ms, p99 "
              f"{pct(floor_lat, 99) * 1000:.1f} ms")
        for mode in modes:
            # node1's CNI server runs throughout (install_cni started it for the shim).
            conf = dict(base)
            if mode == "local":
                conf["cni_server_socket"] = ""
            plugin = (lab_pods.bin_dir(lab, "node1") if mode == "shim" else launchers) / "tortie"
            run = Run(lab, prober, conf, opts.pods, opts.parallel, mode[0], plugin)
            cpu_before = cpu_seconds(lab)
            log_start = cni_log.stat().st_size if cni_log.exists() else 0
            adds_done = run.add_all()
            if opts.stages:
                with open(cni_log, encoding="utf-8", errors="replace") as f:
                    f.seek(log_start)
                    stages = stage_medians(f.read())
            total = max(run.reached.values())
            cpu = {k: v - cpu_before.get(k, 0.0) for k, v in cpu_seconds(lab).items()}
            run.delete_all()
            add, dele = run.add_latency, run.del_latency
            print(f"  {mode:<6} all {opts.pods} reachable {total:6.2f} s after the first ADD "
                  f"(goal{' for the shim' if mode != 'shim' else ''} < 2 s; ADDs done at "
                  f"{adds_done:.2f} s)")
            print(f"         ADD p50 {statistics.median(add) * 1000:6.1f} ms  p99 "
                  f"{pct(add, 99) * 1000:6.1f} ms  max {max(add) * 1000:6.1f} ms  "
                  f"= {statistics.median(add) / statistics.median(floor_lat):.1f}x the floor's "
                  f"p50")
            print(f"         DEL p50 {statistics.median(dele) * 1000:6.1f} ms  p99 "
                  f"{pct(dele, 99) * 1000:6.1f} ms")
            print("         CPU seconds during the ADDs: " + ", ".join(
                f"{k} {v:.1f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])
                if v >= 0.05))
            if opts.stages:
                print("         ADD stages in the plugin (median ms): " + (", ".join(
                    f"{k} {v:.1f}" for k, v in stages.items()) or "none logged"))
            problems = leftovers(lab)
            print(f"         after DEL: {'nothing left' if not problems else problems}")
        lab_pods.delete_pod(lab, prober)
    finally:
        lab.down()


if __name__ == "__main__":
    main()
