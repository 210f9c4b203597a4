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

How: netlink requests sent in process over tortie's raw RTNETLINK client
(agent/dataplane/netlink.py), each batch with one ACK: on the host, `link del`
of a same-named veth and the veth's creation, the host end up, the peer born
inside the container (IFLA_NET_NS_FD: no half-moved veth can exist), then the
host routes; in the container, over a socket created there
(netns.open_socket, setns in a helper thread), the peer up, then its address and
the two routes. `create_pair` makes the pair before the address is known and
`Pair.address` finishes it (an ADD overlaps the first with IPAM); `wire` is both. The pure `*_steps` build them, each named in `ip` syntax so errors say
what failed. Sysctls are file writes. CHECK's `observe` reads with `ip -j`
(one process per side: CHECK is rare). pyroute2 would cost 0.35 s to import
(measured), more than the whole ADD; the launcher-started plugin imports this
module too. Execing `ip` twice (and `nsenter`) cost ~25 ms of an ADD under load.

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

import errno
import json
import logging
import os
import re
import subprocess
from collections.abc import Sequence
from typing import Any, NamedTuple

from agent.dataplane.errors import DataplaneError
from agent.dataplane.netlink import (
    RT_SCOPE_LINK,
    RT_SCOPE_UNIVERSE,
    RT_TABLE_MAIN,
    Request,
    RtnlSocket,
    addr_add_request,
    link_del_request,
    link_up_request,
    route_add_request,
    veth_request,
)

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


class Step(NamedTuple):
    """One netlink request and what it does, in `ip` syntax (for errors and logs)."""

    what: str
    request: Request


# -- pure request builders -------------------------------------------------------------------


def host_link_steps(plan: VethPlan, netns_fd: int, replace: bool = True) -> list[Step]:
    """Delete a same-named host veth (ENODEV when there is none; only if `replace`), then
    create the pair; `netns_fd` is the container's namespace, open in this process."""
    host, dev = plan.host_ifname, plan.container_ifname
    delete = [Step(f"link del {host}", link_del_request(host))] if replace else []
    return [
        *delete,
        Step(f"link add {host} mtu {plan.mtu} address {HOST_MAC} up type veth peer name {dev} "
             f"mtu {plan.mtu} address {plan.container_mac} netns {plan.netns}",
             veth_request(host, HOST_MAC, dev, plan.container_mac, plan.mtu, netns_fd)),
    ]


def host_route_steps(plan: VethPlan, host_index: int) -> list[Step]:
    return [Step(f"route add {ip}/32 dev {plan.host_ifname} scope link",
                 route_add_request(ip, 32, host_index, scope=RT_SCOPE_LINK))
            for ip in plan.addresses]


def container_up_steps(plan: VethPlan, index: int) -> list[Step]:
    """The container interface up (before its routes: a route needs its device up)."""
    return [Step(f"link set {plan.container_ifname} up", link_up_request(index))]


def container_address_steps(plan: VethPlan, index: int) -> list[Step]:
    """The container interface's addresses and routes (once it is up)."""
    dev = plan.container_ifname
    steps = [Step(f"addr add {ip}/32 dev {dev}", addr_add_request(index, ip, 32))
             for ip in plan.addresses]
    steps += [Step(f"route add {GATEWAY} dev {dev} scope link",
                   route_add_request(GATEWAY, 32, index, scope=RT_SCOPE_LINK)),
              Step(f"route add default via {GATEWAY} dev {dev}",
                   route_add_request(None, 0, index, scope=RT_SCOPE_UNIVERSE, gateway=GATEWAY))]
    return steps


# -- sending ---------------------------------------------------------------------------------


class StepFailure(Exception):
    """The kernel refused `step`: errno and its message (with the kernel's explanation)."""

    def __init__(self, step: Step, code: int, message: str) -> None:
        super().__init__(step.what, code, message)
        self.step, self.errno, self.message = step, code, message


def send(sock: RtnlSocket, steps: Sequence[Step]) -> dict[int, StepFailure]:
    """Send `steps` in one batch (one ACK); the refused ones by index. The kernel handles
    every request, also after a failure (iproute2 would stop): callers name the first."""
    failed = sock.write(step.request for step in steps)
    return {i: StepFailure(steps[i], code, text) for i, (code, text) in failed.items()}


def _first(failed: dict[int, StepFailure]) -> StepFailure | None:
    return failed[min(failed)] if failed else None


def _open_netns(netns: str) -> int:
    """An fd of the container's namespace: it stays alive while we hold it."""
    try:
        return os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ContainerUnknown(
            f"the container's network namespace {netns} does not exist") from None
    except OSError as exc:
        raise DataplaneFailure(f"could not open the container's network namespace {netns}: "
                               f"{exc.strerror or exc}") from None


def netns_exists(netns: str) -> bool:
    return bool(netns) and os.path.exists(netns)


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
    pair = create_pair(plan)
    assert pair is not None  # replacing, it never gives up
    try:
        pair.address(plan.addresses)
    finally:
        pair.close()


class Pair:
    """A veth pair made before its addresses are known (`create_pair`): both ends exist, the
    host end's sysctls are set and the container end is up. `address` adds the addresses
    and routes; `close` releases the sockets and the namespace (the interfaces stay).

    Why two steps: an ADD asks IPAM for the address (an etcd transaction, mostly waiting)
    while the pair is being made (netlink, mostly the kernel's work), and finishes the
    pair when both are done (cni/plugin.py)."""

    def __init__(self, plan: VethPlan, netns_fd: int, host: RtnlSocket, host_index: int,
                 container: RtnlSocket, container_index: int) -> None:
        self.plan, self._netns_fd = plan, netns_fd
        self._host, self._host_index = host, host_index
        self._container, self._container_index = container, container_index

    def address(self, addresses: Sequence[str]) -> None:
        """The host routes, then the container's addresses and routes."""
        plan = self.plan._replace(addresses=tuple(addresses))
        try:
            refused = _first(send(self._host, host_route_steps(plan, self._host_index)))
        except DataplaneError as exc:
            raise DataplaneFailure(f"could not add the routes to {plan.host_ifname}: "
                                   f"{exc}") from None
        if refused is not None:
            raise _host_error(plan, refused, self._host)
        try:
            refused = _first(send(self._container,
                                  container_address_steps(plan, self._container_index)))
        except DataplaneError as exc:
            raise DataplaneFailure(
                f"could not configure {plan.container_ifname} in the container: {exc}",
                f"netns {plan.netns}") from None
        if refused is not None:
            raise DataplaneFailure(
                f"could not configure {plan.container_ifname} in the container "
                f"({refused.step.what}): {refused.message}", f"netns {plan.netns}")
        _log.debug("wired %s <-> %s in %s: %s, mtu %d", plan.host_ifname,
                   plan.container_ifname, plan.netns,
                   ", ".join(f"{a}/32" for a in plan.addresses), plan.mtu)

    def close(self) -> None:
        self._host.close()
        self._container.close()
        os.close(self._netns_fd)


def create_pair(plan: VethPlan, replace: bool = True) -> Pair | None:
    """The veth pair of `plan`, without addresses (see Pair). `plan.addresses` is not used.

    `replace=False` leaves a same-named host end alone: None (nothing done) when the
    pair cannot be created as it is (a host end of that name exists, or an interface
    of the peer's name in the container); `replace=True` then does what `wire` does.
    On failure, whatever this call created is left in place for the caller's
    rollback (`remove_host_veth`), and the error says which step failed.
    """
    if not plan.netns:
        raise ContainerUnknown("the container's network namespace is not given (CNI_NETNS)")
    netns_fd = _open_netns(plan.netns)
    host = RtnlSocket(None)
    container = RtnlSocket(netns_fd)
    try:
        try:
            host_index = _create_host_end(plan, host, netns_fd, replace)
        except DataplaneError as exc:  # the socket itself failed
            raise DataplaneFailure(f"could not create host interface {plan.host_ifname}: "
                                   f"{exc}") from None
        if host_index is None:
            host.close()
            container.close()
            os.close(netns_fd)
            return None
        write_sysctls(interface_sysctls(plan.host_ifname))
        try:
            container_index = _container_end_up(plan, container)
        except DataplaneError as exc:
            raise DataplaneFailure(
                f"could not configure {plan.container_ifname} in the container: {exc}",
                f"netns {plan.netns}") from None
    except BaseException:
        host.close()
        container.close()
        os.close(netns_fd)
        raise
    return Pair(plan, netns_fd, host, host_index, container, container_index)


def _create_host_end(plan: VethPlan, host: RtnlSocket, netns_fd: int,
                     replace: bool) -> int | None:
    """The pair (replacing a same-named host end if `replace`); the host end's index, None
    when not replacing and the name is taken (see create_pair)."""
    steps = host_link_steps(plan, netns_fd, replace)
    failed = send(host, steps)
    added = len(steps) - 1
    if replace:
        deleted = failed.get(0)
        if deleted is None:
            _log.info("host interface %s already existed (a retried ADD, or the pod's "
                      "previous sandbox); replaced it", plan.host_ifname)
        elif deleted.errno != errno.ENODEV:
            raise _host_error(plan, deleted, host)
    elif added in failed and failed[added].errno == errno.EEXIST:
        return None
    if added in failed:
        raise _host_error(plan, failed[added], host)
    index = host.link_index(plan.host_ifname)
    if index is None:  # deleted under us (a DEL of the old sandbox through the peer)
        raise DataplaneFailure(f"host interface {plan.host_ifname} vanished right after its "
                               "creation")
    return index


def _container_end_up(plan: VethPlan, container: RtnlSocket) -> int:
    """The container end up; its index."""
    dev = plan.container_ifname
    index = container.link_index(dev)
    if index is None:
        raise DataplaneFailure(f"could not configure {dev} in the container: it vanished "
                               "right after its creation", f"netns {plan.netns}")
    refused = _first(send(container, container_up_steps(plan, index)))
    if refused is not None:
        raise DataplaneFailure(
            f"could not configure {dev} in the container ({refused.step.what}): "
            f"{refused.message}", f"netns {plan.netns}")
    return index


def _host_error(plan: VethPlan, failure: StepFailure, host: RtnlSocket) -> Exception:
    what = failure.step.what
    if what.startswith("link add") and failure.errno == errno.EEXIST:
        return Conflict(
            f"an interface named {plan.container_ifname} already exists in the container's "
            f"network namespace {plan.netns}; tortie will not replace an interface it did "
            "not create")
    if what.startswith("route add") and failure.errno == errno.EEXIST:
        dst = what.split()[2]
        holder = _route_holder(host, dst)
        return Conflict(
            f"route {dst} already exists for an interface other than {plan.host_ifname}"
            + (f" ({holder})" if holder else "")
            + "; another workload on this node holds the address")
    return DataplaneFailure(f"could not create host interface {plan.host_ifname} "
                            f"({what}): {failure.message}")


def _route_holder(host: RtnlSocket, dst: str) -> str:
    """'dev X' for each main-table route to `dst` (for the Conflict's message)."""
    try:
        routes = [r for r in host.dump_routes() if r.dst == dst and r.table == RT_TABLE_MAIN]
        names = host.dump_links() if routes else {}
    except DataplaneError:
        return ""
    return " ".join(f"dev {names.get(r.oif, r.oif)}" for r in routes if r.oif is not None)


def _delete_link(netns: str | int | None, ifname: str, failed: str) -> bool:
    """Delete `ifname` in `netns` (None: ours); False if there was none. Errors start `failed`."""
    sock = RtnlSocket(netns)
    try:
        refused = _first(send(sock, [Step(f"link del {ifname}", link_del_request(ifname))]))
    except DataplaneError as exc:
        raise DataplaneFailure(f"{failed}: {exc}") from None
    finally:
        sock.close()
    if refused is not None and refused.errno != errno.ENODEV:
        raise DataplaneFailure(f"{failed}: {refused.message}")
    return refused is None


def remove_host_veth(ifname: str) -> bool:
    """Rollback of a failed ADD: delete the host end this ADD created. True if it existed."""
    return _delete_link(None, ifname, f"could not delete host interface {ifname}")


def unwire(netns: str, ifname: str) -> bool:
    """DEL: delete `ifname` inside the container (and with it the host end). Idempotent."""
    try:
        netns_fd = _open_netns(netns) if netns else None
    except ContainerUnknown:
        netns_fd = None
    if netns_fd is None:
        _log.info("network namespace %r is gone; its interfaces went with it", netns)
        return False
    try:
        return _delete_link(netns_fd, ifname, f"could not delete {ifname} in {netns}")
    finally:
        os.close(netns_fd)


# -- CHECK: reading back with `ip -j` --------------------------------------------------------


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


def host_link_exists(ifname: str) -> bool:
    # /proc/sys/net shows the namespace of the process that opens it (unlike /sys, which
    # shows the namespace its mount belongs to: under `nsenter --net` that is not ours).
    return os.path.isdir(f"{PROC_SYS}/net/ipv4/conf/{ifname}")


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
