"""Retry schedules: how long to wait, or to allow, after N consecutive failures.

Owns the one rule tortie uses wherever a failure is retried by a long-lived
loop (the syncer's etcd watches, the speaker's ExaBGP): exponential growth from
`first` by `factor`, capped at `cap`, spread by +/- `jitter` (a fraction), as
gRPC's connection backoff and etcd's clients do. Growth matters on a starved
host: a fixed deadline that is too short there fails every time, and each retry
adds the very load that made it fail. Jitter keeps many nodes that failed
together (an etcd restart, a lab starting 50 agents) from retrying together.

Invariants: pure (no clock, no randomness of its own: the caller passes a
uniform draw in [0, 1)); the delay never exceeds `cap`; `failures` only counts
consecutive failures and goes back to 0 on `succeeded`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    first: float
    cap: float
    factor: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap:
            raise ValueError(f"need 0 < first <= cap, got first={self.first} cap={self.cap}")
        if not self.factor >= 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")

    def nominal(self, failures: int) -> float:
        """The un-jittered value after `failures` consecutive failures (0: the first try)."""
        if failures < 0:
            raise ValueError(f"failures must be >= 0, got {failures}")
        value = self.first
        for _ in range(failures):  # a loop, not factor**n: no overflow for any n
            value *= self.factor
            if value >= self.cap:
                return self.cap
        return value

    def delay(self, failures: int, draw: float) -> float:
        """nominal(failures) spread by +/- jitter; `draw` is uniform in [0, 1)."""
        if not 0 <= draw < 1:
            raise ValueError(f"draw must be in [0, 1), got {draw}")
        spread = self.nominal(failures) * (1 + self.jitter * (2 * draw - 1))
        return min(spread, self.cap)


@dataclass
class Backoff:
    """A Schedule and the count of consecutive failures it is applied to."""

    schedule: Schedule
    failures: int = 0

    def current(self) -> float:
        """The un-jittered value for the next try (a deadline, say)."""
        return self.schedule.nominal(self.failures)

    def failed(self, draw: float) -> float:
        """Count one more failure; return the jittered wait before the next try."""
        wait = self.schedule.delay(self.failures, draw)
        self.missed()
        return wait

    def missed(self) -> None:
        """Count one more failure (for a deadline: the next try gets current() longer)."""
        self.failures += 1

    def succeeded(self) -> None:
        self.failures = 0
