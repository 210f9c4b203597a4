"""Tests that need a kernel with ipip: they run only inside the User-Mode Linux lane.

The host-side test tests/e2e/test_kernel_lane.py boots scripts/run-in-uml.sh with
this directory; on the host these items are skipped with that reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import make_netns, remove_netns

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
def guest_netns() -> Iterator[Callable[[], str]]:
    """Factory of fresh namespaces inside the guest (tests/support.py's make_netns); all removed
    afterwards (the guest is thrown away, but keep tests tidy)."""
    made: list[str] = []

    def make() -> str:
        made.append(make_netns())
        return made[-1]

    yield make
    for name in made:
        remove_netns(name)
