"""Fixtures for the dataplane tests (root, a throwaway network namespace per test).

The namespace is tests/support.py's `netns` fixture (`tt<8 hex>`, always removed,
whatever the test did); tests skip, naming what is missing, without root and iproute2.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def uplink(netns: str, veth) -> str:
    """Name: uplink. Depends: netns. `eth0` with 192.168.0.1/24, up (a veth: no dummy here)."""
    veth(netns, "eth0", "eth0peer", address="192.168.0.1/24")
    return "eth0"
