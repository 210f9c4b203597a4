"""Block affinities: which node a block belongs to, and the claim/release state machine. Pure.

Stored at /calico/ipam/v2/host/<node>/ipv4/block/<cidr-with-dash> as
`{"state": "confirmed", "deleted": false}` (Calico's form, verbatim). The
document, its parser and its states are datastore.ipam_documents'
(BlockAffinity, here `Affinity`); this module adds the transitions.

    ∅ ──claim──▶ pending ──block created──▶ confirmed ──release──▶ pendingDeletion ──▶ ∅
                  │  ▲                                                 │
                  │  └── retake (an interrupted claim of the same node) │
                  └──▶ ∅ (block lost to another node)                   └──▶ confirmed
                                                                          (block not empty)

Only `confirmed` makes a node the owner of a block: a `pending` affinity is
treated as absent (for allocation, for routes, for `ipam check`), so a claim
interrupted by a crash never makes a node advertise a block it does not hold.
"""

from __future__ import annotations

from datastore.ipam_documents import CONFIRMED, PENDING, PENDING_DELETION
from datastore.ipam_documents import BlockAffinity as Affinity

# state -> states it may move to (None = the key is deleted).
TRANSITIONS: dict[str | None, frozenset[str | None]] = {
    None: frozenset({PENDING}),
    PENDING: frozenset({PENDING, CONFIRMED, None}),
    CONFIRMED: frozenset({PENDING_DELETION}),
    PENDING_DELETION: frozenset({None, CONFIRMED, PENDING}),
}


class InvalidTransition(ValueError):
    def __init__(self, current: str | None, target: str | None) -> None:
        self.current, self.target = current, target
        super().__init__(f"block affinity cannot go from {current or 'absent'} to "
                         f"{target or 'absent'}")


def transition(current: Affinity | None, target: str | None) -> Affinity | None:
    """The affinity after moving to `target` (None = delete); InvalidTransition if illegal."""
    now = current.state if current is not None else None
    if target not in TRANSITIONS[now]:
        raise InvalidTransition(now, target)
    return None if target is None else Affinity(target)


PENDING_DOC = Affinity(PENDING).to_json()
CONFIRMED_DOC = Affinity(CONFIRMED).to_json()
PENDING_DELETION_DOC = Affinity(PENDING_DELETION).to_json()

__all__ = [
    # The document and its states, as ipam names them (defined in datastore.ipam_documents).
    "Affinity", "CONFIRMED", "PENDING", "PENDING_DELETION",
    "CONFIRMED_DOC", "PENDING_DELETION_DOC", "PENDING_DOC",
    "TRANSITIONS", "InvalidTransition", "transition",
]
