"""Thin wrappers around iproute2 for namespace plumbing.

Owns: how the lab runs `ip` (batched with `ip [-n NS] -batch -`, several
namespaces in parallel) and how failures turn into CommandFailed with the
batch input attached. Runs nothing in the root namespace except namespace
bookkeeping (`ip netns add/del/list/pids`).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

from lab.errors import CommandFailed

NETNS_DIR = "/run/netns"


def run(argv: Sequence[str], input: str | None = None, check: bool = True,
        timeout: float = 30) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise CommandFailed(list(argv), res.returncode, res.stdout, res.stderr, input)
    return res


def batch_argv(netns: str | None = None, force: bool = False) -> list[str]:
    argv = ["ip"]
    if netns:
        argv += ["-n", netns]
    if force:
        argv.append("-force")  # keep going past failing lines (teardown)
    return [*argv, "-batch", "-"]


def run_parallel(
    jobs: Sequence[tuple[Sequence[str], str | None]], timeout: float = 30, check: bool = True,
) -> list[subprocess.CompletedProcess[str]]:
    """Run independent commands at once (e.g. one per namespace).

    Every job is waited for before raising the first failure (with `check`),
    so nothing is left running behind us.
    """
    procs = [
        (list(argv), inp, subprocess.Popen(
            list(argv), stdin=subprocess.PIPE if inp is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for argv, inp in jobs
    ]
    results = []
    for argv, inp, p in procs:
        try:
            out, err = p.communicate(inp, timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            err = f"timed out after {timeout}s; {err}"
        results.append(subprocess.CompletedProcess(argv, p.returncode, out, err))
    if check:
        for (argv, inp, _), res in zip(procs, results, strict=True):
            if res.returncode != 0:
                raise CommandFailed(argv, res.returncode, res.stdout, res.stderr, inp)
    return results


def batch(lines: Sequence[str], netns: str | None = None, force: bool = False) -> None:
    if lines:
        run(batch_argv(netns, force), input="\n".join(lines) + "\n", check=not force)


def list_netns() -> list[str]:
    # `ip netns list` only lists /run/netns; reading it directly saves a fork.
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def pids_in(namespaces: Sequence[str]) -> dict[str, list[int]]:
    """Live processes whose network namespace is one of `namespaces` (like `ip netns pids`).

    One pass over /proc for all namespaces instead of one `ip` per namespace.
    """
    inodes: dict[tuple[int, int], str] = {}
    for ns in namespaces:
        try:
            st = os.stat(f"{NETNS_DIR}/{ns}")
        except OSError:
            continue
        inodes[(st.st_dev, st.st_ino)] = ns
    found: dict[str, list[int]] = {ns: [] for ns in inodes.values()}
    if not inodes:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue  # gone, or a kernel thread
        ns = inodes.get((st.st_dev, st.st_ino))
        if ns is not None:
            found[ns].append(int(entry))
    return found


def exec_argv(netns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


def sysctl_argv(netns: str, settings: dict[str, str]) -> list[str]:
    return exec_argv(netns, ["sysctl", "-qw", *(f"{k}={v}" for k, v in settings.items())])
