"""`tortie-lab`: bring a lab up, inspect it, run commands in it, tear it down.

Owns: the command line only; all building is lab.cluster.Lab. Errors become
one line on stderr and exit code 1. `exec` and `ctl` replace this process with
the command (`ip netns exec`), so its exit code and signals pass straight through.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import click

from lab import netns, state
from lab.bgp_cluster import start_bgp_cluster
from lab.cluster import Lab, teardown
from lab.errors import LabError, LabNotFound
from lab.topology import DEFAULT_NAME

log = logging.getLogger("lab")

PASS_THROUGH = {"ignore_unknown_options": True, "allow_interspersed_args": False}

name_option = click.option(
    "--name", "-n", default=DEFAULT_NAME, show_default=True, envvar="TORTIE_LAB",
    help="Lab name (lowercase letters and digits); also $TORTIE_LAB.",
)


def _fail(err: Exception) -> NoReturn:
    click.echo(f"tortie-lab: error: {err}", err=True)
    sys.exit(1)


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    # SystemExit unwinds through Lab.up's cleanup, so a killed `up` leaves nothing.
    sys.exit(128 + signum)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
def main(verbose: int) -> None:
    """A cluster of network namespaces on this machine: router, etcd and nodes."""
    logging.basicConfig(
        level=logging.DEBUG if verbose > 1 else logging.INFO,
        format="tortie-lab: %(message)s" if not verbose else "%(asctime)s %(name)s %(message)s",
        stream=sys.stderr,
    )


@main.command()
@name_option
@click.option("--nodes", type=click.IntRange(1), default=3, show_default=True)
@click.option("--subnets", type=click.IntRange(1), default=2, show_default=True,
              help="Node subnets (one bridge each), routed by the router namespace.")
@click.option("--etcd-members", type=click.Choice(["1", "3"]), default="1", show_default=True)
@click.option("--underlay", metavar="CIDR",
              help="IPv4 network the /24 node subnets are carved from, e.g. 10.77.0.0/16 "
                   "(default: derived from the name, avoiding other labs).")
@click.option("--agents", is_flag=True,
              help="Also run tortie-agent (and its ExaBGP) on every node, with a pool "
                   "without encapsulation whose blocks are routed over BGP.")
@click.option("--route-reflectors", type=click.IntRange(0), default=0, show_default=True,
              help="With --agents: the first N nodes are route reflectors and the "
                   "node-to-node mesh is off (0: full mesh).")
def up(name: str, nodes: int, subnets: int, etcd_members: str, underlay: str | None,
       agents: bool, route_reflectors: int) -> None:
    """Build the lab (tearing down leftovers of an earlier run of the same name first)."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    if route_reflectors and not agents:
        _fail(LabError(f"--route-reflectors {route_reflectors} needs --agents"))
    if route_reflectors > nodes:
        _fail(LabError(f"--route-reflectors {route_reflectors}: more than --nodes {nodes}"))
    try:
        lab = Lab(name, nodes=nodes, subnets=subnets, etcd_members=int(etcd_members),
                  underlay=underlay).up()
    except LabError as e:
        _fail(e)
    if agents:
        try:
            reflectors = start_bgp_cluster(lab, route_reflectors)
        except BaseException as e:
            # Like a failed up: nothing of the lab stays behind.
            lab.down()
            if isinstance(e, Exception):
                _fail(LabError(f"lab {name}: starting the agents failed: {e}; the lab was "
                               "removed"))
            raise
        log.info("lab %s: agents ready on %d nodes, %s", name, nodes,
                 f"route reflectors {', '.join(reflectors)}" if reflectors else "full mesh")
    _print_status(lab, lab.status())


@main.command()
@name_option
def down(name: str) -> None:
    """Remove the lab: processes, namespaces, interfaces, state, and the chart's pods,
    secrets and volumes in podman's storage. Quiet if it is not there."""
    try:
        teardown(name)
    except LabError as e:
        _fail(e)


@main.command()
@name_option
def status(name: str) -> None:
    """Show namespaces, addresses, processes and etcd health. Exit 1 unless all healthy."""
    try:
        lab = Lab.load(name)
        st = lab.status()
    except LabNotFound as e:
        leftovers = [ns for ns in netns.list_netns() if ns.startswith(f"{name}-")]
        if leftovers:
            e = LabNotFound(f"{e}; leftover namespaces: {' '.join(leftovers)} "
                            f"(`tortie-lab down --name {name}` removes them)")
        _fail(e)
    except LabError as e:
        _fail(e)
    _print_status(lab, st)
    sys.exit(0 if st["healthy"] else 1)


@main.command(name="list")
def list_() -> None:
    """List the labs that have state on this machine."""
    for name, data in state.all_labs().items():
        plan = data.get("plan", {})
        click.echo(f"{name}\t{data.get('status', '?')}\t{plan.get('underlay', '?')}\t"
                   f"{len(plan.get('nodes', []))} nodes\t{','.join(data.get('etcd_endpoints', []))}")


@main.command(name="exec", context_settings=PASS_THROUGH)
@name_option
@click.argument("node")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(name: str, node: str, cmd: tuple[str, ...]) -> None:
    """Run CMD in NODE's namespace (node1, 2, router, etcd, ...): tortie-lab exec node1 -- ip r

    The exit code is CMD's.
    """
    try:
        ns = Lab.load(name).netns_of(node)
    except LabError as e:
        _fail(e)
    _exec(netns.exec_argv(ns, _strip_dashes(cmd)))


@main.command(context_settings=PASS_THROUGH)
@name_option
@click.option("--node", default="node1", show_default=True, help="Namespace to run ctl in.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def ctl(name: str, node: str, args: tuple[str, ...]) -> None:
    """Run this installation's `ctl` against the lab's etcd, from inside a node namespace.

    ETCD_ENDPOINTS is set to the lab's endpoints. Use `--` before ctl's own
    options when they come first: tortie-lab ctl -- --help
    """
    # The ctl script of the same virtualenv (not whatever `ctl` PATH finds).
    script = Path(sys.executable).parent / "ctl"
    if not script.exists():
        _fail(LabError(f"no ctl script next to {sys.executable}; is tortie installed there?"))
    try:
        lab = Lab.load(name)
        ns = lab.netns_of(node)
    except LabError as e:
        _fail(e)
    _exec(netns.exec_argv(ns, [str(script), *_strip_dashes(args)]),
          {"ETCD_ENDPOINTS": ",".join(lab.etcd_endpoints)})


@main.command()
@click.option("--name", "-n", default="demo", show_default=True, envvar="TORTIE_LAB",
              help="Lab name for the demo.")
@click.option("--nodes", type=click.IntRange(1), default=3, show_default=True)
@click.option("--keep", is_flag=True, help="Leave the lab running afterwards.")
@click.option("--chart", is_flag=True,
              help="Deploy tortie with the Helm chart under podman (the image, one pod per "
                   "node), then a rolling update; docs/lab.md, The chart in the lab.")
def demo(name: str, nodes: int, keep: bool, chart: bool) -> None:
    """The README's demo: bring up a lab, apply an IP pool with ctl, show it."""
    try:
        if chart:
            from lab.chart_demo import run_chart_demo

            shortfalls = run_chart_demo(name, nodes=nodes, keep=keep).shortfalls()
            if shortfalls:
                _fail(LabError(f"the chart demo did not prove: {'; '.join(shortfalls)}"))
        else:
            from lab.demo import run_demo

            run_demo(name, nodes=nodes, keep=keep)
    except LabError as e:
        _fail(e)


@main.group()
def pod() -> None:
    """Pods made through the CNI plugin (lab/pods.py): add, del, list, label."""


@pod.command(name="add")
@name_option
@click.option("--node", default="node1", show_default=True)
@click.option("--namespace", default="default", show_default=True)
@click.option("--port", "ports", multiple=True, metavar="HOST:POD[/PROTO]",
              help="Map a host port to the pod through portmap (repeatable).")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
              help="A label of the pod, on its WorkloadEndpoint (repeatable).")
@click.option("--named-port", "named_ports", multiple=True, metavar="NAME:PROTO/PORT",
              help="A named container port, e.g. http:TCP/80 (repeatable).")
@click.option("--service-account", default=None, metavar="SA",
              help="The pod's service account (label and ksa.<ns>.<sa> profile).")
@click.argument("pod_name")
def pod_add(name: str, node: str, namespace: str, ports: tuple[str, ...], labels: tuple[str, ...],
            named_ports: tuple[str, ...], service_account: str | None, pod_name: str) -> None:
    """Create pod POD_NAME on a node: its namespace, then the conflist's ADD."""
    from lab import pods

    try:
        pod_labels = dict(pods.parse_label(text) for text in labels)
        pod_ports = [pods.parse_named_port(text) for text in named_ports]
    except LabError as e:
        _fail(e)
    mappings = []
    for spec in ports:
        try:
            hp, rest = spec.split(":", 1)
            cp, _, proto = rest.partition("/")
            mappings.append({"hostPort": int(hp), "containerPort": int(cp),
                             "protocol": proto or "tcp"})
        except ValueError:
            _fail(LabError(f"--port {spec!r} is not HOST:POD[/PROTO], e.g. 8080:80/tcp"))
    try:
        info = pods.add_pod(Lab.load(name), node, namespace, pod_name, port_mappings=mappings,
                            labels=pod_labels, named_ports=pod_ports,
                            service_account=service_account)
    except LabError as e:
        _fail(e)
    click.echo(f"{info.namespace}/{info.name}\t{info.node}\t{info.ip}\t{info.iface}\t"
               f"{info.netns}")


@pod.command(name="label")
@name_option
@click.option("--namespace", default="default", show_default=True)
@click.option("--remove", "remove", multiple=True, metavar="KEY",
              help="Remove this label (repeatable); removals happen first.")
@click.argument("pod_name")
@click.argument("labels", nargs=-1, metavar="KEY=VALUE...")
def pod_label(name: str, namespace: str, remove: tuple[str, ...], pod_name: str,
              labels: tuple[str, ...]) -> None:
    """Set (overwriting) and remove labels of POD_NAME's WorkloadEndpoint, through ctl label."""
    from lab import pods

    if not labels and not remove:
        _fail(LabError("give KEY=VALUE labels to set and/or --remove KEY"))
    try:
        wanted = dict(pods.parse_label(text) for text in labels)
        for line in pods.label_pod(Lab.load(name), namespace, pod_name, wanted, remove):
            click.echo(line)
    except LabError as e:
        _fail(e)


@pod.command(name="del")
@name_option
@click.option("--namespace", default="default", show_default=True)
@click.argument("pod_name")
def pod_del(name: str, namespace: str, pod_name: str) -> None:
    """Delete pod POD_NAME: the conflist's DEL, then its namespace. Quiet if absent."""
    from lab import pods

    try:
        pods.delete_pod(Lab.load(name), pod_name, namespace)
    except LabError as e:
        _fail(e)


@pod.command(name="list")
@name_option
def pod_list(name: str) -> None:
    """List the lab's pods: namespace/name, node, address, host interface, netns."""
    from lab import pods

    try:
        found = pods.list_pods(Lab.load(name))
    except LabError as e:
        _fail(e)
    for info in found:
        click.echo(f"{info.namespace}/{info.name}\t{info.node}\t{info.ip}\t{info.iface}\t"
                   f"{info.netns}")


def _strip_dashes(args: tuple[str, ...]) -> list[str]:
    # Options stop at the first positional argument, so click hands a `--`
    # written after NODE through with the command; it is ours, not the command's.
    return list(args[1:] if args[:1] == ("--",) else args)


def _exec(argv: list[str], env: dict[str, str] | None = None) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(argv[0], argv, {**os.environ, **(env or {})})
    except OSError as e:
        _fail(LabError(f"cannot run {argv[0]}: {e}"))


def _print_status(lab: Lab, st: dict[str, Any]) -> None:
    ns_ok = st["namespaces"]

    def mark(ns: str) -> str:
        return "" if ns_ok.get(ns) else "  MISSING"

    click.echo(f"lab {lab.name}: {st['status']}{'' if st['healthy'] else ' (unhealthy)'}, "
               f"underlay {st['underlay']}, created {st['created']}")
    gws = " ".join(f"{s.gateway}/24" for s in lab.subnets)
    click.echo(f"  {'router':<8} {lab.router_netns:<20} {gws}{mark(lab.router_netns)}")
    procs = {p["name"]: p for p in st["processes"] if p["role"] == "etcd"}
    for e in lab.etcd:
        p = procs.get(e.name)
        run = f"pid {p['pid']} {'running' if p['alive'] else 'STOPPED'}" if p else "no process"
        health = "healthy" if st["etcd_health"].get(e.client_url) else "UNHEALTHY"
        click.echo(f"  {e.name:<8} {e.netns:<20} {e.ip}/{e.prefix:<6} {run}, {health}"
                   f"{mark(e.netns)}")
    for n in lab.nodes:
        click.echo(f"  {n.name:<8} {n.netns:<20} {n.cidr:<16} via {n.gateway} "
                   f"({lab.subnets[n.subnet].cidr}){mark(n.netns)}")
    others = [p for p in st["processes"] if p["role"] != "etcd"]
    for p in others:
        click.echo(f"  {p['name']:<8} {p['netns']:<20} pid {p['pid']} "
                   f"{'running' if p['alive'] else 'STOPPED'}")
    click.echo(f"ETCD_ENDPOINTS={','.join(lab.etcd_endpoints)}")
