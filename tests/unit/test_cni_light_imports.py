"""The CNI plugin's start-up stays light: importing it pulls in none of tortie's heavier
packages, only the modules it shares: the agent's sysctl list (agent.dataplane.workload_sysctls),
the raw netlink client the wiring sends its requests with (agent.dataplane.netlink, with its
errors and namespace helpers) and the label syntax (datastore.names). ctypes and
concurrent.futures, which the namespace helpers use, are imported only when used."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_plugin_imports_only_the_shared_modules_outside_cni():
    probe = ("import sys, cni.plugin, cni.ipam_plugin; print(' '.join(sorted(m for m in "
             "sys.modules if m.split('.')[0] in {'agent', 'datastore', 'ipam', 'bgp', 'ctl', "
             "'pyroute2', 'pydantic', 'grpc', 'etcd3', 'ctypes', 'concurrent'})))")
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                         text=True).stdout.split()
    assert out == ["agent", "agent.dataplane", "agent.dataplane.errors",
                   "agent.dataplane.netlink", "agent.dataplane.netns",
                   "agent.dataplane.workload_sysctls", "datastore", "datastore.names"]
