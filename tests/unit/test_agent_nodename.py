"""Node name precedence and the name file (no datastore needed)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from agent.nodename import determine_node_name, read_nodename_file, write_nodename_file


def _never() -> str:
    raise AssertionError("gethostname must not be called")


def test_nodename_env_wins(tmp_path: Path) -> None:
    (tmp_path / "nodename").write_text("stored")
    assert determine_node_name(" n1 ", "HOST", tmp_path / "nodename", _never) == (
        "n1", "env NODENAME")


def test_file_beats_hostname(tmp_path: Path) -> None:
    (tmp_path / "nodename").write_text("stored\n")
    assert determine_node_name(None, "HOST", tmp_path / "nodename", _never) == (
        "stored", f"file {tmp_path / 'nodename'}")


def test_hostname_env_lowercased(tmp_path: Path) -> None:
    assert determine_node_name("", " Worker-1 ", tmp_path / "missing", _never) == (
        "worker-1", "env HOSTNAME")


def test_gethostname_last_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "nodename").write_text("   ")  # empty counts as absent
    with caplog.at_level(logging.WARNING, logger="agent.nodename"):
        name = determine_node_name(None, None, tmp_path / "nodename", lambda: "Box.LAN")
    assert name == ("box.lan", "hostname")
    assert "recommended that an explicit value is supplied using the NODENAME" in caplog.text


def test_write_is_atomic_and_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "calico" / "nodename"
    assert write_nodename_file("node-a", path) is True
    mtime = os.stat(path).st_mtime_ns
    assert write_nodename_file("node-a", path) is False
    assert os.stat(path).st_mtime_ns == mtime
    assert read_nodename_file(path) == "node-a"
    assert write_nodename_file("node-b", path) is True
    assert path.read_text() == "node-b"
    assert [p.name for p in path.parent.iterdir()] == ["nodename"]  # no temp files left
