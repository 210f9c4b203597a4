"""The network configuration (the JSON on stdin), parsed and validated. Pure, except the
two small readers at the end (`node_name`, `pod_mtu`), which read one file each.

Keys are Calico's (cni-plugin/pkg/types NetConf in projectcalico/calico), so a
Calico conflist works once `type`/`ipam.type` say tortie:

  cniVersion, name, type         required (spec)
  ipam.type                      required: tortie-ipam, or any IPAM plugin in CNI_PATH
  ipam.assign_ipv4 / assign_ipv6 "true"/"false" (or booleans); IPv4 only for now
  ipam.ipv4_pools                Calico's pool restriction: pool names or CIDRs
                                 (ipv6_pools refused: IPv4 only)
  ipam.routes                    routes tortie-ipam returns when used by another plugin
  mtu                            veth MTU; 0 or absent: the agent's MTU file, else 1450
  mtu_file                       tortie: where the agent publishes the MTU
                                 (default /var/lib/calico/mtu, Calico's file)
  etcd_endpoints, etcd_ca_cert_file, etcd_cert_file, etcd_key_file,
  etcd_username, etcd_password   the datastore; absent keys fall back to ETCD_* env
  datastore_type                 only "etcdv3" (code 2 otherwise)
  nodename, nodename_file, nodename_file_optional
                                 node name: nodename > the file the agent writes
                                 (/var/lib/calico/nodename) > host name if optional
  log_level, log_file_path       debug|info|warning|error; a file to append to
  cni_server_socket              tortie: the node's CNI server (cni/server.py); "" off
  policy_setup_timeout_seconds   ADD waits up to this long for the agent to program the
                                 endpoint's policy (cni/endpoint_status.py); 0: no wait
  endpoint_status_dir            where the agent publishes that (a host path; default
                                 /var/run/calico/endpoint-status, Calico's)
  kubernetes.kubeconfig,         Kubernetes mode: read the pod from the API server at ADD
  kubernetes.k8s_api_root        (cni/k8s.py)
  policy.type                    "k8s" or absent
  feature_control, ...           accepted and ignored (Calico keys tortie has no use for)
  args.cni.labels / .ips         CNI's CONVENTIONS.md: the pod's labels, requested IPs
  args.cni.ports                 tortie: the pod's container ports, Kubernetes' ContainerPort
                                 shape ([{name, containerPort, protocol}]): named ports
  args.cni.serviceAccountName    tortie: the pod's service account
  prevResult, runtimeConfig      from the runtime

Unknown keys are ignored: runtimes and chained plugins add their own.
Validation errors name the key and value (InvalidConfig, code 7).
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

# Label and port-name syntax, shared with the resource models (its only import is `re`).
from datastore.names import NAME_RE, label_key_problem, label_value_problem, port_name_problem

from .errors import (
    DecodingFailure,
    InvalidConfig,
    TryAgainLater,
    UnsupportedField,
)
from .spec import Result, RouteConfig, check_version, valid_network_name

_log = logging.getLogger(__name__)

TORTIE_TYPE = "tortie"
TORTIE_IPAM = "tortie-ipam"
DEFAULT_MTU_FILE = "/var/lib/calico/mtu"
DEFAULT_NODENAME_FILE = "/var/lib/calico/nodename"
DEFAULT_SERVER_SOCKET = "/var/run/tortie/cni.sock"
# Felix's EndpointStatusPathPrefix default + "endpoint-status" (the agent's default too).
DEFAULT_ENDPOINT_STATUS_DIR = "/var/run/calico/endpoint-status"
# With nothing configured and nothing published: the VXLAN MTU of a 1500-byte network.
# It is also safe under IPIP (1480) and without encapsulation, only 50 bytes short there.
FALLBACK_MTU = 1450
MIN_MTU, MAX_MTU = 68, 65535
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
              "warn": logging.WARNING, "error": logging.ERROR, "panic": logging.CRITICAL,
              "fatal": logging.CRITICAL}


_EMPTY: Mapping[str, Any] = MappingProxyType({})


class IpamConf(NamedTuple):
    type: str
    routes: tuple[RouteConfig, ...] = ()
    raw: Mapping[str, Any] = _EMPTY
    ipv4_pools: tuple[str, ...] = ()  # pool names or CIDRs the assignment is restricted to


class EtcdSettings(NamedTuple):
    """The datastore keys of the configuration (None: not given, the ETCD_* env decides)."""

    endpoints: str | None = None
    ca_cert_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: str | None = None

    def as_env(self, environ: Mapping[str, str]) -> dict[str, str]:
        """ETCD_* variables for datastore.config.load_env: the configuration wins over env."""
        env = {k: v for k, v in environ.items() if k.startswith(("ETCD_", "CALICO_ETCD_"))}
        for name, value in (("ETCD_ENDPOINTS", self.endpoints),
                            ("ETCD_CA_CERT_FILE", self.ca_cert_file),
                            ("ETCD_CERT_FILE", self.cert_file), ("ETCD_KEY_FILE", self.key_file),
                            ("ETCD_USERNAME", self.username), ("ETCD_PASSWORD", self.password)):
            if value:
                env.pop(f"CALICO_{name}", None)  # it would beat the plain name in load_env
                env[name] = value
        return env


class NamedPort(NamedTuple):
    """A named port of the pod, as Calico stores it on the WorkloadEndpoint (`spec.ports`)."""

    name: str
    protocol: str  # tcp, udp or sctp: Calico stores Kubernetes' TCP/UDP/SCTP lower-cased
    port: int


class PodArgs(NamedTuple):
    """What the runtime says about the pod in `args.cni` (see the module docstring)."""

    labels: Mapping[str, str] = _EMPTY
    requested_ips: tuple[str, ...] = ()  # canonical IPv4 addresses
    ports: tuple[NamedPort, ...] = ()
    service_account: str | None = None


NO_POD_ARGS = PodArgs()


class KubernetesConf(NamedTuple):
    """Calico's `kubernetes` section: where the API server is and how to reach it.

    Kubernetes mode (the plugin reads the pod from the API server at ADD) is on when
    either key is set: `kubeconfig` names a kubeconfig file (install-cni writes one from
    the service account), `k8s_api_root` overrides its server (with no kubeconfig, the
    in-cluster service account's token and CA are used, as client-go's loader does).
    """

    kubeconfig: str | None = None
    api_root: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.kubeconfig or self.api_root)


NO_KUBERNETES = KubernetesConf()


class NetConf(NamedTuple):
    cni_version: str
    name: str
    type: str
    ipam: IpamConf | None
    mtu: int = 0
    mtu_file: str = DEFAULT_MTU_FILE
    etcd: EtcdSettings = EtcdSettings()
    nodename: str | None = None
    nodename_file: str = DEFAULT_NODENAME_FILE
    nodename_file_optional: bool = False
    log_level: str = "info"
    log_file_path: str | None = None
    server_socket: str = DEFAULT_SERVER_SOCKET
    policy_setup_timeout: int = 0  # seconds; 0: ADD does not wait for the agent
    endpoint_status_dir: str = DEFAULT_ENDPOINT_STATUS_DIR
    pod: PodArgs = NO_POD_ARGS
    kubernetes: KubernetesConf = NO_KUBERNETES
    prev_result: Result | None = None
    raw: Mapping[str, Any] = _EMPTY  # the document, for delegates


def decode(data: bytes) -> dict[str, Any]:
    """stdin bytes -> a JSON object (DecodingFailure otherwise)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        head = data[:60].decode(errors="replace")
        raise DecodingFailure(f"network configuration on stdin is not JSON: {exc}",
                              f"stdin starts with {head!r}" if data else "stdin is empty") from None
    if not isinstance(doc, dict):
        raise DecodingFailure("network configuration on stdin is not a JSON object, "
                              f"but a {type(doc).__name__}")
    return doc


def version_of(doc: Mapping[str, Any]) -> str:
    """cniVersion, required and supported (InvalidConfig / IncompatibleVersion)."""
    if "cniVersion" not in doc:
        raise InvalidConfig("network configuration has no cniVersion: it is required, e.g. "
                            '"cniVersion": "1.0.0"')
    if not isinstance(doc["cniVersion"], str):
        raise InvalidConfig(f"cniVersion={json.dumps(doc['cniVersion'])} must be a string "
                            'such as "1.0.0"')
    return check_version(doc["cniVersion"])


def _str(doc: Mapping[str, Any], key: str, path: str = "") -> str | None:
    value = doc.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidConfig(f"{path or key}={json.dumps(value)} must be a string")
    return value


def _flag(doc: Mapping[str, Any], key: str, default: bool, path: str) -> bool:
    """Calico writes booleans as strings ("true"); accept both."""
    value = doc.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidConfig(f"{path}={json.dumps(value)} must be true or false")


def parse_ipam(doc: Mapping[str, Any], required: bool = True) -> IpamConf | None:
    raw = doc.get("ipam")
    if raw is None:
        if required:
            raise InvalidConfig('network configuration has no ipam section: it is required, '
                                'e.g. "ipam": {"type": "tortie-ipam"}')
        return None
    if not isinstance(raw, dict):
        raise InvalidConfig(f"ipam={json.dumps(raw)} must be an object with a type")
    ipam_type = _str(raw, "type", "ipam.type")
    if not ipam_type:
        raise InvalidConfig('ipam.type is missing: name the IPAM plugin, e.g. "tortie-ipam"')
    if ipam_type == TORTIE_IPAM:
        if not _flag(raw, "assign_ipv4", True, "ipam.assign_ipv4"):
            raise UnsupportedField("ipam.assign_ipv4", raw["assign_ipv4"],
                                   "tortie assigns IPv4 addresses only, so it cannot be off")
        if _flag(raw, "assign_ipv6", False, "ipam.assign_ipv6"):
            raise UnsupportedField("ipam.assign_ipv6", raw["assign_ipv6"],
                                   "tortie does not assign IPv6 addresses yet")
        if raw.get("ipv6_pools"):
            raise UnsupportedField("ipam.ipv6_pools", raw["ipv6_pools"],
                                   "tortie does not assign IPv6 addresses yet")
    return IpamConf(ipam_type, _routes(raw.get("routes"), "ipam.routes"), raw,
                    pool_list(raw.get("ipv4_pools"), "ipam.ipv4_pools"))


def pool_list(value: object, what: str) -> tuple[str, ...]:
    """Calico's ipv4_pools: a list of pool names or CIDRs (which pools exist is the
    allocator's question; here only the shape). [] and absence both mean no restriction."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise InvalidConfig(f"{what}={json.dumps(value)} must be a list of IP pool names or "
                            'CIDRs, e.g. ["default-ipv4-ippool"] or ["10.65.0.0/16"]')
    return tuple(dict.fromkeys(v.strip() for v in value))


def _routes(value: object, path: str) -> tuple[RouteConfig, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidConfig(f"{path}={json.dumps(value)} must be a list of {{\"dst\": CIDR}}")
    import ipaddress  # here, not at the top: most invocations never need it

    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("dst"), str):
            raise InvalidConfig(f"{path}[{i}]={json.dumps(item)} must be {{\"dst\": CIDR}}")
        try:
            dst = str(ipaddress.ip_network(item["dst"], strict=False))
            gw = str(ipaddress.ip_address(item["gw"])) if item.get("gw") else None
        except ValueError as exc:
            raise InvalidConfig(f"{path}[{i}]={json.dumps(item)}: {exc}") from None
        out.append(RouteConfig(dst, gw))
    return tuple(out)


def parse(data: bytes, *, main_plugin: bool = True) -> NetConf:
    """Validate the configuration of tortie-cni (main_plugin) or tortie-ipam."""
    doc = decode(data)
    version = version_of(doc)
    name = _str(doc, "name")
    if not name:
        raise InvalidConfig('network configuration has no name: it is required, e.g. '
                            '"name": "k8s-pod-network"')
    if not valid_network_name(name):
        raise InvalidConfig(f"name={json.dumps(name)} is not a valid network name: start with a "
                            "letter or digit, then letters, digits, '_', '.' and '-'")
    plugin_type = _str(doc, "type") or ""
    if not plugin_type:
        raise InvalidConfig("network configuration has no type: it is required")
    ipam = parse_ipam(doc, required=True)
    dtype = _str(doc, "datastore_type")
    if dtype not in (None, "etcdv3"):
        raise UnsupportedField("datastore_type", dtype, "tortie keeps its data in etcd (etcdv3)")

    mtu = doc.get("mtu", 0)
    if mtu is None:
        mtu = 0
    if isinstance(mtu, bool) or not isinstance(mtu, int) or (mtu and not
                                                            MIN_MTU <= mtu <= MAX_MTU):
        raise InvalidConfig(f"mtu={json.dumps(mtu)} must be an integer between {MIN_MTU} and "
                            f"{MAX_MTU}, or 0 for the MTU the agent publishes")

    level = (_str(doc, "log_level") or "info").lower()
    if level not in LOG_LEVELS:
        raise InvalidConfig(f"log_level={json.dumps(doc['log_level'])} must be one of "
                            "debug, info, warning, error")

    etcd = EtcdSettings(*(_str(doc, k) for k in (
        "etcd_endpoints", "etcd_ca_cert_file", "etcd_cert_file", "etcd_key_file",
        "etcd_username", "etcd_password")))
    if doc.get("etcd_discovery_srv"):
        raise UnsupportedField("etcd_discovery_srv", doc["etcd_discovery_srv"],
                               "list the endpoints in etcd_endpoints")

    pod = pod_args(doc.get("args"))
    kubernetes = parse_kubernetes(doc)
    prev = None
    if doc.get("prevResult") is not None:
        prev = Result.from_dict(doc["prevResult"])
    server = doc.get("cni_server_socket", DEFAULT_SERVER_SOCKET)
    if not isinstance(server, str):
        raise InvalidConfig(f"cni_server_socket={json.dumps(server)} must be a path, or \"\" "
                            "to never use a CNI server")
    timeout = doc.get("policy_setup_timeout_seconds") or 0
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
        # Calico refuses a negative value too ("invalid pod startup delay"), but only
        # after the pod is wired; here it fails before any side effect.
        raise InvalidConfig(f"policy_setup_timeout_seconds={json.dumps(timeout)} must be a "
                            "whole number of seconds, or 0 (the default) not to wait")
    return NetConf(
        cni_version=version, name=name, type=plugin_type, ipam=ipam, mtu=mtu,
        mtu_file=_str(doc, "mtu_file") or DEFAULT_MTU_FILE, etcd=etcd,
        nodename=_str(doc, "nodename"),
        nodename_file=_str(doc, "nodename_file") or DEFAULT_NODENAME_FILE,
        nodename_file_optional=_flag(doc, "nodename_file_optional", False,
                                     "nodename_file_optional"),
        log_level=level, log_file_path=_str(doc, "log_file_path"), server_socket=server,
        policy_setup_timeout=timeout,
        endpoint_status_dir=_str(doc, "endpoint_status_dir") or DEFAULT_ENDPOINT_STATUS_DIR,
        pod=pod, kubernetes=kubernetes, prev_result=prev, raw=doc,
    )


def parse_kubernetes(doc: Mapping[str, Any]) -> KubernetesConf:
    """`kubernetes: {kubeconfig, k8s_api_root}` and `policy: {type}` (Calico's keys).

    `policy.type` may be `k8s` (Calico's conflists say so; tortie's policy always comes
    from the datastore) or absent; anything else is a policy tortie cannot apply."""
    policy = doc.get("policy")
    if policy is not None:
        if not isinstance(policy, dict):
            raise InvalidConfig(f"policy={json.dumps(policy)} must be an object such as "
                                '{"type": "k8s"}')
        ptype = _str(policy, "type", "policy.type")
        if ptype not in (None, "k8s"):
            raise UnsupportedField("policy.type", ptype, 'the only policy type is "k8s"')
    section = doc.get("kubernetes")
    if section is None:
        return NO_KUBERNETES
    if not isinstance(section, dict):
        raise InvalidConfig(f"kubernetes={json.dumps(section)} must be an object such as "
                            '{"kubeconfig": "/etc/cni/net.d/tortie-kubeconfig"}')
    api_root = _str(section, "k8s_api_root", "kubernetes.k8s_api_root")
    if api_root is not None:
        # Calico cuts a path such as /api/v1 off the root (getK8sRestConfig).
        api_root = api_root.split("/api/")[0].rstrip("/")
        if not api_root.startswith(("https://", "http://")):
            raise InvalidConfig(f"kubernetes.k8s_api_root={json.dumps(section['k8s_api_root'])}"
                                " must be a URL such as https://10.96.0.1:443")
    return KubernetesConf(_str(section, "kubeconfig", "kubernetes.kubeconfig"), api_root)


def pod_args(args: object) -> PodArgs:
    """`args.cni`: labels ([{key, value}]) and ips (CNI's CONVENTIONS.md), ports and
    serviceAccountName (tortie's, standing in for what Calico reads from the pod)."""
    if not isinstance(args, dict) or not isinstance(args.get("cni"), dict):
        return NO_POD_ARGS
    cni = args["cni"]
    ips = tuple(parse_requested_ip(item, f"args.cni.ips[{i}]")
                for i, item in enumerate(_list(cni, "ips")))
    return PodArgs(_labels(cni), ips, _ports(cni), _service_account(cni))


def workload_args(cni: Mapping[str, Any], where: str) -> PodArgs:
    """Labels, ports and service account in args.cni's shape from another source (the
    pod, read from Kubernetes), validated the same way; errors start with `where`."""
    return PodArgs(_labels(cni, where), (), _ports(cni, where), _service_account(cni, where))


def _list(cni: Mapping[str, Any], key: str, where: str = "args.cni") -> list[Any]:
    value = cni.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidConfig(f"{where}.{key}={json.dumps(value)} must be a list")
    return value


def _labels(cni: Mapping[str, Any], where: str = "args.cni") -> dict[str, str]:
    labels: dict[str, str] = {}
    for i, item in enumerate(_list(cni, "labels", where)):
        if not isinstance(item, dict) or not isinstance(item.get("key"), str) \
                or not isinstance(item.get("value"), str):
            raise InvalidConfig(f"{where}.labels[{i}]={json.dumps(item)} must be "
                                '{"key": "...", "value": "..."}')
        key, value = item["key"], item["value"]
        problem = label_key_problem(key) or label_value_problem(key, value)
        if problem:
            raise InvalidConfig(f"{where}.labels[{i}]={json.dumps(item)}: {problem} (keys and "
                                "values: at most 63 letters, digits, '-', '_' and '.', "
                                "alphanumeric at both ends; keys may have a DNS prefix/)")
        labels[key] = value
    return labels


_PROTOCOLS = ("TCP", "UDP", "SCTP")


def _ports(cni: Mapping[str, Any], where: str = "args.cni") -> tuple[NamedPort, ...]:
    """Kubernetes ContainerPorts -> Calico's WorkloadEndpoint ports (a name is required:
    Calico keeps an unnamed port only for its hostPort, which portmap handles here)."""
    out: list[NamedPort] = []
    for i, item in enumerate(_list(cni, "ports", where)):
        entry = f"{where}.ports[{i}]={json.dumps(item)}"
        if not isinstance(item, dict):
            raise InvalidConfig(f"{entry} must be {{\"name\": \"http\", \"containerPort\": 80, "
                                '"protocol": "TCP"}')
        unknown = set(item) - {"name", "containerPort", "protocol"}
        if unknown:
            raise InvalidConfig(f"{entry}: unknown field {sorted(unknown)[0]!r} (name, "
                                "containerPort and protocol are known)")
        name, port, proto = item.get("name"), item.get("containerPort"), item.get("protocol", "TCP")
        if not isinstance(name, str) or port_name_problem(name):
            raise InvalidConfig(f"{entry}: name: {port_name_problem(str(name))}")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise InvalidConfig(f"{entry}: containerPort must be an integer from 1 to 65535")
        if not isinstance(proto, str) or proto.upper() not in _PROTOCOLS:
            raise InvalidConfig(f"{entry}: protocol must be TCP, UDP or SCTP")
        if any(p.name == name for p in out):
            raise InvalidConfig(f"{entry}: port name {name!r} is used twice")
        out.append(NamedPort(name, proto.lower(), port))
    return tuple(out)


def _service_account(cni: Mapping[str, Any], where: str = "args.cni") -> str | None:
    value = cni.get("serviceAccountName")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 253 or not NAME_RE.match(value):
        raise InvalidConfig(f"{where}.serviceAccountName={json.dumps(value)} is not a valid "
                            "service account name (lower-case letters, digits, '-' and '.')")
    return value


def parse_requested_ip(value: object, what: str) -> str:
    """A requested address: '10.65.0.7' or '10.65.0.7/24' (the prefix is ignored)."""
    import ipaddress  # here, not at the top: only invocations asking for an address need it

    try:
        iface = ipaddress.ip_interface(value)  # type: ignore[arg-type]
    except ValueError:
        raise InvalidConfig(f"{what}={json.dumps(value)} is not an IP address") from None
    if iface.version != 4:
        raise InvalidConfig(f"{what}={json.dumps(value)}: tortie assigns IPv4 addresses only")
    return str(iface.ip)


# -- the two values read from files ----------------------------------------------------------


def node_name(conf: NetConf) -> str:
    """calico-node's name for this node: nodename > nodename_file > host name (if optional).

    Without an explicit name the file written by the agent is required, as in
    Calico: a pod wired under the wrong node name would get its address from
    another node's blocks and never be routed. Its absence usually means the
    agent has not started yet, hence TryAgainLater.
    """
    if conf.nodename:
        return conf.nodename.strip()
    try:
        with open(conf.nodename_file) as f:
            stored = f.read().strip()
        if stored:
            return stored
    except FileNotFoundError:
        pass
    except OSError as exc:
        _log.warning("cannot read node name file %s: %s", conf.nodename_file, exc)
    if conf.nodename_file_optional:
        return socket.gethostname().strip().lower()
    raise TryAgainLater(
        f"no node name: nodename is not set and the node name file {conf.nodename_file} does "
        "not exist; is the tortie agent running on this node? (set nodename in the network "
        "configuration, or nodename_file_optional: true to use the host name)")


def pod_mtu(conf: NetConf) -> tuple[int, str]:
    """(MTU, where it came from): the configured mtu, else the agent's MTU file, else 1450."""
    if conf.mtu:
        return conf.mtu, "mtu"
    try:
        with open(conf.mtu_file) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return FALLBACK_MTU, "default"
    except OSError as exc:
        _log.warning("cannot read MTU file %s: %s; using %d", conf.mtu_file, exc, FALLBACK_MTU)
        return FALLBACK_MTU, "default"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not MIN_MTU <= value <= MAX_MTU:
        _log.warning("MTU file %s holds %r, not an MTU; using %d", conf.mtu_file, text,
                     FALLBACK_MTU)
        return FALLBACK_MTU, "default"
    return value, f"file {conf.mtu_file}"
