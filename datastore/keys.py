"""The etcd key schema: the one place that knows where things live.

Calico's etcdv3 layout (libcalico-go `lib/backend/model`):
  /calico/resources/v3/projectcalico.org/<plural>/<name>
  /calico/resources/v3/projectcalico.org/<plural>/<namespace>/<name>   (namespaced kinds)
  /calico/ipam/v2/assignment/ipv4/block/<cidr with / as ->
  /calico/ipam/v2/host/<node>/ipv4/block/<cidr with / as ->
  /calico/ipam/v2/handle/<handle id>
  /calico/ipam/v2/config
Every function here is pure; parse_* are the exact inverses of the builders.
"""

from __future__ import annotations

import ipaddress
import re

RESOURCES_PREFIX = "/calico/resources/v3/projectcalico.org/"
IPAM_PREFIX = "/calico/ipam/v2/"
IPAM_CONFIG_KEY = "/calico/ipam/v2/config"
HANDLE_PREFIX = "/calico/ipam/v2/handle/"
IPAM_BLOCKS_PREFIX = "/calico/ipam/v2/assignment/"
IPAM_HOST_AFFINITIES_PREFIX = "/calico/ipam/v2/host/"

# What the node agent and its BGP side sync: every resource, IPAM blocks and host
# affinities. Not the handles (one is written on every pod add and delete, so watching
# them cost every node a decode per pod change for nothing), virtual affinities or the
# IPAM config: neither reads them.
DATAPLANE_SYNC_PREFIXES = (RESOURCES_PREFIX, IPAM_BLOCKS_PREFIX, IPAM_HOST_AFFINITIES_PREFIX)


def resource_prefix(plural: str, namespace: str | None = None) -> str:
    if namespace:
        return f"{RESOURCES_PREFIX}{plural}/{namespace}/"
    return f"{RESOURCES_PREFIX}{plural}/"


def resource_key(plural: str, name: str, namespace: str | None = None) -> str:
    return resource_prefix(plural, namespace) + name


_RESOURCE_RE = re.compile(
    r"^/calico/resources/v3/projectcalico\.org/(?P<plural>[^/]+)/(?:(?P<ns>[^/]+)/)?(?P<name>[^/]+)$"
)


def parse_resource_key(key: str) -> tuple[str, str | None, str] | None:
    """(plural, namespace or None, name), or None when key is not a v3 resource key."""
    m = _RESOURCE_RE.match(key)
    if not m:
        return None
    return m["plural"], m["ns"], m["name"]


def _family(cidr: str) -> str:
    return "ipv6" if ":" in cidr else "ipv4"


def cidr_to_key_part(cidr: str) -> str:
    return cidr.replace("/", "-")


def key_part_to_cidr(part: str) -> str:
    # The last '-' separates the prefix length (IPv6 addresses contain no '-').
    addr, _, plen = part.rpartition("-")
    return f"{addr}/{plen}"


def block_prefix(version: int = 4) -> str:
    return f"{IPAM_BLOCKS_PREFIX}ipv{version}/block/"


def block_key(cidr: str) -> str:
    return f"{IPAM_PREFIX}assignment/{_family(cidr)}/block/{cidr_to_key_part(cidr)}"


def affinity_host_prefix(node: str) -> str:
    return f"{IPAM_HOST_AFFINITIES_PREFIX}{node}/"


def affinity_key(node: str, cidr: str, affinity_type: str = "host") -> str:
    return f"{IPAM_PREFIX}{affinity_type}/{node}/{_family(cidr)}/block/{cidr_to_key_part(cidr)}"


_AFFINITY_RE = re.compile(r"^/calico/ipam/v2/(host|virtual)/([^/]+)/ipv([46])/block/([^/]+)$")
_BLOCK_RE = re.compile(r"^/calico/ipam/v2/assignment/ipv([46])/block/([^/]+)$")


def parse_affinity_key(key: str) -> tuple[str, str, str] | None:
    """(affinity type 'host'|'virtual', node, block cidr) or None."""
    m = _AFFINITY_RE.match(key)
    if not m:
        return None
    return m[1], m[2], key_part_to_cidr(m[4])


def parse_block_key(key: str) -> str | None:
    m = _BLOCK_RE.match(key)
    return key_part_to_cidr(m[2]) if m else None


def handle_key(handle_id: str) -> str:
    return HANDLE_PREFIX + handle_id


def parse_handle_key(key: str) -> str | None:
    return key[len(HANDLE_PREFIX):] if key.startswith(HANDLE_PREFIX) else None


def canonical_cidr(cidr: str) -> str:
    return str(ipaddress.ip_network(cidr, strict=False))
