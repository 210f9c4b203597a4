"""The edge of a CNI plugin process (libcni's skel, for tortie-cni and tortie-ipam).

Owns the protocol mechanics every invocation shares: read and validate the
CNI_* environment, read stdin, answer VERSION, dispatch ADD/DEL/CHECK to the
plugin's handler, print the result JSON on stdout, or print ONE error object
(code, msg, details) on stdout and exit 1. An exception that is not a
CniError is a bug: it is logged with its traceback and reported as code 999.

Logging: before the configuration is read, warnings go to stderr (runtimes
show a plugin's stderr to the user or their log); `configure_logging` then
adds the configuration's log_file_path at its log_level. stdout carries only
the result or the error, as the spec requires.

This module imports only the standard library and the pure cni modules, so
VERSION and malformed input are answered in the time Python takes to start.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

from .errors import CniError, InternalError, IOFailure
from .spec import CURRENT_VERSION, SUPPORTED_VERSIONS, CniEnv, version_result

Handler = Callable[[CniEnv, bytes], "dict[str, Any] | None"]

_log = logging.getLogger("cni")
_LOG_FORMAT = "%(asctime)s [%(levelname)s][%(process)d] %(name)s: %(cni)s%(message)s"


class _Context(logging.Filter):
    """Prefixes every record with the command and container it belongs to."""

    def __init__(self) -> None:
        super().__init__()
        self.prefix = ""

    def filter(self, record: logging.LogRecord) -> bool:
        record.cni = self.prefix
        return True


_context = _Context()


def _base_logging(stderr: IO[str]) -> None:
    root = logging.getLogger()
    if any(getattr(h, "_tortie", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    handler.addFilter(_context)
    handler._tortie = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.WARNING)


def configure_logging(level: int, path: str | None) -> None:
    """Add the configured log file (created with its directory) at `level`."""
    root = logging.getLogger()
    if path:
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            handler = logging.FileHandler(path)
        except OSError as exc:
            _log.warning("cannot open log_file_path %s: %s", path, exc)
        else:
            handler.setLevel(level)
            handler.setFormatter(logging.Formatter(_LOG_FORMAT))
            handler.addFilter(_context)
            root.addHandler(handler)
            root.setLevel(min(level, logging.WARNING))
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
        stderr: IO[str] | None = None, program: str = "tortie-cni") -> int:
    """One invocation; returns the exit code (0, or 1 with an error object printed)."""
    environ = os.environ if environ is None else environ
    stdout = stdout or sys.stdout
    _base_logging(stderr or sys.stderr)
    started = time.monotonic()
    data = b""
    try:
        env = CniEnv.from_environ(environ)
        _context.prefix = (f"{env.command} {env.container_id[:12]} " if env.container_id
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
