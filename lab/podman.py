"""Running podman for tortie: the one storage, its containers.conf, and the commands.

Owns: every podman command tortie runs (the image build in lab.image, the lab's
pods and containers, the e2e tests), the storage they share, the
containers.conf they run with, and the removal of what carries tortie's labels.

Invariants:

* One storage for everything: graphroot /var/lib/tortie/containers, runroot
  /run/tortie/containers, driver overlay, engine tmp dir /run/tortie/libpod.
  podman records these in its database on first use and refuses a later call
  that disagrees ("database configuration mismatch"), so no caller may vary
  them. Nothing touches the machine's own podman storage (/var/lib/containers)
  or its /etc/containers and /etc/cni/net.d.
* The containers.conf is rendered here and only here (`containers_conf`, pure).
  `CONTAINERS_CONF` makes podman read that file instead of the system's, so it
  carries every setting podman 4.3 needs on these machines: cgroup_manager
  cgroupfs (no systemd to ask) and nofile/nproc ulimits of 1024 (runc fails with
  "error setting rlimit type 7" on the inherited ones). Only the network part
  varies per caller (a lab's CNI config directory and plugin directories); each
  distinct rendering is one file named by the hash of its text.
* Removal goes by label only: containers and pods labelled `tortie.lab=<lab>`,
  images labelled `tortie.build=1`. Anything else in the storage, or outside it,
  is not ours to remove.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lab.errors import CommandFailed, LabError

GRAPHROOT = Path("/var/lib/tortie/containers")
RUNROOT = Path("/run/tortie/containers")
# overlay, not vfs: vfs copies every layer in full (the tortie image on its base would
# take twice its size on disk and a copy per container); the machines' / is ext4, where
# the kernel's overlayfs works for root.
STORAGE_DRIVER = "overlay"
TMP_DIR = Path("/run/tortie/libpod")  # podman's default, /run/libpod, is the machine's
CONF_DIR = Path("/var/lib/tortie/podman")  # the rendered containers.conf files
DEFAULT_NETWORK_DIR = CONF_DIR / "net.d"  # never /etc/cni/net.d: podman writes there
REFERENCE_PLUGINS = Path("/usr/lib/cni")  # Debian's containernetworking-plugins

LAB_LABEL = "tortie.lab"  # value: the lab's name, on its containers and pods
BUILD_LABEL = "tortie.build"  # value "1", on every stage lab.image builds


@dataclass(frozen=True)
class Network:
    """Where podman finds CNI network configurations and plugins for one caller.

    `conf_dir` is where that caller's containers.conf is written: a directory that
    goes away with the caller (a lab's state), so renderings do not pile up.
    """

    config_dir: Path
    plugin_dirs: tuple[Path, ...] = (REFERENCE_PLUGINS,)
    conf_dir: Path = CONF_DIR


def containers_conf(network: Network | None = None) -> str:
    """The containers.conf text for tortie's storage (pure)."""
    net = network or Network(DEFAULT_NETWORK_DIR)
    plugin_dirs = ", ".join(json.dumps(str(d)) for d in net.plugin_dirs)
    return "\n".join([
        "# Rendered by lab/podman.py; tortie's podman reads only this file (CONTAINERS_CONF).",
        "[containers]",
        'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]',
        "[network]",
        'network_backend = "cni"',
        f"network_config_dir = {json.dumps(str(net.config_dir))}",
        f"cni_plugin_dirs = [{plugin_dirs}]",
        "[engine]",
        'runtime = "runc"',
        'cgroup_manager = "cgroupfs"',
        'events_logger = "file"',
        f"events_logfile_path = {json.dumps(str(TMP_DIR / 'events.log'))}",
        f"tmp_dir = {json.dumps(str(TMP_DIR))}",
        "",
    ])


def write_conf(network: Network | None = None) -> Path:
    """The containers.conf for `network`, written once under a name from its text's hash."""
    net = network or Network(DEFAULT_NETWORK_DIR)
    text = containers_conf(net)
    path = net.conf_dir / f"containers-{hashlib.sha256(text.encode()).hexdigest()[:12]}.conf"
    if not path.exists() or path.read_text() != text:
        net.conf_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(text)
        tmp.replace(path)  # atomic: a concurrent reader sees the old file or the new one
    net.config_dir.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Podman:
    """podman on tortie's storage, optionally inside a named network namespace.

    `netns` runs podman under `nsenter --net=/run/netns/NS`, not `ip netns exec`: the
    latter remounts /sys, which the OCI runtime then refuses.
    """

    netns: str | None = None
    network: Network | None = None

    def argv(self, args: Sequence[str]) -> list[str]:
        prefix = ["nsenter", f"--net=/run/netns/{self.netns}"] if self.netns else []
        return [*prefix, "podman", "--root", str(GRAPHROOT), "--runroot", str(RUNROOT),
                "--storage-driver", STORAGE_DRIVER, *args]

    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(write_conf(self.network))}

    def run(self, *args: str, check: bool = True, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run `podman ARGS`; with `check`, a non-zero exit raises CommandFailed."""
        argv = self.argv(args)
        try:
            res = subprocess.run(argv, env=self.env(), input=input, capture_output=True,
                                 text=True, timeout=timeout)
        except FileNotFoundError as err:
            raise LabError(f"{err.filename} not installed (apt package podman; "
                           "scripts/setup.sh installs it)") from err
        if check and res.returncode != 0:
            raise CommandFailed(argv, res.returncode, res.stdout, res.stderr)
        return res

    def ids(self, *args: str) -> list[str]:
        """The IDs a listing command prints with `--quiet`, one a line."""
        return self.run(*args, "--quiet").stdout.split()


def storage_exists() -> bool:
    """Whether tortie's podman storage was ever used on this machine."""
    return GRAPHROOT.is_dir()


def remove_lab_objects(lab: str) -> int:
    """Remove the containers and pods labelled `tortie.lab=<lab>`; how many there were.

    For `tortie-lab down`: a container left running in a node's namespace would
    otherwise keep processes the lab did not record alive there.
    """
    if not storage_exists():
        return 0
    podman = Podman()
    selector = f"label={LAB_LABEL}={lab}"
    pods = podman.ids("pod", "ps", "--filter", selector)
    if pods:
        podman.run("pod", "rm", "--force", *pods)
    containers = podman.ids("ps", "--all", "--filter", selector)
    if containers:
        podman.run("rm", "--force", *containers)
    return len(pods) + len(containers)


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m lab.podman [--netns NS] ARGS...`: podman ARGS on tortie's storage.

    For looking at what the lab and the image builds made (`python -m lab.podman ps
    --all`, `... images`); podman replaces this process.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    netns = None
    if args[:1] == ["--netns"] and len(args) >= 2:
        netns, args = args[1], args[2:]
    podman = Podman(netns=netns)
    cmd = podman.argv(args)
    os.execvpe(cmd[0], cmd, podman.env())


if __name__ == "__main__":
    main()
