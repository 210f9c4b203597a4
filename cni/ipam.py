"""IPAM for one invocation: tortie's own (in this process), or a delegated IPAM plugin.

`ipam.type: tortie-ipam` runs the same code as the `tortie-ipam` binary, in the
main plugin's process (`TortieIpam`): executing a second Python plugin would
double the start-up cost of every ADD. Any other type is executed from
CNI_PATH exactly as the spec describes delegation (`DelegatedIpam`): same
environment, the network configuration on stdin, its result or error parsed
back; a delegate's error keeps its code.

Both are idempotent like the rest of the plugin: `add` for a container that
already has addresses returns them (tortie: by handle; delegates handle it
themselves), `delete` of nothing succeeds.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from .backend import Backend
from .config import TORTIE_IPAM, IpamConf, NetConf, parse_requested_ip
from .errors import (
    CheckFailed,
    DecodingFailure,
    DelegateFailed,
    InvalidConfig,
    InvalidEnvironment,
    error_for_code,
)
from .naming import Workload
from .spec import CniEnv, IPConfig, Result

_log = logging.getLogger(__name__)

DELEGATE_TIMEOUT = 120.0


class Ipam(Protocol):
    def add(self) -> Result: ...
    def delete(self) -> None: ...
    def check(self, prev: Result) -> None: ...


class TortieIpam:
    """Addresses from tortie's pools for `workload`, /32 each (calico-ipam's result)."""

    def __init__(self, backend: Callable[[], Backend], workload: Workload, conf: IpamConf,
                 requested: Sequence[str] = ()) -> None:
        self._backend = backend
        self.workload = workload
        self.conf = conf
        self.requested = tuple(requested)

    def add(self) -> Result:
        ips = self._backend().assign(self.workload, self.requested, self.conf.ipv4_pools)
        return Result(ips=tuple(IPConfig(f"{ip}/32") for ip in ips), routes=self.conf.routes)

    def delete(self) -> None:
        self._backend().release(self.workload.handle_id)

    def check(self, prev: Result) -> None:
        held = set(self._backend().addresses(self.workload.handle_id))
        missing = [ip.ip for ip in prev.ips if ip.version == "4" and ip.ip not in held]
        if missing:
            raise CheckFailed(
                f"IPAM handle {self.workload.handle_id} does not hold {', '.join(missing)} "
                f"(it holds {', '.join(sorted(held)) or 'nothing'})")


def find_plugin(name: str, path: Sequence[str]) -> str:
    """The executable `name` in CNI_PATH (InvalidConfig naming the directories otherwise)."""
    if "/" in name or name in (".", ".."):
        raise InvalidConfig(f"ipam.type={json.dumps(name)} is not a plugin name")
    if not path:
        raise InvalidEnvironment(f"CNI_PATH is empty: cannot find the IPAM plugin {name!r}")
    for directory in path:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise InvalidConfig(f"unknown IPAM type ipam.type={json.dumps(name)}: no plugin of that "
                        f"name in CNI_PATH ({':'.join(path)})")


class DelegatedIpam:
    """Another IPAM plugin, executed as the spec describes (libcni's invoke.DelegateAdd)."""

    def __init__(self, env: CniEnv, environ: Mapping[str, str], conf: NetConf) -> None:
        assert conf.ipam is not None
        self.type = conf.ipam.type
        self.binary = find_plugin(self.type, env.path)
        self.environ = dict(environ)
        self.conf = conf

    def _exec(self, command: str, stdin: Mapping[str, Any]) -> dict[str, Any] | None:
        env = {**self.environ, "CNI_COMMAND": command}
        _log.info("delegating %s to IPAM plugin %s", command, self.binary)
        try:
            res = subprocess.run([self.binary], input=json.dumps(stdin).encode(), env=env,
                                 capture_output=True, timeout=DELEGATE_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DelegateFailed(f"IPAM plugin {self.type} could not run: {exc}") from None
        out = res.stdout.decode(errors="replace").strip()
        if res.returncode != 0:
            try:
                err = json.loads(out)
                code, msg = int(err["code"]), str(err["msg"])
            except (ValueError, KeyError, TypeError):
                raise DelegateFailed(
                    f"IPAM plugin {self.type} failed with exit code {res.returncode}",
                    (out or res.stderr.decode(errors="replace"))[-500:]) from None
            raise error_for_code(code, f"IPAM plugin {self.type}: {msg}",
                                 str(err.get("details", "")))
        if not out:
            return None
        try:
            return json.loads(out)
        except ValueError:
            raise DecodingFailure(f"IPAM plugin {self.type} printed something that is not "
                                  "JSON", out[:300]) from None

    def add(self) -> Result:
        doc = self._exec("ADD", self.conf.raw)
        if doc is None:
            raise DecodingFailure(f"IPAM plugin {self.type} returned no result")
        return Result.from_dict(doc, f"the result of IPAM plugin {self.type}")

    def delete(self) -> None:
        self._exec("DEL", self.conf.raw)

    def check(self, prev: Result) -> None:
        self._exec("CHECK", self.conf.raw)


def make_ipam(conf: NetConf, env: CniEnv, environ: Mapping[str, str], workload: Workload,
              backend: Callable[[], Backend], requested: Sequence[str] = ()) -> Ipam:
    assert conf.ipam is not None
    if conf.ipam.type == TORTIE_IPAM:
        return TortieIpam(backend, workload, conf.ipam, requested)
    if requested:
        raise InvalidConfig(f"requested IPs ({', '.join(requested)}) need ipam.type "
                            f"{TORTIE_IPAM}, not {conf.ipam.type}")
    return DelegatedIpam(env, environ, conf)


def requested_ips(cni_args: Mapping[str, str], conf: NetConf) -> tuple[str, ...]:
    """Specific addresses asked for: CNI_ARGS IP=a[,b] (Calico) or args.cni.ips."""
    out = list(conf.pod.requested_ips)
    for i, part in enumerate(p for p in cni_args.get("IP", "").split(",") if p.strip()):
        try:
            out.append(parse_requested_ip(part.strip(), f"CNI_ARGS IP[{i}]"))
        except InvalidConfig as exc:
            raise InvalidEnvironment(exc.msg) from None
    return tuple(dict.fromkeys(out))  # parse_requested_ip made them canonical
