"""ipset writer against the kernel (root, a throwaway netns).

Sets are created, patched, rewritten through a temp set and swap (also while
an iptables rule uses them), re-created on a type change, repaired after drift,
left alone on restart, and destroyed only once nothing references them; foreign
sets are never touched.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

import pytest

from agent.dataplane.ipsets import IPSetError, IPSets
from agent.dataplane.iptables import run_command
from agent.types import IPSet
from tests.dataplane.helpers import ns_exec
from tests.support import need

pytestmark = pytest.mark.root


@pytest.fixture(autouse=True)
def _needs() -> None:
    # The namespace itself comes from tests/support.py's `netns` fixture.
    need("ip", "ipset", root=True, root_for="network namespaces, ipset")


@pytest.fixture
def iptables() -> str:
    """Any working iptables, for rules that reference a set."""
    for exe in ("iptables-nft", "iptables-legacy", "iptables"):
        if shutil.which(exe):
            return exe
    pytest.skip("no iptables binary installed")


sh = ns_exec


def members(ns: str, name: str) -> list[str]:
    return sorted(sh(ns, "ipset", "list", name).split("Members:\n")[1].split())


def set_names(ns: str) -> list[str]:
    return sorted(sh(ns, "ipset", "list", "-n").split())


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str | None]] = []

    def __call__(self, argv: Sequence[str], input: str | None) -> subprocess.CompletedProcess[str]:
        self.calls.append((list(argv), input))
        return run_command(argv, input)

    def restores(self) -> list[str]:
        return [inp or "" for argv, inp in self.calls if "restore" in argv]


MASQ = IPSet("cali40masq-ipam-pools", "hash:net", frozenset({"10.65.0.0/16"}))
ALL = IPSet("cali40all-ipam-pools", "hash:net", frozenset({"10.65.0.0/16", "10.66.0.0/16"}))
HOSTS = IPSet("cali40all-hosts-net", "hash:net", frozenset({"192.168.1.11/32", "192.168.2.12"}))
V6 = IPSet("cali60all-ipam-pools", "hash:net", frozenset({"fd00:65::/48", "fd00:66::1/128"}))


@pytest.fixture
def programmed(netns: str) -> IPSets:
    sh(netns, "ipset", "restore", input="create KUBE-CLUSTER-IP hash:ip,port family inet\n"
                                        "add KUBE-CLUSTER-IP 10.96.0.1,tcp:443\n"
                                        "create cali-not-ours hash:ip family inet\n")
    s = IPSets(netns, runner=Recorder())
    s.set_desired([MASQ, ALL, HOSTS, V6])
    assert s.apply().writes == 1
    assert s.apply_deletions().writes == 0
    return s


def recorder(s: IPSets) -> Recorder:
    assert isinstance(s._runner, Recorder)
    return s._runner


def test_sets_created_with_their_members(netns: str, programmed: IPSets) -> None:
    assert set_names(netns) == ["KUBE-CLUSTER-IP", "cali-not-ours", "cali40all-hosts-net",
                                "cali40all-ipam-pools", "cali40masq-ipam-pools",
                                "cali60all-ipam-pools"]
    assert members(netns, "cali40all-ipam-pools") == ["10.65.0.0/16", "10.66.0.0/16"]
    assert members(netns, "cali40all-hosts-net") == ["192.168.1.11", "192.168.2.12"]
    assert members(netns, "cali60all-ipam-pools") == ["fd00:65::/48", "fd00:66::1"]
    listing = sh(netns, "ipset", "list", "cali40masq-ipam-pools")
    assert "Type: hash:net" in listing and "family inet " in listing
    assert "maxelem 1048576" in listing


def test_restart_with_unchanged_desired_state_writes_nothing(
        netns: str, programmed: IPSets) -> None:
    fresh = IPSets(netns, runner=Recorder())
    fresh.set_desired([V6, HOSTS, ALL, MASQ])  # any order, members in any spelling
    assert fresh.apply().writes == 0 and fresh.apply_deletions().writes == 0
    assert fresh.writes == 0 and fresh.reads == 1
    assert recorder(fresh).restores() == []


def test_changed_members_write_only_that_set(netns: str, programmed: IPSets) -> None:
    programmed.set_desired([MASQ, HOSTS, V6, IPSet(ALL.name, ALL.set_type,
                                                   ALL.members | {"10.67.0.0/16"})])
    assert programmed.apply().writes == 1
    assert recorder(programmed).restores()[-1] == "add cali40all-ipam-pools 10.67.0.0/16\n"
    assert members(netns, "cali40all-ipam-pools") == ["10.65.0.0/16", "10.66.0.0/16",
                                                      "10.67.0.0/16"]
    programmed.set_desired([MASQ, HOSTS, V6, IPSet(ALL.name, ALL.set_type,
                                                   frozenset({"10.65.0.0/16", "10.67.0.0/16"}))])
    assert programmed.apply().writes == 1
    assert recorder(programmed).restores()[-1] == "del cali40all-ipam-pools 10.66.0.0/16\n"


def test_big_change_swaps_through_a_temp_set_while_in_use(
        netns: str, iptables: str, programmed: IPSets) -> None:
    sh(netns, iptables, "-A", "INPUT", "-m", "set", "--match-set", "cali40all-hosts-net", "src",
       "-j", "ACCEPT")
    new_hosts = frozenset(f"192.168.{i}.1" for i in range(10, 40))
    programmed.set_desired([MASQ, ALL, V6, IPSet(HOSTS.name, "hash:net", new_hosts)])
    assert programmed.apply().writes == 1
    text = recorder(programmed).restores()[-1]
    assert text.splitlines()[:2] == ["create cali4t0 hash:net family inet maxelem 1048576",
                                     "flush cali4t0"]
    assert text.splitlines()[-2:] == ["swap cali4t0 cali40all-hosts-net", "destroy cali4t0"]
    assert members(netns, "cali40all-hosts-net") == sorted(new_hosts)
    assert "cali4t0" not in set_names(netns)
    programmed.resync()
    assert programmed.apply().writes == 0


def test_destroyed_set_is_repaired_on_resync(netns: str, programmed: IPSets) -> None:
    sh(netns, "ipset", "destroy", "cali40masq-ipam-pools")
    sh(netns, "ipset", "del", "cali40all-ipam-pools", "10.66.0.0/16")
    assert programmed.apply().writes == 0  # cached until a resync
    programmed.resync()
    assert programmed.apply().writes == 1
    assert recorder(programmed).restores()[-1] == (
        "add cali40all-ipam-pools 10.66.0.0/16\n"
        "create cali40masq-ipam-pools hash:net family inet maxelem 1048576\n"
        "add cali40masq-ipam-pools 10.65.0.0/16\n")
    assert members(netns, "cali40masq-ipam-pools") == ["10.65.0.0/16"]


def test_type_change_recreates_the_set_once_unreferenced(
        netns: str, iptables: str, programmed: IPSets) -> None:
    sh(netns, iptables, "-A", "INPUT", "-m", "set", "--match-set", "cali40all-hosts-net", "src",
       "-j", "ACCEPT")
    as_ips = IPSet(HOSTS.name, "hash:ip", frozenset({"192.168.1.11"}))
    programmed.set_desired([MASQ, ALL, V6, as_ips])
    res = programmed.apply()
    assert not res.ok  # the kernel cannot swap types, nor destroy a set in use
    err = res.errors[0]
    assert isinstance(err, IPSetError)
    assert "in use" in err.stderr and err.failed_line == "destroy cali40all-hosts-net"
    sh(netns, iptables, "-D", "INPUT", "1")
    res = programmed.apply()
    assert res.ok and res.writes == 1
    assert "Type: hash:ip" in sh(netns, "ipset", "list", "cali40all-hosts-net")
    assert members(netns, "cali40all-hosts-net") == ["192.168.1.11"]


def test_deletions_wait_until_nothing_references_the_set(
        netns: str, iptables: str, programmed: IPSets) -> None:
    sh(netns, iptables, "-A", "INPUT", "-m", "set", "--match-set", "cali40all-hosts-net", "src",
       "-j", "ACCEPT")
    programmed.set_desired([])
    assert programmed.apply().writes == 0  # updates never destroy
    res = programmed.apply_deletions()
    assert not res.ok and "in use" in str(res.errors[0])
    assert set_names(netns) == ["KUBE-CLUSTER-IP", "cali-not-ours", "cali40all-hosts-net"]
    sh(netns, iptables, "-D", "INPUT", "1")
    assert programmed.apply_deletions().ok
    assert set_names(netns) == ["KUBE-CLUSTER-IP", "cali-not-ours"]
    assert programmed.apply_deletions().writes == 0


def test_leftover_temp_set_is_cleaned_and_avoided(netns: str, programmed: IPSets) -> None:
    sh(netns, "ipset", "create", "cali4t0", "hash:net")
    sh(netns, "ipset", "add", "cali4t0", "1.2.3.0/24")
    programmed.resync()
    programmed.set_desired([MASQ, HOSTS, V6, IPSet(ALL.name, "hash:net", frozenset({"10.0.0.0/8"}))])
    assert programmed.apply().writes == 1
    assert "swap cali4t1 cali40all-ipam-pools" in recorder(programmed).restores()[-1]
    assert members(netns, "cali40all-ipam-pools") == ["10.0.0.0/8"]
    assert programmed.apply_deletions().writes == 1
    assert "cali4t0" not in set_names(netns)


def test_foreign_sets_are_never_touched(netns: str, programmed: IPSets) -> None:
    programmed.set_desired([])
    programmed.apply()
    programmed.apply_deletions()
    assert set_names(netns) == ["KUBE-CLUSTER-IP", "cali-not-ours"]
    assert members(netns, "KUBE-CLUSTER-IP") == ["10.96.0.1,tcp:443"]
    for _, inp in recorder(programmed).calls:
        assert "KUBE" not in (inp or "") and "cali-not-ours" not in (inp or "")
