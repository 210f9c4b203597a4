"""`tortie-bgp`: the BGP side alone, for the chart's sidecar container.

It reads the agent's settings (node name, hold time, run directory) so one
env block configures both containers, runs bgp.daemon, and serves the learned
routes on the control socket, where the agent (TORTIE_BGP_SIDECAR=true)
follows them. It writes no routes itself: the agent owns the kernel. What the
agent could not install it lists in a file (agent/route_problems.py), which the
status on the control socket carries, as with BGP in the agent.

`tortie-bgp --live` / `--ready` are the sidecar's probes: they ask the running
daemon over the control socket (bgp.control) and judge its status document with
bgp.status.liveness / readiness (calico-node's -bird-live / -bird-ready), print
one line and exit 0 (yes) or 1 (no).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path

from agent import config as agent_config
from agent import idle_gc, route_problems
from agent.errors import StartupError
from agent.nodename import determine_node_name
from bgp.control import DEFAULT_NAME, query_status
from bgp.daemon import BGPDaemon
from bgp.status import READY_THRESHOLD, liveness, readiness
from datastore.config import load_env
from datastore.errors import DatastoreError
from datastore.etcd import EtcdClient


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tortie-bgp", description=__doc__.split("\n")[0])
    ap.add_argument("--live", action="store_true",
                    help="probe: the running daemon answers and its loop is not stuck")
    ap.add_argument("--ready", action="store_true",
                    help="probe: BGP sessions are established (calico-node -bird-ready)")
    ap.add_argument("--threshold-time", type=float, default=READY_THRESHOLD, metavar="SECONDS",
                    help="for --ready: how long after its start every peer must be up "
                         "(default %(default)g, as calico-node's)")
    args = ap.parse_args(argv)
    if args.live or args.ready:
        return probe(live=args.live, threshold=args.threshold_time)
    try:
        cfg = agent_config.load(log=False)
        client = EtcdClient(load_env())
    except (StartupError, DatastoreError) as exc:
        print(f"tortie-bgp: {exc}", file=sys.stderr)
        return 1
    logging.basicConfig(level=cfg.log_level, stream=sys.stderr,
                        format="%(asctime)s [%(levelname)s] %(name)s: %(message)s")
    nodename, _ = determine_node_name(cfg.nodename, os.environ.get("HOSTNAME"),
                                      cfg.nodename_file)
    problems_file = route_problems.problems_path(cfg.run_dir, nodename)
    daemon = BGPDaemon(client, nodename, workdir=Path(cfg.run_dir) / "bgp" / nodename,
                       hold_time=cfg.bgp_hold_time, router_id=cfg.router_id,
                       route_problems=lambda: route_problems.read(problems_file))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: daemon.request_stop())
    idle_gc.start()
    try:
        daemon.run()
    finally:
        client.close()
    return 0


def probe(*, live: bool, threshold: float = READY_THRESHOLD, control: str = DEFAULT_NAME
          ) -> int:
    """One probe: print the one-line verdict on stdout (as tortie-agent's probes and
    calico-node's do) and return the exit code."""
    kind = "live" if live else "ready"
    try:
        doc = query_status(control, timeout=3.0)
    except (OSError, ValueError) as exc:
        print(f"tortie-bgp is not {kind}: no BGP daemon answers on @{control} ({exc})")
        return 1
    now = time.time()
    ok, reason = liveness(doc, now) if live else readiness(doc, now, threshold)
    print(reason)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
