"""agent.calc: the pure calculation from cluster state to the desired dataplane.

    state = ClusterState()
    state.apply(updates)                 # syncer Updates, in order
    state.set_learned_routes(best_paths) # from the BGP RIB
    dp = desired_dataplane(state, "node1", CalcConfig(host_mtu=1500, parent_interface="eth0"))

Modules: state (the index of the cluster), routes (routes, devices,
neighbours, FDB), rules (natOutgoing and encapsulation INPUT chains, hooks,
ipsets), desired (puts them together), vtep (VTEP MACs), prefixes (prefix
lookup), config (CalcConfig).
"""

from .config import CalcConfig
from .desired import Calculation, calculate, desired_dataplane
from .state import ClusterState, Facet, LearnedRoute
from .vtep import derived_vtep_mac

__all__ = [
    "CalcConfig", "Calculation", "ClusterState", "Facet", "LearnedRoute", "calculate",
    "derived_vtep_mac", "desired_dataplane",
]
