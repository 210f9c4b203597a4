"""Longest-prefix lookup over IPv4 networks, for pools and IPAM blocks.

A cluster has a handful of distinct prefix lengths (pool sizes, one or two
block sizes), so a lookup masks the address once per length, longest first,
and probes a dict: O(distinct lengths) per query instead of a scan over every
pool or block. Addresses are plain ints to keep the inner loop cheap.
Immutable once built; pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

V = TypeVar("V")

_ALL_ONES = 0xFFFFFFFF
_MISSING = object()


def mask_for(prefixlen: int) -> int:
    return (_ALL_ONES << (32 - prefixlen)) & _ALL_ONES


class PrefixIndex(Generic[V]):
    """Maps IPv4 networks to values; answers "the most specific network containing X"."""

    def __init__(self, items: Iterable[tuple[int, int, V]]) -> None:
        """`items`: (network address as int, prefix length, value)."""
        # When two items share a network the later one wins: callers feed a sorted order.
        self._by_len: dict[int, dict[int, V]] = {}
        for base, prefixlen, value in items:
            self._by_len.setdefault(prefixlen, {})[base] = value
        self._lengths = [(plen, mask_for(plen), self._by_len[plen])
                         for plen in sorted(self._by_len, reverse=True)]

    def __len__(self) -> int:
        return sum(len(d) for d in self._by_len.values())

    def longest_match(self, address: int, max_prefixlen: int = 32) -> V | None:
        """The value of the longest network (prefix <= max_prefixlen) containing `address`."""
        for plen, mask, table in self._lengths:
            if plen > max_prefixlen:
                continue
            value = table.get(address & mask, _MISSING)
            if value is not _MISSING:
                return value  # type: ignore[return-value]  # not the sentinel, so a V
        return None

    def containing(self, base: int, prefixlen: int) -> V | None:
        """The value of the most specific indexed network containing all of base/prefixlen."""
        return self.longest_match(base, prefixlen)


def dotted(address: int) -> str:
    """An IPv4 address int as text; several times faster than str(IPv4Address(address))."""
    return f"{address >> 24}.{(address >> 16) & 255}.{(address >> 8) & 255}.{address & 255}"
