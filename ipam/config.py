"""The IPAM configuration singleton at /calico/ipam/v2/config: read it, change it by CAS.

Absent means Calico's defaults (strict affinity off, auto-allocate on,
maxBlocksPerHost 0 = 20). Changes keep Calico's cross-field rules (see
IPAMConfiguration.validate_semantics): autoAllocateBlocks=false needs strict
affinity, and so does a maxBlocksPerHost above 0. A write that fails them
leaves the key untouched.
"""

from __future__ import annotations

import logging

from datastore.errors import ValidationError
from datastore.etcd import EtcdClient, KeyConflict, KeyExists, KeyMissing
from datastore.keys import IPAM_CONFIG_KEY
from datastore.resources import IPAMConfiguration, ObjectMeta
from datastore.resources.ipamconfig import IPAMConfigurationSpec

from .errors import CorruptDocument, RetriesExhausted

_log = logging.getLogger(__name__)

RETRIES = 100


def read_config(client: EtcdClient) -> tuple[IPAMConfigurationSpec, int]:
    """(settings, mod revision); revision 0 when the key is absent (defaults)."""
    kv = client.get(IPAM_CONFIG_KEY)
    if kv is None:
        return IPAMConfigurationSpec(), 0
    return decode_config(kv.value, IPAM_CONFIG_KEY), kv.mod_revision


def decode_config(raw: bytes, key: str = IPAM_CONFIG_KEY) -> IPAMConfigurationSpec:
    try:
        return IPAMConfiguration.from_stored(raw, 0).spec
    except (ValueError, TypeError) as exc:
        raise CorruptDocument(key, str(exc)) from None


def update_config(client: EtcdClient, *, strict_affinity: bool | None = None,
                  max_blocks_per_host: int | None = None,
                  auto_allocate_blocks: bool | None = None) -> IPAMConfigurationSpec:
    """Change the given fields (others keep their stored values), compare-and-swap.

    Raises ValidationError (nothing written) when the result breaks Calico's rules.
    """
    for _ in range(RETRIES):
        current, rev = read_config(client)
        changes: dict[str, object] = {}
        if strict_affinity is not None:
            changes["strictAffinity"] = strict_affinity
        if max_blocks_per_host is not None:
            changes["maxBlocksPerHost"] = max_blocks_per_host
        if auto_allocate_blocks is not None:
            changes["autoAllocateBlocks"] = auto_allocate_blocks
        spec = current.model_copy(update=changes)
        res = IPAMConfiguration(metadata=ObjectMeta(name="default"), spec=spec)
        if max_blocks_per_host is not None and max_blocks_per_host < 0:
            raise ValidationError(
                f"error with field IPAMConfiguration.Spec.MaxBlocksPerHost = "
                f"'{max_blocks_per_host}' (maxBlocksPerHost must not be negative)")
        errors = res.validate_semantics()
        if errors:
            raise ValidationError(fields=errors)
        try:
            if rev == 0:
                client.create(IPAM_CONFIG_KEY, res.to_stored())
            else:
                client.update(IPAM_CONFIG_KEY, res.to_stored(), rev)
        except (KeyExists, KeyConflict, KeyMissing):
            continue
        _log.info("IPAM configuration now %s", res.to_stored().decode())
        return spec
    raise RetriesExhausted(IPAM_CONFIG_KEY, RETRIES)
