"""The scale run's parsing and arithmetic (tests/faults/scale.py) and bench/scale.py's table."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from lab.bgp_cluster import NO_ENCAP_POOL, manifests
from tests.faults.scale import (
    ScaleParams,
    ScaleResult,
    cpu_ticks,
    descendants,
    grpc_handled,
    metric_value,
    missing_routes,
    probe_pairs,
    rates,
    route_deletions,
    smaps_rollup,
    softnet,
)

METRICS = """# HELP grpc_server_handled_total Total number of RPCs completed on the server.
grpc_server_handled_total{grpc_code="OK",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 120
grpc_server_handled_total{grpc_code="NotFound",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 3
grpc_server_handled_total{grpc_code="OK",grpc_method="Txn",grpc_service="etcdserverpb.KV",grpc_type="unary"} 7
grpc_server_started_total{grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 999
# TYPE etcd_debugging_mvcc_watcher_total gauge
etcd_debugging_mvcc_watcher_total 30
etcd_debugging_mvcc_watcher_total_extra 5
"""


def test_grpc_handled_sums_codes_per_method_and_ignores_other_counters():
    assert grpc_handled(METRICS) == {"Range": 123.0, "Txn": 7.0}


def test_metric_value_reads_one_unlabelled_metric_by_its_exact_name():
    assert metric_value(METRICS, "etcd_debugging_mvcc_watcher_total") == 30.0
    assert metric_value(METRICS, "etcd_debugging_mvcc_watch_stream_total") is None


def test_rates_are_per_second_and_only_for_what_grew():
    assert rates({"Range": 100, "Txn": 7}, {"Range": 120, "Txn": 7, "Put": 4}, 2.0) == \
        {"Put": 2.0, "Range": 10.0}


def test_smaps_rollup_reads_rss_and_pss_in_bytes():
    text = "00400000-7ffd rw-p 00000000 00:00 0 [rollup]\nRss: 2048 kB\nPss: 1024 kB\n" \
           "Shared_Clean: 512 kB\n"
    assert smaps_rollup(text) == {"Rss": 2048 * 1024, "Pss": 1024 * 1024}


def test_cpu_ticks_survives_a_command_name_with_spaces_and_parentheses():
    stat = "42 (exa bgp) (x)) S 1 42 42 0 -1 4194560 100 0 0 0 30 12 0 0 20 0 1 0 5 0 0"
    assert cpu_ticks(stat) == 42


def test_descendants_walks_the_whole_tree_below_the_root_only():
    parents = {10: 1, 11: 10, 12: 11, 13: 10, 20: 1, 21: 20}
    assert descendants(parents, 10) == [11, 12, 13]
    assert descendants(parents, 99) == []


def test_missing_routes_compares_block_and_next_hop():
    kernel = ("10.244.1.0/26 via 10.9.1.12 dev eth0 proto 80 onlink \n"
              "10.244.2.0/26 via 10.9.1.99 dev eth0 proto 80 onlink \n"
              "blackhole 10.244.0.0/26 proto 80 \n")
    wanted = [("10.244.1.0/26", "10.9.1.12"), ("10.244.2.0/26", "10.9.1.13")]
    assert missing_routes(kernel, wanted) == [("10.244.2.0/26", "10.9.1.13")]


def test_probe_pairs_spread_sources_and_never_probe_the_same_node():
    nodes = [f"node{i}" for i in range(1, 51)]
    pairs = probe_pairs(nodes, 16)
    assert len(pairs) == 16 and all(a != b for a, b in pairs)
    assert len({a for a, _ in pairs}) == 16
    assert probe_pairs(["node1"], 4) == []


def test_manifests_turn_the_mesh_off_only_with_reflectors():
    assert manifests(0) == NO_ENCAP_POOL
    assert "nodeToNodeMeshEnabled: false" in manifests(2) and "BGPPeer" in manifests(2)


def _bench() -> object:
    path = Path(__file__).resolve().parents[2] / "bench" / "scale.py"
    spec = importlib.util.spec_from_file_location("bench_scale", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_side_by_side_prints_both_sizes_and_the_ratio():
    small = ScaleResult(ScaleParams(nodes=10), {"etcd requests/s, idle": 4.0, "zero": 0.0})
    large = ScaleResult(ScaleParams(nodes=50), {"etcd requests/s, idle": 20.0, "zero": 1.0})
    table = _bench().side_by_side(small, large)  # type: ignore[attr-defined]
    row = next(line for line in table.splitlines() if line.startswith("etcd requests/s"))
    assert row.split()[-3:] == ["4.00", "20.00", "5.00"]
    assert next(line for line in table.splitlines() if line.startswith("zero")).endswith("-")
    assert table.splitlines()[-1].split()[-1] == "5.00"


@pytest.mark.parametrize("growth,within", [({"agent-node1": 3.0}, True),
                                          ({"agent-node1": 3.0, "exabgp-node2": 12.5}, False)])
def test_memory_bound(growth, within):
    result = ScaleResult(ScaleParams(memory_bound_mib=10.0), memory_growth=growth)
    assert result.memory_within_bound is within


def test_route_deletions_keeps_only_deletions_of_watched_destinations():
    monitor = "\n".join([
        "10.244.3.0/26 via 10.112.1.4 dev eth0 proto 80 onlink",  # added: not a deletion
        "Deleted 10.244.3.0/26 via 10.112.1.4 dev eth0 proto 80 onlink",
        "Deleted 10.244.9.0/26 via 10.112.1.8 dev eth0 proto 80 onlink",  # not watched
        "Deleted 10.244.3.5 dev cali1234567890a scope link",
        "Deleted broadcast 10.112.1.255 dev eth0 table local proto kernel",
        "Deleted",
    ])
    assert route_deletions(monitor, {"10.244.3.0/26", "10.244.3.5"}) == [
        "Deleted 10.244.3.0/26 via 10.112.1.4 dev eth0 proto 80 onlink",
        "Deleted 10.244.3.5 dev cali1234567890a scope link"]
    assert route_deletions(monitor, set()) == []


def test_softnet_sums_drops_and_squeezes_over_cpus():
    text = ("0000a1b2 00000003 0000000a 00000000 00000000 00000000 00000000 00000000 "
            "00000000 00000000 00000000 00000000 00000000\n"
            "00000010 00000001 00000002 00000000 00000000 00000000 00000000 00000000 "
            "00000000 00000000 00000000 00000000 00000001\n")
    assert softnet(text) == (4, 12)
    assert softnet("") == (0, 0)
