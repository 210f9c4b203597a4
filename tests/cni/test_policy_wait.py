"""ADD's wait for the agent's "policy programmed" file (policy_setup_timeout_seconds).

The real plugin in a node namespace (conftest.CniNode); the test plays the agent by
writing the endpoint's status file itself: ADD must hold the pod back after writing
its WorkloadEndpoint until the file appears, and give up (successfully, as Calico
does) when the timeout passes without it.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import wait_until

from .conftest import CniNode

pytestmark = pytest.mark.root

ENDPOINT = "default/node1-k8s-pod1-eth0"
STATUS_FILE = "k8s default%2Fpod1 eth0"  # datastore.names.endpoint_status_filename of ENDPOINT


def status_dir(node: CniNode) -> Path:
    path = node.tmp / "endpoint-status"
    path.mkdir(exist_ok=True)
    for stale in path.iterdir():
        stale.unlink()
    return path


def test_add_returns_only_once_the_agent_has_programmed_the_endpoint(node: CniNode) -> None:
    status = status_dir(node)
    pod = node.new_pod()
    conf = node.conf(policy_setup_timeout_seconds=30, endpoint_status_dir=str(status))
    with ThreadPoolExecutor(1) as pool:
        add = pool.submit(node.run, "ADD", conf, netns=pod)
        wait_until(lambda: ENDPOINT in node.endpoints(), timeout=30, interval=0.05,
                   what="the WorkloadEndpoint written by ADD")
        time.sleep(0.5)
        assert not add.done(), f"ADD returned before the endpoint was programmed: {add.result()}"
        wep = node.endpoints()[ENDPOINT]
        status_doc = {"ifaceName": wep["spec"]["interfaceName"], "mac": wep["spec"]["mac"],
                      "ipv4Nets": wep["spec"]["ipNetworks"]}
        (status / STATUS_FILE).write_text(json.dumps({**status_doc, "mac": "02:00:00:00:00:01"}))
        time.sleep(0.5)
        assert not add.done(), "a file naming another sandbox's MAC released ADD"
        (status / STATUS_FILE).write_text(json.dumps(status_doc))
        written = time.monotonic()
        out = add.result(timeout=30)
        returned = time.monotonic()
    try:
        assert out.rc == 0, out
        assert returned - written < 1.0  # noticed within a poll, not at the timeout
        assert "programmed by the agent" in (node.tmp / "cni.log").read_text()
    finally:
        assert node.run("DEL", conf, netns=pod).rc == 0
        (status / STATUS_FILE).unlink()


def test_add_gives_up_after_the_timeout_and_succeeds_as_calico_does(node: CniNode) -> None:
    status = status_dir(node)
    pod = node.new_pod()
    conf = node.conf(policy_setup_timeout_seconds=2, endpoint_status_dir=str(status))
    started = time.monotonic()
    out = node.run("ADD", conf, netns=pod)
    took = time.monotonic() - started
    try:
        assert out.rc == 0, out
        assert 2.0 <= took < 10.0
        assert out.out is not None and out.out["ips"][0]["address"].endswith("/32")
        assert ENDPOINT in node.endpoints()  # the pod is wired, only not known programmed
        assert "Unblocking pod creation" in out.stderr  # a warning: on stderr and in the log
        assert STATUS_FILE in (node.tmp / "cni.log").read_text()
    finally:
        assert node.run("DEL", conf, netns=pod).rc == 0


def test_without_the_key_add_does_not_wait(node: CniNode) -> None:
    status = status_dir(node)
    pod = node.new_pod()
    conf = node.conf(endpoint_status_dir=str(status))  # policy_setup_timeout_seconds: 0
    started = time.monotonic()
    out = node.run("ADD", conf, netns=pod)
    try:
        assert out.rc == 0, out
        assert time.monotonic() - started < 2.0
    finally:
        assert node.run("DEL", conf, netns=pod).rc == 0
