"""ExaBGP 5.0.15 configuration and environment for one node's plan. Pure.

Invariants:
* Byte-stable: the same plan renders the same text (neighbors sorted by name).
* A neighbor block depends only on its PeerPlan plus the node-wide router id
  and process name, so ExaBGP's reload (SIGUSR1) sees unchanged peers as
  unchanged and keeps their sessions. The `description` carries the Calico
  name (Mesh_/Global_/Node_...); ExaBGP leaves it out of neighbor equality.
* Only what ExaBGP does is rendered. rr_client, next_hop_mode and peer_node
  are the RIB's and the exporter's business: ExaBGP neither reflects nor
  rewrites next hops for routes the process API announces.

Keyword notes, checked against exabgp/configuration/neighbor and
exabgp/reactor in 5.0.15:
* `connect <port>` is the port dialled; it is always written, because without
  it ExaBGP dials `exabgp.tcp.port`, which speaker_env sets to our own listen
  port (`listen <port>` would be a per-neighbor listener, not the peer's port).
* No `local-address` line means auto-discovery (as `local-address auto`).
* GTSM (RFC 5082) is `outgoing-ttl 255` plus `incoming-ttl <min TTL>`, the
  minimum being 256 - hops, as BIRD's `ttl security on; multihop <hops>`.
* The tokeniser unescapes backslashes before it sees quotes and switches quote
  character on any `'` or `"`, so a quoted value cannot contain either. A
  password that is not plain printable ASCII without quotes or backslashes
  is written base64 with `md5-base64 true`, which yields the exact bytes.
* `manual-eor true` stops ExaBGP sending End-of-RIB by itself once a session is
  up (its adj-RIB-out sent); the API's `neighbor <ip> announce eor ipv4 unicast`
  queues one for an established neighbor, sent after any routes still queued.
* `run` is split into argv by the same tokeniser (no shell), so an argument
  with spaces or syntax characters is double-quoted; quotes, backslashes and
  newlines cannot be expressed and are refused.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence

from .types import DEFAULT_PORT, NodePlan, PeerPlan

DEFAULT_RESTART_TIME = 120  # BIRD's graceful-restart time, which Calico inherits
GTSM_SEND_TTL = 255
EVERY_IPV4_ADDRESS = "0.0.0.0"  # tortie's BGP is IPv4 only

_BARE = re.compile(r"[A-Za-z0-9_@%+=:./-]+")  # a token ExaBGP reads back unchanged
_UNQUOTABLE = re.compile(r"[\"'\\\x00-\x1f\x7f]")
_PROCESS_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _quoted(value: str) -> str:
    if _UNQUOTABLE.search(value):
        raise ValueError(f"cannot write {value!r} in an ExaBGP configuration")
    return f'"{value}"'


def _arg(value: str) -> str:
    return value if _BARE.fullmatch(value) else _quoted(value)


def _password_lines(password: str) -> list[str]:
    if password.isascii() and password.isprintable() and not _UNQUOTABLE.search(password):
        return [f'md5-password "{password}";']
    encoded = base64.b64encode(password.encode()).decode()
    return [f'md5-password "{encoded}";', "md5-base64 true;"]


def _neighbor(peer: PeerPlan, router_id: str, process_name: str) -> list[str]:
    body = [f"description {_quoted(peer.name)};", f"router-id {router_id};"]
    if peer.local_address:
        body.append(f"local-address {peer.local_address};")
    body += [f"local-as {peer.local_as};", f"peer-as {peer.peer_as};",
             f"hold-time {peer.hold_time};", f"connect {peer.peer_port};"]
    if peer.passive:
        body.append("passive true;")
    if peer.password:
        body += _password_lines(peer.password)
    if peer.ttl_security:
        body += [f"outgoing-ttl {GTSM_SEND_TTL};", f"incoming-ttl {256 - peer.ttl_security};"]
    restart = peer.restart_time if peer.restart_time is not None else DEFAULT_RESTART_TIME
    body += [
        # End-of-RIB is the daemon's to send (`announce eor`), after the routes it has for
        # this peer: ExaBGP's own goes out as soon as the session is up, and after a
        # restart that is before the daemon's re-announcement (RFC 4724 wants routes first).
        "manual-eor true;",
        "family {", "    ipv4 unicast;", "}",
        "capability {", f"    graceful-restart {restart};", "    route-refresh;", "}",
        "api {",
        f"    processes [ {process_name} ];",
        "    neighbor-changes;",
        "    receive {", "        parsed;", "        update;", "        open;",
        "        notification;", "    }",
        # The NOTIFICATIONs we send (hold timer expired, ...): a session closed by one
        # is not a graceful restart, so the daemon must hear of it.
        "    send {", "        parsed;", "        notification;", "    }",
        "}",
    ]
    return [f"neighbor {peer.peer_ip} {{", *("    " + line for line in body), "}"]


def render_config(plan: NodePlan, api_argv: Sequence[str], process_name: str = "tortie") -> str:
    """The whole configuration file: the API process, then one neighbor per peer."""
    if not _PROCESS_NAME.fullmatch(process_name):
        raise ValueError(f"process name {process_name!r} must be letters, digits, '-' or '_'")
    if not api_argv:
        raise ValueError("the API process needs a command")
    peers = sorted(plan.peers, key=lambda p: p.name)
    seen: set[str] = set()
    for peer in peers:
        if peer.peer_ip in seen:  # ExaBGP and the speaker key sessions by peer address
            raise ValueError(f"two sessions to {peer.peer_ip} in the plan for {plan.node}")
        seen.add(peer.peer_ip)
    lines = [
        f"# ExaBGP configuration of tortie node {plan.node}. Generated: do not edit.",
        "",
        f"process {process_name} {{",
        f"    run {' '.join(_arg(a) for a in api_argv)};",
        "    encoder json;",
        "}",
    ]
    for peer in peers:
        lines += ["", *_neighbor(peer, plan.router_id, process_name)]
    return "\n".join(lines) + "\n"


def speaker_env(plan: NodePlan) -> dict[str, str]:
    """ExaBGP's settings, as environment variables (they win over any exabgp.env file)."""
    return {
        # Run as root and stay root: the API process must keep access to its files,
        # and TCP-MD5 keys are set on sockets opened after startup.
        "exabgp.daemon.user": "root",
        "exabgp.daemon.drop": "false",
        "exabgp.daemon.daemonize": "false",
        # bindMode NodeIP: the node IP only; None: every IPv4 address (the wildcard). An
        # empty bind would not mean "every address" but no listening socket at all
        # (ExaBGP's reactor listens on each address of the list and on nothing else).
        # The port is also ExaBGP's default port to dial, which every neighbor overrides
        # with `connect`.
        "exabgp.tcp.bind": plan.listen_address or EVERY_IPV4_ADDRESS,
        "exabgp.tcp.port": str(plan.listen_port or DEFAULT_PORT),
        "exabgp.tcp.attempts": "0",  # retry for ever; >0 makes the reactor give up
        "exabgp.bgp.passive": "false",  # passive is per neighbor
        # The bridge reads every ack; commands and replies go over the process API only,
        # never the CLI's named pipes (lab nodes share a file system, and so would the pipes).
        "exabgp.api.ack": "true",
        "exabgp.api.cli": "false",
        "exabgp.api.encoder": "json",
        "exabgp.api.respawn": "true",
        "exabgp.log.destination": "stdout",
        "exabgp.log.statistics": "false",
        # The reactor polls its sockets with a timeout of speed/100 s when it has nothing
        # to do: 10 ms by default, 100 wake-ups a second and 2.3 % of a core per idle
        # node (bench/scale.py: 1.1 cores for 50 nodes). Sockets and the API pipe still
        # wake it at once; only its timer checks (keepalive, hold, connect retry) move
        # to a 50 ms grain, which BGP's second-grained timers do not notice.
        "exabgp.reactor.speed": "5.0",
    }
