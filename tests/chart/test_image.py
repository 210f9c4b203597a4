"""The commands and paths the chart names exist in the real image (slow: it may build it).

The offline twin is test_render.py's test_every_command_and_path_is_in_the_image, which
judges the same (command, path) pairs against pyproject's entry points and the image's
documented content; this one runs them inside the image itself, through lab.podman."""

from __future__ import annotations

import shlex
import uuid
from pathlib import Path

import pytest

from lab.image import ensure_image
from lab.podman import Podman
from tests.support import need

from .chart import VALUE_SETS, needed_in_image, render

pytestmark = [pytest.mark.slow, pytest.mark.root]


def test_commands_and_paths_exist_in_the_image(helms: dict[str, Path], values_dir: Path) -> None:
    need("podman", root=True, root_for="podman's storage under /var/lib/tortie")
    binary = helms[max(helms)]
    needed: list[tuple[str, str]] = []
    for name, values in VALUE_SETS.items():  # the union: every set may add a command
        for pair in needed_in_image(render(binary, values_dir / f"{name}.yaml", values).objects):
            if pair not in needed:
                needed.append(pair)
    checks = [f"test -x {shlex.quote(path)} || echo missing {shlex.quote(path)}; "
              f"[ \"$(command -v {shlex.quote(cmd)})\" = {shlex.quote(path)} ] || "
              f"echo not-on-path {shlex.quote(cmd)}" for cmd, path in needed
              if not path.startswith("/usr/lib/cni/")]
    checks += [f"test -x {shlex.quote(path)} || echo missing {shlex.quote(path)}"
               for _, path in needed if path.startswith("/usr/lib/cni/")]
    ref = ensure_image()
    done = Podman().run("run", "--rm", "--name", f"chart-{uuid.uuid4().hex[:8]}",
                        "--network", "none", "--entrypoint", "/bin/sh", ref, "-c",
                        "; ".join(checks), timeout=300)
    assert done.stdout == "", done.stdout
