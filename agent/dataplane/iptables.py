"""iptables writer: the only writer of tortie's chains and hooks, one table at a time.

Owns, in one table (raw, mangle, nat or filter) of one network namespace, on one
backend (nft or legacy, chosen once by `detect_backend`):

- every chain whose name starts with ``cali-``;
- every rule, in any other chain, that carries a ``cali:`` comment (the hooks:
  jumps from kernel chains such as POSTROUTING into our chains).

Everything else (KUBE-*, DOCKER*, a user's rule in POSTROUTING) is read but
never written. As in Felix (calico/felix/fiptables.py ``_extract_our_chains``,
Go ``felix/iptables/table.go``) ownership is by name prefix and comment only.

Invariants:

- One ``<backend>-restore --noflush`` transaction per table per apply, holding
  only what differs; a chain is rewritten whole (declare, flush, append) in it,
  so the datapath never sees a half-written chain.
- A chain is removed (``-X``) only once nothing references it: stale hooks and
  referencing chains go in the same transaction, before the ``-X``; a chain
  still referenced by a foreign rule is emptied and kept.
- Rules are compared with the kernel's own text. iptables rewrites what it is
  given (``-p 4`` -> ``-p ipencap``, ``-s 10.0.0.1`` -> ``-s 10.0.0.1/32``, an
  added ``-m udp``, comment quoting, option order), so each desired rule is
  mapped once to the kernel's form of it: learnt by reading the table back
  after every write (only the rewritten chains, ``-S CHAIN``, when a write did
  nothing but rewrite a few), or, when a desired rule meets a kernel rule it has not
  been mapped to yet (a restart), by loading the rule into a throwaway network
  namespace (``unshare --net``) and reading it back there. The host's tables
  are never written to find out, so a restart with unchanged desired state
  writes nothing.
- A failed write is retried once at once after re-reading the table (the
  table may have changed under us); if that fails too the error is returned
  and the cached view dropped, so the next apply starts from a fresh read.
  ``resync()`` drops the view on purpose (drift repair).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from agent.dataplane.common import ApplyResult, failed_input_line
from agent.dataplane.errors import CommandError
from agent.types import Chain, Hook

_log = logging.getLogger(__name__)

TABLES = ("raw", "mangle", "nat", "filter")
BACKENDS = ("legacy", "nft")
CHAIN_PREFIX = "cali-"
HOOK_COMMENT_PREFIX = "cali:"
# XT_EXTENSION_MAXNAMELEN (29) including the NUL; Felix truncates at 28 too.
MAX_CHAIN_NAME = 28
# Kernel (built-in) chains per table: the only chains a hook may live in
# besides foreign user chains.
BUILTIN_CHAINS: Mapping[str, frozenset[str]] = {
    "raw": frozenset({"PREROUTING", "OUTPUT"}),
    "mangle": frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}),
    "nat": frozenset({"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"}),
    "filter": frozenset({"INPUT", "FORWARD", "OUTPUT"}),
}
# How long iptables-restore waits for the xtables lock (legacy only; nft ignores it).
RESTORE_LOCK_WAIT_S = 10
# A write that rewrote at most this many chains (and nothing else) reads back only them.
READ_BACK_CHAINS_MAX = 8
COMMAND_TIMEOUT_S = 60.0
# Felix's DetectBackend: this many legacy rules settle it without looking at nft.
LEGACY_RULES_THRESHOLD = 10


class IptablesError(CommandError):
    """A failed iptables command: argv, return code, stderr and the input line it points at."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str,
                 failed_line: str | None = None) -> None:
        super().__init__(argv, returncode, stderr, line=failed_line)

    @property
    def failed_line(self) -> str | None:
        return self.line


Runner = Callable[[Sequence[str], str | None], subprocess.CompletedProcess[str]]


def run_command(argv: Sequence[str], input: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real runner: no shell, text in and out, bounded in time."""
    try:
        return subprocess.run(list(argv), input=input, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(list(argv), -1, "", f"timed out after {exc.timeout}s")
    except FileNotFoundError as exc:
        return subprocess.CompletedProcess(list(argv), 127, "", str(exc))


def in_netns(netns: str | None, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def binary(backend: str, action: str, ip_version: int = 4) -> str:
    """`iptables-nft-save` and friends, falling back to the plain name (Felix findBestBinary)."""
    base = "ip6tables" if ip_version == 6 else "iptables"
    specific = f"{base}-{backend}-{action}"
    return specific if shutil.which(specific) else f"{base}-{action}"


# --- backend detection -------------------------------------------------------------------


def count_rules(save_text: str) -> int:
    """Rules in iptables-save output: lines starting with '-' (Felix countRulesInIptableOutput)."""
    return sum(1 for line in save_text.splitlines() if line.startswith("-"))


def has_hint_chains(save_text: str) -> bool:
    """Chains kubelet/kube-proxy or a Calico agent declare (KUBE-*, cali-*), rules or not."""
    return any(line.startswith((":KUBE-", ":cali-")) for line in save_text.splitlines())


def choose_backend(legacy_save: str, nft_save: str) -> tuple[str, str]:
    """Pick the backend the host uses from both backends' save output; returns (backend, why).

    1. A backend holding KUBE-* or cali-* chains, when only one does. kubelet
       declares KUBE-IPTABLES-HINT / KUBE-KUBELET-CANARY (empty chains) in the
       backend it uses; kubernetes-sigs/iptables-wrappers looks at these first.
    2. Felix's rule (felix/iptables/feature_detect.go DetectBackend, itself from
       kubernetes' iptables-wrapper): 10 or more legacy rules -> legacy;
       otherwise whichever has more rules.
    3. A tie (typically both empty) -> nft. Felix says legacy here; we pick nft
       because it is what `iptables` means on current distributions (Debian 12's
       `update-alternatives --display iptables` defaults to iptables-nft) and because
       touching legacy tables makes every nft listing warn about them.
    """
    legacy_hint, nft_hint = has_hint_chains(legacy_save), has_hint_chains(nft_save)
    if legacy_hint != nft_hint:
        chosen = "legacy" if legacy_hint else "nft"
        return chosen, f"only {chosen} holds KUBE-/cali- chains"
    legacy_n, nft_n = count_rules(legacy_save), count_rules(nft_save)
    if legacy_n >= LEGACY_RULES_THRESHOLD:
        return "legacy", f"{legacy_n} legacy rules (>= {LEGACY_RULES_THRESHOLD})"
    if legacy_n != nft_n:
        chosen = "legacy" if legacy_n > nft_n else "nft"
        return chosen, f"{legacy_n} legacy rules vs {nft_n} nft rules"
    return "nft", f"{legacy_n} rules in each backend: defaulting to nft"


def detect_backend(netns: str | None = None, specified: str = "auto",
                   runner: Runner = run_command) -> str:
    """Felix's `IptablesBackend=Auto|Legacy|NFT`: detect, and let an explicit choice win.

    Reads whole-host save output of both backends (v4 and, where installed, v6,
    as Felix does); never names a table, so it does not instantiate any.
    """
    outputs: dict[str, str] = {}
    for backend in BACKENDS:
        text = []
        for version in (4, 6):
            exe = f"{'ip6tables' if version == 6 else 'iptables'}-{backend}-save"
            if not shutil.which(exe):
                continue
            res = runner(in_netns(netns, [exe]), None)
            if res.returncode == 0:
                text.append(res.stdout)
            else:
                _log.debug("%s failed (%s); counting it as empty", exe, res.stderr.strip())
        outputs[backend] = "\n".join(text)
    detected, why = choose_backend(outputs["legacy"], outputs["nft"])
    specified = specified.lower()
    if specified == "auto":
        _log.info("iptables backend: %s (%s)", detected, why)
        return detected
    if specified not in BACKENDS:
        raise ValueError(f"IptablesBackend must be auto, legacy or nft, not {specified!r}")
    if specified != detected:
        _log.warning("iptables backend %s specified but %s detected (%s); using %s",
                     specified, detected, why, specified)
    return specified


# --- parsing -------------------------------------------------------------------------------


@dataclass
class TableState:
    """One table as iptables-save printed it: every chain, in order, with its rules.

    Rules are the text after ``-A CHAIN `` exactly as printed.
    """

    chains: dict[str, list[str]] = field(default_factory=dict)

    def owned_chains(self) -> list[str]:
        return [c for c in self.chains if c.startswith(CHAIN_PREFIX)]

    def our_hooks(self, chain: str) -> list[str]:
        return [r for r in self.chains.get(chain, []) if is_our_hook(r)]

    def ours(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """What tortie owns in the table: its chains with their rules, and its hooks
        per other chain (in order); foreign rules are left out, so their churn (a
        kube-proxy sync) is not drift of ours."""
        return tuple(
            (name, tuple(rules if name.startswith(CHAIN_PREFIX)
                         else (r for r in rules if is_our_hook(r))))
            for name, rules in self.chains.items()
            if name.startswith(CHAIN_PREFIX) or any(is_our_hook(r) for r in rules))


def parse_save(text: str, table: str) -> TableState:
    """Parse the ``*table`` section of iptables-save output (both backends print the same form)."""
    state = TableState()
    inside = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            inside = line[1:] == table
            continue
        if not inside:
            continue
        if line == "COMMIT":
            inside = False
        elif line.startswith(":"):
            state.chains.setdefault(line[1:].split(" ", 1)[0], [])
        elif line.startswith("-A "):
            name, _, rule = line[3:].partition(" ")
            state.chains.setdefault(name, []).append(rule.strip())
    return state


# A word, or a double-quoted string, or several glued together (`a"b c"`): the shell words
# iptables-save prints when the rule holds no backslash and no single quote.
_PLAIN_WORD_RE = re.compile(r'(?:[^ \t\r\n"]+|"[^"]*")+')


# Cached: every apply compares and scans the same rule texts again (a table with 100
# endpoints holds ~1000 rules); tokenising them with shlex each time was most of the
# agent's CPU while pods were being added (docs/cni.md, "Performance"). Bounded, so a
# churning table cannot grow it without limit.
@functools.lru_cache(maxsize=16384)
def rule_tokens(rule: str) -> tuple[str, ...]:
    """A rule as the argv iptables would see (quoting differences gone): what shlex.split
    gives, through a regex for what iptables prints (shlex is ~20x slower per rule)."""
    if "\\" not in rule and "'" not in rule and rule.count('"') % 2 == 0:
        # No escapes and balanced double quotes: inside them only `\` is special to a
        # POSIX shell, so dropping the quote characters is what shlex would do.
        return tuple(w.replace('"', "") for w in _PLAIN_WORD_RE.findall(rule))
    try:
        return tuple(shlex.split(rule))
    except ValueError:
        return tuple(rule.split())


def comments(rule: str) -> list[str]:
    toks = rule_tokens(rule)
    return [toks[i + 1] for i, t in enumerate(toks[:-1]) if t == "--comment"]


def is_our_hook(rule: str) -> bool:
    """A rule outside our chains is ours iff it carries a ``cali:`` comment (Felix's hash prefix)."""
    return any(c.startswith(HOOK_COMMENT_PREFIX) for c in comments(rule))


def jump_target(rule: str) -> str | None:
    toks = rule_tokens(rule)
    for i, t in enumerate(toks[:-1]):
        if t in ("-j", "--jump", "-g", "--goto"):
            return toks[i + 1]
    return None


def same_tokens(desired: str, kernel: str) -> bool:
    return rule_tokens(desired) == rule_tokens(kernel)


# --- planning and rendering (pure) -------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """The difference between desired state and one table, in the order it must be written."""

    write: Mapping[str, tuple[str, ...]]  # chains (re)written whole: desired rules
    delete: tuple[str, ...] = ()  # owned chains no longer desired: flushed, then -X
    flush_only: tuple[str, ...] = ()  # ditto but still referenced by a foreign rule: emptied, kept
    remove_hooks: tuple[tuple[str, str], ...] = ()  # (kernel chain, the kernel's text of the rule)
    insert_hooks: tuple[tuple[str, str], ...] = ()  # (kernel chain, desired rule), top-down order
    blocked: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # chain -> referencers

    @property
    def empty(self) -> bool:
        return not (self.write or self.delete or self.flush_only or self.remove_hooks
                    or self.insert_hooks)


def plan_table(
    desired_chains: Mapping[str, Sequence[str]],
    desired_hooks: Sequence[tuple[str, str]],
    kernel: TableState,
    same: Callable[[str, str], bool] = same_tokens,
) -> Plan:
    """Diff desired chains/hooks against a parsed table. `same(desired, kernel_text)` compares rules."""
    write: dict[str, tuple[str, ...]] = {}
    for name in sorted(desired_chains):
        rules = tuple(desired_chains[name])
        have = kernel.chains.get(name)
        if have is None or len(have) != len(rules) or not all(
                same(d, k) for d, k in zip(rules, have, strict=True)):
            write[name] = rules

    hooks_by_chain: dict[str, list[str]] = {}
    for chain, rule in desired_hooks:
        hooks_by_chain.setdefault(chain, []).append(rule)
    remove: list[tuple[str, str]] = []
    insert: list[tuple[str, str]] = []
    hook_chains = [c for c in kernel.chains if not c.startswith(CHAIN_PREFIX)]
    hook_chains += [c for c in hooks_by_chain if c not in kernel.chains]
    for chain in hook_chains:
        ours = kernel.our_hooks(chain)
        remaining = list(ours)
        missing = []
        for rule in hooks_by_chain.get(chain, []):
            match = next((i for i, k in enumerate(remaining) if same(rule, k)), None)
            if match is None:
                missing.append(rule)
            else:
                remaining.pop(match)
        if remaining:
            # Stale or duplicated hooks of ours. `-D` by value removes the first
            # copy, which may be the one on top, so (as Felix does for its
            # insert-mode chains) all of ours go and the desired ones return on top.
            remove += [(chain, k) for k in ours]
            insert += [(chain, r) for r in hooks_by_chain.get(chain, [])]
        else:
            insert += [(chain, r) for r in missing]

    undesired = [c for c in kernel.owned_chains() if c not in desired_chains]
    # The table as it will be after this transaction, to see what still jumps where.
    after = {c: list(rules) for c, rules in kernel.chains.items()}
    after.update({c: list(rules) for c, rules in write.items()})
    after.update({c: [] for c in undesired})
    for chain, rule in remove:
        after[chain].remove(rule)
    for chain, rule in insert:
        after.setdefault(chain, []).insert(0, rule)
    delete: list[str] = []
    flush_only: list[str] = []
    blocked: dict[str, tuple[str, ...]] = {}
    # Who jumps where, in one pass over the table (not one pass per undesired chain).
    jumpers: dict[str, set[str]] = {}
    if undesired:
        for chain, chain_rules in after.items():
            for rule in chain_rules:
                target = jump_target(rule)
                if target is not None:
                    jumpers.setdefault(target, set()).add(chain)
    for name in undesired:
        referrers = tuple(sorted(jumpers.get(name, ())))
        if not referrers:
            delete.append(name)
            continue
        blocked[name] = referrers
        if kernel.chains[name]:
            flush_only.append(name)
    return Plan(write=write, delete=tuple(delete), flush_only=tuple(flush_only),
                remove_hooks=tuple(remove), insert_hooks=tuple(insert), blocked=blocked)


def render_restore(table: str, plan: Plan) -> str:
    """The ``iptables-restore --noflush`` input for a plan: one atomic transaction.

    Order (as Felix's table.go applyUpdates): declare and flush what is rewritten
    or removed, drop stale hooks, append the new rules, insert missing hooks at
    the top, and only then ``-X`` chains, when no reference to them is left.
    """
    out = [f"*{table}"]
    out += [f":{name} - [0:0]" for name in plan.write]
    out += [f"-F {name}" for name in plan.write]
    out += [f"-F {name}" for name in (*plan.delete, *plan.flush_only)]
    out += [f"-D {chain} {rule}" for chain, rule in plan.remove_hooks]
    for name, rules in plan.write.items():
        out += [f"-A {name} {rule}" for rule in rules]
    # Inserting each at position 1 in reverse leaves them on top in the planned order.
    out += [f"-I {chain} 1 {rule}" for chain, rule in reversed(plan.insert_hooks)]
    out += [f"-X {name}" for name in plan.delete]
    out.append("COMMIT")
    return "\n".join(out) + "\n"


def scratch_inputs(table: str, chains: Mapping[str, Sequence[str]],
                   hooks: Sequence[tuple[str, str]], declare: Iterable[str]) -> tuple[str, str]:
    """ipset-restore and iptables-restore input that recreate `chains` and `hooks` elsewhere.

    Used to learn the kernel's text of rules without writing the real table:
    every chain a rule may jump to is declared (`declare`), and every set a
    rule matches is created, with a hash type of the dimension its flags ask for.
    """
    sets: dict[str, int] = {}
    for rule in [r for rules in chains.values() for r in rules] + [r for _, r in hooks]:
        toks = rule_tokens(rule)
        for i, t in enumerate(toks[:-2]):
            if t == "--match-set":
                dims = toks[i + 2].count(",") + 1
                sets[toks[i + 1]] = max(dims, sets.get(toks[i + 1], 1))
    types = {1: "hash:net", 2: "hash:net,port", 3: "hash:ip,port,net"}
    ipset_lines = []
    for name, dims in sorted(sets.items()):
        family = "inet6" if name.startswith("cali60") else "inet"
        ipset_lines.append(f"create {name} {types.get(dims, 'hash:ip,port,net')} family {family}")
    builtin = BUILTIN_CHAINS.get(table, frozenset())
    out = [f"*{table}"]
    out += [f":{c} - [0:0]" for c in dict.fromkeys(declare) if c not in builtin]
    for name, rules in chains.items():
        out += [f"-A {name} {r}" for r in rules]
    out += [f"-A {chain} {rule}" for chain, rule in hooks]
    out.append("COMMIT")
    return "\n".join(ipset_lines) + ("\n" if ipset_lines else ""), "\n".join(out) + "\n"


# --- the writer ----------------------------------------------------------------------------


class IptablesTable:
    """Converges one table to the desired tortie chains and hooks.

    Not thread-safe; the agent's dataplane loop drives it: ``set_desired`` as
    often as the calculation produces a result, ``apply`` to write the
    difference, ``resync`` (periodically) to distrust the cached kernel view so
    the next ``apply`` re-reads and repairs drift. ``writes`` counts restore
    invocations over the object's life (the restart test expects 0).
    """

    def __init__(self, table: str, backend: str, netns: str | None = None,
                 runner: Runner = run_command, normalise_in_scratch: bool = True,
                 generation: Callable[[], int | None] | None = None) -> None:
        if table not in TABLES:
            raise ValueError(f"unknown iptables table {table!r}; expected one of {TABLES}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown iptables backend {backend!r}; expected one of {BACKENDS}")
        self.table = table
        self.backend = backend
        self.netns = netns
        self.writes = 0
        self.reads = 0
        self._runner = runner
        self._scratch_ok = normalise_in_scratch
        self._chains: dict[str, tuple[str, ...]] = {}
        self._hooks: list[tuple[str, str]] = []
        self._kernel: TableState | None = None
        # (desired chains, hooks, kernel view) of the last apply that had nothing to write.
        self._converged: tuple[object, object, object] | None = None
        # desired rule text -> the kernel's text of it (see module docstring).
        self._canon: dict[str, str] = {}
        self._tried_scratch: set[str] = set()
        # The nf_tables ruleset generation (agent/dataplane/nft_generation.py), when the
        # backend has one: the drift check reads the table only after it changed.
        self._generation = generation
        self._checked_generation: int | None = None

    def __repr__(self) -> str:
        return f"IptablesTable({self.table!r}, {self.backend!r}, netns={self.netns!r})"

    # desired state

    def set_desired(self, chains: Iterable[Chain], hooks: Iterable[Hook]) -> None:
        """Replace the desired state; entries for other tables are ignored."""
        wanted: dict[str, tuple[str, ...]] = {}
        for chain in chains:
            if chain.table != self.table:
                continue
            if not chain.name.startswith(CHAIN_PREFIX) or len(chain.name) > MAX_CHAIN_NAME:
                raise ValueError(f"chain {chain.name!r}: tortie chains are named "
                                 f"{CHAIN_PREFIX}* and at most {MAX_CHAIN_NAME} characters")
            rules = tuple(r.strip() for r in chain.rules)
            if wanted.get(chain.name, rules) != rules:
                raise ValueError(f"chain {self.table}/{chain.name} is desired twice, differently")
            wanted[chain.name] = rules
        hook_set: set[tuple[str, str]] = set()
        for hook in hooks:
            if hook.table != self.table:
                continue
            if hook.chain.startswith(CHAIN_PREFIX):
                raise ValueError(f"hook {hook.rule!r}: hooks live in kernel chains, "
                                 f"not in {hook.chain}")
            if not is_our_hook(hook.rule):
                raise ValueError(f"hook {hook.chain} {hook.rule!r}: needs a "
                                 f'-m comment --comment "{HOOK_COMMENT_PREFIX}..." '
                                 f"to be recognised as tortie's")
            hook_set.add((hook.chain, hook.rule.strip()))
        # An unchanged desired state keeps its objects, so apply() can tell by identity.
        if wanted != self._chains:
            self._chains = wanted
        # Sorted: desired hooks arrive in a frozenset, whose order varies per process.
        wanted_hooks = sorted(hook_set)
        if wanted_hooks != self._hooks:
            self._hooks = wanted_hooks

    def resync(self) -> None:
        """Forget the cached kernel view; the next apply re-reads the table and repairs drift."""
        self._kernel = None

    def check_drift(self) -> bool:
        """The cheap periodic check. With nf_tables, an unchanged ruleset generation
        (one netlink round trip) means nothing changed; otherwise (or with legacy,
        which has no such counter) read the table and compare only what tortie owns
        with the cached view. On a difference the fresh read becomes the view, so the
        next apply plans against it and rewrites only the chains and hooks that
        differ (no second read). True when drift was found. Nothing is checked
        before the first apply has read the table (there is no view to compare)."""
        if self._kernel is None:
            return False
        # Asked before the read, so a change during the read is seen next time.
        generation = self._generation() if self._generation is not None else None
        if generation is not None and generation == self._checked_generation:
            return False
        try:
            fresh = self._read()
        except IptablesError as exc:
            _log.warning("iptables %s: drift check could not read the table: %s", self.table, exc)
            return False
        self._checked_generation = generation
        if fresh.ours() == self._kernel.ours():
            return False
        _log.info("iptables %s: tortie's chains or hooks changed behind its back: repairing",
                  self.table)
        self._kernel = fresh
        return True

    # applying

    def apply(self) -> ApplyResult:
        """Write the difference between desired state and the table, in one transaction."""
        writes = 0
        done = self._converged
        if done is not None and done[0] is self._chains and done[1] is self._hooks \
                and done[2] is self._kernel:
            # The very state an earlier apply found nothing to do for (comparing 10,000
            # rules again costs ~5 ms, on every change of anything else).
            return ApplyResult()
        try:
            for attempt in (1, 2):
                if self._kernel is None:
                    self._kernel = self._read()
                self._learn_from_scratch(self._kernel)
                plan = plan_table(self._chains, self._hooks, self._kernel, self._same)
                if plan.empty:
                    self._converged = (self._chains, self._hooks, self._kernel)
                    break
                self._log_plan(plan)
                writes += 1
                self.writes += 1
                try:
                    self._restore(render_restore(self.table, plan))
                except IptablesError as exc:
                    # Someone may have changed the table since we read it (a new
                    # reference to a chain we delete, a flushed chain): re-read
                    # and try once more at once, as Felix does, before giving up.
                    self._kernel = None
                    if attempt == 2:
                        raise
                    _log.warning("iptables %s: %s; re-reading the table and retrying once",
                                 self.table, exc)
                    continue
                self._kernel = self._read_back(plan, self._kernel)
                self._learn_from_readback(plan, self._kernel)
                break
        except IptablesError as exc:
            _log.error("iptables %s: %s", self.table, exc)
            self._kernel = None
            return ApplyResult(writes=writes, errors=(exc,))
        self._prune_canon()
        return ApplyResult(writes=writes)

    def read_kernel(self) -> TableState:
        """The table as the kernel has it now (for tests and diagnostics)."""
        return self._read()

    def _same(self, desired: str, kernel: str) -> bool:
        known = self._canon.get(desired)
        return known == kernel or same_tokens(desired, kernel)

    def _log_plan(self, plan: Plan) -> None:
        kernel = self._kernel or TableState()
        for name, rules in plan.write.items():
            verb = "rewriting" if name in kernel.chains else "creating"
            _log.info("iptables %s: %s chain %s (%d rules)", self.table, verb, name, len(rules))
        for chain, rule in plan.remove_hooks:
            _log.info("iptables %s: removing hook from %s: %s", self.table, chain, rule)
        for chain, rule in plan.insert_hooks:
            _log.info("iptables %s: inserting hook at the top of %s: %s", self.table, chain, rule)
        for name in plan.delete:
            _log.info("iptables %s: deleting chain %s", self.table, name)
        for name, referrers in plan.blocked.items():
            _log.warning("iptables %s: chain %s is no longer desired but %s still jump(s) to it; "
                         "emptying it and keeping it until the reference is gone",
                         self.table, name, ", ".join(referrers))

    # kernel I/O

    def _read(self) -> TableState:
        argv = in_netns(self.netns, [binary(self.backend, "save"), "-t", self.table])
        self.reads += 1
        res = self._runner(argv, None)
        if res.returncode != 0:
            raise IptablesError(argv, res.returncode, res.stderr)
        return parse_save(res.stdout, self.table)

    def _read_back(self, plan: Plan, before: TableState | None) -> TableState:
        """The table after `plan` was written. A plan that only rewrote a few chains (a
        policy edit) reads back just those: ``-S <chain>`` prints a chain as
        iptables-save does, ~3 ms a chain against ~100 ms for a 10,000-rule table; the
        rest of the view is what was read before (drift is the periodic resync's)."""
        if (before is None or len(plan.write) > READ_BACK_CHAINS_MAX or plan.delete
                or plan.flush_only or plan.remove_hooks or plan.insert_hooks):
            return self._read()
        chains = dict(before.chains)
        list_binary = f"iptables-{self.backend}"
        list_binary = list_binary if shutil.which(list_binary) else "iptables"
        for name in plan.write:
            argv = in_netns(self.netns, [list_binary, "-w", str(RESTORE_LOCK_WAIT_S),
                                         "-t", self.table, "-S", name])
            self.reads += 1
            res = self._runner(argv, None)
            if res.returncode != 0:
                return self._read()
            # `-N NAME` declares the chain, `-A NAME rule` lines follow: the save form.
            text = "\n".join(f":{line[3:]} - [0:0]" if line.startswith("-N ") else line
                             for line in res.stdout.splitlines())
            chains[name] = parse_save(f"*{self.table}\n{text}\nCOMMIT\n",
                                      self.table).chains.get(name, [])
        return TableState(chains)

    def _restore(self, text: str) -> None:
        argv = in_netns(self.netns, [binary(self.backend, "restore"), "--noflush",
                                     "--wait", str(RESTORE_LOCK_WAIT_S)])
        _log.debug("iptables %s restore input:\n%s", self.table, text)
        res = self._runner(argv, text)
        if res.returncode != 0:
            raise IptablesError(argv, res.returncode, res.stderr,
                                failed_input_line(res.stderr, text))

    # learning the kernel's text of desired rules

    def _learn_from_readback(self, plan: Plan, kernel: TableState) -> None:
        for name, rules in plan.write.items():
            have = kernel.chains.get(name, [])
            if len(have) != len(rules):
                _log.warning("iptables %s: chain %s has %d rules after writing %d",
                             self.table, name, len(have), len(rules))
                continue
            self._canon.update(zip(rules, have, strict=True))
        inserted: dict[str, list[str]] = {}
        for chain, rule in plan.insert_hooks:
            inserted.setdefault(chain, []).append(rule)
        for chain, hook_rules in inserted.items():
            top = kernel.chains.get(chain, [])[:len(hook_rules)]
            if len(top) == len(hook_rules) and all(is_our_hook(k) for k in top):
                self._canon.update(zip(hook_rules, top, strict=True))

    def _learn_from_scratch(self, kernel: TableState) -> None:
        """Map desired rules that differ from the kernel's text to the kernel's form of them.

        Only rules that could be equal are looked at: a chain of the same length
        whose rules do not already compare equal, and hooks in a chain that has
        hooks of ours we cannot match. Each rule is tried once per process.
        """
        if not self._scratch_ok:
            return
        chains: dict[str, tuple[str, ...]] = {}
        # Kernel text this writer wrote and read back itself: a chain made only of such
        # rules that differs from the desired one is a real change (a policy edit), not
        # a spelling to learn, and costs no scratch round trip.
        written = set(self._canon.values())
        for name, rules in self._chains.items():
            have = kernel.chains.get(name)
            if have is None or len(have) != len(rules) or all(k in written for k in have):
                continue
            if any(not self._same(d, k) and d not in self._tried_scratch
                   for d, k in zip(rules, have, strict=True)):
                chains[name] = rules
        hooks = [(c, r) for c, r in self._hooks
                 if r not in self._tried_scratch and kernel.our_hooks(c)
                 and not any(self._same(r, k) for k in kernel.our_hooks(c))]
        if not chains and not hooks:
            return
        self._tried_scratch.update(r for rules in chains.values() for r in rules)
        self._tried_scratch.update(r for _, r in hooks)
        declare = [*self._chains, *(c for c in kernel.chains if not c.startswith(CHAIN_PREFIX))]
        learnt = self._scratch_roundtrip(chains, hooks, declare)
        if learnt is None:
            return
        for name, rules in chains.items():
            have = learnt.chains.get(name, [])
            if len(have) == len(rules):
                self._canon.update(zip(rules, have, strict=True))
        by_chain: dict[str, list[str]] = {}
        for chain, rule in hooks:
            by_chain.setdefault(chain, []).append(rule)
        for chain, hook_rules in by_chain.items():
            have = learnt.chains.get(chain, [])
            if len(have) == len(hook_rules):
                self._canon.update(zip(hook_rules, have, strict=True))
        _log.debug("iptables %s: learnt the kernel's text of %d rules in a scratch netns",
                   self.table, sum(map(len, chains.values())) + len(hooks))

    def _scratch_roundtrip(self, chains: Mapping[str, Sequence[str]],
                           hooks: Sequence[tuple[str, str]],
                           declare: Sequence[str]) -> TableState | None:
        ipset_text, ipt_text = scratch_inputs(self.table, chains, hooks, declare)
        script = ('set -e\n[ ! -s "$1" ] || ipset restore < "$1"\n'
                  f'{binary(self.backend, "restore")} --noflush < "$2"\n'
                  f'exec {binary(self.backend, "save")} -t "$3"\n')
        with tempfile.TemporaryDirectory(prefix="tortie-ipt-") as tmp:
            sets_path, rules_path = os.path.join(tmp, "sets"), os.path.join(tmp, "rules")
            with open(sets_path, "w") as f:
                f.write(ipset_text)
            with open(rules_path, "w") as f:
                f.write(ipt_text)
            argv = ["unshare", "--net", "--", "sh", "-c", script, "sh",
                    sets_path, rules_path, self.table]
            res = self._runner(argv, None)
        if res.returncode != 0:
            # Not fatal: the rules are then compared as text, and a real
            # difference or a bad rule shows up in the real write.
            _log.info("iptables %s: could not normalise rules in a scratch netns (%s); "
                      "comparing them as written", self.table, res.stderr.strip())
            if res.returncode == 127 or "unshare" in res.stderr:
                self._scratch_ok = False
            return None
        return parse_save(res.stdout, self.table)

    def _prune_canon(self) -> None:
        live = {r for rules in self._chains.values() for r in rules}
        live.update(r for _, r in self._hooks)
        for key in [k for k in self._canon if k not in live]:
            del self._canon[key]
        self._tried_scratch &= live
