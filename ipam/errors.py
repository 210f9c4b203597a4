"""The IPAM exception tree, with Calico's messages where Calico has one.

    IPAMError
     ├── InsufficientAddresses       an auto-assign could not be satisfied (nothing kept)
     │    ├── NoIPsAvailable         the usable pools are full ("No IPs available in pools: [...]")
     │    │    └── NoUsablePools     no pool is enabled, selects the node and allows the use
     │    ├── BlockLimitReached      maxBlocksPerHost reached and borrowing is not allowed
     │    └── StrictAffinityForbidsBorrowing
     ├── AddressNotInPool            a specific IP outside every (usable) pool
     ├── AddressAlreadyAssigned
     ├── NotAssigned                 release of an address that is free
     ├── BadSequenceNumber           a release based on stale information (ABA guard)
     ├── HandleMismatch              a release naming a handle that does not own the address
     ├── HandleNotFound
     ├── HandleExists                an assignment for a new handle found it existing
     ├── AffinityNotFound / BlockNotEmpty
     ├── RetriesExhausted            100 compare-and-swap conflicts in a row on one key
     ├── CorruptDocument             a stored IPAM document that cannot be read
     └── DefaultPoolConfigError      a bad CALICO_IPV4POOL_* / NO_DEFAULT_POOLS setting

Every error carries its context (ip, handle, pools, node, key) as attributes.
"""

from __future__ import annotations

from collections.abc import Sequence


class IPAMError(Exception):
    """Root of every error raised by the ipam package."""


class InsufficientAddresses(IPAMError):
    def __init__(self, message: str, requested: int = 0, node: str = "") -> None:
        self.requested = requested
        self.node = node
        super().__init__(message)


class NoIPsAvailable(InsufficientAddresses):
    def __init__(self, pools: Sequence[str], requested: int = 0, node: str = "") -> None:
        self.pools = list(pools)
        super().__init__(f"No IPs available in pools: [{' '.join(self.pools)}]", requested, node)


class NoUsablePools(NoIPsAvailable):
    def __init__(self, node: str, use: str, version: int = 4) -> None:
        IPAMError.__init__(
            self,
            f"no IPv{version} pool is enabled, selects node {node} and allows use {use}",
        )
        self.pools, self.requested, self.node, self.use = [], 0, node, use


class RequestedPoolUnusable(InsufficientAddresses):
    """A pool the caller restricted the assignment to (by name or CIDR) cannot be used."""

    def __init__(self, pool: str, reason: str) -> None:
        self.pool = pool
        super().__init__(f"the given pool ({pool}) {reason}")


class BlockLimitReached(InsufficientAddresses):
    def __init__(self, limit: int, node: str = "", requested: int = 0) -> None:
        self.limit = limit
        super().__init__(
            "Need to allocate an IPAM block but could not - "
            f"limit of {limit} blocks reached for this node",
            requested, node,
        )


class StrictAffinityForbidsBorrowing(InsufficientAddresses):
    def __init__(self, node: str = "", requested: int = 0, message: str = "") -> None:
        super().__init__(message or "No more free affine blocks and strict affinity enabled",
                         requested, node)


class AddressNotInPool(IPAMError):
    def __init__(self, ip: str, reason: str = "") -> None:
        self.ip = ip
        super().__init__(reason or f"The provided IP address {ip} is not in a configured pool")


class AddressAlreadyAssigned(IPAMError):
    def __init__(self, ip: str, handle: str | None = None) -> None:
        self.ip, self.handle = ip, handle
        owner = f" (handle {handle})" if handle else ""
        super().__init__(f"IP address {ip} is already assigned{owner}")


class NotAssigned(IPAMError):
    def __init__(self, ip: str) -> None:
        self.ip = ip
        super().__init__(f"IP address {ip} is not assigned")


class BadSequenceNumber(IPAMError):
    def __init__(self, ip: str, requested: int, expected: int) -> None:
        self.ip, self.requested, self.expected = ip, requested, expected
        super().__init__(
            f"the given sequence number ({requested}) does not match ({expected}) "
            "when attempting to release IP"
        )


class HandleMismatch(IPAMError):
    def __init__(self, ip: str, requested: str, actual: str | None) -> None:
        self.ip, self.requested, self.actual = ip, requested, actual
        super().__init__(f"IP address {ip} is owned by handle {actual}, not {requested}")


class HandleNotFound(IPAMError):
    def __init__(self, handle: str) -> None:
        self.handle = handle
        super().__init__(f"handle '{handle}' does not exist")


class HandleExists(IPAMError):
    def __init__(self, handle: str) -> None:
        self.handle = handle
        super().__init__(f"handle '{handle}' already exists")


class AffinityNotFound(IPAMError):
    def __init__(self, node: str, cidr: str) -> None:
        self.node, self.cidr = node, cidr
        super().__init__(f"node {node} has no affinity for block {cidr}")


class BlockNotEmpty(IPAMError):
    def __init__(self, cidr: str, in_use: int) -> None:
        self.cidr, self.in_use = cidr, in_use
        super().__init__(f"block {cidr} is not empty ({in_use} addresses in use)")


class RetriesExhausted(IPAMError):
    def __init__(self, what: str, attempts: int) -> None:
        self.what, self.attempts = what, attempts
        super().__init__(f"gave up on {what} after {attempts} compare-and-swap conflicts")


class CorruptDocument(IPAMError):
    def __init__(self, key: str, detail: str) -> None:
        self.key, self.detail = key, detail
        super().__init__(f"unreadable IPAM document at {key}: {detail}")


class DefaultPoolConfigError(IPAMError):
    """A default-pool environment setting Calico would refuse (fatal at node start)."""
