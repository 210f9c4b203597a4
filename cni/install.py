"""`tortie-install-cni`: put the plugins and the network configuration where runtimes look.

Owns the installation for a node (the Helm chart's init container, the lab,
a hand install), calico/cni's install-cni in spirit and in its variables:

  <bin dir>/tortie, <bin dir>/tortie-ipam   launchers of this Python environment's
                                            plugins (default /opt/cni/bin);
                                            `tortie` is the name runtimes look up
                                            for `"type": "tortie"`
  <conf dir>/<conf name>                    the conflist (default
                                            /etc/cni/net.d/10-tortie.conflist)

The conflist is rendered from the built-in template (tortie, then portmap, and
bandwidth if asked), or from a template given in CNI_NETWORK_CONFIG /
CNI_NETWORK_CONFIG_FILE whose __PLACEHOLDERS__ (Calico's names, listed in
`PLACEHOLDERS`) are replaced. It must be valid JSON after rendering, and its
first plugin must be tortie; otherwise nothing is written.

Invariants: every file is written to a temporary name in its directory and
renamed into place, so a runtime never executes or reads half a file;
unchanged files are not rewritten (an init container that runs again changes
nothing); the launchers run the interpreter with -I (no PYTHON* environment,
no user site) so a runtime's environment cannot redirect the plugin, and
without `site` where they can (`launcher`).
"""

from __future__ import annotations

import argparse
import json
import os
import site
import stat
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cni

from .config import DEFAULT_SERVER_SOCKET

DEFAULT_BIN_DIR = "/opt/cni/bin"
DEFAULT_CONF_DIR = "/etc/cni/net.d"
DEFAULT_CONF_NAME = "10-tortie.conflist"
DEFAULT_NETWORK = "k8s-pod-network"
# plugin file name -> module whose main() it runs
PLUGINS = {"tortie": "cni.plugin", "tortie-ipam": "cni.ipam_plugin"}


@dataclass(frozen=True)
class Settings:
    nodename: str = ""
    mtu: int = 0
    etcd_endpoints: str = ""
    etcd_ca_cert_file: str = ""
    etcd_cert_file: str = ""
    etcd_key_file: str = ""
    log_level: str = "info"
    log_file_path: str = "/var/log/tortie/cni.log"
    server_socket: str = DEFAULT_SERVER_SOCKET
    mtu_file: str = ""
    nodename_file: str = ""
    network_name: str = DEFAULT_NETWORK
    cni_version: str = "1.0.0"
    portmap: bool = True
    bandwidth: bool = False
    policy_setup_timeout: int = 0
    endpoint_status_dir: str = ""


PLACEHOLDERS = {
    "__KUBERNETES_NODE_NAME__": "nodename",
    "__CNI_MTU__": "mtu",
    "__ETCD_ENDPOINTS__": "etcd_endpoints",
    "__ETCD_CA_CERT_FILE__": "etcd_ca_cert_file",
    "__ETCD_CERT_FILE__": "etcd_cert_file",
    "__ETCD_KEY_FILE__": "etcd_key_file",
    "__LOG_LEVEL__": "log_level",
    "__LOG_FILE_PATH__": "log_file_path",
    "__CNI_SERVER_SOCKET__": "server_socket",
}


class InstallError(Exception):
    pass


def render_conflist(s: Settings) -> dict[str, Any]:
    """The default conflist for settings `s` (pure)."""
    main: dict[str, Any] = {"type": "tortie", "log_level": s.log_level,
                            "datastore_type": "etcdv3", "mtu": s.mtu,
                            "ipam": {"type": "tortie-ipam"}}
    optional = {
        "log_file_path": s.log_file_path, "etcd_endpoints": s.etcd_endpoints,
        "etcd_ca_cert_file": s.etcd_ca_cert_file, "etcd_cert_file": s.etcd_cert_file,
        "etcd_key_file": s.etcd_key_file, "nodename": s.nodename, "mtu_file": s.mtu_file,
        "nodename_file": s.nodename_file, "endpoint_status_dir": s.endpoint_status_dir,
        "policy_setup_timeout_seconds": s.policy_setup_timeout,
    }
    main.update({k: v for k, v in optional.items() if v})
    main["cni_server_socket"] = s.server_socket
    plugins: list[dict[str, Any]] = [main]
    if s.portmap:
        plugins.append({"type": "portmap", "snat": True, "capabilities": {"portMappings": True}})
    if s.bandwidth:
        plugins.append({"type": "bandwidth", "capabilities": {"bandwidth": True}})
    return {"name": s.network_name, "cniVersion": s.cni_version, "plugins": plugins}


def render_template(template: str, s: Settings) -> dict[str, Any]:
    """A Calico-style template with __PLACEHOLDERS__, rendered and checked (pure)."""
    text = template
    for placeholder, attr in PLACEHOLDERS.items():
        text = text.replace(placeholder, str(getattr(s, attr)))
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise InstallError(f"the network configuration template is not JSON once rendered: "
                           f"{exc}") from None
    plugins = doc.get("plugins") if isinstance(doc, dict) else None
    if not isinstance(plugins, list) or not plugins or not isinstance(plugins[0], dict):
        raise InstallError("the network configuration template must be a conflist with a "
                           "\"plugins\" list")
    if plugins[0].get("type") != "tortie":
        raise InstallError(f"the first plugin of the template is {plugins[0].get('type')!r}, "
                           "not 'tortie'")
    return doc


def import_paths() -> list[str]:
    """Where this environment finds tortie and its dependencies (what `site` would add)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(cni.__file__)))
    return list(dict.fromkeys([root, *site.getsitepackages()]))


def launcher(module: str, python: str) -> str:
    """The plugin executable: `python -I` (no PYTHON* variables, no user site).

    (One shebang argument: Linux passes "-I -S" as a single word, so -IS.)
    For this interpreter it also skips `site` (-S), listing the paths site would
    have added: site and its .pth files (an editable install's import hook
    especially) cost ~20 ms of every invocation, a fifth of the plugin's start-up.
    Another interpreter (--python) keeps site, whose paths we cannot know here.
    """
    if python != sys.executable:
        return (f"#!{python} -I\n"
                f"# Installed by tortie-install-cni: runs {module}.\n"
                f"from {module} import main\n"
                "main()\n")
    return (f"#!{python} -IS\n"
            f"# Installed by tortie-install-cni: runs {module} of this Python environment.\n"
            "import sys\n"
            f"sys.path[:0] = {import_paths()!r}\n"
            f"from {module} import main\n"
            "main()\n")


def _write_atomic(path: str, content: str, mode: int) -> bool:
    """Write `content` to `path` via a temporary file + rename; False if already identical."""
    try:
        with open(path) as f:
            if f.read() == content and stat.S_IMODE(os.stat(path).st_mode) == mode:
                return False
    except (FileNotFoundError, UnicodeDecodeError, IsADirectoryError):
        pass
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tortie-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(content)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def install(bin_dir: str, conf_dir: str, conf_name: str, conflist: Mapping[str, Any],
            python: str = sys.executable, skip_binaries: bool = False) -> list[str]:
    """Install launchers and the conflist; returns the paths written (unchanged ones skipped)."""
    written = []
    if not skip_binaries:
        for name, module in PLUGINS.items():
            path = os.path.join(bin_dir, name)
            if _write_atomic(path, launcher(module, python), 0o755):
                written.append(path)
    path = os.path.join(conf_dir, conf_name)
    if _write_atomic(path, json.dumps(conflist, indent=2) + "\n", 0o644):
        written.append(path)
    return written


def settings_from(opts: argparse.Namespace) -> Settings:
    return Settings(
        nodename=opts.nodename, mtu=opts.mtu, etcd_endpoints=opts.etcd_endpoints,
        etcd_ca_cert_file=opts.etcd_ca_cert_file, etcd_cert_file=opts.etcd_cert_file,
        etcd_key_file=opts.etcd_key_file, log_level=opts.log_level,
        log_file_path=opts.log_file_path, server_socket=opts.server_socket,
        mtu_file=opts.mtu_file, nodename_file=opts.nodename_file,
        network_name=opts.network_name, portmap=not opts.no_portmap, bandwidth=opts.bandwidth,
        policy_setup_timeout=opts.policy_setup_timeout_seconds,
        endpoint_status_dir=opts.endpoint_status_dir)


def parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    e = environ.get
    p = argparse.ArgumentParser(
        prog="tortie-install-cni",
        description="Install the tortie CNI plugins and network configuration on this node. "
                    "Every option also comes from the environment variable named in brackets.")
    p.add_argument("--bin-dir", default=e("CNI_BIN_DIR", DEFAULT_BIN_DIR),
                   help="[CNI_BIN_DIR] where runtimes find plugins")
    p.add_argument("--conf-dir", default=e("CNI_NET_DIR", DEFAULT_CONF_DIR),
                   help="[CNI_NET_DIR] where runtimes find network configurations")
    p.add_argument("--conf-name", default=e("CNI_CONF_NAME", DEFAULT_CONF_NAME),
                   help="[CNI_CONF_NAME]")
    p.add_argument("--network-name", default=e("CNI_NETWORK_NAME", DEFAULT_NETWORK),
                   help="[CNI_NETWORK_NAME] the network's name (IPAM handles start with it)")
    p.add_argument("--nodename", default=e("KUBERNETES_NODE_NAME", e("NODENAME", "")),
                   help="[KUBERNETES_NODE_NAME, NODENAME] default: the agent's node name file")
    p.add_argument("--mtu", type=int, default=int(e("CNI_MTU", "0") or 0),
                   help="[CNI_MTU] 0: the MTU the agent publishes")
    p.add_argument("--mtu-file", default=e("CNI_MTU_FILE", ""), help="[CNI_MTU_FILE]")
    p.add_argument("--nodename-file", default=e("CNI_NODENAME_FILE", ""),
                   help="[CNI_NODENAME_FILE]")
    p.add_argument("--etcd-endpoints", default=e("ETCD_ENDPOINTS", ""), help="[ETCD_ENDPOINTS]")
    p.add_argument("--etcd-ca-cert-file", default=e("ETCD_CA_CERT_FILE", ""),
                   help="[ETCD_CA_CERT_FILE]")
    p.add_argument("--etcd-cert-file", default=e("ETCD_CERT_FILE", ""), help="[ETCD_CERT_FILE]")
    p.add_argument("--etcd-key-file", default=e("ETCD_KEY_FILE", ""), help="[ETCD_KEY_FILE]")
    p.add_argument("--log-level", default=e("CNI_LOG_LEVEL", "info"),
                   choices=["debug", "info", "warning", "error"], help="[CNI_LOG_LEVEL]")
    p.add_argument("--log-file-path", default=e("CNI_LOG_FILE_PATH", "/var/log/tortie/cni.log"),
                   help="[CNI_LOG_FILE_PATH] '' for none")
    p.add_argument("--server-socket", default=e("CNI_SERVER_SOCKET", DEFAULT_SERVER_SOCKET),
                   help="[CNI_SERVER_SOCKET] the node's CNI server; '' never uses one")
    p.add_argument("--policy-setup-timeout-seconds", type=int,
                   default=int(e("CNI_POLICY_SETUP_TIMEOUT_SECONDS", "0") or 0),
                   help="[CNI_POLICY_SETUP_TIMEOUT_SECONDS] ADD waits up to this long for the "
                        "agent to program the pod's policy; 0: no wait")
    p.add_argument("--endpoint-status-dir", default=e("CNI_ENDPOINT_STATUS_DIR", ""),
                   help="[CNI_ENDPOINT_STATUS_DIR] where the agent publishes that (default "
                        "/var/run/calico/endpoint-status)")
    p.add_argument("--no-portmap", action="store_true",
                   default=e("CNI_NO_PORTMAP", "") == "true", help="[CNI_NO_PORTMAP=true]")
    p.add_argument("--bandwidth", action="store_true", default=e("CNI_BANDWIDTH", "") == "true",
                   help="[CNI_BANDWIDTH=true] chain the bandwidth plugin too")
    p.add_argument("--template-file", default=e("CNI_NETWORK_CONFIG_FILE", ""),
                   help="[CNI_NETWORK_CONFIG_FILE] a conflist template with __PLACEHOLDERS__ "
                        "(CNI_NETWORK_CONFIG holds one inline)")
    p.add_argument("--python", default=e("TORTIE_PYTHON", sys.executable),
                   help="[TORTIE_PYTHON] interpreter the launchers run (this one by default)")
    p.add_argument("--skip-binaries", action="store_true",
                   default=e("SKIP_CNI_BINARIES", "") == "true",
                   help="[SKIP_CNI_BINARIES=true] write only the conflist")
    return p


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> None:
    environ = os.environ if environ is None else environ
    opts = parser(environ).parse_args(argv)
    settings = settings_from(opts)
    try:
        template = environ.get("CNI_NETWORK_CONFIG", "")
        if opts.template_file:
            try:
                with open(opts.template_file) as f:
                    template = f.read()
            except OSError as exc:
                raise InstallError(f"cannot read {opts.template_file}: {exc}") from None
        conflist = render_template(template, settings) if template else render_conflist(settings)
        written = install(opts.bin_dir, opts.conf_dir, opts.conf_name, conflist, opts.python,
                          opts.skip_binaries)
    except (InstallError, OSError) as exc:
        print(f"tortie-install-cni: error: {exc}", file=sys.stderr)
        sys.exit(1)
    for path in written:
        print(f"tortie-install-cni: wrote {path}")
    if not written:
        print("tortie-install-cni: everything already up to date")


if __name__ == "__main__":
    main()
