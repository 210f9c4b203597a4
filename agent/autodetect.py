"""IP autodetection, as calico-node does it: a pure core and a thin I/O edge.

Owns: parsing IP_AUTODETECTION_METHOD / IP6_AUTODETECTION_METHOD, choosing
the node's address from a list of interfaces, and the two reads of the host
it needs: the interfaces with their addresses (pyroute2, optionally in a
named network namespace) and, for can-reach=, the source address the kernel
would use towards a destination (an unconnected UDP socket's connect() +
getsockname(): a route lookup, no packet is sent).

Behaviour (node/pkg/lifecycle/startup/autodetection/*.go):
  * first-found: every interface except DEFAULT_INTERFACES_TO_EXCLUDE;
  * interface=<re>[,<re>...]: only interfaces matching one regex, no default
    excludes; skip-interface=<re>[,...]: default excludes plus these;
  * cidr=<cidr>[,...]: any interface, the address must lie in one CIDR;
  * can-reach=<ip or host>: the kernel's source address towards it, matched
    to an interface address (any interface) for its prefix;
  * interfaces are walked in reverse ifindex order (interfaces.go: "Loop in
    reverse order to maintain behavior with older versions") and the first
    global-unicast address of the family wins (filtered.go), no other ranking;
  * regexes are unanchored searches (Go's MatchString), in Python's re syntax
    (the same as RE2's for the patterns people write here); lists split on \\s*,\\s*.

Improvements over Calico, deliberately:
  * every failure is an AutodetectError with Calico's wording plus the reason,
    instead of a log line and a nil result;
  * the result names the interface and method, and lists the other addresses
    that the method would also have accepted (the chosen IP and its source are
    visible: projectcalico/calico#1628, #8607); start-up logs and publishes them;
  * an empty method argument (`interface=`) is refused rather than matching all;
  * cidr= skips the agent's own devices (OWN_DEVICES: cali*, tunl*, vxlan.calico,
    ...), whose pool-allocated addresses Calico would otherwise pick when the CIDR
    covers a pool.

Invariant: nothing above the "I/O" marker touches the host.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .errors import AutodetectError

_log = logging.getLogger(__name__)

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Calico's node/pkg/lifecycle/startup/autodetection/autodetection_linux.go, verbatim.
DEFAULT_INTERFACES_TO_EXCLUDE: tuple[str, ...] = (
    "^docker.*", "^cbr.*", "^dummy.*", "^podman.*",
    "^virbr.*", "^lxcbr.*", "^veth.*", "^lo", "^br-.*",
    "^cali.*", "^tunl.*", "^flannel.*", "^kube-ipvs.*", "^cni.*",
    "^vxlan\\.calico.*", "^vxlan-v6\\.calico.*", "^wireguard\\.cali.*", "^wg-v6\\.cali.*",
    "^nodelocaldns.*",
)

# Devices the agent itself creates and addresses from the IP pools. Their addresses
# are never the node's address, yet cidr= would pick them when a pool lies inside the
# given CIDR (Calico applies no excludes to cidr=); tortie skips them there.
OWN_DEVICES: tuple[str, ...] = (
    "^cali.*", "^tunl.*", "^vxlan\\.calico.*", "^vxlan-v6\\.calico.*",
    "^wireguard\\.cali.*", "^wg-v6\\.cali.*",
)

FIRST_FOUND = "first-found"
INTERFACE = "interface="
SKIP_INTERFACE = "skip-interface="
CIDR = "cidr="
CAN_REACH = "can-reach="
K8S_INTERNAL_IP = "kubernetes-internal-ip"

_LIST_SPLIT = re.compile(r"\s*,\s*")


# -- values ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interface:
    """One host interface: name, ifindex, its addresses with prefixes, admin/oper up."""

    name: str
    index: int
    addresses: tuple[IPInterface, ...] = ()
    up: bool = True

    def __post_init__(self) -> None:
        addrs = tuple(a if isinstance(a, ipaddress.IPv4Interface | ipaddress.IPv6Interface)
                      else ipaddress.ip_interface(a) for a in self.addresses)
        object.__setattr__(self, "addresses", addrs)

    def of_version(self, version: int) -> list[IPInterface]:
        return [a for a in self.addresses if a.version == version]


@dataclass(frozen=True)
class Detected:
    """The outcome of detection: address with prefix, where it was found, and how."""

    address: str            # "10.0.0.5/24"
    interface: str          # "eth0"
    method: str             # as configured, e.g. "first-found", "can-reach=10.0.0.1"
    candidates: tuple[str, ...] = field(default=(), compare=False)  # others ("eth1 10.1.0.5/24")

    @property
    def ip(self) -> str:
        return str(ipaddress.ip_interface(self.address).ip)

    @property
    def version(self) -> int:
        return ipaddress.ip_interface(self.address).version

    def describe(self) -> str:
        """Short provenance, e.g. "first-found eth0" (published on the Node)."""
        return f"{self.method} {self.interface}"


@dataclass(frozen=True)
class Method:
    """A parsed autodetection method. `text` is the method as configured."""

    kind: str                          # first-found|interface|skip-interface|cidr|can-reach
    text: str
    regexes: tuple[str, ...] = ()
    cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    destination: str = ""


# -- pure core -------------------------------------------------------------------------------


def is_global_unicast(ip: IPAddress) -> bool:
    """Go's net.IP.IsGlobalUnicast: not unspecified, loopback, multicast, link-local or
    the IPv4 limited broadcast. Private ranges (10/8, fd00::/8, ...) count as global."""
    if ip.is_unspecified or ip.is_loopback or ip.is_multicast or ip.is_link_local:
        return False
    return not (ip.version == 4 and ip == ipaddress.IPv4Address("255.255.255.255"))


def _split(arg: str) -> list[str]:
    return _LIST_SPLIT.split(arg.strip())


def _compile(regexes: Sequence[str], method: str, version: int) -> re.Pattern[str] | None:
    """One alternation of all regexes, as interfaces.go builds "(a)|(b)"."""
    if not regexes:
        return None
    for r in regexes:
        try:
            re.compile(r)
        except re.error as exc:
            raise AutodetectError(
                f"Invalid interface regex {r!r} in IP autodetection method {method}: {exc}",
                method, version) from None
    return re.compile("(" + ")|(".join(regexes) + ")")


def parse_method(text: str | None, version: int = 4) -> Method:
    """Parse IP_AUTODETECTION_METHOD. Raises AutodetectError with Calico's messages."""
    method = (text or "").strip()
    if method in ("", FIRST_FOUND):
        return Method(FIRST_FOUND, FIRST_FOUND)
    for prefix, kind in ((INTERFACE, "interface"), (SKIP_INTERFACE, "skip-interface"),
                         (CIDR, "cidr"), (CAN_REACH, "can-reach")):
        if not method.startswith(prefix):
            continue
        arg = method[len(prefix):].strip()
        if not arg:
            raise AutodetectError(
                f"IP autodetection method {method} needs a value after '='", method, version)
        if kind in ("interface", "skip-interface"):
            regexes = tuple(_split(arg))
            _compile(regexes, method, version)
            return Method(kind, method, regexes=regexes)
        if kind == "cidr":
            cidrs = []
            for item in _split(arg):
                try:
                    if "/" not in item:
                        raise ValueError(item)
                    cidrs.append(ipaddress.ip_network(item, strict=False))
                except ValueError:
                    # Calico: log.Errorf("Invalid CIDR %q for IP autodetection method: %s")
                    raise AutodetectError(
                        f'Invalid CIDR "{item}" for IP autodetection method: {method}',
                        method, version) from None
            return Method(kind, method, cidrs=tuple(cidrs))
        return Method(kind, method, destination=arg)
    if method.startswith(K8S_INTERNAL_IP):
        # tortie has no Kubernetes API client: this is always the "not on Kubernetes" case.
        raise AutodetectError(
            "Cannot use method 'kubernetes-internal-ip' when not running on a Kubernetes "
            "cluster", method, version)
    raise AutodetectError(f"Invalid IP autodetection method: {method}", method, version)


def filter_interfaces(interfaces: Iterable[Interface], include: Sequence[str] = (),
                      exclude: Sequence[str] = (), *, method: str = "",
                      version: int = 4) -> list[Interface]:
    """Interfaces matching include (if any) and not exclude, highest ifindex first."""
    inc = _compile(include, method, version)
    exc = _compile(exclude, method, version)
    out = [i for i in interfaces
           if (inc is None or inc.search(i.name)) and not (exc is not None and exc.search(i.name))]
    return sorted(out, key=lambda i: i.index, reverse=True)


def _fmt_list(items: Iterable[object]) -> str:
    # Go's %v of a slice: [a b c]
    return "[" + " ".join(str(i) for i in items) + "]"


def _first_found(interfaces: Sequence[Interface], version: int,
                 cidrs: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()
                 ) -> tuple[Interface, IPInterface, list[str]]:
    """filtered.go FilteredEnumeration: the first global-unicast address in `cidrs` (any,
    when empty). Returns (interface, address, the other acceptable "iface addr")."""
    if not interfaces:
        raise ValueError("no valid host interfaces found")
    chosen: tuple[Interface, IPInterface] | None = None
    others: list[str] = []
    for iface in interfaces:
        for addr in iface.of_version(version):
            if not is_global_unicast(addr.ip):
                continue
            if cidrs and not any(addr.ip in c for c in cidrs):
                continue
            if chosen is None:
                chosen = (iface, addr)
            else:
                others.append(f"{iface.name} {addr}")
    if chosen is None:
        raise ValueError(f"no valid IPv{version} addresses found on the host interfaces")
    return chosen[0], chosen[1], others


def match_local(ip: str | IPAddress, interfaces: Iterable[Interface]
                ) -> tuple[Interface, IPInterface] | None:
    """The interface address equal to ip (with its prefix), searching every interface."""
    addr = ipaddress.ip_address(ip)
    for iface in sorted(interfaces, key=lambda i: i.index, reverse=True):
        for a in iface.addresses:
            if a.ip == addr:
                return iface, a
    return None


def local_cidr(value: str, interfaces: Iterable[Interface]) -> tuple[str, str | None]:
    """calico-node's GetLocalCIDR: a value with a prefix is returned as is; an address
    gets the prefix of the local interface holding it. (cidr, interface or None)."""
    if "/" in value:
        iface = match_local(str(ipaddress.ip_interface(value).ip), interfaces)
        return value, iface[0].name if iface else None
    found = match_local(value, interfaces)
    if found is None:
        return value, None
    return str(found[1]), found[0].name


def detect(method: str | Method | None, version: int, interfaces: Sequence[Interface], *,
           reach: Callable[[str, int], str] | None = None) -> Detected:
    """Choose the node's address by `method` among `interfaces`. Pure, except that
    can-reach= calls `reach(destination, version)` for the kernel's source address.

    Raises AutodetectError (Calico's wording and the reason) when nothing is found.
    """
    m = method if isinstance(method, Method) else parse_method(method, version)
    try:
        if m.kind == FIRST_FOUND:
            cands = filter_interfaces(interfaces, (), DEFAULT_INTERFACES_TO_EXCLUDE,
                                      method=m.text, version=version)
            iface, addr, others = _first_found(cands, version)
        elif m.kind == "interface":
            cands = filter_interfaces(interfaces, m.regexes, (), method=m.text, version=version)
            iface, addr, others = _first_found(cands, version)
        elif m.kind == "skip-interface":
            cands = filter_interfaces(interfaces, (), DEFAULT_INTERFACES_TO_EXCLUDE + m.regexes,
                                      method=m.text, version=version)
            iface, addr, others = _first_found(cands, version)
        elif m.kind == "cidr":
            cands = filter_interfaces(interfaces, (), OWN_DEVICES, method=m.text,
                                      version=version)
            iface, addr, others = _first_found(cands, version, m.cidrs)
        elif m.kind == "can-reach":
            if reach is None:
                raise ValueError("no route lookup available")
            src = ipaddress.ip_address(reach(m.destination, version))
            found = match_local(src, interfaces)
            if found is None or src.version != version:
                raise ValueError(
                    f"autodetected IPv{version} address does not match any addresses found "
                    f"on local interfaces: {src}")
            iface, addr = found
            others = []
        else:  # pragma: no cover - parse_method only returns the kinds above
            raise AssertionError(m.kind)
    except (ValueError, OSError) as exc:
        raise AutodetectError(_failure(m, version, str(exc)), m.text, version) from None
    return Detected(str(addr), iface.name, m.text, tuple(others))


def _failure(m: Method, version: int, reason: str) -> str:
    """autodetection_methods.go's warning for each method, with the reason."""
    if m.kind == "interface":
        return (f"Unable to auto-detect an IPv{version} address using interface regexes "
                f"{_fmt_list(m.regexes)}: {reason}")
    if m.kind == "skip-interface":
        return (f"Unable to auto-detect an IPv{version} address while excluding "
                f"{_fmt_list(m.regexes)}: {reason}")
    if m.kind == "cidr":
        return (f"Unable to auto-detect an IPv{version} address using interface cidr "
                f"{_fmt_list(m.cidrs)}: {reason}")
    if m.kind == "can-reach":
        return (f"Unable to auto-detect IPv{version} address by connecting to "
                f"{m.destination}: {reason}")
    return f"Unable to auto-detect an IPv{version} address: {reason}"


def log_detected(d: Detected) -> None:
    """Say what was chosen and what else would have been (visible provenance)."""
    _log.info("Using autodetected IPv%d address %s on interface %s (method %s)",
              d.version, d.address, d.interface, d.method)
    if d.candidates:
        _log.info("Other IPv%d addresses method %s would accept (not chosen): %s",
                  d.version, d.method, ", ".join(d.candidates))


def node_interfaces(interfaces: Iterable[Interface], versions: Iterable[int]
                    ) -> list[dict[str, object]]:
    """Node.spec.interfaces as calico-node writes them: the default excludes applied,
    sorted by name, each with its addresses (without prefix) of the given families."""
    wanted = set(versions)
    keep = filter_interfaces(interfaces, (), DEFAULT_INTERFACES_TO_EXCLUDE)
    out: list[dict[str, object]] = []
    for iface in sorted(keep, key=lambda i: i.name):
        addrs = [str(a.ip) for a in iface.addresses if a.version in wanted]
        entry: dict[str, object] = {"name": iface.name}
        if addrs:
            entry["addresses"] = addrs
        out.append(entry)
    return out


# -- I/O ------------------------------------------------------------------------------------


def list_interfaces(netns: str | None = None) -> list[Interface]:
    """The host's (or a named netns's) interfaces and addresses, by netlink (a read)."""
    from pyroute2 import IPRoute

    kwargs = {"netns": netns} if netns else {}
    with IPRoute(**kwargs) as ipr:
        links = ipr.get_links()
        addrs = ipr.get_addr()
    by_index: dict[int, list[IPInterface]] = {}
    for a in addrs:
        # IFA_LOCAL is the local end on point-to-point links; IFA_ADDRESS otherwise.
        ip = a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS")
        if ip is None:
            continue
        by_index.setdefault(a["index"], []).append(
            ipaddress.ip_interface(f"{ip}/{a['prefixlen']}"))
    out = []
    for link in links:
        idx = link["index"]
        name = link.get_attr("IFLA_IFNAME")
        up = bool(link["flags"] & 1)  # IFF_UP
        out.append(Interface(name, idx, tuple(by_index.get(idx, ())), up))
    return sorted(out, key=lambda i: i.index)


def _reach_here(dest: str, version: int) -> str:
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    infos = socket.getaddrinfo(dest, 80, family, socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"no IPv{version} address for {dest}")
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        # connect() on UDP only picks a route and source address; nothing is sent.
        sock.connect(infos[0][4])
        return str(sock.getsockname()[0])


_REACH_SCRIPT = (
    "import json,socket,sys\n"
    "d,v=sys.argv[1],int(sys.argv[2])\n"
    "f=socket.AF_INET if v==4 else socket.AF_INET6\n"
    "try:\n"
    "    i=socket.getaddrinfo(d,80,f,socket.SOCK_DGRAM)\n"
    "    s=socket.socket(f,socket.SOCK_DGRAM); s.connect(i[0][4])\n"
    "    print(json.dumps({'ip': s.getsockname()[0]}))\n"
    "except OSError as e:\n"
    "    print(json.dumps({'error': str(e)}))\n"
)


def reach_source(dest: str, version: int = 4, netns: str | None = None,
                 timeout: float = 10.0) -> str:
    """The source address the kernel would use towards dest (an IP or host name).

    In a named netns the lookup runs in a child (`ip netns exec`), so the routes,
    addresses and resolver of that namespace answer. OSError-derived failures are
    raised as ValueError so that detect() reports them in Calico's wording."""
    if netns is None:
        try:
            return _reach_here(dest, version)
        except OSError as exc:
            raise ValueError(str(exc)) from None
    try:
        proc = subprocess.run(
            ["ip", "netns", "exec", netns, sys.executable, "-c", _REACH_SCRIPT, dest,
             str(version)],
            capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ValueError(f"route lookup in netns {netns} failed: {exc}") from None
    if proc.returncode != 0:
        raise ValueError(f"route lookup in netns {netns} failed: {proc.stderr.strip()}")
    try:
        answer = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ValueError(f"route lookup in netns {netns} gave no answer") from None
    if "error" in answer:
        raise ValueError(answer["error"])
    return str(answer["ip"])


def autodetect(method: str | None, version: int = 4, netns: str | None = None,
               interfaces: Sequence[Interface] | None = None) -> Detected:
    """Detect this host's (or netns's) address: detect() over the real interfaces."""
    m = parse_method(method, version)  # bad methods fail before any I/O
    ifaces = list_interfaces(netns) if interfaces is None else interfaces
    d = detect(m, version, ifaces, reach=lambda dest, v: reach_source(dest, v, netns))
    log_detected(d)
    return d


__all__ = [
    "DEFAULT_INTERFACES_TO_EXCLUDE", "Detected", "Interface", "Method",
    "OWN_DEVICES",
    "autodetect", "detect", "filter_interfaces", "is_global_unicast", "list_interfaces",
    "local_cidr", "log_detected", "match_local", "node_interfaces", "parse_method",
    "reach_source",
]
