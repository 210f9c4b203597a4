"""Shared fixtures. Real etcd, started per session on free loopback ports.

Tiers (see docs/testing.md): tests/unit needs nothing; tests/datastore needs
the etcd binary; tests/dataplane and tests/e2e need root and netns. A test
whose requirement is missing is skipped with a reason naming what is missing.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.etcd import EtcdMember, start_single


def _need_etcd() -> None:
    if not shutil.which("etcd"):
        pytest.skip("etcd binary not installed (apt package etcd-server; `make test` installs it)")


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdMember]:
    """One etcd for the whole session; tests isolate themselves by wiping /calico/."""
    _need_etcd()
    member = start_single(tmp_path_factory.mktemp("etcd"))
    yield member
    member.stop()


@pytest.fixture
def etcd_endpoint(etcd_server: EtcdMember) -> Iterator[str]:
    """A clean datastore: every key under /calico/ removed before the test."""
    from datastore.config import load_env
    from datastore.etcd import EtcdClient

    with EtcdClient(load_env({"ETCD_ENDPOINTS": etcd_server.client_url})) as client:
        client._client.delete_prefix("/calico/")
    yield etcd_server.client_url


@pytest.fixture
def etcd_client(etcd_endpoint: str):
    from datastore.config import load_env
    from datastore.etcd import EtcdClient

    with EtcdClient(load_env({"ETCD_ENDPOINTS": etcd_endpoint})) as client:
        yield client


@pytest.fixture
def private_etcd(tmp_path: Path) -> Iterator[EtcdMember]:
    """An etcd of the test's own, for tests that restart, compact or break it."""
    _need_etcd()
    member = start_single(tmp_path)
    yield member
    member.stop()


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    if not shutil.which("ip"):
        pytest.skip("iproute2 'ip' not installed")


@pytest.fixture
def unique_name() -> str:
    return "t" + uuid.uuid4().hex[:6]
