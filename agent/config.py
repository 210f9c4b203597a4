"""The node agent's settings: one declarative, typed registry with provenance.

Owns: every environment variable the agent reads for itself (node start-up,
IP autodetection, the Felix-like dataplane, health), with its Calico name,
type, default, description and parser. `load(environ)` turns an environment
into a frozen `AgentConfig`, logs each effective value with where it came
from, and fails fast with a `ConfigError` that names the variable and the
value. `describe_settings()` is what docs/agent.md documents.

Invariants:
  * Names are Calico's (calico-node and Felix environment variables), so a
    calico-node DaemonSet's env block configures tortie unchanged.
  * Every setting has exactly one parser; a value is either parsed or refused,
    never silently replaced by the default. (calico-node logs a bad
    AUTODETECT_POLL_INTERVAL and carries on with 60s; Felix logs and ignores a
    bad FELIX_* value. tortie refuses to start instead: style B6 item 8.)
  * An empty value counts as unset (Go's os.Getenv cannot tell them apart, and
    Calico manifests often carry `value: ""`).
  * Durations accept Go syntax ("90s", "1m30s", "250ms") and plain seconds
    ("90", "1.5"): Felix's FELIX_*REFRESHINTERVAL parameters are plain
    seconds, AUTODETECT_POLL_INTERVAL is a Go duration; both forms work for all.
  * CALICO_IPV4POOL_* / NO_DEFAULT_POOLS are not here: ipam.pools reads them
    from the environment that start-up passes through.

Errors: ConfigError, of the agent's error tree (agent.errors).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from datastore.resources.base import parse_asn
from policy.model import EndpointToHostAction
from service.settings import (
    InvalidSetting,
    non_negative_duration,
    parse_bool,
    parse_duration,
    positive_duration,
)

from .autodetect import parse_method
from .errors import AutodetectError, ConfigError

_log = logging.getLogger(__name__)

DEFAULT_NODENAME_FILE = "/var/lib/calico/nodename"
# Felix HEAD default (felix/config/config_params.go): interfaces whose MTU bounds the tunnels'.
DEFAULT_MTU_IFACE_PATTERN = r"^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)"

NETWORKING_BACKENDS = ("bird", "exabgp", "vxlan", "none")
LOG_SEVERITIES = ("Trace", "Debug", "Info", "Warning", "Error", "Fatal")


# Parsers raise it; load() wraps it into ConfigError with the variable's name.
_Invalid = InvalidSetting


# -- parsers (pure: str -> value, _Invalid on bad input) -----------------------------------

_non_negative_duration = non_negative_duration
_positive_duration = positive_duration


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip(), 10)
        except ValueError:
            raise _Invalid("not an integer") from None
        if not lo <= value <= hi:
            raise _Invalid(f"must be between {lo} and {hi}")
        return value

    return parse


def _hold_time(text: str) -> int:
    value = _int_in(0, 65535)(text)
    if value in (1, 2):
        raise _Invalid("a hold time must be 0 or at least 3 seconds (RFC 4271)")
    return value


def _mtu(text: str) -> int:
    value = _int_in(0, 65535)(text)
    if 0 < value < 68:
        raise _Invalid("must be 0 (auto-detect) or at least 68")
    return value


def _one_of(options: tuple[str, ...]) -> Callable[[str], str]:
    by_lower = {o.lower(): o for o in options}

    def parse(text: str) -> str:
        found = by_lower.get(text.strip().lower())
        if found is None:
            raise _Invalid(f"must be one of {'|'.join(options)}")
        return found

    return parse


def _asn(text: str) -> int:
    try:
        return parse_asn(text)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _router_id(text: str) -> str | None:
    """CALICO_ROUTER_ID: `hash` (an IPv4 hashed from the node name, as confd does) or
    an IPv4 address other than 0.0.0.0 (RFC 6286); empty is unset (the node's IPv4)."""
    text = text.strip()
    if not text:
        return None
    if text == "hash":
        return text
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        raise _Invalid("must be `hash` or an IPv4 address") from None
    if int(address) == 0:
        raise _Invalid("0.0.0.0 is not a valid BGP identifier (RFC 6286)")
    return str(address)


ENDPOINT_TO_HOST_ACTIONS: tuple[EndpointToHostAction, ...] = ("Drop", "Return", "Accept")
# Felix's defaults (felix/config/config_params.go): ssh, DHCP, BGP, etcd, Typha, the
# Kubernetes API server and kube-proxy health (inbound); DNS, DHCP and the same
# control-plane ports (outbound).
DEFAULT_FAILSAFE_INBOUND = "tcp:22,udp:68,tcp:179,tcp:2379,tcp:2380,tcp:5473,tcp:6443,tcp:6666,tcp:6667"
DEFAULT_FAILSAFE_OUTBOUND = "udp:53,udp:67,tcp:179,tcp:2379,tcp:2380,tcp:5473,tcp:6443,tcp:6666,tcp:6667"

FailsafePort = tuple[str, str | None, int]  # (protocol, CIDR or None, port)


def parse_port_list(text: str) -> tuple[FailsafePort, ...]:
    """Felix's port-list: comma-separated `[<protocol>:][<cidr>:]<port>` (protocol tcp,
    udp or sctp, default tcp; an IPv6 CIDR in brackets); `none` for no ports."""
    if text.strip().lower() == "none":
        return ()
    out: list[FailsafePort] = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        protocol, net = "tcp", None
        head, _, port_text = item.rpartition(":")
        if head:
            first, sep, rest = head.partition(":")
            if first.lower() in ("tcp", "udp", "sctp"):
                protocol, head = first.lower(), rest if sep else ""
            if head:
                try:
                    net = str(ipaddress.ip_network(head.strip("[]"), strict=False))
                except ValueError:
                    raise _Invalid(f"{item!r} is not [<protocol>:][<cidr>:]<port>") from None
        if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
            raise _Invalid(f"{item!r}: the port must be between 1 and 65535")
        out.append((protocol, net, int(port_text)))
    return tuple(out)


def _endpoint_to_host_action(text: str) -> EndpointToHostAction:
    for action in ENDPOINT_TO_HOST_ACTIONS:
        if text.strip().lower() == action.lower():
            return action
    raise _Invalid(f"must be one of {', '.join(ENDPOINT_TO_HOST_ACTIONS)} (any case)")


def _regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as exc:
        raise _Invalid(f"not a valid regular expression: {exc}") from None
    return text


def _string(text: str) -> str:
    return text.strip()


def parse_ip_setting(name: str, version: int) -> Callable[[str], str]:
    """IP / IP6: `autodetect`, `none`, or an address with optional prefix length."""
    def parse(text: str) -> str:
        value = text.strip()
        if value in ("autodetect", "none"):
            return value
        try:
            iface = ipaddress.ip_interface(value)
        except ValueError:
            iface = None
        if iface is None or iface.version != version:
            # calico-node's parseIPEnvironment wording, then it terminates.
            raise _Invalid(
                f"Environment does not contain a valid IPv{version} address: {name}={value}",
                whole=True)
        return value

    return parse


def _method(version: int) -> Callable[[str], str]:
    def parse(text: str) -> str:
        # Fail fast on a method that can never work (calico-node terminates on an unknown
        # method, and ignores a bad CIDR until detection runs; tortie refuses both here).
        try:
            parse_method(text, version)
        except AutodetectError as exc:
            raise _Invalid(str(exc), whole=True) from None
        return text.strip()

    return parse


# -- the registry ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One agent setting: its Calico environment name and everything about it."""

    name: str                  # environment variable, Calico's name
    attr: str                  # AgentConfig field
    type: str                  # human-readable type for docs
    default: Any               # the parsed default
    default_text: str          # how docs show the default
    description: str
    parse: Callable[[str], Any] = field(repr=False)


SETTINGS: tuple[Setting, ...] = (
    Setting("NODENAME", "nodename", "string", None, "(unset)",
            "This node's name. Unset: the name stored in CALICO_NODENAME_FILE, then "
            "HOSTNAME (lowercased), then the host name (lowercased, with a warning).",
            _string),
    Setting("CALICO_NODENAME_FILE", "nodename_file", "path", DEFAULT_NODENAME_FILE,
            DEFAULT_NODENAME_FILE,
            "Where the node name is remembered after a successful start, so that a later "
            "change of host name does not create a second Node.", _string),
    Setting("IP", "ip", "autodetect|none|<ipv4>[/<prefix>]", "", "(unset)",
            "The node's IPv4 address. autodetect: detect with IP_AUTODETECTION_METHOD on "
            "every start. Unset: detect only when the Node has no IPv4 address yet. none: "
            "keep what the Node has. An address without prefix takes the prefix of the "
            "local interface that holds it.", parse_ip_setting("IP", 4)),
    Setting("IP6", "ip6", "autodetect|none|<ipv6>[/<prefix>]", "", "(unset)",
            "The node's IPv6 address. Never detected unless set to autodetect; unset or "
            "none keeps what the Node has.", parse_ip_setting("IP6", 6)),
    Setting("IP_AUTODETECTION_METHOD", "ip_autodetection_method", "method", "first-found",
            "first-found",
            "How the IPv4 address is detected: first-found, interface=<regex>[,...], "
            "skip-interface=<regex>[,...], cidr=<cidr>[,...], can-reach=<ip or host>.",
            _method(4)),
    Setting("IP6_AUTODETECTION_METHOD", "ip6_autodetection_method", "method", "first-found",
            "first-found", "How the IPv6 address is detected (same methods as IPv4).",
            _method(6)),
    Setting("AUTODETECT_POLL_INTERVAL", "autodetect_poll_interval", "duration", 60.0, "60s",
            "How often the agent re-runs address detection and updates the Node when the "
            "address changed.", _positive_duration),
    Setting("AS", "as_number", "AS number", None, "(unset)",
            "This node's BGP AS number (plain or dotted A.B), written to the Node. Unset: "
            "keep the Node's, else the cluster's (BGPConfiguration, default 64512).", _asn),
    Setting("CALICO_NETWORKING_BACKEND", "networking_backend", "|".join(NETWORKING_BACKENDS),
            "bird", "bird",
            "bird or exabgp: BGP networking (tortie's speaker is ExaBGP; `bird` is accepted so "
            "Calico manifests work unchanged). vxlan: no BGP, VXLAN only. none: policy only, "
            "the node's IP and AS are not configured.", _one_of(NETWORKING_BACKENDS)),
    Setting("TORTIE_BGP_SIDECAR", "bgp_sidecar", "bool", False, "false",
            "With BGP networking: true when a separate `tortie-bgp` process (the chart's "
            "sidecar container) runs the BGP side; the agent then follows its learned routes "
            "over the control socket instead of running ExaBGP itself.", parse_bool),
    Setting("TORTIE_BGP_HOLD_TIME", "bgp_hold_time", "seconds", 240, "240",
            "BGP hold time of mesh sessions and of BGPPeers without keepaliveTime (BIRD's "
            "default, which Calico inherits; 0 or at least 3).", _hold_time),
    Setting("CALICO_ROUTER_ID", "router_id", "hash|<ipv4>", None, "(unset)",
            "This node's BGP router id (BGP identifier). Unset: the node's IPv4 address. "
            "hash: an IPv4 address hashed from the node name (confd's rule). Two nodes of "
            "one AS with the same router id cannot peer (Bad BGP Identifier).", _router_id),
    Setting("CALICO_MTU_FILE", "mtu_file", "path", "/var/lib/calico/mtu", "/var/lib/calico/mtu",
            "Where the agent publishes the pod MTU (the smallest MTU of the tunnels in use, "
            "else the host MTU) for the CNI plugin, as calico-node writes it.", _string),
    Setting("TORTIE_RUN_DIR", "run_dir", "path", "/var/run/tortie", "/var/run/tortie",
            "Where the agent keeps runtime files: ExaBGP's configuration and log under "
            "bgp/<node name>/.", _string),
    Setting("FELIX_ENDPOINTSTATUSPATHPREFIX", "endpoint_status_path_prefix", "path",
            "/var/run/calico", "/var/run/calico",
            "Where the agent publishes, in endpoint-status/, one file per local workload "
            "endpoint whose routes and policy are programmed (Felix's EndpointStatusPathPrefix); "
            "the CNI plugin's policy_setup_timeout_seconds waits for it. Created if missing.",
            _string),
    Setting("TORTIE_STARTUP_RESOURCES", "startup_resources", "path", None, "(unset)",
            "A multi-document YAML of projectcalico.org/v3 IPPool, BGPConfiguration and "
            "BGPPeer objects (the chart's values) applied at every start before the default "
            "pool: created when absent, updated only while unchanged since start-up wrote "
            "them, otherwise left as they are (see Start-up resources).", _string),
    Setting("DISABLE_NODE_IP_CHECK", "disable_node_ip_check", "bool", False, "false",
            "Skip the check that no other Node uses this node's address.", parse_bool),
    Setting("CALICO_K8S_NODE_REF", "k8s_node_ref", "string", None, "(unset)",
            "The Kubernetes node name, recorded in the Node's orchRefs.", _string),
    Setting("FELIX_HEALTHENABLED", "health_enabled", "bool", False, "false",
            "Serve /liveness and /readiness.", parse_bool),
    Setting("FELIX_HEALTHHOST", "health_host", "host", "localhost", "localhost",
            "Address the health endpoints listen on.", _string),
    Setting("FELIX_HEALTHPORT", "health_port", "port", 9099, "9099",
            "Port of the health endpoints.", _int_in(1, 65535)),
    Setting("FELIX_ROUTEREFRESHINTERVAL", "route_refresh_interval", "duration", 90.0, "90s",
            "Period of the full route resync that repairs drift (0 disables it).",
            _non_negative_duration),
    Setting("FELIX_IPTABLESREFRESHINTERVAL", "iptables_refresh_interval", "duration", 180.0,
            "180s",
            "Period of the full iptables resync (0 disables it). Calico HEAD's default; "
            "releases before the monorepo used 90s.", _non_negative_duration),
    Setting("FELIX_IPSETSREFRESHINTERVAL", "ipsets_refresh_interval", "duration", 90.0, "90s",
            "Period of the full ipset resync (0 disables it).", _non_negative_duration),
    Setting("FELIX_DRIFTCHECKINTERVAL", "drift_check_interval", "duration", 1.0, "1s",
            "Period of the cheap check of tortie's iptables chains and ipsets, which the "
            "kernel does not announce; only a writer that finds drift re-reads and writes the "
            "difference (0 disables it; the full refreshes remain).", _non_negative_duration),
    Setting("FELIX_VXLANVNI", "vxlan_vni", "int", 4096, "4096",
            "VNI of the vxlan.calico device.", _int_in(1, 16777215)),
    Setting("FELIX_VXLANPORT", "vxlan_port", "port", 4789, "4789",
            "UDP port of the vxlan.calico device.", _int_in(1, 65535)),
    Setting("FELIX_VXLANMTU", "vxlan_mtu", "int", 0, "0",
            "MTU of vxlan.calico; 0: the host MTU minus 50.", _mtu),
    Setting("FELIX_IPINIPMTU", "ipip_mtu", "int", 0, "0",
            "MTU of tunl0; 0: the host MTU minus 20.", _mtu),
    Setting("FELIX_MTUIFACEPATTERN", "mtu_iface_pattern", "regex", DEFAULT_MTU_IFACE_PATTERN,
            DEFAULT_MTU_IFACE_PATTERN,
            "Interfaces whose smallest MTU is the host MTU for auto-detection "
            "(no match: 1460).", _regex),
    Setting("FELIX_DEFAULTENDPOINTTOHOSTACTION", "default_endpoint_to_host_action",
            "|".join(ENDPOINT_TO_HOST_ACTIONS), "Return", "Return",
            "What happens to a workload's traffic to its own host after its egress policy "
            "allowed it: Drop, Return (on to the host's INPUT rules) or Accept. Felix's own "
            "default is Drop; Return is what an etcd-mode calico-node configures per node.",
            _endpoint_to_host_action),
    Setting("FELIX_FAILSAFEINBOUNDHOSTPORTS", "failsafe_inbound_host_ports", "port list",
            parse_port_list(DEFAULT_FAILSAFE_INBOUND), DEFAULT_FAILSAFE_INBOUND,
            "[<protocol>:][<cidr>:]<port>,... always allowed into the host whatever host "
            "endpoint policy says (cali-failsafe-in); none for no ports.", parse_port_list),
    Setting("FELIX_FAILSAFEOUTBOUNDHOSTPORTS", "failsafe_outbound_host_ports", "port list",
            parse_port_list(DEFAULT_FAILSAFE_OUTBOUND), DEFAULT_FAILSAFE_OUTBOUND,
            "[<protocol>:][<cidr>:]<port>,... always allowed out of the host "
            "(cali-failsafe-out); none for no ports.", parse_port_list),
    Setting("FELIX_LOGSEVERITYSCREEN", "log_severity_screen", "|".join(LOG_SEVERITIES), "Info",
            "Info", "Log level of the agent (case-insensitive).", _one_of(LOG_SEVERITIES)),
)

_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class AgentConfig:
    """The effective settings. `sources` maps each environment name to "env" or "default"."""

    nodename: str | None = None
    nodename_file: str = DEFAULT_NODENAME_FILE
    ip: str = ""
    ip6: str = ""
    ip_autodetection_method: str = "first-found"
    ip6_autodetection_method: str = "first-found"
    autodetect_poll_interval: float = 60.0
    as_number: int | None = None
    networking_backend: str = "bird"
    bgp_sidecar: bool = False
    bgp_hold_time: int = 240
    router_id: str | None = None
    mtu_file: str = "/var/lib/calico/mtu"
    run_dir: str = "/var/run/tortie"
    endpoint_status_path_prefix: str = "/var/run/calico"
    startup_resources: str | None = None
    disable_node_ip_check: bool = False
    k8s_node_ref: str | None = None
    health_enabled: bool = False
    health_host: str = "localhost"
    health_port: int = 9099
    route_refresh_interval: float = 90.0
    iptables_refresh_interval: float = 180.0
    ipsets_refresh_interval: float = 90.0
    drift_check_interval: float = 1.0
    vxlan_vni: int = 4096
    vxlan_port: int = 4789
    vxlan_mtu: int = 0
    ipip_mtu: int = 0
    mtu_iface_pattern: str = DEFAULT_MTU_IFACE_PATTERN
    default_endpoint_to_host_action: EndpointToHostAction = "Return"
    failsafe_inbound_host_ports: tuple[FailsafePort, ...] = parse_port_list(
        DEFAULT_FAILSAFE_INBOUND)
    failsafe_outbound_host_ports: tuple[FailsafePort, ...] = parse_port_list(
        DEFAULT_FAILSAFE_OUTBOUND)
    log_severity_screen: str = "Info"
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def bgp_enabled(self) -> bool:
        return self.networking_backend in ("bird", "exabgp")

    @property
    def policy_only(self) -> bool:
        return self.networking_backend == "none"

    @property
    def log_level(self) -> int:
        """The Python logging level for log_severity_screen."""
        return {"Trace": logging.DEBUG, "Debug": logging.DEBUG, "Info": logging.INFO,
                "Warning": logging.WARNING, "Error": logging.ERROR,
                "Fatal": logging.CRITICAL}[self.log_severity_screen]

    def source_of(self, name: str) -> str:
        return self.sources.get(name, "default")


def _check_registry() -> None:
    attrs = {f.name for f in fields(AgentConfig)} - {"sources"}
    registered = {s.attr for s in SETTINGS}
    if attrs != registered:  # pragma: no cover - a programming error caught at import
        raise AssertionError(f"AgentConfig and SETTINGS disagree: {attrs ^ registered}")
    for s in SETTINGS:
        if AgentConfig.__dataclass_fields__[s.attr].default != s.default:  # pragma: no cover
            raise AssertionError(f"default of {s.name} differs between SETTINGS and AgentConfig")


_check_registry()


def load(environ: Mapping[str, str] | None = None, *, log: bool = True) -> AgentConfig:
    """Parse the agent's settings from `environ` (default: os.environ).

    Raises ConfigError on the first bad value, naming the variable and value.
    Logs every effective value with its source at INFO.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for s in SETTINGS:
        raw = env.get(s.name)
        if raw is None or raw.strip() == "":
            values[s.attr] = s.default
            sources[s.name] = "default"
            continue
        try:
            values[s.attr] = s.parse(raw)
        except _Invalid as exc:
            raise ConfigError(s.name, raw, str(exc), str(exc) if exc.whole else None) from None
        sources[s.name] = "env"
    config = AgentConfig(**values, sources=sources)
    if log:
        for s in SETTINGS:
            _log.info("config %s=%s (%s)", s.name, _show(getattr(config, s.attr)),
                      sources[s.name])
    return config


def _show(value: object) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}s"
    if isinstance(value, tuple):  # a port list
        return ",".join(f"{p}:{f'{n}:' if n else ''}{port}" for p, n, port in value) or "none"
    return str(value) if value != "" else "(unset)"


def describe_settings() -> list[tuple[str, str, str]]:
    """(environment name, default as documented, description), in registry order."""
    return [(s.name, s.default_text, s.description) for s in SETTINGS]


def setting(name: str) -> Setting:
    """The registry entry for one environment name (KeyError if unknown)."""
    return _BY_NAME[name]


__all__ = [
    "AgentConfig", "DEFAULT_NODENAME_FILE", "SETTINGS", "Setting", "describe_settings", "load",
    "parse_bool", "parse_duration", "setting",
]
