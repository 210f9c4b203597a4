"""Fixtures for the dataplane tests: a throwaway network namespace per test.

The root tests need root and iproute2 and skip, naming what is missing,
otherwise; the *_unit.py tests need neither. Every namespace is named
`td<8 hex>` and always removed, whatever the test did (pyroute2's `nsname`
fixture discipline: pyroute2/fixtures/iproute/__init__.py in svinota/pyroute2).
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.dataplane.helpers import need_root, sh


@pytest.fixture
def netns() -> Iterator[str]:
    """Name: netns. A fresh namespace `td<8 hex>` with lo up; removed afterwards."""
    need_root()
    name = "td" + uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True,
                       capture_output=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def uplink(netns: str) -> str:
    """Name: uplink. Depends: netns. `eth0` with 192.168.0.1/24, up (a veth: no dummy here)."""
    sh(netns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer")
    sh(netns, "addr", "add", "192.168.0.1/24", "dev", "eth0")
    sh(netns, "link", "set", "eth0", "up")
    sh(netns, "link", "set", "eth0peer", "up")
    return "eth0"
