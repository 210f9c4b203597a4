"""tortie-cni against the CNI specification: ADD/DEL/CHECK/VERSION, idempotency, errors.

Each test runs the real plugin binary inside a node namespace with its own etcd
(conftest.CniNode), on real veths, and looks at the kernel and the datastore
afterwards. Every failure case asserts the spec's error code, a message that
names the problem, and that nothing was left behind: no address allocated,
no handle, no endpoint, no interface, no route.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from .conftest import IPAM_PLUGIN, CniNode

pytestmark = pytest.mark.root


def assert_nothing_left(node: CniNode) -> None:
    assert node.veths() == []
    assert node.routes() == []
    assert node.allocated() == []
    assert node.handles() == []
    assert node.endpoints() == {}


def with_prev(conf: dict, result: dict) -> dict:
    return {**conf, "prevResult": result}


def test_version(node: CniNode) -> None:
    out = node.run("VERSION", b"")
    assert out.rc == 0 and out.out == {
        "cniVersion": "1.0.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]}


def test_add_wires_the_pod_the_calico_way(node: CniNode) -> None:
    pod = node.new_pod()
    (node.tmp / "mtu").write_text("1410\n")
    try:
        out = node.run("ADD", node.conf(), netns=pod)
    finally:
        (node.tmp / "mtu").unlink()
    assert out.rc == 0, out
    result = out.out
    assert result is not None
    ip = result["ips"][0]["address"]
    assert ip.endswith("/32") and result["ips"][0]["interface"] == 1
    host, inside = result["interfaces"]
    assert host == {"name": "cali" + __import__("hashlib").sha1(b"default.pod1").hexdigest()[:11],
                    "mac": "ee:ee:ee:ee:ee:ee"}
    assert inside["name"] == "eth0" and inside["sandbox"] == pod
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]
    # host side
    link = node.ip("-d", "link", "show", host["name"])
    assert "ee:ee:ee:ee:ee:ee" in link and "mtu 1410" in link and "state UP" in link
    assert node.routes() == [f"{ip[:-3]} dev {host['name']} scope link"]
    assert node.sh("cat", f"/proc/sys/net/ipv4/conf/{host['name']}/proxy_arp").strip() == "1"
    assert node.sh("cat", f"/proc/sys/net/ipv4/neigh/{host['name']}/proxy_delay").strip() == "0"
    # pod side
    pod_ns = pod.rsplit("/", 1)[1]
    addr = node.ip("addr", "show", "eth0", ns=pod_ns)
    assert f"inet {ip} scope global eth0" in addr and "mtu 1410" in addr
    assert inside["mac"] in addr
    pod_routes = [" ".join(r.split()) for r in node.ip("route", ns=pod_ns).splitlines()]
    assert pod_routes == ["default via 169.254.1.1 dev eth0", "169.254.1.1 dev eth0 scope link"]
    # datastore
    assert node.handles() == ["k8s-pod-network.c1"]
    assert node.allocated() == [ip[:-3]]
    wep = node.endpoints()["default/node1-k8s-pod1-eth0"]
    assert wep["spec"]["interfaceName"] == host["name"]
    assert wep["spec"]["ipNetworks"] == [ip] and wep["spec"]["containerID"] == "c1"
    assert node.run("DEL", node.conf(), netns=pod).rc == 0
    assert_nothing_left(node)


def test_add_check_del_are_idempotent(node: CniNode) -> None:
    pod = node.new_pod()
    conf = node.conf()
    first = node.run("ADD", conf, netns=pod)
    again = node.run("ADD", conf, netns=pod)  # a runtime retrying
    assert first.rc == 0 and again.rc == 0
    assert again.out == first.out
    assert len(node.allocated()) == 1 and len(node.veths()) == 1
    assert node.run("CHECK", with_prev(conf, first.out), netns=pod).rc == 0
    assert node.run("CHECK", with_prev(conf, first.out), netns=pod).out is None
    assert node.run("DEL", with_prev(conf, first.out), netns=pod).rc == 0
    assert_nothing_left(node)
    assert node.run("DEL", with_prev(conf, first.out), netns=pod).rc == 0
    assert node.run("DEL", conf, netns=pod, container_id="never-added").rc == 0
    gone = node.run("CHECK", with_prev(conf, first.out), netns=pod)
    assert gone.rc == 1 and gone.code == 104
    assert_nothing_left(node)


def test_check_reports_each_difference(node: CniNode) -> None:
    pod = node.new_pod()
    conf = node.conf()
    added = node.run("ADD", conf, netns=pod).out
    assert added is not None
    pod_ns = pod.rsplit("/", 1)[1]
    node.ip("route", "del", "default", ns=pod_ns)
    host = added["interfaces"][0]["name"]
    ip = added["ips"][0]["address"]
    node.ip("route", "del", ip)
    out = node.run("CHECK", with_prev(conf, added), netns=pod)
    assert out.rc == 1 and out.code == 104
    assert "container route 'default via 169.254.1.1 dev eth0' is missing" in out.msg
    assert f"host route {ip} dev {host} is missing" in out.msg
    node.run("DEL", conf, netns=pod)
    assert_nothing_left(node)


def test_check_needs_a_prev_result_and_cni_0_4_0(node: CniNode) -> None:
    pod = node.new_pod()
    no_prev = node.run("CHECK", node.conf(), netns=pod)
    assert no_prev.code == 7 and "prevResult" in no_prev.msg
    old = node.run("CHECK", node.conf(cniVersion="0.3.1", prevResult={"ips": []}), netns=pod)
    assert old.code == 1 and "0.3.1" in old.msg


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0"])
def test_older_versions_get_results_in_their_format(node: CniNode, version: str) -> None:
    pod = node.new_pod()
    conf = node.conf(cniVersion=version)
    out = node.run("ADD", conf, netns=pod)
    assert out.rc == 0 and out.out is not None
    assert out.out["cniVersion"] == version and out.out["ips"][0]["version"] == "4"
    if version == "0.4.0":
        assert node.run("CHECK", with_prev(conf, out.out), netns=pod).rc == 0
    assert node.run("DEL", with_prev(conf, out.out), netns=pod).rc == 0
    assert_nothing_left(node)


BAD_STDIN = [
    ("not JSON", b"{cniVersion: 1.0.0", 6, "not JSON"),
    ("missing cniVersion", {"cniVersion": None}, 7, "no cniVersion"),
    ("unsupported version", {"cniVersion": "0.2.0"}, 1, "incompatible CNI versions"),
    ("missing name", {"name": None}, 7, "no name"),
    ("unknown IPAM type", {"ipam": {"type": "no-such-ipam"}}, 7,
     'unknown IPAM type ipam.type="no-such-ipam"'),
    ("unsupported field", {"datastore_type": "kubernetes"}, 2,
     'datastore_type="kubernetes"'),
    ("bad mtu", {"mtu": 20}, 7, "mtu=20"),
]


@pytest.mark.parametrize("what, change, code, fragment", BAD_STDIN,
                         ids=[c[0] for c in BAD_STDIN])
def test_bad_stdin_is_refused_with_the_specs_code(node: CniNode, what: str, change, code: int,
                                                  fragment: str) -> None:
    pod = node.new_pod()
    data = change if isinstance(change, bytes) else node.conf(**change)
    for command in ("ADD", "DEL", "CHECK"):
        out = node.run(command, data, netns=pod)
        assert out.rc == 1, (command, out)
        assert out.code == code, (command, out.out)
        assert fragment in out.msg, (command, out.msg)
        assert out.out is not None and "cniVersion" in out.out
    assert_nothing_left(node)
    assert node.ip("-o", "link", ns=pod.rsplit("/", 1)[1]).count(":") >= 1
    assert "eth0" not in node.ip("-o", "link", ns=pod.rsplit("/", 1)[1])


def test_bad_environment_is_code_4(node: CniNode) -> None:
    pod = node.new_pod()
    out = node.run("ADD", node.conf(), netns=pod, container_id="bad/id")
    assert out.code == 4 and "CNI_CONTAINERID='bad/id'" in out.msg
    out = node.run("ADD", node.conf(), netns=pod, ifname="a-very-long-name0")
    assert out.code == 4 and "CNI_IFNAME" in out.msg
    assert_nothing_left(node)


def test_missing_netns_is_container_unknown(node: CniNode) -> None:
    out = node.run("ADD", node.conf(), netns="/run/netns/tcni-no-such-ns")
    assert out.code == 3 and "/run/netns/tcni-no-such-ns does not exist" in out.msg
    assert_nothing_left(node)


def test_pool_exhausted_leaves_nothing(node: CniNode) -> None:
    node.reset("10.250.0.0/30", block_size=30)  # four addresses
    conf = node.conf()
    pods = [node.new_pod() for _ in range(5)]
    for i, pod in enumerate(pods[:4]):
        assert node.run("ADD", conf, netns=pod, container_id=f"c{i}", pod=f"p{i}").rc == 0
    full = node.run("ADD", conf, netns=pods[4], container_id="c4", pod="p4")
    assert full.rc == 1 and full.code == 100
    assert "No IPs available in pools: [10.250.0.0/30]" in full.msg
    assert "pod default/p4" in full.msg
    assert len(node.allocated()) == 4 and len(node.veths()) == 4
    assert "eth0" not in node.ip("-o", "link", ns=pods[4].rsplit("/", 1)[1])
    for i, pod in enumerate(pods[:4]):
        assert node.run("DEL", conf, netns=pod, container_id=f"c{i}", pod=f"p{i}").rc == 0
    assert_nothing_left(node)


def test_etcd_unreachable_is_try_again_later(node: CniNode) -> None:
    pod = node.new_pod()
    started = time.monotonic()
    out = node.run("ADD", node.conf(etcd_endpoints="http://127.0.0.1:1"), netns=pod)
    took = time.monotonic() - started
    assert out.rc == 1 and out.code == 11, out
    assert "etcd is unreachable at http://127.0.0.1:1" in out.msg
    assert took < 15
    assert_nothing_left(node)
    # DEL cannot finish either, and says so (the runtime retries it)
    assert node.run("DEL", node.conf(etcd_endpoints="http://127.0.0.1:1"), netns=pod).code == 11


def test_a_failure_after_ipam_rolls_everything_back(node: CniNode) -> None:
    pod = node.new_pod()
    pod_ns = pod.rsplit("/", 1)[1]
    # Something else already owns eth0 in the container: wiring fails after the address.
    node.ip("link", "add", "eth0", "type", "veth", "peer", "name", "other", ns=pod_ns)
    out = node.run("ADD", node.conf(), netns=pod)
    assert out.rc == 1 and out.code == 103
    assert "an interface named eth0 already exists" in out.msg
    assert_nothing_left(node)
    node.ip("link", "del", "eth0", ns=pod_ns)
    # The host route is taken by another interface (Calico: "route ... already exists for
    # an interface other than ...").
    node.ip("route", "add", "10.244.9.9/32", "dev", "lo")
    out = node.run("ADD", node.conf(), netns=pod, extra_env={
        "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod1;IP=10.244.9.9"})
    assert out.rc == 1 and out.code == 103, out
    assert "route 10.244.9.9/32 already exists for an interface other than cali" in out.msg
    assert "(dev lo)" in out.msg
    node.ip("route", "del", "10.244.9.9/32", "dev", "lo")
    assert_nothing_left(node)
    # The endpoint cannot be written (its ksa.<ns>.<sa> profile name would be over 253
    # characters): after IPAM and wiring. Everything is undone.
    bad = node.conf(args={"cni": {"serviceAccountName": "s" * 250}})
    out = node.run("ADD", bad, netns=pod)
    assert out.rc == 1 and out.code == 7 and "WorkloadEndpoint" in out.msg, out
    assert_nothing_left(node)
    assert "eth0" not in node.ip("-o", "link", ns=pod_ns)
    # A label Kubernetes would never allow is refused before anything is allocated.
    bad = node.conf(args={"cni": {"labels": [{"key": "bad key!", "value": "x"}]}})
    out = node.run("ADD", bad, netns=pod)
    assert out.rc == 1 and out.code == 7 and "args.cni.labels[0]" in out.msg, out
    assert_nothing_left(node)


def test_del_after_the_namespace_is_gone(node: CniNode) -> None:
    pod = node.new_pod()
    added = node.run("ADD", node.conf(), netns=pod)
    assert added.rc == 0
    node.clean_pods()  # the runtime removed the sandbox first (veth and route go with it)
    assert node.run("DEL", node.conf(), netns=pod).rc == 0
    assert node.run("DEL", node.conf(), netns="").rc == 0
    assert_nothing_left(node)


def test_a_new_sandbox_keeps_its_endpoint_when_the_old_one_is_deleted(node: CniNode) -> None:
    old, new = node.new_pod(), node.new_pod()
    conf = node.conf()
    assert node.run("ADD", conf, netns=old, container_id="old").rc == 0
    assert node.run("ADD", conf, netns=new, container_id="new").rc == 0  # same pod name
    # the same host veth name: the old one was replaced
    assert len(node.veths()) == 1
    assert node.run("DEL", conf, netns=old, container_id="old").rc == 0
    assert len(node.veths()) == 1
    wep = node.endpoints()["default/node1-k8s-pod1-eth0"]
    assert wep["spec"]["containerID"] == "new"
    assert node.handles() == ["k8s-pod-network.new"]
    assert node.run("DEL", conf, netns=new, container_id="new").rc == 0
    assert_nothing_left(node)


def test_requested_ip_labels_and_named_ports(node: CniNode) -> None:
    pod = node.new_pod()
    conf = node.conf(args={"cni": {"labels": [{"key": "app", "value": "web"}],
                                   "ports": [{"name": "http", "containerPort": 80}]}})
    out = node.run("ADD", conf, netns=pod, extra_env={
        "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod1;IP=10.244.7.7"})
    assert out.rc == 0, out
    assert out.out is not None and out.out["ips"][0]["address"] == "10.244.7.7/32"
    wep = node.endpoints()["default/node1-k8s-pod1-eth0"]
    assert wep["metadata"]["labels"]["app"] == "web"
    # internalapi.WorkloadEndpointPort has no omitempty: hostPort 0 and hostIP "" are stored.
    assert wep["spec"]["ports"] == [
        {"name": "http", "protocol": "tcp", "port": 80, "hostPort": 0, "hostIP": ""}]
    assert node.run("DEL", conf, netns=pod).rc == 0
    assert_nothing_left(node)


def test_runtime_without_kubernetes_args(node: CniNode) -> None:
    pod = node.new_pod()
    out = node.run("ADD", node.conf(), netns=pod, container_id="0123456789abcdef", pod=None)
    assert out.rc == 0 and out.out is not None
    assert out.out["interfaces"][0]["name"] == "cali0123456789a"
    assert list(node.endpoints()) == ["default/node1-cni-0123456789abcdef-eth0"]
    assert node.run("DEL", node.conf(), netns=pod, container_id="0123456789abcdef",
                    pod=None).rc == 0
    assert_nothing_left(node)


def test_delegated_ipam_host_local(node: CniNode) -> None:
    pod = node.new_pod()
    conf = node.conf(ipam={"type": "host-local", "subnet": "10.99.0.0/24",
                           "dataDir": str(node.tmp / "host-local")})
    out = node.run("ADD", conf, netns=pod)
    assert out.rc == 0, out
    assert out.out is not None and out.out["ips"][0]["address"].startswith("10.99.0.")
    assert out.out["ips"][0]["address"].endswith("/32")
    assert node.handles() == []  # tortie's IPAM was not involved
    assert node.run("DEL", conf, netns=pod).rc == 0
    assert_nothing_left(node)
    leases = [p.name for p in (node.tmp / "host-local" / "k8s-pod-network").iterdir()
              if p.name.startswith("10.")]
    assert leases == []


def test_tortie_ipam_serves_the_reference_bridge_plugin(node: CniNode) -> None:
    conf = {"cniVersion": "1.0.0", "name": "bridged", "type": "bridge", "bridge": "tcnibr0",
            "isGateway": False, "nodename": "node1", "etcd_endpoints": "http://127.0.0.1:2379",
            "cni_server_socket": "",
            "ipam": {"type": "tortie-ipam", "routes": [{"dst": "10.244.0.0/16"}]}}
    pods = [node.new_pod(), node.new_pod()]
    results = []
    for i, pod in enumerate(pods):
        out = node.run("ADD", conf, netns=pod, container_id=f"b{i}", pod=f"web{i}",
                       plugin="/usr/lib/cni/bridge")
        assert out.rc == 0, out
        results.append(out.out)
    ips = [r["ips"][0]["address"].split("/")[0] for r in results]
    assert all(ip.startswith("10.244.") for ip in ips)
    assert sorted(node.handles()) == ["bridged.b0", "bridged.b1"]
    ping = node.sh("nsenter", f"--net={pods[0]}", "ping", "-c1", "-W2", ips[1], check=False)
    assert "1 received" in ping, ping
    # the IPAM plugin alone: CHECK and DEL
    ipam_conf = {**conf, "prevResult": results[0]}
    assert node.run("CHECK", ipam_conf, netns=pods[0], container_id="b0", pod="web0",
                    plugin=IPAM_PLUGIN).rc == 0
    for i, pod in enumerate(pods):
        assert node.run("DEL", conf, netns=pod, container_id=f"b{i}", pod=f"web{i}",
                        plugin="/usr/lib/cni/bridge").rc == 0
    assert node.allocated() == [] and node.handles() == []


def test_parallel_adds_get_distinct_addresses(node: CniNode) -> None:
    pods = [node.new_pod() for _ in range(8)]
    conf = node.conf()

    def add(i: int) -> dict:
        out = node.run("ADD", conf, netns=pods[i], container_id=f"par{i}", pod=f"par{i}")
        assert out.rc == 0, out
        return out.out or {}

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(add, range(8)))
    ips = {r["ips"][0]["address"] for r in results}
    assert len(ips) == 8 and len(node.veths()) == 8
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda i: node.run("DEL", conf, netns=pods[i],
                                                container_id=f"par{i}", pod=f"par{i}"),
                             range(8)))
    assert all(o.rc == 0 for o in outs)
    assert_nothing_left(node)


def test_cni_server_path_and_its_fallbacks(node: CniNode) -> None:
    sock = node.tmp / "cni.sock"
    server = node.start_server(sock)
    conf = node.conf(cni_server_socket=str(sock))
    pod = node.new_pod()
    log = node.tmp / "cni.log"
    log.write_text("")
    out = node.run("ADD", conf, netns=pod)
    assert out.rc == 0, out
    assert "talking to etcd directly" not in log.read_text()
    assert node.run("CHECK", with_prev(conf, out.out or {}), netns=pod).rc == 0
    # errors travel back with their code
    other = node.new_pod()
    refused = node.run("ADD", conf, netns=other, container_id="c2", pod="p2",
                       extra_env={"CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p2;"
                                              "IP=192.168.77.1"})
    assert refused.code == 100 and "192.168.77.1" in refused.msg
    # a server for another datastore is not used
    wrong = node.conf(cni_server_socket=str(sock), etcd_endpoints="http://127.0.0.2:2379")
    assert node.run("ADD", wrong, netns=other, container_id="c3", pod="p3").code == 11
    assert "refused" in log.read_text()
    # without the server the plugin carries on by itself
    node.stop(server)
    assert not sock.exists()
    assert node.run("DEL", conf, netns=pod).rc == 0
    assert_nothing_left(node)


@pytest.mark.slow
def test_hundred_pods_leave_nothing_behind(node: CniNode) -> None:
    sock = node.tmp / "cni100.sock"
    node.start_server(sock)
    conf = node.conf(cni_server_socket=str(sock), log_level="info")
    pods = [node.new_pod() for _ in range(100)]

    def run(command: str, i: int):
        return node.run(command, conf, netns=pods[i], container_id=f"h{i:03d}", pod=f"h{i:03d}")

    with ThreadPoolExecutor(4) as pool:
        added = list(pool.map(lambda i: run("ADD", i), range(100)))
    assert all(o.rc == 0 for o in added), [o for o in added if o.rc][:1]
    ips = {o.out["ips"][0]["address"] for o in added if o.out}
    assert len(ips) == 100 and len(node.veths()) == 100 and len(node.routes()) == 100
    assert len(node.endpoints()) == 100 and len(node.allocated()) == 100
    with ThreadPoolExecutor(4) as pool:
        deleted = list(pool.map(lambda i: run("DEL", i), range(100)))
    assert all(o.rc == 0 for o in deleted), [o for o in deleted if o.rc][:1]
    assert_nothing_left(node)
    report = node.ctl("ipam", "check")
    assert "Check complete; found 0 problems." in report, report


def test_error_output_is_one_json_object(node: CniNode) -> None:
    out = node.run("ADD", b"nope", netns=node.new_pod())
    assert out.rc == 1 and set(out.out or {}) == {"cniVersion", "code", "msg", "details"}
    assert json.dumps(out.out)


def test_etcd_over_tls(node: CniNode) -> None:
    from lab.etcd import EtcdMember, make_tls_files

    tls = make_tls_files(node.tmp / "tls")
    member = EtcdMember(name="tls", data_dir=node.tmp / "tls.etcd", netns=node.ns,
                        client_port=2381, peer_port=2382, tls=tls)
    member.start()
    try:
        member.wait_healthy()
        pool_conf = node.conf()
        key = "/calico/resources/v3/projectcalico.org/ippools/pods"
        pool = node.etcd_get(key)[key].decode()
        node.sh("etcdctl", "--endpoints", member.client_url, "--cacert", tls.ca, "--cert",
                tls.client_cert, "--key", tls.client_key, "put", key, pool)
        conf = node.conf(etcd_endpoints=member.client_url, etcd_ca_cert_file=tls.ca,
                         etcd_cert_file=tls.client_cert, etcd_key_file=tls.client_key)
        pod = node.new_pod()
        added = node.run("ADD", conf, netns=pod)
        assert added.rc == 0, added
        assert node.allocated() == []  # not in the plain etcd: in the TLS one
        assert node.run("DEL", conf, netns=pod).rc == 0
        missing = node.run("ADD", {**conf, "etcd_ca_cert_file": "/nonexistent/ca.pem"},
                           netns=pod)
        assert missing.code == 7 and 'etcd_ca_cert_file="/nonexistent/ca.pem": no such file' \
            in missing.msg
        no_client_cert = node.run("ADD", {**pool_conf, "etcd_endpoints": member.client_url,
                                          "etcd_ca_cert_file": tls.ca}, netns=pod)
        assert no_client_cert.code == 11 and "no client certificate configured" in \
            no_client_cert.msg + (no_client_cert.out or {}).get("details", "")
        assert node.veths() == []
    finally:
        member.stop()
