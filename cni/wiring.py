"""The veth between a pod and its node, as Calico's cni-plugin/pkg/dataplane/linux wires it.

Owns every kernel change the plugin makes:

  host (the plugin's own network namespace)
    cali<hash>  veth, MAC ee:ee:ee:ee:ee:ee, no address, up, MTU
                sysctls proxy_arp=1, forwarding=1, route_localnet=1, neigh proxy_delay=0
    <ip>/32 dev cali<hash> scope link          (proto boot; the agent takes it over)
  container (CNI_NETNS)
    eth0        the veth's peer, MAC derived from the container ID, up, MTU, <ip>/32
    169.254.1.1 dev eth0 scope link            the host answers ARP for it (proxy_arp)
    default via 169.254.1.1 dev eth0

How: the pure `host_lines`/`container_lines` render `ip -batch` input; `wire`
runs them as two processes (`ip -batch -` here, `nsenter --net=<netns> ip
-batch -` in the container: `ip -n` only knows /run/netns names, CNI_NETNS is
any path). Both veth ends are created in one netlink request, the peer born
inside the container, so no half-moved veth can exist. Two processes cost
~10 ms; pyroute2 would cost 0.35 s to import (measured), more than the whole
ADD otherwise.

Invariants:
  * `wire` replaces a host veth of the same name (a retried ADD, or a
    previous sandbox of the same pod that was never deleted), as Calico does;
    an `eth0` already in the container that is not ours is a Conflict.
  * `unwire` deletes the interface from the container side, never the host
    name: after a pod's sandbox is replaced, the old sandbox's DEL must not
    remove the new sandbox's cali veth (same name). Deleting one end of a
    veth deletes both, and with them the host route.
  * A missing namespace or interface is not an error for `unwire` (DEL is
    idempotent).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from collections.abc import Sequence
from typing import Any, NamedTuple

# The host end's sysctls are the agent's list (one definition, itself importing nothing).
from agent.dataplane.workload_sysctls import interface_sysctls

from .errors import CheckFailed, Conflict, ContainerUnknown, DataplaneFailure
from .naming import GATEWAY, HOST_MAC

_log = logging.getLogger(__name__)

PROC_SYS = "/proc/sys"


def _which(name: str, default: str) -> str:
    # shutil.which, without importing shutil (the plugin's start-up time counts).
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    return default


IP = _which("ip", "/usr/sbin/ip")
NSENTER = _which("nsenter", "/usr/bin/nsenter")
COMMAND_TIMEOUT = 20.0
_FAILED_LINE_RE = re.compile(r"Command failed -:(\d+)")


class VethPlan(NamedTuple):
    host_ifname: str
    container_ifname: str
    netns: str
    mtu: int
    container_mac: str
    addresses: tuple[str, ...]  # IPv4 addresses, without prefix


# -- pure renderers --------------------------------------------------------------------------


def host_lines(plan: VethPlan, replace: bool) -> list[str]:
    lines = [f"link del {plan.host_ifname}"] if replace else []
    lines += [
        f"link add {plan.host_ifname} mtu {plan.mtu} address {HOST_MAC} type veth peer name "
        f"{plan.container_ifname} mtu {plan.mtu} address {plan.container_mac} netns {plan.netns}",
        f"link set {plan.host_ifname} up",
    ]
    lines += [f"route add {ip}/32 dev {plan.host_ifname} scope link" for ip in plan.addresses]
    return lines


def container_lines(plan: VethPlan) -> list[str]:
    dev = plan.container_ifname
    lines = [f"link set {dev} up"]
    lines += [f"addr add {ip}/32 dev {dev}" for ip in plan.addresses]
    lines += [f"route add {GATEWAY} dev {dev} scope link",
              f"route add default via {GATEWAY} dev {dev}"]
    return lines


# -- running ip ------------------------------------------------------------------------------


class BatchFailure(Exception):
    """`ip -batch` failed; `line` is the failing line when ip said which."""

    def __init__(self, argv: list[str], lines: list[str], line: str | None, stderr: str) -> None:
        super().__init__(argv, line, stderr)
        self.argv, self.lines, self.line, self.stderr = argv, lines, line, stderr

    def __str__(self) -> str:
        where = f" at {self.line!r}" if self.line else ""
        return f"{' '.join(self.argv)} failed{where}: {self.stderr.strip()}"


def _in_netns(netns: str | None, argv: list[str]) -> list[str]:
    return [NSENTER, f"--net={netns}", *argv] if netns else argv


def run_batch(lines: Sequence[str], netns: str | None = None,
              json_out: bool = False) -> str:
    """`ip [-j] -batch -` (inside `netns`, a path, when given); BatchFailure names the line."""
    argv = _in_netns(netns, [IP, *(["-j"] if json_out else []), "-batch", "-"])
    text = "\n".join(lines) + "\n"
    _log.debug("running %s with:\n%s", " ".join(argv), text.rstrip())
    try:
        res = subprocess.run(argv, input=text, capture_output=True, text=True,
                             timeout=COMMAND_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataplaneFailure(f"could not run {argv[0]}: {exc}") from None
    if res.returncode != 0:
        m = _FAILED_LINE_RE.search(res.stderr)
        line = lines[int(m.group(1)) - 1] if m and 0 < int(m.group(1)) <= len(lines) else None
        stderr = _FAILED_LINE_RE.sub("", res.stderr).strip()
        raise BatchFailure(argv, list(lines), line, stderr)
    return res.stdout


def _json_documents(text: str) -> list[Any]:
    """The JSON arrays `ip -j -batch` prints, one per command."""
    decoder, out, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        doc, i = decoder.raw_decode(text, i)
        out.append(doc)


def netns_exists(netns: str) -> bool:
    return bool(netns) and os.path.exists(netns)


def host_link_exists(ifname: str) -> bool:
    # /proc/sys/net shows the namespace of the process that opens it (unlike /sys, which
    # shows the namespace its mount belongs to: under `nsenter --net` that is not ours).
    return os.path.isdir(f"{PROC_SYS}/net/ipv4/conf/{ifname}")


def write_sysctls(values: dict[str, str]) -> None:
    for path, value in values.items():
        full = f"{PROC_SYS}/{path}"
        try:
            with open(full, "w") as f:
                f.write(value)
        except OSError as exc:
            raise DataplaneFailure(f"could not set {path.replace('/', '.')}={value}: "
                                   f"{exc.strerror or exc}") from None


# -- the operations --------------------------------------------------------------------------


def wire(plan: VethPlan) -> None:
    """Create and configure the veth pair, its addresses and routes (see the module docstring).

    On failure, whatever this call created is left in place for the caller's
    rollback (`remove_host_veth`), and the error says which step failed.
    """
    if not netns_exists(plan.netns):
        raise ContainerUnknown(f"the container's network namespace {plan.netns} does not exist")
    replace = host_link_exists(plan.host_ifname)
    if replace:
        _log.info("host interface %s already exists (a retried ADD, or the pod's previous "
                  "sandbox); replacing it", plan.host_ifname)
    try:
        try:
            run_batch(host_lines(plan, replace))
        except BatchFailure as exc:
            if not (replace and exc.line == f"link del {plan.host_ifname}" and _gone(exc)):
                raise
            # It went away between our look and the delete (its sandbox's DEL): create it.
            run_batch(host_lines(plan, replace=False))
    except BatchFailure as exc:
        raise _host_error(plan, exc) from None
    write_sysctls(interface_sysctls(plan.host_ifname))
    try:
        run_batch(container_lines(plan), plan.netns)
    except BatchFailure as exc:
        raise DataplaneFailure(
            f"could not configure {plan.container_ifname} in the container "
            f"({exc.line or 'ip -batch'}): {exc.stderr}", f"netns {plan.netns}") from None
    _log.info("wired %s <-> %s in %s: %s, mtu %d", plan.host_ifname, plan.container_ifname,
              plan.netns, ", ".join(f"{a}/32" for a in plan.addresses), plan.mtu)


def _gone(exc: BatchFailure) -> bool:
    return "Cannot find device" in exc.stderr or "does not exist" in exc.stderr


def _host_error(plan: VethPlan, exc: BatchFailure) -> Exception:
    line = exc.line or ""
    if line.startswith("link add") and "File exists" in exc.stderr:
        return Conflict(
            f"an interface named {plan.container_ifname} already exists in the container's "
            f"network namespace {plan.netns}; tortie will not replace an interface it did "
            "not create")
    if line.startswith("route add") and "File exists" in exc.stderr:
        dst = line.split()[2]
        holder = _route_holder(dst)
        return Conflict(
            f"route {dst} already exists for an interface other than {plan.host_ifname}"
            + (f" ({holder})" if holder else "")
            + "; another workload on this node holds the address")
    return DataplaneFailure(f"could not create host interface {plan.host_ifname} "
                            f"({line or 'ip -batch'}): {exc.stderr}")


def _route_holder(dst: str) -> str:
    try:
        out = run_batch([f"route show exact {dst}"], json_out=True)
        routes = _json_documents(out)[0]
    except (BatchFailure, DataplaneFailure, ValueError, IndexError):
        return ""
    return " ".join(f"dev {r.get('dev')}" for r in routes if r.get("dev"))


def remove_host_veth(ifname: str) -> bool:
    """Rollback of a failed ADD: delete the host end this ADD created. True if it existed."""
    if not host_link_exists(ifname):
        return False
    try:
        run_batch([f"link del {ifname}"])
    except BatchFailure as exc:
        if _gone(exc):
            return False
        raise DataplaneFailure(f"could not delete host interface {ifname}: {exc.stderr}") from None
    return True


def unwire(netns: str, ifname: str) -> bool:
    """DEL: delete `ifname` inside the container (and with it the host end). Idempotent."""
    if not netns_exists(netns):
        _log.info("network namespace %r is gone; its interfaces went with it", netns)
        return False
    try:
        run_batch([f"link del {ifname}"], netns)
    except BatchFailure as exc:
        if _gone(exc):
            return False
        # The namespace may vanish between our check and nsenter's open.
        if not netns_exists(netns):
            return False
        raise DataplaneFailure(f"could not delete {ifname} in {netns}: {exc.stderr}") from None
    return True


# -- CHECK -----------------------------------------------------------------------------------


class Observed(NamedTuple):
    container_link: dict[str, Any] | None
    container_addrs: tuple[str, ...]   # "ip/prefix" on the container interface (IPv4)
    container_routes: tuple[str, ...]  # normalised "dst [via gw] dev X [scope link]"
    host_link: dict[str, Any] | None
    host_routes: tuple[str, ...]       # routes to the addresses


def _route_text(r: dict[str, Any]) -> str:
    parts = [r.get("dst", "?")]
    if r.get("gateway"):
        parts += ["via", r["gateway"]]
    parts += ["dev", str(r.get("dev", "?"))]
    if r.get("scope") == "link":
        parts += ["scope", "link"]
    return " ".join(parts)


def _with_prefix(dst: str) -> str:
    return dst if "/" in dst else f"{dst}/32"


def observe(plan: VethPlan) -> Observed:
    """Read both ends back (two `ip -j -batch` processes)."""
    if not netns_exists(plan.netns):
        raise ContainerUnknown(f"the container's network namespace {plan.netns} does not exist")
    dev = plan.container_ifname
    try:
        # `addr show` first: it carries the link's flags and MAC too, and in batch mode an
        # `addr show` after a `link show` prints no addresses (iproute2 6.1).
        docs = _json_documents(run_batch([f"addr show dev {dev}", "route show"], plan.netns,
                                         True))
        link = docs[0][0] if docs[0] else None
        addrs = tuple(f"{a['local']}/{a['prefixlen']}" for entry in docs[0]
                      for a in entry.get("addr_info", ()) if a.get("family") == "inet")
        routes = tuple(_route_text(r) for r in docs[1])
    except BatchFailure:
        link, addrs, routes = None, (), ()
    host_link, host_routes = None, ()
    if host_link_exists(plan.host_ifname):
        try:
            docs = _json_documents(run_batch(
                [f"link show dev {plan.host_ifname}"]
                + [f"route show exact {ip}/32" for ip in plan.addresses], json_out=True))
            host_link = docs[0][0] if docs[0] else None
            host_routes = tuple(f"{_with_prefix(r.get('dst', '?'))} dev {r.get('dev')}"
                                for doc in docs[1:] for r in doc)
        except BatchFailure:
            pass
    return Observed(link, addrs, routes, host_link, host_routes)


def problems(plan: VethPlan, seen: Observed) -> list[str]:
    """What differs from the plan (pure): [] when the wiring is intact."""
    out: list[str] = []
    dev, host = plan.container_ifname, plan.host_ifname
    if seen.container_link is None:
        out.append(f"interface {dev} does not exist in {plan.netns}")
    else:
        if "UP" not in seen.container_link.get("flags", ()):
            out.append(f"interface {dev} is down")
        mac = seen.container_link.get("address", "")
        if mac.lower() != plan.container_mac:
            out.append(f"interface {dev} has MAC {mac}, expected {plan.container_mac}")
        for ip in plan.addresses:
            if f"{ip}/32" not in seen.container_addrs:
                out.append(f"interface {dev} lacks address {ip}/32 (has "
                           f"{', '.join(seen.container_addrs) or 'none'})")
        for want in (f"{GATEWAY} dev {dev} scope link", f"default via {GATEWAY} dev {dev}"):
            if want not in seen.container_routes:
                out.append(f"container route '{want}' is missing")
    if seen.host_link is None:
        out.append(f"host interface {host} does not exist")
    else:
        if seen.host_link.get("address", "").lower() != HOST_MAC:
            out.append(f"host interface {host} has MAC {seen.host_link.get('address')}, "
                       f"expected {HOST_MAC}")
        for ip in plan.addresses:
            if f"{ip}/32 dev {host}" not in seen.host_routes:
                out.append(f"host route {ip}/32 dev {host} is missing")
    return out


def check(plan: VethPlan) -> None:
    found = problems(plan, observe(plan))
    if found:
        raise CheckFailed("container networking differs from the previous result: "
                          + "; ".join(found))
