"""Running ctl for tests: in-process (fast, for tables and fuzzing) or as the real script."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ctl.main import main

CTL = str(Path(sys.executable).with_name("ctl"))


@dataclass
class Result:
    rc: int
    out: str
    err: str


def run_inprocess(args: list[str], stdin: bytes | None = None) -> Result:
    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(args)
    finally:
        sys.stdin = old_stdin
    return Result(rc, out.getvalue(), err.getvalue())


def run_script(args: list[str], endpoint: str, stdin: bytes | None = None,
               extra_env: dict[str, str] | None = None) -> Result:
    env = {**os.environ, "ETCD_ENDPOINTS": endpoint, **(extra_env or {})}
    proc = subprocess.run([CTL, *args], input=stdin, capture_output=True, env=env, timeout=60)
    return Result(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def dump(client) -> list[tuple[str, bytes, int]]:
    items, _ = client.list("/")
    return [(kv.key, kv.value, kv.mod_revision) for kv in items]


def refused(client, args: list[str], stdin: bytes, message: str) -> Result:
    """Run ctl on bad input and check the contract: exit 1, nothing on stdout, `message` on
    stderr without a traceback, and etcd byte-identical."""
    before = dump(client)
    res = run_inprocess(args, stdin)
    assert res.rc == 1, res
    assert res.out == ""
    assert message in res.err, res.err
    assert "Traceback" not in res.err
    assert dump(client) == before
    return res
