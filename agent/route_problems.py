"""The agent's route problems as a file on the node, for the `tortie-bgp` sidecar.

Owns `<TORTIE_RUN_DIR>/agent/<node>/route-problems.json`: the agent writes it
(what its last apply left out of the kernel, e.g. a learned route whose next
hop does not resolve) and `tortie-bgp` reads it into the status it serves on
its control socket, so `ctl node status -o wide` lists the agent's problems
in the chart's layout as it does with BGP in the agent (where the daemon asks
the agent directly).

Why a file: the two containers share the node's run directory (a hostPath in
the chart, the lab's state directory in a lab) and the agent already writes
files for others there (MTU, endpoint status). Sending the list up the agent's
`routes` connection instead would make the sidecar's control socket two-way and
lose the list with every reconnect; a file keeps the agent the only writer and
the sidecar a plain reader, and `ctl` needs to know nothing new.

Invariants:
  * The content is `{"problems": [...]}`, sorted, the agent's whole current list;
    written atomically (a temporary name, then rename), so a reader sees the
    previous list or the new one, never part of one.
  * The agent writes it on its first apply and whenever the list changes after,
    so a list left by an earlier run of the agent does not outlive that run's
    successor's first apply. It is not removed when the agent stops: the kernel
    is left as it is then, and so are its problems.
  * A missing, unreadable or malformed file reads as no problems (an agent that
    has not applied yet, or runs BGP in-process); reading never raises.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

_log = logging.getLogger(__name__)

FILE_NAME = "route-problems.json"


def problems_path(run_dir: str | Path, nodename: str) -> Path:
    """The file of `nodename`'s agent (the node name keeps lab nodes, which share a
    run directory, apart)."""
    return Path(run_dir) / "agent" / nodename / FILE_NAME


def publish(path: Path, problems: Sequence[str]) -> bool:
    """Write the list; False (logged) if it could not be written (retried on the next
    change or by the caller)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"problems": sorted(problems)}) + "\n")
        os.replace(tmp, path)
        return True
    except OSError as exc:
        _log.warning("cannot publish the route problems to %s: %s", path, exc)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return False


def read(path: Path) -> tuple[str, ...]:
    """The list the agent published last; () when there is none to read."""
    try:
        doc = json.loads(path.read_text())
        problems = doc["problems"]
    except (OSError, ValueError, TypeError, KeyError):
        return ()
    if not isinstance(problems, list) or not all(isinstance(p, str) for p in problems):
        return ()
    return tuple(problems)
