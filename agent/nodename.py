"""This node's name: how it is chosen, and remembering it across restarts.

Owns: the precedence calico-node uses (node/pkg/lifecycle/utils DetermineNodeName)
and the name file it writes after a successful start (WriteNodeConfig):

  1. NODENAME (trimmed);
  2. the name stored in the node-name file (default /var/lib/calico/nodename,
     CALICO_NODENAME_FILE) by an earlier successful start;
  3. HOSTNAME, trimmed and lowercased;
  4. the host name (socket.gethostname()), lowercased, with a warning that
     recommends setting NODENAME.

Invariants: the file is written only after start-up succeeded, atomically
(temporary file + rename), and only when its content would change, so a
restart never rewrites it. A stored name beats HOSTNAME so that a renamed
host keeps its Node (and its IPAM blocks) instead of registering a new one.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

from .config import DEFAULT_NODENAME_FILE

_log = logging.getLogger(__name__)

SOURCE_ENV = "env NODENAME"
SOURCE_FILE = "file"
SOURCE_HOSTNAME_ENV = "env HOSTNAME"
SOURCE_HOSTNAME = "hostname"


def read_nodename_file(path: str | os.PathLike[str] = DEFAULT_NODENAME_FILE) -> str | None:
    """The stored name, or None when the file is missing, unreadable or empty."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        _log.warning("cannot read node name file %s: %s", path, exc)
        return None
    return text.strip() or None


def determine_node_name(nodename: str | None, hostname_env: str | None = None,
                        nodename_file: str | os.PathLike[str] = DEFAULT_NODENAME_FILE,
                        gethostname: Callable[[], str] = socket.gethostname
                        ) -> tuple[str, str]:
    """(name, source) by calico-node's precedence; source is one of the SOURCE_* labels."""
    if nodename and nodename.strip():
        name = nodename.strip()
        _log.info("Using NODENAME environment for node name %s", name)
        return name, SOURCE_ENV
    stored = read_nodename_file(nodename_file)
    if stored:
        _log.info("Using stored node name %s from %s", stored, nodename_file)
        return stored, f"{SOURCE_FILE} {nodename_file}"
    if hostname_env and hostname_env.strip():
        name = hostname_env.strip().lower()
        _log.info("Using HOSTNAME environment (lowercase) for node name %s", name)
        return name, SOURCE_HOSTNAME_ENV
    name = gethostname().strip().lower()
    _log.warning("Using auto-detected node name %s. It is recommended that an explicit value "
                 "is supplied using the NODENAME environment variable.", name)
    return name, SOURCE_HOSTNAME


def write_nodename_file(name: str,
                        path: str | os.PathLike[str] = DEFAULT_NODENAME_FILE) -> bool:
    """Remember the name (atomically). Returns False when the file already said so."""
    target = Path(path)
    if read_nodename_file(target) == name:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(name)
    os.replace(tmp, target)
    _log.info("wrote node name %s to %s", name, target)
    return True


__all__ = ["determine_node_name", "read_nodename_file", "write_nodename_file"]
