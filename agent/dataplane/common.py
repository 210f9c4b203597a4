"""agent.dataplane.common: what every writer shares.

Owns: `ApplyResult` (what one `apply()` did), the `ip -batch` runner and the
parser of its per-line failures. Pure except `run_ip_batch`, which only runs
`ip` in the writer's namespace.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from agent.dataplane.errors import CommandError, DataplaneError

_log = logging.getLogger(__name__)

IP = "ip"


@dataclass(frozen=True)
class ApplyResult:
    """What one `apply()` did to the kernel.

    writes/deletes count kernel mutations that succeeded (a restart with an
    unchanged cluster must report 0 and 0). `skipped` counts objects left alone
    this round on purpose (a foreign route in the way, a vanished interface, a
    deletion held back by a grace period). `retry_after` is set when the writer
    wants `apply()` again after that many seconds even without new input.
    `changed_links` names interfaces the writer created, deleted or recreated,
    so the other writers can re-read what they had on them.
    """

    writes: int = 0
    deletes: int = 0
    errors: tuple[DataplaneError, ...] = ()
    skipped: int = 0
    retry_after: float | None = None
    changed_links: tuple[str, ...] = ()
    # What the writer leaves out until something changes (not errors: no retry).
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def mutations(self) -> int:
        return self.writes + self.deletes


# iptables-restore says "line: 3" / "line 3", ipset restore "Error in line 3".
_INPUT_LINE_RE = re.compile(r"[Ll]ine:? (\d+)")


def failed_input_line(stderr: str, text: str) -> str | None:
    """The restore/batch input line an error message points at, if it names one."""
    m = _INPUT_LINE_RE.search(stderr)
    lines = text.splitlines()
    if m and 0 < int(m.group(1)) <= len(lines):
        return lines[int(m.group(1)) - 1]
    return None


def ip_argv(netns: str | None, *args: str) -> list[str]:
    argv = [IP]
    if netns:
        argv += ["-n", netns]
    return [*argv, *args]


def bridge_argv(netns: str | None, *args: str) -> list[str]:
    argv = ["bridge"]
    if netns:
        argv += ["-n", netns]
    return [*argv, *args]


_FAILED = re.compile(r"^Command failed (.*):(\d+)\s*$")


def parse_batch_errors(stderr: str) -> tuple[dict[int, str], str]:
    """Split `ip -force -batch` stderr into {0-based line index: error text}.

    iproute2 prints a command's own messages (`Cannot find device "x"`,
    `RTNETLINK answers: ...`, `Error: ...`) and then `Command failed -:N`
    (1-based), so everything since the previous marker belongs to line N.
    Returns the per-line errors and any trailing text not attributed to a line.
    """
    errors: dict[int, str] = {}
    buf: list[str] = []
    for raw in stderr.splitlines():
        m = _FAILED.match(raw)
        if m:
            errors[int(m.group(2)) - 1] = "\n".join(buf).strip() or "failed"
            buf = []
        elif raw.strip():
            buf.append(raw.strip())
    return errors, "\n".join(buf)


def run_ip_batch(
    netns: str | None, lines: Iterable[str], *, force: bool = True, timeout: float = 60.0
) -> dict[int, str]:
    """Run `ip [-n NS] [-force] -batch -` over `lines`; return the failed lines' errors.

    Lines are streamed to ip's stdin as the iterable yields them, so a caller
    that renders lazily overlaps its own work with the kernel's. With force,
    iproute2 keeps going past a failing line and reports each one
    (`parse_batch_errors`); without it, it stops at the first. Raises
    CommandError when `ip` could not run the batch at all (no per-line report:
    missing namespace, missing binary, timeout). Nothing is run for no lines.
    """
    it = iter(lines)
    first = next(it, None)
    if first is None:
        return {}
    argv = ip_argv(netns, *(["-force"] if force else []), "-batch", "-")
    sent: list[str] = []
    # stderr goes to a file, not a pipe: a long run of failing lines must not
    # block ip on a full pipe while we are still writing its stdin.
    with tempfile.TemporaryFile(mode="w+") as err:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=err, text=True)
        except OSError as e:
            raise CommandError(argv, None, str(e)) from e
        assert proc.stdin is not None
        try:
            chunk = [first]
            for line in it:
                chunk.append(line)
                if len(chunk) >= 512:
                    proc.stdin.write("\n".join(chunk) + "\n")
                    sent += chunk
                    chunk = []
            proc.stdin.write("\n".join(chunk) + "\n")
            sent += chunk
            proc.stdin.close()
            # A blocking wait with a kill timer: Popen.wait(timeout=) polls with
            # sleeps of up to 50 ms, which would dominate a one-route apply.
            timer = threading.Timer(timeout, proc.kill)
            timer.start()
            try:
                rc = proc.wait()
            finally:
                timer.cancel()
            if rc == -signal.SIGKILL:
                raise subprocess.TimeoutExpired(argv, timeout)
        except (OSError, subprocess.TimeoutExpired) as e:  # BrokenPipe: ip died early
            proc.kill()
            proc.wait()
            err.seek(0)
            raise CommandError(argv, proc.returncode, f"{e}; {err.read()}",
                               "\n".join(sent)) from e
        except BaseException:
            proc.kill()  # the line source failed: do not leave ip waiting on stdin
            proc.wait()
            raise
        err.seek(0)
        stderr = err.read()
    if rc == 0:
        if stderr.strip():
            _log.debug("ip -batch stderr with exit 0: %s", stderr.strip())
        return {}
    errors, rest = parse_batch_errors(stderr)
    if not errors:
        raise CommandError(argv, rc, stderr, "\n".join(sent))
    if rest:
        _log.warning("ip -batch: unattributed stderr: %s", rest)
    return errors
