"""libcalico-go's resource error texts, as calicoctl prints them.

Source: libcalico-go/lib/errors/errors.go (ErrorResourceDoesNotExist,
ErrorResourceAlreadyExists, ErrorResourceUpdateConflict), whose identifier is
libcalico-go/lib/backend/model/resource.go ResourceKey.String(), and
calicoctl/tests/st/calicoctl/test_crud.py test_get_multiple_resources
("resource does not exist: IPPool(blah) with error: <nil>"). The etcd backend
wraps no inner error, so Go's %v prints `<nil>`. The commands' own framing of these
texts is tested against a real etcd in tests/datastore/test_ctl*.py.
"""

from __future__ import annotations

import pytest

from datastore.errors import ResourceAlreadyExists, ResourceDoesNotExist, UpdateConflict
from datastore.resources import IPPool, WorkloadEndpoint
from datastore.store import error_namespace

CASES = [
    (ResourceDoesNotExist("IPPool", "blah"), "resource does not exist: IPPool(blah) with error: <nil>"),
    (ResourceAlreadyExists("IPPool", "p1"), "resource already exists: IPPool(p1) with error: <nil>"),
    (UpdateConflict("IPPool", "p1"), "update conflict: IPPool(p1)"),
    (ResourceDoesNotExist("WorkloadEndpoint", "wep1", namespace="prod"),
     "resource does not exist: WorkloadEndpoint(prod/wep1) with error: <nil>"),
    # ResourceKey.String() shows a namespaced kind's namespace even when it is empty.
    (UpdateConflict("WorkloadEndpoint", "wep1", namespace=""), "update conflict: WorkloadEndpoint(/wep1)"),
]


@pytest.mark.parametrize(("error", "text"), CASES, ids=[c[1] for c in CASES])
def test_resource_error_text(error: Exception, text: str) -> None:
    assert str(error) == text


def test_only_namespaced_kinds_name_a_namespace() -> None:
    assert error_namespace(IPPool, None) is None
    assert error_namespace(IPPool, "prod") is None
    assert error_namespace(WorkloadEndpoint, "prod") == "prod"
    assert error_namespace(WorkloadEndpoint, None) == ""
