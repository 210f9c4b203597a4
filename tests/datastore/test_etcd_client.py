"""The etcd client's compare-and-swap primitives and fail-over, against a real etcd."""

import os
import signal
import threading
import time

import pytest

from datastore.config import load_env
from datastore.errors import ConnectionFailed
from datastore.etcd import LIST_PAGE_KEYS, EtcdClient, KeyConflict, KeyExists, KeyMissing, put_op


def test_create_update_delete_cas(etcd_client):
    rev = etcd_client.create("/calico/t/a", b"1")
    with pytest.raises(KeyExists) as exists:
        etcd_client.create("/calico/t/a", b"2")
    assert exists.value.current.value == b"1"
    rev2 = etcd_client.update("/calico/t/a", b"2", rev)
    with pytest.raises(KeyConflict) as conflict:
        etcd_client.update("/calico/t/a", b"3", rev)
    assert conflict.value.current.mod_revision == rev2
    with pytest.raises(KeyConflict):
        etcd_client.delete("/calico/t/a", rev)
    etcd_client.delete("/calico/t/a", rev2)
    with pytest.raises(KeyMissing):
        etcd_client.update("/calico/t/a", b"4", rev2)
    assert etcd_client.get("/calico/t/a") is None


def test_list_is_sorted_and_carries_revision(etcd_client):
    for k in ("b", "a", "c"):
        etcd_client.put(f"/calico/t/{k}", k.encode())
    items, rev = etcd_client.list("/calico/t/")
    assert [i.key for i in items] == ["/calico/t/a", "/calico/t/b", "/calico/t/c"]
    assert rev >= max(i.mod_revision for i in items)


def test_list_larger_than_one_grpc_answer_is_one_snapshot(etcd_client):
    # 2.5 pages of 4 KB values: 5 MB, over gRPC's 4 MiB answer limit (10,000 IPAM
    # blocks are 9 MB). Written in transactions of 100 keys, each a revision of its own.
    count = LIST_PAGE_KEYS * 5 // 2
    ops = [put_op(f"/calico/big/{i:05d}", bytes([65 + i % 26]) * 4096) for i in range(count)]
    for i in range(0, count, 100):
        etcd_client.transaction([], ops[i:i + 100])
    items, rev = etcd_client.list("/calico/big/")
    etcd_client.put("/calico/big/00000", b"changed after the list")
    assert [i.key for i in items] == [op.key for op in ops]
    assert [i.value for i in items] == [op.value for op in ops]
    assert rev == max(i.mod_revision for i in items)
    # At a revision: every page reads that revision, not what came after it.
    again, _ = etcd_client.list("/calico/big/", revision=rev)
    assert again == items


def test_failover_skips_dead_endpoint(etcd_endpoint):
    cfg = load_env({"ETCD_ENDPOINTS": f"http://127.0.0.1:1,{etcd_endpoint}"})
    with EtcdClient(cfg, timeout=2) as client:
        client.put("/calico/t/fo", b"x")
        assert client.get("/calico/t/fo").value == b"x"


def test_all_endpoints_dead_is_one_clear_error():
    cfg = load_env({"ETCD_ENDPOINTS": "http://127.0.0.1:1,http://127.0.0.1:2"})
    with EtcdClient(cfg, timeout=1) as client, pytest.raises(ConnectionFailed) as err:
        client.get("/calico/x")
    assert "127.0.0.1:1" in str(err.value) and "127.0.0.1:2" in str(err.value)


def test_a_write_cut_off_after_it_was_sent_has_an_unknown_outcome(private_etcd):
    """A write whose connection breaks after the request went out is not re-sent: the
    member may have applied it (etcd also says UNAVAILABLE for 'leader changed' and
    'request timed out' on proposals that can still commit). Re-sending a compare-and-swap
    that did commit fails its compare, and the caller would report a failure for a
    write that happened (F7 found an allocation reported failed yet present)."""
    cfg = load_env({"ETCD_ENDPOINTS": private_etcd.client_url})
    with EtcdClient(cfg, timeout=10) as client:
        client.put("/calico/t/up", b"proves the member")
        os.kill(private_etcd.proc.pid, signal.SIGSTOP)  # the request will reach a frozen etcd
        failure: list[BaseException] = []

        def write() -> None:
            try:
                client.create("/calico/t/cut", b"x")
            except BaseException as exc:  # noqa: BLE001 - the test inspects it
                failure.append(exc)
        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(0.5)  # the request is on its way, not answered
        private_etcd.stop(signal.SIGKILL)
        writer.join(timeout=20)
    assert len(failure) == 1 and isinstance(failure[0], ConnectionFailed), failure
    assert "outcome is unknown" in str(failure[0]), failure[0]


def test_a_write_that_never_connected_is_a_plain_failure():
    cfg = load_env({"ETCD_ENDPOINTS": "http://127.0.0.1:1"})
    with EtcdClient(cfg, timeout=1) as client, pytest.raises(ConnectionFailed) as err:
        client.create("/calico/x", b"x")
    assert "outcome is unknown" not in str(err.value), err.value


def test_a_write_answered_internal_is_not_re_sent(etcd_endpoint):
    """INTERNAL (a stream reset by the server or a proxy, an answer that did not decode)
    comes after the request went out, so a write is not re-sent; a read is. etcd cannot
    be made to answer INTERNAL on demand, so the call itself raises what pyetcd raises
    for that status; the client around it is the real one, on a real etcd."""
    from pyetcd import exceptions as pyexc

    cfg = load_env({"ETCD_ENDPOINTS": etcd_endpoint})
    with EtcdClient(cfg, timeout=2) as client:
        client.put("/calico/t/internal", b"proves the member")
        calls: list[str] = []

        def answered_internal() -> None:
            calls.append("sent")
            raise pyexc.InternalServerError()

        with pytest.raises(ConnectionFailed) as err:
            client._call(answered_internal, idempotent=False)
        assert calls == ["sent"] and "outcome is unknown" in str(err.value), err.value
        calls.clear()
        with pytest.raises(ConnectionFailed) as err:
            client._call(answered_internal, idempotent=True)
        assert len(calls) > 1 and "outcome is unknown" not in str(err.value), err.value
