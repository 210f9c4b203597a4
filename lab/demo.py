"""The README's demo: a lab cluster, an IP pool applied through ctl, the result shown.

Owns nothing lasting: the lab it brings up is torn down at the end (and on any
failure) unless `keep` is set. Later issues extend the demo with agents, BGP
and pods; each step prints what it does so a newcomer can follow along.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from lab.cluster import Lab

EXAMPLE_POOL = """apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: ippool-ipip-cross-subnet-1
spec:
  cidr: 192.168.0.0/16
  ipipMode: CrossSubnet
  natOutgoing: true
"""


def _step(text: str) -> None:
    click.secho(f"==> {text}", bold=True)


def _ctl(lab: Lab, args: list[str], stdin: str | None = None) -> str:
    script = str(Path(sys.executable).with_name("ctl"))
    click.echo(f"$ ctl {' '.join(args)}")
    res = lab.exec("node1", [script, *args], env={"ETCD_ENDPOINTS": ",".join(lab.etcd_endpoints)},
                   input=stdin)
    click.echo(res.stdout, nl=False)
    return res.stdout


def run_demo(name: str, nodes: int = 3, subnets: int = 2, keep: bool = False) -> None:
    lab = Lab(name, nodes=nodes, subnets=subnets)
    _step(f"bringing up lab '{name}': {nodes} nodes across {subnets} subnets, etcd in its own "
          "namespace")
    started = time.monotonic()
    try:
        lab.up()
        click.echo(f"    up in {time.monotonic() - started:.1f}s; etcd at "
                   f"{', '.join(lab.etcd_endpoints)}")
        for n in lab.nodes:
            click.echo(f"    {n.name:<6} {n.cidr:<16} subnet {lab.subnets[n.subnet].cidr}")
        _step("applying the example IP pool from node1 (ctl apply -f -)")
        click.echo(EXAMPLE_POOL.rstrip())
        _ctl(lab, ["apply", "-f", "-"], EXAMPLE_POOL)
        _step("reading it back")
        _ctl(lab, ["get", "ippool", "-o", "wide"])
        if keep:
            _step(f"lab '{name}' left running: tortie-lab ctl --name {name} get ippool; "
                  f"tortie-lab down --name {name}")
            return
    except BaseException:
        lab.down()
        raise
    _step(f"tearing down lab '{name}' (use --keep to leave it running)")
    lab.down()
