"""`tortie-install-cni`: put the plugins and the network configuration where runtimes look.

Owns the installation for a node (the Helm chart's init container, the lab,
a hand install), calico/cni's install-cni in spirit and in its variables:

  <bin dir>/tortie, <bin dir>/tortie-ipam   the static shim (shim/tortie-cni-shim.c),
                                            one binary under both names, which hands
                                            each call to the node's CNI server; or,
                                            with --python, launchers of this Python
                                            environment's plugins (default
                                            /opt/cni/bin); `tortie` is the name
                                            runtimes look up for `"type": "tortie"`
  <bin dir>/portmap, bandwidth, ...         the chained plugins the conflist names,
                                            copied from --plugins-src-dir when the bin
                                            directory lacks them (the host's own are
                                            never replaced), as calico's install-cni
                                            ships them
  <conf dir>/<conf name>                    the conflist (default
                                            /etc/cni/net.d/10-tortie.conflist)
  <conf dir>/tortie-kubeconfig              in a Kubernetes pod (the service account
                                            token exists) or with --write-kubeconfig:
                                            the kubeconfig the plugin reads pods with,
                                            from the token, its CA and
                                            KUBERNETES_SERVICE_HOST/PORT, mode 0600
                                            (Calico's calico-kubeconfig); the default
                                            conflist then names it in
                                            `kubernetes.kubeconfig`, a template with
                                            __KUBECONFIG_FILEPATH__

Which plugin: the shim when one is found (--shim / TORTIE_CNI_SHIM, else
`<sys.prefix>/libexec/tortie-cni-shim` as in the image, else the checkout's
build/tortie-cni-shim), because the host may have no Python at all; the
launchers when --python (or TORTIE_PYTHON) is given, or when no shim exists.

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
from collections.abc import Callable, Mapping, Sequence
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
SHIM_NAME = "tortie-cni-shim"
DEFAULT_PLUGINS_SRC_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
KUBECONFIG_NAME = "tortie-kubeconfig"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"  # the kubelet's mount


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
    kubeconfig: str = ""  # where the plugin's kubeconfig is (__KUBECONFIG_FILEPATH__)
    kubernetes_mode: bool = False  # it is written: the default conflist names it
    kubernetes_service_host: str = ""
    kubernetes_service_port: str = ""


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
    "__KUBECONFIG_FILEPATH__": "kubeconfig",
    "__KUBERNETES_SERVICE_HOST__": "kubernetes_service_host",
    "__KUBERNETES_SERVICE_PORT__": "kubernetes_service_port",
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
    if s.kubernetes_mode:
        main["policy"] = {"type": "k8s"}
        main["kubernetes"] = {"kubeconfig": s.kubeconfig}
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


def render_kubeconfig(token: str, ca_pem: bytes | None, host: str, port: str,
                      protocol: str = "https") -> str:
    """The plugin's kubeconfig (pure): Calico's calico-kubeconfig, with the CA inline
    (certificate-authority-data) or, without one, TLS verification off (Calico's
    SKIP_TLS_VERIFY=true)."""
    import base64

    import yaml

    if not host or not port:
        raise InstallError("cannot write the CNI kubeconfig: KUBERNETES_SERVICE_HOST and "
                           f"KUBERNETES_SERVICE_PORT must be set (they are {host!r} and "
                           f"{port!r}); the kubelet sets them in every pod")
    endpoint = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    cluster: dict[str, Any] = {"server": f"{protocol or 'https'}://{endpoint}"}
    if ca_pem is None:
        cluster["insecure-skip-tls-verify"] = True
    else:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    doc = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": "tortie", "user": {"token": token.strip()}}],
        "contexts": [{"name": "tortie-context",
                      "context": {"cluster": "local", "user": "tortie"}}],
        "current-context": "tortie-context",
    }
    return ("# Kubeconfig file for the tortie CNI plugin (written by tortie-install-cni).\n"
            + yaml.safe_dump(doc, sort_keys=False))


def kubeconfig_from_service_account(sa_dir: str, environ: Mapping[str, str]) -> str:
    """The kubeconfig for the service account mounted at `sa_dir` (its token and ca.crt)
    and the API server the kubelet names in the environment."""
    try:
        with open(os.path.join(sa_dir, "token")) as f:
            token = f.read()
    except OSError as exc:
        raise InstallError(f"cannot read the service account token: {exc}") from None
    if not token.strip():
        raise InstallError(f"the service account token {sa_dir}/token is empty")
    ca: bytes | None = None
    if environ.get("SKIP_TLS_VERIFY", "") != "true":
        try:
            with open(os.path.join(sa_dir, "ca.crt"), "rb") as f:
                ca = f.read()
        except OSError as exc:
            raise InstallError(f"cannot read the API server's CA: {exc} (SKIP_TLS_VERIFY=true "
                               "turns verification off)") from None
    return render_kubeconfig(token, ca, environ.get("KUBERNETES_SERVICE_HOST", ""),
                             environ.get("KUBERNETES_SERVICE_PORT", ""),
                             environ.get("KUBERNETES_SERVICE_PROTOCOL", "https"))


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


def shim_candidates(explicit: str = "") -> list[str]:
    """Where to look for the shim, in order: the option, next to this interpreter's
    environment (the image's /opt/tortie/libexec), the checkout's build/. Pure."""
    if explicit:
        return [explicit]
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(cni.__file__)))
    return [os.path.join(sys.prefix, "libexec", SHIM_NAME),
            os.path.join(checkout, "build", SHIM_NAME)]


def choose_shim(explicit_shim: str, explicit_python: bool,
                is_file: Callable[[str], bool] = os.path.isfile) -> str | None:
    """The shim to install, or None for the Python launchers (see the module docstring).
    A --shim that does not exist is an error, not a silent fall-back."""
    if explicit_python and not explicit_shim:
        return None
    for path in shim_candidates(explicit_shim):
        if is_file(path):
            return path
    if explicit_shim:
        raise InstallError(f"--shim={explicit_shim!r}: no such file (build it with "
                           "scripts/build-shim.sh)")
    return None


def chained_types(conflist: Mapping[str, Any]) -> list[str]:
    """The plugin types the conflist chains after tortie (portmap, bandwidth, ...). Pure."""
    return [str(p.get("type")) for p in conflist.get("plugins", ())[1:]
            if isinstance(p, dict) and p.get("type")]


def _write_atomic(path: str, content: str | bytes, mode: int) -> bool:
    """Write `content` to `path` via a temporary file + rename; False if already identical."""
    data = content.encode() if isinstance(content, str) else content
    try:
        with open(path, "rb") as f:
            if f.read() == data and stat.S_IMODE(os.stat(path).st_mode) == mode:
                return False
    except (FileNotFoundError, IsADirectoryError):
        pass
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tortie-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def install(bin_dir: str, conf_dir: str, conf_name: str, conflist: Mapping[str, Any],
            python: str = sys.executable, skip_binaries: bool = False,
            shim: str | None = None, plugins_src_dir: str = DEFAULT_PLUGINS_SRC_DIR,
            kubeconfig: str | None = None) -> tuple[list[str], list[str]]:
    """Install the plugins (the shim under both names, or the launchers), the chained
    plugins the bin directory lacks, the kubeconfig (when given; before the conflist
    that names it) and the conflist. Returns (paths written, warnings); unchanged
    files are skipped."""
    written, warnings = [], []
    if not skip_binaries:
        shim_bytes = None
        if shim is not None:
            with open(shim, "rb") as f:
                shim_bytes = f.read()
        for name, module in PLUGINS.items():
            path = os.path.join(bin_dir, name)
            content = shim_bytes if shim_bytes is not None else launcher(module, python)
            if _write_atomic(path, content, 0o755):
                written.append(path)
        for plugin_type in chained_types(conflist):
            path = os.path.join(bin_dir, plugin_type)
            if os.path.exists(path):
                continue  # the host's own (or ours from before): never replaced
            source = os.path.join(plugins_src_dir, plugin_type)
            if not os.path.isfile(source):
                warnings.append(f"the conflist chains {plugin_type}, which neither {bin_dir} "
                                f"nor {plugins_src_dir} has: pods will fail until it exists")
                continue
            with open(source, "rb") as f:
                if _write_atomic(path, f.read(), 0o755):
                    written.append(path)
    if kubeconfig is not None:
        # 0600: it holds the service account's token (Calico writes its file so too).
        path = os.path.join(conf_dir, KUBECONFIG_NAME)
        if _write_atomic(path, kubeconfig, 0o600):
            written.append(path)
    path = os.path.join(conf_dir, conf_name)
    if _write_atomic(path, json.dumps(conflist, indent=2) + "\n", 0o644):
        written.append(path)
    return written, warnings


def settings_from(opts: argparse.Namespace) -> Settings:
    return Settings(
        nodename=opts.nodename, mtu=opts.mtu, etcd_endpoints=opts.etcd_endpoints,
        etcd_ca_cert_file=opts.etcd_ca_cert_file, etcd_cert_file=opts.etcd_cert_file,
        etcd_key_file=opts.etcd_key_file, log_level=opts.log_level,
        log_file_path=opts.log_file_path, server_socket=opts.server_socket,
        mtu_file=opts.mtu_file, nodename_file=opts.nodename_file,
        network_name=opts.network_name, portmap=not opts.no_portmap, bandwidth=opts.bandwidth,
        policy_setup_timeout=opts.policy_setup_timeout_seconds,
        endpoint_status_dir=opts.endpoint_status_dir,
        kubeconfig=opts.kubeconfig_filepath or os.path.join(opts.conf_dir, KUBECONFIG_NAME),
        kubernetes_mode=kubernetes_mode(opts),
        kubernetes_service_host=opts.kubernetes_service_host,
        kubernetes_service_port=opts.kubernetes_service_port)


def kubernetes_mode(opts: argparse.Namespace) -> bool:
    """Write the kubeconfig when running in a Kubernetes pod with a service account token
    (Calico's test) or when asked to (then a missing token is an error)."""
    return bool(opts.write_kubeconfig) or os.path.isfile(
        os.path.join(opts.service_account_dir, "token"))


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
    p.add_argument("--python", default=e("TORTIE_PYTHON", ""),
                   help="[TORTIE_PYTHON] install Python launchers running this interpreter "
                        "(which must exist on the host) instead of the shim")
    p.add_argument("--shim", default=e("TORTIE_CNI_SHIM", ""),
                   help="[TORTIE_CNI_SHIM] the static shim to install as tortie and "
                        f"tortie-ipam (default: <sys.prefix>/libexec/{SHIM_NAME}, then the "
                        f"checkout's build/{SHIM_NAME})")
    p.add_argument("--plugins-src-dir", default=e("CNI_PLUGINS_SRC_DIR",
                                                  DEFAULT_PLUGINS_SRC_DIR),
                   help="[CNI_PLUGINS_SRC_DIR] where the chained plugins (portmap, bandwidth) "
                        "are copied from when the bin directory lacks them")
    p.add_argument("--service-account-dir", default=e("CNI_SERVICE_ACCOUNT_DIR",
                                                      SERVICE_ACCOUNT_DIR),
                   help="[CNI_SERVICE_ACCOUNT_DIR] the mounted service account (token, "
                        "ca.crt): when its token exists, write <conf dir>/"
                        f"{KUBECONFIG_NAME} for the plugin's Kubernetes mode")
    p.add_argument("--write-kubeconfig", action="store_true",
                   default=e("CNI_WRITE_KUBECONFIG", "") == "true",
                   help="[CNI_WRITE_KUBECONFIG=true] write the kubeconfig even when the token "
                        "is not found (then fail)")
    p.add_argument("--kubeconfig-filepath", default=e("CNI_KUBECONFIG_FILEPATH", ""),
                   help="[CNI_KUBECONFIG_FILEPATH] the kubeconfig's path as the plugin sees it "
                        "(the host's, when this runs in a container with the host's conf dir "
                        "mounted elsewhere): what kubernetes.kubeconfig and "
                        f"__KUBECONFIG_FILEPATH__ say; default <conf dir>/{KUBECONFIG_NAME}")
    p.add_argument("--kubernetes-service-host", default=e("KUBERNETES_SERVICE_HOST", ""),
                   help="[KUBERNETES_SERVICE_HOST] the API server (set by the kubelet)")
    p.add_argument("--kubernetes-service-port", default=e("KUBERNETES_SERVICE_PORT", ""),
                   help="[KUBERNETES_SERVICE_PORT]")
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
        shim = None if opts.skip_binaries else choose_shim(opts.shim, bool(opts.python))
        if shim is None and not opts.skip_binaries and not opts.python:
            print(f"tortie-install-cni: no {SHIM_NAME} found (looked in "
                  f"{', '.join(shim_candidates())}): installing Python launchers of "
                  f"{sys.executable}, which the host must have", file=sys.stderr)
        kubeconfig = None
        if settings.kubernetes_mode:
            kubeconfig = kubeconfig_from_service_account(
                opts.service_account_dir,
                {**environ, "KUBERNETES_SERVICE_HOST": settings.kubernetes_service_host,
                 "KUBERNETES_SERVICE_PORT": settings.kubernetes_service_port})
        written, warnings = install(opts.bin_dir, opts.conf_dir, opts.conf_name, conflist,
                                    opts.python or sys.executable, opts.skip_binaries, shim,
                                    opts.plugins_src_dir, kubeconfig)
    except (InstallError, OSError) as exc:
        print(f"tortie-install-cni: error: {exc}", file=sys.stderr)
        sys.exit(1)
    for warning in warnings:
        print(f"tortie-install-cni: warning: {warning}", file=sys.stderr)
    if shim is not None:
        print(f"tortie-install-cni: plugins tortie and tortie-ipam are the shim {shim}")
    for path in written:
        print(f"tortie-install-cni: wrote {path}")
    if not written:
        print("tortie-install-cni: everything already up to date")


if __name__ == "__main__":
    main()
