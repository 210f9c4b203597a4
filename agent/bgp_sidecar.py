"""`tortie-bgp`: the BGP side alone, for the chart's sidecar container.

It reads the agent's settings (node name, hold time, run directory) so one
env block configures both containers, runs bgp.daemon, and serves the learned
routes on the control socket, where the agent (TORTIE_BGP_SIDECAR=true)
follows them. It writes no routes itself: the agent owns the kernel.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from agent import config as agent_config
from agent import idle_gc
from agent.errors import StartupError
from agent.nodename import determine_node_name
from bgp.daemon import BGPDaemon
from datastore.config import load_env
from datastore.errors import DatastoreError
from datastore.etcd import EtcdClient


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tortie-bgp", description=__doc__.split("\n")[0])
    ap.parse_args(argv)
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
    daemon = BGPDaemon(client, nodename, workdir=Path(cfg.run_dir) / "bgp" / nodename,
                       hold_time=cfg.bgp_hold_time)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: daemon.request_stop())
    idle_gc.start()
    try:
        daemon.run()
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
