"""Which pools a node may allocate from, the order it tries their blocks in, and the
default pool created on first start.

Pure except `ensure_default_pool`, whose only write is one create-if-absent
transaction guarded by a range compare over every pool key: however many
nodes start at once, exactly one default pool is created, and none when any
IPv4 pool already exists (Calico's `configureIPPools`, node/pkg/lifecycle/startup).

Block order: each node walks a pool's block CIDRs in a pseudo-random
permutation seeded by a hash of its name, so nodes starting together spread
over the pool instead of all racing for the first block. The permutation is
a full-period linear congruential generator modulo the block count (always a
power of two), so it costs O(1) memory even for a /8 of /26 blocks (262144).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime

from datastore import selector as selectors
from datastore.errors import ValidationError
from datastore.etcd import Compare, EtcdClient, Op
from datastore.keys import resource_prefix
from datastore.resources import IPPool, parse_document
from datastore.store import ResourceStore

from .errors import DefaultPoolConfigError, RequestedPoolUnusable

_log = logging.getLogger(__name__)

WORKLOAD = "Workload"
TUNNEL = "Tunnel"
USES = (WORKLOAD, TUNNEL)

DEFAULT_IPV4_POOL_NAME = "default-ipv4-ippool"
DEFAULT_IPV4_CIDR = "192.168.0.0/16"
# Calico's fallbacks when a host address lies in 192.168.0.0/16 (autodetection/ipv4/poolselector.go).
FALLBACK_IPV4_CIDRS = tuple(f"172.{i}.0.0/16" for i in range(16, 32))
CREATE_RETRIES = 10


# -- choosing pools ------------------------------------------------------------------------


def _selects(pool: IPPool, labels: Mapping[str, str]) -> bool:
    text = pool.spec.nodeSelector or "all()"
    if text.strip() == "all()":
        return True
    try:
        return selectors.parse(text).evaluate(labels)
    except selectors.SelectorError:
        _log.warning("pool %s has an unparseable nodeSelector %r; not using it", pool.name, text)
        return False


def pool_selector_is_trivial(pool: IPPool) -> bool:
    return (pool.spec.nodeSelector or "all()").strip() == "all()"


def usable_pools(pools: Iterable[IPPool], node_labels: Mapping[str, str], use: str,
                 version: int = 4) -> list[IPPool]:
    """Pools a node may auto-assign from for `use`: enabled, of the IP version, allowing
    the use, assignmentMode Automatic and with a nodeSelector matching the node's labels.
    Sorted by CIDR so every caller sees the same order."""
    out = [
        p for p in pools
        if not p.spec.disabled
        and p.spec.network.version == version
        and use in p.spec.allowedUses
        and p.spec.assignmentMode == "Automatic"
        and _selects(p, node_labels)
    ]
    return sorted(out, key=lambda p: (int(p.spec.network.network_address), p.spec.network.prefixlen))


def requested_pools(pools: Iterable[IPPool], requested: Sequence[str], use: str,
                    version: int = 4) -> list[IPPool]:
    """The pools named in `requested` (pool names or CIDRs), in that order, as Calico
    resolves them (cni-plugin ResolvePools, then ipam determinePools): a CIDR must be
    exactly an existing pool's; each pool must be enabled, of the IP version and allow
    the use. A requested pool is used whatever its nodeSelector and assignmentMode say:
    naming it is the request. RequestedPoolUnusable names the first that fails."""
    known = list(pools)
    out: list[IPPool] = []
    for item in requested:
        try:
            net = ipaddress.ip_network(item, strict=False)
        except ValueError:
            pool = next((p for p in known if p.name == item), None)
        else:
            pool = next((p for p in known if p.spec.network == net), None)
        if pool is None:
            raise RequestedPoolUnusable(item, "does not exist, or is not enabled")
        named = f"{item} = {pool.spec.cidr}" if item == pool.name else f"{item} = {pool.name}"
        if pool.spec.disabled:
            raise RequestedPoolUnusable(named, "is disabled")
        if pool.spec.network.version != version:
            raise RequestedPoolUnusable(named, f"is not an IPv{version} pool")
        if use not in pool.spec.allowedUses:
            raise RequestedPoolUnusable(named, f"does not allow use {use}")
        if not any(pool is p for p in out):
            out.append(pool)
    return out


def pool_containing(pools: Iterable[IPPool], ip: str) -> IPPool | None:
    addr = ipaddress.ip_address(ip)
    for p in pools:
        if addr in p.spec.network:
            return p
    return None


def pool_for_block(pools: Iterable[IPPool], cidr: str) -> IPPool | None:
    net = ipaddress.ip_network(cidr)
    for p in pools:
        # The versions are equal, which mypy cannot tie to the two address types.
        if net.version == p.spec.network.version and net.subnet_of(p.spec.network):  # type: ignore[arg-type]
            return p
    return None


def block_count(pool: IPPool) -> int:
    assert pool.spec.blockSize is not None
    return 1 << (pool.spec.blockSize - pool.spec.network.prefixlen)


def block_cidr(pool: IPPool, index: int) -> str:
    """The index-th block of the pool, counting from its first address."""
    assert pool.spec.blockSize is not None
    net = pool.spec.network
    step = 1 << (net.max_prefixlen - pool.spec.blockSize)
    base = int(net.network_address) + index * step
    return f"{ipaddress.ip_address(base)}/{pool.spec.blockSize}"


# -- seeded block order --------------------------------------------------------------------


def seed_for(node: str) -> int:
    """A stable 64-bit seed from the node name (Python's hash() differs per process)."""
    return int.from_bytes(hashlib.sha256(node.encode()).digest()[:8], "big")


def permutation(n: int, seed: int) -> Iterator[int]:
    """Every integer of range(n) once, in an order fixed by `seed`; n a power of two.

    x -> (a*x + c) mod n with a ≡ 1 (mod 4) and c odd has full period for a
    power-of-two modulus (Hull-Dobell); XOR-ing with a seeded mask keeps it a
    permutation and breaks up the LCG's regular low bits.
    """
    if n <= 0:
        return
    if n & (n - 1):
        raise ValueError(f"permutation size {n} is not a power of two")
    mask = n - 1
    x = seed & mask
    a = ((seed >> 16) & mask) * 4 + 1
    c = ((seed >> 32) & mask) * 2 + 1
    scramble = (seed >> 40) & mask
    for _ in range(n):
        yield x ^ scramble
        x = (a * x + c) & mask


def seeded_block_indexes(pool: IPPool, node: str) -> Iterator[int]:
    """Indexes of all blocks of a pool, in this node's order."""
    return permutation(block_count(pool), seed_for(f"{node}/{pool.spec.cidr}"))


def seeded_block_cidrs(pool: IPPool, node: str) -> Iterator[str]:
    """All block CIDRs of a pool, in this node's order."""
    for index in seeded_block_indexes(pool, node):
        yield block_cidr(pool, index)


def block_index(pool: IPPool, cidr: str) -> int:
    """The position of block `cidr` in the pool (inverse of block_cidr)."""
    assert pool.spec.blockSize is not None
    net = ipaddress.ip_network(cidr)
    shift = net.max_prefixlen - pool.spec.blockSize
    return (int(net.network_address) - int(pool.spec.network.network_address)) >> shift


# -- the default pool ----------------------------------------------------------------------

_FALSE_WORDS = ("false", "0", "no", "n", "f")
_TRUE_WORDS = ("true", "1", "yes", "y", "t")


def env_bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    """calico-node's evaluateENVBool: unset -> default; otherwise only the opposite
    words flip it (so with default true, anything but false|0|no|n|f is true)."""
    value = environ.get(name)
    if value is None or value == "":
        return default
    words = _FALSE_WORDS if default else _TRUE_WORDS
    return (not default) if value.strip().lower() in words else default


def _encap_mode(environ: Mapping[str, str], name: str, kind: str) -> str:
    raw = environ.get(name, "")
    value = raw.strip().lower()
    if value in ("", "off", "never"):
        return "Never"
    if value in ("crosssubnet", "cross-subnet"):
        return "CrossSubnet"
    if value == "always":
        return "Always"
    raise DefaultPoolConfigError(f"Unrecognized {kind} mode specified in {name} '{raw}'")


def choose_default_cidr(host_addresses: Sequence[str]) -> str:
    """192.168.0.0/16 unless a host address lies in it; then the first free 172.16-31/16."""
    hosts = []
    for text in host_addresses:
        try:
            hosts.append(ipaddress.ip_interface(text).ip)
        except ValueError:
            continue
    for cidr in (DEFAULT_IPV4_CIDR, *FALLBACK_IPV4_CIDRS):
        net = ipaddress.ip_network(cidr)
        if not any(h in net for h in hosts):
            return cidr
    raise DefaultPoolConfigError(
        "no default IPv4 pool CIDR is free of host addresses; set CALICO_IPV4POOL_CIDR")


def default_pool_from_env(environ: Mapping[str, str],
                          host_addresses: Sequence[str] = ()) -> IPPool | None:
    """The default IPv4 pool the environment asks for, validated; None when disabled."""
    cidr_env = environ.get("CALICO_IPV4POOL_CIDR", "").strip()
    if environ.get("NO_DEFAULT_POOLS", "").strip().lower() == "true":
        if cidr_env or environ.get("CALICO_IPV6POOL_CIDR", "").strip():
            raise DefaultPoolConfigError(
                "Invalid configuration with NO_DEFAULT_POOLS defined and "
                "CALICO_IPV4POOL_CIDR or CALICO_IPV6POOL_CIDR defined.")
        return None
    if cidr_env.lower() == "none":
        return None
    ipip = _encap_mode(environ, "CALICO_IPV4POOL_IPIP", "IPIP")
    vxlan = _encap_mode(environ, "CALICO_IPV4POOL_VXLAN", "VXLAN")
    block_text = environ.get("CALICO_IPV4POOL_BLOCK_SIZE", "").strip()
    try:
        block_size = int(block_text) if block_text else 26
    except ValueError:
        raise DefaultPoolConfigError(
            f"Failed to parse CALICO_IPV4POOL_BLOCK_SIZE '{block_text}': not an integer"
        ) from None
    cidr = cidr_env or choose_default_cidr(host_addresses)
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise DefaultPoolConfigError(
            f"Invalid CIDR specified in CALICO_IPV4POOL_CIDR '{cidr}'") from None
    if net.version != 4:
        raise DefaultPoolConfigError(
            f"Invalid CIDR specified in CALICO_IPV4POOL_CIDR '{cidr}': not an IPv4 network")
    spec: dict[str, object] = {
        "cidr": str(net),  # Calico masks the host bits of the configured CIDR
        "ipipMode": ipip,
        "vxlanMode": vxlan,
        "natOutgoing": env_bool(environ, "CALICO_IPV4POOL_NAT_OUTGOING", True),
        "blockSize": block_size,
        "nodeSelector": environ.get("CALICO_IPV4POOL_NODE_SELECTOR", "").strip() or "all()",
    }
    if env_bool(environ, "CALICO_IPV4POOL_DISABLE_BGP_EXPORT", False):
        spec["disableBGPExport"] = True
    doc = {"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
           "metadata": {"name": DEFAULT_IPV4_POOL_NAME}, "spec": spec}
    try:
        pool = parse_document(doc)
    except ValidationError as exc:
        raise DefaultPoolConfigError(f"invalid default IPv4 pool from the environment: {exc}") from None
    assert isinstance(pool, IPPool)
    for name in ("CALICO_IPV4POOL_CIDR", "CALICO_IPV4POOL_IPIP", "CALICO_IPV4POOL_VXLAN",
                 "CALICO_IPV4POOL_BLOCK_SIZE", "CALICO_IPV4POOL_NODE_SELECTOR",
                 "CALICO_IPV4POOL_NAT_OUTGOING"):
        _log.info("default pool: %s=%r (%s)", name, environ.get(name),
                  "env" if name in environ else "default")
    return pool


def ensure_default_pool(store: ResourceStore, environ: Mapping[str, str],
                        host_addresses: Sequence[str] = ()) -> IPPool | None:
    """Create the default IPv4 pool if no IPv4 pool exists. Returns the pool this call
    created, or None (disabled by the environment, or some IPv4 pool already exists —
    including one a concurrent starter created a moment ago)."""
    wanted = default_pool_from_env(environ, host_addresses)
    if wanted is None:
        _log.info("default IPv4 pool disabled by the environment")
        return None
    client: EtcdClient = store.client
    key = wanted.key()
    for _ in range(CREATE_RETRIES):
        pools, rev = store.list_with_revision(IPPool)
        existing = [p for p in pools if p.spec.network.version == 4]
        if existing:
            _log.info("IPv4 pool(s) exist (%s); not creating a default pool",
                      ", ".join(p.name for p in existing))
            return None
        meta = wanted.metadata.model_copy(update={
            "uid": str(uuid.uuid4()),
            "creationTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        })
        pool = wanted.model_copy(update={"metadata": meta})
        # Nothing under the pools prefix may have changed since the listing that
        # found no IPv4 pool; that makes concurrent starters create exactly one.
        ok, _, wrote_at = client.transaction(
            [Compare(resource_prefix(IPPool.plural), "mod", "<", rev + 1, prefix=True),
             Compare(key, "version", "==", 0)],
            [Op("put", key, pool.to_stored())],
        )
        if ok:
            _log.info("created default IPv4 pool %s %s", pool.name, pool.spec.cidr)
            meta = pool.metadata.model_copy(update={"resourceVersion": str(wrote_at)})
            return pool.model_copy(update={"metadata": meta})
    _log.warning("pools kept changing while creating the default pool; giving up")
    return None
