"""The CNI plugin's start-up stays light: importing it pulls in none of tortie's heavier
packages, only the modules it shares: the agent's sysctl list (agent.dataplane.workload_sysctls)
and the label syntax (datastore.names)."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_plugin_imports_only_the_shared_sysctl_list_outside_cni():
    probe = ("import sys, cni.plugin, cni.ipam_plugin; print(' '.join(sorted(m for m in "
             "sys.modules if m.split('.')[0] in {'agent', 'datastore', 'ipam', 'bgp', 'ctl', "
             "'pyroute2', 'pydantic', 'grpc', 'etcd3'})))")
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                         text=True).stdout.split()
    assert out == ["agent", "agent.dataplane", "agent.dataplane.workload_sysctls", "datastore",
                   "datastore.names"]
