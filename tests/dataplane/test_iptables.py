"""iptables writer against the kernel (root, a throwaway netns, both backends).

The natOutgoing set-up (felix/rules/nat.go) and the IPIP INPUT rules (felix/rules/static.go) are
programmed, checked in iptables-save / ipset output, disturbed by hand and
repaired, restarted (0 writes) and removed, with foreign rules, chains and sets
present throughout.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import pytest

from agent.dataplane.ipsets import IPSets
from agent.dataplane.iptables import (
    IptablesError,
    IptablesTable,
    detect_backend,
    run_command,
)
from agent.types import Chain, Hook, IPSet
from tests.dataplane.helpers import ns_exec
from tests.support import need

pytestmark = pytest.mark.root


@pytest.fixture(autouse=True)
def _needs() -> None:
    # The namespace itself comes from tests/support.py's `netns` fixture.
    need("ip", "ipset", root=True, root_for="network namespaces, iptables, ipset")


@pytest.fixture(params=["legacy", "nft"])
def backend(request: pytest.FixtureRequest) -> str:
    need("ip", "ipset", f"iptables-{request.param}-save", f"iptables-{request.param}-restore",
         root=True, root_for="network namespaces, iptables, ipset")
    return str(request.param)


sh = ns_exec


def save(ns: str, backend: str, table: str) -> list[str]:
    """The table's chain declarations and rules, as the kernel prints them."""
    return [line for line in sh(ns, f"iptables-{backend}-save", "-t", table).splitlines()
            if line.startswith((":", "-A"))]


def foreign(lines: Sequence[str]) -> list[str]:
    return [line for line in lines if "cali" not in line]


class Recorder:
    """The real runner, remembering every command and its input."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str | None]] = []

    def __call__(self, argv: Sequence[str], input: str | None) -> subprocess.CompletedProcess[str]:
        self.calls.append((list(argv), input))
        return run_command(argv, input)

    def restores(self) -> list[str]:
        """Inputs of the restores into the test namespace (not the scratch netns)."""
        return [inp or "" for argv, inp in self.calls
                if argv[0] == "ip" and any("restore" in a for a in argv)]


# Felix's natOutgoing (felix/rules/nat.go), as calc renders it.
HOOK_NAT = '-m comment --comment "cali:O3lYWMrLQYEMJtB5" -j cali-POSTROUTING'
TO_NAT_OUTGOING = '-m comment --comment "cali:Z-c7XtVd2Bq7s_hA" -j cali-nat-outgoing'
MASQ = ('-m comment --comment "cali:flqWnvo8yq4ULQLa" -m set --match-set cali40masq-ipam-pools '
        'src -m set ! --match-set cali40all-ipam-pools dst -j MASQUERADE --random-fully')
# IPIP INPUT rules (felix/rules/static.go), written loosely on purpose: iptables prints `-p 4` as
# `-p ipencap`, which the writer must not mistake for a difference.
HOOK_INPUT = '-m comment --comment "cali:Cz_u1IQiXIMmKD4c" -j cali-INPUT'
IPIP_ACCEPT = ('-p 4 -m comment --comment "cali:PajejrV4aFdkZojI" -m set --match-set '
               'cali40all-hosts-net src -m addrtype --dst-type LOCAL -j ACCEPT')
IPIP_DROP = '-p 4 -m comment --comment "cali:_wjq-Yrma8Ly1Svo" -j DROP'


def pools_sets(all_pools: frozenset[str] = frozenset({"10.65.0.0/16", "10.66.0.0/16"}),
               ) -> list[IPSet]:
    return [IPSet("cali40masq-ipam-pools", "hash:net", frozenset({"10.65.0.0/16"})),
            IPSet("cali40all-ipam-pools", "hash:net", all_pools),
            IPSet("cali40all-hosts-net", "hash:net", frozenset({"192.168.1.11", "192.168.2.12"}))]


def desired_chains(masq: str = MASQ) -> list[Chain]:
    return [Chain("nat", "cali-POSTROUTING", (TO_NAT_OUTGOING,)),
            Chain("nat", "cali-nat-outgoing", (masq,)),
            Chain("filter", "cali-INPUT", (IPIP_ACCEPT, IPIP_DROP))]


DESIRED_HOOKS = [Hook("nat", "POSTROUTING", HOOK_NAT), Hook("filter", "INPUT", HOOK_INPUT)]


class Writers:
    """The agent's apply order: ipset updates, iptables, ipset deletions (Felix's order)."""

    def __init__(self, ns: str, backend: str) -> None:
        self.recorder = Recorder()
        self.ipsets = IPSets(ns, runner=self.recorder)
        self.tables = {t: IptablesTable(t, backend, ns, runner=self.recorder)
                       for t in ("nat", "filter")}

    def set_desired(self, sets: list[IPSet], chains: list[Chain], hooks: list[Hook]) -> None:
        self.ipsets.set_desired(sets)
        for t in self.tables.values():
            t.set_desired(chains, hooks)

    def apply(self) -> int:
        results = [self.ipsets.apply(), *(t.apply() for t in self.tables.values()),
                   self.ipsets.apply_deletions()]
        assert all(r.ok for r in results), [r.errors for r in results]
        return sum(r.writes for r in results)

    def resync(self) -> None:
        self.ipsets.resync()
        for t in self.tables.values():
            t.resync()


def add_foreign_state(ns: str, backend: str) -> None:
    """What kube-proxy, docker and an admin might have put there before us."""
    sh(ns, f"iptables-{backend}-restore", "--noflush", input="""\
*nat
:KUBE-POSTROUTING - [0:0]
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
COMMIT
*filter
:USER-FW - [0:0]
-A USER-FW -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -j USER-FW
COMMIT
""")
    sh(ns, "ipset", "restore", input="create KUBE-CLUSTER-IP hash:ip,port family inet\n"
                                      "add KUBE-CLUSTER-IP 10.96.0.1,tcp:443\n")


@pytest.fixture
def programmed(netns: str, backend: str) -> Writers:
    """Foreign state, then tortie's natOutgoing and IPIP INPUT state on top of it."""
    add_foreign_state(netns, backend)
    w = Writers(netns, backend)
    w.set_desired(pools_sets(), desired_chains(), DESIRED_HOOKS)
    assert w.apply() == 3  # one ipset restore, one restore per table
    return w


def test_nat_outgoing_and_input_rules_as_iptables_save_prints_them(
        netns: str, backend: str, programmed: Writers) -> None:
    nat = save(netns, backend, "nat")
    assert [line for line in nat if "cali" in line] == [
        ":cali-POSTROUTING - [0:0]",
        ":cali-nat-outgoing - [0:0]",
        f"-A POSTROUTING {HOOK_NAT}",
        f"-A cali-POSTROUTING {TO_NAT_OUTGOING}",
        f"-A cali-nat-outgoing {MASQ}",
    ]
    assert [line for line in nat if line.startswith("-A POSTROUTING")][0] == f"-A POSTROUTING {HOOK_NAT}"
    filt = save(netns, backend, "filter")
    assert [line for line in filt if "cali" in line] == [
        ":cali-INPUT - [0:0]",
        f"-A INPUT {HOOK_INPUT}",
        '-A cali-INPUT -p ipencap -m comment --comment "cali:PajejrV4aFdkZojI" -m set '
        "--match-set cali40all-hosts-net src -m addrtype --dst-type LOCAL -j ACCEPT",
        '-A cali-INPUT -p ipencap -m comment --comment "cali:_wjq-Yrma8Ly1Svo" -j DROP',
    ]
    listing = sh(netns, "ipset", "list", "cali40all-ipam-pools")
    assert "Type: hash:net" in listing
    assert sorted(listing.split("Members:\n")[1].split()) == ["10.65.0.0/16", "10.66.0.0/16"]
    assert sh(netns, "ipset", "list", "cali40masq-ipam-pools").split("Members:\n")[1].split() == [
        "10.65.0.0/16"]


def test_foreign_rules_chains_and_sets_survive_every_apply(
        netns: str, backend: str, programmed: Writers) -> None:
    before = {t: foreign(save(netns, backend, t)) for t in ("nat", "filter")}
    assert "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE" in before["nat"]
    assert ":USER-FW - [0:0]" in before["filter"]

    def unchanged() -> None:
        for t in ("nat", "filter"):
            assert foreign(save(netns, backend, t)) == before[t]
        assert "10.96.0.1,tcp:443" in sh(netns, "ipset", "list", "KUBE-CLUSTER-IP")

    programmed.set_desired(pools_sets(frozenset({"10.65.0.0/16"})),
                           desired_chains(MASQ.replace(" --random-fully", "")), DESIRED_HOOKS)
    assert programmed.apply() == 2
    unchanged()
    programmed.resync()
    assert programmed.apply() == 0
    unchanged()
    programmed.set_desired([], [], [])
    assert programmed.apply() == 3
    unchanged()


def test_flushed_chain_is_repaired_on_resync(netns: str, backend: str, programmed: Writers) -> None:
    sh(netns, f"iptables-{backend}", "-t", "nat", "-F", "cali-nat-outgoing")
    assert programmed.apply() == 0  # the cached view is trusted until a resync
    programmed.resync()
    assert programmed.apply() == 1
    assert f"-A cali-nat-outgoing {MASQ}" in save(netns, backend, "nat")
    # Only that chain was written.
    assert programmed.recorder.restores()[-1].splitlines() == [
        "*nat", ":cali-nat-outgoing - [0:0]", "-F cali-nat-outgoing",
        f"-A cali-nat-outgoing {MASQ}", "COMMIT"]


def test_deleted_hook_is_repaired_on_resync(netns: str, backend: str, programmed: Writers) -> None:
    sh(netns, f"iptables-{backend}", "-t", "nat", "-D", "POSTROUTING",
       "-m", "comment", "--comment", "cali:O3lYWMrLQYEMJtB5", "-j", "cali-POSTROUTING")
    sh(netns, f"iptables-{backend}", "-t", "filter", "-D", "INPUT", "1")
    programmed.resync()
    assert programmed.apply() == 2
    assert [r for r in save(netns, backend, "nat") if r.startswith("-A POSTROUTING")][0] == \
        f"-A POSTROUTING {HOOK_NAT}"
    assert [r for r in save(netns, backend, "filter") if r.startswith("-A INPUT")] == [
        f"-A INPUT {HOOK_INPUT}", "-A INPUT -j USER-FW"]


def test_moved_hook_is_left_duplicated_hook_is_cleaned(
        netns: str, backend: str, programmed: Writers) -> None:
    """A hook is only inserted when missing; extra copies of ours are removed."""
    ipt = f"iptables-{backend}"
    sh(netns, ipt, "-t", "nat", "-I", "POSTROUTING", "1", "-j", "RETURN")
    programmed.resync()
    assert programmed.apply() == 0  # still there, only no longer first: left alone
    sh(netns, ipt, "-t", "nat", "-A", "POSTROUTING", "-m", "comment",
       "--comment", "cali:O3lYWMrLQYEMJtB5", "-j", "cali-POSTROUTING")
    programmed.resync()
    assert programmed.apply() == 1
    assert [r for r in save(netns, backend, "nat") if r.startswith("-A POSTROUTING")] == [
        f"-A POSTROUTING {HOOK_NAT}", "-A POSTROUTING -j RETURN",
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE"]


def test_destroyed_ipset_is_repaired_on_resync(netns: str, backend: str, programmed: Writers) -> None:
    # The set cannot go while a rule uses it: empty the chain first, as an admin would.
    sh(netns, f"iptables-{backend}", "-t", "nat", "-F", "cali-nat-outgoing")
    sh(netns, "ipset", "destroy", "cali40masq-ipam-pools")
    programmed.resync()
    assert programmed.apply() == 2  # the set, then the chain
    assert sh(netns, "ipset", "list", "cali40masq-ipam-pools").split("Members:\n")[1].split() == [
        "10.65.0.0/16"]
    assert f"-A cali-nat-outgoing {MASQ}" in save(netns, backend, "nat")


def test_restart_with_unchanged_desired_state_writes_nothing(
        netns: str, backend: str, programmed: Writers) -> None:
    fresh = Writers(netns, backend)
    fresh.set_desired(pools_sets(), desired_chains(), DESIRED_HOOKS)
    assert fresh.apply() == 0
    assert fresh.recorder.restores() == []
    assert fresh.ipsets.writes == 0 and all(t.writes == 0 for t in fresh.tables.values())
    assert fresh.ipsets.reads == 1 and all(t.reads == 1 for t in fresh.tables.values())
    # The loose `-p 4` rules (filter only) were recognised by loading them once into
    # a scratch netns, not by rewriting them; what was learnt is kept.
    scratch = [argv for argv, _ in fresh.recorder.calls if argv[0] == "unshare"]
    assert len(scratch) == 1 and scratch[0][-1] == "filter"
    fresh.resync()
    assert fresh.apply() == 0
    assert len([argv for argv, _ in fresh.recorder.calls if argv[0] == "unshare"]) == 1


def test_changed_rule_rewrites_only_its_chain(netns: str, backend: str, programmed: Writers) -> None:
    chains = desired_chains(MASQ.replace("MASQUERADE --random-fully", "SNAT --to-source 192.168.1.11"))
    programmed.set_desired(pools_sets(), chains, DESIRED_HOOKS)
    assert programmed.apply() == 1
    text = programmed.recorder.restores()[-1]
    assert text.splitlines()[:3] == ["*nat", ":cali-nat-outgoing - [0:0]", "-F cali-nat-outgoing"]
    assert "cali-POSTROUTING" not in text and "INPUT" not in text
    assert any("-j SNAT --to-source 192.168.1.11" in r for r in save(netns, backend, "nat"))


def test_removing_everything_leaves_only_foreign_state(
        netns: str, backend: str, programmed: Writers) -> None:
    programmed.set_desired([], [], [])
    assert programmed.apply() == 3  # nat, filter, ipset deletions
    for t in ("nat", "filter"):
        assert not [line for line in save(netns, backend, t) if "cali" in line]
    assert sh(netns, "ipset", "list", "-n").split() == ["KUBE-CLUSTER-IP"]
    assert ":KUBE-POSTROUTING - [0:0]" in save(netns, backend, "nat")
    assert "-A INPUT -j USER-FW" in save(netns, backend, "filter")
    assert programmed.apply() == 0


def test_chain_still_referenced_by_a_foreign_rule_is_emptied_then_removed_later(
        netns: str, backend: str, programmed: Writers) -> None:
    # Added behind the writer's back: its first transaction fails on the -X,
    # it re-reads, sees the reference and empties the chain instead.
    sh(netns, f"iptables-{backend}", "-t", "nat", "-A", "KUBE-POSTROUTING", "-j", "cali-nat-outgoing")
    programmed.set_desired(pools_sets(), [c for c in desired_chains() if c.name == "cali-INPUT"]
                           + [Chain("nat", "cali-POSTROUTING", ())], DESIRED_HOOKS)
    assert programmed.apply() == 2
    nat = save(netns, backend, "nat")
    assert ":cali-nat-outgoing - [0:0]" in nat  # kept, but empty
    assert not [r for r in nat if r.startswith("-A cali-nat-outgoing")]
    assert programmed.apply() == 0
    sh(netns, f"iptables-{backend}", "-t", "nat", "-D", "KUBE-POSTROUTING", "-j", "cali-nat-outgoing")
    programmed.resync()
    assert programmed.apply() == 1
    assert ":cali-nat-outgoing - [0:0]" not in save(netns, backend, "nat")


def test_bad_rule_fails_whole_transaction_with_context(
        netns: str, backend: str, programmed: Writers) -> None:
    before = save(netns, backend, "nat")
    nat = programmed.tables["nat"]
    nat.set_desired([Chain("nat", "cali-POSTROUTING", (TO_NAT_OUTGOING, "-j cali-missing")),
                     Chain("nat", "cali-nat-outgoing", ("-j RETURN",))], DESIRED_HOOKS)
    res = nat.apply()
    assert res.writes == 2 and not res.ok  # tried, re-read, tried again
    err = res.errors[0]
    assert isinstance(err, IptablesError)
    assert err.returncode != 0 and err.stderr
    assert "--noflush" in err.argv and err.argv[:3] == ["ip", "netns", "exec"]
    assert save(netns, backend, "nat") == before  # atomic: nothing of it landed
    nat.set_desired(desired_chains(), DESIRED_HOOKS)
    assert nat.apply().writes == 0  # re-read: the kernel still matches


def test_detect_backend_follows_what_the_namespace_uses(netns: str) -> None:
    need("iptables-legacy-save", "iptables-nft-save")
    assert detect_backend(netns) == "nft"  # nothing anywhere
    sh(netns, "iptables-legacy", "-t", "mangle", "-N", "KUBE-KUBELET-CANARY")
    assert detect_backend(netns) == "legacy"  # kubelet's canary says where it lives
    assert detect_backend(netns, specified="nft") == "nft"  # explicit wins
    sh(netns, "iptables-nft", "-t", "mangle", "-N", "KUBE-KUBELET-CANARY")
    sh(netns, "iptables-nft", "-A", "INPUT", "-j", "ACCEPT")
    assert detect_backend(netns) == "nft"  # canaries in both: more rules wins
    for _ in range(10):
        sh(netns, "iptables-legacy", "-A", "INPUT", "-j", "ACCEPT")
    assert detect_backend(netns) == "legacy"  # Felix: >= 10 legacy rules
    with pytest.raises(ValueError, match="IptablesBackend"):
        detect_backend(netns, specified="bpf")
