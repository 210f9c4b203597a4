"""agent.route_problems: the file through which the agent tells the BGP sidecar what it
could not install (its writer and its reader, in a temporary directory)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.route_problems import problems_path, publish, read

PROBLEM = ("learned route 203.0.113.0/24: next hop 192.0.2.99: the main table's route to "
           "it (192.0.2.0/24) is unreachable")


def test_path_is_per_node_under_the_run_dir(tmp_path: Path) -> None:
    assert problems_path(tmp_path, "node1") == tmp_path / "agent" / "node1" / "route-problems.json"
    assert problems_path(tmp_path, "node1") != problems_path(tmp_path, "node2")


def test_published_list_reads_back_sorted_and_replaces_the_last(tmp_path: Path) -> None:
    path = problems_path(tmp_path, "node1")
    assert publish(path, ["route 10.0.0.0/24: the kernel refuses it", PROBLEM])
    assert read(path) == (PROBLEM, "route 10.0.0.0/24: the kernel refuses it")
    assert publish(path, [])
    assert read(path) == ()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left


def test_nothing_to_read_is_no_problems(tmp_path: Path) -> None:
    assert read(problems_path(tmp_path, "node1")) == ()


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"problems": "one"}',
                                  '{"problems": [1]}', '{"other": []}'])
def test_a_malformed_file_is_no_problems(tmp_path: Path, text: str) -> None:
    path = tmp_path / "route-problems.json"
    path.write_text(text)
    assert read(path) == ()


def test_a_file_that_cannot_be_written_is_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / "agent").write_text("a file where the directory should be")
    path = problems_path(tmp_path, "node1")
    assert publish(path, [PROBLEM]) is False
    assert read(path) == ()
