"""The edge of a CNI plugin process (libcni's skel, for tortie-cni and tortie-ipam).

Owns the protocol mechanics every invocation shares: read and validate the
CNI_* environment, read stdin, answer VERSION, dispatch ADD/DEL/CHECK to the
plugin's handler, print the result JSON on stdout, or print ONE error object
(code, msg, details) on stdout and exit 1. An exception that is not a
CniError is a bug: it is logged with its traceback and reported as code 999.

Logging: before the configuration is read, warnings go to stderr (runtimes
show a plugin's stderr to the user or their log); `configure_logging` then
adds the configuration's log_file_path at its log_level. stdout carries only
the result or the error, as the spec requires. All of it is per call, not
per process: the CNI server runs many calls at once on its threads
(cni/shim_server.py), each with its own stderr, log file and level, so the
call's state lives in a context variable and the root logger's handlers are
installed once (one per log file) and route each record by the call that
logged it.

This module imports only the standard library and the pure cni modules, so
VERSION and malformed input are answered in the time Python takes to start.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

from .errors import CniError, InternalError, IOFailure
from .spec import CURRENT_VERSION, SUPPORTED_VERSIONS, CniEnv, version_result

Handler = Callable[[CniEnv, bytes], "dict[str, Any] | None"]

_log = logging.getLogger("cni")
_LOG_FORMAT = "%(asctime)s [%(levelname)s][%(process)d] %(name)s: %(cni)s%(message)s"


class _Call:
    """One invocation's logging: its prefix, its stderr, its log file and level."""

    def __init__(self, stderr: IO[str]) -> None:
        self.prefix = ""
        self.stderr = stderr
        self.path: str | None = None
        self.level = logging.WARNING


# The invocation the running thread serves. A plugin process has one; the CNI server runs
# many at once, one per thread (each thread has its own context), so nothing about a call
# may live in a module global or on the root logger's handler list.
_current: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("tortie_cni_call",
                                                                        default=None)


class CallContext(logging.Filter):
    """Prefixes every record with the command and container of the call it belongs to."""

    def filter(self, record: logging.LogRecord) -> bool:
        call = _current.get()
        record.cni = call.prefix if call else ""
        return True


class _CallStderr(logging.Handler):
    """Warnings and errors to the stderr of the call that logged them (none: dropped)."""

    def emit(self, record: logging.LogRecord) -> None:
        call = _current.get()
        if call is not None and record.levelno >= logging.WARNING:
            try:
                call.stderr.write(self.format(record) + "\n")
            except (OSError, ValueError):
                pass


class _ForPath(logging.Filter):
    """Lets through the records of calls that log to `path`, at their level."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def filter(self, record: logging.LogRecord) -> bool:
        call = _current.get()
        return call is not None and call.path == self.path and record.levelno >= call.level


_handlers_lock = threading.Lock()
_files: dict[str, logging.Handler] = {}  # log_file_path -> its one handler in this process


def _base_logging() -> None:
    """Install (once per process) the per-call handlers on the root logger."""
    root = logging.getLogger()
    with _handlers_lock:
        if any(isinstance(h, _CallStderr) for h in root.handlers):
            return
        handler = _CallStderr()
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        handler.addFilter(CallContext())
        root.addHandler(handler)
        root.setLevel(min(root.getEffectiveLevel(), logging.WARNING))


def configure_logging(level: int, path: str | None) -> None:
    """Send the running call's records at `level` to the log file `path` too (its directory
    is created; one handler per file per process, shared by the calls that name it)."""
    call = _current.get()
    root = logging.getLogger()
    if path and call is not None:
        problem: OSError | None = None
        with _handlers_lock:
            handler = _files.get(path)
            if handler is None:
                try:
                    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
                    handler = logging.FileHandler(path)
                except OSError as exc:
                    problem = exc
                else:
                    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
                    handler.addFilter(CallContext())
                    handler.addFilter(_ForPath(path))
                    root.addHandler(handler)
                    _files[path] = handler
        if handler is None:
            _log.warning("cannot open log_file_path %s: %s", path, problem)
        else:
            call.path, call.level = path, level
            # Never raised: another call (or the server itself) may want lower levels.
            root.setLevel(min(root.getEffectiveLevel(), level))
    for name in ("grpc", "pyetcd", "urllib3"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def _error_version(data: bytes) -> str:
    """The cniVersion to put in an error: the configuration's if it is a supported one."""
    try:
        version = json.loads(data).get("cniVersion")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return CURRENT_VERSION
    return version if version in SUPPORTED_VERSIONS else CURRENT_VERSION


def run(handlers: Mapping[str, Handler], *, environ: Mapping[str, str] | None = None,
        stdin: IO[bytes] | None = None, stdout: IO[str] | None = None,
        stderr: IO[str] | None = None, program: str = "tortie-cni",
        netns_via: str | None = None) -> int:
    """One invocation; returns the exit code (0, or 1 with an error object printed).

    `netns_via`: where this process reaches CNI_NETNS when not by its path (the CNI
    server: the namespace file descriptor the shim passed; "" when it passed none).
    """
    environ = os.environ if environ is None else environ
    stdout = stdout or sys.stdout
    _base_logging()
    call = _Call(stderr or sys.stderr)
    token = _current.set(call)
    started = time.monotonic()
    data = b""
    try:
        env = CniEnv.from_environ(environ)
        if netns_via is not None and env.netns:
            env = env._replace(netns_via=netns_via)
        call.prefix = (f"{env.command} {env.container_id[:12]} " if env.container_id
                       else f"{env.command} ")
        if env.command == "VERSION":
            stdout.write(json.dumps(version_result()) + "\n")
            return 0
        try:
            data = (stdin or sys.stdin.buffer).read()
        except OSError as exc:
            raise IOFailure(f"could not read the network configuration from stdin: {exc}") from None
        result = handlers[env.command](env, data)
        if result is not None:
            stdout.write(json.dumps(result, indent=1) + "\n")
        _log.info("%s done in %.3fs", env.command, time.monotonic() - started)
        return 0
    except CniError as exc:
        _log.error("%s failed (code %d): %s%s", program, exc.code, exc.msg,
                   f" [{exc.details}]" if exc.details else "")
        stdout.write(exc.to_json(_error_version(data)) + "\n")
        return 1
    except Exception as exc:  # noqa: BLE001 - the edge: a bug must still answer in CNI terms
        _log.exception("%s: unexpected error", program)
        err = InternalError(f"internal error in {program}: {type(exc).__name__}: {exc}",
                            "this is a bug; the traceback is in the plugin's log")
        stdout.write(err.to_json(_error_version(data)) + "\n")
        return 1
    finally:
        stdout.flush()
        _current.reset(token)


Command = Callable[[CniEnv, bytes, Mapping[str, str]], "dict[str, Any] | None"]


def plugin_main(program: str, add: Command, delete: Command, check: Command) -> None:
    """A plugin's entry point: its three commands over this process's environment."""
    environ = dict(os.environ)
    handlers: dict[str, Handler] = {
        "ADD": lambda env, data: add(env, data, environ),
        "DEL": lambda env, data: delete(env, data, environ),
        "CHECK": lambda env, data: check(env, data, environ),
    }
    sys.exit(run(handlers, environ=environ, program=program))
