"""The whole calculation: cluster state + local node + config -> DesiredDataplane. Pure.

`calculate` is a function of its arguments only (no I/O, clock or logging):
the agent calls it after every batch of syncer updates and hands the result
to the dataplane managers, which apply only differences. Because it is pure,
"a change recomputes exactly what depends on it" holds by construction and is
tested by diffing the results before and after a change.
"""

from __future__ import annotations

from dataclasses import dataclass

from policy.render import LocalEndpoint

from ..types import DesiredDataplane
from .config import CalcConfig
from .learned import LearnedContext
from .policy import plan_policy
from .routes import plan_routes
from .rules import input_chain, plan_rules
from .state import ClusterState


@dataclass(frozen=True)
class Calculation:
    dataplane: DesiredDataplane
    # Why parts of the cluster are not programmed (missing addresses, conflicts,
    # unreadable values), sorted; the agent logs changes to this list.
    problems: tuple[str, ...]
    # What BGP-learned routes depend on (agent/calc/learned.py), for LearnedRoutes.
    learned_context: LearnedContext


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
    return Calculation(dataplane=dataplane, problems=tuple(problems), learned_context=learned)


def local_endpoints(state: ClusterState, local_node: str) -> list[LocalEndpoint]:
    """This node's workload endpoints with an interface, as policy.render takes them."""
    return [LocalEndpoint(endpoint, w.interface)
            for w in state.workloads_by_node.get(local_node, {}).values()
            if w.interface and (endpoint := state.policy_endpoint(w)) is not None]


def desired_dataplane(state: ClusterState, local_node: str, config: CalcConfig) -> DesiredDataplane:
    """The desired dataplane of `local_node` (agent/calc/routes.py, rules.py and policy.py)."""
    return calculate(state, local_node, config).dataplane
