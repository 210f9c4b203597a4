"""Small shared pieces of the CLI: the failure type printed verbatim at the edge."""

from __future__ import annotations


class CtlFailure(Exception):
    """A command failed; its message is printed as-is on stderr and ctl exits 1."""
