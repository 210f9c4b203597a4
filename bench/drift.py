"""The drift check's CPU cost per check, beside the full refreshes it stands in for.

Run: .venv/bin/python bench/drift.py [--chains 100] [--rules 30] [--sets 100] [--members 20]
     [--checks 20]
Needs root. Works in a network namespace of its own (`tdrift<hex>`), removed at the end.

Programs --chains filter chains of --rules rules each (plus a nat chain and hooks), and
--sets ipsets of --members members, with the agent's writers (the defaults: ~3,000
rules and 100 sets, F1's node). Then measures, in CPU seconds (the agent's and its
children's, from os.times(), so the iptables-save / ipset processes count):

  * one drift check with nothing drifted (FELIX_DRIFTCHECKINTERVAL runs this): each
    table's IptablesTable.check_drift() and IPSets.check_drift(); with nf_tables the
    tables are not read while the ruleset generation stands still;
  * the iptables part of it after a foreign write (a chain added to filter by
    someone else moves the generation, so both tables are read and compared);
  * one full refresh of the same writers with nothing drifted
    (FELIX_IPTABLESREFRESHINTERVAL / FELIX_IPSETSREFRESHINTERVAL): resync() and apply();

each the mean of --checks runs, and their ratio. Printed, not asserted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.dataplane.ipsets import IPSets  # noqa: E402
from agent.dataplane.iptables import IptablesTable, binary, detect_backend  # noqa: E402
from agent.dataplane.nft_generation import NftGeneration  # noqa: E402
from agent.types import Chain, Hook, IPSet  # noqa: E402


def cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def mean_cpu(fn: Callable[[], object], times: int,
             before: Callable[[], object] = lambda: None) -> float:
    """Mean CPU seconds of fn(), `before()` (not counted) run ahead of each."""
    total = 0.0
    for _ in range(times):
        before()
        start = cpu()
        fn()
        total += cpu() - start
    return total / times


def desired(chains: int, rules: int, sets: int, members: int) -> tuple[
        list[Chain], list[Hook], list[IPSet]]:
    ipsets = [IPSet(f"cali40s:bench{i:04d}", "hash:net",
                    frozenset(f"10.{i // 250}.{i % 250}.{m}/32" for m in range(members)))
              for i in range(sets)]
    out = [Chain("filter", f"cali-bench-{c}", tuple(
        f"-p tcp -m set --match-set {ipsets[(c + r) % sets].name} src --dport {1000 + r} "
        f"-m comment --comment \"cali:b{c}r{r}\" -j ACCEPT" for r in range(rules)))
        for c in range(chains)]
    out.append(Chain("filter", "cali-FORWARD",
                     tuple(f"-j cali-bench-{c}" for c in range(chains))))
    out.append(Chain("nat", "cali-POSTROUTING", ("-j RETURN",)))
    hooks = [Hook("filter", "FORWARD", '-m comment --comment "cali:bench-fwd" -j cali-FORWARD'),
             Hook("nat", "POSTROUTING",
                  '-m comment --comment "cali:bench-nat" -j cali-POSTROUTING')]
    return out, hooks, ipsets


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chains", type=int, default=100)
    ap.add_argument("--rules", type=int, default=30)
    ap.add_argument("--sets", type=int, default=100)
    ap.add_argument("--members", type=int, default=20)
    ap.add_argument("--checks", type=int, default=50)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/drift.py needs root (it makes a network namespace)", file=sys.stderr)
        return 2
    netns = f"tdrift{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        chains, hooks, sets = desired(args.chains, args.rules, args.sets, args.members)
        backend = detect_backend(netns)
        ipsets = IPSets(netns)
        ipsets.set_desired(sets)
        generation = NftGeneration(netns) if backend == "nft" else None
        tables = {t: IptablesTable(t, backend, netns,
                                   generation=generation.read if generation else None)
                  for t in ("nat", "filter")}
        for table in tables.values():
            table.set_desired(chains, hooks)
        assert ipsets.apply().ok and all(t.apply().ok for t in tables.values())

        def check() -> None:
            for table in tables.values():
                assert not table.check_drift()
            assert not ipsets.check_drift()

        def iptables_check() -> None:
            for table in tables.values():
                assert not table.check_drift()

        foreign = iter(range(10**6))

        def foreign_write() -> None:  # someone else's rule: the nf_tables generation moves
            subprocess.run(["ip", "netns", "exec", netns, binary(backend, "restore"),
                            "--noflush"], input=f"*filter\n:FOREIGN-{next(foreign)} - [0:0]\n"
                           "COMMIT\n", text=True, check=True)

        def refresh() -> None:
            for table in tables.values():
                table.resync()
                assert table.apply().writes == 0
            ipsets.resync()
            assert ipsets.apply().writes == 0

        rules = sum(len(c.rules) for c in chains)
        check_s = mean_cpu(check, args.checks)
        ipt_s = mean_cpu(iptables_check, args.checks)
        moved_s = mean_cpu(iptables_check, args.checks, before=foreign_write)
        refresh_s = mean_cpu(refresh, args.checks)
        print(f"{rules} iptables rules ({backend}), {len(sets)} ipsets of {args.members} members;"
              f" mean of {args.checks}, CPU seconds (agent + children):")
        print(f"  drift check, nothing changed (iptables nat+filter, ipsets): "
              f"{check_s * 1000:.2f} ms (iptables alone {ipt_s * 1000:.2f} ms)")
        print(f"  iptables part after a foreign write (the tables are read): "
              f"{moved_s * 1000:.1f} ms")
        print(f"  full refresh (iptables nat+filter, ipsets): {refresh_s * 1000:.1f} ms")
        print(f"  check / full refresh: {check_s / refresh_s:.3f}; "
              f"after a foreign write: {(moved_s + check_s - ipt_s) / refresh_s:.2f}")
        print(f"  at FELIX_DRIFTCHECKINTERVAL=1s, nothing changing: {check_s * 100:.2f}% of one CPU")
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
