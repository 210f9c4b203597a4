"""`tortie-ipam`: tortie's IPAM as a stand-alone CNI IPAM plugin (calico-ipam's role).

Used by tortie-cni in-process, and executable by any main plugin that
delegates IPAM (the reference `bridge`, `ptp`, ...):

  ADD    an IPv4 address from tortie's pools for handle `<network>.<CNI_CONTAINERID>`
         on this node (its affine blocks first; see ipam/allocator.py); the
         result is `<ip>/32` (as calico-ipam's) plus `ipam.routes` if configured.
         A retried ADD returns the address the handle already holds.
  DEL    releases every address of the handle; nothing to release is success.
  CHECK  the handle still holds every IPv4 address of prevResult.

With a main plugin that puts pods on a shared L2 segment (bridge), configure
`"routes": [{"dst": "<pool CIDR>"}]` so that pods reach each other on-link
despite their /32s (docs/cni.md has a complete conflist). The node name,
datastore and logging keys are the main configuration's (config.py), as for
calico-ipam, which reads the same network configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import config
from .errors import IncompatibleVersion, InvalidConfig
from .ipam import TortieIpam, requested_ips
from .lazy_backend import LazyBackend, SharedBackend
from .naming import identify
from .skel import configure_logging, plugin_main
from .spec import CniEnv, parse_cni_args, supports_check


def _prepare(env: CniEnv, data: bytes, environ: Mapping[str, str],
             shared: SharedBackend | None = None) -> tuple[config.NetConf, TortieIpam, LazyBackend]:
    conf = config.parse(data)
    configure_logging(config.LOG_LEVELS[conf.log_level], conf.log_file_path)
    assert conf.ipam is not None
    if conf.ipam.type != config.TORTIE_IPAM:
        raise InvalidConfig(f"ipam.type is {conf.ipam.type!r}, but this is the "
                            f"{config.TORTIE_IPAM} plugin")
    cni_args = parse_cni_args(env.args)
    workload = identify(conf.name, config.node_name(conf), env.container_id, env.ifname,
                        cni_args)
    backend = LazyBackend(conf.etcd, environ, conf.server_socket, shared)
    requested = requested_ips(cni_args, conf) if env.command == "ADD" else ()
    return conf, TortieIpam(backend, workload, conf.ipam, requested), backend


def cmd_add(env: CniEnv, data: bytes, environ: Mapping[str, str],
            shared: SharedBackend | None = None) -> dict[str, Any]:
    conf, ipam, backend = _prepare(env, data, environ, shared)
    try:
        return ipam.add().to_dict(conf.cni_version)
    finally:
        backend.close()


def cmd_del(env: CniEnv, data: bytes, environ: Mapping[str, str],
            shared: SharedBackend | None = None) -> None:
    _, ipam, backend = _prepare(env, data, environ, shared)
    try:
        ipam.delete()
    finally:
        backend.close()


def cmd_check(env: CniEnv, data: bytes, environ: Mapping[str, str],
            shared: SharedBackend | None = None) -> None:
    conf, ipam, backend = _prepare(env, data, environ, shared)
    if not supports_check(conf.cni_version):
        raise IncompatibleVersion(f"CHECK is not defined for cniVersion {conf.cni_version}; "
                                  "it exists from 0.4.0")
    if conf.prev_result is None:
        raise InvalidConfig("CHECK needs prevResult in the network configuration")
    try:
        ipam.check(conf.prev_result)
    finally:
        backend.close()


def main() -> None:
    plugin_main("tortie-ipam", cmd_add, cmd_del, cmd_check)


if __name__ == "__main__":
    main()
