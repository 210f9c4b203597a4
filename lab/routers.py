"""Real BGP routers (BIRD 2, FRR, GoBGP) inside lab namespaces: ToRs, route reflectors,
generators.

Owns: starting BIRD, FRR (zebra + bgpd) and GoBGP (gobgpd) as lab processes, talking to
them (birdc, vtysh, gobgp) and rendering the small configs the lab and the benchmarks use.

Invariants:

- Every router process is started through `Lab.start_process`, so it is in the
  lab's state file before it runs and `lab.down()` stops it (by PID and start
  time), even if the Python process that started it crashed.
- A router keeps everything in `<lab state dir>/<name>/`: config, control
  socket(s), pid files, log. Nothing touches the system's /etc/frr, /run/frr,
  /run/bird or /var/lib: every path a daemon would default to is overridden
  on its command line. The one exception is FRR's per-process crash-log
  directory `/var/tmp/frr/<daemon>.<pid>/`, a compiled-in path (FRR 8.4):
  the daemon removes it itself on a clean exit (SIGTERM, which is what
  `stop()` and `lab.down()` send); `Frr.stop()` also removes it after a kill.
- Daemons run in the foreground (no `-d`), so the recorded PID is the daemon's.
- `start_*` returns only once the router answers on its control socket, and
  raises LabError with the log tail if it exits or never answers.

FRR 8.4 flags that keep it private (see `_frr_argv`): `-f` config, `-i` pid
file, `-z` zebra API socket (same path for zebra and bgpd), `--vty_socket`
dir, `-P 0` (no TCP vty port), `--log stdout` (into the lab log), and
`-u root -g frrvty`: FRR insists that its user belongs to the vty group
`frrvty`; root is not a member, but the group given with `-g` counts, so
this passes without running as the `frr` user (which could not write the
root-owned state dir). `-N <pathspace>` is not needed: it only prefixes the
default paths, and every one of them is given explicitly.
vtysh gets `--vty_socket` and `--config_dir` (a private, empty vtysh.conf).

GoBGP 3.x (Debian's gobgpd): `-t toml -f <config>`, `--api-hosts 127.0.0.1:<port>` (its
gRPC API on the namespace's own loopback, which the `gobgp` CLI then reaches from inside
the same namespace) and `--pprof-disable` (no debug HTTP listener). Without a `zebra`
section it never touches the kernel's routes. Announced prefixes are added over the API
(`gobgp global rib add`): its config file has no static routes.

Config helpers are pure functions returning text; see their docstrings.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.errors import LabError

if TYPE_CHECKING:
    from lab.cluster import Lab, Target

log = logging.getLogger(__name__)

BIRD = "bird"
BIRDC = "birdc"
FRR_DIR = Path("/usr/lib/frr")
VTYSH = "vtysh"
GOBGPD = "gobgpd"
GOBGP = "gobgp"
GOBGP_API_PORT = 50051  # on the router namespace's loopback only
# FRR's compiled-in crash-log base (lib/zlog.c, TMPBASEDIR); see the module docstring.
FRR_TMPDIR = Path("/var/tmp/frr")
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"\n  last lines of {path}:\n    " + "\n    ".join(text) if text else ""


def _stop_popen(p: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> None:
    if p.poll() is not None:
        return
    p.terminate()
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def _router_dir(lab: Lab, name: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,40}", name):
        raise LabError(f"router name {name!r} is invalid: use letters, digits, '_', '.', '-'")
    d = lab.state_dir / name
    d.mkdir(parents=True, exist_ok=True)
    return d


# ---- BIRD ------------------------------------------------------------------


_SINCE = re.compile(
    r"^(\d{4}-\d\d-\d\d(?: \d\d:\d\d:\d\d(?:\.\d+)?)?|\d\d:\d\d:\d\d(?:\.\d+)?|\d+\.\d+)\s*(.*)$")


@dataclass
class _Daemon:
    """One router process in a lab namespace, its files in `dir`."""

    lab: Lab
    name: str
    netns: str
    dir: Path
    proc: subprocess.Popen | None = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM (SIGKILL after a while) and reap; idempotent."""
        if self.proc is not None:
            _stop_popen(self.proc)


@dataclass
class Bird(_Daemon):
    """A BIRD 2 daemon in a lab namespace, driven over its own control socket."""

    @property
    def config_path(self) -> Path:
        return self.dir / "bird.conf"

    @property
    def socket(self) -> Path:
        return self.dir / "bird.ctl"

    @property
    def log_path(self) -> Path:
        return self.dir / "bird.log"

    def birdc(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        """Run one birdc command; returns its output without the "BIRD x.y ready." banner.

        birdc reaches the daemon over the Unix socket, so it needs no namespace.
        """
        argv = [BIRDC, "-s", str(self.socket), *args]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        lines = res.stdout.splitlines()
        if lines and lines[0].startswith("BIRD ") and lines[0].endswith("ready."):
            lines = lines[1:]
        out = "\n".join(lines)
        if check and (res.returncode != 0 or out.startswith(("syntax error", "Unable to"))):
            raise LabError(f"{self.name}: birdc {' '.join(args)} failed "
                           f"(exit {res.returncode}): {(out + res.stderr).strip()[-500:]}")
        return out

    def protocols(self) -> dict[str, dict[str, str]]:
        """`show protocols` as {name: {proto, table, state, since, info}}."""
        out: dict[str, dict[str, str]] = {}
        for line in self.birdc("show", "protocols").splitlines():
            parts = line.split(None, 4)
            if len(parts) < 4 or parts[0] == "Name":
                continue
            since, info = "", parts[4] if len(parts) > 4 else ""
            m = _SINCE.match(info)
            if m:
                since, info = m.group(1), m.group(2)
            out[parts[0]] = {"proto": parts[1], "table": parts[2], "state": parts[3],
                             "since": since, "info": info.strip()}
        return out

    def routes(self, *filters: str) -> list[str]:
        """The prefixes of `show route [filters...]`, each once, in BIRD's order."""
        seen: dict[str, None] = {}
        for line in self.birdc("show", "route", *filters).splitlines():
            if line and not line[0].isspace() and not line.startswith("Table "):
                seen[line.split()[0]] = None
        return list(seen)

    def route_count(self) -> int:
        """Number of networks in the main IPv4 table (`show route count`), cheap for big tables."""
        out = self.birdc("show", "route", "count")
        m = re.search(r"for (\d+) networks", out)
        if not m:
            raise LabError(f"{self.name}: cannot read a route count from {out!r}")
        return int(m.group(1))

    def enable(self, protocol: str) -> None:
        self.birdc("enable", protocol)

    def disable(self, protocol: str) -> None:
        self.birdc("disable", protocol)

    def configure(self, config: str) -> None:
        """Replace the config and make BIRD reload it (`birdc configure`); raises if it rejects it."""
        _check_bird_config(config, self.dir / "bird.conf.new")
        self.config_path.write_text(config)
        out = self.birdc("configure")
        if "Reconfigured" not in out and "Reconfiguration in progress" not in out:
            raise LabError(f"{self.name}: birdc configure: {out.strip()}")


def _check_bird_config(config: str, path: Path) -> None:
    path.write_text(config)
    res = subprocess.run([BIRD, "-p", "-c", str(path)], capture_output=True, text=True)
    path.unlink(missing_ok=True)
    if res.returncode != 0:
        raise LabError(f"BIRD rejects the config: {(res.stderr or res.stdout).strip()}")


def start_bird(lab: Lab, config: str, *, name: str = "bird", netns: Target | None = None,
               timeout: float = START_TIMEOUT) -> Bird:
    """Run `bird -f` with `config` in `netns` (default: the lab's router namespace).

    `netns` is anything `Lab.netns_of` takes: "router", "node1", a LabNode or a
    namespace name. Files go to `<state dir>/<name>/`. Returns once birdc answers.
    """
    if shutil.which(BIRD) is None or shutil.which(BIRDC) is None:
        raise LabError("bird/birdc not installed (apt-get install bird2)")
    ns = lab.netns_of(netns if netns is not None else "router")
    d = _router_dir(lab, name)
    bird = Bird(lab, name, ns, d)
    _check_bird_config(config, d / "bird.conf.new")
    bird.config_path.write_text(config)
    bird.socket.unlink(missing_ok=True)
    # -f: foreground, so the recorded PID is BIRD's. No -P: the lab records the PID.
    bird.proc = lab.start_process(
        ns, [BIRD, "-f", "-c", str(bird.config_path), "-s", str(bird.socket)],
        role="bird", name=name, log_path=bird.log_path)
    deadline = time.monotonic() + timeout
    while True:
        if bird.proc.poll() is not None:
            raise LabError(f"BIRD {name} in {ns} exited with {bird.proc.returncode}"
                           f"{_tail(bird.log_path)}")
        if bird.socket.exists():
            res = subprocess.run([BIRDC, "-s", str(bird.socket), "show", "status"],
                                 capture_output=True, text=True, timeout=5)
            if res.returncode == 0 and "Daemon is up and running" in res.stdout:
                log.debug("BIRD %s up in %s", name, ns)
                return bird
        if time.monotonic() > deadline:
            bird.stop()
            raise LabError(f"BIRD {name} in {ns} does not answer on {bird.socket} after "
                           f"{timeout:g}s{_tail(bird.log_path)}")
        time.sleep(0.02)


# ---- FRR -------------------------------------------------------------------


@dataclass
class Frr:
    """FRR's zebra (optional) and bgpd in a lab namespace, driven with a private vtysh."""

    lab: Lab
    name: str
    netns: str
    dir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def bgpd_config_path(self) -> Path:
        return self.dir / "bgpd.conf"

    @property
    def zapi_socket(self) -> Path:
        return self.dir / "zserv.api"

    def log_path(self, daemon: str) -> Path:
        return self.dir / f"{daemon}.log"

    def vtysh(self, *commands: str, daemon: str | None = None, check: bool = True,
              timeout: float = 60) -> str:
        """Run vtysh commands (each one `-c`) against this FRR only; returns stdout."""
        argv = [VTYSH, "--vty_socket", str(self.dir), "--config_dir", str(self.dir)]
        if daemon:
            argv += ["-d", daemon]
        for c in commands:
            argv += ["-c", c]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise LabError(f"{self.name}: vtysh {' / '.join(commands)} failed "
                           f"(exit {res.returncode}): {(res.stdout + res.stderr).strip()[-500:]}")
        return res.stdout

    def bgp_summary_json(self) -> dict[str, Any]:
        """`show bgp summary json`: {"ipv4Unicast": {"peers": {ip: {"state", "pfxRcd", ...}}}}."""
        return json.loads(self.vtysh("show bgp summary json", daemon="bgpd") or "{}")

    def routes_json(self) -> dict[str, Any]:
        """`show ip route json` (zebra's RIB): {prefix: [route, ...]}; needs zebra."""
        return json.loads(self.vtysh("show ip route json", daemon="zebra") or "{}")

    def bgp_routes_json(self) -> dict[str, Any]:
        """`show bgp ipv4 unicast json` (bgpd's table): {"routes": {prefix: [path, ...]}}."""
        return json.loads(self.vtysh("show bgp ipv4 unicast json", daemon="bgpd") or "{}")

    def peer_states(self) -> dict[str, str]:
        """{peer address: FSM state} from bgpd, e.g. {"10.1.1.1": "Established"}."""
        peers = self.bgp_summary_json().get("ipv4Unicast", {}).get("peers", {})
        return {ip: p.get("state", "?") for ip, p in peers.items()}

    def alive(self) -> bool:
        return bool(self.procs) and all(p.poll() is None for p in self.procs.values())

    def stop(self) -> None:
        """Stop bgpd, then zebra (bgpd would otherwise log and retry its lost zebra); idempotent."""
        for daemon in ("bgpd", "zebra"):
            p = self.procs.get(daemon)
            if p is None:
                continue
            _stop_popen(p)
            # A clean exit removes FRR's crash-log dir; a SIGKILL leaves it.
            shutil.rmtree(FRR_TMPDIR / f"{daemon}.{p.pid}", ignore_errors=True)


def _frr_argv(daemon: str, d: Path, config: Path) -> list[str]:
    return [
        str(FRR_DIR / daemon), "-f", str(config), "-i", str(d / f"{daemon}.pid"),
        "-z", str(d / "zserv.api"), "--vty_socket", str(d), "-P", "0",
        "-u", "root", "-g", "frrvty", "--log", "stdout",
    ]


def _check_frr_config(ns: str, d: Path, config: Path) -> None:
    """`bgpd -C` (dry run). It exits 0 even on bad lines, and a running bgpd
    only logs them and carries on, so the log lines are what tell."""
    p = subprocess.Popen(["ip", "netns", "exec", ns, *_frr_argv("bgpd", d, config), "-C"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = p.communicate(timeout=30)
    # A dry run exits without removing its crash-log dir (`ip netns exec` execs, same PID).
    shutil.rmtree(FRR_TMPDIR / f"bgpd.{p.pid}", ignore_errors=True)
    bad = sorted({ln.split("] ", 1)[-1] for ln in out.splitlines() if "config line" in ln})
    if p.returncode != 0 or bad:
        raise LabError(f"FRR bgpd rejects {config}: " + ("; ".join(bad) or out.strip()[-500:]))


def start_frr(lab: Lab, bgpd_config: str, *, name: str = "frr", netns: Target | None = None,
              with_zebra: bool = True, zebra_config: str | None = None,
              timeout: float = START_TIMEOUT) -> Frr:
    """Run zebra (unless with_zebra=False) and bgpd in `netns` (default: the router namespace).

    Without zebra, bgpd runs with `-Z` (no zebra, nothing installed in the
    kernel; all next hops count as reachable). Files go to `<state dir>/<name>/`.
    Returns once bgpd answers `show bgp summary json`.
    """
    if not (FRR_DIR / "bgpd").exists() or shutil.which(VTYSH) is None:
        raise LabError(f"FRR not installed ({FRR_DIR}/bgpd, vtysh; apt-get install frr)")
    ns = lab.netns_of(netns if netns is not None else "router")
    d = _router_dir(lab, name)
    frr = Frr(lab, name, ns, d)
    frr.bgpd_config_path.write_text(bgpd_config)
    (d / "vtysh.conf").write_text("")  # vtysh reads <config_dir>/vtysh.conf; keep it private
    for stale in ("zserv.api", "zebra.vty", "bgpd.vty"):
        (d / stale).unlink(missing_ok=True)
    _check_frr_config(ns, d, frr.bgpd_config_path)

    try:
        if with_zebra:
            zconf = d / "zebra.conf"
            zconf.write_text(zebra_config if zebra_config is not None else f"hostname {name}\n")
            frr.procs["zebra"] = lab.start_process(
                ns, _frr_argv("zebra", d, zconf), role="zebra", name=f"{name}-zebra",
                log_path=frr.log_path("zebra"))
            # bgpd retries zebra anyway, but starting it after zebra's API socket
            # exists avoids a first failed connect and its back-off.
            _wait(frr, "zebra", lambda: frr.zapi_socket.exists() and (d / "zebra.vty").exists(),
                  timeout)
        argv = _frr_argv("bgpd", d, frr.bgpd_config_path)
        if not with_zebra:
            argv.append("-Z")
        frr.procs["bgpd"] = lab.start_process(ns, argv, role="bgpd", name=f"{name}-bgpd",
                                              log_path=frr.log_path("bgpd"))

        def bgpd_answers() -> bool:
            if not (d / "bgpd.vty").exists():
                return False
            return frr.vtysh("show bgp summary json", daemon="bgpd", check=False).strip() != ""

        _wait(frr, "bgpd", bgpd_answers, timeout)
    except BaseException:
        frr.stop()
        raise
    log.debug("FRR %s up in %s", name, ns)
    return frr


def _wait(frr: Frr, daemon: str, ready: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        p = frr.procs[daemon]
        if p.poll() is not None:
            raise LabError(f"FRR {daemon} ({frr.name}) in {frr.netns} exited with "
                           f"{p.returncode}{_tail(frr.log_path(daemon))}")
        if time.monotonic() > deadline:
            raise LabError(f"FRR {daemon} ({frr.name}) in {frr.netns} not ready after "
                           f"{timeout:g}s{_tail(frr.log_path(daemon))}")
        time.sleep(0.02)


# ---- GoBGP -----------------------------------------------------------------


@dataclass
class Gobgp(_Daemon):
    """gobgpd in a lab namespace, driven with the `gobgp` CLI over its loopback API."""

    @property
    def config_path(self) -> Path:
        return self.dir / "gobgpd.toml"

    @property
    def log_path(self) -> Path:
        return self.dir / "gobgpd.log"

    def gobgp(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        """Run one `gobgp` CLI command in the router's namespace; its stdout."""
        res = self.lab.exec(self.netns, [GOBGP, "-u", "127.0.0.1", "-p", str(GOBGP_API_PORT),
                                         *args], check=False, timeout=timeout)
        if check and res.returncode != 0:
            raise LabError(f"{self.name}: gobgp {' '.join(args)} failed "
                           f"(exit {res.returncode}): {(res.stdout + res.stderr).strip()[-500:]}")
        return str(res.stdout)

    def peer_states(self) -> dict[str, str]:
        """{neighbour address: session state}, e.g. {"10.1.1.1": "established"}."""
        out: dict[str, str] = {}
        for p in json.loads(self.gobgp("-j", "neighbor") or "[]"):
            state = p.get("state", {}).get("session_state", 0)
            out[p["conf"]["neighbor_address"]] = _GOBGP_STATES.get(state, str(state))
        return out

    def rib(self) -> dict[str, list[dict[str, Any]]]:
        """The global IPv4 RIB (`gobgp -j global rib`): {prefix: [path, ...]}, each path with
        `neighbor-ip`, `nexthop`, `as-path` (list), `communities` ("aa:nn") and
        `large-communities` ("aa:nn:mm")."""
        table = json.loads(self.gobgp("-j", "global", "rib", "-a", "ipv4") or "{}")
        return {prefix: [_gobgp_path(p) for p in paths] for prefix, paths in table.items()}

    def announce(self, prefix: str) -> None:
        self.gobgp("global", "rib", "add", "-a", "ipv4", prefix)

    def withdraw(self, prefix: str) -> None:
        self.gobgp("global", "rib", "del", "-a", "ipv4", prefix)


# apipb.PeerState.SessionState, as `gobgp -j neighbor` prints it (a number).
_GOBGP_STATES = {0: "unknown", 1: "idle", 2: "connect", 3: "active", 4: "opensent",
                 5: "openconfirm", 6: "established"}


def _gobgp_path(p: dict[str, Any]) -> dict[str, Any]:
    """One path of `gobgp -j global rib` with its attributes decoded (BGP attribute type
    codes: 2 AS_PATH, 3 NEXT_HOP, 8 COMMUNITIES, 32 LARGE_COMMUNITY)."""
    out: dict[str, Any] = {"neighbor-ip": p.get("neighbor-ip", ""), "nexthop": "",
                           "as-path": [], "communities": [], "large-communities": []}
    for a in p.get("attrs", []):
        kind = a.get("type")
        if kind == 2:
            out["as-path"] = [asn for seg in a.get("as_paths", []) for asn in seg.get("asns", [])]
        elif kind == 3:
            out["nexthop"] = a.get("nexthop", "")
        elif kind == 8:
            out["communities"] = [f"{c >> 16}:{c & 0xFFFF}" for c in a.get("communities", [])]
        elif kind == 32:
            out["large-communities"] = [f"{c['ASN']}:{c['LocalData1']}:{c['LocalData2']}"
                                        for c in a.get("value", [])]
    return out


def start_gobgp(lab: Lab, config: str, *, name: str = "gobgp", netns: Target | None = None,
                announce: Iterable[str] = (), timeout: float = START_TIMEOUT) -> Gobgp:
    """Run gobgpd with `config` (TOML, see `gobgp_config`) in `netns` (default: the router
    namespace) and announce `announce`. Returns once its API answers."""
    if shutil.which(GOBGPD) is None or shutil.which(GOBGP) is None:
        raise LabError("gobgpd/gobgp not installed (apt-get install gobgpd)")
    ns = lab.netns_of(netns if netns is not None else "router")
    d = _router_dir(lab, name)
    router = Gobgp(lab, name, ns, d)
    router.config_path.write_text(config)
    check = lab.exec(ns, [GOBGPD, "-t", "toml", "-f", str(router.config_path), "-d"],
                     check=False, timeout=30)
    if check.returncode != 0:
        raise LabError(f"gobgpd rejects {router.config_path}: "
                       f"{(check.stdout + check.stderr).strip()[-500:]}")
    router.proc = lab.start_process(
        ns, [GOBGPD, "-t", "toml", "-f", str(router.config_path), "--pprof-disable",
             "--api-hosts", f"127.0.0.1:{GOBGP_API_PORT}"],
        role="gobgpd", name=name, log_path=router.log_path)
    deadline = time.monotonic() + timeout
    while router.gobgp("global", check=False).strip() == "":
        if router.proc.poll() is not None:
            raise LabError(f"gobgpd {name} in {ns} exited with {router.proc.returncode}"
                           f"{_tail(router.log_path)}")
        if time.monotonic() > deadline:
            router.stop()
            raise LabError(f"gobgpd {name} in {ns} does not answer after {timeout:g}s"
                           f"{_tail(router.log_path)}")
        time.sleep(0.05)
    try:
        for prefix in announce:
            router.announce(prefix)
    except BaseException:
        router.stop()
        raise
    log.debug("GoBGP %s up in %s", name, ns)
    return router


# ---- configs (pure) --------------------------------------------------------


def bird_proto_name(ip: str, prefix: str = "peer") -> str:
    """A BIRD protocol name for a neighbour: "peer_10_1_1_11" (identifiers only)."""
    return f"{prefix}_{ip.replace('.', '_').replace(':', '_')}"


def _bird_header(router_id: str) -> list[str]:
    return [
        "log stderr all;",
        f"router id {router_id};",
        # One token with sub-second precision, so `show protocols` "Since" can be
        # parsed and compared with time.time() (bench/bgp.py does).
        'timeformat protocol "%s.%6f";',
        "protocol device { scan time 10; }",
    ]


def _quote(s: str) -> str:
    if '"' in s or "\\" in s or "\n" in s:
        raise ValueError(f"unsupported character in {s!r}")
    return f'"{s}"'


def bird_route_reflector(
    router_id: str, asn: int, clients: Sequence[tuple[str, str]], cluster_id: str | None = None,
    hold_time: int = 9, password: str | None = None,
) -> str:
    """BIRD as an iBGP route reflector for `clients` [(client ip, our source address), ...].

    Reflects only BGP routes (`export where source = RTS_BGP`: the direct
    routes it knows, needed to resolve next hops, are not announced), multihop
    with recursive next-hop resolution, one protocol per client named
    `bird_proto_name(ip, "rr")`. `cluster_id` defaults to the router id.
    """
    lines = _bird_header(router_id) + [
        # Connected subnets, so clients' next hops resolve (iBGP multihop is
        # `gateway recursive`). Kept in BIRD's table only; never exported.
        'protocol direct { ipv4; interface "*"; }',
        "template bgp rrclient {",
        f"  local as {asn};",
        "  rr client;",
        f"  rr cluster id {cluster_id or router_id};",
        f"  hold time {hold_time};",
        "  multihop;",
        "  ipv4 { import all; export where source = RTS_BGP; };",
    ]
    if password:
        lines.append(f"  password {_quote(password)};")
    lines.append("}")
    for ip, source in clients:
        lines.append(f"protocol bgp {bird_proto_name(ip, 'rr')} from rrclient "
                     f"{{ neighbor {ip} as {asn}; source address {source}; }}")
    return "\n".join(lines) + "\n"


def bird_peer(
    router_id: str, local_as: int, peers: Sequence[tuple[str, int, str]],
    static_routes: Iterable[str] = (), hold_time: int = 9, *, install_learned: bool = False,
    disabled: bool = False, multihop: bool = False, password: str | None = None,
    receive_only: bool = False, keepalive: int | None = None,
) -> str:
    """BIRD as a plain BGP speaker: a ToR, a route generator or a receiver.

    - `peers`: [(neighbour ip, its AS, our source address)], one protocol each,
      named `bird_proto_name(ip)`; eBGP or iBGP follows from the ASes.
    - `static_routes`: announced routes, each a BIRD route body ("10.1.0.0/24
      via 10.0.0.2", "192.0.2.0/24 blackhole"); a bare prefix means blackhole.
    - Exports static and BGP routes (a ToR passes routes between its peers);
      the `direct` routes are never announced.
    - `install_learned`: a `kernel` protocol installs BGP-learned routes into
      the namespace's main table (proto bird); static routes are never
      installed (a generator's 10,000 blackholes stay in BIRD).
    - `disabled`: the BGP protocols start disabled (`birdc enable <name>`
      later), so a benchmark can choose when each session starts.
    - `receive_only`: announce nothing (a benchmark receiver: like a tortie
      node without blocks, it must not send the generator's routes back).
    - `keepalive`: seconds between KEEPALIVEs (BIRD's default: hold time / 3).
    """
    lines = _bird_header(router_id)
    lines.append('protocol direct { ipv4; interface "*"; }')
    routes = list(static_routes)
    if routes:
        lines.append("protocol static announced {")
        lines.append("  ipv4;")
        lines += [f"  route {r if ' ' in r.strip() else r.strip() + ' blackhole'};" for r in routes]
        lines.append("}")
    if install_learned:
        lines += [
            "protocol kernel {",
            "  ipv4 { export where source = RTS_BGP; };",
            "}",
        ]
    lines += [
        "template bgp peer {",
        f"  local as {local_as};",
        f"  hold time {hold_time};",
        *([f"  keepalive time {keepalive};"] if keepalive else []),
        # BIRD waits connect delay (default 5 s, minimum 1) after a protocol
        # starts before it connects; keep lab sessions quick.
        "  connect delay time 1;",
        "  connect retry time 5;",
        "  error wait time 1, 10;",
        "  ipv4 { import all; export "
        + ("none; };" if receive_only else "where source = RTS_STATIC || source = RTS_BGP; };"),
    ]
    if multihop:
        lines.append("  multihop;")
    if password:
        lines.append(f"  password {_quote(password)};")
    if disabled:
        lines.append("  disabled;")
    lines.append("}")
    for ip, peer_as, source in peers:
        lines.append(f"protocol bgp {bird_proto_name(ip)} from peer "
                     f"{{ neighbor {ip} as {peer_as}; source address {source}; }}")
    return "\n".join(lines) + "\n"


def frr_tor(
    router_id: str, asn: int, neighbors: Sequence[tuple[str, int]], networks: Iterable[str] = (),
    hold_time: int = 9, password: str | None = None, *, hostname: str = "tor",
    receive_only: bool = False, update_source: str | None = None,
) -> str:
    """bgpd config for FRR as a ToR: `router bgp asn`, one neighbour per (ip, remote AS).

    - `no bgp ebgp-requires-policy`: FRR >= 7.4 otherwise accepts and sends
      nothing on eBGP sessions without route-maps (RFC 8212).
    - `network X` for each announced prefix, with `no bgp network import-check`:
      FRR 8 only keeps static routes in staticd, which we do not run; without
      the check the prefix is announced whether or not the RIB has a route.
    - eBGP neighbours get `ebgp-multihop 255`, so a peer on another subnet
      (through the lab router) works too; on a shared subnet it changes nothing.
    - `timers connect 1`: retry a refused connect after 1 s, not FRR's 120 s.
    - `receive_only`: a deny-all outbound route-map on every neighbour (a
      benchmark receiver announces nothing, as BIRD's `export none`).
    - `update_source`: the address FRR connects from, and so the next hop it
      sends on eBGP; without it a session FRR opens to a node on another
      subnet comes from the router's address there, which the node does not
      peer with.
    """
    keepalive = max(1, hold_time // 3)
    lines = [
        "frr defaults traditional",
        f"hostname {hostname}",
        "!",
        f"router bgp {asn}",
        f" bgp router-id {router_id}",
        " no bgp ebgp-requires-policy",
        " no bgp network import-check",
        f" timers bgp {keepalive} {hold_time}",
    ]
    for ip, remote_as in neighbors:
        lines.append(f" neighbor {ip} remote-as {remote_as}")
        lines.append(f" neighbor {ip} timers connect 1")
        if remote_as != asn:
            lines.append(f" neighbor {ip} ebgp-multihop 255")
        if password:
            lines.append(f" neighbor {ip} password {password}")
        if update_source:
            lines.append(f" neighbor {ip} update-source {update_source}")
    lines.append(" address-family ipv4 unicast")
    lines += [f"  network {n}" for n in networks]
    if receive_only:
        lines += [f"  neighbor {ip} route-map ANNOUNCE-NOTHING out" for ip, _ in neighbors]
    lines += [" exit-address-family", "exit", "!"]
    if receive_only:
        lines += ["route-map ANNOUNCE-NOTHING deny 10", "!"]
    return "\n".join(lines) + "\n"


def gobgp_config(router_id: str, asn: int, neighbors: Sequence[tuple[str, int]],
                 hold_time: int = 9, *, rr_clients: bool = False,
                 cluster_id: str | None = None) -> str:
    """gobgpd TOML: `global` (AS, router id, port 179) and one neighbour per (ip, its AS).

    - `rr_clients`: every iBGP neighbour is a route-reflector client (cluster id
      `cluster_id`, default the router id); GoBGP reflects with the next hop unchanged.
    - Timers: hold time `hold_time`, keepalive a third of it, connect retry 1 s and 1 s
      before reconnecting after a reset (GoBGP's defaults, 120 s and 30 s, would slow
      every lab start and restart).
    - eBGP neighbours get multihop (TTL 255), as `frr_tor` does, so a peer on another
      subnet works too.
    """
    keepalive = max(1, hold_time // 3)
    lines = ["[global.config]", f"  as = {asn}", f'  router-id = "{router_id}"', "  port = 179"]
    for ip, remote_as in neighbors:
        lines += ["", "[[neighbors]]", "  [neighbors.config]",
                  f'    neighbor-address = "{ip}"', f"    peer-as = {remote_as}",
                  "  [neighbors.timers.config]", f"    hold-time = {hold_time}",
                  f"    keepalive-interval = {keepalive}", "    connect-retry = 1",
                  # after a reset, reconnect at once (GoBGP's default waits 30 s)
                  "    idle-hold-time-after-reset = 1"]
        if remote_as != asn:
            lines += ["  [neighbors.ebgp-multihop.config]", "    enabled = true",
                      "    multihop-ttl = 255"]
        elif rr_clients:
            lines += ["  [neighbors.route-reflector.config]",
                      "    route-reflector-client = true",
                      f'    route-reflector-cluster-id = "{cluster_id or router_id}"']
    return "\n".join(lines) + "\n"
