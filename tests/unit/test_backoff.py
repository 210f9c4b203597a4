"""The retry schedules (datastore.backoff): growth, cap, jitter bounds, reset; and the
schedules the speaker and the syncer use, spelled out as numbers."""

from __future__ import annotations

import pytest

from bgp.speaker import CONNECT_DEADLINE, RESTART_BACKOFF
from datastore.backoff import Backoff, Schedule


def test_nominal_doubles_from_first_and_stops_at_the_cap() -> None:
    s = Schedule(first=10.0, cap=120.0, jitter=0.0)
    assert [s.nominal(n) for n in range(7)] == [10.0, 20.0, 40.0, 80.0, 120.0, 120.0, 120.0]
    assert s.nominal(10_000) == 120.0  # no overflow however many failures


def test_jitter_spreads_within_its_fraction_and_never_past_the_cap() -> None:
    s = Schedule(first=1.0, cap=30.0, jitter=0.2)
    assert s.delay(0, 0.0) == pytest.approx(0.8)
    assert s.delay(0, 0.5) == pytest.approx(1.0)
    assert s.delay(3, 0.999999) == pytest.approx(9.6, rel=1e-5)
    assert s.delay(50, 0.0) == pytest.approx(24.0)  # the cap, jittered down
    assert s.delay(50, 0.999999) == 30.0  # ... but never up past it


def test_backoff_counts_consecutive_failures_and_resets_on_success() -> None:
    b = Backoff(Schedule(first=1.0, cap=30.0, jitter=0.2))
    waits = [b.failed(0.5) for _ in range(7)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert b.failures == 7 and b.current() == 30.0
    b.succeeded()
    assert b.failures == 0 and b.failed(0.5) == 1.0
    b.missed()
    assert b.failures == 2 and b.current() == 4.0


def test_the_speakers_schedules() -> None:
    """ExaBGP's relay gets 10, 20, 40, 80, 120 s to say hello; restarts after a failure
    wait 1 s doubling to 30 s, +/-20 %."""
    assert [CONNECT_DEADLINE.nominal(n) for n in range(6)] == [10, 20, 40, 80, 120, 120]
    assert RESTART_BACKOFF.delay(0, 0.0) == pytest.approx(0.8)
    assert RESTART_BACKOFF.nominal(5) == 30.0


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"first": 0.0, "cap": 1.0}, "first"),
    ({"first": 2.0, "cap": 1.0}, "cap"),
    ({"first": 1.0, "cap": 2.0, "factor": 0.5}, "factor"),
    ({"first": 1.0, "cap": 2.0, "jitter": 1.0}, "jitter"),
])
def test_bad_schedules_are_refused_naming_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Schedule(**kwargs)


def test_bad_draws_and_counts_are_refused() -> None:
    s = Schedule(first=1.0, cap=2.0)
    with pytest.raises(ValueError, match="draw"):
        s.delay(0, 1.0)
    with pytest.raises(ValueError, match="failures"):
        s.nominal(-1)
