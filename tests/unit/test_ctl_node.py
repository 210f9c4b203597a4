"""ctl node status rendering: calicoctl's table layout, byte for byte."""

from __future__ import annotations

import time

from ctl.node import format_since, render_all, render_local

NOW = time.mktime((2026, 11, 21, 23, 30, 9, 0, 0, -1))


def doc(node="node1", peers=None, age=0.0, speaker="running"):
    return {"node": node, "time": NOW - age, "speaker": speaker, "peers": peers if peers is not None else [
        {"address": "172.17.8.102", "port": 179, "name": "Mesh_172_17_8_102",
         "peer_type": "node-to-node mesh", "state": "up", "since": NOW - 5,
         "info": "Established", "error": "", "received": 1, "sent": 2}]}


def test_local_status_is_calicoctls_layout():
    assert render_local(doc(), NOW, wide=False) == """
IPv4 BGP status
+--------------+-------------------+-------+----------+-------------+
| PEER ADDRESS |     PEER TYPE     | STATE |  SINCE   |    INFO     |
+--------------+-------------------+-------+----------+-------------+
| 172.17.8.102 | node-to-node mesh | up    | 23:30:04 | Established |
+--------------+-------------------+-------+----------+-------------+

IPv6 BGP status
No IPv6 peers found.
"""


def test_no_peers_no_speaker_and_errors():
    assert "No IPv4 peers found." in render_local(doc(peers=[]), NOW, False)
    assert render_local(None, NOW, False) == "\nThe BGP backend process (ExaBGP) is not running.\n"
    down = doc(peers=[{"address": "10.0.0.9", "port": 179, "peer_type": "global",
                       "state": "start", "since": NOW - 2 * 86400, "info": "Active",
                       "error": "Socket: Connection refused"}])
    text = render_local(down, NOW, False)
    assert "| 10.0.0.9     | global    | start | " in text
    assert "Active Socket: Connection refused" in text
    assert format_since(NOW - 2 * 86400, NOW) == time.strftime("%Y-%m-%d",
                                                                time.localtime(NOW - 2 * 86400))


def test_all_nodes_in_one_table_with_counts_when_wide():
    text = render_all([doc("node2"), doc("node1", age=120)], NOW, wide=True)
    lines = text.splitlines()
    assert lines[2] == ("| NODE  | PEER ADDRESS |     PEER TYPE     | STATE |  SINCE   |    INFO   "
                        "  | PREFIXES RECEIVED | PREFIXES SENT |")
    assert lines[4].startswith("| node1 ") and lines[5].startswith("| node2 ")
    assert lines[4].endswith("|                 1 |             2 |")
    assert "node1: last report 120s ago" in text
    assert render_all([], NOW, False) == "No IPv4 peers found on any node.\n"


def test_wide_local_status_lists_the_learned_routes_not_installed() -> None:
    problem = ("learned route 203.0.113.0/24: next hop 192.0.2.99: the main table's route to "
               "it (192.0.2.0/24) is unreachable")
    with_problem = {**doc(), "routeProblems": [problem]}
    text = render_local(with_problem, NOW, wide=True)
    assert f"\nLearned routes not installed:\n  {problem}\n" in text
    assert "not installed" not in render_local(with_problem, NOW, wide=False)
    assert "not installed" not in render_local(doc(), NOW, wide=True)
