"""Node start-up against a real etcd: the Node, defaults, conflicts, tunnel addresses."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from agent.calc.vtep import derived_vtep_mac
from agent.config import load
from agent.errors import AddressError, AutodetectError, ConfigError, NodeIPConflict, NodeNameError
from agent.startup import (
    IPV4_ANNOTATION,
    IPV6_ANNOTATION,
    redetect,
)
from agent.tunnel_addresses import reconcile_tunnel_addresses
from datastore.resources import BGPConfiguration, IPAMConfiguration, IPPool, Node
from ipam.allocator import Allocator

from .conftest import HOST, iface, make

# -- the Node ----------------------------------------------------------------------------------


def test_fresh_start_writes_the_node(start, store, tmp_path: Path) -> None:
    result = start({"AS": "64513"})
    node = store.get(Node, "node-a")
    assert node.spec.bgp is not None
    assert node.spec.bgp.ipv4Address == "10.0.0.5/24"
    assert node.spec.bgp.asNumber == 64513
    assert node.spec.bgp.ipv6Address is None  # IPv6 only when asked
    assert [i.dump() for i in node.spec.interfaces or []] == [
        {"name": "eth0", "addresses": ["10.0.0.5"]}]
    assert node.metadata.annotations == {IPV4_ANNOTATION: "first-found eth0"}
    assert result.node_written and result.nodename == "node-a"
    assert result.nodename_source == "env NODENAME"
    assert result.detected is not None and result.detected.describe() == "first-found eth0"
    # Defaults the cluster needs, created once.
    assert store.get(BGPConfiguration, "default").spec.dump() == {}
    ipam = store.get(IPAMConfiguration, "default").spec
    assert (ipam.strictAffinity, ipam.autoAllocateBlocks, ipam.maxBlocksPerHost) == (
        False, True, 0)
    assert result.default_pool is not None and result.default_pool.spec.cidr == "10.65.0.0/16"
    assert (tmp_path / "nodename").read_text() == "node-a"
    # No pool needs a tunnel: no tunnel addresses, no MAC.
    assert node.spec.ipv4VXLANTunnelAddr is None and node.spec.vxlanTunnelMACAddr is None
    assert node.spec.bgp.ipv4IPIPTunnelAddr is None


def test_restart_with_nothing_changed_writes_nothing(start, store, etcd_client) -> None:
    make(store, "IPPool", "vx", {"cidr": "10.66.0.0/16", "vxlanMode": "Always"})
    first = start({"AS": "64513", "IP": "autodetect"})
    assert first.tunnels.vxlan is not None
    node_rev = store.get(Node, "node-a").resource_version
    revision = etcd_client.revision()
    second = start({"AS": "64513", "IP": "autodetect"})
    assert etcd_client.revision() == revision  # not a single key written
    assert store.get(Node, "node-a").resource_version == node_rev
    assert not second.node_written and not second.tunnels_written
    assert second.default_pool is None
    assert second.tunnels == first.tunnels


def test_restart_keeps_what_the_env_no_longer_says(start, store) -> None:
    start({"AS": "64513"})
    # IP unset and the Node has an address: kept, no detection (calico-node's rule).
    result = start({}, interfaces=[iface("eth0", 2, "10.0.9.9/24")])
    node = store.get(Node, "node-a")
    assert node.spec.bgp.ipv4Address == "10.0.0.5/24"
    assert node.spec.bgp.asNumber == 64513
    assert result.detected is None
    assert node.metadata.annotations == {IPV4_ANNOTATION: "first-found eth0"}
    assert "Unable to confirm IPv4 address 10.0.0.5 is assigned to this host" in result.warnings


def test_ip_autodetect_follows_the_host(start, store) -> None:
    start({"IP": "autodetect"})
    start({"IP": "autodetect"}, interfaces=[iface("ens3", 4, "10.0.1.7/24")])
    node = store.get(Node, "node-a")
    assert node.spec.bgp.ipv4Address == "10.0.1.7/24"
    assert node.metadata.annotations == {IPV4_ANNOTATION: "first-found ens3"}


def test_explicit_ip_without_prefix_takes_the_interfaces(start, store) -> None:
    result = start({"IP": "10.0.0.5"})
    node = store.get(Node, "node-a")
    assert node.spec.bgp.ipv4Address == "10.0.0.5/24"
    assert node.metadata.annotations == {IPV4_ANNOTATION: "IP=10.0.0.5 eth0"}
    assert result.detected is None and not result.warnings


def test_explicit_ip_not_on_the_host_is_only_a_warning(start, store) -> None:
    result = start({"IP": "10.9.9.9"})
    assert store.get(Node, "node-a").spec.bgp.ipv4Address == "10.9.9.9/32"
    assert result.warnings == ("Unable to confirm IPv4 address 10.9.9.9 is assigned to this host",)


def test_explicit_cidr_is_used_as_given(start, store) -> None:
    start({"IP": "10.0.0.5/16"})
    assert store.get(Node, "node-a").spec.bgp.ipv4Address == "10.0.0.5/16"


def test_bad_ip_is_refused_before_anything_is_written(etcd_client) -> None:
    with pytest.raises(ConfigError) as err:
        load({"IP": "10.0.0.256"})
    assert str(err.value) == "Environment does not contain a valid IPv4 address: IP=10.0.0.256"


def test_ipv6_when_asked(start, store) -> None:
    result = start({"IP6": "autodetect"})
    node = store.get(Node, "node-a")
    assert node.spec.bgp.ipv6Address == "fd00::5/64"
    assert node.metadata.annotations == {IPV4_ANNOTATION: "first-found eth0",
                                         IPV6_ANNOTATION: "first-found eth0"}
    assert result.detected6 is not None
    assert [i.dump() for i in node.spec.interfaces or []] == [
        {"name": "eth0", "addresses": ["10.0.0.5", "fd00::5", "fe80::5"]}]


def test_explicit_ipv6(start, store) -> None:
    start({"IP6": "fd00::5"})
    assert store.get(Node, "node-a").spec.bgp.ipv6Address == "fd00::5/64"


def test_detection_method_from_env(start, store) -> None:
    ifaces = [*HOST, iface("eth1", 5, "192.168.50.2/24")]
    start({"IP_AUTODETECTION_METHOD": "interface=eth0"}, interfaces=ifaces)
    node = store.get(Node, "node-a")
    assert node.spec.bgp.ipv4Address == "10.0.0.5/24"
    assert node.metadata.annotations == {IPV4_ANNOTATION: "interface=eth0 eth0"}


def test_no_address_found_is_fatal(start, store) -> None:
    with pytest.raises(AddressError) as err:
        start({}, interfaces=[iface("lo", 1, "127.0.0.1/8")])
    assert str(err.value) == ("failed to autodetect an IPv4 address: Unable to auto-detect an "
                              "IPv4 address: no valid host interfaces found")
    assert store.find(Node, "node-a") is None


def test_detection_failure_keeps_the_stored_address(start, store) -> None:
    start({})
    result = start({"IP": "autodetect"}, interfaces=[iface("lo", 1, "127.0.0.1/8")])
    assert store.get(Node, "node-a").spec.bgp.ipv4Address == "10.0.0.5/24"
    assert result.warnings[0].startswith(
        "Autodetection of IPv4 address failed, keeping existing value: 10.0.0.5/24")


def test_ip_none_without_any_address_is_fatal(start, store) -> None:
    with pytest.raises(AddressError) as err:
        start({"IP": "none"})
    assert str(err.value) == ("no IPv4 or IPv6 addresses configured or detected, "
                              "required for Calico networking")


def test_policy_only_writes_no_bgp(start, store) -> None:
    result = start({"CALICO_NETWORKING_BACKEND": "none", "AS": "64513"},
                   interfaces=[iface("lo", 1, "127.0.0.1/8")])
    node = store.get(Node, "node-a")
    assert node.spec.bgp is None and result.detected is None


def test_orch_ref(start, store) -> None:
    start({"CALICO_K8S_NODE_REF": "k8s-node-a"})
    refs = store.get(Node, "node-a").spec.orchRefs or []
    assert [r.dump() for r in refs] == [{"nodeName": "k8s-node-a", "orchestrator": "k8s"}]


# -- node name ---------------------------------------------------------------------------------


def test_node_name_from_hostname_then_remembered(start, store, tmp_path: Path) -> None:
    result = start({"NODENAME": None, "HOSTNAME": "Worker-7"})
    assert result.nodename == "worker-7" and result.nodename_source == "env HOSTNAME"
    assert store.find(Node, "worker-7") is not None
    # The host is renamed: the stored name wins, so it keeps its Node.
    again = start({"NODENAME": None, "HOSTNAME": "renamed"})
    assert again.nodename == "worker-7"
    assert again.nodename_source == f"file {tmp_path / 'nodename'}"


def test_node_name_from_gethostname(start) -> None:
    result = start({"NODENAME": None}, gethostname=lambda: "Box.Example.COM")
    assert (result.nodename, result.nodename_source) == ("box.example.com", "hostname")


def test_invalid_node_name(start, store) -> None:
    with pytest.raises(NodeNameError) as err:
        start({"NODENAME": "Bad_Name"})
    assert "invalid node name 'Bad_Name' (from env NODENAME)" in str(err.value)
    assert store.list(Node) == []


# -- conflicts ---------------------------------------------------------------------------------


def test_conflict_with_another_node(start, store) -> None:
    make(store, "Node", "node-b", {"bgp": {"ipv4Address": "10.0.0.5/16"}})
    with pytest.raises(NodeIPConflict) as err:
        start({})
    assert str(err.value) == "Calico node 'node-b' is already using the IPv4 address 10.0.0.5."
    assert store.find(Node, "node-a") is None


def test_conflict_ipv6(start, store) -> None:
    make(store, "Node", "node-b", {"bgp": {"ipv6Address": "fd00::5/64"}})
    with pytest.raises(NodeIPConflict) as err:
        start({"IP6": "autodetect"})
    assert str(err.value) == "Calico node 'node-b' is already using the IPv6 address fd00::5."
    assert err.value.v6 and not err.value.v4


def test_conflict_check_can_be_disabled(start, store) -> None:
    make(store, "Node", "node-b", {"bgp": {"ipv4Address": "10.0.0.5/24"}})
    start({"DISABLE_NODE_IP_CHECK": "true"})
    assert store.get(Node, "node-a").spec.bgp.ipv4Address == "10.0.0.5/24"


def test_autodetect_conflict_clears_our_stale_address(start, store) -> None:
    start({"IP": "autodetect"}, interfaces=[iface("eth0", 2, "10.0.0.9/24")])
    assert store.get(Node, "node-a").spec.bgp.ipv4Address == "10.0.0.9/24"
    # node-b now has the address this host moves to (the two swapped addresses).
    make(store, "Node", "node-b", {"bgp": {"ipv4Address": "10.0.0.5/24"}})
    with pytest.raises(NodeIPConflict):
        start({"IP": "autodetect"})
    stale = store.get(Node, "node-a")
    assert stale.ipv4_address is None  # 10.0.0.9 is free for node-b's restart
    assert IPV4_ANNOTATION not in (stale.metadata.annotations or {})


def test_explicit_ip_conflict_does_not_clear(start, store) -> None:
    start({"IP": "10.0.0.9/24"})
    make(store, "Node", "node-b", {"bgp": {"ipv4Address": "10.0.0.5/24"}})
    with pytest.raises(NodeIPConflict):
        start({"IP": "10.0.0.5"})
    assert store.get(Node, "node-a").spec.bgp.ipv4Address == "10.0.0.9/24"


# -- re-detection ------------------------------------------------------------------------------


def test_redetect_updates_only_on_change(start, store, etcd_client) -> None:
    start({"IP": "autodetect"})
    config = load({"IP": "autodetect"}, log=False)
    revision = etcd_client.revision()
    same = redetect(store, config, "node-a", interfaces=HOST)
    assert not same.changed and etcd_client.revision() == revision
    moved = redetect(store, config, "node-a", interfaces=[iface("eth0", 2, "10.0.3.3/24")])
    assert moved.changed
    assert store.get(Node, "node-a").spec.bgp.ipv4Address == "10.0.3.3/24"


def test_redetect_refuses_a_taken_address(start, store) -> None:
    start({"IP": "autodetect"})
    make(store, "Node", "node-b", {"bgp": {"ipv4Address": "10.0.3.3/24"}})
    config = load({"IP": "autodetect"}, log=False)
    with pytest.raises(NodeIPConflict):
        redetect(store, config, "node-a", interfaces=[iface("eth0", 2, "10.0.3.3/24")])
    assert store.get(Node, "node-a").ipv4_address is None  # cleared, as at start-up


# -- tunnel addresses --------------------------------------------------------------------------


def test_ipip_pool_gets_a_tunnel_address_released_when_it_goes_never(start, store) -> None:
    make(store, "IPPool", "ipip", {"cidr": "10.70.0.0/16", "ipipMode": "Always"})
    result = start({})
    ip = result.tunnels.ipip
    assert ip is not None and ip.startswith("10.70.")
    node = store.get(Node, "node-a")
    assert node.spec.bgp.ipv4IPIPTunnelAddr == ip
    assert node.spec.ipv4VXLANTunnelAddr is None and node.spec.vxlanTunnelMACAddr is None
    owner = Allocator(store.client).get_assignment(ip)
    assert owner is not None and owner.handle_id == "ipip-tunnel-addr-node-a"
    assert dict(owner.attributes) == {"node": "node-a", "type": "ipipTunnelAddress"}
    assert Allocator(store.client).affine_blocks("node-a")  # from the node's own block

    pool = store.get(IPPool, "ipip")
    store.update(pool.model_copy(update={"spec": pool.spec.model_copy(
        update={"ipipMode": "Never"})}))
    node, tunnels, wrote = reconcile_tunnel_addresses(store, "node-a", Allocator(store.client))
    assert wrote and tunnels.ipip is None
    assert node.spec.bgp.ipv4IPIPTunnelAddr is None
    assert node.spec.bgp.ipv4Address == "10.0.0.5/24"  # the rest of the Node untouched
    assert Allocator(store.client).get_assignment(ip) is None


def test_vxlan_pool_gets_address_and_derived_mac(start, store) -> None:
    make(store, "IPPool", "vx", {"cidr": "10.71.0.0/16", "vxlanMode": "CrossSubnet"})
    result = start({})
    node = store.get(Node, "node-a")
    assert node.spec.ipv4VXLANTunnelAddr == result.tunnels.vxlan
    assert result.tunnels.vxlan is not None and result.tunnels.vxlan.startswith("10.71.")
    expected = ":".join(f"{b:02x}" for b in b"f" + hashlib.sha1(b"node-a").digest()[:5])
    assert node.spec.vxlanTunnelMACAddr == expected == derived_vtep_mac("node-a")
    assert expected.startswith("66:")
    owner = Allocator(store.client).get_assignment(result.tunnels.vxlan)
    assert owner is not None and owner.handle_id == "vxlan-tunnel-addr-node-a"
    assert dict(owner.attributes) == {"node": "node-a", "type": "vxlanTunnelAddress"}
    assert node.spec.bgp.ipv4IPIPTunnelAddr is None


def test_a_mac_set_on_the_node_is_kept(start, store) -> None:
    make(store, "Node", "node-a", {"vxlanTunnelMACAddr": "02:00:00:00:00:01"})
    make(store, "IPPool", "vx", {"cidr": "10.71.0.0/16", "vxlanMode": "Always"})
    result = start({})
    assert result.tunnels.vxlan_mac == "02:00:00:00:00:01"
    assert store.get(Node, "node-a").spec.vxlanTunnelMACAddr == "02:00:00:00:00:01"


def test_default_pool_from_env_gets_the_tunnel(start, store) -> None:
    result = start({"CALICO_IPV4POOL_IPIP": "Always"})
    assert result.default_pool is not None
    assert result.tunnels.ipip is not None and result.tunnels.ipip.startswith("10.65.")


def test_tunnel_comes_from_the_pool_that_needs_it(start, store) -> None:
    # Both pools allow Tunnel use; only "vx" has VXLAN. The address must come from it,
    # even though the allocator alone could pick the other one.
    make(store, "IPPool", "plain", {"cidr": "10.60.0.0/16"})
    make(store, "IPPool", "vx", {"cidr": "10.80.0.0/16", "vxlanMode": "Always"})
    result = start({})
    assert result.tunnels.vxlan is not None and result.tunnels.vxlan.startswith("10.80.")
    assert result.tunnels.ipip is None


def test_pool_not_selecting_the_node_gives_no_tunnel(start, store) -> None:
    make(store, "IPPool", "ipip", {"cidr": "10.70.0.0/16", "ipipMode": "Always",
                                   "nodeSelector": "zone == 'b'"})
    assert start({}).tunnels.ipip is None
    node = store.get(Node, "node-a")
    store.update(node.model_copy(update={"metadata": node.metadata.model_copy(
        update={"labels": {"zone": "b"}})}))
    _, tunnels, wrote = reconcile_tunnel_addresses(store, "node-a", Allocator(store.client))
    assert wrote and tunnels.ipip is not None and tunnels.ipip.startswith("10.70.")


def test_pool_without_tunnel_use_gives_no_tunnel(start, store) -> None:
    make(store, "IPPool", "ipip", {"cidr": "10.70.0.0/16", "ipipMode": "Always",
                                   "allowedUses": ["Workload"]})
    assert start({}).tunnels.ipip is None


def test_a_stored_tunnel_address_nobody_holds_is_taken_back(start, store) -> None:
    make(store, "IPPool", "ipip", {"cidr": "10.70.0.0/16", "ipipMode": "Always"})
    first = start({}).tunnels.ipip
    assert first is not None
    Allocator(store.client).release_by_handle("ipip-tunnel-addr-node-a")  # IPAM lost it
    again = start({})
    assert again.tunnels.ipip == first
    owner = Allocator(store.client).get_assignment(first)
    assert owner is not None and owner.handle_id == "ipip-tunnel-addr-node-a"


def test_a_stored_tunnel_address_of_someone_else_is_replaced(start, store) -> None:
    make(store, "IPPool", "ipip", {"cidr": "10.70.0.0/16", "ipipMode": "Always"})
    first = start({}).tunnels.ipip
    assert first is not None
    alloc = Allocator(store.client)
    alloc.release_by_handle("ipip-tunnel-addr-node-a")
    alloc.assign_ip(first, "node-z", "k8s-pod-network.abc", {"pod": "p"})
    again = start({}).tunnels.ipip
    assert again is not None and again != first
    held = Allocator(store.client).get_assignment(first)
    assert held is not None and held.handle_id == "k8s-pod-network.abc"  # not released


def test_unusable_method_is_fatal_even_with_a_stored_address(start, store) -> None:
    from dataclasses import replace

    from agent.startup import run_startup

    start({})
    config = replace(load({"NODENAME": "node-a", "IP": "autodetect"}, log=False),
                     ip_autodetection_method="interfaces=eth0")
    with pytest.raises(AutodetectError) as err:
        run_startup(store, config, {}, interfaces=HOST, nodename_file="/nonexistent/x")
    assert str(err.value) == "Invalid IP autodetection method: interfaces=eth0"
