"""The CNI server and the plugin's backends against a real etcd (no root: no interfaces).

The same operations through LocalBackend and through CniServer + RemoteBackend
give the same answers, errors keep their CNI codes across the socket, and the
client refuses a server that serves another datastore.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cni.backend import LocalBackend
from cni.config import EtcdSettings, PodArgs
from cni.errors import InvalidConfig, NoAddresses
from cni.naming import endpoint_document, identify
from cni.server import CniServer, RemoteBackend, connect
from datastore.resources import parse_document
from datastore.store import ResourceStore


@pytest.fixture
def settings(etcd_endpoint: str, etcd_client) -> EtcdSettings:
    ResourceStore(etcd_client).create(parse_document({
        "apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "p"},
        "spec": {"cidr": "10.77.0.0/24", "blockSize": 29}}))
    return EtcdSettings(endpoints=etcd_endpoint)


@pytest.fixture
def server(settings: EtcdSettings, tmp_path: Path) -> Iterator[CniServer]:
    srv = CniServer(str(tmp_path / "run" / "cni.sock"), settings, {}).start()
    yield srv
    srv.stop()


@pytest.fixture(params=["local", "remote"])
def backend(request, settings: EtcdSettings, server: CniServer):
    if request.param == "local":
        b = LocalBackend(settings, {})
    else:
        b = RemoteBackend(server.path, settings, {})
    yield b
    b.close()


def test_assign_is_idempotent_per_handle_and_release_too(backend) -> None:
    w = identify("net", "node1", "cid1", "eth0", {"K8S_POD_NAMESPACE": "ns",
                                                  "K8S_POD_NAME": "p1"})
    first = backend.assign(w)
    assert len(first) == 1 and first[0].startswith("10.77.0.")
    assert backend.assign(w) == first
    assert backend.addresses(w.handle_id) == first
    assert backend.release(w.handle_id) == first
    assert backend.release(w.handle_id) == []
    assert backend.addresses(w.handle_id) == []


def test_a_retried_add_gets_the_same_address_whoever_serves_it(
        backend, settings: EtcdSettings) -> None:
    # The first assignment skips reading the handle (it must be new); a retry, by the
    # same backend (its allocator caches the handle) or by another process (a cold
    # one, which learns of the handle from the assignment's refused transaction),
    # reuses the address and never assigns a second one.
    w = identify("net", "node1", "retry", "eth0", {})
    first = backend.assign(w)
    assert backend.assign(w) == first
    cold = LocalBackend(settings, {})
    try:
        assert cold.assign(w) == first
        assert cold.addresses(w.handle_id) == first
        # After a DEL, an ADD of the same container assigns afresh (the cache is stale).
        assert cold.release(w.handle_id) == first
        again = backend.assign(w)
        assert len(again) == 1 and backend.addresses(w.handle_id) == again
    finally:
        cold.close()
    assert backend.release(w.handle_id) == again


def test_requested_address_and_its_errors(backend) -> None:
    w = identify("net", "node1", "cid2", "eth0", {})
    assert backend.assign(w, ["10.77.0.9"]) == ["10.77.0.9"]
    other = identify("net", "node1", "cid3", "eth0", {})
    with pytest.raises(NoAddresses, match="10.77.0.9 is already assigned") as err:
        backend.assign(other, ["10.77.0.9"])
    assert err.value.code == 100
    with pytest.raises(NoAddresses, match="not in a configured pool"):
        backend.assign(other, ["192.168.1.1"])
    backend.release(w.handle_id)


def test_endpoints_belong_to_their_container(backend) -> None:
    old = identify("net", "node1", "old", "eth0", {"K8S_POD_NAMESPACE": "ns",
                                                   "K8S_POD_NAME": "web"})
    new = old._replace(cni_container_id="new", container_id="new")
    backend.put_endpoint(endpoint_document(old, ["10.77.0.1/32"]))
    backend.put_endpoint(endpoint_document(old, ["10.77.0.1/32"]))  # a retried ADD
    backend.put_endpoint(endpoint_document(new, ["10.77.0.2/32"]))  # a new sandbox
    doc = backend.get_endpoint("ns", old.endpoint_name)
    assert doc["spec"]["containerID"] == "new" and doc["spec"]["ipNetworks"] == ["10.77.0.2/32"]
    assert backend.delete_endpoint("ns", old.endpoint_name, "old") is False
    assert backend.delete_endpoint("ns", old.endpoint_name, "new") is True
    assert backend.delete_endpoint("ns", old.endpoint_name, "new") is False
    assert backend.get_endpoint("ns", old.endpoint_name) is None


def test_an_invalid_endpoint_is_invalid_config(backend) -> None:
    w = identify("net", "node1", "c", "eth0", {})
    doc = endpoint_document(w, ["10.77.0.1/32"], PodArgs(labels={"bad key!": "x"}))
    with pytest.raises(InvalidConfig, match="WorkloadEndpoint default/node1-cni-c-eth0"):
        backend.put_endpoint(doc)


def test_client_refuses_a_server_of_another_datastore(server: CniServer) -> None:
    assert connect(server.path, EtcdSettings(endpoints="http://127.0.0.9:2379"), {}) is None
    assert connect(server.path + ".missing", EtcdSettings(), {}) is None


def test_a_second_server_on_the_same_socket_is_refused(server: CniServer,
                                                       settings: EtcdSettings) -> None:
    with pytest.raises(RuntimeError, match="already listening"):
        CniServer(server.path, settings, {}).start()


def test_a_stale_socket_is_replaced(settings: EtcdSettings, tmp_path: Path) -> None:
    import socket

    path = tmp_path / "stale.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()  # the file stays; nobody listens
    srv = CniServer(str(path), settings, {}).start()
    try:
        client = connect(str(path), settings, {})
        assert client is not None
        client.close()
    finally:
        srv.stop()
    assert not path.exists()


# -- the shim's protocol (one whole CNI call, run in the server) ------------------------------


def shim_call(path: str, request: bytes, fds: list[int] | None = None) -> bytes:
    """What tortie-cni-shim does, from Python: send the frame (fds beside it), read to EOF."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        socket.send_fds(sock, [request], fds or [])
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_shim_call_runs_tortie_ipam_in_the_server(server: CniServer, settings: EtcdSettings,
                                                  ) -> None:
    import json

    from cni import shim_protocol

    conf = {"cniVersion": "1.0.0", "name": "net", "type": "bridge", "nodename": "node1",
            "etcd_endpoints": settings.endpoints, "ipam": {"type": "tortie-ipam"},
            "cni_server_socket": server.path}
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "shim1", "CNI_IFNAME": "eth0",
           "CNI_NETNS": "/nonexistent", "CNI_PATH": "/opt/cni/bin", "HOME": "/root"}
    reply = shim_protocol.decode_reply(shim_call(
        server.path, shim_protocol.encode_request(env, "tortie-ipam", json.dumps(conf).encode())))
    assert reply.code == 0, reply
    result = json.loads(reply.stdout)
    assert result["ips"][0]["address"].startswith("10.77.0.")
    # The server's warm backend holds it (no datastore connection of the call's own).
    assert server.backend.addresses("net.shim1") == [result["ips"][0]["address"][:-3]]
    reply = shim_protocol.decode_reply(shim_call(server.path, shim_protocol.encode_request(
        {**env, "CNI_COMMAND": "DEL"}, "tortie-ipam", json.dumps(conf).encode())))
    assert (reply.code, reply.stdout) == (0, b"")
    assert server.backend.addresses("net.shim1") == []


def test_shim_call_without_netns_fd_treats_the_namespace_as_gone(server: CniServer,
                                                                 tmp_path: Path) -> None:
    import json

    from cni import shim_protocol

    # The path exists in the server's view, but the shim passed no descriptor: what the
    # shim could not open is gone, whatever the server's own mounts hold.
    conf = {"cniVersion": "1.0.0", "name": "net", "type": "tortie", "nodename": "node1",
            "ipam": {"type": "tortie-ipam"}, "cni_server_socket": server.path}
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "shim2", "CNI_IFNAME": "eth0",
           "CNI_NETNS": str(tmp_path)}
    reply = shim_protocol.decode_reply(shim_call(
        server.path, shim_protocol.encode_request(env, "tortie", json.dumps(conf).encode())))
    err = json.loads(reply.stdout)
    assert (reply.code, err["code"]) == (1, 3)
    assert err["msg"] == f"the container's network namespace {tmp_path} does not exist"


def test_truncated_and_bad_shim_requests_are_refused_and_the_server_keeps_serving(
        server: CniServer, settings: EtcdSettings) -> None:
    import json

    from cni import shim_protocol

    whole = shim_protocol.encode_request({"CNI_COMMAND": "VERSION"}, "tortie", b"{}")
    reply = shim_protocol.decode_reply(shim_call(server.path, whole[:-1]))
    err = json.loads(reply.stdout)
    assert reply.code == 1 and err["code"] == 999
    assert "truncated request: the connection ended inside stdin (1 of 2 bytes)" in err["msg"]
    reply = shim_protocol.decode_reply(shim_call(server.path, b"TCNI\0\0\0\x09"))
    assert "version=9: this server speaks shim protocol 1" in json.loads(reply.stdout)["msg"]
    # Unharmed: a good request, and protocol 1 on the same socket.
    reply = shim_protocol.decode_reply(shim_call(server.path, whole))
    assert reply.code == 0 and "1.0.0" in json.loads(reply.stdout)["supportedVersions"]
    remote = RemoteBackend(server.path, settings, {})
    remote.close()
