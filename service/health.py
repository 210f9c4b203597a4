"""Health reporting and the HTTP endpoints of every long-running tortie program.

Owns: `/liveness`, `/readiness` and `/metrics`, and the registry of health
reporters. Each component (a datastore syncer, a loop, a watch) reports
`live`/`ready` with a reason and a timeout: a reporter that has not reported
within its timeout counts as not live, so a wedged loop turns the probe red.
`probe()` asks a running program (the programs' `--live`/`--ready` flags).
The metrics themselves belong to each program (agent/health.py,
kube_controllers/metrics.py); this module only serves what they render.
"""

from __future__ import annotations

import http.server
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client.exposition import CONTENT_TYPE_LATEST

_log = logging.getLogger(__name__)

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 9099


@dataclass
class _Report:
    live: bool = True
    ready: bool = False
    detail: str = ""
    at: float = 0.0
    timeout: float = 0.0  # 0: never stale


class HealthAggregator:
    """Thread-safe collection of component health reports."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._reports: dict[str, _Report] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def register(self, name: str, timeout: float = 0.0) -> None:
        with self._lock:
            self._reports.setdefault(name, _Report(timeout=timeout, at=self._clock()))

    def report(self, name: str, *, live: bool = True, ready: bool, detail: str = "") -> None:
        with self._lock:
            old = self._reports.get(name, _Report())
            self._reports[name] = _Report(live, ready, detail, self._clock(), old.timeout)

    def summary(self) -> dict[str, object]:
        now = self._clock()
        with self._lock:
            items = dict(self._reports)
        components = {}
        live = ready = True
        for name, r in sorted(items.items()):
            stale = bool(r.timeout) and now - r.at > r.timeout
            c_live = r.live and not stale
            c_ready = r.ready and c_live
            live &= c_live
            ready &= c_ready
            detail = r.detail or ("no report for %.0fs" % (now - r.at) if stale else "")
            components[name] = {"live": c_live, "ready": c_ready, "detail": detail}
        return {"live": live, "ready": ready, "components": components}


class MetricsSource(Protocol):
    """What /metrics serves: a program's metrics rendered in Prometheus' text format."""

    def render(self) -> bytes: ...


class HealthServer:
    """Serves /liveness, /readiness and /metrics on (host, port) in a daemon thread."""

    def __init__(self, health: HealthAggregator, metrics: MetricsSource,
                 host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
        self.health, self.metrics = health, metrics
        handler = self._handler()
        self._server = http.server.ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="tortie-health", daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        _log.info("health and metrics on http://%s:%d", *self._server.server_address[:2])
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, outer.metrics.render(), CONTENT_TYPE_LATEST)
                    return
                if path in ("/liveness", "/readiness"):
                    summary = outer.health.summary()
                    ok = summary["live" if path == "/liveness" else "ready"]
                    body = json.dumps(summary, indent=1).encode() + b"\n"
                    self._send(200 if ok else 503, body, "application/json")
                    return
                self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: object) -> None:
                _log.debug("health: " + fmt, *args)

        return Handler


def probe(kind: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          timeout: float = 3.0) -> tuple[bool, str]:
    """`--live`/`--ready` of a program: ask the running one; (ok, one-line reason)."""
    path = "/liveness" if kind == "live" else "/readiness"
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout):
            return True, f"{kind}: ok"
    except urllib.error.HTTPError as exc:
        try:
            summary = json.loads(exc.read())
            bad = [f"{n}: {c['detail'] or 'not ' + kind}" for n, c in
                   summary["components"].items() if not c["ready" if kind == "ready" else "live"]]
            return False, f"not {kind}: " + "; ".join(bad)
        except (ValueError, KeyError):
            return False, f"not {kind}: HTTP {exc.code}"
    except OSError as exc:
        return False, f"not {kind}: health endpoint {host}:{port} unreachable ({exc})"
