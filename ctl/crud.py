"""`ctl create|apply|replace|delete|get|patch|validate`: resource CRUD with calicoctl's words.

All-or-nothing on bad input: a manifest is read and validated completely,
then checked against the datastore (existence, pool overlap, immutable
fields) before the first write, so a bad file leaves etcd byte-identical.
Only a race lost between the check and the write can stop a batch midway;
that is reported as calicoctl does ("Partial success: ...").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import click
import yaml

from datastore.errors import (
    DatastoreError,
    ResourceAlreadyExists,
    ResourceDoesNotExist,
    ValidationError,
)
from datastore.resources import BGPConfiguration, IPPool, ObjectMeta, Resource, Tier, kind_for
from datastore.resources.ippool import find_overlap, immutable_changes
from datastore.resources.policy import DEFAULT_TIER, default_tier
from datastore.store import ResourceStore, error_namespace

from .common import CtlFailure
from .manifest import ManifestError, load_manifest
from .policy_checks import check_policy_write
from .printers import (
    OutputError,
    PrintContext,
    check_output,
    is_template,
    listing_order,
    render,
    render_named,
)

PAST = {"create": "created", "apply": "applied", "replace": "replaced", "delete": "deleted"}


def _kind_label(resources: Sequence[Resource]) -> str | None:
    kinds = {r.kind_name for r in resources}
    return kinds.pop() if len(kinds) == 1 else None


def _load(filename: str) -> list[Resource]:
    try:
        return load_manifest(filename).resources
    except (ManifestError, ValidationError) as exc:
        raise CtlFailure(f"failed to execute command: {exc}") from None


class _ExistenceRefused(DatastoreError):
    """Every resource of a batch that exists where it must not, or is missing where it
    must be: calicoctl reports each of them, so the check names them all."""

    def __init__(self, errors: list[DatastoreError]) -> None:
        self.errors = errors
        super().__init__(" ".join(map(str, errors)))


def _precheck(store: ResourceStore, verb: str, resources: Sequence[Resource],
              skip_exists: bool, skip_not_exists: bool) -> list[Resource]:
    """Everything that can be known before writing. Returns the resources to write."""
    todo: list[Resource] = []
    refused: list[DatastoreError] = []
    for res in resources:
        # First, as libcalico-go checks the tier (and a tier's protection) before the write.
        check_policy_write(store, verb, res, todo)
        current = store.find(type(res), res.name, res.namespace)
        ns = error_namespace(type(res), res.namespace)
        if verb == "create" and current is not None:
            if not skip_exists:
                refused.append(ResourceAlreadyExists(res.kind_name, res.name, namespace=ns))
            continue
        if verb in ("replace", "delete") and current is None:
            if not (verb == "delete" and skip_not_exists):
                refused.append(ResourceDoesNotExist(res.kind_name, res.name, namespace=ns))
            continue
        if verb in ("apply", "replace") and isinstance(res, IPPool) and isinstance(current, IPPool):
            changes = immutable_changes(res, current)
            if changes:
                raise ValidationError(fields=changes)
        todo.append(res)
    if refused:
        raise _ExistenceRefused(refused)
    if verb != "delete":
        _check_pool_overlaps(store, [r for r in todo if isinstance(r, IPPool)])
    return todo


def _errors_text(verb: str, exc: DatastoreError) -> str:
    """How calicoctl prints a verb's errors (crud_commands.go): create and apply collect
    them in a slice (`[e1 e2]`, Go's %v of []error); replace keeps one error (no brackets)."""
    errors = exc.errors if isinstance(exc, _ExistenceRefused) else [exc]
    text = " ".join(map(str, errors))
    return text if verb == "replace" else f"[{text}]"


def _delete_failures(quoted: str, exc: DatastoreError) -> str:
    """calicoctl delete's own report: a line per failed resource, and the blank line its
    main's Fprintln adds after the text's own newline."""
    errors = exc.errors if isinstance(exc, _ExistenceRefused) else [exc]
    return "".join(f"Failed to delete{quoted} resource: {e}\n" for e in errors)


def _check_pool_overlaps(store: ResourceStore, pools: list[IPPool]) -> None:
    """Overlaps among the file's pools and with stored pools of other names."""
    if not pools:
        return
    incoming = {p.name for p in pools}
    stored = [p for p in store.list(IPPool) if p.name not in incoming]
    for i, pool in enumerate(pools):
        overlap = find_overlap(pool, [*pools[i + 1:], *stored])
        if overlap:
            raise ValidationError(fields=[overlap])


def _run_batch(store: ResourceStore, verb: str, resources: list[Resource],
               skip_exists: bool = False, skip_not_exists: bool = False) -> None:
    label = _kind_label(resources)
    quoted = f" '{label}'" if label else ""
    if not resources:
        raise CtlFailure("No resources specified")

    def failed(exc: DatastoreError) -> CtlFailure:
        if verb == "delete":
            return CtlFailure(_delete_failures(quoted, exc))
        if len(resources) == 1:
            return CtlFailure(f"failed to {verb}{quoted} resource: {_errors_text(verb, exc)}")
        return CtlFailure(f"failed to {verb} any{quoted} resources: {_errors_text(verb, exc)}")

    try:
        todo = _precheck(store, verb, resources, skip_exists, skip_not_exists)
    except DatastoreError as exc:
        raise failed(exc) from None
    done = len(resources) - len(todo)
    for res in todo:
        try:
            _write(store, verb, res)
        except DatastoreError as exc:
            if skip_exists and isinstance(exc, ResourceAlreadyExists):
                done += 1
                continue
            if skip_not_exists and isinstance(exc, ResourceDoesNotExist):
                done += 1
                continue
            if done == 0:
                raise failed(exc) from None
            if verb == "delete":
                click.echo(f"Successfully deleted {done}{quoted} resource(s)")
                raise failed(exc) from None
            raise CtlFailure(
                f"Partial success: {PAST[verb]} the first {done} out of {len(resources)}"
                f"{quoted} resources:\nhit error: {_errors_text(verb, exc)}"
            ) from None
        done += 1
    click.echo(f"Successfully {PAST[verb]} {done}{quoted} resource(s)")


def _write(store: ResourceStore, verb: str, res: Resource) -> None:
    if verb == "create":
        store.create(res)
    elif verb == "apply":
        store.apply(res)
    elif verb == "replace":
        store.replace(res)
    elif verb == "delete":
        store.delete(type(res), res.name, res.namespace, res.resource_version)


_namespace_option = click.option(
    "-n", "--namespace", default=None, metavar="NS",
    help="Namespace of namespaced kinds such as workloadendpoints (default: default).")


def _filename_option(required: bool = True):
    return click.option("-f", "--filename", required=required, metavar="FILE",
                        help="Manifest to read (YAML or JSON, multi-document); '-' for stdin.")


def register(cli: click.Group) -> None:
    @cli.command()
    @_filename_option()
    @click.option("--skip-exists", is_flag=True, help="Treat resources that already exist as created.")
    @click.pass_obj
    def create(obj, filename: str, skip_exists: bool) -> None:
        """Create resources from a file; fails if any already exists."""
        _run_batch(obj.store, "create", _load(filename), skip_exists=skip_exists)

    @cli.command()
    @_filename_option()
    @click.pass_obj
    def apply(obj, filename: str) -> None:
        """Create or update resources from a file."""
        _run_batch(obj.store, "apply", _load(filename))

    @cli.command()
    @_filename_option()
    @click.pass_obj
    def replace(obj, filename: str) -> None:
        """Update existing resources from a file (checked against resourceVersion if given)."""
        _run_batch(obj.store, "replace", _load(filename))

    @cli.command()
    @click.argument("kind", required=False)
    @click.argument("names", nargs=-1)
    @_filename_option(required=False)
    @click.option("--skip-not-exists", is_flag=True, help="Treat missing resources as deleted.")
    @_namespace_option
    @click.pass_obj
    def delete(obj, kind: str | None, names: tuple[str, ...], filename: str | None,
               skip_not_exists: bool, namespace: str | None) -> None:
        """Delete resources by KIND NAME... or from a file."""
        if filename:
            if kind:
                raise click.UsageError("give either -f FILE or KIND NAME, not both")
            resources = _load(filename)
        else:
            if not kind or not names:
                raise click.UsageError("give KIND NAME... or -f FILE")
            cls = _kind(kind)
            ns = (namespace or "default") if cls.namespaced else None
            resources = [_stub(cls, n, ns) for n in names]
        _run_batch(obj.store, "delete", resources, skip_not_exists=skip_not_exists)

    @cli.command()
    @click.argument("kind", required=False)
    @click.argument("names", nargs=-1)
    @_filename_option(required=False)
    @click.option("-o", "--output", default="ps", metavar="FORMAT",
                  help="ps (default), wide, yaml, json, custom-columns=A,B, "
                       "go-template=TEMPLATE or go-template-file=PATH.")
    @_namespace_option
    @click.option("-A", "--all-namespaces", is_flag=True,
                  help="List namespaced resources of every namespace.")
    @click.pass_obj
    def get(obj, kind: str | None, names: tuple[str, ...], filename: str | None,
            output: str, namespace: str | None, all_namespaces: bool) -> None:
        """Show resources of KIND (all, or the NAMEs given), or those named in a file."""
        store: ResourceStore = obj.store
        if filename:
            wanted = _load(filename)
            kinds = {type(r) for r in wanted}
            if len(kinds) != 1:
                raise CtlFailure("failed to get resources: a file for get must hold one kind")
            cls = kinds.pop()
            names = tuple(r.name for r in wanted)
        elif kind:
            cls = _kind(kind)
        else:
            raise click.UsageError("give a resource KIND (e.g. ippool) or -f FILE")
        ns = None
        if cls.namespaced and not all_namespaces:
            ns = namespace or "default"
        missing: list[str] = []
        try:
            template = check_output(cls, output)  # a bad -o fails before anything is read
            # calicoctl adds a NAMESPACE column when -A or -n is given.
            ctx = dataclasses.replace(_print_context(store, cls, output), template=template,
                                      print_namespace=all_namespaces or namespace is not None)
            if names:
                # Each name is fetched on its own; calicoctl prints what it found and then
                # reports every name it did not find (exit 1).
                items = []
                for n in names:
                    try:
                        items.append(_get_one(store, cls, n, ns or "default"
                                              if cls.namespaced else None))
                    except ResourceDoesNotExist as exc:
                        missing.append(str(exc))
                text = render_named(cls, items, output, ctx)
            else:
                items, revision = store.list_with_revision(cls, ns)
                items = listing_order(cls, _with_implicit(cls, items))
                text = render(cls, items, output, ctx, revision=revision)
        except OutputError as exc:
            raise CtlFailure(str(exc)) from None
        except DatastoreError as exc:
            raise CtlFailure(f"failed to get resources: {exc}") from None
        click.echo(text, nl=False)
        if missing:
            raise CtlFailure("\n".join(missing))

    @cli.command()
    @click.argument("kind")
    @click.argument("name")
    @click.option("-p", "--patch", "patch_text", required=True, metavar="PATCH",
                  help="A JSON (or YAML) merge patch, e.g. '{\"spec\":{\"disabled\":true}}'.")
    @click.pass_obj
    def patch(obj, kind: str, name: str, patch_text: str) -> None:
        """Merge-patch one resource."""
        cls = _kind(kind)
        try:
            doc = yaml.safe_load(patch_text)
        except yaml.YAMLError as exc:
            raise CtlFailure(f"failed to execute command: invalid patch: {exc}") from None
        if not isinstance(doc, dict):
            raise CtlFailure("failed to execute command: patch must be a JSON object")
        try:
            obj.store.patch(cls, name, doc)
        except DatastoreError as exc:
            raise CtlFailure(f"failed to patch '{cls.kind_name}' resource: [{exc}]") from None
        click.echo(f"Successfully patched 1 '{cls.kind_name}' resource")

    @cli.command()
    @_filename_option()
    def validate(filename: str) -> None:
        """Check a manifest without touching the datastore."""
        resources = _load(filename)
        label = _kind_label(resources)
        quoted = f" '{label}'" if label else ""
        click.echo(f"Successfully validated {len(resources)}{quoted} resource(s)")


def _kind(name: str) -> type[Resource]:
    try:
        return kind_for(name)
    except DatastoreError as exc:
        raise CtlFailure(str(exc)) from None


def _stub(cls: type[Resource], name: str, namespace: str | None) -> Resource:
    """A resource carrying only its identity, for delete-by-name."""
    return cls.model_construct(metadata=ObjectMeta(name=name, namespace=namespace))



def _get_one(store: ResourceStore, cls: type[Resource], name: str,
             namespace: str | None) -> Resource:
    if cls is Tier and name == DEFAULT_TIER:
        stored = store.find(Tier, name)
        return stored if stored is not None else default_tier()
    return store.get(cls, name, namespace)


def _with_implicit(cls: type[Resource], items: list[Resource]) -> list[Resource]:
    """The listing plus the resources that exist without being stored (the default tier)."""
    if cls is Tier and not any(r.name == DEFAULT_TIER for r in items):
        return [*items, default_tier()]
    return items


def _print_context(store: ResourceStore, cls: type[Resource], output: str) -> PrintContext:
    """calicoctl's {{config "asnumber"}}, for the Node ASN column and for templates
    (printer.go config())."""
    if cls.kind_name != "Node" and not is_template(output):
        return PrintContext()
    try:
        cfg = store.find(BGPConfiguration, "default")
    except DatastoreError:
        return PrintContext(default_asn="unknown")
    if cfg is None or cfg.spec.asNumber is None:
        return PrintContext()
    return PrintContext(default_asn=str(int(cfg.spec.asNumber)))

