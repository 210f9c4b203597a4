"""Output formats for `ctl get`: ps tables, wide, custom-columns, yaml, json.

The ps format reproduces calicoctl's `tabwriter.NewWriter(out, 5, 1, 3, ' ', 0)`:
every cell (the last one too) is padded to the column width plus 3 spaces,
minimum 5, and a blank line follows the table. Rendering is pure: functions
take resources and return text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import yaml

from datastore.resources import (
    DEFAULT_AS_NUMBER,
    BGPConfiguration,
    BGPPeer,
    GlobalNetworkPolicy,
    GlobalNetworkSet,
    IPAMConfiguration,
    IPPool,
    NetworkPolicy,
    NetworkSet,
    Node,
    Profile,
    Resource,
    Tier,
    WorkloadEndpoint,
)
from datastore.resources.policy import go_float


@dataclass(frozen=True)
class PrintContext:
    """Cluster facts some columns need (a Node's inherited AS number)."""

    global_asn: int | None = None  # BGPConfiguration default's asNumber, if any
    have_bgp_config: bool = False
    print_namespace: bool = False  # -A or -n given: namespaced kinds get a NAMESPACE column


Column = Callable[[Resource, PrintContext], str]


def _b(v: bool | None) -> str:
    return "true" if v else "false"


def _dash(v: object) -> str:
    return "-" if v is None or v == "" else str(v)


def _node_asn(r: Resource, ctx: PrintContext) -> str:
    assert isinstance(r, Node)
    if r.as_number is not None:
        return str(r.as_number)
    if not r.ipv4_address and not r.ipv6_address:
        return ""
    if ctx.have_bgp_config:
        return f"({ctx.global_asn or DEFAULT_AS_NUMBER})"
    return str(DEFAULT_AS_NUMBER)


def _peer_node(r: Resource, _: PrintContext) -> str:
    assert isinstance(r, BGPPeer)
    return r.spec.node or r.spec.nodeSelector or "(global)"


def _peer_ip(r: Resource, _: PrintContext) -> str:
    assert isinstance(r, BGPPeer)
    return r.spec.peerIP or (f"selector:{r.spec.peerSelector}" if r.spec.peerSelector else "")


def join_and_truncate(items: Sequence[str], max_len: int = 80) -> str:
    """calicoctl's joinAndTruncate(items, ",", 80): cut where the text passes max_len."""
    text = ""
    for i, item in enumerate(items):
        text += ("," if i else "") + item
        if len(text) > max_len:
            return text[:max_len - 3] + "..."
    return text


def _labels(labels: dict[str, str] | None) -> str:
    return ",".join(sorted(f"{k}={v}" for k, v in (labels or {}).items()))


_POLICY_COLUMNS: dict[str, Column] = {
    "NAME": lambda r, c: r.name,
    "NAMESPACE": lambda r, c: r.namespace or "",
    "TIER": lambda r, c: r.spec.tier,
    "ORDER": lambda r, c: go_float(r.spec.order),
    "SELECTOR": lambda r, c: r.spec.selector,
}
_NETWORK_SET_COLUMNS: dict[str, Column] = {
    "NAME": lambda r, c: r.name,
    "NAMESPACE": lambda r, c: r.namespace or "",
    "NETS": lambda r, c: join_and_truncate(r.spec.nets),
}

# kind -> (default headings, wide headings, column functions by heading)
COLUMNS: dict[type[Resource], tuple[list[str], list[str], dict[str, Column]]] = {
    IPPool: (
        ["NAME", "CIDR", "SELECTOR"],
        ["NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED", "DISABLEBGPEXPORT", "SELECTOR"],
        {
            "NAME": lambda r, c: r.name,
            "CIDR": lambda r, c: r.spec.cidr,
            "NAT": lambda r, c: _b(r.spec.natOutgoing),
            "IPIPMODE": lambda r, c: r.spec.ipipMode or "Never",
            "VXLANMODE": lambda r, c: r.spec.vxlanMode or "Never",
            "DISABLED": lambda r, c: _b(r.spec.disabled),
            "DISABLEBGPEXPORT": lambda r, c: _b(r.spec.disableBGPExport),
            "SELECTOR": lambda r, c: r.spec.nodeSelector,
            "BLOCKSIZE": lambda r, c: str(r.spec.blockSize),
            "ASSIGNMENTMODE": lambda r, c: r.spec.assignmentMode,
        },
    ),
    Node: (
        ["NAME"],
        ["NAME", "ASN", "IPV4", "IPV6"],
        {
            "NAME": lambda r, c: r.name,
            "ASN": _node_asn,
            "IPV4": lambda r, c: r.ipv4_address or "",
            "IPV6": lambda r, c: r.ipv6_address or "",
        },
    ),
    BGPPeer: (
        ["NAME", "PEERIP", "NODE", "ASN"],
        ["NAME", "PEERIP", "NODE", "ASN"],
        {
            "NAME": lambda r, c: r.name,
            "PEERIP": _peer_ip,
            "NODE": _peer_node,
            "ASN": lambda r, c: "" if r.spec.asNumber is None else str(r.spec.asNumber),
        },
    ),
    BGPConfiguration: (
        ["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"],
        ["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"],
        {
            "NAME": lambda r, c: r.name,
            "LOGSEVERITY": lambda r, c: _dash(r.spec.logSeverityScreen),
            "MESHENABLED": lambda r, c: "-" if r.spec.nodeToNodeMeshEnabled is None
            else _b(r.spec.nodeToNodeMeshEnabled),
            "ASNUMBER": lambda r, c: _dash(r.spec.asNumber),
        },
    ),
    WorkloadEndpoint: (
        ["NAMESPACE", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE"],
        ["NAMESPACE", "NAME", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE", "PROFILES", "NATS"],
        {
            "NAMESPACE": lambda r, c: r.namespace or "",
            "NAME": lambda r, c: r.name,
            # calicoctl shows the pod for Kubernetes endpoints, which leave workload empty.
            "WORKLOAD": lambda r, c: r.spec.workload or r.spec.pod or "",
            "ORCHESTRATOR": lambda r, c: r.spec.orchestrator or "",
            "POD": lambda r, c: r.spec.pod or "",
            "NODE": lambda r, c: r.spec.node or "",
            "NETWORKS": lambda r, c: ",".join(r.spec.ipNetworks or ()),
            "INTERFACE": lambda r, c: r.spec.interfaceName or "",
            "MAC": lambda r, c: r.spec.mac or "",
            "PROFILES": lambda r, c: ",".join(r.spec.profiles or ()),
            "NATS": lambda r, c: ",".join(str(n) for n in r.spec.ipNATs or ()),
        },
    ),
    # calicoctl/calicoctl/resourcemgr/{networkpolicy,globalnetworkpolicy,tier,profile,
    # networkset,globalnetworkset}.go
    NetworkPolicy: (["NAME", "TIER"], ["NAME", "TIER", "ORDER", "SELECTOR"], _POLICY_COLUMNS),
    GlobalNetworkPolicy: (
        ["NAME", "TIER"],
        ["NAME", "TIER", "ORDER", "SELECTOR"],
        {h: f for h, f in _POLICY_COLUMNS.items() if h != "NAMESPACE"},
    ),
    Tier: (
        ["NAME", "ORDER"],
        ["NAME", "ORDER"],
        {
            "NAME": lambda r, c: r.name,
            "ORDER": lambda r, c: go_float(r.spec.order),
            "DEFAULTACTION": lambda r, c: r.spec.defaultAction or "",
        },
    ),
    Profile: (
        ["NAME"],
        ["NAME", "LABELS"],
        {"NAME": lambda r, c: r.name, "LABELS": lambda r, c: _labels(r.spec.labelsToApply)},
    ),
    NetworkSet: (["NAME"], ["NAME", "NETS"], _NETWORK_SET_COLUMNS),
    GlobalNetworkSet: (
        ["NAME"],
        ["NAME", "NETS"],
        {h: f for h, f in _NETWORK_SET_COLUMNS.items() if h != "NAMESPACE"},
    ),
    IPAMConfiguration: (
        ["NAME", "STRICTAFFINITY", "MAXBLOCKSPERHOST"],
        ["NAME", "STRICTAFFINITY", "AUTOALLOCATEBLOCKS", "MAXBLOCKSPERHOST"],
        {
            "NAME": lambda r, c: r.name,
            "STRICTAFFINITY": lambda r, c: _b(r.spec.strictAffinity),
            "AUTOALLOCATEBLOCKS": lambda r, c: _b(r.spec.autoAllocateBlocks),
            "MAXBLOCKSPERHOST": lambda r, c: str(r.spec.effective_max_blocks),
        },
    ),
}


class OutputError(ValueError):
    pass


def listing_order(kind: type[Resource], items: list[Resource]) -> list[Resource]:
    """Items in the order `get` lists them: tiers by order (none last), as calicoctl sorts
    them; everything else in key order, as listed."""
    if kind is Tier:
        def order(r: Resource) -> tuple[bool, float]:
            assert isinstance(r, Tier)
            return (r.spec.order is None, r.spec.order or 0.0)
        return sorted(items, key=order)
    return items


def tabwrite(rows: Sequence[Sequence[str]], minwidth: int = 5, padding: int = 3) -> str:
    """Go's text/tabwriter with calicoctl's settings; every cell is tab-terminated."""
    if not rows:
        return ""
    ncols = max(len(r) for r in rows)
    widths = [
        max(minwidth, max(len(r[i]) for r in rows if i < len(r)) + padding) for i in range(ncols)
    ]
    return "".join("".join(cell.ljust(widths[i]) for i, cell in enumerate(r)) + "\n" for r in rows)


def render_table(kind: type[Resource], items: Sequence[Resource], headings: Sequence[str],
                 ctx: PrintContext) -> str:
    funcs = COLUMNS[kind][2]
    if ctx.print_namespace and "NAMESPACE" in funcs and "NAMESPACE" not in headings:
        headings = ["NAMESPACE", *headings]
    rows = [list(headings)] + [[funcs[h](r, ctx) for h in headings] for r in items]
    return tabwrite(rows) + "\n"


def headings_for(kind: type[Resource], output: str) -> list[str]:
    default, wide, funcs = COLUMNS[kind]
    if output == "ps":
        return default
    if output == "wide":
        return wide
    if output.startswith("custom-columns="):
        wanted = [c.strip().upper() for c in output.split("=", 1)[1].split(",") if c.strip()]
        unknown = [c for c in wanted if c not in funcs]
        if not wanted or unknown:
            raise OutputError(
                f"invalid custom-columns for {kind.kind_name}: {','.join(unknown) or '<empty>'}"
                f" (choose from {','.join(funcs)})"
            )
        return wanted
    raise OutputError(
        f"unrecognized output format '{output}': use ps, wide, yaml, json or custom-columns=A,B"
    )


def as_document(items: Sequence[Resource], kind: type[Resource], single: bool,
                revision: int | None) -> dict:
    if single and len(items) == 1:
        return items[0].dump()
    return {
        "apiVersion": "projectcalico.org/v3",
        "items": [r.dump() for r in items],
        "kind": f"{kind.kind_name}List",
        "metadata": {"resourceVersion": str(revision)} if revision else {},
    }


def render(kind: type[Resource], items: Sequence[Resource], output: str, ctx: PrintContext,
           single: bool = False, revision: int | None = None) -> str:
    if output == "yaml":
        return yaml.safe_dump(as_document(items, kind, single, revision), sort_keys=False)
    if output == "json":
        return json.dumps(as_document(items, kind, single, revision), indent=2) + "\n"
    return render_table(kind, items, headings_for(kind, output), ctx)
