"""The agent's loop scheduling: when it applies again without new input.

The writers here are stand-ins that record each apply() and answer what a
real writer would; the loop's timing decisions are what is under test (the
writers themselves are tested against the real kernel in tests/dataplane).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from agent.config import load
from agent.dataplane.common import ApplyResult
from agent.dataplane.driver import DataplaneResult
from agent.main import Agent


@dataclass
class _Writer:
    """Answers each apply() with the next scripted result (then empty ones)."""

    script: list[ApplyResult] = field(default_factory=list)
    applies: list[float] = field(default_factory=list)

    def apply(self) -> ApplyResult:
        self.applies.append(time.monotonic())
        return self.script.pop(0) if self.script else ApplyResult()

    def apply_deletions(self) -> ApplyResult:
        return ApplyResult()

    def resync(self) -> None:
        pass


@dataclass
class _Dataplane:
    routes: _Writer

    def apply(self) -> DataplaneResult:
        out = DataplaneResult()
        out.results["routes"] = self.routes.apply()
        return out

    def resync(self) -> None:
        pass


def _agent(routes: _Writer, tmp_path) -> Agent:
    config = load({"NODENAME": "node-a", "CALICO_MTU_FILE": str(tmp_path / "mtu")}, log=False)
    agent = Agent(config, client=None)  # type: ignore[arg-type]  # the loop never reads etcd
    agent.dataplane = _Dataplane(routes)  # type: ignore[assignment]
    agent.ipsets = _Writer()  # type: ignore[assignment]
    agent.tables = {"nat": _Writer()}  # type: ignore[assignment]
    agent.stats.in_sync = True
    agent._dirty_calc = False  # nothing to calculate: only the apply scheduling matters
    return agent


def _run(agent: Agent, until, timeout: float = 5.0) -> None:
    thread = threading.Thread(target=agent._loop, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not until() and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        agent.stop()
        thread.join(timeout=5)
    assert not thread.is_alive()


def test_a_held_back_deletion_is_applied_when_due_without_new_input(tmp_path) -> None:
    # The first apply holds a deletion back for 0.2 s (the route table's grace period).
    routes = _Writer([ApplyResult(skipped=1, retry_after=0.2)])
    agent = _agent(routes, tmp_path)
    _run(agent, lambda: len(routes.applies) >= 2)
    assert len(routes.applies) == 2, "the loop never came back for the held-back deletion"
    gap = routes.applies[1] - routes.applies[0]
    assert gap >= 0.2, f"applied again after {gap:.3f} s, before the deletion was due"


def test_without_a_request_the_loop_stays_idle(tmp_path) -> None:
    routes = _Writer()
    agent = _agent(routes, tmp_path)
    _run(agent, lambda: False, timeout=0.5)
    assert len(routes.applies) == 1  # the initial apply, then nothing until input arrives
