"""Tests that need a kernel with ipip: they run only inside the User-Mode Linux lane.

The host-side test tests/e2e/test_kernel_lane.py boots scripts/run-in-uml.sh with
this directory; on the host these items are skipped with that reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("RIK_GUEST") == "1":
        return
    skip = pytest.mark.skip(reason="needs the ipip kernel module: runs inside User-Mode Linux "
                                   "via tests/e2e/test_kernel_lane.py")
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.fixture
def guest_netns():
    """Fresh namespaces inside the guest (the guest is thrown away, but keep tests tidy)."""
    import subprocess
    import uuid

    made: list[str] = []

    def make() -> str:
        name = "g" + uuid.uuid4().hex[:6]
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        made.append(name)
        return name

    yield make
    for name in made:
        subprocess.run(["ip", "netns", "del", name], check=False)
