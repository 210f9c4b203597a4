"""Properties of the calculation over random-but-valid cluster states (hypothesis).

  * it never raises;
  * every route destination is a canonical IPv4 CIDR, and there is one route per destination;
  * routes are well-formed for their type (onlink routes name a device and a gateway, ...);
  * the result depends on the state, not on the order its keys arrived in.
"""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.calc import CalcConfig, ClusterState, calculate, unchanged_by
from agent.types import RouteClass
from datastore.resources import GlobalNetworkPolicy
from datastore.syncer import Update

from .test_calc_state import affinity, block, delete, node, pool, wep, wep_key

NODE_NAMES = ["node1", "node2", "node3", "node4"]
POOLS = [("a", "10.65.0.0/16", 26), ("b", "10.66.0.0/24", 28), ("c", "10.67.0.0/24", 32)]
# Blocks inside the pools, and one range outside every pool.
BLOCK_CIDRS = ["10.65.0.0/26", "10.65.0.64/26", "10.65.1.0/26", "10.66.0.0/28", "10.66.0.16/28",
               "10.67.0.1/32", "10.67.0.2/32", "10.99.0.0/26"]
ADDRESSES = [str(ipaddress.ip_network(c).network_address + i)
             for c in BLOCK_CIDRS for i in (0, 1, 5)] + ["192.168.9.9"]
NODE_IPS = ["10.0.0.5/24", "10.0.0.6/24", "10.0.1.7/24", "10.0.0.8/16", "10.0.0.9/32"]

MODES = st.sampled_from([("Never", "Never"), ("Always", "Never"), ("CrossSubnet", "Never"),
                         ("Never", "Always"), ("Never", "CrossSubnet")])


@st.composite
def cluster_updates(draw):
    updates = []
    for name, cidr, size in draw(st.lists(st.sampled_from(POOLS), unique=True, max_size=3)):
        vxlan, ipip = draw(MODES)
        updates.append(pool(name, cidr, vxlan=vxlan, ipip=ipip, nat=draw(st.booleans()),
                            disabled=draw(st.booleans()), block_size=size))
    maybe_address = st.none() | st.sampled_from(ADDRESSES)
    for name in draw(st.lists(st.sampled_from(NODE_NAMES), unique=True)):
        updates.append(node(name, draw(st.none() | st.sampled_from(NODE_IPS)),
                            vxlan_tunnel=draw(maybe_address), ipip_tunnel=draw(maybe_address),
                            mac=draw(st.none() | st.just("ee:00:00:00:00:01"))))
    maybe_node = st.none() | st.sampled_from(NODE_NAMES)
    states = st.sampled_from(["confirmed", "pending", "pendingDeletion"])
    # One value per key: the order-independence check below relies on it.
    affinities = draw(st.dictionaries(st.tuples(st.sampled_from(NODE_NAMES),
                                                st.sampled_from(BLOCK_CIDRS)), states))
    for cidr in draw(st.lists(st.sampled_from(BLOCK_CIDRS), unique=True)):
        size = ipaddress.ip_network(cidr).num_addresses
        allocations = draw(st.dictionaries(st.integers(0, size - 1), maybe_node, max_size=4))
        holder = draw(maybe_node)
        updates.append(block(cidr, holder, allocations))
        if holder is not None and draw(st.booleans()):  # mostly-consistent IPAM
            affinities[(holder, cidr)] = "confirmed"
    updates += [affinity(holder, cidr, state) for (holder, cidr), state in affinities.items()]
    for i, holder in enumerate(draw(st.lists(st.sampled_from(NODE_NAMES), max_size=6))):
        ips = draw(st.lists(st.sampled_from(ADDRESSES), unique=True, max_size=2))
        iface = draw(st.none() | st.sampled_from(["calia", "calib", f"cali{i}"]))
        updates.append(wep(holder, f"pod{i}", ips, iface))
    return updates


CONFIGS = st.sampled_from([CalcConfig(host_mtu=1500, parent_interface="eth0"),
                           CalcConfig(host_mtu=9000),
                           CalcConfig(host_mtu=1500, parent_interface="eth0",
                                      nat_outgoing=False)])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster_updates(), CONFIGS, st.sampled_from(NODE_NAMES + ["stranger"]), st.randoms())
def test_calculation_is_total_canonical_unique_and_order_independent(generated, config, local,
                                                                     rnd):
    updates = generated
    state = ClusterState()
    state.apply(updates)
    result = calculate(state, local, config)
    routes = result.dataplane.routes

    dsts = [r.dst for r in routes]
    assert len(dsts) == len(set(dsts))
    for route in routes:
        net = ipaddress.ip_network(route.dst)  # strict: host bits would raise
        assert str(net) == route.dst and net.version == 4
        if route.type == "blackhole":
            assert route.dev is None and route.route_class is RouteClass.IPAM_BLOCK_BLACKHOLE
            assert net.prefixlen < 32
        elif route.onlink:
            assert route.dev and route.gateway
            ipaddress.IPv4Address(route.gateway)
        else:
            assert route.dev and route.scope == "link" and net.prefixlen == 32
    # Neighbour and FDB entries come in pairs, one per remote VTEP.
    assert len(result.dataplane.neighbors) == len(result.dataplane.fdb)

    shuffled = list(updates)
    rnd.shuffle(shuffled)
    again = ClusterState()
    again.apply(shuffled)
    assert calculate(again, local, config) == result


SKIP_CONFIGS = st.sampled_from([CalcConfig(host_mtu=1500, parent_interface="eth0"),
                                CalcConfig(host_mtu=1500, parent_interface="eth0",
                                           datastore_cluster_routes=False)])
_POLICY = GlobalNetworkPolicy.model_validate({
    "metadata": {"name": "default.select"},
    "spec": {"selector": "all()", "ingress": [
        {"action": "Allow", "source": {"selector": "app == 'web'"}}]}})
# Rules that select endpoints by label: IP sets whose members come from endpoints.
SELECTING_POLICY = Update("put", _POLICY.key(), _POLICY.to_stored(), 1)


@st.composite
def pod_changes(draw):
    """What pod churn writes: endpoints put and deleted on any node, with addresses in and
    out of their node's blocks, and blocks re-written with other allocations."""
    changes = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["wep", "wep", "delete", "block"]))
        holder = draw(st.sampled_from(NODE_NAMES))
        pod = f"churn{draw(st.integers(0, 3))}"
        if kind == "wep":
            ips = draw(st.lists(st.sampled_from(ADDRESSES), unique=True, min_size=1, max_size=2))
            iface = draw(st.none() | st.just(f"cali{pod}"))
            changes.append(wep(holder, pod, ips, iface))
        elif kind == "delete":
            changes.append(delete(wep_key(holder, pod)))
        else:
            cidr = draw(st.sampled_from(BLOCK_CIDRS))
            size = ipaddress.ip_network(cidr).num_addresses
            allocations = draw(st.dictionaries(st.integers(0, size - 1),
                                               st.none() | st.sampled_from(NODE_NAMES),
                                               max_size=4))
            changes.append(block(cidr, draw(st.none() | st.just(holder)), allocations))
    return changes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster_updates(), SKIP_CONFIGS, st.sampled_from(NODE_NAMES), st.booleans(),
       st.lists(pod_changes(), min_size=1, max_size=6))
def test_a_change_unchanged_by_says_is_invisible_leaves_the_calculation_as_it_was(
        generated, config, local, with_policy, batches):
    """agent.calc.unchanged_by is sound: whenever it lets the agent skip a calculation,
    calculating anyway gives exactly the previous result (routes, devices, chains, sets,
    problems, learned-route context)."""
    state = ClusterState()
    state.apply(generated + ([SELECTING_POLICY] if with_policy else []))
    previous = calculate(state, local, config)
    state.take_changes()
    for batch in batches:
        state.apply(batch)
        changes = state.take_changes()
        if unchanged_by(previous, changes, state, local, config):
            assert calculate(state, local, config) == previous
        else:
            previous = calculate(state, local, config)
