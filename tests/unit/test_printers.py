"""Printers: calicoctl's tabwriter layout and column content."""

from ctl.printers import PrintContext, render, tabwrite
from datastore.resources import parse_document


def test_tabwriter_pads_every_cell_including_the_last():
    assert tabwrite([["NAME", "CIDR"], ["a", "10.0.0.0/8"]]) == (
        "NAME   CIDR         \n"
        "a      10.0.0.0/8   \n"
    )


def test_tabwriter_minimum_width_is_five():
    assert tabwrite([["A"], ["b"]]) == "A    \nb    \n"


def _pool():
    return parse_document({
        "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
        "metadata": {"name": "ippool-ipip-cross-subnet-1"},
        "spec": {"cidr": "192.168.0.0/16", "ipipMode": "CrossSubnet", "natOutgoing": True}})


def test_ippool_wide_is_calicoctl_layout():
    text = render(type(_pool()), [_pool()], "wide", PrintContext())
    lines = text.split("\n")
    assert lines[0].split() == ["NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED",
                                "DISABLEBGPEXPORT", "SELECTOR"]
    assert lines[1].split() == ["ippool-ipip-cross-subnet-1", "192.168.0.0/16", "true",
                                "CrossSubnet", "Never", "false", "false", "all()"]
    assert "   " in lines[0] and lines[2] == "" and text.endswith("\n\n")


def _node(asn=None):
    bgp = {"ipv4Address": "10.0.0.5/24"}
    if asn is not None:
        bgp["asNumber"] = asn
    return parse_document({"apiVersion": "projectcalico.org/v3", "kind": "Node",
                           "metadata": {"name": "n1"}, "spec": {"bgp": bgp}})


def test_node_asn_inherited_is_parenthesised():
    n = _node()
    inherited = render(type(n), [n], "wide", PrintContext(global_asn=4567, have_bgp_config=True))
    assert inherited.split("\n")[1].split() == ["n1", "(4567)", "10.0.0.5/24"]
    no_config = render(type(n), [n], "wide", PrintContext())
    assert no_config.split("\n")[1].split() == ["n1", "64512", "10.0.0.5/24"]
    own = _node(65001)
    assert render(type(own), [own], "wide", PrintContext()).split("\n")[1].split()[1] == "65001"


def test_bgpconfig_unset_values_print_dash():
    cfg = parse_document({"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration",
                          "metadata": {"name": "default"}, "spec": {}})
    assert render(type(cfg), [cfg], "ps", PrintContext()).split("\n")[1].split() == [
        "default", "-", "-", "-"]


def test_custom_columns_and_yaml_single_vs_list():
    p = _pool()
    assert render(type(p), [p], "custom-columns=name,nat", PrintContext()).split("\n")[1].split() \
        == ["ippool-ipip-cross-subnet-1", "true"]
    single = render(type(p), [p], "yaml", PrintContext(), single=True)
    assert single.startswith("kind: IPPool")
    listing = render(type(p), [p], "yaml", PrintContext(), single=False, revision=9)
    assert "kind: IPPoolList" in listing and "resourceVersion: '9'" in listing
