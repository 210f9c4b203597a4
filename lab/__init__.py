"""The lab: a cluster of network namespaces on one machine, for the demo and e2e tests.

Modules: topology (names and addresses, pure), cluster (the Lab class: up,
down, exec), state (the state file), netns (iproute2 wrappers), procs
(PID + start-time bookkeeping), etcd (etcd members), routers (BIRD and FRR in lab
namespaces), cli (`tortie-lab`).
See docs/lab.md.
"""

from lab.cluster import Lab, teardown
from lab.errors import CommandFailed, LabError, LabNotFound
from lab.topology import LabEtcd, LabNode, LabSubnet

__all__ = [
    "CommandFailed", "Lab", "LabError", "LabEtcd", "LabNode", "LabNotFound", "LabSubnet", "teardown",
]
