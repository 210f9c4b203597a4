"""`ctl ipam show|check|release|configure|assign`: calicoctl's IPAM commands (ipam_command.go).

Thin: parse and validate arguments (bad input -> CtlFailure naming the value,
before anything is written), call `ipam`, print. Tables use calicoctl v3.32's
tablewriter look (+---+ borders, centred upper-case headers, numbers right-
aligned, `%.5g`). `assign` and `release --handle` are tortie additions, to
exercise allocation from outside. tortie has no datastore lock: `release
--from-report` is made safe by the sequence-number, handle and revision
guards in the report; `--force` is accepted for calicoctl compatibility.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import click

from datastore.errors import ValidationError
from datastore.resources import IPPool
from ipam.allocator import Allocator
from ipam.block import Block
from ipam.check import (
    ReportError,
    default_sources,
    leaked_allocations,
    list_blocks,
    load_snapshot,
    parse_report,
    release_from_report,
    run_check,
)
from ipam.config import read_config, update_config
from ipam.errors import IPAMError
from ipam.pools import USES, WORKLOAD

from .common import CtlFailure
from .tablewriter import render_table
from .version import client_version

MAX_ASSIGN = 65536


def _g(value: float) -> str:
    return f"{float(value):.5g}"


def _usage(used: float, total: float) -> str:
    percent = 100 * used / total if total else 0.0
    return f"{float(used):.5g} ({percent:.0f}%)"


# -- argument parsing ------------------------------------------------------------------------


def _parse_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise CtlFailure(f"invalid IP address '{text}'") from None


def _parse_bool(flag: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "false"):
        return value == "true"
    raise CtlFailure(f"invalid value for {flag}: '{text}' (expected true or false)")


def _parse_count(flag: str, text: str, low: int, high: int) -> int:
    if not re.fullmatch(r"\s*\d+\s*", text):
        raise CtlFailure(f"invalid value for {flag}: '{text}' (expected a whole number)")
    value = int(text)
    if not low <= value <= high:
        raise CtlFailure(f"invalid value for {flag}: '{text}' (must be between {low} and {high})")
    return value


def _parse_name(flag: str, text: str) -> str:
    if not text or "/" in text or text != text.strip() or any(ord(c) < 33 for c in text):
        raise CtlFailure(f"invalid value for {flag}: '{text}' (must be non-empty, without "
                         "'/', spaces or control characters)")
    return text


def _parse_attrs(items: Sequence[str]) -> dict[str, str]:
    attrs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CtlFailure(f"invalid value for --attr: '{item}' (expected key=value)")
        attrs[key.strip()] = value
    return attrs


def go_time(moment: datetime) -> str:
    """Go's time.Now().UTC().String(), as Calico's CNI stores `timestamp`."""
    moment = moment.astimezone(UTC)
    frac = f"{moment.microsecond:06d}".rstrip("0")
    return moment.strftime("%Y-%m-%d %H:%M:%S") + (f".{frac}" if frac else "") + " +0000 UTC"


def _ipam_failure(exc: Exception) -> CtlFailure:
    return CtlFailure(str(exc))


# -- commands --------------------------------------------------------------------------------


def register(cli: click.Group) -> None:
    cli.add_command(ipam)


@click.group()
def ipam() -> None:
    """IP address management: show, check, release, configure, assign."""


@ipam.command()
@click.option("--ip", "ip_text", default=None, metavar="IP", help="Show who holds this address.")
@click.option("--show-blocks", is_flag=True, help="Show each block after its pool.")
@click.option("--show-borrowed", is_flag=True, help="Show addresses borrowed from other nodes.")
@click.option("--show-configuration", is_flag=True, help="Show the IPAM configuration.")
@click.pass_obj
def show(obj, ip_text: str | None, show_blocks: bool, show_borrowed: bool,
         show_configuration: bool) -> None:
    """Show pools' usage, blocks, one address, borrowed addresses or the configuration."""
    chosen = sum(bool(x) for x in (ip_text is not None, show_blocks, show_borrowed,
                                   show_configuration))
    if chosen > 1:
        raise CtlFailure("choose at most one of --ip, --show-blocks, --show-borrowed and "
                         "--show-configuration")
    if ip_text is not None:
        ip = _parse_ip(ip_text)
        try:
            found = Allocator(obj.client).get_assignment(ip)
        except IPAMError as exc:
            raise _ipam_failure(exc) from None
        if found is None:
            click.echo(f"{ip} is not assigned")
            return
        lines = [f"IP {ip} is in use", f"Handle ID: {found.handle_id or '<none>'}",
                 "Active Owner Attributes:"]
        lines += [f"  {k}: {found.attributes[k]}" for k in sorted(found.attributes)]
        click.echo("\n".join(lines))
        return
    if show_configuration:
        spec, _ = read_config(obj.client)
        click.echo(render_table(["PROPERTY", "VALUE"], [
            ["StrictAffinity", "true" if spec.strictAffinity else "false"],
            ["AutoAllocateBlocks", "true" if spec.autoAllocateBlocks else "false"],
            ["MaxBlocksPerHost", str(spec.maxBlocksPerHost)],
        ]), nl=False)
        return
    blocks = [b for version in (4, 6) for b in list_blocks(obj.client, version)]
    if show_borrowed:
        click.echo(render_table(
            ["IP", "BORROWING-NODE", "BLOCK", "BLOCK OWNER", "TYPE", "ALLOCATED-TO"],
            _borrowed_rows(blocks)), nl=False)
        return
    pools = sorted(obj.store.list(IPPool),
                   key=lambda p: (p.spec.network.version, int(p.spec.network.network_address)))
    click.echo(render_table(["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"],
                            _usage_rows(pools, blocks, show_blocks)), nl=False)


def _usage_rows(pools: list[IPPool], blocks: list, with_blocks: bool) -> list[list[str]]:
    rows: list[list[str]] = []
    placed: set[str] = set()

    def block_row(block: Block) -> list[str]:
        used = block.in_use
        return ["Block", block.cidr, _g(block.size), _usage(used, block.size),
                _usage(block.size - used, block.size)]

    for pool in pools:
        net = pool.spec.network
        inside = [e for e in blocks if e.block is not None
                  and e.block.network.version == net.version
                  and e.block.network.subnet_of(net)]
        used = sum(e.block.in_use for e in inside)
        total = net.num_addresses
        rows.append(["IP Pool", pool.spec.cidr, _g(total), _usage(used, total),
                     _usage(total - used, total)])
        if with_blocks:
            rows += [block_row(e.block) for e in inside]
        placed.update(e.cidr for e in inside)
    if with_blocks:  # orphan blocks (no pool holds them): no pool row
        rows += [block_row(e.block) for e in blocks if e.block is not None and e.cidr not in placed]
    return rows


def _borrowed_rows(blocks: list) -> list[list[str]]:
    rows = []
    for entry in blocks:
        block = entry.block
        if block is None:
            continue
        for ordinal, attr in block.allocated():
            attrs = dict(attr.secondary) if attr else {}
            node = attrs.get("node", "")
            if not node or node == block.host:
                continue
            if attrs.get("pod"):
                kind = attrs.get("type") or "pod"
                to = f"{attrs.get('namespace', '')}/{attrs['pod']}"
            else:
                kind = attrs.get("type", "")
                to = (attr.handle_id if attr and attr.handle_id else "") or node
            rows.append([block.ip_of(ordinal), node, block.cidr, block.host or "", kind, to])
    return rows


@ipam.command()
@click.option("-o", "--output", "output", default=None, metavar="FILE",
              help="Write a machine-readable report to FILE.")
@click.option("--show-all-ips", is_flag=True, help="Print every IP that is checked.")
@click.option("--show-problem-ips", is_flag=True, help="Print every IP with a problem.")
@click.pass_obj
def check(obj, output: str | None, show_all_ips: bool, show_problem_ips: bool) -> None:
    """Check IPAM for leaks and inconsistencies."""
    if output is not None:
        target = Path(output)
        if output == "" or target.is_dir() or not target.parent.exists():
            raise CtlFailure(f"cannot write report to '{output}': no such directory or a directory")
    sources = default_sources()
    snapshot = load_snapshot(obj.client, sources)
    result = run_check(snapshot, sources, show_all_ips=show_all_ips,
                       show_problem_ips=show_problem_ips, version=client_version())
    click.echo("\n".join(result.lines))
    if output is not None:
        try:
            Path(output).write_text(json.dumps(result.report, indent=2) + "\n")
        except OSError as exc:
            raise CtlFailure(f"cannot write report to '{output}': {exc.strerror}") from None


@ipam.command()
@click.option("--ip", "ip_text", default=None, metavar="IP", help="Release this address.")
@click.option("--from-report", "report_path", default=None, metavar="FILE",
              help="Release the leaks an `ipam check -o FILE` report found.")
@click.option("--handle", "handle", default=None, metavar="HANDLE",
              help="Release every address of a handle (tortie addition).")
@click.option("--force", is_flag=True,
              help="Accepted for calicoctl compatibility; tortie needs no datastore lock.")
@click.pass_obj
def release(obj, ip_text: str | None, report_path: str | None, handle: str | None,
            force: bool) -> None:
    """Release an address, a handle's addresses, or the leaks found by `ipam check`."""
    del force  # the report's guards make releasing safe without a lock
    if sum(x is not None for x in (ip_text, report_path, handle)) != 1:
        raise CtlFailure("give exactly one of --ip, --from-report and --handle")
    allocator = Allocator(obj.client)
    try:
        if ip_text is not None:
            ip = _parse_ip(ip_text)
            result = allocator.release_ips([ip])
            if ip not in result.released:
                raise CtlFailure(f"IP address {ip} is not assigned")
            click.echo(f"Successfully released IP address {ip}")
        elif handle is not None:
            _parse_name("--handle", handle)
            released = allocator.release_by_handle(handle)
            for ip in released:
                click.echo(ip)
            click.echo(f"Released {len(released)} IPs of handle {handle}")
        else:
            assert report_path is not None
            _release_report(allocator, report_path)
    except IPAMError as exc:
        raise _ipam_failure(exc) from None


def _release_report(allocator: Allocator, path: str) -> None:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CtlFailure(f"cannot read report '{path}': {exc.strerror}") from None
    try:
        report = parse_report(text)
        count = len(leaked_allocations(report))
    except (ReportError, ValueError, TypeError, AttributeError) as exc:
        raise CtlFailure(f"invalid report '{path}': {exc}") from None
    click.echo(f"Releasing {count} old IPs...")
    result = release_from_report(allocator, report)
    for ip, why in sorted(result.skipped.items()):
        click.echo(f"  Kept {ip}: {why}")
    click.echo(f"Released {len(result.released)} IPs successfully")
    if result.handles_deleted:
        click.echo(f"Deleted {result.handles_deleted} handles with no IPs.")
    if result.handles_repaired:
        click.echo(f"Repaired {result.handles_repaired} handles.")
    if result.affinities_repaired:
        click.echo(f"Repaired {result.affinities_repaired} block affinities.")
    for note in result.repairs_skipped:
        click.echo(f"  Skipped: {note}")


@ipam.command()
@click.option("--strictaffinity", "strict_text", required=True, metavar="true|false",
              help="Allow borrowing (false) or not (true).")
@click.option("--max-blocks-per-host", "max_text", default=None, metavar="N",
              help="Blocks a node may claim (0 = 20); needs strict affinity when above 0.")
@click.pass_obj
def configure(obj, strict_text: str, max_text: str | None) -> None:
    """Change the IPAM configuration."""
    strict = _parse_bool("--strictaffinity", strict_text)
    max_blocks = None if max_text is None else _parse_count(
        "--max-blocks-per-host", max_text, 0, 1 << 31)
    try:
        spec = update_config(obj.client, strict_affinity=strict, max_blocks_per_host=max_blocks)
    except ValidationError as exc:
        raise CtlFailure(f"invalid IPAM configuration: {exc}") from None
    except IPAMError as exc:
        raise _ipam_failure(exc) from None
    click.echo(f"Successfully set StrictAffinity to: {'true' if spec.strictAffinity else 'false'}")
    if max_blocks is not None:
        click.echo(f"Successfully set MaxBlocksPerHost to: {spec.maxBlocksPerHost}")


@ipam.command()
@click.option("--node", "node", required=True, metavar="NODE", help="Node the addresses are for.")
@click.option("--handle", "handle", required=True, metavar="HANDLE", help="Handle to hold them.")
@click.option("--num", "num_text", default="1", metavar="K", help="How many (default 1).")
@click.option("--ip", "ip_text", default=None, metavar="IP", help="Assign exactly this address.")
@click.option("--use", "use", default=WORKLOAD, metavar="|".join(USES),
              help="Intended use (default Workload).")
@click.option("--attr", "attr_items", multiple=True, metavar="KEY=VALUE",
              help="An extra allocation attribute (repeatable), e.g. pod=web-1.")
@click.pass_obj
def assign(obj, node: str, handle: str, num_text: str, ip_text: str | None, use: str,
           attr_items: tuple[str, ...]) -> None:
    """Assign addresses to a handle (tortie addition), printing one per line."""
    _parse_name("--node", node)
    _parse_name("--handle", handle)
    if use not in USES:
        raise CtlFailure(f"invalid value for --use: '{use}' (expected {' or '.join(USES)})")
    num = _parse_count("--num", num_text, 1, MAX_ASSIGN)
    ip = _parse_ip(ip_text) if ip_text is not None else None
    if ip is not None and num != 1:
        raise CtlFailure("--ip assigns one address; do not combine it with --num")
    attrs = {"node": node, "timestamp": go_time(datetime.now(UTC)), **_parse_attrs(attr_items)}
    allocator = Allocator(obj.client)
    try:
        if ip is not None:
            ips = [allocator.assign_ip(ip, node, handle, attrs, use)]
        else:
            ips = allocator.auto_assign(node, handle, num, attrs, use)
    except IPAMError as exc:
        raise _ipam_failure(exc) from None
    for assigned in ips:
        click.echo(assigned)
