"""The shim's wire protocol (version 1), on the Python side: framing only. Pure.

Owns the byte layout that shim/tortie-cni-shim.c writes and reads (its header
and docs/cni.md describe the same; change all three together). Every integer
is an unsigned 32-bit number in network byte order:

  request  b"TCNI", version (1),
           the count of environment strings, then each as length + "KEY=VALUE" bytes,
           length + the program name (basename of argv[0]: "tortie" or "tortie-ipam"),
           length + stdin (the network configuration)
           (CNI_NETNS rides beside it as an SCM_RIGHTS file descriptor: cni/server.py)
  reply    exit code, length + stdout, length + stderr

Invariant: every length is bounded (`MAX_*`) before anything is allocated for
it, and a bad or truncated frame raises `FrameError` naming the field and the
value, so one broken client cannot make the server read or allocate without end.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

MAGIC = b"TCNI"
VERSION = 1
MAX_ENV = 4096
MAX_ENV_STRING = 128 << 10
MAX_NAME = 255
MAX_PART = 16 << 20  # stdin, and each of the reply's stdout and stderr

_U32 = struct.Struct("!I")


class FrameError(Exception):
    """A frame that breaks the protocol: the message names the field and the value."""


class ShimRequest(NamedTuple):
    environ: dict[str, str]  # the shim's whole environment (the server keeps what it needs)
    program: str
    stdin: bytes


class ShimReply(NamedTuple):
    code: int
    stdout: bytes
    stderr: bytes


def _part(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


def encode_request(environ: Mapping[str, str] | Sequence[str], program: str,
                   stdin: bytes) -> bytes:
    """What the shim sends (the server's tests and Python clients use it)."""
    items = ([f"{k}={v}" for k, v in environ.items()] if isinstance(environ, Mapping)
             else list(environ))
    return b"".join([MAGIC, _U32.pack(VERSION), _U32.pack(len(items)),
                     *(_part(s.encode()) for s in items), _part(program.encode()),
                     _part(stdin)])


def encode_reply(code: int, stdout: bytes, stderr: bytes) -> bytes:
    return _U32.pack(code) + _part(stdout[:MAX_PART]) + _part(stderr[:MAX_PART])


ReadExact = Callable[[int, str], bytes]
"""read_exact(n, what) -> exactly n bytes, or FrameError("... inside <what>")."""


def _u32(read: ReadExact, what: str) -> int:
    value: int = _U32.unpack(read(4, what))[0]
    return value


def _sized(read: ReadExact, what: str, limit: int) -> bytes:
    n = _u32(read, f"the length of {what}")
    if n > limit:
        raise FrameError(f"{what}: length {n} is over the limit of {limit} bytes")
    return read(n, what)


def read_request(read: ReadExact) -> ShimRequest:
    """Parse one request through `read` (bounded; FrameError on anything out of protocol)."""
    magic = read(4, "the magic")
    if magic != MAGIC:
        raise FrameError(f"magic={magic!r}: a shim request starts with {MAGIC!r}")
    version = _u32(read, "the version")
    if version != VERSION:
        raise FrameError(f"version={version}: this server speaks shim protocol {VERSION}; "
                         "install the shim that came with it")
    count = _u32(read, "the count of environment strings")
    if count > MAX_ENV:
        raise FrameError(f"environment count={count} is over the limit of {MAX_ENV}")
    environ: dict[str, str] = {}
    for i in range(count):
        raw = _sized(read, f"environment string {i}", MAX_ENV_STRING)
        key, sep, value = raw.decode("utf-8", "replace").partition("=")
        if not sep or not key:
            raise FrameError(f"environment string {i}={raw[:80]!r} is not KEY=VALUE")
        environ[key] = value
    program = _sized(read, "the program name", MAX_NAME).decode("utf-8", "replace")
    stdin = _sized(read, "stdin", MAX_PART)
    return ShimRequest(environ, program, stdin)


def read_reply(read: ReadExact) -> ShimReply:
    code = _u32(read, "the exit code")
    return ShimReply(code, _sized(read, "stdout", MAX_PART), _sized(read, "stderr", MAX_PART))


def buffer_reader(data: bytes) -> ReadExact:
    """read_exact over bytes already received: FrameError when they end too soon."""
    offset = 0

    def read(n: int, what: str) -> bytes:
        nonlocal offset
        chunk = data[offset:offset + n]
        if len(chunk) < n:
            raise FrameError(f"truncated frame: it ends inside {what} ({len(chunk)} of {n} "
                             "bytes)")
        offset += n
        return chunk

    return read


def decode_request(data: bytes) -> ShimRequest:
    return read_request(buffer_reader(data))


def decode_reply(data: bytes) -> ShimReply:
    return read_reply(buffer_reader(data))
