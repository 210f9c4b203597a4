"""The conformance harness's pure parts (tests/e2e/netpol.py, tests/netpol_cases.py): the model, Reachability,
and the truth tables it prints when a check fails."""

from __future__ import annotations

from tests.e2e.netpol import Model
from tests.netpol_cases import Reachability, compare, truth_table

KEYS = ["x/a", "x/b", "y/a"]


def test_the_model_spreads_nine_pods_over_the_nodes() -> None:
    model = Model(["node1", "node2", "node3"])
    assert model.keys == ["x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c"]
    assert [p.node for p in model.pods[:4]] == ["node1", "node2", "node3", "node1"]
    assert model.pods[0].labels == {"pod": "a"}
    assert [p.name for p in model.pods[0].named_ports] == [
        "serve-80-tcp", "serve-80-udp", "serve-81-tcp", "serve-81-udp"]
    assert model.namespace_labels["y"] == {"ns": "y", "kubernetes.io/metadata.name": "y"}


def test_later_expectations_win() -> None:
    r = Reachability(KEYS).expect_all_ingress("x/a", False).expect("x/b", "x/a", True)
    assert not r[("y/a", "x/a")] and r[("x/b", "x/a")] and r[("x/a", "x/b")]
    r.expect_all_egress("x/b", False)
    assert not r[("x/b", "x/a")] and not r[("x/b", "y/a")]


def test_tables_rows_from_columns_to_loopback_dashed() -> None:
    assert truth_table(KEYS, {(a, b): "." for a in KEYS for b in KEYS}, "t:") == (
        "t:\n"
        "-   x/a x/b y/a\n"
        "x/a -   .   .\n"
        "x/b .   -   .\n"
        "y/a .   .   -")


def test_compare_counts_and_marks_the_wrong_cells() -> None:
    expected = Reachability(KEYS).expect_all_ingress("y/a", False)
    observed = {(a, b): True for a in KEYS for b in KEYS if a != b}
    wrong, text = compare(KEYS, expected, observed)
    assert wrong == 2
    comparison = text.split("\n\n")[2].splitlines()
    assert comparison[0] == "comparison (2 wrong of 6):"
    assert comparison[2:] == ["x/a -   .   X", "x/b .   -   X", "y/a .   .   -"]
    assert compare(KEYS, Reachability(KEYS), observed)[0] == 0
