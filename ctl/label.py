"""`ctl label KIND NAME key=value [--overwrite] | key --remove [-n NS]`: calicoctl's label.

One label per call, as calicoctl takes it (calicoctl/calicoctl/commands/label_command.go
in projectcalico/calico), with its messages and exit codes (0 done, 1 anything else):

  Successfully set label K on KIND NAME            a new key
  Successfully updated label K on KIND NAME        an existing key (--overwrite, or the
                                                   same value again)
  Successfully removed label K from KIND NAME      --remove
  invalid label ARG                                no '=' in ARG (without --remove)
  failed to get KIND NAME, error ...               no such resource, or kind
  failed to update label of KIND NAME, key K is already present. please use
      '--overwrite' to set a new value
  cannot remove label of KIND NAME, key K does not exist
  failed to update KIND NAME, label not changed: REASON

KIND is echoed as typed. The change is a read, then a compare-and-swap on the
read's revision; when another writer got in between, the whole decision is
made again on the fresh copy (a few times), so a concurrent change is neither
lost nor overwritten. A refused or invalid label leaves the store untouched:
the new document is validated like any write before it is sent. calicoctl
stops at "label not changed"; tortie adds the reason after a colon.

WorkloadEndpoints keep `projectcalico.org/namespace` and
`projectcalico.org/orchestrator` whatever the labels say, as libcalico-go's
client stores them (clientv3/workloadendpoint.go updateLabelsForStorage): removing
one reports success and it is written back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from datastore.errors import DatastoreError, UpdateConflict
from datastore.resources import Resource, kind_for, parse_document
from datastore.store import ResourceStore

from .common import CtlFailure

UPDATE_ATTEMPTS = 5


def parse_label_arg(arg: str, remove: bool) -> tuple[str, str]:
    """'key=value' -> (key, value); with --remove the argument is the key alone."""
    if remove:
        return arg, ""
    key, sep, value = arg.partition("=")
    if not sep:
        raise CtlFailure(f"invalid label {arg}")
    return key, value


def relabel(labels: Mapping[str, str], key: str, value: str, *, remove: bool, overwrite: bool,
            what: str) -> tuple[dict[str, str], str]:
    """The new labels and the success message, or CtlFailure with calicoctl's refusal. Pure."""
    new = dict(labels)
    if remove:
        if key not in new:
            raise CtlFailure(f"cannot remove label of {what}, key {key} does not exist")
        del new[key]
        return new, f"Successfully removed label {key} from {what}"
    if key in new:
        if not overwrite and new[key] != value:
            raise CtlFailure(f"failed to update label of {what}, key {key} is already present. "
                             "please use '--overwrite' to set a new value")
        new[key] = value
        return new, f"Successfully updated label {key} on {what}"
    new[key] = value
    return new, f"Successfully set label {key} on {what}"


def _with_labels(res: Resource, labels: dict[str, str]) -> Resource:
    """`res` carrying `labels`, validated as any write is (ValidationError otherwise)."""
    # A WorkloadEndpoint's own model puts its namespace and orchestrator labels back.
    doc: dict[str, Any] = res.model_dump(by_alias=True, exclude_none=True, mode="json")
    doc["metadata"]["labels"] = labels or None  # Calico omits an empty map
    return parse_document(doc)


def label_resource(store: ResourceStore, kind: str, name: str, namespace: str | None,
                   arg: str, *, remove: bool, overwrite: bool) -> str:
    """Do one `ctl label`; returns the success line (CtlFailure otherwise)."""
    key, value = parse_label_arg(arg, remove)
    what = f"{kind} {name}"
    try:
        cls = kind_for(kind)
    except DatastoreError as exc:
        raise CtlFailure(f"failed to get {what}, error {exc}") from None
    ns = (namespace or "default") if cls.namespaced else None
    for attempt in range(UPDATE_ATTEMPTS):
        try:
            current = store.get(cls, name, ns)
        except DatastoreError as exc:
            raise CtlFailure(f"failed to get {what}, error {exc}") from None
        labels, message = relabel(current.metadata.labels or {}, key, value, remove=remove,
                                  overwrite=overwrite, what=what)
        try:
            store.update(_with_labels(current, labels))
        except UpdateConflict:
            if attempt < UPDATE_ATTEMPTS - 1:
                continue  # someone else wrote it since we read it: decide again
            raise CtlFailure(f"failed to update {what}, label not changed: it kept changing "
                             f"({UPDATE_ATTEMPTS} attempts)") from None
        except DatastoreError as exc:
            raise CtlFailure(f"failed to update {what}, label not changed: {exc}") from None
        return message
    raise AssertionError("unreachable")


def register(cli: click.Group) -> None:
    @cli.command()
    @click.argument("kind")
    @click.argument("name")
    @click.argument("label")
    @click.option("--overwrite", is_flag=True,
                  help="Overwrite the value when the key is already present in labels.")
    @click.option("--remove", is_flag=True, help="Remove the specified key from labels.")
    @click.option("-n", "--namespace", default=None, metavar="NS",
                  help="Namespace of the resource (namespaced kinds; default: default).")
    @click.pass_obj
    def label(obj: Any, kind: str, name: str, label: str, overwrite: bool, remove: bool,
              namespace: str | None) -> None:
        """Set (key=value) or, with --remove, remove (key) one label of a resource."""
        click.echo(label_resource(obj.store, kind, name, namespace, label, remove=remove,
                                  overwrite=overwrite))
