"""The whole calculation: cluster state + local node + config -> DesiredDataplane. Pure.

`calculate` is a function of its arguments only (no I/O, clock or logging):
the agent calls it after every batch of syncer updates and hands the result
to the dataplane managers, which apply only differences. Because it is pure,
"a change recomputes exactly what depends on it" holds by construction and is
tested by diffing the results before and after a change.

`unchanged_by` says when a batch cannot change the result, so the agent need not
calculate at all: on a cluster of N nodes every pod change reaches every node, and
on all but one of them it is usually a remote endpoint inside its own node's block,
which no route, chain or set here depends on (no policy selects endpoints). It
answers True only for changes it can prove invisible; tests/unit/test_calc_properties.py
checks, over random clusters and changes, that calculate() then returns the previous
result.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from policy.render import LocalEndpoint

from ..types import DesiredDataplane
from .config import CalcConfig
from .learned import LearnedContext
from .policy import plan_policy
from .routes import AddressRouting, plan_routes, routed_allocations
from .rules import input_chain, plan_rules
from .state import ClusterState, Facet, StateChanges


@dataclass(frozen=True)
class Calculation:
    dataplane: DesiredDataplane
    # Why parts of the cluster are not programmed (missing addresses, conflicts,
    # unreadable values), sorted; the agent logs changes to this list.
    problems: tuple[str, ...]
    # What BGP-learned routes depend on (agent/calc/learned.py), for LearnedRoutes.
    learned_context: LearnedContext
    # What unchanged_by needs: the config calculated with, which remote addresses get
    # their own routes, and whether any IP set's members come from endpoints' labels.
    config: CalcConfig
    addresses: AddressRouting = field(compare=False)  # what it says, not how it is indexed
    endpoint_sets: bool = False


def calculate(state: ClusterState, local_node: str, config: CalcConfig) -> Calculation:
    routing = plan_routes(state, local_node, config)
    rules = plan_rules(
        list(routing.pools), [state.nodes[n] for n in sorted(state.nodes)],
        routing.vxlan, routing.ipip,
        nat_outgoing=config.nat_outgoing, random_fully=config.masquerade_random_fully,
        vxlan_port=config.vxlan_port, external_nodes_cidrs=config.external_nodes_cidrs,
    )
    policy = plan_policy(
        state.policy_state(), local_endpoints(state, local_node),
        vxlan_port=config.vxlan_port, endpoint_to_host_action=config.endpoint_to_host_action,
        memo=state.render_memo)
    input_chains, input_hooks = input_chain(rules.input_rules, policy.input_rules)
    dataplane = DesiredDataplane(
        routes=routing.routes, neighbors=routing.neighbors, fdb=routing.fdb,
        vxlan=routing.vxlan, ipip=routing.ipip,
        ipsets=rules.ipsets | policy.ipsets,
        chains=rules.chains | policy.chains | input_chains,
        hooks=rules.hooks | policy.hooks | input_hooks,
        workload_interfaces=routing.workload_interfaces,
    )
    problems = sorted(set(routing.problems) | set(state.problems))
    learned = LearnedContext.of(state.nodes.get(local_node), routing.local_blocks,
                                routing.pools, config)
    return Calculation(dataplane=dataplane, problems=tuple(problems), learned_context=learned,
                       config=config, addresses=routing.addresses,
                       endpoint_sets=bool(policy.ipsets))


def unchanged_by(previous: Calculation, changes: StateChanges, state: ClusterState,
                 local_node: str, config: CalcConfig) -> bool:
    """Whether calculate(state, local_node, config) would return `previous` again after
    `changes` (ClusterState.take_changes() since `previous` was calculated). True only
    when the config is the same, no problem came or went, and the changes are:
      * workload endpoints of other nodes (or of none) whose addresses need no route of
        their own here (AddressRouting.needs_route: inside their node's block, or in a
        pool BGP routes), while no IP set is built from endpoints (policy);
      * blocks whose CIDR, named node and allocations of nodes other than their owner
        and this node are the same: a block's own node allocating in it changes no
        route anywhere but on that node."""
    if changes.overflow or changes.problems or config != previous.config:
        return False
    if not changes.facets <= {Facet.WORKLOADS, Facet.BLOCKS}:
        return False
    for pair in changes.workloads.values():
        for workload in pair:
            if workload is None:
                continue
            if workload.node == local_node or previous.endpoint_sets:
                return False
            if workload.node is not None and any(
                    previous.addresses.needs_route(address, workload.node)
                    for address in workload.ipv4):
                return False
    for old, new in changes.blocks.values():
        if old is None or new is None or \
                (old.cidr, old.affinity_node) != (new.cidr, new.affinity_node):
            return False
        # The owner is the one `previous` saw: affinities have not changed (a facet).
        owner = state.owner_of(new)
        if routed_allocations(old, owner, local_node) != \
                routed_allocations(new, owner, local_node):
            return False
    return True


def local_endpoints(state: ClusterState, local_node: str) -> list[LocalEndpoint]:
    """This node's workload endpoints with an interface, as policy.render takes them."""
    return [LocalEndpoint(endpoint, w.interface)
            for w in state.workloads_by_node.get(local_node, {}).values()
            if w.interface and (endpoint := state.policy_endpoint(w)) is not None]


def desired_dataplane(state: ClusterState, local_node: str, config: CalcConfig) -> DesiredDataplane:
    """The desired dataplane of `local_node` (agent/calc/routes.py, rules.py and policy.py)."""
    return calculate(state, local_node, config).dataplane
