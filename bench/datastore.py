"""Datastore client throughput: tortie's EtcdClient beside the raw pyetcd client (the floor).

Run: .venv/bin/python bench/datastore.py [--n 2000]
Starts its own etcd on a free loopback port with a temporary data dir, measures
sequential puts/s, CAS transactions/s (update on mod revision), create-if-absent
txn/s and a 2000-key prefix listing, prints each figure beside the same
operation done with the bare library in the same run, with the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyetcd  # noqa: E402

from datastore.config import load_env  # noqa: E402
from datastore.etcd import EtcdClient  # noqa: E402
from lab.etcd import start_single  # noqa: E402


def rate(n: int, fn) -> tuple[float, float]:
    lat = []
    t0 = time.perf_counter()
    for i in range(n):
        s = time.perf_counter()
        fn(i)
        lat.append(time.perf_counter() - s)
    total = time.perf_counter() - t0
    return n / total, statistics.quantiles(lat, n=100)[98] * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    n = ap.parse_args().n
    with tempfile.TemporaryDirectory() as tmp:
        member = start_single(Path(tmp))
        try:
            raw = pyetcd.client("127.0.0.1", member.client_port)
            ours = EtcdClient(load_env({"ETCD_ENDPOINTS": member.client_url}))
            rows = []

            raw_put = rate(n, lambda i: raw.put(f"/bench/raw/{i}", b"x" * 200))
            our_put = rate(n, lambda i: ours.put(f"/bench/ours/{i}", b"x" * 200))
            rows.append(("put", our_put, raw_put))

            raw.put("/bench/cas-raw", b"0")
            state = {"rev": raw.get("/bench/cas-raw")[1].mod_revision}

            def raw_cas(i: int) -> None:
                t = raw.transactions
                ok, resp = raw.transaction(
                    compare=[t.mod("/bench/cas-raw") == state["rev"]],
                    success=[t.put("/bench/cas-raw", str(i))], failure=[])
                assert ok
                state["rev"] = resp[0].response_put.header.revision

            raw_cas_r = rate(n, raw_cas)
            ours_rev = {"rev": ours.put("/bench/cas-ours", b"0")}

            def our_cas(i: int) -> None:
                ours_rev["rev"] = ours.update("/bench/cas-ours", str(i).encode(), ours_rev["rev"])

            rows.append(("CAS txn", rate(n, our_cas), raw_cas_r))

            def raw_create(i: int) -> None:
                t = raw.transactions
                raw.transaction(compare=[t.version(f"/bench/cr/{i}") == 0],
                                success=[t.put(f"/bench/cr/{i}", b"x")],
                                failure=[t.get(f"/bench/cr/{i}")])

            raw_cr = rate(n, raw_create)
            rows.append(("create txn", rate(n, lambda i: ours.create(f"/bench/co/{i}", b"x")), raw_cr))

            t0 = time.perf_counter()
            raw_list = list(raw.get_prefix("/bench/raw/"))
            raw_list_ms = (time.perf_counter() - t0) * 1000
            t0 = time.perf_counter()
            our_list, _ = ours.list("/bench/ours/")
            our_list_ms = (time.perf_counter() - t0) * 1000
            assert len(raw_list) == len(our_list) == n

            print(f"etcd {member.client_url}, {n} sequential operations each, 200-byte values")
            print(f"{'operation':<12} {'tortie ops/s':>13} {'p99 ms':>8} {'pyetcd ops/s':>13} "
                  f"{'p99 ms':>8} {'ratio':>6}")
            for name, (our_r, our_p99), (raw_r, raw_p99) in rows:
                print(f"{name:<12} {our_r:>13.0f} {our_p99:>8.2f} {raw_r:>13.0f} {raw_p99:>8.2f} "
                      f"{our_r / raw_r:>6.2f}")
            print(f"{'list ' + str(n):<12} {our_list_ms:>10.1f} ms {'':>8} {raw_list_ms:>10.1f} ms "
                  f"{'':>8} {raw_list_ms / our_list_ms:>6.2f}")
            ours.close()
            raw.close()
        finally:
            member.stop()


if __name__ == "__main__":
    main()
