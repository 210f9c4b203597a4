"""agent.idle_gc: the collector runs in a lull, as CPython's own trigger would pick."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agent import idle_gc


@pytest.mark.parametrize(("counts", "want"), [
    ((50_000, 0, 0), 0),
    ((50_000, 10, 0), 0),  # gen 1 only once its count passes the threshold
    ((50_000, 11, 0), 1),
    ((50_000, 11, 11), 2),  # the oldest due generation wins
    ((50_000, 0, 11), 2),
])
def test_due_generation_is_the_oldest_past_its_threshold(counts, want) -> None:
    assert idle_gc.due_generation(counts, (idle_gc.YOUNG, 10, 10)) == want


# Run in a child: start() changes the interpreter's collector for good.
_CHILD = r"""
import gc, json, sys, time
from agent import idle_gc
idle_gc.start()
idle_gc.start()  # a second call changes nothing
threshold = gc.get_threshold()
threads = sum(1 for t in __import__("threading").enumerate() if t.name == "idle-gc")
# A burst: 30,000 new tracked objects, kept; each made between two samples at most
# QUIET apart would look quiet, so build them in one go.
keep = [[i] for i in range(30_000)]
after_burst = gc.get_count()[0]
deadline = time.monotonic() + 5
while gc.get_count()[0] >= idle_gc.YOUNG and time.monotonic() < deadline:
    time.sleep(idle_gc.TICK)
print(json.dumps({"threshold": threshold, "threads": threads, "after_burst": after_burst,
                  "after_lull": gc.get_count()[0], "frozen": gc.get_freeze_count() > 0,
                  "kept": len(keep)}))
"""


def test_a_lull_after_a_burst_gets_a_collection_and_the_backstop_stays_on() -> None:
    res = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                         timeout=30, check=True)
    out = json.loads(res.stdout)
    assert out["threshold"] == [idle_gc.BACKSTOP, *idle_gc.OLDER]
    assert out["threads"] == 1 and out["frozen"]
    assert out["after_burst"] >= 30_000  # nothing collected mid-burst (below the backstop)
    assert out["after_lull"] < idle_gc.YOUNG  # collected once it went quiet
    assert out["kept"] == 30_000
