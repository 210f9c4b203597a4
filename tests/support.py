"""Test support, loaded as a pytest plugin by tests/conftest.py (`pytest_plugins`).

Owns what every tier shares: the one name prefix of the network namespaces the
tests make (`tt<8 hex>`, labs included), the `netns` and `veth` fixtures,
`need` (a skip whose reason names what is missing: root, a binary and its apt
package, a file, a kernel module), `wait_until` (poll with a deadline, FRR
topotest's `run_and_expect`; a test never sleeps for a fixed time hoping
something happened), and the session-end check that nothing the session made
is left behind.

Invariant: the leftover check looks only at what this pytest process recorded
when it made it (namespaces and labs by exact name, processes by PID and start
time), never at anything found by pattern. Other sessions on the same machine
use the same prefix at the same time; their namespaces and processes are not
ours to flag or remove.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from lab import Lab, procs
from lab import netns as lab_netns
from lab.etcd import EtcdMember, start_single

PREFIX = "tt"  # every namespace and lab name the tests make starts with it
KEEP_LAB_ENV = "TORTIE_KEEP_LAB"

# binary -> the Debian package that installs it (scripts/setup.sh installs them all).
APT_PACKAGES = {
    "ip": "iproute2", "bridge": "iproute2", "nsenter": "util-linux",
    "etcd": "etcd-server", "etcdctl": "etcd-client", "openssl": "openssl",
    "ipset": "ipset", "iptables": "iptables", "iptables-legacy": "iptables",
    "iptables-nft": "iptables", "iptables-legacy-save": "iptables",
    "iptables-legacy-restore": "iptables", "iptables-nft-save": "iptables",
    "iptables-nft-restore": "iptables", "bird": "bird2", "birdc": "bird2", "vtysh": "frr",
    "curl": "curl", "ping": "iputils-ping", "sysctl": "procps", "tcpdump": "tcpdump",
    "modprobe": "kmod", "busybox": "busybox-static", "podman": "podman",
    "mmdebstrap": "mmdebstrap", "git": "git", "runc": "runc",
    "musl-gcc": "musl-tools", "file": "file", "chroot": "coreutils", "unshare": "util-linux",
}

T = TypeVar("T")


# -- skipping, naming what is missing -----------------------------------------------------


def missing(*binaries: str, root: bool = False, root_for: str = "network namespaces",
            files: Mapping[str, str] | None = None, modules: Sequence[str] = ()) -> str | None:
    """Why a test cannot run here (the first thing missing), or None if nothing is.

    `files` maps a path to the apt package that installs it; `modules` are kernel
    modules that must be loaded or loadable.
    """
    if root and os.geteuid() != 0:
        return f"needs root ({root_for})"
    for binary in binaries:
        if not shutil.which(binary):
            package = APT_PACKAGES.get(binary)
            return f"{binary} not installed" + (f" (apt package {package})" if package else "")
    for path, package in (files or {}).items():
        if not Path(path).exists():
            return f"{path} not installed (apt package {package})"
    for module in modules:
        if not _module_available(module):
            return f"kernel module {module} not available in this kernel ({os.uname().release})"
    return None


def need(*binaries: str, root: bool = False, root_for: str = "network namespaces",
         files: Mapping[str, str] | None = None, modules: Sequence[str] = ()) -> None:
    """Skip the calling test or fixture unless everything named is here (see `missing`)."""
    reason = missing(*binaries, root=root, root_for=root_for, files=files, modules=modules)
    if reason:
        pytest.skip(reason)


def _module_available(module: str) -> bool:
    if Path(f"/sys/module/{module}").exists():
        return True
    modprobe = shutil.which("modprobe") or "/usr/sbin/modprobe"
    if not Path(modprobe).exists():
        return False
    return subprocess.run([modprobe, "-n", "-q", module], capture_output=True).returncode == 0


# -- waiting ----------------------------------------------------------------------------


def wait_until(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.2,
               what: str = "") -> T:
    """Call `predicate` every `interval` s until it returns something truthy; return that.

    After `timeout` s fails with an AssertionError naming `what` and the last value
    the predicate returned. Exceptions from the predicate propagate at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for "
                                 f"{what or predicate}; last value: {_short(value)}")
        time.sleep(interval)


def _short(value: object, limit: int = 500) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


# -- what this session made, for the leftover check ---------------------------------------


@dataclass
class _Made:
    namespaces: set[str] = field(default_factory=set)
    labs: set[str] = field(default_factory=set)
    kept_labs: dict[str, Lab] = field(default_factory=dict)
    processes: dict[tuple[int, int], str] = field(default_factory=dict)  # (pid, start) -> what


_made = _Made()


def unique_name(suffix: str = "") -> str:
    """A fresh `tt<8 hex><suffix>`: a namespace or lab name no other test or session uses."""
    return f"{PREFIX}{uuid.uuid4().hex[:8]}{suffix}"


def track_process(pid: int, what: str) -> None:
    """Remember a process a fixture started; the session fails if it outlives the session."""
    started = procs.start_time(pid)
    if started is not None:
        _made.processes[(pid, started)] = what


def start_etcd(directory: Path, **kwargs: Any) -> EtcdMember:
    """lab.etcd.start_single, skipping unless etcd is installed; the member is tracked."""
    need("etcd")
    member = start_single(directory, **kwargs)
    if member.proc is not None:
        track_process(member.proc.pid, f"etcd in {directory}")
    return member


def record_lab(name: str) -> str:
    """Remember a lab this session brings up (its namespaces are `<name>-*`)."""
    _made.labs.add(name)
    return name


def keep_lab(lab: Lab) -> bool:
    """True if labs are kept for debugging (TORTIE_KEEP_LAB=1); the session's end then says
    how to reach and remove `lab`."""
    if os.environ.get(KEEP_LAB_ENV, "") in ("", "0"):
        return False
    # Held to the end: the Lab holds Popens of processes that keep running, and a running
    # Popen that is garbage-collected warns (an error under this project's filterwarnings).
    _made.kept_labs[lab.name] = lab
    return True


# -- namespaces and veths -----------------------------------------------------------------


def make_netns(name: str | None = None) -> str:
    """Create namespace `name` (default: a fresh unique_name()) with lo up; return its name.

    Remove it with remove_netns; prefer the `netns` fixture or `new_netns`.
    """
    name = name or unique_name()
    assert name.startswith(PREFIX), f"test namespaces start with {PREFIX!r}: {name}"
    # Recorded before it exists, so no failure in between can leave one unrecorded;
    # forgotten again if `ip` refused, as then it is not ours.
    _made.namespaces.add(name)
    try:
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    except subprocess.CalledProcessError:
        _made.namespaces.discard(name)
        raise
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True,
                       capture_output=True)
    except BaseException:
        remove_netns(name)
        raise
    return name


def remove_netns(name: str) -> None:
    """Delete namespace `name`; any process still inside it is recorded as a leftover."""
    for pid in lab_netns.pids_in([name]).get(name, []):
        track_process(pid, f"process left in namespace {name}")
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    if name not in lab_netns.list_netns():
        _made.namespaces.discard(name)


@contextmanager
def new_netns(suffix: str = "") -> Iterator[str]:
    """A fresh namespace `tt<8 hex><suffix>` with lo up, removed on leaving, whatever happened.

    Skips (naming what is missing) unless root with iproute2.
    """
    need("ip", root=True)
    name = make_netns(unique_name(suffix))
    try:
        yield name
    finally:
        remove_netns(name)


def add_veth(ns: str, name: str, peer: str | None = None, *, peer_ns: str | None = None,
             address: str | None = None, peer_address: str | None = None,
             up: bool = True) -> tuple[str, str]:
    """A veth pair `name` in `ns` and `peer` in `peer_ns` (default: the same namespace).

    The peer defaults to `p` + the name's tail (interface names have 15 bytes at most).
    Addresses are CIDRs (`10.0.0.1/24`). Both ends go away with their namespaces.
    Returns (name, peer).
    """
    peer = peer or ("p" + name[-10:])[:15]
    other = peer_ns or ns
    lab_netns.batch([f"link add {name} type veth peer name {peer}"
                     + (f" netns {peer_ns}" if peer_ns else "")], ns)
    here = [f"addr add {address} dev {name}"] if address else []
    there = [f"addr add {peer_address} dev {peer}"] if peer_address else []
    if up:
        here.append(f"link set {name} up")
        there.append(f"link set {peer} up")
    if other == ns:
        lab_netns.batch(here + there, ns)
    else:
        lab_netns.batch(here, ns)
        lab_netns.batch(there, other)
    return name, peer


@pytest.fixture
def netns() -> Iterator[str]:
    """Name: netns. A fresh namespace `tt<8 hex>` with lo up; always removed afterwards."""
    with new_netns() as name:
        yield name


@pytest.fixture
def veth() -> Callable[..., tuple[str, str]]:
    """Name: veth. add_veth as a fixture: veth(ns, name, peer=None, peer_ns=..., address=...,
    peer_address=..., up=True) -> (name, peer). Removed with the namespaces they live in."""
    return add_veth


# -- tiers --------------------------------------------------------------------------------

_UNIT_DIR = Path(__file__).parent / "unit"


# Fixtures that need etcd, root or namespaces: a unit test using one is in the wrong tier.
_NOT_FOR_UNIT = frozenset({"etcd_server", "etcd_endpoint", "etcd_client", "private_etcd",
                           "netns", "veth"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests/unit's tests `unit` (so `-m unit` selects the tier) and refuse any of them
    that asks for etcd or a namespace."""
    for item in items:
        if _UNIT_DIR in item.path.parents:
            item.add_marker(pytest.mark.unit)
            wrong = _NOT_FOR_UNIT.intersection(getattr(item, "fixturenames", ()))
            if wrong:
                raise pytest.UsageError(f"{item.nodeid} is in tests/unit but uses "
                                        f"{', '.join(sorted(wrong))}: move it to its tier")


# -- the leftover check -------------------------------------------------------------------


def leftovers() -> list[str]:
    """What this session made that is still here, one line each (kept labs excepted)."""
    present = set(lab_netns.list_netns())
    found = [f"namespace {ns}" for ns in sorted(_made.namespaces & present)]
    for lab in sorted(_made.labs - _made.kept_labs.keys()):
        found += [f"namespace {ns} of lab {lab}" for ns in sorted(present)
                  if ns.startswith(f"{lab}-")]
    found += [f"process {pid} ({what})" for (pid, started), what in _made.processes.items()
              if procs.is_ours(pid, started)]
    return found


def _clean_up() -> None:
    """Remove what the check found: only what this session recorded, processes by PID."""
    from lab import teardown

    for (pid, started) in list(_made.processes):
        procs.terminate(pid, started)
    for lab in sorted(_made.labs - _made.kept_labs.keys()):
        teardown(lab)
    for ns in sorted(_made.namespaces):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


# trylast: after the runner plugin has torn down the session-scoped fixtures (it does so
# in its own pytest_sessionfinish when the run stopped early, e.g. with -x).
@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    found = leftovers()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if found:
        lines = ["the tests left these behind (now removed):", *(f"  {x}" for x in found)]
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_sep("!", "LEFTOVERS", red=True, bold=True)
            for line in lines:
                reporter.write_line(line, red=True)
        else:
            print("\n".join(lines))
        _clean_up()
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    for name in sorted(_made.kept_labs):
        note = (f"{KEEP_LAB_ENV}: kept lab {name}: `tortie-lab status --name {name}`, "
                f"`tortie-lab exec --name {name} node1 ip route`; remove it with "
                f"`tortie-lab down --name {name}`")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(note, yellow=True)
        else:
            print(note)
