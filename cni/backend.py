"""The plugin's datastore operations: addresses (IPAM) and WorkloadEndpoints.

Two implementations of one small interface (`Backend`):

  * `LocalBackend` talks to etcd from the plugin process, through ipam.Allocator
    and datastore.store. Its imports (grpc, pydantic, the resource models) cost
    ~0.35 s of CPU, so they happen inside `LocalBackend.__init__`, never at
    module import: VERSION, bad input and the CNI-server path never pay them.
  * `cni.server.RemoteBackend` sends the same calls to a long-running CNI
    server on the node (cni/server.py), which holds a LocalBackend with a warm
    etcd connection and IPAM caches.

`cni.lazy_backend.LazyBackend` chooses between them for the plugin. This
module imports neither of those (cni.server imports it).

Every operation is idempotent, because runtimes retry:
  * `assign` first returns the addresses the handle already holds (a retried
    ADD gets its first answer again, and a lost reply costs nothing);
  * `release` of a handle that does not exist releases nothing;
  * `put_endpoint` creates, or replaces what is there (same name: a retried
    ADD, or a new sandbox of the same pod);
  * `delete_endpoint` deletes only an endpoint whose containerID is the
    caller's (a late DEL of a replaced sandbox must not delete its successor's),
    by compare-and-delete, and succeeds when there is nothing to delete.

Errors from the datastore and IPAM packages are mapped once, here, to the
CNI tree (`mapped`): unreachable etcd and compare-and-swap storms are
TryAgainLater (11), exhaustion NoAddresses (100), bad settings InvalidConfig.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from .config import EtcdSettings
from .errors import (
    CniError,
    DatastoreFailure,
    InvalidConfig,
    NoAddresses,
    TryAgainLater,
)
from .naming import Workload

_log = logging.getLogger(__name__)

ETCD_TIMEOUT = 5.0
WEP_PLURAL = "workloadendpoints"
PUT_RETRIES = 5


class Backend(Protocol):
    def assign(self, w: Workload, requested: Sequence[str] = (),
               pools: Sequence[str] = ()) -> list[str]: ...
    def addresses(self, handle_id: str) -> list[str]: ...
    def release(self, handle_id: str) -> list[str]: ...
    def put_endpoint(self, doc: Mapping[str, Any]) -> None: ...
    def delete_endpoint(self, namespace: str, name: str, container_id: str) -> bool: ...
    def get_endpoint(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def close(self) -> None: ...


@contextlib.contextmanager
def mapped(what: str) -> Iterator[None]:
    """Turn datastore/IPAM exceptions raised while doing `what` into CniErrors."""
    # Here, not at the top, like every datastore/IPAM import of this module: the
    # plugin pays for them only when it talks to etcd itself (module docstring).
    from datastore.config import ConfigError
    from datastore.errors import ConnectionFailed, DatastoreError, ValidationError
    from ipam.errors import (
        AddressAlreadyAssigned,
        AddressNotInPool,
        InsufficientAddresses,
        IPAMError,
        RetriesExhausted,
    )

    try:
        yield
    except CniError:
        raise
    except ConfigError as exc:
        raise InvalidConfig(f"datastore settings: {exc}") from None
    except ConnectionFailed as exc:
        raise TryAgainLater(f"{what}: etcd is unreachable at {', '.join(exc.endpoints)}",
                            exc.detail) from None
    except (InsufficientAddresses, AddressNotInPool, AddressAlreadyAssigned) as exc:
        raise NoAddresses(f"{what}: {exc}") from None
    except RetriesExhausted as exc:
        raise TryAgainLater(f"{what}: {exc}") from None
    except ValidationError as exc:
        raise InvalidConfig(f"{what}: {exc}") from None
    except (DatastoreError, IPAMError) as exc:
        raise DatastoreFailure(f"{what}: {exc}") from None


def _timestamp() -> str:
    from datetime import UTC, datetime  # here: the plugin's start-up skips it (docs/cni.md)

    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f +0000 UTC")


class LocalBackend:
    """The operations against etcd, in this process (see the module docstring)."""

    def __init__(self, etcd: EtcdSettings, environ: Mapping[str, str]) -> None:
        for key, path in (("etcd_ca_cert_file", etcd.ca_cert_file),
                          ("etcd_cert_file", etcd.cert_file), ("etcd_key_file", etcd.key_file)):
            if path and not os.path.isfile(path):
                raise InvalidConfig(f"{key}={json.dumps(path)}: no such file")
        with mapped("connecting to the datastore"):
            from datastore.config import load_env
            from datastore.etcd import EtcdClient
            from ipam.allocator import Allocator

            config = load_env(etcd.as_env(environ))
            self.endpoints = config.urls
            self.client = EtcdClient(config, timeout=ETCD_TIMEOUT)
            self.allocator = Allocator(self.client)

    # -- addresses -------------------------------------------------------------------------

    def addresses(self, handle_id: str) -> list[str]:
        """The addresses `handle_id` holds now (read through its handle document)."""
        from datastore.keys import block_key, handle_key
        from ipam.block import Block
        from ipam.handle import Handle

        with mapped(f"reading IPAM handle {handle_id}"):
            kv = self.client.get(handle_key(handle_id))
            if kv is None:
                return []
            handle = Handle.from_json(kv.value)
            ips: list[str] = []
            for cidr in sorted(handle.blocks):
                bkv = self.client.get(block_key(cidr))
                if bkv is None:
                    continue
                block = Block.from_json(bkv.value)
                ips += [block.ip_of(o) for o in block.ordinals_of_handle(handle_id)]
            return ips

    def assign(self, w: Workload, requested: Sequence[str] = (),
               pools: Sequence[str] = ()) -> list[str]:
        """The handle's addresses: those it holds, else `requested`, else one from the
        node's blocks, restricted to `pools` (names or CIDRs) when given."""
        from ipam.errors import HandleExists

        attrs = {**w.ipam_attributes, "timestamp": _timestamp()}
        what = f"assigning an IPv4 address to {w.describe()} on node {w.node}"
        if not requested:
            # Most ADDs are for a new container: assign without reading the handle
            # first (one etcd round trip less); the assignment's transaction refuses
            # an existing handle, and then a retried ADD reuses what it holds.
            with mapped(what):
                try:
                    fresh: list[str] | None = self.allocator.auto_assign(
                        w.node, w.handle_id, 1, attrs, pools=tuple(pools), new_handle=True)
                except HandleExists:
                    fresh = None
            if fresh is not None:
                # debug: the ADD's own summary line (cni/plugin.py) names the address, and
                # each record at info costs an ADD ~1 ms under load (docs/cni.md).
                _log.debug("assigned %s to %s (handle %s)", ", ".join(fresh), w.describe(),
                           w.handle_id)
                return fresh
        held = self.addresses(w.handle_id)
        if held:
            _log.info("handle %s already holds %s: reusing (a retried ADD)", w.handle_id,
                      ", ".join(held))
            return held
        with mapped(what):
            if requested:
                got: list[str] = []
                try:
                    for ip in requested:
                        got.append(self.allocator.assign_ip(ip, w.node, w.handle_id, attrs))
                except BaseException:
                    if got:
                        self.allocator.release_by_handle(w.handle_id)
                    raise
            else:
                got = self.allocator.auto_assign(w.node, w.handle_id, 1, attrs,
                                                 pools=tuple(pools))
        _log.info("assigned %s to %s (handle %s)", ", ".join(got), w.describe(), w.handle_id)
        return got

    def release(self, handle_id: str) -> list[str]:
        from ipam.errors import HandleNotFound

        with mapped(f"releasing the addresses of handle {handle_id}"):
            try:
                released = self.allocator.release_by_handle(handle_id)
            except HandleNotFound:
                _log.info("handle %s holds no addresses: nothing to release", handle_id)
                return []
        _log.info("released %s (handle %s)", ", ".join(released) or "nothing", handle_id)
        return released

    # -- endpoints -------------------------------------------------------------------------

    def _key(self, namespace: str, name: str) -> str:
        from datastore.keys import resource_key

        return resource_key(WEP_PLURAL, name, namespace)

    def get_endpoint(self, namespace: str, name: str) -> dict[str, Any] | None:
        with mapped(f"reading WorkloadEndpoint {namespace}/{name}"):
            kv = self.client.get(self._key(namespace, name))
        if kv is None:
            return None
        try:
            doc = json.loads(kv.value)
        except ValueError:
            raise DatastoreFailure(f"WorkloadEndpoint {namespace}/{name} in etcd is not "
                                   "JSON") from None
        doc.setdefault("metadata", {})["resourceVersion"] = str(kv.mod_revision)
        return doc

    def put_endpoint(self, doc: Mapping[str, Any]) -> None:
        from datastore.errors import ResourceAlreadyExists, ResourceDoesNotExist, UpdateConflict
        from datastore.resources import WorkloadEndpoint, parse_document
        from datastore.store import ResourceStore

        meta = doc["metadata"]
        what = f"writing WorkloadEndpoint {meta['namespace']}/{meta['name']}"
        store = ResourceStore(self.client)
        with mapped(what):
            wep = parse_document(dict(doc))
            for _ in range(PUT_RETRIES):
                try:
                    store.create(wep)
                    return
                except ResourceAlreadyExists:
                    pass
                current = store.find(WorkloadEndpoint, wep.name, wep.namespace)
                if current is None:
                    continue
                old_cid = current.spec.containerID
                if old_cid and old_cid != wep.spec.containerID:
                    _log.info("WorkloadEndpoint %s/%s belonged to container %s; it is now %s's",
                              wep.namespace, wep.name, old_cid, wep.spec.containerID)
                meta_copy = wep.metadata.model_copy(
                    update={"resourceVersion": current.metadata.resourceVersion})
                try:
                    store.update(wep.model_copy(update={"metadata": meta_copy}))
                    return
                except (UpdateConflict, ResourceDoesNotExist):
                    continue
            raise TryAgainLater(f"{what}: it kept changing under us ({PUT_RETRIES} attempts)")

    def delete_endpoint(self, namespace: str, name: str, container_id: str) -> bool:
        from datastore.etcd import KeyConflict, KeyMissing

        key = self._key(namespace, name)
        what = f"deleting WorkloadEndpoint {namespace}/{name}"
        with mapped(what):
            for _ in range(PUT_RETRIES):
                kv = self.client.get(key)
                if kv is None:
                    return False
                try:
                    owner = (json.loads(kv.value).get("spec") or {}).get("containerID")
                except (ValueError, AttributeError):
                    owner = None
                if owner and owner != container_id:
                    _log.info("not deleting WorkloadEndpoint %s/%s: it belongs to container %s "
                              "now, not %s", namespace, name, owner, container_id)
                    return False
                try:
                    self.client.delete(key, kv.mod_revision)
                    return True
                except KeyMissing:
                    return False
                except KeyConflict:
                    continue
            raise TryAgainLater(f"{what}: it kept changing under us ({PUT_RETRIES} attempts)")

    def close(self) -> None:
        self.client.close()
