"""A syncer in its own process (run inside a test's network namespace), printing what it
sees as JSON lines: {"t", "status", "endpoint"} on each status and {"t", "put"} per key."""

from __future__ import annotations

import json
import sys
import time

from datastore.config import load_env
from datastore.etcd import EtcdClient
from datastore.syncer import Syncer, SyncStatus, Update


class Printer:
    syncer: Syncer | None = None

    def on_status(self, status: SyncStatus) -> None:
        endpoint = self.syncer.endpoint if self.syncer else ""
        print(json.dumps({"t": time.monotonic(), "status": status.value,
                          "endpoint": endpoint}), flush=True)

    def on_updates(self, updates: list[Update]) -> None:
        for u in updates:
            print(json.dumps({"t": time.monotonic(), u.kind: u.key}), flush=True)


def main() -> None:
    printer = Printer()
    syncer = Syncer(EtcdClient(load_env()), sys.argv[1:], printer)
    printer.syncer = syncer
    syncer.start()
    sys.stdin.read()  # runs until the test closes our stdin
    syncer.stop()


if __name__ == "__main__":
    main()
