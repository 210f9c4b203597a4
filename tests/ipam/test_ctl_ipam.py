"""`ctl ipam ...` end to end (in-process) against a real etcd: formats and bad input."""

from __future__ import annotations

import json

import pytest

from datastore.resources import IPPool
from ipam.allocator import Allocator

from .conftest import dump, make_node, make_pool

POOLS_HEADER = (
    "+----------+-------------------+------------+------------+-------------------+\n"
    "| GROUPING |       CIDR        | IPS TOTAL  | IPS IN USE |     IPS FREE      |\n"
    "+----------+-------------------+------------+------------+-------------------+\n"
)
POOLS_FOOTER = "+----------+-------------------+------------+------------+-------------------+\n"


@pytest.fixture
def cluster(etcd_client, store):
    make_pool(store, "p4", "10.65.0.0/16")
    make_pool(store, "p6", "fd5f:abcd:64::/48")
    make_node(store, "node1")
    make_node(store, "node2")
    a = Allocator(etcd_client)
    for i in range(5):
        a.assign_ip(f"10.65.79.{i + 1}", "node1", f"pod-{i}",
                    {"pod": f"web-{i}", "namespace": "default"})
    return a


def test_show_pools(ctl, cluster):
    r = ctl("ipam", "show")
    assert r.rc == 0 and r.err == ""
    assert r.out == POOLS_HEADER + (
        "| IP Pool  | 10.65.0.0/16      |      65536 | 5 (0%)     | 65531 (100%)      |\n"
        "| IP Pool  | fd5f:abcd:64::/48 | 1.2089e+24 | 0 (0%)     | 1.2089e+24 (100%) |\n"
    ) + POOLS_FOOTER


def test_show_blocks_with_an_orphan(ctl, cluster, store):
    make_pool(store, "gone", "10.66.0.0/16", blockSize=29)
    for i in range(8):
        cluster.assign_ip(f"10.66.137.{224 + i}", "node2", f"x{i}")
    store.delete(IPPool, "gone")
    r = ctl("ipam", "show", "--show-blocks")
    assert r.rc == 0
    assert r.out == POOLS_HEADER + (
        "| IP Pool  | 10.65.0.0/16      |      65536 | 5 (0%)     | 65531 (100%)      |\n"
        "| Block    | 10.65.79.0/26     |         64 | 5 (8%)     | 59 (92%)          |\n"
        "| IP Pool  | fd5f:abcd:64::/48 | 1.2089e+24 | 0 (0%)     | 1.2089e+24 (100%) |\n"
        "| Block    | 10.66.137.224/29  |          8 | 8 (100%)   | 0 (0%)            |\n"
    ) + POOLS_FOOTER


def test_show_ip(ctl, cluster):
    r = ctl("ipam", "show", "--ip=10.65.79.2")
    assert r.rc == 0
    assert r.out == ("IP 10.65.79.2 is in use\nHandle ID: pod-1\nActive Owner Attributes:\n"
                     "  namespace: default\n  node: node1\n  pod: web-1\n")
    assert ctl("ipam", "show", "--ip", "10.65.79.9").out == "10.65.79.9 is not assigned\n"
    assert ctl("ipam", "show", "--ip", "10.99.0.1").out == "10.99.0.1 is not assigned\n"


def test_show_borrowed(ctl, cluster):
    cluster.assign_ip("10.65.79.40", "node2", "pod-b", {"pod": "db", "namespace": "prod"})
    cluster.assign_ip("10.65.79.41", "node2", "vxlan-tunnel-addr-node2",
                      {"type": "vxlanTunnelAddress"})
    r = ctl("ipam", "show", "--show-borrowed")
    assert r.rc == 0
    assert r.out == (
        "+-------------+----------------+---------------+-------------+--------------------+-------------------------+\n"
        "|     IP      | BORROWING-NODE |     BLOCK     | BLOCK OWNER |        TYPE        |      ALLOCATED-TO       |\n"
        "+-------------+----------------+---------------+-------------+--------------------+-------------------------+\n"
        "| 10.65.79.40 | node2          | 10.65.79.0/26 | node1       | pod                | prod/db                 |\n"
        "| 10.65.79.41 | node2          | 10.65.79.0/26 | node1       | vxlanTunnelAddress | vxlan-tunnel-addr-node2 |\n"
        "+-------------+----------------+---------------+-------------+--------------------+-------------------------+\n"
    )


def test_configure_and_show_configuration(ctl, etcd_client):
    table = (
        "+--------------------+-------+\n"
        "|      PROPERTY      | VALUE |\n"
        "+--------------------+-------+\n"
        "| StrictAffinity     | {s} |\n"
        "| AutoAllocateBlocks | true  |\n"
        "| MaxBlocksPerHost   | {m:>5} |\n"
        "+--------------------+-------+\n"
    )
    assert ctl("ipam", "show", "--show-configuration").out == table.format(s="false", m=0)
    r = ctl("ipam", "configure", "--strictaffinity=true", "--max-blocks-per-host=4")
    assert r.rc == 0 and r.out == ("Successfully set StrictAffinity to: true\n"
                                   "Successfully set MaxBlocksPerHost to: 4\n")
    assert ctl("ipam", "show", "--show-configuration").out == table.format(s="true ", m=4)
    stored = json.loads(etcd_client.get("/calico/ipam/v2/config").value)
    assert stored == {"strict_affinity": True, "auto_allocate_blocks": True, "maxBlocksPerHost": 4}
    # Calico's cross-field rule: blocks per host needs strict affinity. Nothing is written.
    before = dump(etcd_client)
    r = ctl("ipam", "configure", "--strictaffinity=false")
    assert r.rc == 1 and "maxBlocksPerHost requires strictAffinity" in r.err
    assert dump(etcd_client) == before
    assert ctl("ipam", "configure", "--strictaffinity=false", "--max-blocks-per-host=0").rc == 0


def test_assign_and_release_commands(ctl, etcd_client, store):
    make_pool(store, "p4", "10.65.0.0/16")
    r = ctl("ipam", "assign", "--node", "node1", "--handle", "h1", "--num", "3")
    assert r.rc == 0 and len(r.out.split()) == 3
    ips = r.out.split()
    r = ctl("ipam", "assign", "--node", "node1", "--handle", "h2", "--ip", "10.65.1.1",
            "--use", "Tunnel", "--attr", "type=ipipTunnelAddress")
    assert r.rc == 0 and r.out == "10.65.1.1\n"
    assert "  type: ipipTunnelAddress" in ctl("ipam", "show", "--ip", "10.65.1.1").out
    r = ctl("ipam", "assign", "--node", "node1", "--handle", "h3", "--ip", "10.65.1.1")
    assert r.rc == 1 and r.err == "IP address 10.65.1.1 is already assigned (handle h2)\n"
    r = ctl("ipam", "release", "--ip=10.65.1.1")
    assert r.rc == 0 and r.out == "Successfully released IP address 10.65.1.1\n"
    r = ctl("ipam", "release", "--ip=10.65.1.1")
    assert r.rc == 1 and r.err == "IP address 10.65.1.1 is not assigned\n"
    r = ctl("ipam", "release", "--handle", "h1")
    assert r.rc == 0 and sorted(r.out.splitlines()[:-1]) == sorted(ips)
    assert r.out.splitlines()[-1] == "Released 3 IPs of handle h1"


def test_check_and_release_from_report(ctl, etcd_client, store, tmp_path):
    make_pool(store, "p4", "10.65.0.0/16")
    make_node(store, "alive")
    a = Allocator(etcd_client)
    a.auto_assign("alive", "pod-1", 2)
    a.auto_assign("alive", "ipip-tunnel-addr-alive", 1, {"type": "ipipTunnelAddress"},
                  use="Tunnel")
    gone = a.auto_assign("gone", "pod-2", 2, {"pod": "p", "namespace": "ns"})
    r = ctl("ipam", "check")
    assert r.rc == 0
    assert "Found 1 IPAM blocks." not in r.out
    assert "Found 2 IPAM blocks." in r.out
    assert "IPAM blocks record 5 allocations." in r.out
    assert "Found 2 IPs that are allocated in IPAM but not actually in use." in r.out
    assert "Found 2 IPs whose owner no source can check yet (assumed in use)." in r.out
    assert r.out.endswith("Check complete; found 2 problems.\n")
    r = ctl("ipam", "check", "--show-problem-ips", "-o", str(tmp_path / "r.json"))
    for ip in gone:
        assert f"  {ip} leaked; attrs Main:pod-2 Extra:namespace=ns,node=gone,pod=p " \
               f"(node gone no longer exists)" in r.out
    report = json.loads((tmp_path / "r.json").read_text())
    leaked = {ip: recs for ip, recs in report["allocations"].items() if not recs[0]["inUse"]}
    assert sorted(leaked) == sorted(gone)
    assert all(recs[0]["handle"] == "pod-2" and "sequenceNumber" in recs[0]
               for recs in leaked.values())
    assert report["leakedHandles"] == []
    # One leaked address is re-used (released and re-assigned) before the release runs:
    # the report's sequence number protects it.
    a.release_ips([gone[0]])
    a.assign_ip(gone[0], "alive", "pod-3")
    r = ctl("ipam", "release", "--from-report", str(tmp_path / "r.json"), "--force")
    assert r.rc == 0
    assert r.out.splitlines()[0] == "Releasing 2 old IPs..."
    assert f"  Kept {gone[0]}: " in r.out
    assert "Released 1 IPs successfully" in r.out
    assert a.get_assignment(gone[0]).handle_id == "pod-3"
    assert ctl("ipam", "check").out.endswith("Check complete; found 0 problems.\n")


def test_check_show_all_ips(ctl, cluster):
    r = ctl("ipam", "check", "--show-all-ips")
    assert " IPAM block 10.65.79.0/26 affinity=host:node1:" in r.out
    assert "  10.65.79.1 allocated; attrs Main:pod-0 Extra:namespace=default,node=node1,pod=web-0" \
        in r.out


BAD_INPUT = [
    (["ipam", "show", "--ip", "10.0.0.300"], "'10.0.0.300'"),
    (["ipam", "show", "--ip", "1.1.1.1", "--show-blocks"], "at most one"),
    (["ipam", "release", "--ip", "nope"], "'nope'"),
    (["ipam", "release", "--ip", "10.65.79.9"], "IP address 10.65.79.9 is not assigned"),
    (["ipam", "release", "--handle", "ghost"], "handle 'ghost' does not exist"),
    (["ipam", "release", "--from-report", "/nonexistent/r.json"], "/nonexistent/r.json"),
    (["ipam", "release"], "exactly one of --ip, --from-report and --handle"),
    (["ipam", "release", "--ip", "10.65.79.1", "--handle", "pod-0"], "exactly one"),
    (["ipam", "assign", "--node", "n1", "--handle", "h", "--num", "zero"], "'zero'"),
    (["ipam", "assign", "--node", "n1", "--handle", "h", "--num", "0"], "'0'"),
    (["ipam", "assign", "--node", "n1", "--handle", "h", "--num", "-3"], "'-3'"),
    (["ipam", "assign", "--node", "n1", "--handle", "h", "--num", "99999999"], "'99999999'"),
    (["ipam", "assign", "--node", "n1", "--handle", "h", "--ip", "1.2.3.4.5"], "'1.2.3.4.5'"),
    (["ipam", "assign", "--node", "n1", "--handle", "h", "--ip", "10.99.0.1"],
     "10.99.0.1 is not in a configured pool"),
    (["ipam", "assign", "--node", "n1", "--handle", "h", "--ip", "10.65.79.1"],
     "10.65.79.1 is already assigned"),
    (["ipam", "assign", "--node", "n1", "--handle", "h", "--ip", "10.65.79.50", "--num", "2"],
     "--ip assigns one address"),
    (["ipam", "assign", "--node", "n1", "--handle", "h", "--use", "Pods"], "'Pods'"),
    (["ipam", "assign", "--node", "n1", "--handle", "a/b"], "'a/b'"),
    (["ipam", "assign", "--node", "", "--handle", "h"], "--node: ''"),
    (["ipam", "assign", "--node", "n1", "--handle", "h", "--attr", "novalue"], "'novalue'"),
    (["ipam", "configure", "--strictaffinity=maybe"], "'maybe'"),
    (["ipam", "configure", "--strictaffinity=true", "--max-blocks-per-host=lots"], "'lots'"),
    (["ipam", "configure", "--strictaffinity=false", "--max-blocks-per-host=5"],
     "maxBlocksPerHost requires strictAffinity"),
    (["ipam", "check", "-o", "/nonexistent/dir/r.json"], "/nonexistent/dir/r.json"),
]


@pytest.mark.parametrize("argv, needle", BAD_INPUT, ids=[" ".join(a[1:]) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_writes_nothing(ctl, cluster, etcd_client, argv, needle):
    before = dump(etcd_client)
    r = ctl(*argv)
    assert r.rc == 1, r.out
    assert needle in r.err
    assert r.err.count("\n") == 1, r.err
    assert dump(etcd_client) == before


def test_bad_report_file_is_refused(ctl, cluster, etcd_client, tmp_path):
    for name, text in (("junk.json", "not json"), ("list.json", "[1, 2]"),
                       ("weird.json", '{"allocations": {"10.65.79.1": [{"inUse": false, '
                                      '"sequenceNumber": "x"}]}}')):
        (tmp_path / name).write_text(text)
        before = dump(etcd_client)
        r = ctl("ipam", "release", "--from-report", str(tmp_path / name))
        assert r.rc == 1 and f"invalid report '{tmp_path / name}'" in r.err
        assert dump(etcd_client) == before
