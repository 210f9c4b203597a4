"""`ctl node status`: the BGP sessions of this node, or of every node.

Local status comes from the BGP speaker's control socket in this network
namespace (bgp.control), which is what "on a node" means; `--all` reads the
copies every node publishes to etcd (bgp.daemon.STATUS_PREFIX), which Calico
cannot show. The layout is calicoctl's (tablewriter borders, upper-case
centred headings) with tortie's name.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import click

from bgp.control import DEFAULT_NAME, query_status
from bgp.status import STATUS_PREFIX

from .common import CtlFailure
from .tablewriter import render_table

PROCESS_NAMES = ("tortie-agent", "tortie-bgp")
STALE_AFTER = 60.0  # seconds without a report before --all marks a node stale
HEADINGS = ["Peer address", "Peer type", "State", "Since", "Info"]
WIDE_HEADINGS = ["Prefixes received", "Prefixes sent"]


def format_since(moment: float, now: float) -> str:
    """HH:MM:SS (local time) within a day, else the date, as calicoctl shows BIRD's."""
    fmt = "%H:%M:%S" if now - moment < 86400 else "%Y-%m-%d"
    return time.strftime(fmt, time.localtime(moment))


def peer_cells(peer: dict, now: float, wide: bool) -> list[str]:
    info = peer["info"] + (f" {peer['error']}" if peer.get("error") else "")
    cells = [peer["address"], peer["peer_type"], peer["state"],
             format_since(peer["since"], now), info]
    if wide:
        cells += [str(peer.get("received", 0)), str(peer.get("sent", 0))]
    return cells


def render_local(doc: dict | None, now: float, wide: bool) -> str:
    """The text after "tortie process is running." for this node's status document."""
    if doc is None:
        return "\nThe BGP backend process (ExaBGP) is not running.\n"
    parts = ["", "IPv4 BGP status"]
    peers = doc.get("peers") or []
    if peers:
        headings = HEADINGS + (WIDE_HEADINGS if wide else [])
        # No wrapping: scripts (and the e2e tests) read one row per peer.
        parts.append(render_table(headings, [peer_cells(p, now, wide) for p in peers],
                                  wrap=None).rstrip("\n"))
    else:
        parts.append("No IPv4 peers found.")
    if doc.get("speaker") == "stopped":
        parts.append("ExaBGP is restarting; the sessions above are down meanwhile.")
    if wide and doc.get("routeProblems"):
        parts += ["", "Learned routes not installed:"]
        parts += [f"  {problem}" for problem in doc["routeProblems"]]
    parts += ["", "IPv6 BGP status", "No IPv6 peers found.", ""]
    return "\n".join(parts)


def render_all(docs: Sequence[dict], now: float, wide: bool) -> str:
    """Every node's sessions in one table, with a NODE column, plus stale-report notes."""
    rows, notes = [], []
    for doc in sorted(docs, key=lambda d: d.get("node", "")):
        node = doc.get("node", "?")
        age = now - float(doc.get("time", 0))
        if age > STALE_AFTER:
            notes.append(f"{node}: last report {age:.0f}s ago; its sessions may have changed")
        for p in doc.get("peers") or []:
            rows.append([node, *peer_cells(p, now, wide)])
    if not rows:
        return "No IPv4 peers found on any node.\n"
    headings = ["Node", *HEADINGS, *(WIDE_HEADINGS if wide else [])]
    text = render_table(headings, rows, wrap=None).rstrip("\n")
    return "\n".join(["IPv4 BGP status of every node", text, *notes, ""])


def process_running(names: Sequence[str] = PROCESS_NAMES) -> bool:
    """Is a tortie agent or BGP process running in this network namespace?"""
    try:
        own_ns = os.readlink("/proc/self/ns/net")
    except OSError:
        own_ns = None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if not any(os.path.basename(a.decode(errors="replace")) in names for a in argv[:2]):
                continue
            if own_ns is None or os.readlink(proc / "ns" / "net") == own_ns:
                return True
        except OSError:
            continue
    return False


def register(cli: click.Group) -> None:
    @cli.group()
    def node() -> None:
        """Node commands (BGP status)."""

    @node.command()
    @click.option("--all", "all_nodes", is_flag=True,
                  help="Every node's sessions, from the copies nodes publish to etcd.")
    @click.option("-o", "--output", type=click.Choice(["ps", "wide"]), default="ps",
                  help="wide adds the prefixes received from and sent to each peer.")
    @click.pass_obj
    def status(obj, all_nodes: bool, output: str) -> None:
        """Print the BGP status of this node (or of every node with --all)."""
        wide = output == "wide"
        if all_nodes:
            kvs, _ = obj.client.list(STATUS_PREFIX)
            docs = []
            for kv in kvs:
                try:
                    docs.append(json.loads(kv.value))
                except ValueError:
                    continue
            click.echo(render_all(docs, time.time(), wide), nl=False)
            return
        if os.geteuid() != 0:
            raise CtlFailure("Need super user privileges: Operation not permitted")
        if not process_running():
            raise CtlFailure("tortie process is not running.")
        click.echo("tortie process is running.")
        try:
            doc = query_status(DEFAULT_NAME)
        except (OSError, ValueError):
            doc = None
        click.echo(render_local(doc, time.time(), wide))
