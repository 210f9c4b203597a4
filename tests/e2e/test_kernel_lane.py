"""The IPIP lane: tests/kernel_guest run inside a User-Mode Linux 6.1 kernel that has ipip.

This machine's kernel has no ipip module; UML boots in ~2 s with the host's root
file system read-only, so the same venv and checkout run there
(docs/architecture.md, "The kernel lane").
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import need

pytestmark = [pytest.mark.slow, pytest.mark.root]

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "scripts" / "run-in-uml.sh"


def test_guest_suite_passes_inside_uml():
    need(root=True, root_for="to boot User-Mode Linux with the host root file system",
         files={"/usr/bin/linux.uml": "user-mode-linux"})
    if not shutil.which("modprobe"):  # the UML guest uses the host's modprobe
        need(files={"/usr/sbin/modprobe": "kmod"})
    res = subprocess.run(
        [str(RUNNER), sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/kernel_guest"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "RIK_TIMEOUT": "540"},
    )
    if res.returncode == 125:
        pytest.skip(f"User-Mode Linux could not start: {res.stderr.strip()[-300:]}")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    summary = re.search(r"(\d+) passed", res.stdout)
    assert summary and int(summary.group(1)) >= 2, res.stdout[-2000:]
    assert "skipped" not in res.stdout.splitlines()[-1], res.stdout[-2000:]
