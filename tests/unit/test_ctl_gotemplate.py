"""`ctl get -o go-template=...` / `go-template-file=...`: Go's text/template on calicoctl's data.

What the template runs on is calicoctl's (calicoctl/calicoctl/commands/common/printer.go
ResourcePrinterTemplate.Print): `tmpl.Execute(os.Stdout, resources)` with resources the
`[]runtime.Object` that `get` collected: one `*v3.<Kind>List` for a listing, one
`*v3.<Kind>` per name. calicoctl's tests and docs hold no go-template examples, so the
byte-for-byte vectors here are calicoctl's own column templates
(calicoctl/calicoctl/resourcemgr/<kind>.go), which calicoctl executes with the same
template engine on the same Go structs to print its tables: each one run through ctl's
engine must print exactly what ctl's table printer prints for that column. The other
expectations are worked out from Go's text/template rules (exec.go, funcs.go) and fmt's
%v, and written out in full.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ctl.gotemplate import TemplateError, parse, sprintf
from ctl.govalue import GoValue, go_type_of, objects, resource_value, wrap
from ctl.main import main as ctl_main
from ctl.printers import (
    COLUMNS,
    OutputError,
    PrintContext,
    check_output,
    list_document,
    render,
    render_named,
    tabwrite,
)
from datastore.resources import KINDS, Resource, parse_document
from datastore.resources.policy import default_tier
from tests.support import need

V3 = "projectcalico.org/v3"
# A Calico git repository (bare or not) to check ctl/gofields.py against.
CALICO_SOURCES = Path(os.environ.get("CALICO_SOURCES",
                                     "/work/.mirror/projectcalico+calico/repo"))
ROOT = Path(__file__).resolve().parents[2]


def doc(kind: str, name: str, spec: dict, **meta: object) -> Resource:
    return parse_document({"apiVersion": V3, "kind": kind, "metadata": {"name": name, **meta},
                           "spec": spec})


POOL_A = doc("IPPool", "pool-a", {"cidr": "10.0.1.0/24", "ipipMode": "Always",
                                  "natOutgoing": True, "nodeSelector": "foo == 'bar'",
                                  "allowedUses": ["Workload", "Tunnel"]},
             labels={"zone": "b", "app": "web"})
POOL_B = doc("IPPool", "pool-b", {"cidr": "fed0:8001::/64", "vxlanMode": "CrossSubnet"})

# One or more resources of every kind ctl knows, for the column vectors and the per-kind
# range test.
SAMPLES: dict[str, list[Resource]] = {
    "IPPool": [POOL_A, POOL_B],
    "Node": [doc("Node", "n1", {"bgp": {"asNumber": 65001, "ipv4Address": "10.0.0.5/24"}}),
             doc("Node", "n2", {"bgp": {"ipv4Address": "10.0.0.6/24"}}),
             doc("Node", "n3", {})],
    "BGPPeer": [doc("BGPPeer", "tor", {"peerIP": "10.0.0.1:1179", "asNumber": 65546}),
                doc("BGPPeer", "rr", {"nodeSelector": "all()",
                                      "peerSelector": "route-reflector == 'true'"}),
                doc("BGPPeer", "n1-peer", {"node": "n1", "peerIP": "10.0.0.2",
                                           "asNumber": 64513})],
    "BGPConfiguration": [doc("BGPConfiguration", "default", {
                             "logSeverityScreen": "Info", "nodeToNodeMeshEnabled": False,
                             "asNumber": 4567}),
                         doc("BGPConfiguration", "node.n1", {})],
    "WorkloadEndpoint": [doc("WorkloadEndpoint", "n1-k8s-pod1-eth0", {
        "orchestrator": "k8s", "node": "n1", "pod": "pod1", "endpoint": "eth0",
        "interfaceName": "cali0123456789a", "ipNetworks": ["10.65.0.2/32", "fd00::2/128"],
        "ipNATs": [{"internalIP": "10.65.0.2", "externalIP": "172.16.0.2"}],
        "profiles": ["kns.default", "ksa.default.default"]}, namespace="default")],
    "NetworkPolicy": [doc("NetworkPolicy", "allow-tcp-6379", {
        "order": 100, "selector": "role == 'database'",
        "ingress": [{"action": "Allow", "protocol": "TCP",
                     "destination": {"ports": [6379]}}]}, namespace="production")],
    "GlobalNetworkPolicy": [doc("GlobalNetworkPolicy", "deny-all", {
        "order": 2.5, "selector": "all()", "types": ["Ingress"]})],
    "Tier": [doc("Tier", "security", {"order": 100}), default_tier()],
    "Profile": [doc("Profile", "dev", {"labelsToApply": {"stage": "dev", "a": "1"}})],
    "NetworkSet": [doc("NetworkSet", "many", {
        "nets": [f"10.{i}.0.0/16" for i in range(12)]}, namespace="default")],
    "GlobalNetworkSet": [doc("GlobalNetworkSet", "few", {"nets": ["192.0.2.0/24"]})],
    "IPAMConfiguration": [doc("IPAMConfiguration", "default", {"strictAffinity": True,
                                                               "maxBlocksPerHost": 4})],
}

# calicoctl's column templates, copied from calicoctl/calicoctl/resourcemgr/<kind>.go
# (ippool.go, node.go, bgppeer.go, bgpconfig.go, workloadendpoint.go, networkpolicy.go,
# globalnetworkpolicy.go, tier.go, profile.go, networkset.go, globalnetworkset.go,
# ipamconfiguration.go: the headingsMap of each NewResource call).
CALICOCTL_COLUMNS: dict[str, dict[str, str]] = {
    "IPPool": {
        "NAME": "{{.ObjectMeta.Name}}",
        "CIDR": "{{.Spec.CIDR}}",
        "NAT": "{{.Spec.NATOutgoing}}",
        "IPIPMODE": "{{if .Spec.IPIPMode}}{{.Spec.IPIPMode}}{{else}}Never{{end}}",
        "VXLANMODE": "{{if .Spec.VXLANMode}}{{.Spec.VXLANMode}}{{else}}Never{{end}}",
        "DISABLED": "{{.Spec.Disabled}}",
        "DISABLEBGPEXPORT": "{{.Spec.DisableBGPExport}}",
        "SELECTOR": "{{.Spec.NodeSelector}}",
    },
    "Node": {
        "NAME": "{{.ObjectMeta.Name}}",
        "ASN": "{{if .Spec.BGP}}{{if .Spec.BGP.ASNumber}}{{.Spec.BGP.ASNumber}}"
               "{{else}}({{config \"asnumber\"}}){{end}}{{end}}",
    },
    "BGPPeer": {
        "NAME": "{{.ObjectMeta.Name}}",
        "PEERIP": "{{.Spec.PeerIP}}",
        "NODE": "{{ if eq .Spec.Node `` }}{{ if eq .Spec.NodeSelector `` }}(global){{ else }}"
                "{{.Spec.NodeSelector}}{{ end }}{{ else }}{{.Spec.Node}}{{ end }}",
        "ASN": "{{.Spec.ASNumber}}",
    },
    "BGPConfiguration": {
        "NAME": "{{.ObjectMeta.Name}}",
        "LOGSEVERITY": "{{.Spec.LogSeverityScreen}}",
        "MESHENABLED": "{{if .Spec.NodeToNodeMeshEnabled}}{{.Spec.NodeToNodeMeshEnabled}}"
                       "{{ else }}-{{ end }}",
        "ASNUMBER": "{{if .Spec.ASNumber}}{{.Spec.ASNumber}}{{ else }}-{{ end }}",
    },
    "WorkloadEndpoint": {
        "NAME": "{{.ObjectMeta.Name}}",
        "NAMESPACE": "{{.ObjectMeta.Namespace}}",
        "NODE": "{{.Spec.Node}}",
        "ORCHESTRATOR": "{{.Spec.Orchestrator}}",
        "WORKLOAD": "{{if .Spec.Workload}}{{.Spec.Workload}}{{else}}{{.Spec.Pod}}{{end}}",
        "NETWORKS": "{{join .Spec.IPNetworks \",\"}}",
        "NATS": "{{join .Spec.IPNATs \",\"}}",
        "PROFILES": "{{join .Spec.Profiles \",\"}}",
        "INTERFACE": "{{.Spec.InterfaceName}}",
    },
    "NetworkPolicy": {
        "NAME": "{{.ObjectMeta.Name}}",
        "NAMESPACE": "{{.ObjectMeta.Namespace}}",
        "ORDER": "{{.Spec.Order}}",
        "SELECTOR": "{{.Spec.Selector}}",
        "TIER": "{{.Spec.Tier}}",
    },
    "GlobalNetworkPolicy": {
        "NAME": "{{.ObjectMeta.Name}}",
        "ORDER": "{{.Spec.Order}}",
        "SELECTOR": "{{.Spec.Selector}}",
        "TIER": "{{.Spec.Tier}}",
    },
    "Tier": {"NAME": "{{.ObjectMeta.Name}}", "ORDER": "{{.Spec.Order}}"},
    "Profile": {"NAME": "{{.ObjectMeta.Name}}", "LABELS": "{{join .Spec.LabelsToApply \",\"}}"},
    "NetworkSet": {
        "NAME": "{{.ObjectMeta.Name}}",
        "NAMESPACE": "{{.ObjectMeta.Namespace}}",
        "NETS": "{{joinAndTruncate .Spec.Nets \",\" 80}}",
    },
    "GlobalNetworkSet": {
        "NAME": "{{.ObjectMeta.Name}}",
        "NETS": "{{joinAndTruncate .Spec.Nets \",\" 80}}",
    },
    "IPAMConfiguration": {
        "NAME": "{{.ObjectMeta.Name}}",
        "STRICTAFFINITY": "{{.Spec.StrictAffinity}}",
        "AUTOALLOCATEBLOCKS": "{{.Spec.AutoAllocateBlocks}}",
        "MAXBLOCKSPERHOST": "{{.Spec.MaxBlocksPerHost}}",
    },
}


def as_object(r: Resource) -> GoValue:
    """The `*v3.<Kind>` the table printer executes a column template on."""
    return resource_value(go_type_of(r.kind_name), r.dump()).value


def named(*items: Resource) -> GoValue:
    return objects([resource_value(go_type_of(r.kind_name), r.dump()) for r in items])


def listing(*items: Resource) -> GoValue:
    document = list_document(type(items[0]), list(items), 42)
    return objects([resource_value(go_type_of(document["kind"]), document)])


def run(template: str, data: GoValue | None = None) -> str:
    return parse(template).execute(named(POOL_A, POOL_B) if data is None else data,
                                   config=lambda _key: "64512")


def test_every_kind_has_samples_and_calicoctl_columns() -> None:
    assert set(SAMPLES) == set(CALICOCTL_COLUMNS) == set(KINDS)


@pytest.mark.parametrize("kind, heading", [(k, h) for k, cols in CALICOCTL_COLUMNS.items()
                                           for h in cols])
def test_calicoctl_column_templates_print_what_the_tables_print(kind: str, heading: str) -> None:
    ctx = PrintContext(default_asn="64512")
    template = parse(CALICOCTL_COLUMNS[kind][heading])
    column = COLUMNS[KINDS[kind]][2][heading]
    for r in SAMPLES[kind]:
        assert template.execute(as_object(r), config=lambda _k: ctx.default_asn) == column(r, ctx)


def test_calicoctl_table_template_on_a_list_is_the_ps_table() -> None:
    # resourcemgr.go GetTableTemplate: headings, then {{range .Items}} cells {{end}}, each
    # cell tab-terminated; executed on the *v3.IPPoolList and laid out by the tabwriter.
    headings = COLUMNS[KINDS["IPPool"]][1][:-1]  # the wide set but ASSIGNMENTMODE
    text = "".join(h + "\t" for h in headings) + "\n{{range .Items}}" + "".join(
        CALICOCTL_COLUMNS["IPPool"][h] + "\t" for h in headings) + "\n{{end}}"
    document = list_document(KINDS["IPPool"], [POOL_A, POOL_B], 42)
    printed = parse(text).execute(resource_value("v3.IPPoolList", document).value)
    rows = [line.split("\t")[:-1] for line in printed.splitlines()]
    ctx = PrintContext()
    assert tabwrite(rows) + "\n" == render(KINDS["IPPool"], [POOL_A, POOL_B],
                                           "custom-columns=" + ",".join(headings), ctx)


@pytest.mark.parametrize("kind", sorted(CALICOCTL_COLUMNS))
def test_names_through_the_root_object_for_every_kind(kind: str) -> None:
    items = SAMPLES[kind]
    names = ",".join(r.name for r in items) + ","
    # A listing is one <Kind>List in the slice; names are one object each.
    assert run("{{range .}}{{range .Items}}{{.ObjectMeta.Name}},{{end}}{{end}}",
               listing(*items)) == names
    assert run("{{range .}}{{.Name}},{{end}}", named(*items)) == names  # promoted
    assert run("{{range .}}{{.Kind}} {{.APIVersion}}{{end}}", listing(*items)) == (
        f"{kind}List {V3}")
    assert run("{{range .}}{{.Kind}};{{end}}", named(*items)) == f"{kind};" * len(items)


def test_listing_carries_the_list_metadata() -> None:
    assert run("{{range .}}{{.ResourceVersion}} {{.ListMeta.ResourceVersion}} {{len .Items}}"
               "{{end}}", listing(POOL_A, POOL_B)) == "42 42 2"


def test_go_values_print_as_fmt_v() -> None:
    assert run("{{range .}}{{.Spec.CIDR}}|{{.Spec.NATOutgoing}}|{{.Spec.BlockSize}}|"
               "{{.Spec.AllowedUses}}|{{.ObjectMeta.Labels}}|{{.Status}}|{{.Spec.IPIPMode}}\n"
               "{{end}}") == (
        "10.0.1.0/24|true|26|[Workload Tunnel]|map[app:web zone:b]|<nil>|Always\n"
        "fed0:8001::/64|false|122|[Workload Tunnel]|map[]|<nil>|Never\n")


def test_missing_map_key_is_no_value_and_index_gives_the_zero_value() -> None:
    assert run("{{range .}}[{{.Labels.zone}}][{{.Labels.nope}}][{{index .Labels \"nope\"}}]"
               "{{end}}") == "[b][<no value>][][<no value>][<no value>][]"


def test_go_struct_and_time_printing() -> None:
    node = doc("Node", "n1", {"bgp": {"asNumber": 65001, "ipv4Address": "10.0.0.5/24"}})
    node_doc = node.dump()
    node_doc["metadata"]["creationTimestamp"] = "2026-12-06T23:06:27Z"
    data = objects([resource_value("internalapi.Node", node_doc)])
    # NodeBGPSpec is {ASNumber IPv4Address IPv6Address IPv4IPIPTunnelAddr
    # RouteReflectorClusterID}; its non-nil *ASNumber prints through String(), as fmt does.
    assert parse("{{range .}}{{.Spec.BGP}}|{{.CreationTimestamp}}|{{.Spec.BGP.ASNumber}}"
                 "{{end}}").execute(data) == (
        "{65001 10.0.0.5/24   }|2026-12-06 23:06:27 +0000 UTC|65001")


def test_if_else_if_else_with_go_truth() -> None:
    template = ("{{range .}}{{if eq .Spec.IPIPMode \"Always\"}}ipip{{else if .Spec.VXLANMode}}"
                "vxlan {{.Spec.VXLANMode}}{{else}}none{{end}};{{end}}")
    assert run(template) == "ipip;vxlan CrossSubnet;"
    truthy = ("{{if 0}}a{{end}}{{if 1}}b{{end}}{{if \"\"}}c{{end}}{{if \"x\"}}d{{end}}"
              "{{if .}}e{{end}}{{range .}}{{if .Status}}f{{end}}{{if .Spec}}g{{end}}"
              "{{if .Labels}}h{{end}}{{if .Spec.AllowedUses}}i{{end}}{{end}}")
    assert run(truthy) == "bdeghigi"


def test_with_rebinds_dot_and_has_else() -> None:
    assert run("{{range .}}{{with .Spec.NodeSelector}}[{{.}}]{{else}}-{{end}}{{end}}") == (
        "[foo == 'bar'][all()]")
    assert run("{{with .}}{{len .}}{{end}}{{with $x := 0}}y{{else}}n{{end}}") == "2n"
    assert run("{{range .}}{{with .Labels.zone}}z={{.}}{{else with .Spec.VXLANMode}}"
               "v={{.}}{{end}};{{end}}") == "z=b;v=CrossSubnet;"


def test_range_variables_dollar_and_else() -> None:
    assert run("{{range $i, $p := .}}{{$i}}:{{$p.Name}}:{{len $}};{{end}}") == (
        "0:pool-a:2;1:pool-b:2;")
    assert run("{{range $p := .}}{{$p.Name}} {{end}}") == "pool-a pool-b "
    assert run("{{range .}}{{range $k, $v := .Labels}}{{$k}}={{$v}};{{end}}{{end}}") == (
        "app=web;zone=b;")
    assert run("{{range .}}{{range .Labels}}{{.}}{{else}}none{{end}}|{{end}}") == "webb|none|"
    assert run("{{range (index . 1).Labels}}y{{end}}x") == "x"  # a nil map: no passes
    assert run("{{range 3}}{{.}}{{end}}{{range $i := 0}}never{{else}}-{{end}}") == "012-"


def test_variables_declare_assign_and_scope() -> None:
    assert run("{{$n := 0}}{{range .}}{{$n = .Name}}{{end}}{{$n}}") == "pool-b"
    assert run("{{$x := \"a\"}}{{if true}}{{$x := \"b\"}}{{$x}}{{end}}{{$x}}") == "ba"


def test_trim_markers_and_comments() -> None:
    assert run("a  {{- \"b\" -}}  \n c{{/* a comment */}}d {{- /* trimmed */ -}} e") == "abcde"
    assert run("{{range .}}\n  {{- .Name}}\n{{- end}}\n") == "pool-apool-b\n"
    assert run("{{-3}} {{3 -}} x") == "-3 3x"


def test_literals() -> None:
    assert run("{{\"a\\tb\\u00e9\"}}|{{`raw\\n`}}|{{42}}|{{0x1F}}|{{1.5}}|{{1e6}}|{{true}}") == (
        "a\tbé|raw\\n|42|31|1.5|1e+06|true")


def test_functions() -> None:
    assert run("{{len .}} {{(index . 1).Spec.CIDR}} {{len (index . 0).Labels}}") == (
        "2 fed0:8001::/64 2")
    assert run("{{not true}} {{not 0}} {{and 1 0 2}} {{and 1 2}} {{or 0 \"\" 3}} {{or 0 \"\"}}"
               ) == "false true 0 2 3 "
    assert run("{{eq 1 2 3 1}} {{ne \"a\" \"b\"}} {{lt 1 2}} {{le 2 2}} {{gt 1.5 2.5}} "
               "{{ge \"b\" \"a\"}}") == "true true true true false true"
    assert run("{{range .}}{{join .Spec.AllowedUses \"+\"}} {{join .Labels \",\"}}|{{end}}") == (
        "Workload+Tunnel app=web,zone=b|Workload+Tunnel |")
    assert run("{{range .}}{{joinAndTruncate .Spec.AllowedUses \",\" 10}}|{{end}}") == (
        "Workloa...|Workloa...|")  # cut to 10 - 3 bytes
    assert run("{{config \"asnumber\"}}") == "64512"
    assert run("{{.|len}} {{\"abc\" | printf \"%s-%s\" \"x\"}}") == "2 x-abc"


def test_and_or_stop_at_the_answer() -> None:
    # The second operand would fail (no field Nope on a pool): and/or never evaluate it.
    assert run("{{range .}}{{or .Name .Nope}}{{and .Status .Nope}}|{{end}}") == (
        "pool-a<nil>|pool-b<nil>|")


def test_printf_verbs() -> None:
    s = GoValue("string", "string", "a\"b")
    n = GoValue("int", "int", 42)
    names = wrap("[]string", ["x", "y"])
    assert sprintf("%s|%d|%v|%q|%%", [s, n, names, s]) == 'a"b|42|[x y]|"a\\"b"|%'
    assert sprintf("[%-5s][%5s][%05d][%q]", [GoValue("string", "string", "ab"),
                                            GoValue("string", "string", "cd"), n, names]) == (
        '[ab   ][   cd][00042][["x" "y"]]')
    assert sprintf("%d %s", [s, n]) == '%!d(string=a"b) %!s(int=42)'
    assert sprintf("%s %s", [s]) == 'a"b %!s(MISSING)'
    assert sprintf("%s", [s, n]) == 'a"b%!(EXTRA int=42)'


@pytest.mark.parametrize("template, message", [
    ("{{.Foo}}", 'template: get:1:2: executing "get" at <.Foo>: can\'t evaluate field Foo '
                 "in type []runtime.Object"),
    ("{{range .}}{{.Foo}}{{end}}", 'template: get:1:13: executing "get" at <.Foo>: '
                                   "can't evaluate field Foo in type runtime.Object"),
    ("{{range .}}\n {{.Spec.Foo}}{{end}}", 'template: get:2:3: executing "get" at '
                                           "<.Spec.Foo>: can't evaluate field Foo in type "
                                           "v3.IPPoolSpec"),
    ("{{range .}}{{.Metadata.Name}}{{end}}", 'template: get:1:13: executing "get" at '
                                             "<.Metadata.Name>: can't evaluate field "
                                             "Metadata in type runtime.Object"),
    ("{{range .}}{{.Status.Conditions}}{{end}}",
     'template: get:1:13: executing "get" at <.Status.Conditions>: nil pointer evaluating '
     "*v3.IPPoolStatus.Conditions"),
    ("{{range .}}{{.Spec.CIDR.Len}}{{end}}", 'template: get:1:13: executing "get" at '
                                             "<.Spec.CIDR.Len>: can't evaluate field Len in "
                                             "type string"),
    ("{{range .}}{{eq .Spec.BlockSize \"26\"}}{{end}}",
     'template: get:1:13: executing "get" at <eq .Spec.BlockSize "...>: error calling eq: '
     "incompatible types for comparison"),
    ("{{index . 5}}", 'template: get:1:2: executing "get" at <index . 5>: error calling '
                      "index: index out of range: 5"),
    ("{{len 3}}", 'template: get:1:2: executing "get" at <len 3>: error calling len: '
                  "len of type int"),
    ("{{len . 1}}", 'template: get:1:2: executing "get" at <len . 1>: wrong number of args '
                    "for len: want 1 got 2"),
    ("{{join .}}", 'template: get:1:2: executing "get" at <join .>: wrong number of args for '
                   "join: want 2 got 1"),
    ("{{printf 1}}", 'template: get:1:2: executing "get" at <printf 1>: wrong type for value; '
                     "expected string; got int"),
    ("{{range true}}x{{end}}", 'template: get:1:8: executing "get" at <{{range true}}x{{end...>'
                               ": range can't iterate over true"),
    ("{{range $i, $e := 2}}{{end}}", 'template: get:1:8: executing "get" at <{{range $i, $e := 2}...>'
                                     ": can't use 2 to iterate over more than one variable"),
    ("{{range .}}{{.Name 1}}{{end}}", 'template: get:1:13: executing "get" at <.Name>: Name '
                                      "has arguments but cannot be invoked as function"),
    ("{{\"x\" 1}}", 'template: get:1:2: executing "get" at <"x">: can\'t give argument to '
                    'non-function "x"'),
    ("{{$f := \"%x\"}}{{printf $f 1}}", 'template: get:1:16: executing "get" at <printf $f 1>: '
                                     "error calling printf: the printf directive %x is not "
                                     "supported by ctl's go-template"),
    ("{{config \"x\"}}", 'template: get:1:2: executing "get" at <config "x">: error calling '
                         "config: unhandled config type"),
    ("{{.}}", 'template: get:1:2: executing "get" at <{{.}}>: cannot print a *v3.IPPool '
              "inside a value (Go prints its memory address); print the field itself"),
])
def test_execution_errors_name_the_place_and_print_nothing(template: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        run(template)
    assert str(info.value) == message


@pytest.mark.parametrize("template, message", [
    ("{{.A", "template: get:1: unclosed action"),
    ("{{if .}}x", "template: get:1: unexpected EOF"),
    ("x\n{{end}}", "template: get:2: unexpected {{end}}"),
    ("{{else}}", "template: get:1: unexpected {{else}}"),
    ("{{foo .}}", 'template: get:1: function "foo" not defined'),
    ("{{$x}}", 'template: get:1: undefined variable "$x"'),
    ("{{$x = 1}}", 'template: get:1: undefined variable "$x"'),
    ("{{}}", "template: get:1: missing value for command"),
    ("{{if}}{{end}}", "template: get:1: missing value for if"),
    ("{{/* open", "template: get:1: unclosed comment"),
    ("{{/* x */ .}}", "template: get:1: comment ends before closing delimiter"),
    ("{{\"abc}}", "template: get:1: unterminated quoted string"),
    ("{{. | 1}}", "template: get:1: non executable command in pipeline stage 2"),
    ("{{range .}}{{else if .}}{{end}}", "template: get:1: unexpected {{else if}} in {{range}}"),
    ("{{template \"x\"}}", "template: get:1:2: {{template}} is not supported by ctl's "
                           "go-template"),
    ("{{define \"x\"}}{{end}}", "template: get:1:2: {{define}} is not supported by ctl's "
                                "go-template"),
    ("a\n {{block \"x\" .}}{{end}}", "template: get:2:3: {{block}} is not supported by ctl's "
                                     "go-template"),
    ("{{range .}}{{break}}{{end}}", "template: get:1:13: {{break}} is not supported by ctl's "
                                    "go-template"),
    ("{{range .}}{{continue}}{{end}}", "template: get:1:13: {{continue}} is not supported by "
                                       "ctl's go-template"),
    ("{{html .}}", "template: get:1:2: the function 'html' is not supported by ctl's "
                   "go-template"),
    ("{{eq . nil}}", "template: get:1:7: nil is not supported by ctl's go-template"),
    ("{{'a'}}", "template: get:1:2: a character constant is not supported by ctl's "
                "go-template"),
    ("ok {{printf \"%5.2f\" 1.5}}", "template: get:1:12: the printf directive %5.2f is not "
                                   "supported by ctl's go-template"),
    ("{{printf \"%x\" 1}}", "template: get:1:9: the printf directive %x is not supported by "
                          "ctl's go-template"),
    ("{{printf \"%.2s\" .}}", "template: get:1:9: the printf directive %.2s is not supported "
                            "by ctl's go-template"),
    ("{{printf \"%+d\" 1}}", "template: get:1:9: the printf directive %+d is not supported "
                           "by ctl's go-template"),
])
def test_parse_errors_before_anything_runs(template: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        parse(template)
    assert str(info.value) == message


def test_printers_run_templates_on_listings_and_names() -> None:
    ctx = PrintContext()
    kind = KINDS["IPPool"]
    assert render(kind, [POOL_A, POOL_B], "go-template={{range .}}{{range .Items}}"
                  "{{.Name}} {{end}}{{end}}", ctx) == "pool-a pool-b "
    assert render_named(kind, [POOL_A, POOL_B], "go-template={{range .}}{{.Spec.CIDR}} "
                        "{{end}}", ctx) == "10.0.1.0/24 fed0:8001::/64 "
    assert render_named(kind, [], "go-template={{len .}}", ctx) == "0"


def test_template_file(tmp_path: Path) -> None:
    path = tmp_path / "pools.tmpl"
    path.write_text("{{- range . }}\n{{- range .Items }}\n{{ .ObjectMeta.Name }}\t"
                    "{{ .Spec.CIDR }}\n{{- end }}\n{{- end }}\n")
    assert render(KINDS["IPPool"], [POOL_A], f"go-template-file={path}", PrintContext()) == (
        "\npool-a\t10.0.1.0/24\n")


@pytest.mark.parametrize("output, message", [
    ("go-template", "need to specify a template"),
    ("go-template=", "need to specify a template"),
    ("go-template-file", "need to specify a template file"),
    ("go-template-file=/nonexistent/t.tmpl",
     "open /nonexistent/t.tmpl: no such file or directory"),
    ("go-template={{.Metadata", "template: get:1: unclosed action"),
    ("go-templates={{.}}", "unrecognized output format 'go-templates={{.}}'"),
])
def test_output_option_errors(output: str, message: str) -> None:
    with pytest.raises(OutputError) as info:
        check_output(KINDS["IPPool"], output)
    assert str(info.value) == message


def test_execution_error_surfaces_as_output_error_with_nothing_printed() -> None:
    with pytest.raises(OutputError, match="can't evaluate field Nope in type runtime.Object"):
        render(KINDS["IPPool"], [POOL_A], "go-template=partial {{range .}}{{.Nope}}{{end}}",
               PrintContext())


def test_gofields_table_is_what_the_generator_makes_from_calico() -> None:
    need("git")
    if not (CALICO_SOURCES / "HEAD").exists() and not (CALICO_SOURCES / ".git").exists():
        pytest.skip(f"no Calico sources at {CALICO_SOURCES} (set CALICO_SOURCES to a Calico "
                    "git repository to check ctl/gofields.py against them)")
    generated = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_go_fields.py"), "--mirror",
         str(CALICO_SOURCES)], check=True, capture_output=True, text=True).stdout
    assert generated == (ROOT / "ctl" / "gofields.py").read_text(), (
        "ctl/gofields.py differs from what scripts/gen_go_fields.py makes of "
        f"{CALICO_SOURCES}: regenerate it if Calico's types changed")


@pytest.mark.parametrize("output, message", [
    ("go-template", "need to specify a template"),
    ("go-template={{range .}}{{foo}}{{end}}", 'template: get:1: function "foo" not defined'),
])
def test_ctl_get_refuses_a_bad_template_before_reading_the_datastore(
        output: str, message: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Nothing listens on the discard port: had ctl read the datastore first, the error
    # would be a connection failure rather than the template's.
    monkeypatch.setenv("ETCD_ENDPOINTS", "http://127.0.0.1:9")
    assert ctl_main(["get", "ippool", "-o", output]) == 1
    assert capsys.readouterr() == ("", message + "\n")
