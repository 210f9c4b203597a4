"""ipset writer: the only writer of tortie's IP sets in one network namespace.

Owns every set named ``cali40*`` (IPv4) or ``cali60*`` (IPv6), and the
temporary ``cali4t<n>`` / ``cali6t<n>`` sets it rewrites through. Any other
set is never written (its members are not even parsed).

Invariants:

- Creates and member updates (``apply``) are kept apart from destroys
  (``apply_deletions``): the agent runs ipset updates, then iptables, then
  ipset deletions, so no rule ever points at a missing set (Felix
  ``int_dataplane.go`` apply order; ``ipsets.go`` ``ApplyUpdates`` /
  ``ApplyDeletions``).
- Each is one ``ipset restore`` per call. A changed set gets ``del``/``add``
  lines when that is the smaller write, otherwise it is rebuilt in a temp set
  and ``swap``-ed in (atomic for the datapath; Felix
  ``calico/felix/ipsets.py`` ``replace_members``). The kernel cannot swap sets
  of different types, so a type change destroys and re-creates the set, in a
  second restore, which fails while a rule still references the set.
- Members are compared in the form ``ipset save`` prints (``10.0.0.1/32`` in a
  hash:net is ``10.0.0.1``; ``80`` in a port set is ``tcp:80``), so an
  unchanged desired state writes nothing, also after a restart.
- ``ipset restore`` is not atomic (lines before a failing line stay applied):
  a failure drops the cached kernel view and the next call re-reads it.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from agent.dataplane.common import ApplyResult, failed_input_line
from agent.dataplane.errors import CommandError
from agent.dataplane.iptables import Runner, in_netns, run_command
from agent.types import IPSet

_log = logging.getLogger(__name__)

OWNED_PREFIXES = ("cali40", "cali60")
TEMP_PREFIXES = ("cali4t", "cali6t")
MAX_NAME = 31  # IPSET_MAXNAMELEN (32) including the NUL
# Felix's MaxIPSetSize default: room for large clusters, fixed so it never
# triggers a rewrite by itself.
DEFAULT_MAXELEM = 1048576

__all__ = ["IPSetError", "IPSets", "ApplyResult", "SetState", "parse_save",
           "canonical_member", "plan_updates", "render_updates", "render_recreates",
           "render_deletions"]


class IPSetError(CommandError):
    """A failed ipset command: argv, return code, stderr and the input line it points at."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str,
                 failed_line: str | None = None) -> None:
        super().__init__(argv, returncode, stderr, line=failed_line)

    @property
    def failed_line(self) -> str | None:
        return self.line


def is_owned(name: str) -> bool:
    return name.startswith(OWNED_PREFIXES) or name.startswith(TEMP_PREFIXES)


def family_of(name: str) -> str:
    return "inet6" if name.startswith(("cali60", "cali6t")) else "inet"


@dataclass(frozen=True)
class SetState:
    """A set as the kernel holds it (or should): members in ``ipset save`` form."""

    name: str
    set_type: str
    family: str
    maxelem: int
    members: frozenset[str]

    def create_line(self, name: str | None = None) -> str:
        opts = "" if self.set_type.startswith("list:") else f" family {self.family}"
        return f"create {name or self.name} {self.set_type}{opts} maxelem {self.maxelem}"


# --- members -------------------------------------------------------------------------------


def canonical_member(member: str, set_type: str, family: str) -> str:
    """A member as ``ipset save`` prints it; raises ValueError for one the set cannot hold.

    Handles the hash types' ip, net and port parts; anything else (iface,
    mark, mac, bitmap and list types) is kept as written.
    """
    member = member.strip()
    kind, _, dims = set_type.partition(":")
    parts = dims.split(",") if kind == "hash" else []
    values = member.split(",")
    if not parts or len(values) != len(parts):
        return member
    version = 6 if family == "inet6" else 4
    out = []
    for part, value in zip(parts, values, strict=True):
        if part in ("ip", "net"):
            try:
                net = ipaddress.ip_network(value, strict=False)
            except ValueError:
                if part == "ip" and "-" in value:
                    out.append(value)  # a range, kept as written
                    continue
                raise ValueError(f"{member!r} is not a valid {set_type} member") from None
            if net.version != version:
                raise ValueError(f"{member!r} is not an IPv{version} address "
                                 f"(a {family} set)")
            if net.prefixlen == net.max_prefixlen:
                out.append(str(net.network_address))
            elif part == "ip":
                raise ValueError(f"{member!r}: a {set_type} set holds addresses, not networks")
            else:
                out.append(str(net))
        elif part == "port":
            proto, sep, port = value.rpartition(":")
            out.append(f"{proto.lower() if sep else 'tcp'}:{port}")
        else:
            out.append(value)
    return ",".join(out)


def desired_state(ipset: IPSet, maxelem: int = DEFAULT_MAXELEM) -> SetState:
    """Validate a desired set and put its members in kernel form."""
    name = ipset.name
    if not name.startswith(OWNED_PREFIXES) or len(name) > MAX_NAME:
        raise ValueError(f"ipset {name!r}: tortie sets are named cali40*/cali60* "
                         f"and at most {MAX_NAME} characters")
    family = family_of(name)
    try:
        members = frozenset(canonical_member(m, ipset.set_type, family) for m in ipset.members)
    except ValueError as exc:
        raise ValueError(f"ipset {name}: {exc}") from None
    if len(members) > maxelem:
        raise ValueError(f"ipset {name}: {len(members)} members exceed maxelem {maxelem}")
    return SetState(name, ipset.set_type, family, maxelem, members)


# --- parsing -------------------------------------------------------------------------------

_VALUED_OPTIONS = frozenset({"family", "hashsize", "maxelem", "bucketsize", "initval",
                             "timeout", "netmask", "bitmask", "markmask", "range", "size"})


def parse_save(text: str) -> dict[str, SetState]:
    """Our sets from ``ipset save`` (or ``ipset list -o save``) output; others are skipped."""
    meta: dict[str, tuple[str, str, int]] = {}
    members: dict[str, set[str]] = {}
    for line in text.splitlines():
        toks = line.split()
        if len(toks) < 3 or not is_owned(toks[1]):
            continue
        if toks[0] == "create":
            opts: dict[str, str] = {}
            i = 3
            while i < len(toks):
                if toks[i] in _VALUED_OPTIONS and i + 1 < len(toks):
                    opts[toks[i]] = toks[i + 1]
                    i += 2
                else:
                    i += 1
            meta[toks[1]] = (toks[2], opts.get("family", "inet"),
                             int(opts.get("maxelem", "65536")))
            members.setdefault(toks[1], set())
        elif toks[0] == "add":
            members.setdefault(toks[1], set()).add(toks[2])
    return {name: SetState(name, t, fam, maxelem, frozenset(members.get(name, ())))
            for name, (t, fam, maxelem) in meta.items()}


# --- planning and rendering (pure) -------------------------------------------------------


def parse_terse_counts(text: str) -> dict[str, int]:
    """{set name: number of entries} of tortie's sets in ``ipset list -terse`` output."""
    counts: dict[str, int] = {}
    name = ""
    for line in text.splitlines():
        if line.startswith("Name: "):
            name = line[6:].strip()
        elif line.startswith("Number of entries: ") and is_owned(name):
            counts[name] = int(line.split(":", 1)[1])
    return counts


@dataclass(frozen=True)
class SetChange:
    """One desired set that differs from the kernel, and how it will be written."""

    name: str
    how: str  # "create" | "update" (del/add lines) | "rewrite" (temp + swap) | "recreate"
    desired: SetState
    adds: frozenset[str] = frozenset()
    dels: frozenset[str] = frozenset()


def plan_updates(desired: Mapping[str, SetState],
                 kernel: Mapping[str, SetState]) -> list[SetChange]:
    """The sets to create or change, in name order."""
    changes = []
    for name in sorted(desired):
        want, have = desired[name], kernel.get(name)
        if have is want:
            continue  # written from this very state: no need to compare the members
        if have is None:
            changes.append(SetChange(name, "create", want, adds=want.members))
        elif (have.set_type, have.family) != (want.set_type, want.family):
            changes.append(SetChange(name, "recreate", want, adds=want.members))
        else:
            adds, dels = want.members - have.members, have.members - want.members
            if have.maxelem != want.maxelem or len(adds) + len(dels) > len(want.members):
                # Fewer lines to rebuild than to patch (or metadata to change).
                changes.append(SetChange(name, "rewrite", want, adds, dels))
            elif adds or dels:
                changes.append(SetChange(name, "update", want, adds, dels))
    return changes


def temp_names(count: int, family: str, taken: Iterable[str]) -> list[str]:
    """`count` temp set names of the family (cali4t0, cali4t1, ...) that are not in `taken`."""
    prefix = TEMP_PREFIXES[1] if family == "inet6" else TEMP_PREFIXES[0]
    used = set(taken)
    names: list[str] = []
    i = 0
    while len(names) < count:
        if f"{prefix}{i}" not in used:
            names.append(f"{prefix}{i}")
        i += 1
    return names


def render_updates(changes: Sequence[SetChange], taken: Iterable[str] = ()) -> str:
    """``ipset restore`` input for creates, updates and rewrites (not recreates).

    Deletions before additions, so an update never needs more than maxelem.
    `taken` are names present in the kernel: temp sets avoid them.
    """
    out: list[str] = []
    taken = set(taken)
    rewrites = [c for c in changes if c.how == "rewrite"]
    temps: dict[str, str] = {}
    for fam in ("inet", "inet6"):
        of_family = [c for c in rewrites if c.desired.family == fam]
        temps.update(zip([c.name for c in of_family],
                         temp_names(len(of_family), fam, taken), strict=True))
    for c in changes:
        if c.how == "create":
            out.append(c.desired.create_line())
            out += [f"add {c.name} {m}" for m in sorted(c.adds)]
        elif c.how == "update":
            out += [f"del {c.name} {m}" for m in sorted(c.dels)]
            out += [f"add {c.name} {m}" for m in sorted(c.adds)]
        elif c.how == "rewrite":
            tmp = temps[c.name]
            out.append(c.desired.create_line(tmp))
            out.append(f"flush {tmp}")
            out += [f"add {tmp} {m}" for m in sorted(c.desired.members)]
            out += [f"swap {tmp} {c.name}", f"destroy {tmp}"]
    return "\n".join(out) + "\n" if out else ""


def render_recreates(changes: Sequence[SetChange]) -> str:
    """Type or family changes: the kernel cannot swap those, so destroy and create again."""
    out: list[str] = []
    for c in changes:
        if c.how == "recreate":
            out += [f"destroy {c.name}", c.desired.create_line()]
            out += [f"add {c.name} {m}" for m in sorted(c.desired.members)]
    return "\n".join(out) + "\n" if out else ""


def plan_deletions(desired: Iterable[str], kernel: Iterable[str]) -> list[str]:
    """Our sets (leftover temps included) that are not desired."""
    keep = set(desired)
    return sorted(n for n in kernel if is_owned(n) and n not in keep)


def render_deletions(names: Sequence[str]) -> str:
    return "".join(f"destroy {n}\n" for n in names)


# --- the writer ----------------------------------------------------------------------------


class IPSets:
    """Converges the namespace's cali40*/cali60* sets to the desired ones.

    Not thread-safe; driven by the agent's dataplane loop: ``set_desired``,
    then ``apply`` (creates and updates), then the iptables writers, then
    ``apply_deletions``. ``resync`` distrusts the cached kernel view so the
    next call re-reads it and repairs drift. ``writes`` counts ``ipset``
    write commands over the object's life.
    """

    def __init__(self, netns: str | None = None, runner: Runner = run_command,
                 maxelem: int = DEFAULT_MAXELEM) -> None:
        self.netns = netns
        self.maxelem = maxelem
        self.writes = 0
        self.reads = 0
        self._runner = runner
        self._desired: dict[str, SetState] = {}
        self._validated: dict[IPSet, SetState] = {}  # last set_desired's, by desired set
        self._kernel: dict[str, SetState] | None = None

    def __repr__(self) -> str:
        return f"IPSets(netns={self.netns!r})"

    def set_desired(self, sets: Iterable[IPSet]) -> None:
        """Replace the desired sets (validated; ValueError names the set and member)."""
        wanted: dict[str, SetState] = {}
        # A set desired last time as well keeps its validated state: canonicalising
        # 100 000 members costs ~0.5 s, and the agent hands over every set on each change.
        known, validated = self._validated, {}
        for s in sets:
            state = known.get(s) or desired_state(s, self.maxelem)
            validated[s] = state
            if s.name in wanted and wanted[s.name] != state:
                raise ValueError(f"ipset {s.name} is desired twice, differently")
            wanted[s.name] = state
        self._desired = wanted
        self._validated = validated

    def resync(self) -> None:
        """Forget the cached kernel view; the next apply re-reads it and repairs drift."""
        self._kernel = None

    def check_drift(self) -> bool:
        """The cheap periodic check: the headers of the kernel's sets (``ipset list
        -terse``: names and "Number of entries", no members) against the cached
        view. A set missing, or holding another number of members, drops the view,
        so the next apply re-reads the sets and writes only the difference. True
        when drift was found; nothing is checked before the first apply read the sets.
        A member swapped for another one keeps the count: that is the full refresh's."""
        if self._kernel is None:
            return False
        argv = in_netns(self.netns, ["ipset", "list", "-terse"])
        self.reads += 1
        res = self._runner(argv, None)
        if res.returncode != 0:
            _log.warning("ipset: drift check could not list the sets: %s", res.stderr.strip())
            return False
        counts = parse_terse_counts(res.stdout)
        cached = {name: len(s.members) for name, s in self._kernel.items()}
        if counts == cached:
            return False
        _log.info("ipset: tortie's sets changed behind its back (%s): repairing",
                  ", ".join(sorted(n for n in counts.keys() | cached.keys()
                                   if counts.get(n) != cached.get(n))[:5]))
        self._kernel = None
        return True

    def read_kernel(self) -> dict[str, SetState]:
        """Our sets as the kernel has them now (for tests and diagnostics)."""
        return self._read()

    def apply(self) -> ApplyResult:
        """Create missing sets and bring members up to date; never destroys a desired set's name."""
        writes = 0
        try:
            kernel = self._kernel_view()
            changes = plan_updates(self._desired, kernel)
            if not changes:
                return ApplyResult()
            for c in changes:
                self._log_change(c, kernel.get(c.name))
            text = render_updates(changes, taken=kernel)
            if text:
                writes += 1
                self._restore(text)
            # Recorded before the recreate batch, which may fail on its own.
            for c in changes:
                if c.how != "recreate":
                    kernel[c.name] = c.desired
            recreate = render_recreates(changes)
            if recreate:
                writes += 1
                self._restore(recreate)
                for c in changes:
                    if c.how == "recreate":
                        kernel[c.name] = c.desired
        except IPSetError as exc:
            _log.error("ipset: %s", exc)
            self._kernel = None
            return ApplyResult(writes=writes, errors=(exc,))
        return ApplyResult(writes=writes)

    def apply_deletions(self) -> ApplyResult:
        """Destroy our sets that are no longer desired (call after iptables dropped references).

        A set still in use by a rule cannot be destroyed; it is reported and
        the other deletions go ahead (each is retried on the next call).
        """
        try:
            kernel = self._kernel_view()
        except IPSetError as exc:
            self._kernel = None
            return ApplyResult(errors=(exc,))
        names = plan_deletions(self._desired, kernel)
        if not names:
            return ApplyResult()
        for n in names:
            _log.info("ipset: destroying %s", n)
        try:
            self._restore(render_deletions(names))
        except IPSetError as exc:
            _log.info("ipset: batch destroy failed (%s); destroying one by one", exc)
        else:
            for n in names:
                kernel.pop(n, None)
            return ApplyResult(writes=1)
        # ipset restore stops at the first failing line: find out what is left
        # and try each set on its own.
        writes, errors = 1, []
        try:
            kernel = self._read()
            self._kernel = kernel
            for n in plan_deletions(self._desired, kernel):
                writes += 1
                try:
                    self._restore(render_deletions([n]))
                    kernel.pop(n, None)
                except IPSetError as exc:
                    _log.error("ipset: %s", exc)
                    errors.append(exc)
        except IPSetError as exc:
            self._kernel = None
            errors.append(exc)
        return ApplyResult(writes=writes, errors=tuple(errors))

    def _log_change(self, c: SetChange, have: SetState | None) -> None:
        if c.how == "create":
            _log.info("ipset: creating %s (%s, %d members)", c.name, c.desired.set_type,
                      len(c.desired.members))
        elif c.how == "update":
            _log.info("ipset: updating %s (+%d -%d members)", c.name, len(c.adds), len(c.dels))
        elif c.how == "rewrite":
            _log.info("ipset: rewriting %s through a temp set and swap (%d members, +%d -%d)",
                      c.name, len(c.desired.members), len(c.adds), len(c.dels))
        else:
            old = f"{have.set_type} {have.family}" if have else "?"
            _log.info("ipset: re-creating %s (%s -> %s %s)", c.name, old,
                      c.desired.set_type, c.desired.family)
        _log.debug("ipset: %s adds %s dels %s", c.name, sorted(c.adds), sorted(c.dels))

    # kernel I/O

    def _kernel_view(self) -> dict[str, SetState]:
        if self._kernel is None:
            self._kernel = self._read()
        return self._kernel

    def _read(self) -> dict[str, SetState]:
        argv = in_netns(self.netns, ["ipset", "save"])
        self.reads += 1
        res = self._runner(argv, None)
        if res.returncode != 0:
            raise IPSetError(argv, res.returncode, res.stderr)
        return parse_save(res.stdout)

    def _restore(self, text: str) -> None:
        # -exist: a create of an existing identical set, an add of a present
        # member or a del of an absent one is not an error (drift since the read).
        argv = in_netns(self.netns, ["ipset", "-exist", "restore"])
        self.writes += 1
        _log.debug("ipset restore input:\n%s", text)
        res = self._runner(argv, text)
        if res.returncode != 0:
            raise IPSetError(argv, res.returncode, res.stderr, failed_input_line(res.stderr, text))
