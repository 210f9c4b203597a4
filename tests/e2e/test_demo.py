"""The README's demo command, end to end: 3 nodes across 2 subnets, agents with BGP, pods
through the CNI plugin, the status tables, a full ping matrix, then a default-deny policy
plus one allow, a second matrix as the policies say, `ctl explain` of a denied and an
allowed cell, and nothing left behind."""

from __future__ import annotations

import re
import subprocess

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.root]


def test_demo_shows_bgp_pools_blocks_and_a_full_ping_matrix(lab_cli, lab_names, snapshot):
    before = snapshot()
    name = lab_names()
    res = subprocess.run([lab_cli, "demo", "--name", name], capture_output=True, text=True,
                         timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    out = res.stdout
    assert "tortie process is running." in out
    mesh = [line for line in out.splitlines() if "| node-to-node mesh | up " in line]
    assert len(mesh) == 2 and all("Established" in line for line in mesh), out
    rows = [line.split() for line in out.splitlines()]
    assert ["default-ipv4-ippool", "10.244.0.0/16", "true", "Never", "CrossSubnet", "false",
            "false", "all()", "Automatic"] in rows
    blocks = re.findall(r"^\| Block +\| (10\.244\.\S+/26) ", out, re.M)
    assert len(blocks) == 3, out  # one block per node: 2 pods and the VXLAN tunnel address
    assert "ping matrix: 30/30 ok" in out.splitlines()
    assert "FAIL" not in out
    # Then policy: default-deny ingress plus frontends -> backends (3 x 3 pairs allowed).
    assert "Successfully applied 2 'NetworkPolicy' resource(s)" in out
    assert "ping matrix with policy: 9 allowed, 21 denied, as expected" in out.splitlines()
    assert "denied!" not in out and "ok!" not in out
    assert re.search(r"^DENIED: ICMP type 8 from default/node1-pod2 .* to default/node2-pod2",
                     out, re.M), out
    assert "end of tier default: no policy allowed or passed it (defaultAction Deny)" in out
    assert re.search(r"^ALLOWED: ICMP type 8 from default/node1-pod1 ", out, re.M), out
    assert snapshot() == before


def test_demo_keep_leaves_a_usable_lab(lab_cli, lab_names):
    name = lab_names()  # the fixture tears it down afterwards
    res = subprocess.run([lab_cli, "demo", "--name", name, "--keep"], capture_output=True,
                         text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    got = subprocess.run([lab_cli, "ctl", "--name", name, "get", "ippool"], capture_output=True,
                         text=True, timeout=60)
    assert got.returncode == 0 and "default-ipv4-ippool" in got.stdout
