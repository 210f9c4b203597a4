"""How tortie's costs grow with nodes: the scale run at two sizes, side by side, with ratios.

Run:  .venv/bin/python bench/scale.py [--nodes 10,50] [--churn-seconds 300]
                                      [--churn-rate 10] [--route-reflectors 2]

For each node count (in the order given) a fresh lab on one subnet: a pool without
encapsulation (every pod route is a BGP route), the first two nodes route reflectors
with the node-to-node mesh off, 2 pods per node, then churn on random nodes with
probes running between pods that stay (tests/faults/scale.py has the whole
sequence). Needs root, etcd, iproute2 and curl, like the lab.

Prints each run's figures and, when two sizes ran, one table: every figure at both
sizes and the ratio large/small beside the ratio of the node counts (5.0 for 10 vs
50), so a figure that grows faster than the cluster stands out. Pass criteria of the
issue's item 4, printed at the end of each run: zero probes lost between staying
pods, zero failed churn operations, and RSS growth per agent and per ExaBGP over the
churn within `--memory-bound` MiB. Exit status 1 if any of them fails.

Memory and CPU: about 170 MiB RSS per node (agent, ExaBGP, CNI server), so ~9 GB
at 50 nodes, and every core it can get: on two cores the 50-node run takes about 10
minutes and reaches 7.56 of the 10 churn operations per second (docs/reliability.md,
Load, has the figures and what limits them). Other work on the machine shows in the
timings, not in the request counts, CPU seconds or memory, which are the figures to
compare.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.faults.scale import ScaleParams, ScaleResult, format_result, run_scale  # noqa: E402


def side_by_side(small: ScaleResult, large: ScaleResult) -> str:
    """Both runs' figures and the ratio large/small per figure (pure)."""
    a, b = small.params.nodes, large.params.nodes
    head = f"{'figure':48} {f'{a} nodes':>11} {f'{b} nodes':>11} {'ratio':>7}"
    lines = [head, "-" * len(head)]
    for key, value in small.figures.items():
        other = large.figures.get(key)
        if other is None:
            continue
        ratio = f"{other / value:7.2f}" if value else "      -"
        lines.append(f"{key:48} {value:11.2f} {other:11.2f} {ratio}")
    lines.append(f"{'nodes':48} {a:11d} {b:11d} {b / a:7.2f}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", default="10,50",
                    help="node counts to run, comma-separated (default 10,50)")
    ap.add_argument("--route-reflectors", type=int, default=2)
    ap.add_argument("--pods-per-node", type=int, default=2)
    ap.add_argument("--churn-seconds", type=float, default=300.0)
    ap.add_argument("--churn-rate", type=float, default=10.0,
                    help="pod creations plus deletions per second")
    ap.add_argument("--probe-pairs", type=int, default=16)
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    ap.add_argument("--memory-bound", type=float, default=ScaleParams.memory_bound_mib,
                    help="allowed RSS growth per agent and per ExaBGP over the churn, MiB")
    args = ap.parse_args()
    try:
        counts = [int(n) for n in args.nodes.split(",")]
    except ValueError:
        ap.error(f"--nodes {args.nodes!r}: expected node counts separated by commas, e.g. 10,50")
    if not counts or any(n < 2 for n in counts):
        ap.error(f"--nodes {args.nodes!r}: every count must be at least 2")
    if not 0 <= args.route_reflectors <= min(counts):
        ap.error(f"--route-reflectors {args.route_reflectors}: from 0 to {min(counts)}")
    if args.churn_rate <= 0:
        ap.error(f"--churn-rate {args.churn_rate:g}: must be positive")

    # SIGTERM unwinds like Ctrl-C, so run_scale's `finally` removes the lab.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    results = []
    for n in counts:
        params = ScaleParams(
            nodes=n, route_reflectors=args.route_reflectors, pods_per_node=args.pods_per_node,
            churn_seconds=args.churn_seconds, churn_rate=args.churn_rate,
            probe_pairs=args.probe_pairs, idle_seconds=args.idle_seconds,
            memory_bound_mib=args.memory_bound, name=f"scale{n}x{int(time.time()) % 100000}")
        print(f"--- {n} nodes ---", flush=True)
        result = run_scale(params, say=lambda line: print("  " + line, flush=True))
        print(format_result(result), flush=True)
        results.append(result)
    if len(results) >= 2:
        print("\n" + side_by_side(results[0], results[-1]))
    failed = [r for r in results if r.lost_between_staying or r.churn_errors
              or not r.memory_within_bound]
    for r in failed:
        print(f"FAIL at {r.params.nodes} nodes: lost {r.lost_between_staying} probes, "
              f"{len(r.churn_errors)} failed churn operations, memory bound "
              f"{'kept' if r.memory_within_bound else 'exceeded'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
