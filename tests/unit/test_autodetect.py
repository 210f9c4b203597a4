"""IP autodetection against synthetic interface lists: every method, Calico's messages."""

from __future__ import annotations

import ipaddress

import pytest

from agent.autodetect import (
    DEFAULT_INTERFACES_TO_EXCLUDE,
    Detected,
    Interface,
    detect,
    filter_interfaces,
    is_global_unicast,
    local_cidr,
    node_interfaces,
    parse_method,
)
from agent.errors import AutodetectError


def iface(name: str, index: int, *addrs: str, up: bool = True) -> Interface:
    return Interface(name, index, tuple(ipaddress.ip_interface(a) for a in addrs), up)


HOST = [
    iface("lo", 1, "127.0.0.1/8", "::1/128"),
    iface("eth0", 2, "10.0.0.5/24", "fd00::5/64", "fe80::1/64"),
    iface("eth1", 3, "192.168.7.9/16"),
    iface("docker0", 4, "172.17.0.1/16"),
    iface("cali1234567890a", 5, "169.254.1.1/32"),
    iface("vxlan.calico", 6, "10.65.0.1/32"),
    iface("br-2f1e", 7, "172.18.0.1/16"),
]


def test_default_excludes_are_calicos_list() -> None:
    assert DEFAULT_INTERFACES_TO_EXCLUDE == (
        "^docker.*", "^cbr.*", "^dummy.*", "^podman.*",
        "^virbr.*", "^lxcbr.*", "^veth.*", "^lo", "^br-.*",
        "^cali.*", "^tunl.*", "^flannel.*", "^kube-ipvs.*", "^cni.*",
        "^vxlan\\.calico.*", "^vxlan-v6\\.calico.*", "^wireguard\\.cali.*", "^wg-v6\\.cali.*",
        "^nodelocaldns.*",
    )


@pytest.mark.parametrize("method", [None, "", "first-found", "  first-found "])
def test_first_found_walks_highest_index_first_and_skips_excluded(method: str | None) -> None:
    d = detect(method, 4, HOST)
    # eth1 (index 3) beats eth0 (index 2): reverse order; docker0, cali*, vxlan.calico,
    # br-* (higher indexes) are excluded by default.
    assert d == Detected("192.168.7.9/16", "eth1", "first-found")
    assert d.candidates == ("eth0 10.0.0.5/24",)
    assert d.ip == "192.168.7.9"
    assert d.describe() == "first-found eth1"


def test_first_found_skips_loopback_and_link_local() -> None:
    ifaces = [iface("eth0", 2, "169.254.3.3/16", "10.1.1.1/24"), iface("eth9", 9, "127.0.0.2/8")]
    assert detect("first-found", 4, ifaces).address == "10.1.1.1/24"


def test_first_found_ipv6_ignores_link_local() -> None:
    d = detect("first-found", 6, HOST)
    assert d.address == "fd00::5/64" and d.interface == "eth0"


def test_first_found_within_one_interface_takes_the_first_address() -> None:
    ifaces = [iface("ens3", 2, "10.2.0.7/24", "10.3.0.7/24")]
    d = detect("first-found", 4, ifaces)
    assert d.address == "10.2.0.7/24"
    assert d.candidates == ("ens3 10.3.0.7/24",)


def test_order_is_by_index_not_list_position() -> None:
    ifaces = [iface("ens9", 9, "10.9.0.1/24"), iface("ens2", 2, "10.2.0.1/24")]
    assert detect("first-found", 4, list(reversed(ifaces))).interface == "ens9"


def test_first_found_no_interfaces_left() -> None:
    with pytest.raises(AutodetectError) as err:
        detect("first-found", 4, [iface("lo", 1, "127.0.0.1/8"), iface("docker0", 2, "172.17.0.1/16")])
    assert str(err.value) == "Unable to auto-detect an IPv4 address: no valid host interfaces found"


def test_first_found_no_address_of_family() -> None:
    with pytest.raises(AutodetectError) as err:
        detect("first-found", 6, [iface("eth0", 2, "10.0.0.1/24", "fe80::1/64")])
    assert str(err.value) == (
        "Unable to auto-detect an IPv6 address: "
        "no valid IPv6 addresses found on the host interfaces")


def test_interface_regex_list_has_no_default_excludes() -> None:
    d = detect("interface=docker.*", 4, HOST)
    assert (d.address, d.interface) == ("172.17.0.1/16", "docker0")
    d = detect("interface=eth0 , doesnotexist", 4, HOST)
    assert (d.address, d.interface, d.method) == ("10.0.0.5/24", "eth0", "interface=eth0 , doesnotexist")


def test_interface_regex_is_unanchored_search() -> None:
    assert detect("interface=th0", 4, HOST).interface == "eth0"


def test_interface_regex_list_uses_reverse_index_order() -> None:
    assert detect("interface=eth0,eth1", 4, HOST).interface == "eth1"


def test_interface_no_match_message() -> None:
    with pytest.raises(AutodetectError) as err:
        detect("interface=ens.*,enp.*", 4, HOST)
    assert str(err.value) == (
        "Unable to auto-detect an IPv4 address using interface regexes [ens.* enp.*]: "
        "no valid host interfaces found")


def test_skip_interface_adds_to_default_excludes() -> None:
    d = detect("skip-interface=eth1", 4, HOST)
    assert d.interface == "eth0"
    with pytest.raises(AutodetectError) as err:
        detect("skip-interface=eth.*", 4, HOST)
    assert str(err.value) == (
        "Unable to auto-detect an IPv4 address while excluding [eth.*]: "
        "no valid host interfaces found")


def test_cidr_considers_every_interface() -> None:
    d = detect("cidr=172.17.0.0/16", 4, HOST)
    assert (d.address, d.interface) == ("172.17.0.1/16", "docker0")
    d = detect("cidr=10.0.0.0/8, 192.168.0.0/16", 4, HOST)
    assert d.interface == "eth1"  # both match; highest index first
    # The agent's own devices never give the node address, even inside the CIDR
    # (vxlan.calico 10.65.0.1 has the highest index and lies in 10/8).
    d = detect("cidr=10.0.0.0/8", 4, HOST)
    assert (d.interface, d.candidates) == ("eth0", ())
    assert detect("cidr=10.0.0.5/32", 4, HOST).address == "10.0.0.5/24"


def test_cidr_no_match_message() -> None:
    with pytest.raises(AutodetectError) as err:
        detect("cidr=10.99.0.0/16", 4, HOST)
    assert str(err.value) == (
        "Unable to auto-detect an IPv4 address using interface cidr [10.99.0.0/16]: "
        "no valid IPv4 addresses found on the host interfaces")


@pytest.mark.parametrize("bad", ["10.0.0.300/24", "banana", "10.0.0.0", "10.0.0.0/33"])
def test_invalid_cidr_message(bad: str) -> None:
    with pytest.raises(AutodetectError) as err:
        parse_method(f"cidr=10.0.0.0/8,{bad}")
    assert str(err.value) == (
        f'Invalid CIDR "{bad}" for IP autodetection method: cidr=10.0.0.0/8,{bad}')


def test_can_reach_matches_the_kernels_source_to_an_interface() -> None:
    asked = []

    def reach(dest: str, version: int) -> str:
        asked.append((dest, version))
        return "10.0.0.5"

    d = detect("can-reach=8.8.8.8", 4, HOST, reach=reach)
    assert (d.address, d.interface, d.method) == ("10.0.0.5/24", "eth0", "can-reach=8.8.8.8")
    assert asked == [("8.8.8.8", 4)]


def test_can_reach_matches_excluded_interfaces_too() -> None:
    d = detect("can-reach=172.17.5.5", 4, HOST, reach=lambda dest, v: "172.17.0.1")
    assert d.interface == "docker0"


def test_can_reach_source_not_local() -> None:
    with pytest.raises(AutodetectError) as err:
        detect("can-reach=example.com", 4, HOST, reach=lambda dest, v: "203.0.113.9")
    assert str(err.value) == (
        "Unable to auto-detect IPv4 address by connecting to example.com: autodetected IPv4 "
        "address does not match any addresses found on local interfaces: 203.0.113.9")


def test_can_reach_lookup_failure() -> None:
    def reach(dest: str, version: int) -> str:
        raise OSError(101, "Network is unreachable")

    with pytest.raises(AutodetectError) as err:
        detect("can-reach=10.200.0.1", 4, HOST, reach=reach)
    assert str(err.value).startswith(
        "Unable to auto-detect IPv4 address by connecting to 10.200.0.1: ")
    assert "Network is unreachable" in str(err.value)


def test_kubernetes_internal_ip_is_refused_outside_kubernetes() -> None:
    with pytest.raises(AutodetectError) as err:
        detect("kubernetes-internal-ip", 4, HOST)
    assert str(err.value) == (
        "Cannot use method 'kubernetes-internal-ip' when not running on a Kubernetes cluster")


@pytest.mark.parametrize("method", ["bogus", "interfaces=eth0", "first-found=1", "can_reach=x"])
def test_invalid_method(method: str) -> None:
    with pytest.raises(AutodetectError) as err:
        detect(method, 4, HOST)
    assert str(err.value) == f"Invalid IP autodetection method: {method}"


@pytest.mark.parametrize("method", ["interface=", "skip-interface=", "cidr=", "can-reach="])
def test_empty_argument_is_refused(method: str) -> None:
    with pytest.raises(AutodetectError, match="needs a value"):
        parse_method(method)


def test_invalid_regex_names_it() -> None:
    with pytest.raises(AutodetectError) as err:
        parse_method("interface=eth[0")
    assert "Invalid interface regex 'eth[0'" in str(err.value)


def test_parse_method_splits_on_commas_with_spaces() -> None:
    m = parse_method("interface=eth0 ,  ens.* ,bond0")
    assert m.kind == "interface" and m.regexes == ("eth0", "ens.*", "bond0")
    m = parse_method("cidr=10.0.0.0/8 , fd00::/8")
    assert [str(c) for c in m.cidrs] == ["10.0.0.0/8", "fd00::/8"]


def test_is_global_unicast_matches_go() -> None:
    def g(text: str) -> bool:
        return is_global_unicast(ipaddress.ip_address(text))

    assert g("10.0.0.1") and g("192.168.1.1") and g("8.8.8.8") and g("fd00::1")
    assert g("2001:db8::1")
    for text in ("0.0.0.0", "127.0.0.1", "169.254.1.1", "224.0.0.1", "255.255.255.255",
                 "::", "::1", "fe80::1", "ff02::1"):
        assert not g(text), text


def test_filter_interfaces() -> None:
    names = [i.name for i in filter_interfaces(HOST, (), DEFAULT_INTERFACES_TO_EXCLUDE)]
    assert names == ["eth1", "eth0"]
    names = [i.name for i in filter_interfaces(HOST, ("^eth", "^br-"), ("1$",))]
    assert names == ["br-2f1e", "eth0"]


def test_local_cidr_fills_the_prefix() -> None:
    assert local_cidr("10.0.0.5", HOST) == ("10.0.0.5/24", "eth0")
    assert local_cidr("10.0.0.5/16", HOST) == ("10.0.0.5/16", "eth0")  # given prefix wins
    assert local_cidr("10.9.9.9", HOST) == ("10.9.9.9", None)
    assert local_cidr("fd00::5", HOST) == ("fd00::5/64", "eth0")


def test_node_interfaces_sorted_by_name_with_excludes() -> None:
    assert node_interfaces(HOST, [4]) == [
        {"name": "eth0", "addresses": ["10.0.0.5"]},
        {"name": "eth1", "addresses": ["192.168.7.9"]},
    ]
    assert node_interfaces(HOST, [4, 6])[0] == {
        "name": "eth0", "addresses": ["10.0.0.5", "fd00::5", "fe80::1"]}


def test_interface_accepts_strings() -> None:
    i = Interface("eth0", 2, ["10.0.0.1/24"])  # type: ignore[arg-type]
    assert i.addresses == (ipaddress.ip_interface("10.0.0.1/24"),)
