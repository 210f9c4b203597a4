"""agent.dataplane.errors: the dataplane writers' exception tree.

    DataplaneError                 anything a writer could not do to the kernel
     ├── CommandError              `ip`/`bridge` exited non-zero: argv, returncode, stderr, input
     ├── NetlinkError              a netlink request failed: operation, errno
     ├── NamespaceError            the target network namespace is missing or unusable
     ├── DeviceError               a tunnel device could not be brought to its desired state
     └── SysctlError               a /proc/sys write failed: path, value

Writers do not raise these out of `apply()`: they return them in
`ApplyResult.errors`, mark themselves dirty and retry on the next apply (Felix's
`dataplaneNeedsSync`). They are raised from constructors and helpers.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CommandError",
    "DataplaneError",
    "DeviceError",
    "NamespaceError",
    "NetlinkError",
    "SysctlError",
]


class DataplaneError(Exception):
    """A kernel object could not be read or written."""


class CommandError(DataplaneError):
    """An external command failed. `line` is the failing batch line, when known."""

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        stderr: str,
        input: str | None = None,
        line: str | None = None,
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        self.input = input
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        cmd = " ".join(self.argv)
        where = f" on {self.line!r}" if self.line else ""
        err = self.stderr.strip()[-600:] if self.stderr else ""
        return f"{cmd!r} failed{where} (exit {self.returncode}): {err or 'no stderr'}"


class NetlinkError(DataplaneError):
    def __init__(self, operation: str, errno: int | None, message: str = "") -> None:
        self.operation = operation
        self.errno = errno
        self.message = message
        super().__init__(f"netlink {operation} failed: errno {errno} {message}".rstrip())


class NamespaceError(DataplaneError):
    def __init__(self, netns: str, reason: str) -> None:
        self.netns = netns
        self.reason = reason
        super().__init__(f"network namespace {netns!r}: {reason}")


class DeviceError(DataplaneError):
    def __init__(self, device: str, reason: str) -> None:
        self.device = device
        self.reason = reason
        super().__init__(f"device {device}: {reason}")


class SysctlError(DataplaneError):
    def __init__(self, path: str, value: str, reason: str) -> None:
        self.path = path
        self.value = value
        self.reason = reason
        super().__init__(f"sysctl {path}={value}: {reason}")
