"""Which fields `ctl get -o yaml|json` prints, and the stored JSON holds: Go's omitempty.

calicoctl and libcalico-go marshal Calico's Go structs with encoding/json, so a
field tagged `json:",omitempty"` holding its zero value (false, 0, "", an empty
list or map, a nil pointer) is left out; a pointer set to a zero value, a field
without omitempty and a non-pointer struct are printed. Each expected text below
is what that rule gives for the struct tags of:

  api/pkg/apis/projectcalico/v3/{ippool,ipamconfig,bgpconfig,bgppeer,tier,
      globalnetworkpolicy,policy_common,profile,networkset}.go
  libcalico-go/lib/apis/internalapi/{node,workloadendpoint}.go
  k8s.io/apimachinery v0.37 metav1.ObjectMeta (all omitempty; creationTimestamp, a
      metav1.Time struct, is also omitzero, so an unset one is left out)

calicoctl's own printer tests (calicoctl/calicoctl/commands/common/printer_test.go,
"should omit zero fields with the omitzero tag") expect exactly that for a policy
built in code: `metadata: {name: foo}`, a rule printed as `{"action": "Allow"}`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from ctl.goencode import go_json, go_yaml
from datastore.resources import parse_document

API = "projectcalico.org/v3"
STAMP = "2026-12-06T23:06:27Z"


def _doc(kind: str, spec: dict[str, Any], name: str, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": kind,
            "metadata": {"name": name, "creationTimestamp": STAMP, **meta}, "spec": spec}


# (kind, the document as a user or an older tortie wrote it, what calicoctl prints)
CASES = [
    ("IPPool: value bools and blockSize 0 dropped; cidr (no omitempty) kept",
     _doc("IPPool", {"cidr": "10.0.0.0/16", "natOutgoing": False, "disabled": False,
                     "disableBGPExport": False, "namespaceSelector": ""}, "p"),
     """\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  creationTimestamp: "2026-12-06T23:06:27Z"
  name: p
spec:
  allowedUses:
  - Workload
  - Tunnel
  assignmentMode: Automatic
  blockSize: 26
  cidr: 10.0.0.0/16
  ipipMode: Never
  nodeSelector: all()
  vxlanMode: Never
"""),
    ("IPAMConfiguration: strictAffinity/autoAllocateBlocks have no omitempty",
     _doc("IPAMConfiguration", {"strictAffinity": False, "autoAllocateBlocks": True,
                                "maxBlocksPerHost": 0}, "default"),
     """\
apiVersion: projectcalico.org/v3
kind: IPAMConfiguration
metadata:
  creationTimestamp: "2026-12-06T23:06:27Z"
  name: default
spec:
  autoAllocateBlocks: true
  strictAffinity: false
"""),
    ("BGPConfiguration: *bool false kept, empty strings and lists dropped",
     _doc("BGPConfiguration", {"nodeToNodeMeshEnabled": False, "logSeverityScreen": "",
                               "ignoredInterfaces": [], "communities": []}, "default"),
     """\
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  creationTimestamp: "2026-12-06T23:06:27Z"
  name: default
spec:
  nodeToNodeMeshEnabled: false
"""),
    ("BGPPeer: *int32 0 kept, value bool false dropped",
     _doc("BGPPeer", {"peerIP": "10.0.0.1", "asNumber": 65001, "keepOriginalNextHop": False,
                      "numAllowedLocalASNumbers": 0, "filters": []}, "tor"),
     """\
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  creationTimestamp: "2026-12-06T23:06:27Z"
  name: tor
spec:
  asNumber: 65001
  numAllowedLocalASNumbers: 0
  peerIP: 10.0.0.1
"""),
    ("Node: *ASNumber 0 kept, status struct always printed",
     _doc("Node", {"bgp": {"asNumber": 0, "ipv4Address": "10.0.0.5/24"}, "orchRefs": []},
          "node1"),
     """\
apiVersion: projectcalico.org/v3
kind: Node
metadata:
  creationTimestamp: "2026-12-06T23:06:27Z"
  name: node1
spec:
  bgp:
    asNumber: 0
    ipv4Address: 10.0.0.5/24
status: {}
"""),
    ("WorkloadEndpoint: a port's fields have no omitempty",
     _doc("WorkloadEndpoint", {"interfaceName": "cali1", "orchestrator": "k8s", "profiles": [],
                               "ports": [{"name": "http", "protocol": "TCP", "port": 80}]},
          "node1-k8s-web-eth0", namespace="default"),
     """\
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  creationTimestamp: "2026-12-06T23:06:27Z"
  labels:
    projectcalico.org/namespace: default
    projectcalico.org/orchestrator: k8s
  name: node1-k8s-web-eth0
  namespace: default
spec:
  interfaceName: cali1
  orchestrator: k8s
  ports:
  - hostIP: ""
    hostPort: 0
    name: http
    port: 80
    protocol: TCP
"""),
    ("GlobalNetworkPolicy: *float64 order 0 and *ICMPFields {} kept; omitzero sides dropped",
     _doc("GlobalNetworkPolicy", {
         "order": 0, "doNotTrack": False, "preDNAT": False, "applyOnForward": False,
         "ingress": [{"action": "Allow", "protocol": "ICMP", "ipVersion": 4, "icmp": {},
                      "source": {}, "destination": {"nets": []}}],
         "egress": []}, "g"),
     """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  creationTimestamp: "2026-12-06T23:06:27Z"
  labels:
    projectcalico.org/tier: default
  name: g
spec:
  ingress:
  - action: Allow
    icmp: {}
    ipVersion: 4
    protocol: ICMP
  order: 0
  selector: all()
  tier: default
  types:
  - Ingress
"""),
    ("Tier: *float64 order 0 kept, status struct always printed",
     _doc("Tier", {"order": 0}, "t"),
     """\
apiVersion: projectcalico.org/v3
kind: Tier
metadata:
  creationTimestamp: "2026-12-06T23:06:27Z"
  name: t
spec:
  defaultAction: Deny
  order: 0
status: {}
"""),
    ("Profile: empty map and rule list dropped, spec struct kept",
     _doc("Profile", {"labelsToApply": {}, "ingress": []}, "pr"),
     """\
apiVersion: projectcalico.org/v3
kind: Profile
metadata:
  creationTimestamp: "2026-12-06T23:06:27Z"
  name: pr
spec: {}
"""),
    ("NetworkSet: empty nets dropped",
     _doc("NetworkSet", {"nets": []}, "ns", namespace="prod"),
     """\
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata:
  creationTimestamp: "2026-12-06T23:06:27Z"
  name: ns
  namespace: prod
spec: {}
"""),
]


@pytest.mark.parametrize(("case", "doc", "text"), CASES, ids=[c[0] for c in CASES])
def test_yaml_prints_what_go_marshals(case: str, doc: dict[str, Any], text: str) -> None:
    assert go_yaml(parse_document(doc).dump()) == text


def test_json_keeps_go_field_order_and_drops_an_unset_creation_timestamp() -> None:
    # A resource built in code has no creationTimestamp; omitzero leaves it out.
    pool = parse_document({"apiVersion": API, "kind": "IPPool", "metadata": {"name": "p"},
                           "spec": {"cidr": "10.0.0.0/16", "natOutgoing": False}})
    assert go_json(pool.dump()) == """\
{
  "kind": "IPPool",
  "apiVersion": "projectcalico.org/v3",
  "metadata": {
    "name": "p"
  },
  "spec": {
    "cidr": "10.0.0.0/16",
    "vxlanMode": "Never",
    "ipipMode": "Never",
    "blockSize": 26,
    "nodeSelector": "all()",
    "allowedUses": [
      "Workload",
      "Tunnel"
    ],
    "assignmentMode": "Automatic"
  }
}"""


# IPAMConfiguration is stored in Calico's /calico/ipam/v2/config form, not as a v3
# document (datastore/resources/ipamconfig.py).
STORED_CASES = [c for c in CASES if c[1]["kind"] != "IPAMConfiguration"]


@pytest.mark.parametrize(("case", "doc", "text"), STORED_CASES, ids=[c[0] for c in STORED_CASES])
def test_stored_form_follows_the_same_rule(case: str, doc: dict[str, Any], text: str) -> None:
    # libcalico-go stores json.Marshal of the same structs, so etcd holds what is printed,
    # less resourceVersion (the etcd mod revision).
    res = parse_document(doc)
    stored = json.loads(res.to_stored())
    assert stored == res.dump()


@pytest.mark.parametrize(("case", "doc", "text"), STORED_CASES, ids=[c[0] for c in STORED_CASES])
def test_documents_stored_in_the_old_form_still_read(case: str, doc: dict[str, Any],
                                                     text: str) -> None:
    # Before this rule tortie stored every set field, zeros included (pydantic's dump
    # without None). Such a document reads back to the same resource as the new form: a
    # zero and an absent field mean the same (`natOutgoing: false` or none, status None
    # or {}), so the two read back print, store and compare as one.
    res = parse_document(doc)
    old_form = json.dumps(res.model_dump(by_alias=True, exclude_none=True, mode="json"))
    assert old_form.encode() != res.to_stored()
    cls = type(res)
    from_old, from_new = cls.from_stored(old_form.encode(), 7), cls.from_stored(res.to_stored(), 7)
    assert from_old.dump() == from_new.dump()
    assert from_old.to_stored() == from_new.to_stored() == res.to_stored()
    printed = from_old.dump()
    assert printed["metadata"].pop("resourceVersion") == "7"
    assert go_yaml(printed) == text
