"""Fixtures for the e2e tier: labs of network namespaces (lab.Lab), always torn down.

Each lab gets a unique name, so its namespaces (`<name>-*`), address range and
state dir never meet another test's or another engineer's lab. A test whose
requirement is missing is skipped with a reason naming it.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import Lab, netns, state, teardown

TOOLS = {  # binary -> Debian package
    "ip": "iproute2", "etcd": "etcd-server", "etcdctl": "etcd-client", "curl": "curl",
    "ping": "iputils-ping", "sysctl": "procps",
}


def _need_lab() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (the lab creates network namespaces)")
    for tool, package in TOOLS.items():
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed (apt package {package})")


def _lab_name() -> str:
    return "e" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def lab_env() -> None:
    """Skips unless root with iproute2, etcd, etcdctl, curl, ping and sysctl."""
    _need_lab()


@pytest.fixture(scope="session")
def lab_cli() -> str:
    """Path of the venv's tortie-lab script (the one the CLI tests exercise)."""
    script = Path(sys.executable).parent / "tortie-lab"
    if not script.exists():
        pytest.skip(f"tortie-lab console script not installed next to {sys.executable}")
    return str(script)


def root_snapshot() -> dict[str, Any]:
    """What lives outside any lab: root-namespace links, namespaces, the lab run dir."""
    links = netns.run(["ip", "-o", "link", "show"]).stdout.splitlines()
    base = state.run_dir()
    return {
        "netns": set(netns.list_netns()),
        "links": {line.split(":")[1].strip().split("@")[0] for line in links},
        "run_dir": set(os.listdir(base)) if base.is_dir() else set(),
    }


@pytest.fixture
def snapshot() -> Callable[[], dict[str, Any]]:
    return root_snapshot


@pytest.fixture(scope="module")
def lab(lab_env: None) -> Iterator[Lab]:
    """A default lab (3 nodes, 2 subnets, 1 etcd) shared by a module's read-only tests."""
    the_lab = Lab(_lab_name())
    try:
        yield the_lab.up()
    finally:
        the_lab.down()


@pytest.fixture
def make_lab(lab_env: None) -> Iterator[Callable[..., Lab]]:
    """Factory: make_lab(nodes=2, etcd_members=3, ...) -> a lab that is up; all torn down after."""
    labs: list[Lab] = []

    def make(**kwargs: Any) -> Lab:
        new = Lab(kwargs.pop("name", None) or _lab_name(), **kwargs)
        labs.append(new)
        return new.up()

    yield make
    for each in labs:
        each.down()


@pytest.fixture
def lab_names(lab_env: None) -> Iterator[Callable[[], str]]:
    """Fresh lab names for labs made by the CLI or by hand; each is torn down after the test."""
    names: list[str] = []

    def new() -> str:
        names.append(_lab_name())
        return names[-1]

    yield new
    for name in names:
        teardown(name)
