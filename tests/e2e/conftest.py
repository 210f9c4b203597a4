"""Fixtures for the e2e tier: labs of network namespaces (lab.Lab), always torn down.

Each lab gets a unique name (`tt<8 hex>`, tests/support.py), so its namespaces
(`<name>-*`), address range and state dir never meet another test's or another
engineer's lab. A test whose requirement is missing is skipped with a reason
naming it. With TORTIE_KEEP_LAB=1 labs brought up by `up_lab`, `lab` and
`make_lab` are left running after the test, with a note on how to reach and
remove them (docs/testing.md).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from lab import Lab, netns, state, teardown
from tests.support import keep_lab, need, record_lab, unique_name

TOOLS = ("ip", "etcd", "etcdctl", "curl", "ping", "sysctl")  # packages: support.APT_PACKAGES


def lab_name() -> str:
    """A fresh lab name, recorded for the session-end leftover check."""
    return record_lab(unique_name())


@contextmanager
def up_lab(**kwargs: Any) -> Iterator[Lab]:
    """Lab(fresh name, **kwargs).up(); down() afterwards unless TORTIE_KEEP_LAB=1."""
    the_lab = Lab(lab_name(), **kwargs).up()
    try:
        yield the_lab
    finally:
        if not keep_lab(the_lab):
            the_lab.down()


@pytest.fixture(scope="session")
def lab_env() -> None:
    """Skips unless root with iproute2, etcd, etcdctl, curl, ping and sysctl."""
    need(*TOOLS, root=True, root_for="the lab creates network namespaces")


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
    with up_lab() as the_lab:
        yield the_lab


@pytest.fixture
def make_lab(lab_env: None) -> Iterator[Callable[..., Lab]]:
    """Factory: make_lab(nodes=2, etcd_members=3, ...) -> a lab that is up; all torn down after."""
    labs: list[Lab] = []

    def make(**kwargs: Any) -> Lab:
        new = Lab(record_lab(kwargs.pop("name", None) or unique_name()), **kwargs)
        labs.append(new)
        return new.up()

    yield make
    for each in labs:
        if not keep_lab(each):
            each.down()


@pytest.fixture
def lab_names(lab_env: None) -> Iterator[Callable[[], str]]:
    """Fresh lab names for labs made by the CLI or by hand; each is torn down after the test."""
    names: list[str] = []

    def new() -> str:
        names.append(lab_name())
        return names[-1]

    yield new
    for name in names:
        teardown(name)
