"""agent.calc: the pure calculation from cluster state to the desired dataplane.

    state = ClusterState()
    state.apply(updates)                 # syncer Updates, in order
    config = CalcConfig(host_mtu=1500, parent_interface="eth0")
    calc = calculate(state, "node1", config)
    calc.dataplane                       # the desired dataplane, from the datastore
    state.take_changes()                 # start listing changes from here
    state.apply(more_updates)
    unchanged_by(calc, state.take_changes(), state, "node1", config)  # True: calc still holds

    learned = LearnedRoutes()            # BGP best paths, as deltas
    learned.update({"192.168.50.0/24": ("10.0.0.254", "10.0.0.254")})
    learned.set_context(calc.learned_context)
    learned.changes()                    # {dst: Route | None}, for RouteTable.update_learned

Modules: state (the index of the cluster), routes (routes, devices,
neighbours, FDB), learned (BGP-learned routes, incrementally), rules
(natOutgoing and encapsulation INPUT chains, hooks, ipsets), policy (the
policy engine's filter chains and ipsets from policy.render, as iptables text),
desired (puts them together, and says when a change needs no calculation), vtep
(VTEP MACs), prefixes (prefix lookup), config (CalcConfig).
"""

from .config import CalcConfig
from .desired import Calculation, calculate, desired_dataplane, unchanged_by
from .learned import LearnedContext, LearnedRoutes
from .state import ClusterState, Facet, StateChanges
from .vtep import derived_vtep_mac

__all__ = [
    "CalcConfig", "Calculation", "ClusterState", "Facet", "LearnedContext", "LearnedRoutes",
    "StateChanges", "calculate", "derived_vtep_mac", "desired_dataplane", "unchanged_by",
]
