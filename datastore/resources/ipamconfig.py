"""IPAMConfiguration: the cluster's IPAM switches (strict affinity, block limit).

There is one, named `default`. Calico's IPAM library reads its settings from
`/calico/ipam/v2/config` (`{"strict_affinity":..,"auto_allocate_blocks":..,
"maxBlocksPerHost":..}`); tortie keeps that key as the single source of truth
and presents it as the v3 resource, so ctl and IPAM can never disagree.
"""

from __future__ import annotations

import json
from typing import ClassVar, Literal

from pydantic import field_validator

from ..errors import FieldError
from ..keys import IPAM_CONFIG_KEY
from .base import ObjectMeta, Resource, StrictModel

DEFAULT_MAX_BLOCKS_PER_HOST = 20
# The CRD's bound (api/pkg/apis/projectcalico/v3/ipamconfig.go).
MAX_BLOCKS_PER_HOST_LIMIT = 1_000_000


class IPAMConfigurationSpec(StrictModel):
    # The Go struct's order (JSON key order). The two switches have no omitempty;
    # maxBlocksPerHost does, so 0 (no limit set) is not printed.
    go_keep_zero: ClassVar[frozenset[str]] = frozenset({"strictAffinity", "autoAllocateBlocks"})

    strictAffinity: bool = False
    maxBlocksPerHost: int = 0
    autoAllocateBlocks: bool = True

    @field_validator("maxBlocksPerHost")
    @classmethod
    def _max_blocks(cls, v: int) -> int:
        if v < 0:
            raise ValueError("maxBlocksPerHost must not be negative")
        if v > MAX_BLOCKS_PER_HOST_LIMIT:
            raise ValueError(f"maxBlocksPerHost must be at most {MAX_BLOCKS_PER_HOST_LIMIT}")
        return v

    @property
    def effective_max_blocks(self) -> int:
        return self.maxBlocksPerHost or DEFAULT_MAX_BLOCKS_PER_HOST


class IPAMConfiguration(Resource):
    kind_name: ClassVar[str] = "IPAMConfiguration"
    plural: ClassVar[str] = "ipamconfigurations"
    aliases: ClassVar[tuple[str, ...]] = ("ipamconfiguration", "ipamconfigurations", "ipamconfig",
                                          "ipamconfigs")

    kind: Literal["IPAMConfiguration"] = "IPAMConfiguration"
    spec: IPAMConfigurationSpec = IPAMConfigurationSpec()

    def key(self) -> str:
        return IPAM_CONFIG_KEY

    def to_stored(self) -> bytes:
        doc: dict[str, object] = {
            "strict_affinity": self.spec.strictAffinity,
            "auto_allocate_blocks": self.spec.autoAllocateBlocks,
        }
        if self.spec.maxBlocksPerHost:
            doc["maxBlocksPerHost"] = self.spec.maxBlocksPerHost
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_stored(cls, value: bytes, mod_revision: int) -> IPAMConfiguration:
        doc = json.loads(value)
        return cls(
            metadata=ObjectMeta(name="default", resourceVersion=str(mod_revision)),
            spec=IPAMConfigurationSpec(
                strictAffinity=bool(doc.get("strict_affinity", False)),
                autoAllocateBlocks=bool(doc.get("auto_allocate_blocks", True)),
                maxBlocksPerHost=int(doc.get("maxBlocksPerHost", 0)),
            ),
        )

    def validate_semantics(self) -> list[FieldError]:
        errs = []
        if self.name != "default":
            errs.append(FieldError("IPAMConfiguration.Metadata.Name", self.name,
                                   "IPAMConfiguration must be named 'default'"))
        s = self.spec
        if not s.strictAffinity and not s.autoAllocateBlocks:
            errs.append(FieldError("IPAMConfiguration.Spec.AutoAllocateBlocks", False,
                                   "autoAllocateBlocks may be false only with strictAffinity"))
        if s.maxBlocksPerHost and not s.strictAffinity:
            errs.append(FieldError("IPAMConfiguration.Spec.MaxBlocksPerHost", s.maxBlocksPerHost,
                                   "maxBlocksPerHost requires strictAffinity"))
        return errs
