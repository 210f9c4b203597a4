"""The default IPv4 pool on first start: from the environment, exactly once."""

from __future__ import annotations

import threading

import pytest

from datastore.config import load_env
from datastore.etcd import EtcdClient
from datastore.resources import IPPool
from datastore.store import ResourceStore
from ipam.errors import DefaultPoolConfigError
from ipam.pools import ensure_default_pool

from .conftest import dump, make_pool


def test_creates_the_default_pool_once(etcd_client, store):
    created = ensure_default_pool(store, {"CALICO_IPV4POOL_IPIP": "Always"})
    assert created is not None and created.resource_version
    stored = store.get(IPPool, "default-ipv4-ippool")
    assert stored.spec.cidr == "192.168.0.0/16" and stored.spec.ipipMode == "Always"
    assert stored.spec.natOutgoing is True and stored.metadata.uid
    assert ensure_default_pool(store, {"CALICO_IPV4POOL_CIDR": "10.9.0.0/16"}) is None
    assert [p.name for p in store.list(IPPool)] == ["default-ipv4-ippool"]


def test_host_address_in_192_168_moves_the_default(etcd_client, store):
    created = ensure_default_pool(store, {}, host_addresses=["192.168.7.3/24"])
    assert created is not None and created.spec.cidr == "172.16.0.0/16"


def test_any_ipv4_pool_means_no_default(etcd_client, store):
    make_pool(store, "mine", "10.1.0.0/16")
    assert ensure_default_pool(store, {}) is None
    assert [p.name for p in store.list(IPPool)] == ["mine"]


def test_an_ipv6_pool_does_not_count(etcd_client, store):
    make_pool(store, "v6", "fd00:1::/64")
    assert ensure_default_pool(store, {}) is not None


def test_disabled_by_environment_and_bad_settings_write_nothing(etcd_client, store):
    before = dump(etcd_client)
    assert ensure_default_pool(store, {"NO_DEFAULT_POOLS": "true"}) is None
    assert ensure_default_pool(store, {"CALICO_IPV4POOL_CIDR": "none"}) is None
    with pytest.raises(DefaultPoolConfigError):
        ensure_default_pool(store, {"CALICO_IPV4POOL_VXLAN": "sometimes"})
    assert dump(etcd_client) == before


def test_concurrent_starts_create_exactly_one_pool(etcd_endpoint, store):
    barrier = threading.Barrier(8)
    results: list[object] = []
    errors: list[BaseException] = []

    def start(i: int) -> None:
        with EtcdClient(load_env({"ETCD_ENDPOINTS": etcd_endpoint})) as client:
            env = {"CALICO_IPV4POOL_CIDR": f"10.{100 + i}.0.0/16"}  # each would pick its own
            barrier.wait()
            try:
                results.append(ensure_default_pool(ResourceStore(client), env))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.list(IPPool)) == 1
    assert sum(r is not None for r in results) == 1
