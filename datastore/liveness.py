"""Watch-stall detection: pure bookkeeping over a clock the caller passes in.

Owns the rule for when a watch stream counts as stalled. A stream is alive
while it answers: any response (events, or the answer to a progress request)
counts. After `probe_after` seconds of silence the owner should ask for
progress (`probe_due`); after `stall_after` seconds of silence, probes
included, the stream is stalled (`stalled`) and must be re-established
elsewhere. gRPC keepalive catches a dead TCP connection; this catches a
stream that is connected yet says nothing (a member cut off from its peers,
a stream stuck in a proxy, or a keepalive that never fires).

Invariants: no I/O and no clock reads here; time only moves forward when the
caller says so; `restart` forgets everything about the previous stream.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StallDetector:
    stall_after: float
    last_heard: float
    last_probe: float | None = None

    def __post_init__(self) -> None:
        if not self.stall_after > 0:
            raise ValueError(f"stall_after must be positive, got {self.stall_after}")

    @property
    def probe_after(self) -> float:
        # Ask at half the stall time so that a live stream has the other half to answer.
        return self.stall_after / 2

    def restart(self, now: float) -> None:
        """A new stream starts now."""
        self.last_heard, self.last_probe = now, None

    def heard(self, now: float) -> None:
        """The stream delivered something (events or a progress answer)."""
        self.last_heard = max(self.last_heard, now)

    def probe_due(self, now: float) -> bool:
        """Whether to send a progress request now (at most one per probe interval)."""
        since = self.last_heard if self.last_probe is None else max(self.last_heard,
                                                                     self.last_probe)
        return now - since >= self.probe_after

    def probed(self, now: float) -> None:
        self.last_probe = now

    def stalled(self, now: float) -> bool:
        return now - self.last_heard >= self.stall_after

    def next_check(self, now: float) -> float:
        """Seconds until probe_due or stalled can next change (for a wait timeout)."""
        since = self.last_heard if self.last_probe is None else max(self.last_heard,
                                                                     self.last_probe)
        return max(0.0, min(since + self.probe_after, self.last_heard + self.stall_after) - now)
