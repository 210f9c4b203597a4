"""Health aggregation, the HTTP endpoints and the probes."""

from __future__ import annotations

import urllib.request

from agent.health import HealthAggregator, HealthServer, Metrics, probe


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ready_only_when_every_component_is():
    h = HealthAggregator()
    h.report("datastore", ready=True)
    h.report("dataplane", ready=False, detail="waiting for datastore in-sync")
    s = h.summary()
    assert s["live"] and not s["ready"]
    assert s["components"]["dataplane"]["detail"] == "waiting for datastore in-sync"
    h.report("dataplane", ready=True)
    assert h.summary()["ready"]


def test_stale_reporter_is_not_live():
    clock = FakeClock()
    h = HealthAggregator(clock=clock)
    h.register("loop", timeout=30)
    h.report("loop", ready=True)
    clock.now += 31
    s = h.summary()
    assert not s["live"] and not s["ready"]
    assert "no report for 31s" in s["components"]["loop"]["detail"]


def test_endpoints_and_probes():
    h, m = HealthAggregator(), Metrics()
    h.report("datastore", ready=False, detail="etcd unreachable")
    server = HealthServer(h, m, host="127.0.0.1", port=0).start()
    try:
        ok, reason = probe("live", "127.0.0.1", server.port)
        assert ok, reason
        ok, reason = probe("ready", "127.0.0.1", server.port)
        assert not ok and "datastore: etcd unreachable" in reason
        m.routes.labels("VXLAN_TUNNEL").set(3)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics") as resp:
            text = resp.read().decode()
        assert 'tortie_routes{route_class="VXLAN_TUNNEL"} 3.0' in text
    finally:
        server.stop()
    ok, reason = probe("ready", "127.0.0.1", server.port, timeout=0.5)
    assert not ok and "unreachable" in reason
