"""Output formats for `ctl get`: ps tables, wide, custom-columns, yaml, json, go-template.

Everything follows calicoctl's printers (calicoctl/calicoctl/commands/common/printer.go,
commands/get_command.go) and each kind's headings and column templates
(calicoctl/calicoctl/resourcemgr/<kind>.go):

* The ps format reproduces `tabwriter.NewWriter(out, 5, 1, 3, ' ', 0)`: every cell
  (the last one too) is padded to the column width plus 3 spaces, minimum 5, and a
  blank line follows the table.
* What is printed is what calicoctl's `get` collects: a listing is one List object
  (one table; `<Kind>List` in yaml/json); named objects are one object each, so
  several names print one table each, and a YAML sequence or JSON array (one name:
  the object itself).
* NAMESPACE leads the table of a namespaced kind only when -n or -A was given, and
  never in custom-columns (calicoctl passes PrintNamespace only to ps and wide).
* go-template and go-template-file execute the user's template once on what `get`
  collected, calicoctl's `[]runtime.Object` (ctl/gotemplate.py, ctl/govalue.py).

Rendering is pure: functions take resources and return text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from datastore.resources import (
    API_VERSION,
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

from .goencode import go_json, go_yaml
from .gotemplate import Template, TemplateError, join_texts
from .gotemplate import parse as parse_template
from .govalue import GoValue, go_type_of, objects, resource_value


@dataclass(frozen=True)
class PrintContext:
    """Cluster facts some columns need (a Node's inherited AS number)."""

    # calicoctl's {{config "asnumber"}}: the default BGPConfiguration's asNumber, 64512
    # without one (or without the configuration), "unknown" when it could not be read.
    default_asn: str = str(DEFAULT_AS_NUMBER)
    print_namespace: bool = False  # -A or -n given: namespaced kinds get a NAMESPACE column
    # The -o go-template(-file) as check_output parsed it, so a template file is read
    # once; None: parsed from the output string when rendered.
    template: Template | None = None


Column = Callable[[Resource, PrintContext], str]


def _b(v: bool | None) -> str:
    return "true" if v else "false"


def _dash(v: object) -> str:
    return "-" if v is None or v == "" else str(v)


def _node_asn(r: Resource, ctx: PrintContext) -> str:
    # {{if .Spec.BGP}}{{if .Spec.BGP.ASNumber}}{{.Spec.BGP.ASNumber}}
    # {{else}}({{config "asnumber"}}){{end}}{{end}}
    assert isinstance(r, Node)
    if r.spec.bgp is None:
        return ""
    if r.as_number:
        return str(r.as_number)
    return f"({ctx.default_asn})"


def _peer_node(r: Resource, _: PrintContext) -> str:
    assert isinstance(r, BGPPeer)
    return r.spec.node or r.spec.nodeSelector or "(global)"


def _peer_ip(r: Resource, _: PrintContext) -> str:
    # {{.Spec.PeerIP}}: empty for a peer given by peerSelector.
    assert isinstance(r, BGPPeer)
    return r.spec.peerIP or ""


def _peer_asn(r: Resource, _: PrintContext) -> str:
    # {{.Spec.ASNumber}} of a (non-pointer) numorstring.ASNumber: 0 when unset.
    assert isinstance(r, BGPPeer)
    return str(int(r.spec.asNumber or 0))


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
    "NETS": lambda r, c: join_texts(r.spec.nets, ",", 80),
}

# kind -> (default headings, wide headings, column functions by heading)
COLUMNS: dict[type[Resource], tuple[list[str], list[str], dict[str, Column]]] = {
    IPPool: (
        ["NAME", "CIDR", "SELECTOR"],
        ["NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED", "DISABLEBGPEXPORT", "SELECTOR",
         "ASSIGNMENTMODE"],
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
            "ASSIGNMENTMODE": lambda r, c: r.spec.assignmentMode or "",
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
            "ASN": _peer_asn,
        },
    ),
    BGPConfiguration: (
        ["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"],
        ["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"],
        {
            "NAME": lambda r, c: r.name,
            # {{.Spec.LogSeverityScreen}}: no dash, unlike the next two columns.
            "LOGSEVERITY": lambda r, c: r.spec.logSeverityScreen or "",
            "MESHENABLED": lambda r, c: "-" if r.spec.nodeToNodeMeshEnabled is None
            else _b(r.spec.nodeToNodeMeshEnabled),
            "ASNUMBER": lambda r, c: _dash(r.spec.asNumber or None),
        },
    ),
    WorkloadEndpoint: (
        ["WORKLOAD", "NODE", "NETWORKS", "INTERFACE"],
        ["NAME", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE", "PROFILES", "NATS"],
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
            # {{join .Spec.IPNATs ","}}: fmt's %v of the (String()-less) IPNAT struct.
            "NATS": lambda r, c: ",".join(f"{{{n.internalIP} {n.externalIP}}}"
                                          for n in r.spec.ipNATs or ()),
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
        ["NAME", "STRICTAFFINITY", "AUTOALLOCATEBLOCKS"],
        ["NAME", "STRICTAFFINITY", "AUTOALLOCATEBLOCKS", "MAXBLOCKSPERHOST"],
        {
            "NAME": lambda r, c: r.name,
            "STRICTAFFINITY": lambda r, c: _b(r.spec.strictAffinity),
            "AUTOALLOCATEBLOCKS": lambda r, c: _b(r.spec.autoAllocateBlocks),
            # {{.Spec.MaxBlocksPerHost}}: the stored value, 0 when no limit is set.
            "MAXBLOCKSPERHOST": lambda r, c: str(r.spec.maxBlocksPerHost),
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
    """One table and the blank line after it (GetTableTemplate + tabwriter)."""
    funcs = COLUMNS[kind][2]
    if ctx.print_namespace and "NAMESPACE" in funcs:
        headings = ["NAMESPACE", *headings]
    rows = [list(headings)] + [[funcs[h](r, ctx) for h in headings] for r in items]
    return tabwrite(rows) + "\n"


def headings_for(kind: type[Resource], output: str) -> list[str]:
    """The headings of -o ps, wide or custom-columns=A,B, with calicoctl's rules and words
    (get_command.go buildResourcePrinter, resourcemgr.go GetTableTemplate).

    Custom column names are split on ',' and looked up as given: exact case, no spaces
    trimmed, so `name` or `NAME, CIDR` is an unknown heading there as in calicoctl."""
    default, wide, funcs = COLUMNS[kind]
    if output == "ps":
        return default
    if output == "wide":
        return wide
    key, _, value = output.partition("=")
    if key == "custom-columns":
        if not value:
            raise OutputError("need to specify at least one column")
        wanted = value.split(",")
        for heading in wanted:
            if heading not in funcs:
                raise OutputError(f"unknown heading {heading}, valid values are: "
                                  f"{', '.join(funcs)}")
        return wanted
    raise OutputError(f"unrecognized output format '{output}'")


def _custom_columns(output: str) -> bool:
    return output.partition("=")[0] == "custom-columns"


def list_document(kind: type[Resource], items: Sequence[Resource],
                  revision: int | None) -> dict[str, Any]:
    """A `<Kind>List` as libcalico-go's List returns it (TypeMeta, ListMeta, items)."""
    return {
        "kind": f"{kind.kind_name}List",
        "apiVersion": API_VERSION,
        "metadata": {"resourceVersion": str(revision)} if revision else {},
        "items": [r.dump() for r in items],
    }


def is_template(output: str) -> bool:
    return output.partition("=")[0] in ("go-template", "go-template-file")


def load_template(output: str) -> Template:
    """The parsed template of -o go-template=TEXT or go-template-file=PATH
    (get_command.go buildResourcePrinter, printer.go ResourcePrinterTemplateFile)."""
    key, _, value = output.partition("=")
    if not value:
        raise OutputError("need to specify a template" if key == "go-template"
                          else "need to specify a template file")
    text = value
    if key == "go-template-file":
        try:
            with open(value, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            # Go's *PathError wording: "open PATH: no such file or directory".
            reason = (exc.strerror or str(exc))
            raise OutputError(f"open {value}: {reason[:1].lower()}{reason[1:]}") from None
        except UnicodeDecodeError:
            raise OutputError(f"template file {value} is not UTF-8 text") from None
    try:
        return parse_template(text)
    except TemplateError as exc:
        raise OutputError(str(exc)) from None


def check_output(kind: type[Resource], output: str) -> Template | None:
    """Refuse a bad -o (unknown format, heading or a template that does not parse) before
    anything is read; the parsed template of a go-template output."""
    if is_template(output):
        return load_template(output)
    if output not in ("yaml", "yml", "json"):
        headings_for(kind, output)
    return None


def _execute(output: str, data: GoValue, ctx: PrintContext) -> str:
    template = ctx.template if ctx.template is not None else load_template(output)
    try:
        return template.execute(data, config=lambda _key: ctx.default_asn)
    except TemplateError as exc:
        raise OutputError(str(exc)) from None


def _encode(output: str, value: Any) -> str:
    return go_yaml(value) if output in ("yaml", "yml") else go_json(value)


def render(kind: type[Resource], items: Sequence[Resource], output: str, ctx: PrintContext,
           revision: int | None = None) -> str:
    """A listing (`get KIND`): one List object, so one table."""
    if output in ("yaml", "yml", "json"):
        return _encode(output, list_document(kind, items, revision))
    if is_template(output):
        document = list_document(kind, items, revision)
        return _execute(output, objects([resource_value(go_type_of(document["kind"]),
                                                        document)]), ctx)
    headings = headings_for(kind, output)
    if _custom_columns(output):
        ctx = dataclasses.replace(ctx, print_namespace=False)
    return render_table(kind, items, headings, ctx)


def render_named(kind: type[Resource], items: Sequence[Resource], output: str,
                 ctx: PrintContext) -> str:
    """Objects fetched by name (`get KIND A B`): each is printed on its own, as calicoctl
    does: a table per object; in yaml/json the object itself when there is one, a
    sequence/array when there are several, and `null` when none was found."""
    if output in ("yaml", "yml", "json"):
        docs = [r.dump() for r in items]
        return _encode(output, docs[0] if len(docs) == 1 else (docs or None))
    if is_template(output):
        return _execute(output, objects([resource_value(go_type_of(r.kind_name), r.dump())
                                         for r in items]), ctx)
    headings = headings_for(kind, output)
    if _custom_columns(output):
        ctx = dataclasses.replace(ctx, print_namespace=False)
    return "".join(render_table(kind, [r], headings, ctx) for r in items)
