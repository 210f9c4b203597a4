"""Node start-up, as calico-node does it: register this node and what it needs.

Owns the start-up sequence of node/pkg/lifecycle/startup/startup.go `Run()`:

  1. the node name (agent.nodename), validated as a resource name;
  2. the Node: read it, or build a new one;
  3. unless CALICO_NETWORKING_BACKEND=none: the IPv4/IPv6 address from
     IP / IP6 (autodetect | none | address[/prefix], configureIPsAndSubnets), the
     AS number from AS, and spec.interfaces;
  4. when an address changed (or the Node is new), unless DISABLE_NODE_IP_CHECK:
     refuse to start if another Node has the same address ("Calico node '%s'
     is already using the IPv4 address %s."); if IP=autodetect and our Node
     existed, first clear our own stored address, so that two nodes that
     swapped addresses cannot deadlock each other (Calico PR #1589);
  5. write the Node (create-if-absent, or compare-and-swap on its
     resourceVersion, re-read and re-applied on conflict) only if it differs;
  6. the start-up resources (TORTIE_STARTUP_RESOURCES, agent.startup_resources):
     read and validated before step 2, applied here, before the defaults, so that
     pools given there mean no default pool (as any existing pool does for
     calico-node) and a BGPConfiguration `default` given there is created with
     its values rather than empty;
  7. create the default BGPConfiguration (empty spec) and IPAMConfiguration
     when missing, and the default IPv4 pool (ipam.pools.ensure_default_pool);
  8. tunnel addresses (agent.tunnel_addresses): for IPIP and VXLAN, an address
     from the IPAM when an enabled pool that allows Tunnel use, selects this
     node and has that encapsulation needs one; released (by handle) and
     cleared when none does; VXLAN also gets the node's VTEP MAC;
  9. remember the node name in the node-name file.

Invariants:
  * A restart with nothing changed writes nothing: every write is preceded by a
    comparison with what is stored, and create-if-absent calls that lose are
    not writes.
  * Every write that can race is a compare-and-swap (datastore.store); the
    Node is written only through agent.node_write.write_node.
  * Provenance is visible: the chosen address, its interface and the method
    are logged and published on the Node as the annotations
    `tortie.io/ip-autodetection` / `tortie.io/ip6-autodetection`
    (values like "first-found eth0", "can-reach=10.0.0.1 eth1",
    "IP=10.0.0.5 eth0"). When an address is kept from the stored Node, the
    annotation is left as it was.
  * Errors are StartupError subclasses (agent.errors) with Calico's wording;
    datastore and IPAM failures that are not the operator's fault propagate as
    their own exception trees (datastore.errors, ipam.errors wrapped in
    TunnelAddressError).

Deliberate differences from calico-node: the conflict check also runs for a
new Node whose address came from IP=<addr>; IP6=<addr> without prefix takes
the prefix from the local interface (Calico does that for IPv4 only);
spec.interfaces is written for the families in use whatever IP says (Calico
writes it only when IP/IP6 are set explicitly); ClusterInformation and
FelixConfiguration are not created (tortie has no such resources yet).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from datastore.errors import ResourceAlreadyExists, ValidationError
from datastore.resources import BGPConfiguration, IPAMConfiguration, IPPool, Node, ObjectMeta
from datastore.resources.base import check_name
from datastore.store import ResourceStore
from ipam.errors import IPAMError
from ipam.pools import ensure_default_pool

from .autodetect import (
    Detected,
    Interface,
    detect,
    list_interfaces,
    local_cidr,
    log_detected,
    match_local,
    node_interfaces,
    parse_method,
    reach_source,
)
from .config import AgentConfig
from .errors import AddressError, AutodetectError, NodeIPConflict, NodeNameError, StartupError
from .node_write import build_node, node_document, set_field, write_node
from .nodename import determine_node_name, write_nodename_file
from .startup_resources import apply_startup_resources, load_startup_resources, summary
from .tunnel_addresses import TunnelAddresses, TunnelAllocator, reconcile_tunnel_addresses

_log = logging.getLogger(__name__)

IPV4_ANNOTATION = "tortie.io/ip-autodetection"
IPV6_ANNOTATION = "tortie.io/ip6-autodetection"


# -- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartupResult:
    node: Node
    nodename: str
    nodename_source: str
    detected: Detected | None          # IPv4 detection (None: not detected this time)
    detected6: Detected | None
    node_written: bool                 # the start-up changed the Node (address/AS/...)
    tunnels: TunnelAddresses
    tunnels_written: bool
    default_pool: IPPool | None        # the pool this start created, if any
    warnings: tuple[str, ...] = ()
    # (kind, name) -> created | updated | unchanged | kept, per start-up resource
    startup_resources: Mapping[tuple[str, str], str] = field(default_factory=dict)


@dataclass(frozen=True)
class RedetectResult:
    node: Node
    changed: bool                      # the Node was updated
    detected: Detected | None
    detected6: Detected | None
    warnings: tuple[str, ...] = ()


# -- addresses (pure given a detector) ---------------------------------------------------------


@dataclass(frozen=True)
class AddressPlan:
    """What configureIPsAndSubnets decides: the addresses, and where they came from."""

    ipv4: str | None
    ipv6: str | None
    source4: str | None            # annotation value; None: leave the annotation alone
    source6: str | None
    detected4: Detected | None
    detected6: Detected | None
    interfaces: list[dict[str, object]]
    changed: bool                  # ipv4 or ipv6 differs from the stored Node
    warnings: tuple[str, ...] = ()


Detector = Callable[[str, int], Detected]


def _ip_of(cidr: str | None) -> str | None:
    return str(ipaddress.ip_interface(cidr).ip) if cidr else None


def _confirm(addr: str, interfaces: Sequence[Interface], warnings: list[str]) -> None:
    """calico-node's validateIP: only a warning when the address is not local."""
    iface = ipaddress.ip_interface(addr)
    if match_local(iface.ip, interfaces) is None:
        msg = f"Unable to confirm IPv{iface.version} address {iface.ip} is assigned to this host"
        _log.warning("%s", msg)
        warnings.append(msg)


def _plan_family(version: int, env: str, method: str, old: str | None,
                 interfaces: Sequence[Interface], detector: Detector, warnings: list[str]
                 ) -> tuple[str | None, str | None, Detected | None]:
    """(address, annotation or None, detection) for one family."""
    name = "IP" if version == 4 else "IP6"
    # IPv4 is detected when asked, or when unset and the Node has none; IPv6 only when asked.
    if env == "autodetect" or (version == 4 and env == "" and not old):
        # A method that can never work is fatal even when an old address could be kept.
        parse_method(method, version)
        try:
            found = detector(method, version)
        except AutodetectError as exc:
            if not old:
                _log.warning("Couldn't autodetect an IPv%d address. If auto-detecting, choose a "
                             "different autodetection method. Otherwise provide an explicit "
                             "address.", version)
                raise AddressError(
                    f"failed to autodetect an IPv{version} address: {exc}") from None
            msg = (f"Autodetection of IPv{version} address failed, keeping existing value: "
                   f"{old} ({exc})")
            _log.warning("%s", msg)
            warnings.append(msg)
            _confirm(old, interfaces, warnings)
            return old, None, None
        log_detected(found)
        return found.address, found.describe(), found
    if env in ("", "none"):
        if old:
            if env == "none":
                _log.info("Autodetection for IPv%d disabled, keeping existing value: %s",
                          version, old)
            _confirm(old, interfaces, warnings)
        return old, None, None
    # An explicit address: take the prefix from the interface that holds it.
    try:
        cidr, iface = local_cidr(env, interfaces)
        parsed = ipaddress.ip_interface(cidr)
    except ValueError:
        parsed = None
    if parsed is None or parsed.version != version:
        raise AddressError(
            f"Environment does not contain a valid IPv{version} address: {name}={env}")
    if iface is None and "/" not in env:
        _log.warning("Unable to find matching host interface for IP %s", env)
    _log.info("Using IPv%d address from environment: %s=%s", version, name, env)
    address = str(parsed)
    _confirm(address, interfaces, warnings)
    source = f"{name}={env} {iface}" if iface else f"{name}={env}"
    return address, source, None


def plan_addresses(node: Node | None, config: AgentConfig, interfaces: Sequence[Interface],
                   detector: Detector) -> AddressPlan:
    """Decide the node's addresses from IP/IP6 and the stored Node. Pure but for
    `detector` (which may do a route lookup for can-reach=)."""
    old4 = node.ipv4_address if node else None
    old6 = node.ipv6_address if node else None
    warnings: list[str] = []
    ipv4, source4, det4 = _plan_family(4, config.ip, config.ip_autodetection_method, old4,
                                       interfaces, detector, warnings)
    ipv6, source6, det6 = _plan_family(6, config.ip6, config.ip6_autodetection_method, old6,
                                       interfaces, detector, warnings)
    versions = [v for v, a in ((4, ipv4), (6, ipv6)) if a] or [4]
    changed = _norm(ipv4) != _norm(old4) or _norm(ipv6) != _norm(old6)
    return AddressPlan(ipv4, ipv6, source4, source6, det4, det6,
                       node_interfaces(interfaces, versions), changed, tuple(warnings))


def _norm(cidr: str | None) -> str | None:
    return str(ipaddress.ip_interface(cidr)) if cidr else None


def find_conflicts(name: str, ipv4: str | None, ipv6: str | None, nodes: Sequence[Node]
                   ) -> tuple[list[str], bool, bool]:
    """checkConflictingNodes: (messages, v4 conflict, v6 conflict). Pure.
    Addresses are compared without their prefix, as Calico does."""
    our4, our6 = _ip_of(ipv4), _ip_of(ipv6)
    msgs: list[str] = []
    v4 = v6 = False
    for other in sorted(nodes, key=lambda n: n.name):
        their4, their6 = _ip_of(other.ipv4_address), _ip_of(other.ipv6_address)
        if other.name == name:
            if our4 and their4 and our4 != their4:
                _log.warning("IPv4 address has changed. This could happen if there are multiple "
                             "nodes with the same name. node=%s original=%s updated=%s",
                             name, their4, our4)
            if our6 and their6 and our6 != their6:
                _log.warning("IPv6 address has changed. This could happen if there are multiple "
                             "nodes with the same name. node=%s original=%s updated=%s",
                             name, their6, our6)
            continue
        if our4 and their4 == our4:
            msgs.append(f"Calico node '{other.name}' is already using the IPv4 address {our4}.")
            v4 = True
        if our6 and their6 == our6:
            msgs.append(f"Calico node '{other.name}' is already using the IPv6 address {our6}.")
            v6 = True
    return msgs, v4, v6


# -- the Node document --------------------------------------------------------------------------


def _apply_plan(current: Node | None, name: str, config: AgentConfig,
                plan: AddressPlan | None) -> Node:
    doc = node_document(current, name)
    spec = doc.setdefault("spec", {})
    meta = doc.setdefault("metadata", {})
    annotations = dict(meta.get("annotations") or {})
    if plan is not None:
        bgp = dict(spec.get("bgp") or {})
        set_field(bgp, "ipv4Address", plan.ipv4)
        set_field(bgp, "ipv6Address", plan.ipv6)
        if config.as_number is not None:
            bgp["asNumber"] = config.as_number
        spec["bgp"] = bgp
        set_field(spec, "interfaces", plan.interfaces)
        for key, addr, source in ((IPV4_ANNOTATION, plan.ipv4, plan.source4),
                                  (IPV6_ANNOTATION, plan.ipv6, plan.source6)):
            if not addr:
                annotations.pop(key, None)
            elif source is not None:
                annotations[key] = source
    if config.k8s_node_ref:
        spec["orchRefs"] = [{"nodeName": config.k8s_node_ref, "orchestrator": "k8s"}]
    meta["annotations"] = annotations
    return build_node(doc)


def _clear_addresses(current: Node | None, name: str, v4: bool, v6: bool) -> Node:
    doc = node_document(current, name)
    bgp = dict(doc.get("spec", {}).get("bgp") or {})
    annotations = dict(doc.get("metadata", {}).get("annotations") or {})
    if v4:
        _log.info("Clearing out-of-date IPv4 address %s from this node", bgp.get("ipv4Address"))
        bgp.pop("ipv4Address", None)
        annotations.pop(IPV4_ANNOTATION, None)
    if v6:
        _log.info("Clearing out-of-date IPv6 address %s from this node", bgp.get("ipv6Address"))
        bgp.pop("ipv6Address", None)
        annotations.pop(IPV6_ANNOTATION, None)
    doc["spec"]["bgp"] = bgp
    doc["metadata"]["annotations"] = annotations
    return build_node(doc)


def _check_conflicts(store: ResourceStore, name: str, plan: AddressPlan, existed: bool,
                     config: AgentConfig) -> None:
    msgs, v4, v6 = find_conflicts(name, plan.ipv4, plan.ipv6, store.list(Node))
    if not msgs:
        return
    for msg in msgs:
        _log.error("%s", msg)
    clear4 = v4 and config.ip == "autodetect"
    clear6 = v6 and config.ip6 == "autodetect"
    if existed and (clear4 or clear6):
        # Free our old address for whoever needs it (nodes that swapped IPs): PR #1589.
        try:
            write_node(store, name, lambda cur: _clear_addresses(cur, name, clear4, clear6))
        except StartupError as exc:
            _log.warning("Failed to clear node addresses: %s", exc)
    raise NodeIPConflict(msgs, v4, v6)


# -- defaults -----------------------------------------------------------------------------------


def ensure_default_config(store: ResourceStore) -> list[str]:
    """BGPConfiguration and IPAMConfiguration `default`, created when missing. Returns the
    kinds this call created; losing a create race to another node is fine."""
    created = []
    wanted = (BGPConfiguration(metadata=ObjectMeta(name="default")),
              IPAMConfiguration(metadata=ObjectMeta(name="default")))
    for res in wanted:
        if store.find(type(res), "default") is not None:
            continue
        try:
            store.create(res)
        except ResourceAlreadyExists:
            continue
        _log.info("created default %s", res.kind_name)
        created.append(res.kind_name)
    return created


# -- the sequence ---------------------------------------------------------------------------------


def _detector(interfaces: Sequence[Interface], netns: str | None,
              reach: Callable[[str, int], str] | None) -> Detector:
    def run(method: str, version: int) -> Detected:
        return detect(method, version, interfaces,
                      reach=reach or (lambda dest, v: reach_source(dest, v, netns)))

    return run


def _validate_name(name: str, source: str) -> None:
    try:
        check_name("Node", name, False, None)
    except ValidationError as exc:
        raise NodeNameError(f"invalid node name {name!r} (from {source}): {exc}") from None


def run_startup(store: ResourceStore, config: AgentConfig,
                environ: Mapping[str, str] | None = None, *,
                netns: str | None = None,
                nodename_file: str | os.PathLike[str] | None = None,
                interfaces: Sequence[Interface] | None = None,
                reach: Callable[[str, int], str] | None = None,
                allocator: TunnelAllocator | None = None,
                gethostname: Callable[[], str] = socket.gethostname) -> StartupResult:
    """Register this node as calico-node's start-up does (see the module docstring).

    `environ` is passed to the default-pool logic (CALICO_IPV4POOL_*) and supplies
    HOSTNAME; `netns` makes detection read that network namespace; `interfaces`
    and `reach` replace the host reads (tests); `allocator` is the IPAM for the
    tunnel addresses, an ipam.allocator.Allocator unless given (one is made).
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    name_file = nodename_file if nodename_file is not None else config.nodename_file
    name, name_source = determine_node_name(config.nodename, env.get("HOSTNAME"), name_file,
                                            gethostname)
    _validate_name(name, name_source)
    _log.info("Starting node %s (name from %s)", name, name_source)
    # Read and validated before the first write: a bad file changes nothing.
    resources_path = config.startup_resources
    resources = load_startup_resources(resources_path) if resources_path else []

    ifaces = list(interfaces) if interfaces is not None else list_interfaces(netns)
    existing = store.find(Node, name)
    if existing is None:
        _log.info("Building new node resource %s", name)

    plan: AddressPlan | None = None
    if config.policy_only:
        _log.info("CALICO_NETWORKING_BACKEND=none: not configuring the node's IP or AS")
    else:
        plan = plan_addresses(existing, config, ifaces, _detector(ifaces, netns, reach))
        if not plan.ipv4 and not plan.ipv6:
            raise AddressError("no IPv4 or IPv6 addresses configured or detected, "
                               "required for Calico networking")
        if config.as_number is not None:
            _log.info("Using AS number specified in environment (AS=%s)", config.as_number)
        elif existing is not None and existing.as_number is not None:
            _log.info("Using AS number %s configured in node resource", existing.as_number)
        else:
            _log.info("No AS number configured on node resource, using global value")
        if (plan.changed or existing is None) and not config.disable_node_ip_check:
            _check_conflicts(store, name, plan, existing is not None, config)

    node, node_written = write_node(store, name,
                                    lambda cur: _apply_plan(cur, name, config, plan))

    outcomes = apply_startup_resources(store, resources, resources_path) if resources_path else {}
    if resources_path:
        _log.info("start-up resources %s: %s", resources_path, summary(outcomes))
    ensure_default_config(store)
    host_addresses = [str(a) for i in ifaces for a in i.addresses if a.version == 4]
    try:
        default_pool = ensure_default_pool(store, env, host_addresses)
    except IPAMError as exc:
        raise StartupError(str(exc)) from exc

    node, tunnels, tunnels_written = reconcile_tunnel_addresses(store, name, allocator)

    write_nodename_file(name, name_file)
    _log.info("Using node name: %s", name)
    return StartupResult(
        node=node, nodename=name, nodename_source=name_source,
        detected=plan.detected4 if plan else None, detected6=plan.detected6 if plan else None,
        node_written=node_written, tunnels=tunnels, tunnels_written=tunnels_written,
        default_pool=default_pool, warnings=plan.warnings if plan else (),
        startup_resources=outcomes)


def redetect(store: ResourceStore, config: AgentConfig, nodename: str, *,
             netns: str | None = None, interfaces: Sequence[Interface] | None = None,
             reach: Callable[[str, int], str] | None = None) -> RedetectResult:
    """One pass of MonitorIPAddressSubnets: detect again and update the Node only when
    its addresses (or its interface list) changed. The agent calls this every
    AUTODETECT_POLL_INTERVAL; a NodeIPConflict means the new address is taken."""
    node = store.get(Node, nodename)
    if config.policy_only:
        return RedetectResult(node, False, None, None)
    ifaces = list(interfaces) if interfaces is not None else list_interfaces(netns)
    plan = plan_addresses(node, config, ifaces, _detector(ifaces, netns, reach))
    if plan.changed:
        _log.info("Node %s address changed: IPv4 %s -> %s, IPv6 %s -> %s", nodename,
                  node.ipv4_address, plan.ipv4, node.ipv6_address, plan.ipv6)
        if not config.disable_node_ip_check:
            _check_conflicts(store, nodename, plan, True, config)
    written, changed = write_node(store, nodename,
                                  lambda cur: _apply_plan(cur, nodename, config, plan))
    return RedetectResult(written, changed, plan.detected4, plan.detected6, plan.warnings)


__all__ = [
    "IPV4_ANNOTATION", "IPV6_ANNOTATION", "AddressPlan", "RedetectResult", "StartupResult",
    "ensure_default_config", "find_conflicts", "plan_addresses",
    "redetect", "run_startup",
]
