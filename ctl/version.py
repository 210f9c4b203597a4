"""ctl.version: the client version `ctl version` and `ctl ipam check` report.

Read once, from the installed distribution's metadata (pyproject.toml's
`version`), so there is one place to change it.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version


@cache
def client_version() -> str:
    """"v<version of the installed tortie distribution>", calicoctl's form ("v0.1.0")."""
    try:
        return f"v{version('tortie')}"
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"
