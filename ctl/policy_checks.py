"""The checks of policy writes that need the datastore, as libcalico-go's clientv3 and
calicoctl's resource managers make them before writing.

- a NetworkPolicy or GlobalNetworkPolicy names a tier that exists: the `default` tier
  always does, others must be stored or created earlier in the same batch
  (`clientv3/networkpolicy.go` Create). tortie checks on update too, so that no policy
  is ever left pointing at a missing tier;
- the protected tiers (default, kube-admin, kube-baseline) cannot be deleted, nor can a
  tier that still holds policies (`clientv3/tier.go` Delete).

calicoctl also refuses NetworkPolicies named `knp.default.*`, leaving them to the
Kubernetes API (`calicoctl/resourcemgr/networkpolicy.go`); tortie has no Kubernetes API,
ctl is where converted Kubernetes policies come in, so that refusal is not made here.

Batches are checked in order, as calicoctl executes them one by one: what an earlier
document of the batch creates or deletes counts for the later ones.
"""

from __future__ import annotations

from collections.abc import Sequence

from datastore.errors import OperationNotSupported, ResourceDoesNotExist
from datastore.resources import GlobalNetworkPolicy, NetworkPolicy, Resource, Tier
from datastore.resources.policy import DEFAULT_TIER, PROTECTED_TIERS
from datastore.store import ResourceStore


def check_policy_write(store: ResourceStore, verb: str, res: Resource,
                       earlier: Sequence[Resource]) -> None:
    """Raise the DatastoreError calicoctl would give for writing `res` after `earlier`."""
    if isinstance(res, (NetworkPolicy, GlobalNetworkPolicy)) and verb != "delete":
        _require_tier(store, res.spec.tier, earlier)
    if isinstance(res, Tier) and verb == "delete":
        _check_tier_delete(store, res.name, earlier)


def _require_tier(store: ResourceStore, tier: str, earlier: Sequence[Resource]) -> None:
    if tier == DEFAULT_TIER:
        return
    if any(isinstance(r, Tier) and r.name == tier for r in earlier):
        return
    if store.find(Tier, tier) is None:
        raise ResourceDoesNotExist("Tier", tier)


def _check_tier_delete(store: ResourceStore, tier: str, earlier: Sequence[Resource]) -> None:
    if tier in PROTECTED_TIERS:
        raise OperationNotSupported("Delete", tier, f"Cannot delete {tier} tier")
    going = {(type(r), r.namespace, r.name) for r in earlier}
    policies: list[NetworkPolicy | GlobalNetworkPolicy] = [
        *store.list(NetworkPolicy), *store.list(GlobalNetworkPolicy)]
    if any(p.spec.tier == tier and (type(p), p.namespace, p.name) not in going
           for p in policies):
        raise OperationNotSupported("delete", tier, "Cannot delete a non-empty tier")
