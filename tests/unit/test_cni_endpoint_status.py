"""ADD's wait for the agent's status file (cni/endpoint_status.py), its two configuration keys
(cni/config.py) and their installation (cni/install.py), with a fake clock and a tmp dir."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from cni import config, endpoint_status, install
from cni.errors import InvalidConfig

BASE = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "tortie",
        "ipam": {"type": "tortie-ipam"}}


class FakeClock:
    """time.monotonic and time.sleep for the wait: sleeping advances the clock, and a hook
    may act at a given time (the agent writing the file)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.at: list[tuple[float, object]] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        for when, action in list(self.at):
            if self.now >= when:
                action()  # type: ignore[operator]
                self.at.remove((when, action))


def test_the_keys_are_calicos_with_calicos_defaults() -> None:
    c = config.parse(json.dumps(BASE).encode())
    assert (c.policy_setup_timeout, c.endpoint_status_dir) == (
        0, "/var/run/calico/endpoint-status")
    c = config.parse(json.dumps({**BASE, "policy_setup_timeout_seconds": 10,
                                 "endpoint_status_dir": "/run/x"}).encode())
    assert (c.policy_setup_timeout, c.endpoint_status_dir) == (10, "/run/x")


@pytest.mark.parametrize("value", [-1, 1.5, "10", True])
def test_a_bad_timeout_is_refused_before_anything_is_done(value: object) -> None:
    data = json.dumps({**BASE, "policy_setup_timeout_seconds": value}).encode()
    with pytest.raises(InvalidConfig, match=r"policy_setup_timeout_seconds=.* must be a whole"):
        config.parse(data)


MAC = "02:aa:bb:cc:dd:ee"
STATUS = json.dumps({"ifaceName": "cali1", "mac": MAC, "ipv4Nets": ["10.65.0.2/32"]})


def wait(directory: Path, clock: FakeClock, timeout: float = 10) -> bool:
    return endpoint_status.wait_until_programmed(str(directory), "default", "node1-k8s-web-eth0",
                                                 MAC, timeout, clock=clock, sleep=clock.sleep)


def test_the_wait_ends_when_the_file_appears(tmp_path: Path) -> None:
    clock = FakeClock()
    target = tmp_path / "k8s default%2Fweb eth0"
    clock.at.append((0.7, lambda: target.write_text(STATUS)))
    assert wait(tmp_path, clock)
    assert 0.7 <= clock.now < 0.8  # found within one (capped) poll interval of appearing
    assert clock.sleeps[:3] == [0.005, 0.01, 0.02]  # quick at first, then backing off
    assert max(clock.sleeps) == endpoint_status.MAX_POLL


def test_a_file_already_there_needs_no_sleep(tmp_path: Path) -> None:
    clock = FakeClock()
    (tmp_path / "k8s default%2Fweb eth0").write_text(STATUS)
    assert wait(tmp_path, clock)
    assert clock.sleeps == []


def test_a_file_of_the_previous_sandbox_does_not_count(tmp_path: Path) -> None:
    clock = FakeClock()
    target = tmp_path / "k8s default%2Fweb eth0"
    target.write_text(STATUS.replace(MAC, "02:00:00:00:00:01"))  # the old sandbox's MAC
    clock.at.append((1.5, lambda: target.write_text(STATUS)))  # the agent saw the new one
    assert wait(tmp_path, clock)
    assert clock.now >= 1.5


def test_on_timeout_it_logs_calicos_warning_and_gives_up_on_time(tmp_path: Path,
                                                                 caplog) -> None:
    clock = FakeClock()
    caplog.set_level(logging.WARNING)
    assert not wait(tmp_path / "missing-dir", clock, timeout=3)
    assert clock.now == pytest.approx(3.0)  # the last sleep is cut to the deadline
    assert "Unblocking pod creation" in caplog.text
    assert "k8s default%2Fweb eth0" in caplog.text


def test_install_writes_the_keys_only_when_set() -> None:
    (main,) = install.render_conflist(install.Settings(portmap=False))["plugins"]
    assert "policy_setup_timeout_seconds" not in main and "endpoint_status_dir" not in main
    (main,) = install.render_conflist(install.Settings(
        portmap=False, policy_setup_timeout=5, endpoint_status_dir="/run/n1/endpoint-status",
    ))["plugins"]
    assert main["policy_setup_timeout_seconds"] == 5
    assert main["endpoint_status_dir"] == "/run/n1/endpoint-status"
    opts = install.parser({"CNI_POLICY_SETUP_TIMEOUT_SECONDS": "7"}).parse_args(
        ["--endpoint-status-dir", "/d"])
    settings = install.settings_from(opts)
    assert (settings.policy_setup_timeout, settings.endpoint_status_dir) == (7, "/d")
