"""A shim call, run inside the CNI server: the whole plugin in-process, with the warm backend.

Owns what one request of shim/tortie-cni-shim.c becomes in the server
(cni/server.py receives it and sends the reply):

  * the program: `tortie` (cni.plugin) or `tortie-ipam` (cni.ipam_plugin), by the
    name the shim was run as; another name is a configuration error (code 7);
  * the environment the plugin sees (`call_environ`): the call's CNI_* and ETCD_*
    variables, and the server's ETCD_* where the call has none (the runtime's
    environment says nothing of etcd; the conflist or the server does). Nothing
    else of the runtime's environment reaches the server's process;
  * the container's network namespace: the shim passes CNI_NETNS as an open file
    descriptor, and the plugin reaches it as /proc/<server pid>/fd/<n>, which
    `nsenter --net=` and `ip ... netns` open like any namespace file. So the
    server works for any CNI_NETNS (/proc/<pid>/ns/net of a process it cannot see,
    /var/run/netns/<x> of a directory it has not mounted) and needs neither the
    host's PID namespace nor a mount of the runtime's netns directory. No
    descriptor (the shim could not open CNI_NETNS) means the namespace is gone;
  * the datastore: the server's LocalBackend when the call's settings name the
    datastore the server serves (no socket round trip, warm IPAM caches), else a
    backend of the call's own for that call;
  * stdout, stderr and the exit code, captured per call (cni.skel keeps logging
    per call, so concurrent calls never mix their output or log files).

The caller owns the descriptor and closes it after the call.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from . import ipam_plugin, plugin, skel
from .errors import InvalidConfig
from .lazy_backend import SharedBackend
from .shim_protocol import ShimReply, ShimRequest
from .spec import CniEnv

PROGRAMS: dict[str, ModuleType] = {"tortie": plugin, "tortie-ipam": ipam_plugin}
KEPT_PREFIXES = ("CNI_", "ETCD_")


def call_environ(call: Mapping[str, str], server: Mapping[str, str]) -> dict[str, str]:
    """The environment the in-process plugin sees (see the module docstring). Pure."""
    out = {k: v for k, v in server.items() if k.startswith("ETCD_")}
    out.update({k: v for k, v in call.items() if k.startswith(KEPT_PREFIXES)})
    return out


def netns_fd_path(fd: int | None, pid: int | None = None) -> str:
    """Where this process reaches the passed namespace ("" when none was passed)."""
    return "" if fd is None else f"/proc/{os.getpid() if pid is None else pid}/fd/{fd}"


def run_call(request: ShimRequest, netns_fd: int | None, shared: SharedBackend,
             server_environ: Mapping[str, str]) -> ShimReply:
    """Run the plugin the shim was invoked as, as that process would have; its reply."""
    environ = call_environ(request.environ, server_environ)
    module = PROGRAMS.get(request.program)
    handlers: dict[str, skel.Handler]
    if module is None:
        def refuse(env: CniEnv, data: bytes) -> dict[str, Any] | None:
            raise InvalidConfig(
                f"the tortie CNI shim was run as {request.program!r}: install it as "
                f"{' or '.join(PROGRAMS)} (the plugin's type names the file)")
        handlers = {"ADD": refuse, "DEL": refuse, "CHECK": refuse}
    else:
        handlers = {
            "ADD": lambda env, data: module.cmd_add(env, data, environ, shared),
            "DEL": lambda env, data: module.cmd_del(env, data, environ, shared),
            "CHECK": lambda env, data: module.cmd_check(env, data, environ, shared),
        }
    stdout, stderr = io.StringIO(), io.StringIO()
    code = skel.run(handlers, environ=environ, stdin=io.BytesIO(request.stdin), stdout=stdout,
                    stderr=stderr, program=request.program, netns_via=netns_fd_path(netns_fd))
    return ShimReply(code, stdout.getvalue().encode(), stderr.getvalue().encode())
