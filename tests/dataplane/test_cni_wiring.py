"""cni/wiring.py against a real kernel (root): a pod's veth wired and unwired over netlink,
and each error path naming what failed.

The "host" is a throwaway namespace entered by a NetnsWorker thread (the wiring's host side
acts in its calling thread's namespace, as the CNI server's does in the node's); the pod is
another throwaway namespace, given to the wiring by path, as CNI_NETNS is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agent.dataplane.netns import NetnsWorker
from cni import wiring
from cni.errors import Conflict, ContainerUnknown, DataplaneFailure
from tests.dataplane.helpers import ns_exec, routes, sh
from tests.support import new_netns

pytestmark = pytest.mark.root

T = TypeVar("T")
HOST_IF = "calinlwire0test"
POD_MAC = "02:11:22:33:44:55"


class Host:
    """Runs wiring calls in the host namespace (one thread that entered it)."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self._worker = NetnsWorker(ns, "wiring-test")

    def __call__(self, fn: Callable[..., T], *args: Any) -> T:
        return self._worker.run(fn, *args)

    def close(self) -> None:
        self._worker.close()


@pytest.fixture
def host(netns: str) -> Iterator[Host]:
    h = Host(netns)
    yield h
    h.close()


@pytest.fixture
def pod() -> Iterator[str]:
    with new_netns("pod") as name:
        yield name


def plan_for(pod: str, *addresses: str) -> wiring.VethPlan:
    return wiring.VethPlan(HOST_IF, "eth0", f"/run/netns/{pod}", 1410, POD_MAC,
                           addresses or ("10.65.0.5",))


def host_links(host: Host) -> list[str]:
    return [line.split(":")[1].strip().split("@")[0]
            for line in sh(host.ns, "-o", "link").splitlines()]


def test_wire_check_rewire_and_unwire(host: Host, pod: str) -> None:
    plan = plan_for(pod)
    host(wiring.wire, plan)
    link = sh(host.ns, "-d", "link", "show", HOST_IF)
    assert "ee:ee:ee:ee:ee:ee" in link and "mtu 1410" in link and "state UP" in link
    assert f"link-netns {pod}" in link
    assert routes(host.ns) == [f"10.65.0.5 dev {HOST_IF} scope link"]
    assert ns_exec(host.ns, "cat", f"/proc/sys/net/ipv4/conf/{HOST_IF}/proxy_arp").strip() == "1"
    addr = sh(pod, "addr", "show", "eth0")
    assert "inet 10.65.0.5/32 scope global eth0" in addr and POD_MAC in addr
    assert "mtu 1410" in addr and "state UP" in addr
    assert routes(pod) == ["default via 169.254.1.1 dev eth0", "169.254.1.1 dev eth0 scope link"]
    assert host(wiring.check, plan) is None
    # A retried ADD replaces the host veth of the same name (and its peer with it).
    host(wiring.wire, plan)
    assert host(wiring.problems, plan, host(wiring.observe, plan)) == []
    assert host(wiring.unwire, plan.netns, "eth0") is True
    assert HOST_IF not in host_links(host) and routes(host.ns) == []
    assert "eth0" not in sh(pod, "-o", "link")
    assert host(wiring.unwire, plan.netns, "eth0") is False  # DEL is idempotent


def test_an_eth0_that_is_not_ours_is_a_conflict(host: Host, pod: str) -> None:
    sh(pod, "link", "add", "eth0", "type", "veth", "peer", "name", "other")
    with pytest.raises(Conflict) as err:
        host(wiring.wire, plan_for(pod))
    assert err.value.code == 103
    assert f"an interface named eth0 already exists in the container's network namespace " \
           f"/run/netns/{pod}" in str(err.value)
    assert HOST_IF not in host_links(host)
    assert "other" in sh(pod, "-o", "link")  # left alone


def test_a_host_route_held_by_another_device_is_a_conflict_naming_it(host: Host,
                                                                      pod: str) -> None:
    sh(host.ns, "route", "add", "10.65.0.9/32", "dev", "lo")
    with pytest.raises(Conflict) as err:
        host(wiring.wire, plan_for(pod, "10.65.0.9"))
    assert err.value.code == 103
    assert (f"route 10.65.0.9/32 already exists for an interface other than {HOST_IF} (dev lo)"
            in str(err.value))
    # The veth is left for the caller's rollback, which removes it (and only once).
    assert host(wiring.remove_host_veth, HOST_IF) is True
    assert host(wiring.remove_host_veth, HOST_IF) is False
    assert routes(host.ns) == ["10.65.0.9 dev lo scope link"]
    assert "eth0" not in sh(pod, "-o", "link")


def test_a_container_step_that_fails_is_named(host: Host, pod: str) -> None:
    # Something in the pod already routes to the gateway.
    sh(pod, "link", "add", "other", "up", "type", "veth", "peer", "name", "otherpeer")
    sh(pod, "link", "set", "otherpeer", "up")
    sh(pod, "route", "add", "169.254.1.1", "dev", "other", "scope", "link")
    with pytest.raises(DataplaneFailure) as err:
        host(wiring.wire, plan_for(pod))
    assert err.value.code == 102
    assert ("could not configure eth0 in the container (route add 169.254.1.1 dev eth0 "
            "scope link): File exists") in str(err.value)
    assert host(wiring.remove_host_veth, HOST_IF) is True
    assert "eth0" not in sh(pod, "-o", "link")


def test_a_vanished_namespace(host: Host, tmp_path: Path) -> None:
    with new_netns("gone") as gone:
        path = f"/run/netns/{gone}"
    with pytest.raises(ContainerUnknown) as err:
        host(wiring.wire, plan_for(gone))
    assert err.value.code == 3 and f"network namespace {path} does not exist" in str(err.value)
    assert HOST_IF not in host_links(host)
    assert host(wiring.unwire, path, "eth0") is False
    assert host(wiring.unwire, "", "eth0") is False
    # A path that is not a namespace at all: each side says what it could not do.
    not_ns = tmp_path / "not-a-netns"
    not_ns.write_text("")
    with pytest.raises(DataplaneFailure) as err:
        host(wiring.wire, plan_for(gone)._replace(netns=str(not_ns)))
    assert f"could not create host interface {HOST_IF} (link add {HOST_IF}" in str(err.value)
    assert HOST_IF not in host_links(host)
    with pytest.raises(DataplaneFailure) as err:
        host(wiring.unwire, str(not_ns), "eth0")
    assert f"could not delete eth0 in {not_ns}" in str(err.value) and "setns" in str(err.value)


def test_an_interface_already_gone_is_fine_for_unwire(host: Host, pod: str) -> None:
    assert host(wiring.unwire, f"/run/netns/{pod}", "eth0") is False
    assert host(wiring.remove_host_veth, HOST_IF) is False


def test_a_pair_made_before_the_address_leaves_a_same_named_host_end_alone(
        host: Host, pod: str) -> None:
    # cmd_add makes the pair while IPAM answers, without replacing anything: a host end of
    # that name (a retried ADD, the pod's previous sandbox) stays until the address is ours.
    first = plan_for(pod)
    host(wiring.wire, first)
    with new_netns("pod2") as second_pod:
        second = plan_for(second_pod)._replace(addresses=())
        assert host(wiring.create_pair, second, False) is None
        assert f"link-netns {pod}" in sh(host.ns, "-d", "link", "show", HOST_IF)  # untouched
        assert "eth0" not in sh(second_pod, "-o", "link")
        # Replacing (once the address is ours) makes the new pair, then addresses it.
        pair = host(wiring.create_pair, second)
        assert pair is not None
        try:
            assert "state UP" in sh(second_pod, "link", "show", "eth0")
            assert routes(host.ns) == []  # no route before the address is known
            host(pair.address, ("10.65.0.6",))
        finally:
            pair.close()
        assert f"link-netns {second_pod}" in sh(host.ns, "-d", "link", "show", HOST_IF)
        assert routes(host.ns) == [f"10.65.0.6 dev {HOST_IF} scope link"]
        assert "inet 10.65.0.6/32" in sh(second_pod, "addr", "show", "eth0")
        assert host(wiring.unwire, second.netns, "eth0") is True


def test_a_new_pair_is_made_without_replacing(host: Host, pod: str) -> None:
    pair = host(wiring.create_pair, plan_for(pod)._replace(addresses=()), False)
    assert pair is not None
    try:
        host(pair.address, ("10.65.0.5",))
    finally:
        pair.close()
    assert host(wiring.problems, plan_for(pod), host(wiring.observe, plan_for(pod))) == []
