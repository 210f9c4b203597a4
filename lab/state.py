"""The lab's state file, /run/tortie-lab/<lab>/state.json, and its directory.

Owns: where a lab keeps its state, etcd data and logs, and how state is
written. Invariants: the file is replaced atomically (write + rename), so a
crash leaves the previous or the next version, never a torn one; it is written
*before* the lab creates anything and again right after each process starts,
so `down` in another process knows everything that may exist.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATE_VERSION = 1


def run_dir() -> Path:
    return Path(os.environ.get("TORTIE_LAB_RUN_DIR", "/run/tortie-lab"))


def lab_dir(name: str, base: Path | None = None) -> Path:
    return (base or run_dir()) / name


def state_path(name: str, base: Path | None = None) -> Path:
    return lab_dir(name, base) / "state.json"


def read(name: str, base: Path | None = None) -> dict[str, Any] | None:
    path = state_path(name, base)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("lab %s: ignoring unreadable state file %s: %s", name, path, e)
        return None
    return data if isinstance(data, dict) else None


def write(name: str, data: dict[str, Any], base: Path | None = None) -> None:
    path = state_path(name, base)
    text = json.dumps({"version": STATE_VERSION, **data}, indent=2) + "\n"
    for attempt in range(3):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(text)
            os.replace(tmp, path)
            return
        except FileNotFoundError:
            # Another lab's `down` removed the empty base directory between our
            # mkdir and write (see remove()); make it again.
            if attempt == 2:
                raise


def remove(name: str, base: Path | None = None) -> None:
    shutil.rmtree(lab_dir(name, base), ignore_errors=True)
    try:
        # Leave no trace: drop the base directory too once the last lab is gone.
        # (rmdir fails harmlessly while another lab still lives there.)
        (base or run_dir()).rmdir()
    except OSError:
        pass


def all_labs(base: Path | None = None) -> dict[str, dict[str, Any]]:
    root = base or run_dir()
    labs: dict[str, dict[str, Any]] = {}
    if root.is_dir():
        for d in sorted(root.iterdir()):
            data = read(d.name, root) if d.is_dir() else None
            if data is not None:
                labs[d.name] = data
    return labs
