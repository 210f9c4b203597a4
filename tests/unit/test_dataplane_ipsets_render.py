"""ipset writer, pure parts (no root): parsing real `ipset save` output, member forms,
planning and rendering, and the apply loop against an in-memory stand-in for ipset."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import pytest

from agent.dataplane.ipsets import (
    DEFAULT_MAXELEM,
    IPSetError,
    IPSets,
    SetState,
    canonical_member,
    desired_state,
    parse_save,
    parse_terse_counts,
    plan_deletions,
    plan_updates,
    render_deletions,
    render_recreates,
    render_updates,
    temp_names,
)
from agent.types import IPSet

# Captured from ipset 7.17 (`ipset save` in a netns), verbatim: ours, a kube-proxy-like
# set, a v6 set and a temp set left behind by an interrupted rewrite.
IPSET_SAVE = """\
create cali40masq-ipam-pools hash:net family inet hashsize 1024 maxelem 1048576 bucketsize 12 initval 0xf8194a56
add cali40masq-ipam-pools 10.65.0.0/16
create cali40all-ipam-pools hash:net family inet hashsize 1024 maxelem 1048576 bucketsize 12 initval 0x41e4c427
add cali40all-ipam-pools 10.66.0.0/16
add cali40all-ipam-pools 10.65.0.0/16
create cali40all-hosts-net hash:net family inet hashsize 1024 maxelem 1048576 bucketsize 12 initval 0xa726ceb7
add cali40all-hosts-net 192.168.1.11
create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0xb0982a3f
add KUBE-CLUSTER-IP 10.96.0.1,tcp:443
create cali60all-ipam-pools hash:net family inet6 hashsize 1024 maxelem 1048576 bucketsize 12 initval 0x8b352822
add cali60all-ipam-pools fd00:65::/48
create cali4t0 hash:net family inet hashsize 1024 maxelem 1048576 bucketsize 12 initval 0xfce4748d
"""


def state(name: str, members: set[str], set_type: str = "hash:net",
          maxelem: int = DEFAULT_MAXELEM) -> SetState:
    family = "inet6" if name.startswith("cali6") else "inet"
    return SetState(name, set_type, family, maxelem, frozenset(members))


def test_parse_real_save_output_keeps_only_ours() -> None:
    sets = parse_save(IPSET_SAVE)
    assert sorted(sets) == ["cali40all-hosts-net", "cali40all-ipam-pools",
                            "cali40masq-ipam-pools", "cali4t0", "cali60all-ipam-pools"]
    assert sets["cali40all-ipam-pools"] == state("cali40all-ipam-pools",
                                                 {"10.65.0.0/16", "10.66.0.0/16"})
    assert sets["cali60all-ipam-pools"].family == "inet6"
    assert sets["cali4t0"].members == frozenset()


def test_parse_default_maxelem_and_flags() -> None:
    sets = parse_save("create cali40c hash:net family inet hashsize 1024 maxelem 65536 comment "
                      "bucketsize 12 initval 0x93f6aa5e\n"
                      'add cali40c 10.1.0.0/16 comment "hi there"\n')
    assert sets["cali40c"] == state("cali40c", {"10.1.0.0/16"}, maxelem=65536)


@pytest.mark.parametrize(("member", "set_type", "family", "want"), [
    ("10.65.0.0/16", "hash:net", "inet", "10.65.0.0/16"),
    ("10.65.1.5/16", "hash:net", "inet", "10.65.0.0/16"),
    ("10.0.0.1/32", "hash:net", "inet", "10.0.0.1"),  # ipset prints hosts bare
    ("10.0.0.1", "hash:ip", "inet", "10.0.0.1"),
    ("fd00:0:0::1/128", "hash:net", "inet6", "fd00::1"),
    ("FD00:65::/48", "hash:net", "inet6", "fd00:65::/48"),
    ("10.1.0.0/16,80", "hash:net,port", "inet", "10.1.0.0/16,tcp:80"),
    ("10.1.0.1,UDP:53", "hash:ip,port", "inet", "10.1.0.1,udp:53"),
    ("10.1.0.1-10.1.0.9", "hash:ip", "inet", "10.1.0.1-10.1.0.9"),
    ("eth0", "hash:net,iface", "inet", "eth0"),  # wrong arity: kept as written
    ("anything", "list:set", "inet", "anything"),
])
def test_canonical_member(member: str, set_type: str, family: str, want: str) -> None:
    assert canonical_member(member, set_type, family) == want


@pytest.mark.parametrize(("member", "set_type", "family", "msg"), [
    ("fd00::/64", "hash:net", "inet", "IPv4"),
    ("10.0.0.0/8", "hash:net", "inet6", "IPv6"),
    ("10.0.0.0/8", "hash:ip", "inet", "addresses, not networks"),
    ("not-an-ip", "hash:net", "inet", "not a valid"),
])
def test_bad_members_are_refused(member: str, set_type: str, family: str, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        canonical_member(member, set_type, family)


def test_desired_state_validates_names() -> None:
    with pytest.raises(ValueError, match="cali40"):
        desired_state(IPSet("KUBE-X", "hash:net", frozenset()))
    with pytest.raises(ValueError, match="31"):
        desired_state(IPSet("cali40" + "x" * 30, "hash:net", frozenset()))
    with pytest.raises(ValueError, match="cali60v6.*IPv6"):
        desired_state(IPSet("cali60v6", "hash:net", frozenset({"10.0.0.0/8"})))
    with pytest.raises(ValueError, match="maxelem"):
        desired_state(IPSet("cali40a", "hash:ip", frozenset({"10.0.0.1", "10.0.0.2"})), maxelem=1)
    assert desired_state(IPSet("cali60v6", "hash:net", frozenset({"fd00::/64"}))).family == "inet6"


def test_unchanged_plans_nothing() -> None:
    kernel = parse_save(IPSET_SAVE)
    desired = {n: kernel[n] for n in ("cali40all-ipam-pools", "cali40masq-ipam-pools")}
    assert plan_updates(desired, kernel) == []
    assert render_updates([]) == ""


def test_create_update_rewrite_recreate() -> None:
    kernel = {
        "cali40upd": state("cali40upd", {f"10.0.{i}.0/24" for i in range(10)}),
        "cali40big": state("cali40big", {"10.0.0.0/24", "10.0.1.0/24"}),
        "cali40meta": state("cali40meta", {"10.0.0.0/24"}, maxelem=65536),
        "cali40type": state("cali40type", {"10.0.0.1"}, set_type="hash:ip"),
        "cali4t0": state("cali4t0", set()),  # leftover: temp names avoid it
    }
    desired = {
        "cali40new": state("cali40new", {"10.9.0.0/16", "10.8.0.0/16"}),
        "cali40upd": state("cali40upd", {f"10.0.{i}.0/24" for i in range(1, 11)}),
        "cali40big": state("cali40big", {"10.1.0.0/24", "10.1.1.0/24"}),
        "cali40meta": state("cali40meta", {"10.0.0.0/24"}),
        "cali40type": state("cali40type", {"10.0.0.0/24"}),
    }
    changes = plan_updates(desired, kernel)
    assert [(c.name, c.how) for c in changes] == [
        ("cali40big", "rewrite"), ("cali40meta", "rewrite"), ("cali40new", "create"),
        ("cali40type", "recreate"), ("cali40upd", "update")]
    assert render_updates(changes, taken=kernel) == (
        "create cali4t1 hash:net family inet maxelem 1048576\n"
        "flush cali4t1\n"
        "add cali4t1 10.1.0.0/24\n"
        "add cali4t1 10.1.1.0/24\n"
        "swap cali4t1 cali40big\n"
        "destroy cali4t1\n"
        "create cali4t2 hash:net family inet maxelem 1048576\n"
        "flush cali4t2\n"
        "add cali4t2 10.0.0.0/24\n"
        "swap cali4t2 cali40meta\n"
        "destroy cali4t2\n"
        "create cali40new hash:net family inet maxelem 1048576\n"
        "add cali40new 10.8.0.0/16\n"
        "add cali40new 10.9.0.0/16\n"
        "del cali40upd 10.0.0.0/24\n"
        "add cali40upd 10.0.10.0/24\n")
    assert render_recreates(changes) == (
        "destroy cali40type\n"
        "create cali40type hash:net family inet maxelem 1048576\n"
        "add cali40type 10.0.0.0/24\n")


def test_emptying_a_set_rewrites_it() -> None:
    changes = plan_updates({"cali40a": state("cali40a", set())},
                           {"cali40a": state("cali40a", {"10.0.0.0/8"})})
    assert [c.how for c in changes] == ["rewrite"]


def test_temp_names_per_family() -> None:
    assert temp_names(2, "inet", ["cali4t0"]) == ["cali4t1", "cali4t2"]
    assert temp_names(1, "inet6", ["cali4t0"]) == ["cali6t0"]


def test_deletions_are_ours_only_and_include_leftover_temps() -> None:
    kernel = parse_save(IPSET_SAVE)
    names = plan_deletions({"cali40all-ipam-pools", "cali40masq-ipam-pools"}, kernel)
    assert names == ["cali40all-hosts-net", "cali4t0", "cali60all-ipam-pools"]
    assert render_deletions(names) == ("destroy cali40all-hosts-net\ndestroy cali4t0\n"
                                       "destroy cali60all-ipam-pools\n")


# --- the apply loop against a stand-in kernel ---------------------------------------------------


class FakeIPSet:
    """Plays `ipset save` / `ipset -exist restore` on an in-memory kernel."""

    def __init__(self, text: str = "") -> None:
        self.meta: dict[str, tuple[str, str]] = {}
        self.members: dict[str, set[str]] = {}
        for line in text.splitlines():
            op, name, arg, *rest = line.split()
            if op == "create":
                self.meta[name] = (arg, rest[1])
                self.members[name] = set()
            else:
                self.members[name].add(arg)
        self.in_use: set[str] = set()
        self.calls: list[tuple[list[str], str | None]] = []

    def restores(self) -> list[str]:
        return [inp or "" for argv, inp in self.calls if "restore" in argv]

    def run(self, argv: Sequence[str], input: str | None) -> subprocess.CompletedProcess[str]:
        self.calls.append((list(argv), input))
        if argv[-1] == "save":
            out = []
            for n, (t, fam) in self.meta.items():
                out.append(f"create {n} {t} family {fam} hashsize 1024 maxelem 1048576")
                out += [f"add {n} {m}" for m in sorted(self.members[n])]
            return subprocess.CompletedProcess(argv, 0, "\n".join(out) + "\n", "")
        for i, line in enumerate((input or "").splitlines(), 1):
            op, name, *rest = line.split()
            if op == "destroy" and name in self.in_use:
                return subprocess.CompletedProcess(
                    argv, 1, "", f"ipset v7.17: Error in line {i}: Set cannot be destroyed: "
                                 "it is in use by a kernel component\n")
            if op == "create":
                self.meta[name] = (rest[0], rest[2])
                self.members.setdefault(name, set())
            elif op == "add":
                self.members[name].add(rest[0])
            elif op == "del":
                self.members[name].discard(rest[0])
            elif op == "flush":
                self.members[name] = set()
            elif op == "swap":
                other = rest[0]
                self.members[name], self.members[other] = self.members[other], self.members[name]
            elif op == "destroy":
                self.meta.pop(name, None)
                self.members.pop(name, None)
        return subprocess.CompletedProcess(argv, 0, "", "")


POOLS = [IPSet("cali40masq-ipam-pools", "hash:net", frozenset({"10.65.0.0/16"})),
         IPSet("cali40all-ipam-pools", "hash:net", frozenset({"10.65.0.0/16", "10.66.0.0/16"}))]


def test_apply_converges_then_writes_nothing_even_after_restart() -> None:
    fake = FakeIPSet()
    s = IPSets(runner=fake.run)
    s.set_desired(POOLS)
    assert s.apply().writes == 1
    assert fake.members["cali40all-ipam-pools"] == {"10.65.0.0/16", "10.66.0.0/16"}
    calls = len(fake.calls)
    assert s.apply().writes == 0 and s.apply_deletions().writes == 0
    assert len(fake.calls) == calls
    again = IPSets(runner=fake.run)
    again.set_desired(POOLS)
    assert again.apply().writes == 0 and again.apply_deletions().writes == 0
    assert again.writes == 0


def test_drift_check_counts_members_and_repairs_only_the_difference() -> None:
    fake = FakeIPSet()
    terse = fake.run

    def run(argv: Sequence[str], input: str | None) -> subprocess.CompletedProcess[str]:
        if "-terse" in argv:  # headers only, as `ipset list -terse` prints them
            fake.calls.append((list(argv), input))
            out = "".join(f"Name: {n}\nType: {t}\nReferences: 0\nNumber of entries: "
                          f"{len(fake.members[n])}\n\n" for n, (t, _) in fake.meta.items())
            return subprocess.CompletedProcess(argv, 0, out, "")
        return terse(argv, input)

    s = IPSets(runner=run)
    assert not s.check_drift() and fake.calls == []  # nothing read yet
    s.set_desired(POOLS)
    s.apply()
    fake.meta["foreign"] = ("hash:ip", "inet")
    fake.members["foreign"] = {"10.1.1.1"}
    assert not s.check_drift()
    fake.members["cali40all-ipam-pools"].discard("10.66.0.0/16")
    assert s.check_drift()
    assert s.apply().writes == 1
    assert fake.restores()[-1] == "add cali40all-ipam-pools 10.66.0.0/16\n"
    assert fake.members["foreign"] == {"10.1.1.1"}
    assert not s.check_drift()


def test_parse_terse_counts_keeps_only_ours() -> None:
    text = ("Name: cali40x\nType: hash:ip\nNumber of entries: 3\n\n"
            "Name: foo\nType: hash:net\nNumber of entries: 1\n")
    assert parse_terse_counts(text) == {"cali40x": 3}


def test_changed_members_write_only_that_set() -> None:
    fake = FakeIPSet()
    s = IPSets(runner=fake.run)
    s.set_desired(POOLS)
    s.apply()
    s.set_desired([POOLS[0], IPSet("cali40all-ipam-pools", "hash:net",
                                   frozenset({"10.65.0.0/16", "10.66.0.0/16", "10.67.0.0/16"}))])
    assert s.apply().writes == 1
    assert fake.restores()[-1] == "add cali40all-ipam-pools 10.67.0.0/16\n"


def test_deletions_go_on_past_a_set_in_use() -> None:
    fake = FakeIPSet(IPSET_SAVE)
    fake.in_use.add("cali40all-hosts-net")
    s = IPSets(netns="ns1", runner=fake.run)
    s.set_desired([])
    res = s.apply_deletions()
    assert not res.ok
    err = res.errors[0]
    assert isinstance(err, IPSetError)
    assert err.argv == ["ip", "netns", "exec", "ns1", "ipset", "-exist", "restore"]
    assert err.returncode == 1 and "in use" in err.stderr
    assert err.failed_line == "destroy cali40all-hosts-net"
    assert sorted(fake.meta) == ["KUBE-CLUSTER-IP", "cali40all-hosts-net"]
    fake.in_use.clear()
    assert s.apply_deletions().ok
    assert sorted(fake.meta) == ["KUBE-CLUSTER-IP"]
