"""Run inside a lab node: `ctl explain`'s verdict for every ordered pair of pods.

Reads `[{key: ip}, [[port, protocol], ...]]` as JSON on stdin, asks ctl.explain's
Explainer (one read of the lab's etcd, from ETCD_ENDPOINTS, compiled once) about
every ordered pair on every combination, and prints
`{"<port>/<protocol> <from> <to>": allowed}` as JSON. tests/e2e/test_netpol_cases.py
compares that with what its probes saw.
"""

from __future__ import annotations

import json
import sys

from ctl.explain import Explainer, flow_spec
from datastore.config import load_env
from datastore.etcd import EtcdClient
from datastore.store import ResourceStore


def main() -> None:
    ips, combos = json.loads(sys.stdin.read())
    with EtcdClient(load_env()) as client:
        explainer = Explainer.from_store(ResourceStore(client))
    out = {}
    for port, proto in combos:
        spec = flow_spec(f"{port}/{proto}")
        for a, ip_a in ips.items():
            for b, ip_b in ips.items():
                if a != b:
                    out[f"{port}/{proto} {a} {b}"] = explainer.explain(ip_a, ip_b, spec)[0].allowed
    print(json.dumps(out))


if __name__ == "__main__":
    main()
