"""`ctl get` against a real etcd, as calicoctl's st tests run `calicoctl get`.

Cases from calicoctl/tests/st/calicoctl/test_crud.py (test_get, test_get_multiple_resources)
with the data of calicoctl/tests/st/utils/data.py; the rest follow calicoctl's printers
(calicoctl/calicoctl/commands/common/printer.go, commands/get_command.go).
"""

from __future__ import annotations

import json

import pytest

from .ctlrun import run_inprocess

# data.py ippool_name1_rev1_v4 and ippool_name2_rev1_v6.
POOLS = b"""apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: ippool-name1}
spec:
  cidr: 10.0.1.0/24
  ipipMode: Always
  vxlanMode: Never
  blockSize: 27
  allowedUses: [Workload, Tunnel]
  assignmentMode: Automatic
  nodeSelector: foo == 'bar'
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: ippool-name2}
spec:
  cidr: fed0:8001::/64
  ipipMode: Never
  vxlanMode: Never
  blockSize: 123
  allowedUses: [Workload, Tunnel]
  assignmentMode: Automatic
  nodeSelector: all()
"""
# data.py ippool_name1_rev1_table and ippool_name2_rev1_table (the st helper strips output).
TABLE1 = "NAME           CIDR          SELECTOR       \nippool-name1   10.0.1.0/24   foo == 'bar'"
TABLE2 = "NAME           CIDR             SELECTOR   \nippool-name2   fed0:8001::/64   all()"


@pytest.fixture
def ctl(etcd_endpoint, monkeypatch):
    """ctl in process on a datastore the etcd_endpoint fixture has emptied."""
    monkeypatch.setenv("ETCD_ENDPOINTS", etcd_endpoint)
    return run_inprocess


def test_get_by_names_prints_each_and_reports_the_missing(ctl):
    assert ctl(["apply", "-f", "-"], POOLS).rc == 0
    both = ctl(["get", "ippool", "ippool-name1", "ippool-name2"])
    # test_get_multiple_resources: table1 + "   \n\n" + table2, then (with a missing name
    # in between) "      \n\n" and the error, exit 1.
    assert (both.rc, both.out) == (0, TABLE1 + "   \n\n" + TABLE2 + "      \n\n")
    partial = ctl(["get", "ippool", "ippool-name1", "blah", "ippool-name2"])
    assert (partial.rc, partial.out) == (1, both.out)
    assert partial.err == "resource does not exist: IPPool(blah) with error: <nil>\n"
    wide = ctl(["get", "ippool", "ippool-name1", "-o", "wide"]).out
    assert wide == (  # data.py ippool_name1_rev1_wide_table
        "NAME           CIDR          NAT     IPIPMODE   VXLANMODE   DISABLED   "
        "DISABLEBGPEXPORT   SELECTOR       ASSIGNMENTMODE   \n"
        "ippool-name1   10.0.1.0/24   false   Always     Never       false      "
        "false              foo == 'bar'   Automatic        \n\n")


def test_yaml_and_json_of_names_and_listings(ctl):
    assert ctl(["apply", "-f", "-"], POOLS).rc == 0
    one = ctl(["get", "ippool", "ippool-name1", "-o", "yaml"]).out
    assert one.startswith("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n"
                          "  creationTimestamp: \"")
    assert "\n  resourceVersion: \"" in one and one.endswith("  vxlanMode: Never\n")
    several = ctl(["get", "ippool", "ippool-name1", "ippool-name2", "-o", "yaml"]).out
    assert several.startswith("- apiVersion: projectcalico.org/v3\n  kind: IPPool\n")
    assert several.count("\n- apiVersion: ") == 1
    as_json = ctl(["get", "ippool", "ippool-name1", "ippool-name2", "-o", "json"]).out
    assert not as_json.endswith("\n")  # json.MarshalIndent, written without a newline
    assert [p["metadata"]["name"] for p in json.loads(as_json)] == ["ippool-name1", "ippool-name2"]
    listing = ctl(["get", "ippool", "-o", "json"]).out
    assert listing.startswith('{\n  "kind": "IPPoolList",\n  "apiVersion": "projectcalico.org/v3",'
                              '\n  "metadata": {\n    "resourceVersion": "')
    listing_yaml = ctl(["get", "ippool", "-o", "yaml"]).out
    assert listing_yaml.startswith("apiVersion: projectcalico.org/v3\nitems:\n- apiVersion: ")
    nothing = ctl(["get", "ippool", "blah", "-o", "json"])
    assert (nothing.rc, nothing.out) == (1, "null")


def test_node_asn_without_and_with_the_default_bgp_configuration(ctl):
    ctl(["create", "-f", "-"], b"""apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: getnode1}
spec: {bgp: {ipv4Address: 10.0.0.5/24}}
""")
    # printer.go config("asnumber"): 64512 without a default BGPConfiguration, in brackets.
    assert ctl(["get", "node", "getnode1", "-o", "wide"]).out == (
        "NAME       ASN       IPV4          IPV6   \n"
        "getnode1   (64512)   10.0.0.5/24          \n\n")
    ctl(["create", "-f", "-"], b"""apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {logSeverityScreen: Info}
""")
    assert "(64512)" in ctl(["get", "node", "getnode1", "-o", "wide"]).out
    assert ctl(["get", "bgpconfig"]).out == (
        "NAME      LOGSEVERITY   MESHENABLED   ASNUMBER   \n"
        "default   Info          -             -          \n\n")


def test_stored_workload_endpoint_carries_calicos_labels(ctl, etcd_client):
    # libcalico-go clientv3/workloadendpoint.go updateLabelsForStorage, on every write.
    assert ctl(["apply", "-f", "-"], b"""apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: getnode1-k8s-pod1-eth0
  namespace: getns
  labels: {app: web}
spec: {node: getnode1, orchestrator: k8s, pod: pod1, endpoint: eth0,
       interfaceName: cali0123456789a, ipNetworks: [10.65.0.2/32]}
""").rc == 0
    kv = etcd_client.get(
        "/calico/resources/v3/projectcalico.org/workloadendpoints/getns/getnode1-k8s-pod1-eth0")
    assert json.loads(kv.value)["metadata"]["labels"] == {
        "app": "web", "projectcalico.org/namespace": "getns",
        "projectcalico.org/orchestrator": "k8s"}
    shown = ctl(["get", "wep", "getnode1-k8s-pod1-eth0", "-n", "getns", "-o", "yaml"]).out
    assert ("  labels:\n    app: web\n    projectcalico.org/namespace: getns\n"
            "    projectcalico.org/orchestrator: k8s\n") in shown


def test_go_template_on_a_listing_and_on_names(ctl, tmp_path):
    # printer.go ResourcePrinterTemplate: the template runs on the []runtime.Object `get`
    # collected: one IPPoolList for a listing, one IPPool per name found.
    assert ctl(["apply", "-f", "-"], POOLS).rc == 0
    listing = ctl(["get", "ippool", "-o", "go-template={{range .}}{{.Kind}} "
                   "{{range .Items}}{{.ObjectMeta.Name}}={{.Spec.CIDR}} {{end}}{{end}}"])
    assert (listing.rc, listing.out, listing.err) == (
        0, "IPPoolList ippool-name1=10.0.1.0/24 ippool-name2=fed0:8001::/64 ", "")
    revision = json.loads(ctl(["get", "ippool", "-o", "json"]).out)["metadata"]
    shown = ctl(["get", "ippool", "-o", "go-template={{range .}}{{.ResourceVersion}}{{end}}"])
    assert shown.out == revision["resourceVersion"]
    # A missing name is reported after what was found is printed, as for the other formats.
    partial = ctl(["get", "ippool", "ippool-name2", "blah", "-o",
                   "go-template={{range .}}{{.Name}} {{.Spec.IPIPMode}}{{\"\\n\"}}{{end}}"])
    assert (partial.rc, partial.out, partial.err) == (
        1, "ippool-name2 Never\n", "resource does not exist: IPPool(blah) with error: <nil>\n")
    template = tmp_path / "nodes.tmpl"
    template.write_text('{{range .}}{{range .Items}}{{.Name}} ({{config "asnumber"}})\n'
                        '{{end}}{{end}}')
    ctl(["create", "-f", "-"], b"""apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: tplnode1}
spec: {bgp: {ipv4Address: 10.0.0.5/24}}
""")
    nodes = ctl(["get", "node", "-o", f"go-template-file={template}"])
    assert (nodes.rc, nodes.out) == (0, "tplnode1 (64512)\n")


@pytest.mark.parametrize("output, message", [
    ("go-template", "need to specify a template"),
    ("go-template-file=/nonexistent/t.tmpl",
     "open /nonexistent/t.tmpl: no such file or directory"),
    ("go-template={{range .}}{{template \"x\"}}{{end}}",
     "template: get:1:13: {{template}} is not supported by ctl's go-template"),
    ("go-template=first {{range .}}{{range .Items}}{{.Metadata.Name}}{{end}}{{end}}",
     'template: get:1:35: executing "get" at <.Metadata.Name>: can\'t evaluate field '
     "Metadata in type v3.IPPool"),
])
def test_go_template_errors_exit_1_and_print_nothing(ctl, output, message):
    assert ctl(["apply", "-f", "-"], POOLS).rc == 0
    failed = ctl(["get", "ippool", "-o", output])
    assert (failed.rc, failed.out, failed.err) == (1, "", message + "\n")
