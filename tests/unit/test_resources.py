"""Resource models: defaults, Calico's validation rules and messages, stored form."""

import json

import pytest

from datastore.errors import ParseError, ValidationError
from datastore.resources import BGPPeer, IPPool, Node, kind_for, parse_document
from datastore.resources.base import parse_asn
from datastore.resources.bgp import parse_peer_ip


def pool(**spec):
    return {"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
            "metadata": {"name": "p1"}, "spec": {"cidr": "10.10.0.0/16", **spec}}


def test_ippool_defaults_match_calico():
    p = parse_document(pool())
    assert isinstance(p, IPPool)
    s = p.spec
    assert (s.ipipMode, s.vxlanMode, s.blockSize, s.nodeSelector, s.allowedUses,
            s.assignmentMode) == ("Never", "Never", 26, "all()", ["Workload", "Tunnel"],
                                  "Automatic")
    v6 = parse_document(pool(cidr="fd00:10::/48"))
    assert v6.spec.blockSize == 122


def test_stored_form_is_calico_json_without_resource_version():
    p = parse_document({**pool(natOutgoing=True), "metadata": {"name": "p1",
                                                               "resourceVersion": "7"}})
    doc = json.loads(p.to_stored())
    assert doc["kind"] == "IPPool" and doc["apiVersion"] == "projectcalico.org/v3"
    assert "resourceVersion" not in doc["metadata"]
    assert doc["spec"] == {"cidr": "10.10.0.0/16", "vxlanMode": "Never", "ipipMode": "Never",
                           "natOutgoing": True, "blockSize": 26, "nodeSelector": "all()",
                           "allowedUses": ["Workload", "Tunnel"], "assignmentMode": "Automatic"}
    back = IPPool.from_stored(p.to_stored(), 42)
    assert back.resource_version == 42 and back.spec == p.spec


@pytest.mark.parametrize("spec, fragment", [
    ({"cidr": "10.10.0.1/16"}, "IPPool.Spec.CIDR = '10.10.0.1/16' (IPPool CIDR is not strictly masked)"),
    ({"cidr": "10.10.0.0/33"}, "IPPool CIDR must be a valid subnet"),
    ({"cidr": "banana"}, "IPPool.Spec.CIDR = 'banana'"),
    ({"ipipMode": "Always", "vxlanMode": "Always"}, "ipipMode and vxlanMode cannot both be enabled"),
    ({"cidr": "fd00::/48", "ipipMode": "Always"}, "IPIP is not supported on IPv6 pools"),
    ({"blockSize": 19}, "blockSize must be between 20 and 32"),
    ({"blockSize": 33}, "IPPool.Spec.BlockSize = '33'"),
    ({"cidr": "10.0.0.0/28"}, "IP pool size is too small for use with Calico IPAM"),
    ({"cidr": "169.254.0.0/16"}, "IPPool CIDR overlaps with IPv4 link local range 169.254.0.0/16"),
    ({"cidr": "fe80::/64", "blockSize": 122}, "IPv6 link local range fe80::/10"),
    ({"ipipMode": "sometimes"}, "IPPool.Spec.IPIPMode = 'sometimes'"),
    ({"blockSize": "26"}, "IPPool.Spec.BlockSize = '26'"),
    ({"natOutgoing": "yes please"}, "IPPool.Spec.NatOutgoing"),
    ({"nodeSelector": "has(a"}, "IPPool.Spec.NodeSelector = 'has(a'"),
    ({"allowedUses": ["LoadBalancer"], "vxlanMode": "Always"}, "LoadBalancer IP pool cannot have IPIP or VXLAN enabled"),
    ({"allowedUses": ["Pets"]}, "IPPool.Spec.AllowedUses[0] = 'Pets'"),
])
def test_ippool_validation_names_field_and_value(spec, fragment):
    with pytest.raises(ValidationError) as err:
        parse_document(pool(**spec))
    assert fragment in str(err.value)


def test_unknown_field_uses_calicoctl_wording():
    with pytest.raises(ParseError) as err:
        parse_document(pool(ipip="Always"))
    assert str(err.value) == ("field in document is not recognized or is in the wrong "
                              "location: spec.ipip")


@pytest.mark.parametrize("doc, message", [
    ({"apiVersion": "projectcalico.org/v3", "kind": "Banana", "metadata": {"name": "x"}},
     "unknown resource type (Banana) and/or version (projectcalico.org/v3)"),
    ({"apiVersion": "v1", "kind": "IPPool", "metadata": {"name": "x"}},
     "unknown resource type (IPPool) and/or version (v1)"),
    ({"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "spec": {"cidr": "10.0.0.0/8"}},
     "resource name may not be empty"),
    ({"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "Bad_Name"},
      "spec": {"cidr": "10.0.0.0/8"}}, "IPPool.Metadata.Name = 'Bad_Name'"),
    ({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
      "metadata": {"name": "x", "namespace": "default"}, "spec": {"cidr": "10.0.0.0/8"}},
     "IPPool is not a namespaced resource"),
    ("just a string", "expected a mapping"),
])
def test_document_level_errors(doc, message):
    with pytest.raises(ValidationError) as err:
        parse_document(doc)
    assert message in str(err.value)


@pytest.mark.parametrize("value, expected", [
    (0, 0), (64512, 64512), (4294967295, 4294967295), ("65000", 65000), ("1.10", 65546),
    ("65535.65535", 4294967295),
])
def test_asn_forms(value, expected):
    assert parse_asn(value) == expected


@pytest.mark.parametrize("value", [-1, 4294967296, "1.65536", "AS65000", 1.1, True, "", None])
def test_asn_rejects(value):
    with pytest.raises(ValueError):
        parse_asn(value)


@pytest.mark.parametrize("text, expected", [
    ("10.0.0.1", ("10.0.0.1", None)), ("10.0.0.1:1179", ("10.0.0.1", 1179)),
    ("[fd00::1]:179", ("fd00::1", 179)), ("fd00::1", ("fd00::1", None)),
])
def test_peer_ip_forms(text, expected):
    assert parse_peer_ip(text) == expected


def peer(**spec):
    return {"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
            "metadata": {"name": "tor"}, "spec": spec}


@pytest.mark.parametrize("spec, fragment", [
    ({"peerIP": "10.0.0.1:99999", "asNumber": 1}, "BGPPeer.Spec.PeerIP = '10.0.0.1:99999'"),
    ({"peerIP": "10.0.0.300", "asNumber": 1}, "BGPPeer.Spec.PeerIP"),
    ({"peerIP": "10.0.0.1", "asNumber": 4294967296}, "BGPPeer.Spec.ASNumber = '4294967296'"),
    ({"peerIP": "10.0.0.1", "asNumber": 1, "node": "a", "nodeSelector": "all()"},
     "node and nodeSelector cannot both be set"),
    ({"peerSelector": "has(rr)", "peerIP": "10.0.0.1"},
     "peerIP and peerSelector cannot both be set"),
    ({"peerSelector": "has(rr)", "asNumber": 1}, "asNumber must be empty when peerSelector is set"),
    ({"peerIP": "10.0.0.1", "asNumber": 1, "keepaliveTime": "often"}, "BGPPeer.Spec.KeepaliveTime"),
])
def test_bgppeer_validation(spec, fragment):
    with pytest.raises(ValidationError) as err:
        parse_document(peer(**spec))
    assert fragment in str(err.value)


def test_bgppeer_dotted_asn_is_stored_as_integer():
    p = parse_document(peer(peerIP="10.0.0.1", asNumber="1.10", node="n1"))
    assert isinstance(p, BGPPeer)
    assert json.loads(p.to_stored())["spec"]["asNumber"] == 65546


def test_node_requires_prefix_on_ipv4_address():
    doc = {"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": "n1"},
           "spec": {"bgp": {"ipv4Address": "10.0.0.5"}}}
    with pytest.raises(ValidationError) as err:
        parse_document(doc)
    assert "Node.Spec.BGP.IPv4Address = '10.0.0.5'" in str(err.value)
    doc["spec"]["bgp"]["ipv4Address"] = "10.0.0.5/24"
    node = parse_document(doc)
    assert isinstance(node, Node) and node.ipv4_address == "10.0.0.5/24"


def test_several_field_errors_are_listed():
    with pytest.raises(ValidationError) as err:
        parse_document(pool(ipipMode="x", vxlanMode="y"))
    text = str(err.value)
    assert text.startswith("error with the following fields:")
    assert "IPPool.Spec.IPIPMode" in text and "IPPool.Spec.VXLANMode" in text


@pytest.mark.parametrize("alias", ["ippool", "ippools", "ipp", "ipps", "pool", "pools", "IPPool"])
def test_ippool_aliases(alias):
    assert kind_for(alias) is IPPool


@pytest.mark.parametrize("alias, kind", [
    ("node", "Node"), ("nos", "Node"), ("bgpp", "BGPPeer"), ("bps", "BGPPeer"),
    ("bgpconfig", "BGPConfiguration"), ("bgpconfigs", "BGPConfiguration"),
    ("ipamconfig", "IPAMConfiguration"),
])
def test_other_aliases(alias, kind):
    assert kind_for(alias).kind_name == kind


# -- tortie's own cases for the rules Calico's table does not cover ------------------------

def test_ippool_zero_block_size_and_empty_uses_take_calicos_defaults():
    p = parse_document(pool(blockSize=0, allowedUses=[]))
    assert (p.spec.blockSize, p.spec.allowedUses) == (26, ["Workload", "Tunnel"])


def test_ippool_loadbalancer_use_cannot_be_changed_back():
    from datastore.resources.ippool import immutable_changes
    stored = parse_document(pool(allowedUses=["LoadBalancer"]))
    for uses in (["Workload"], ["Tunnel"]):
        errs = immutable_changes(parse_document(pool(allowedUses=uses)), stored)
        assert [str(e) for e in errs] == [
            f"error with field IPPool.Spec.AllowedUses = '{uses[0]}' (IPPool allowed use cannot "
            "be changed from LoadBalacer to Workload or Tunnel)"]
    assert immutable_changes(stored, stored) == []


def test_ippool_global_anywhere_in_a_selector_is_refused():
    with pytest.raises(ValidationError) as err:
        parse_document(pool(nodeSelector="has(a) && global()"))
    assert "global() selector is not valid for IPPool nodeSelector" in str(err.value)


def test_bgppeer_without_as_or_target_is_accepted_as_calico_does():
    assert parse_document(peer(peerIP="10.0.0.1")).spec.asNumber is None
    assert parse_document(peer(sourceAddress="None")).spec.peerIP is None
    assert parse_document(peer(peerSelector="has(rr)", asNumber=0)).spec.asNumber == 0
    lw = parse_document(peer(localWorkloadSelector="has(bgp)", asNumber=65010))
    assert lw.spec.localWorkloadSelector == "has(bgp)"


@pytest.mark.parametrize("spec, fragment", [
    ({"peerIP": "10.0.0.1", "filters": ["Bad_Filter"]}, "BGPPeer.Spec.Filters"),
    ({"node": "Node_1", "peerIP": "10.0.0.1"}, "BGPPeer.Spec.Node = 'Node_1'"),
    ({"peerIP": "10.0.0.1", "keepOriginalNextHop": True, "nextHopMode": "Self"},
     "BGPPeer.Spec.KeepOriginalNextHop = 'true' (keepOriginalNextHop and nextHopMode cannot "
     "both be set"),
])
def test_bgppeer_more_rules(spec, fragment):
    with pytest.raises(ValidationError) as err:
        parse_document(peer(**spec))
    assert fragment in str(err.value)


def bgpconfig(**spec):
    return {"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration",
            "metadata": {"name": "default"}, "spec": spec}


def test_bgpconfiguration_keeps_log_severity_as_written_and_mesh_fields_when_mesh_unset():
    c = parse_document(bgpconfig(logSeverityScreen="debug", nodeMeshMaxRestartTime="2m",
                                 ignoredInterfaces=["eth*", "ens3.100"]))
    assert json.loads(c.to_stored())["spec"]["logSeverityScreen"] == "debug"


@pytest.mark.parametrize("spec, fragment", [
    ({"communities": [{"name": "Bad_Name", "value": "1:1"}],
      "prefixAdvertisements": [{"cidr": "10.0.0.0/8", "communities": ["1:1"]}]},
     "BGPConfiguration.Spec.Communities[0].Name = 'Bad_Name'"),
    ({"prefixAdvertisements": [{"cidr": "10.0.0.0/8", "communities": ["1:2", "65536:1"]}]},
     "PrefixAdvertisements[0].Communities[1] = '65536:1' (invalid community value, expected 16 "
     "bit value)"),
    ({"prefixAdvertisements": [{"cidr": "10.0.0.1/8", "communities": []}]},
     "PrefixAdvertisements[0].CIDR = '10.0.0.1/8' (is not strictly masked)"),
    ({"ignoredInterfaces": ["eth0", "an-interface-name-too-long"]},
     "BGPConfiguration.Spec.IgnoredInterfaces[1] = 'an-interface-name-too-long'"),
    ({"logSeverityScreen": "verbose"}, "BGPConfiguration.Spec.LogSeverityScreen = 'verbose'"),
])
def test_bgpconfiguration_rules(spec, fragment):
    with pytest.raises(ValidationError) as err:
        parse_document(bgpconfig(**spec))
    assert fragment in str(err.value)


def test_node_wireguard_key_must_be_32_bytes():
    import base64
    doc = {"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": "n1"},
           "spec": {}, "status": {"wireguardPublicKeyV6": base64.b64encode(b"k" * 31).decode()}}
    with pytest.raises(ValidationError) as err:
        parse_document(doc)
    assert "Node.Status.WireguardPublicKeyV6" in str(err.value)
    assert "32 bytes" in str(err.value)


def test_annotation_total_size_is_counted_in_bytes():
    big = "é" * (128 * 1024)  # 2 bytes each in UTF-8: 256 KiB of value, plus the key
    with pytest.raises(ValidationError) as err:
        parse_document({**pool(), "metadata": {"name": "p1", "annotations": {"k": big}}})
    assert str(err.value) == ("error with field IPPool.Metadata.Annotations = '262145 bytes' "
                              "(total size of annotations is too large by 1 bytes)")


def test_ipamconfiguration_max_blocks_bound():
    doc = {"apiVersion": "projectcalico.org/v3", "kind": "IPAMConfiguration",
           "metadata": {"name": "default"},
           "spec": {"strictAffinity": True, "maxBlocksPerHost": 1_000_001}}
    with pytest.raises(ValidationError) as err:
        parse_document(doc)
    assert "IPAMConfiguration.Spec.MaxBlocksPerHost = '1000001'" in str(err.value)
