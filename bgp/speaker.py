"""ExaBGP as a supervised child process, driven over its process API.

Owns, per workdir: one ExaBGP process (restarted with backoff when it fails), its
config file `exabgp.conf`, its log `exabgp.log` (the previous run's in `.log.1`), the
unix socket `api.sock` that ExaBGP's API process (bgp/relay.py) connects to, and
the queue of commands for it.

One thread, `_loop`, does everything: it starts and reaps ExaBGP, accepts the relay,
reads and parses every line, writes commands, runs the timers. Public methods take
a lock, change the wanted state and wake it; none of them blocks. Every event
(parsed lines, SpeakerStarted, SpeakerStopped) comes from that thread, in order, so
on_event must be quick (callers queue events). ExaBGP is spawned from that thread
too: PR_SET_PDEATHSIG fires when the spawning *thread* ends.

Commands: at most `window` unacknowledged; each `done`/`error` releases the next
(ExaBGP acks async commands in order; only announce/withdraw/show are sent). An
`error` is logged with its command. While a reload is unconfirmed, commands wait:
one for a neighbour the reload adds would otherwise be an `error`.

Start-up on a starved host: the relay has CONNECT_DEADLINE to say hello, 10 s at
first and twice as long after each consecutive miss (up to 120 s); at the deadline
an ExaBGP that is alive and has used CPU since the last look (its own and its
children's utime+stime in /proc) is starting slowly, not stuck, and is left to
run, up to the cap. Every restart that follows a failure (exit, no hello, relay
lost, reload not applied) waits RESTART_BACKOFF (1 s doubling to 30 s, +/-20 %);
both counters reset once an ExaBGP has run HEALTHY_AFTER with its relay. A fixed
deadline there became a loop: 415 ExaBGP starts on a 50-node lab, each one
adding the load that made the previous one miss (docs/reliability.md, "Load").

The relay dying alone (ExaBGP respawns it) restarts ExaBGP: whatever ExaBGP had
written to the dead relay (UPDATEs, state changes) is lost and never sent again, so
only a new ExaBGP (SpeakerStopped, SpeakerStarted, full re-announce) is consistent.

ExaBGP 5.0.15 facts, verified against the real thing (tests/bgp/test_speaker.py):
- Commands for a configured neighbour that is not established are accepted (`done`)
  and kept in its adj-RIB-out, sent when the session comes up; a withdraw before
  that cancels the announce. A command for an unconfigured neighbour is `error`.
- The adj-RIB-out survives session flaps: when a session comes back ExaBGP sends
  every route it holds for that peer, then EOR. So: send each route change once,
  and everything again only after SpeakerStarted (a new ExaBGP starts empty).
- With `manual-eor true` (bgp.render writes it) ExaBGP sends no EOR by itself;
  `neighbor <ip> announce eor ipv4 unicast` queues one for an *established*
  neighbor (`error` otherwise), sent once the routes queued for it before the
  command are out. Commands are applied in order, so an EOR sent after the
  announcements follows them on the wire (tests/bgp/test_speaker.py). A queued EOR
  that a session drop interrupts stays queued in ExaBGP for the next session
  (after that session's routes: harmless).
- Reload (SIGUSR1): an added neighbour starts. A removed one's session is closed
  (bare TCP close, no NOTIFICATION; its reconnects are then refused with Cease 6/3)
  and its adj-RIB-out is dropped: re-adding it starts empty. A neighbour whose
  session settings changed (hold time, password, ...) is re-established (Cease 6/3
  "Peer De-configured") and keeps its routes, unless its identity changed (peer or
  local address, ASNs, router-id): that is a removal plus an addition, so it starts
  empty. The other sessions are not touched and keep their routes. So: announce
  everything to a neighbour that is new to the config or whose identity changed.
- Stock 5.0.15 silently drops a SIGUSR1 while any neighbour that is not passive has
  updates queued; a neighbour that cannot connect keeps them queued (with no route
  to it, forever), so with one peer down reloads stop. It also sleeps 10 ms per loop
  turn while API work is queued (50 routes per turn: ~2k routes/s), keeps polling
  sockets that collision handling closed, deep-copies every route it sends, and
  spends ~35 us of CPU per received prefix (10,000 /26 from BIRD, 256 per UPDATE:
  ~0.35 s, ExaBGP at 100% of a CPU; the relay and our reader take ~0.03 s) on work
  nothing reads. bgp/exabgp_launcher.py, run in place of the exabgp script (5.0.15
  only; `patch=False` runs the stock script), fixes these in-process, each patch
  with what it replaces and its measurement; tests/bgp/test_speaker.py compares its
  decoder and encoder with stock. 10,000 routes then reach the peer's API process
  in ~1.3 s instead of 4-5 s, and ExaBGP receives 10,000 in ~0.1 s of CPU in
  bench/bgp.py. The API runs with `exabgp.api.compact` (prefixes as bare
  strings), which halves the JSON for ExaBGP, the relay and our reader.
  Reloads are confirmed from ExaBGP's log ("performing reload", then "loaded new
  configuration successfully" or "could not load/reload configuration"),
  re-signalled every second if missing, and after 5 tries turned into a restart.
- A BIRD 2.0.12 sender can hold back its last UPDATE until it next hears from us
  (our next KEEPALIVE, up to hold-time/3 later) when our EOR went out before its
  routes: seen as ~2 s tails in tests and bench/bgp.py; not ours to fix.
- ExaBGP ignores a signal that arrives while it still handles the previous one, so
  SIGTERM is repeated until it exits (SIGKILL after the stop timeout).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import pwd
import random
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bgp.messages import (
    SHOW_NEIGHBORS,
    Ack,
    announce_commands,
    end_of_rib_command,
    parse_line,
    withdraw_commands,
)
from bgp.relay import RELAY_MARK
from bgp.types import OutRoute, SpeakerEvent, SpeakerStarted, SpeakerStopped
from datastore.backoff import Backoff, Schedule

log = logging.getLogger(__name__)

RELAY = Path(__file__).with_name("relay.py")
# run in place of the exabgp script, by the same Python: ExaBGP 5.0.15 with its fixes
LAUNCHER = Path(__file__).with_name("exabgp_launcher.py")
WINDOW = 16  # commands in flight
RESTART_BACKOFF = Schedule(first=1.0, cap=30.0)  # wait before a restart after a failure
HEALTHY_AFTER = 30.0  # an instance that lived this long with its relay resets both counters
# From spawn to the relay's hello, by consecutive misses: 10, 20, 40, 80, 120 s. Not
# jittered: it is a patience, not a retry time (the restart after a miss is jittered).
CONNECT_DEADLINE = Schedule(first=10.0, cap=120.0, jitter=0.0)
RELAY_LOST_GRACE = 1.0  # relay gone, ExaBGP still alive after this: restart ExaBGP
RELOAD_RETRY, RELOAD_TRIES = 1.0, 5  # SIGUSR1 re-sent each second, then restart
STOP_TIMEOUT = 5.0

# exabgp.* settings: ours by default, the caller's env over them, the forced ones last.
_DEFAULT_ENV = {
    "exabgp.log.statistics": "false",
    "exabgp.log.processes": "false",  # one INFO line per route added otherwise
    # A unicast prefix as "10.0.0.0/26", not { "nlri": "10.0.0.0/26" }: half the text to
    # write, relay and read, and no dict per prefix to decode. bgp.messages reads both.
    "exabgp.api.compact": "true",
}
_FORCED_ENV = {
    "exabgp.api.ack": "true",
    "exabgp.api.respawn": "true",
    "exabgp.daemon.daemonize": "false",
    # reloads are confirmed from these log lines (configuration and reactor, INFO)
    "exabgp.log.enable": "true",
    "exabgp.log.destination": "stdout",
    "exabgp.log.level": "INFO",
    "exabgp.log.configuration": "true",
    "exabgp.log.reactor": "true",
}
_EOR = " announce eor "
_RELOAD_START = b"performing reload of exabgp"
_RELOAD_OK = b"loaded new configuration successfully"
_RELOAD_FAILED = b"could not load/reload configuration"

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _child_setup(parent: int) -> None:
    """In the child, before exec: die with the spawning thread; close the fork race."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


@dataclass(slots=True)
class _Reload:
    text: str
    log_offset: int
    signalled: float
    tries: int = 1


class ExaBGPSpeaker:
    """One supervised ExaBGP and its command stream. See the module docstring."""

    def __init__(self, workdir: Path, on_event: Callable[[SpeakerEvent], None], *,
                 exabgp: str | None = None, name: str = "tortie", netns: str | None = None,
                 window: int = WINDOW, patch: bool = True, cli: bool = False):
        self.workdir = Path(workdir)
        self.on_event = on_event
        self.exabgp = exabgp or str(Path(sys.executable).with_name("exabgp"))
        self.netns, self.window, self.patch, self.cli = netns, window, patch, cli
        self.conf_path = self.workdir / "exabgp.conf"
        self.log_path = self.workdir / "exabgp.log"
        self.socket_path = self.workdir / "api.sock"
        if len(os.fsencode(self.socket_path)) > 107:
            raise ValueError(f"unix socket path too long (max 107 bytes): {self.socket_path}")
        if any(c.isspace() for arg in self.api_argv() for c in arg):
            # ExaBGP splits `run` on whitespace and has no quoting
            raise ValueError(f"whitespace in the relay's command line: {self.api_argv()}")
        digest = hashlib.sha1(os.fsencode(self.workdir.resolve())).hexdigest()[:8]
        self.pipename = f"{name}-{digest}"

        self._lock = threading.Condition()
        self._queue: deque[str] = deque()  # guarded by _lock; consumed by the loop
        self._want_text: str | None = None
        self._want_env: dict[str, str] = {}
        self._stopping = False
        self._stop_timeout = STOP_TIMEOUT
        self._thread: threading.Thread | None = None
        self._wake_r = self._wake_w = -1  # made with the thread

        # loop-thread state
        self._sel: selectors.BaseSelector | None = None  # made with the thread
        self._listener: socket.socket | None = None
        self._proc: subprocess.Popen | None = None
        self._pidfd = -1
        self._generation = 0
        self._started_at = 0.0
        self._run_text: str | None = None  # the config the running ExaBGP has loaded
        self._run_env: dict[str, str] = {}
        self._failed_text: str | None = None  # a reload ExaBGP rejected: not retried
        self._reload: _Reload | None = None
        self._restart_reason = ""  # set when we stop ExaBGP to restart it
        self._restart_failed = False  # ... because it failed (restart after the backoff)
        self._kill_at = 0.0
        self._next_start = 0.0
        self._restarts = Backoff(RESTART_BACKOFF)  # consecutive failed runs
        self._connect = Backoff(CONNECT_DEADLINE)  # consecutive starts with no hello
        self._connect_deadline = 0.0  # when the current start is next looked at
        self._cpu_seen = 0  # CPU ticks of ExaBGP and its children at the last look
        self.starts = 0  # ExaBGP processes spawned; for tests and the load figures
        self._conn: socket.socket | None = None
        self._hello_seen = False  # the current generation's relay has connected once
        self._lost_at: float | None = None
        self._rbuf = b""
        self._wbuf = bytearray()
        self._inflight: deque[str] = deque()
        self.stats = {"sent": 0, "done": 0, "error": 0}
        self.config_error: str | None = None  # why ExaBGP rejected the last reload, if it did

    # -- public API (any thread) -----------------------------------------------------------

    def api_argv(self) -> list[str]:
        """The relay's command line, for the `run` of the config's API process (joined with
        spaces: ExaBGP has no quoting, so no element contains whitespace)."""
        return [sys.executable, "-I", "-S", str(RELAY), str(self.socket_path)]

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc else None

    def configure(self, config_text: str, env: Mapping[str, str]) -> None:
        """Want this config and these `exabgp.*` settings (e.g. exabgp.tcp.bind,
        exabgp.tcp.port). Starts ExaBGP the first time; afterwards a changed text is
        reloaded (SIGUSR1, confirmed), a changed env restarts it (SpeakerStopped, then
        SpeakerStarted). Returns at once."""
        with self._lock:
            if self._stopping:
                raise RuntimeError("speaker stopped")
            self._want_text, self._want_env = config_text, dict(env)
            if self._thread is None:
                self.workdir.mkdir(parents=True, exist_ok=True)
                self._sel = selectors.DefaultSelector()
                self._wake_r, self._wake_w = os.pipe()
                os.set_blocking(self._wake_r, False)
                os.set_blocking(self._wake_w, False)
                self._thread = threading.Thread(target=self._loop, name="exabgp-speaker",
                                                daemon=True)
                self._thread.start()
        self._wake()

    def announce(self, peer_ip: str, routes: Sequence[OutRoute]) -> None:
        if routes:
            self._enqueue(announce_commands(peer_ip, routes))

    def withdraw(self, peer_ip: str, prefixes: Sequence[str]) -> None:
        if prefixes:
            self._enqueue(withdraw_commands(peer_ip, prefixes))

    def end_of_rib(self, peer_ip: str) -> None:
        """End-of-RIB to an established neighbor, after every command queued before it
        (the config must say `manual-eor true`, bgp.render does)."""
        self._enqueue([end_of_rib_command(peer_ip)])

    def request_neighbors(self) -> None:
        """Ask for `show neighbor json`: a NeighborTable event follows."""
        self._enqueue([SHOW_NEIGHBORS])

    def pending(self) -> int:
        """Commands queued or waiting for their ack."""
        with self._lock:
            return len(self._queue) + len(self._inflight)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every command has been acknowledged (for tests and shutdown)."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._queue and not self._inflight, timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Terminate ExaBGP (SIGTERM, SIGKILL after `timeout`) and end the thread."""
        with self._lock:
            self._stopping, self._stop_timeout = True, timeout
            thread = self._thread
        self._wake()
        if thread is not None:
            thread.join(timeout + 5)
        else:
            self._close_fds()

    # -- the loop -----------------------------------------------------------------------------

    def _enqueue(self, commands: list[str]) -> None:
        with self._lock:
            self._queue.extend(commands)
        self._wake()

    def _wake(self) -> None:
        with self._lock, contextlib.suppress(BlockingIOError):  # the lock: fd not closed under us
            if self._wake_w >= 0:
                os.write(self._wake_w, b"x")

    def _emit(self, event: SpeakerEvent) -> None:
        try:
            self.on_event(event)
        except Exception:
            log.exception("on_event failed for %r", event)

    def _loop(self) -> None:
        try:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
            self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._listener.bind(str(self.socket_path))
            self._listener.listen(8)
            self._listener.setblocking(False)
            self._sel.register(self._listener, selectors.EVENT_READ, self._on_accept)
            self._sel.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
            self._make_fifos()
        except OSError:
            log.exception("cannot listen on %s; exabgp not started", self.socket_path)
            self._close_fds()
            return
        try:
            while True:
                try:
                    if self._stopping:
                        self._shutdown()
                        return
                    timeout = self._tick(time.monotonic())
                    for key, mask in self._sel.select(timeout):
                        key.data(key.fileobj, mask)
                except Exception:  # never exit on a bug in one turn; it is logged
                    log.exception("speaker loop")
                    time.sleep(0.5)
        finally:
            self._close_fds()

    def _on_wake(self, _fd: object, _mask: int) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)
        self._pump()

    def _tick(self, now: float) -> float:
        """Time-driven work; returns how long the loop may sleep."""
        with self._lock:
            want_text, want_env = self._want_text, self._want_env
        proc = self._proc
        if proc is None:
            if want_text is not None and (now >= self._next_start or want_text != self._run_text
                                          or want_env != self._run_env):
                # a changed config is worth trying at once, whatever the backoff
                self._spawn(want_text, want_env, now)
                return 0.05
            return max(0.0, self._next_start - now) if want_text is not None else 1.0
        if self._kill_at:  # stopping it: SIGTERM again (see _terminate), then SIGKILL
            if now >= self._kill_at:
                log.warning("exabgp %d ignored SIGTERM; killing it", proc.pid)
                self._signal(signal.SIGKILL)
            else:
                self._signal(signal.SIGTERM)
            return 0.5
        if want_env != self._run_env:
            self._restart("environment changed", failure=False)
            return 0.2
        if self._hello_seen and now - self._started_at >= HEALTHY_AFTER:
            self._restarts.succeeded()
            self._connect.succeeded()
        if self._conn is None:
            if not self._hello_seen and now >= self._connect_deadline:
                self._check_start(proc.pid, now)
            elif self._hello_seen and now - (self._lost_at or now) > RELAY_LOST_GRACE:
                # what ExaBGP wrote to the dead relay is lost (UPDATEs, state changes) and
                # will not be sent again: only a new ExaBGP gives a consistent picture
                self._restart("the API relay went away", failure=True)
            return 0.2
        if self._reload is not None:
            return self._check_reload(now)
        if want_text != self._run_text and want_text != self._failed_text:
            self._start_reload(want_text, now)
            return 0.02
        return 1.0

    # -- process lifecycle ---------------------------------------------------------------------

    def _argv(self) -> list[str]:
        argv = [self.exabgp, "server", str(self.conf_path)]
        python = self._interpreter() if self.patch else None
        if python:
            argv = [python, "-I", str(LAUNCHER), *argv]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        return argv

    def _interpreter(self) -> str | None:
        """The Python that runs the exabgp script (its shebang), to run the launcher with."""
        try:
            with open(self.exabgp, "rb") as f:
                first = f.readline(512)
        except OSError:
            return None
        if first.startswith(b"#!") and b"python" in first:
            words = first[2:].decode(errors="replace").split()
            return words[0] if words and os.path.isabs(words[0]) else None
        return None

    def _child_env(self, want_env: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.lower().startswith("exabgp")}
        env.update(_DEFAULT_ENV)
        env["exabgp.daemon.user"] = pwd.getpwuid(os.geteuid()).pw_name
        env["exabgp.api.pipename"] = self.pipename
        env["exabgp.api.cli"] = "true" if self.cli else "false"
        env.update(want_env)
        env.update(_FORCED_ENV)
        return env

    def _spawn(self, text: str, env: dict[str, str], now: float) -> None:
        self._run_text, self._run_env, self._failed_text = text, dict(env), None
        _write_atomic(self.conf_path, text)
        if self.log_path.exists():
            os.replace(self.log_path, self.log_path.with_suffix(".log.1"))
        argv = self._argv()
        with open(self.log_path, "wb") as logfile:
            try:
                proc = subprocess.Popen(
                    argv, env=self._child_env(env), cwd=self.workdir, stdin=subprocess.DEVNULL,
                    stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True,
                    preexec_fn=functools.partial(_child_setup, os.getpid()))
            except OSError as exc:
                log.error("cannot start exabgp (%s): %s", " ".join(argv), exc)
                self._schedule_restart(now)
                return
        self._proc, self._started_at = proc, now
        self._connect_deadline = now + self._connect.current()
        self._cpu_seen = 0
        self.starts += 1
        self._pidfd = os.pidfd_open(proc.pid)
        self._sel.register(self._pidfd, selectors.EVENT_READ, self._on_exit)
        self._generation += 1
        self._hello_seen, self._lost_at, self._reload = False, None, None
        log.info("exabgp started: pid %d, generation %d, %s", proc.pid, self._generation,
                 " ".join(argv))

    def _check_start(self, pid: int, now: float) -> None:
        """At the connect deadline: wait on if ExaBGP is making progress, else restart."""
        cpu = _cpu_ticks(pid)
        waited = now - self._started_at
        if cpu > self._cpu_seen and waited < CONNECT_DEADLINE.cap:
            log.warning("exabgp %d: no hello from its API relay after %.0fs, but it is "
                        "running (%d CPU ticks since the last look); waiting on",
                        pid, waited, cpu - self._cpu_seen)
            self._cpu_seen = cpu
            self._connect_deadline = now + min(self._connect.current(),
                                               CONNECT_DEADLINE.cap - waited)
            return
        self._connect.missed()
        self._restart(f"the API relay did not connect within {waited:.0f}s", failure=True)

    def _signal(self, sig: int) -> None:
        # pidfd_send_signal: no risk of signalling a recycled pid
        with contextlib.suppress(ProcessLookupError, OSError):
            signal.pidfd_send_signal(self._pidfd, sig)

    def _restart(self, reason: str, *, failure: bool) -> None:
        """Stop ExaBGP to start it again: at once when wanted (a new environment), after
        the restart backoff when the running one failed."""
        log.warning("restarting exabgp %d: %s", self._proc.pid, reason)
        self._restart_reason, self._restart_failed = reason, failure
        self._signal(signal.SIGTERM)
        self._kill_at = time.monotonic() + STOP_TIMEOUT

    def _schedule_restart(self, now: float) -> None:
        wait = self._restarts.failed(random.random())
        self._next_start = now + wait
        log.info("exabgp: next start in %.1fs (failure %d in a row)", wait,
                 self._restarts.failures)

    def _on_exit(self, _fd: object, _mask: int) -> None:
        proc, now = self._proc, time.monotonic()
        rc = proc.wait()
        self._sel.unregister(self._pidfd)
        os.close(self._pidfd)
        self._proc, self._pidfd, self._kill_at = None, -1, 0.0
        self._drop_conn()
        with self._lock:  # they were for the instance that is gone; SpeakerStarted resends
            self._queue.clear()
            self._inflight.clear()
            self._lock.notify_all()
        self._wbuf.clear()
        self._reload = None
        if self._restart_reason and not self._restart_failed:
            reason, self._restart_reason = self._restart_reason, ""
            self._next_start = now
        else:
            if self._restart_reason:
                reason, self._restart_reason = self._restart_reason, ""
            else:
                reason = f"exabgp exited with status {rc}"
                log.error("%s; last lines of %s:\n%s", reason, self.log_path,
                          _tail(self.log_path))
            self._schedule_restart(now)
        self._emit(SpeakerStopped(reason))

    def _shutdown(self) -> None:
        proc = self._proc
        if proc is not None:
            self._terminate(proc, self._stop_timeout)
            self._sel.unregister(self._pidfd)
            os.close(self._pidfd)
            self._proc, self._pidfd = None, -1
            self._emit(SpeakerStopped("stopped"))
        self._drop_conn()
        with self._lock:
            self._queue.clear()
            self._inflight.clear()
            self._lock.notify_all()

    def _terminate(self, proc: subprocess.Popen, timeout: float) -> None:
        # ExaBGP ignores a signal that arrives while it still handles the previous one
        # (a SIGTERM just after a SIGUSR1 is lost), so SIGTERM is repeated.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._signal(signal.SIGTERM)
            try:
                proc.wait(0.5)
                return
            except subprocess.TimeoutExpired:
                pass
        log.warning("exabgp %d ignored SIGTERM for %.0f s; killing it", proc.pid, timeout)
        self._signal(signal.SIGKILL)
        proc.wait()

    def _close_fds(self) -> None:
        with self._lock:
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
        if self._sel is not None:
            self._sel.close()
        self._remove_fifos()

    # -- reload ----------------------------------------------------------------------------------

    def _start_reload(self, text: str, now: float) -> None:
        _write_atomic(self.conf_path, text)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._reload = _Reload(text, offset, now)
        self._signal(signal.SIGUSR1)

    def _check_reload(self, now: float) -> float:
        r = self._reload
        seen = _read_from(self.log_path, r.log_offset)
        start = seen.find(_RELOAD_START)
        if start >= 0 and _RELOAD_OK in seen[start:]:
            self._run_text, self._reload, self.config_error = r.text, None, None
            log.info("exabgp reloaded its configuration")
            self._pump()
            return 0.0
        if start >= 0 and _RELOAD_FAILED in seen[start:]:
            self._failed_text, self._reload = r.text, None
            self.config_error = seen[start:].decode(errors="replace")[-2000:].strip()
            log.error("exabgp rejected the new configuration and keeps the old one:\n%s",
                      self.config_error)
            self._pump()
            return 0.0
        if now - r.signalled < RELOAD_RETRY:
            return 0.02
        if r.tries >= RELOAD_TRIES:
            self._restart(f"configuration reload not applied after {r.tries} SIGUSR1",
                          failure=True)
            return 0.2
        r.tries += 1
        r.signalled = now  # ExaBGP drops a SIGUSR1 while updates are queued: ask again
        self._signal(signal.SIGUSR1)
        return 0.02

    # -- the relay connection ----------------------------------------------------------------------

    def _on_accept(self, _fd: object, _mask: int) -> None:
        try:
            conn, _ = self._listener.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        self._sel.register(conn, selectors.EVENT_READ, self._on_hello)

    def _on_hello(self, conn: socket.socket, _mask: int) -> None:
        """A new connection says `relay <pid>` first; only our ExaBGP's relay is kept."""
        try:
            data = conn.recv(65536, socket.MSG_PEEK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        line, newline, _rest = data.partition(b"\n")
        if not newline and data and len(data) < 65536:
            return  # wait for the whole line
        self._sel.unregister(conn)
        proc = self._proc
        words = line.split()
        if (not newline or len(words) != 2 or words[0] != RELAY_MARK.encode() or proc is None
                or words[1] != str(proc.pid).encode()):
            log.debug("closing a relay connection that is not our exabgp's: %r", line[:80])
            conn.close()
            return
        if self._hello_seen:  # ExaBGP respawned its relay: see RELAY_LOST_GRACE
            conn.close()
            if not self._kill_at:
                self._restart("the API relay was respawned", failure=True)
            return
        conn.recv(len(line) + 1)  # consume the hello; the rest is ExaBGP's
        self._conn, self._lost_at, self._rbuf, self._hello_seen = conn, None, b"", True
        self._sel.register(conn, selectors.EVENT_READ, self._on_io)
        self._emit(SpeakerStarted(self._generation))
        self._pump()

    def _drop_conn(self) -> None:
        if self._conn is not None:
            self._sel.unregister(self._conn)
            self._conn.close()
            self._conn = None
            self._lost_at = time.monotonic()
        self._rbuf = b""
        self._wbuf.clear()

    def _on_io(self, conn: socket.socket, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            try:
                data = conn.recv(1 << 18)
            except BlockingIOError:
                data = None
            except OSError:
                data = b""
            if data == b"":
                log.warning("exabgp's API relay disconnected")
                self._drop_conn()
                return
            if data:
                *lines, self._rbuf = (self._rbuf + data).split(b"\n")
                for line in lines:
                    self._on_line(line)
                    if self._conn is not conn:
                        return
        self._pump()  # acks opened the window, or the socket is writable again

    def _on_line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace")
        result = parse_line(line)
        if isinstance(result, Ack):
            with self._lock:
                command = self._inflight.popleft() if self._inflight else None
                if not self._queue and not self._inflight:
                    self._lock.notify_all()
            self.stats["done" if result.ok else "error"] += 1
            if command is None:
                log.debug("ack without a command in flight")
            elif not result.ok and _EOR in command:
                # the session went down between its `up` and our End-of-RIB: the next
                # `up` brings another one
                log.info("exabgp did not send %r: the session is no longer up", command)
            elif not result.ok:
                log.error("exabgp rejected: %s", command if len(command) < 300 else command[:300] + "...")
        elif result is not None:
            self._emit(result)
        elif line.strip():
            log.debug("exabgp: %s", line[:300])

    def _pump(self) -> None:
        """Move queued commands to the socket while the window allows."""
        if self._conn is None:
            return
        with self._lock:
            # a reload due or unconfirmed holds new commands (ones already written go on)
            hold = self._reload is not None or self._want_text not in (self._run_text,
                                                                        self._failed_text)
            while not hold and self._queue and len(self._inflight) < self.window:
                command = self._queue.popleft()
                self._inflight.append(command)
                self._wbuf += command.encode() + b"\n"
                self.stats["sent"] += 1
        self._flush()

    def _flush(self) -> None:
        conn = self._conn
        if conn is None:
            return
        if self._wbuf:
            try:
                del self._wbuf[:conn.send(self._wbuf)]
            except BlockingIOError:
                pass
            except OSError:
                self._drop_conn()
                return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._wbuf else 0)
        if self._sel.get_key(conn).events != events:
            self._sel.modify(conn, events, self._on_io)

    # -- exabgp-cli FIFOs (only with cli=True) ---------------------------------------------------

    def _fifos(self) -> list[Path]:
        return [Path("/run/exabgp") / f"{self.pipename}.{end}" for end in ("in", "out")]

    def _make_fifos(self) -> None:
        if not self.cli:
            return
        for fifo in self._fifos():
            fifo.parent.mkdir(parents=True, exist_ok=True)
            if not fifo.exists():
                os.mkfifo(fifo, 0o600)

    def _remove_fifos(self) -> None:
        if self.cli:
            for fifo in self._fifos():
                with contextlib.suppress(FileNotFoundError):
                    fifo.unlink()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except OSError:
        return b""


def _cpu_ticks(pid: int) -> int:
    """utime+stime of `pid` and its direct children (the relay, ExaBGP's helpers), in
    clock ticks; 0 for a process that is gone. A start that uses CPU is progressing."""
    total = 0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for p in (str(pid), *children):
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        # fields after the command (which may hold spaces): state is field 3, utime 14
        fields = stat.rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total


def _tail(path: Path, lines: int = 15) -> str:
    data = _read_from(path, max(0, (path.stat().st_size if path.exists() else 0) - 8192))
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])
