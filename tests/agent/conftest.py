"""Helpers for the agent start-up tests: a store on the test etcd, synthetic hosts, one call
that runs the whole start-up the way the agent does (config from an environment)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

from agent.autodetect import Interface
from agent.config import load
from agent.startup import StartupResult, run_startup
from datastore.resources import parse_document
from datastore.store import ResourceStore
from ipam.allocator import Allocator


def iface(name: str, index: int, *addrs: str) -> Interface:
    return Interface(name, index, tuple(ipaddress.ip_interface(a) for a in addrs))


# A host with one routable address, as the tests' default.
HOST = (iface("lo", 1, "127.0.0.1/8", "::1/128"),
        iface("eth0", 2, "10.0.0.5/24", "fd00::5/64", "fe80::5/64"),
        iface("docker0", 3, "172.17.0.1/16"))


@pytest.fixture
def store(etcd_client) -> ResourceStore:
    return ResourceStore(etcd_client)


@pytest.fixture
def allocator(etcd_client) -> Allocator:
    return Allocator(etcd_client)


Start = Callable[..., StartupResult]


@pytest.fixture
def start(store: ResourceStore, tmp_path: Path) -> Start:
    """start(env, interfaces=HOST, **kw): run_startup with the test etcd and a private
    node-name file. NODENAME defaults to node-a; the default pool to 10.65.0.0/16."""

    def run(env: Mapping[str, str] | None = None, interfaces: Sequence[Interface] = HOST,
            **kw: object) -> StartupResult:
        environ = {"NODENAME": "node-a", "CALICO_IPV4POOL_CIDR": "10.65.0.0/16",
                   **(env or {})}
        environ = {k: v for k, v in environ.items() if v is not None}
        kw.setdefault("nodename_file", str(tmp_path / "nodename"))
        kw.setdefault("gethostname", lambda: "Unused-Host")
        # A fresh allocator per start, as a restarted agent has.
        kw.setdefault("allocator", Allocator(store.client))
        return run_startup(store, load(environ, log=False), environ,
                           interfaces=interfaces, **kw)  # type: ignore[arg-type]

    return run


def make(store: ResourceStore, kind: str, name: str, spec: dict[str, object],
         labels: dict[str, str] | None = None):
    meta: dict[str, object] = {"name": name}
    if labels:
        meta["labels"] = labels
    return store.create(parse_document({"apiVersion": "projectcalico.org/v3", "kind": kind,
                                        "metadata": meta, "spec": spec}))
