"""Shared fixtures. Real etcd, started per session on free loopback ports.

Tiers (see docs/testing.md): tests/unit needs nothing; tests/datastore needs
the etcd binary; tests/dataplane and tests/e2e need root and netns. A test
whose requirement is missing is skipped with a reason naming what is missing.
tests/support.py (loaded here as a plugin) holds the netns/veth fixtures,
`need`, `wait_until` and the session-end leftover check.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# No deadline and no "too slow" check for any property test: both are timing assertions,
# and on this shared machine an example that takes 0.4 ms quiet takes 400 ms at load 80.
settings.register_profile("tortie", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("tortie")

# The support module is a plugin (pytest_plugins) and is imported here too: register it
# for assertion rewriting before that import, as pytest does for conftest files.
pytest.register_assert_rewrite("tests.support")
pytest_plugins = ["tests.support"]

from lab.etcd import EtcdMember  # noqa: E402
from tests.support import start_etcd  # noqa: E402


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdMember]:
    """One etcd for the whole session; tests isolate themselves by wiping /calico/."""
    member = start_etcd(tmp_path_factory.mktemp("etcd"))
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
    member = start_etcd(tmp_path)
    yield member
    member.stop()
