"""Helpers shared by the dataplane tests (root side): run `ip` in a namespace, read it back."""

from __future__ import annotations

import subprocess


def sh(ns: str, *args: str, check: bool = True) -> str:
    """`ip -n NS <args>` (or `bridge -n NS` when args[0] == 'bridge'); its stdout."""
    if args and args[0] == "bridge":
        argv = ["bridge", "-n", ns, *args[1:]]
    else:
        argv = ["ip", "-n", ns, *args]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {res.stderr.strip()}")
    return res.stdout


def ns_exec(ns: str, *argv: str, input: str | None = None, check: bool = True) -> str:
    """Run any command inside `ns` (`ip netns exec`); its stdout."""
    res = subprocess.run(["ip", "netns", "exec", ns, *argv], input=input,
                         capture_output=True, text=True, check=False)
    if check:
        assert res.returncode == 0, f"{argv}: {res.stderr}"
    return res.stdout


def routes(ns: str, *filters: str) -> list[str]:
    """`ip route show` lines, whitespace-normalised."""
    return [" ".join(line.split()) for line in sh(ns, "route", "show", *filters).splitlines()]
