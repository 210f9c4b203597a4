"""The README's demo command, end to end: lab up, pool applied through ctl, shown, torn down."""

from __future__ import annotations

import subprocess

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.root]


def test_demo_prints_pool_and_leaves_nothing(lab_cli, lab_names, snapshot):
    before = snapshot()
    name = lab_names()
    res = subprocess.run([lab_cli, "demo", "--name", name], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "Successfully applied 1 'IPPool' resource(s)" in res.stdout
    rows = [line.split() for line in res.stdout.splitlines()]
    assert ["NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED", "DISABLEBGPEXPORT",
            "SELECTOR"] in rows
    assert ["ippool-ipip-cross-subnet-1", "192.168.0.0/16", "true", "CrossSubnet", "Never",
            "false", "false", "all()"] in rows
    assert snapshot() == before


def test_demo_keep_leaves_a_usable_lab(lab_cli, lab_names):
    name = lab_names()  # the fixture tears it down afterwards
    res = subprocess.run([lab_cli, "demo", "--name", name, "--keep"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    got = subprocess.run([lab_cli, "ctl", "--name", name, "get", "ippool"], capture_output=True,
                         text=True, timeout=60)
    assert got.returncode == 0 and "ippool-ipip-cross-subnet-1" in got.stdout
