"""Helpers for the IPAM tests: pools and nodes in etcd, a settable clock, ctl in-process."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from datastore.resources import parse_document
from datastore.store import ResourceStore
from ipam.allocator import Allocator


class FakeClock:
    """A clock tests move by hand (IPAM reads it for claim times and reclaim ages)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def make_pool(store: ResourceStore, name: str, cidr: str, **spec: object):
    return store.create(parse_document({
        "apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": name},
        "spec": {"cidr": cidr, **spec}}))


def make_node(store: ResourceStore, name: str, labels: dict[str, str] | None = None, **spec):
    meta: dict[str, object] = {"name": name}
    if labels:
        meta["labels"] = labels
    return store.create(parse_document({
        "apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": meta, "spec": spec}))


def dump(client) -> list[tuple[str, bytes, int]]:
    items, _ = client.list("/")
    return [(kv.key, kv.value, kv.mod_revision) for kv in items]


@dataclass
class CtlResult:
    rc: int
    out: str
    err: str


@pytest.fixture
def store(etcd_client) -> ResourceStore:
    return ResourceStore(etcd_client)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def allocator(etcd_client, clock) -> Allocator:
    return Allocator(etcd_client, clock=clock)


@pytest.fixture
def ctl(etcd_endpoint, monkeypatch):
    """Run `ctl ...` in this process against the test etcd; returns CtlResult."""
    from ctl.main import main

    monkeypatch.setenv("ETCD_ENDPOINTS", etcd_endpoint)

    def run(*args: str) -> CtlResult:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(list(args))
        return CtlResult(rc, out.getvalue(), err.getvalue())

    return run
