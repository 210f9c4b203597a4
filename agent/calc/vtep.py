"""VXLAN tunnel endpoint MACs.

A Node may carry its VTEP MAC (`spec.vxlanTunnelMACAddr`); when it does not,
every node derives the same one from the node name, as Felix does
(`felix/calc/vxlan_resolver.go` vtepMACForHost): the byte 'f' followed by the
first five bytes of SHA-1(node name). 'f' is 0x66: locally administered,
unicast, so the MAC is always `66:xx:xx:xx:xx:xx`.

The one definition: start-up (agent.startup) writes the derived MAC to the
Node, the calculation uses it for Nodes that carry none.
"""

from __future__ import annotations

import hashlib


def derived_vtep_mac(node_name: str) -> str:
    digest = hashlib.sha1(node_name.encode()).digest()
    return ":".join(f"{b:02x}" for b in b"f" + digest[:5])


def vtep_mac(node_name: str, configured: str | None) -> str:
    """The node's VTEP MAC: the configured one (lower case) or the derived one."""
    return configured.lower() if configured else derived_vtep_mac(node_name)
