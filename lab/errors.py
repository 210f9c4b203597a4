"""The lab's exception tree: one clear message per failure, with its context.

Owns: LabError and subclasses. Command failures carry argv, exit code and
stderr so the CLI edge can print one useful line.
"""

from __future__ import annotations

import subprocess


class LabError(Exception):
    """Anything the lab could not do; the message is meant for the user."""


class LabNotFound(LabError):
    """No state for this lab name (it is not up, or was torn down)."""


class CommandFailed(LabError, subprocess.CalledProcessError):
    """A command exited non-zero. Also a CalledProcessError, for callers that expect one."""

    def __init__(
        self, argv: list[str], returncode: int, stdout: str | bytes | None = None,
        stderr: str | bytes | None = None, input: str | None = None,
    ) -> None:
        subprocess.CalledProcessError.__init__(self, returncode, argv, stdout, stderr)
        self.argv = argv
        self.input = input

    def __str__(self) -> str:
        err = self.stderr.decode(errors="replace") if isinstance(self.stderr, bytes) else self.stderr
        msg = f"command {' '.join(self.argv)!r} exited with {self.returncode}"
        if err and err.strip():
            msg += f": {err.strip()[-800:]}"
        if self.input:
            msg += "\n  input was:\n    " + "\n    ".join(self.input.strip().splitlines()[:40])
        return msg
