"""IPAM handles: the secondary index from an owner's handle ID to the blocks it holds. Pure.

Stored at /calico/ipam/v2/handle/<id> as `{"block": {"10.65.79.0/26": 2}, "deleted": false}`;
the document and its parser are datastore.ipam_documents' IPAMHandle, this
module adds the count arithmetic. The counts must equal the number of
allocations carrying this handle in each block. tortie writes a handle in the
same etcd transaction as the block it counts, so the two cannot drift (Calico
writes them one after the other). A handle whose counts all reach zero is deleted.
"""

from __future__ import annotations

from datastore.ipam_documents import IPAMHandle


class Handle(IPAMHandle):
    """A handle document with its arithmetic; every change returns a new Handle."""

    @property
    def total(self) -> int:
        return sum(self.blocks.values())

    def increment(self, cidr: str, n: int = 1) -> Handle:
        blocks = dict(self.blocks)
        blocks[cidr] = blocks.get(cidr, 0) + n
        return Handle(blocks)

    def decrement(self, cidr: str, n: int = 1) -> Handle | None:
        """The handle after releasing n addresses of `cidr`; None when nothing is left."""
        blocks = dict(self.blocks)
        left = blocks.get(cidr, 0) - n
        if left > 0:
            blocks[cidr] = left
        else:
            blocks.pop(cidr, None)
        return Handle(blocks) if blocks else None

    def without(self, cidr: str) -> Handle | None:
        blocks = {k: v for k, v in self.blocks.items() if k != cidr}
        return Handle(blocks) if blocks else None
