"""The watch-stall detector and the liveness settings: pure, clock-driven."""

from __future__ import annotations

import pytest

from datastore.config import ConfigError, Liveness, load_liveness
from datastore.etcd import channel_options
from datastore.liveness import StallDetector


def test_a_stream_that_keeps_talking_is_never_probed_nor_stalled() -> None:
    d = StallDetector(stall_after=10.0, last_heard=0.0)
    for t in range(1, 100):
        d.heard(t * 4.0)  # every 4 s, under the 5 s probe interval
        assert not d.probe_due(t * 4.0 + 3.9)
        assert not d.stalled(t * 4.0 + 3.9)


def test_a_quiet_stream_is_probed_at_half_the_stall_time_then_once_per_interval() -> None:
    d = StallDetector(stall_after=10.0, last_heard=100.0)
    assert not d.probe_due(104.9)
    assert d.probe_due(105.0)
    d.probed(105.0)
    assert not d.probe_due(106.0)  # one probe outstanding is enough for now
    assert d.next_check(106.0) == pytest.approx(4.0)  # the stall deadline at 110


def test_a_probe_that_is_answered_keeps_the_stream_alive() -> None:
    d = StallDetector(stall_after=10.0, last_heard=0.0)
    d.probed(5.0)
    d.heard(5.2)  # etcd's progress answer
    assert not d.stalled(14.0)
    assert d.stalled(15.2)


def test_a_stream_silent_through_its_probe_is_stalled_at_stall_after() -> None:
    d = StallDetector(stall_after=10.0, last_heard=0.0)
    d.probed(5.0)
    assert not d.stalled(9.99)
    assert d.stalled(10.0)
    assert d.next_check(10.0) == 0.0


def test_restart_forgets_the_old_stream() -> None:
    d = StallDetector(stall_after=10.0, last_heard=0.0)
    d.probed(5.0)
    d.restart(20.0)
    assert not d.stalled(29.0)
    assert d.last_probe is None
    assert d.probe_due(25.0)


def test_time_never_runs_backwards_for_heard() -> None:
    d = StallDetector(stall_after=10.0, last_heard=50.0)
    d.heard(40.0)  # a late message stamped earlier must not age the stream
    assert d.last_heard == 50.0


def test_a_nonpositive_stall_time_is_refused() -> None:
    with pytest.raises(ValueError, match="stall_after must be positive, got 0"):
        StallDetector(stall_after=0.0, last_heard=0.0)


def test_liveness_defaults_detect_a_dead_connection_within_15_seconds() -> None:
    live = load_liveness({})
    assert live == Liveness()
    assert live.time + live.timeout <= 15.0
    assert live.watch_stall_timeout <= 15.0


def test_liveness_from_the_environment_with_calico_prefix_winning() -> None:
    live = load_liveness({"ETCD_KEEPALIVE_TIME": "7", "CALICO_ETCD_KEEPALIVE_TIME": "8",
                          "ETCD_KEEPALIVE_TIMEOUT": "2.5", "ETCD_WATCH_STALL_TIMEOUT": "4"})
    assert live == Liveness(time=8.0, timeout=2.5, watch_stall_timeout=4.0)


@pytest.mark.parametrize(("name", "value"), [
    ("ETCD_KEEPALIVE_TIME", "4"),  # under etcd's 5 s minimum: etcd would send GOAWAY
    ("ETCD_KEEPALIVE_TIME", "soon"),
    ("ETCD_KEEPALIVE_TIMEOUT", "0"),
    ("ETCD_KEEPALIVE_TIMEOUT", "nan"),
    ("ETCD_WATCH_STALL_TIMEOUT", "-1"),
    ("ETCD_WATCH_STALL_TIMEOUT", "inf"),
])
def test_a_bad_liveness_value_names_the_variable_and_the_value(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"invalid {name} '{value}'"):
        load_liveness({name: value})


def test_channel_options_carry_the_keepalive_settings() -> None:
    opts = dict(channel_options(Liveness(time=6.0, timeout=5.0)))
    assert opts["grpc.keepalive_time_ms"] == 6000
    assert opts["grpc.keepalive_timeout_ms"] == 5000
    assert opts["grpc.http2.max_pings_without_data"] == 0


def test_the_agent_metrics_show_the_member_in_use_and_the_restarts() -> None:
    from types import SimpleNamespace

    from agent.health import Metrics

    syncer = SimpleNamespace(endpoint="http://127.0.0.1:2379", rewatches=0, stalls=0)
    metrics = Metrics()
    metrics.follow_syncer(syncer)  # type: ignore[arg-type]  # only these three are read
    syncer.endpoint, syncer.rewatches, syncer.stalls = "http://127.0.0.1:22379", 2, 1
    text = metrics.render().decode()
    assert 'tortie_datastore_endpoint{endpoint="http://127.0.0.1:22379"} 1.0' in text
    assert "tortie_datastore_watch_restarts_total 2.0" in text
    assert "tortie_datastore_watch_stalls_total 1.0" in text
