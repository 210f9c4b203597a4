"""ExaBGP 5.0.15 process API: parse what it writes to us, format what we write to it.

Pure: no I/O, no state. `parse_line` turns one line from ExaBGP into a speaker event,
an `Ack`, or None (anything we do not use: keepalives, text output of `show` commands,
ExaBGP's own `shutdown` notice). It never raises on bad input; malformed JSON is None.

What ExaBGP writes (with `encoder json` and `exabgp.api.ack=true`; real samples in
tests/bgp/fixtures/):
- `done` / `error`: the ack of each command, in command order.
- `{"type": "state", ...}`: `connected`, `up`, `down` (+ `reason`).
- `{"type": "open", ...}`: the OPEN received (the neighbour's `api { receive { open; } }`);
  graceful restart is capability "64" with its `time`; the 4-octet AS is capability "65".
- `{"type": "update", ...}`: `message.update` with `attribute`, `announce` ({family:
  {next hop: [{"nlri": prefix}]}}) and `withdraw` ({family: [{"nlri": prefix}]}), or
  `message.eor`. as-path is {"0": {"element": "as-sequence"|"as-set", "value": [..]}}.
- `{"type": "notification", ...}`: `neighbor.notification` {code, subcode, message} and
  `direction` (those we send only with `api { send { parsed; notification; } }`).
  The neighbour's api block for all of the above: `api { processes [ <name> ];
  neighbor-changes; receive { parsed; update; open; notification; }
  send { parsed; notification; } }`.
- `[...]`: the answer to `show neighbor json`, one line, then `done`.

Invariants: one PathAttributes object is shared by every prefix of one UPDATE with the
same next hop (10k prefixes cost one dict, not 10k objects); an AS_SET is flattened
into `as_path` after the sequence before it (PathAttributes has no segment types).

Commands: `announce attributes <attrs> nlri <p1> <p2> ...` groups prefixes with equal
attributes into one command (one `done` each); an empty as_path is left out, so
ExaBGP sends [local AS] to eBGP and [] to iBGP peers. Withdraws need no attributes:
`withdraw attributes next-hop 0.0.0.0 nlri ...` (the next hop is ignored).
`announce eor ipv4 unicast` is End-of-RIB (the config has `manual-eor true`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bgp.types import (
    EndOfRib,
    NeighborStatus,
    NeighborTable,
    OutRoute,
    PathAttributes,
    PeerNotification,
    PeerOpen,
    PeerState,
    RouteUpdate,
    SpeakerEvent,
)

SHOW_NEIGHBORS = "show neighbor json"
# ExaBGP reads commands 16 KiB at a time and caps a line at 1 MiB; 500 /26s is ~9 KB.
MAX_PER_COMMAND = 500
GR_CAPABILITY, ASN4_CAPABILITY = "64", "65"


@dataclass(frozen=True, slots=True)
class Ack:
    """ExaBGP's answer to one command: `done` (ok) or `error`."""

    ok: bool


ACK_DONE, ACK_ERROR = Ack(True), Ack(False)
_loads = json.loads


def parse_line(line: str) -> SpeakerEvent | Ack | None:
    line = line.strip()
    if line == "done":
        return ACK_DONE
    if line == "error":
        return ACK_ERROR
    if not line or line[0] not in "{[":
        return None
    try:
        data = _loads(line)
        if isinstance(data, list):
            return _neighbor_table(data)
        parse = _BY_TYPE.get(data.get("type"))
        neighbor = data.get("neighbor")
        return parse(data, neighbor) if parse and isinstance(neighbor, dict) else None
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        return None  # not ours to interpret; the caller logs it at debug


def _peer(neighbor: dict) -> str:
    return neighbor["address"]["peer"]


def _state(data: dict, neighbor: dict) -> PeerState:
    return PeerState(_peer(neighbor), neighbor["state"], neighbor.get("reason", ""),
                     float(data.get("time", 0.0)))


def _open(_data: dict, neighbor: dict) -> PeerOpen | None:
    if neighbor.get("direction", "receive") != "receive":
        return None
    msg = neighbor["open"]
    caps = msg.get("capabilities", {})
    gr = caps.get(GR_CAPABILITY) or next(
        (c for c in caps.values() if c.get("name") == "graceful restart"), None)
    asn = caps.get(ASN4_CAPABILITY, {}).get("asn4", msg["asn"])
    return PeerOpen(_peer(neighbor), msg["router_id"], int(asn), int(msg["hold_time"]),
                    int(gr["time"]) if gr else None)


def _notification(_data: dict, neighbor: dict) -> PeerNotification:
    n = neighbor["notification"]
    return PeerNotification(_peer(neighbor), int(n["code"]), int(n["subcode"]),
                            n.get("message", ""), neighbor.get("direction", "receive"))


def _update(_data: dict, neighbor: dict) -> RouteUpdate | EndOfRib | None:
    if neighbor.get("direction", "receive") != "receive":
        return None
    message = neighbor["message"]
    peer = _peer(neighbor)
    if "eor" in message:
        return EndOfRib(peer)
    update = message["update"]
    announced: dict[str, PathAttributes] = {}
    announce = update.get("announce")
    if announce:
        attrs = update.get("attribute", {})
        for family, by_next_hop in announce.items():
            if not family.endswith(" unicast"):
                continue
            for next_hop, nlris in by_next_hop.items():
                announced.update(dict.fromkeys(_prefixes(nlris), _attributes(next_hop, attrs)))
    withdrawn: list[str] = []
    for family, nlris in update.get("withdraw", {}).items():
        if family.endswith(" unicast"):
            withdrawn += _prefixes(nlris)
    return RouteUpdate(peer, announced, tuple(withdrawn))


def _prefixes(nlris: list) -> list[str]:
    """The prefixes of a unicast NLRI list: "10.0.0.0/26" each with `exabgp.api.compact`
    (ours), {"nlri": "10.0.0.0/26", ...} without it or with ADD-PATH's path-id."""
    if all(type(n) is str for n in nlris):
        return nlris
    return [n if type(n) is str else n["nlri"] for n in nlris]


def _attributes(next_hop: str, a: dict) -> PathAttributes:
    return PathAttributes(
        next_hop=next_hop,
        origin=a.get("origin", "igp"),
        as_path=_as_path(a.get("as-path")),
        med=a.get("med"),
        local_pref=a.get("local-preference"),
        communities=tuple(f"{hi}:{lo}" for hi, lo in a.get("community", ())),
        originator_id=a.get("originator-id"),
        cluster_list=tuple(a.get("cluster-list", ())),
        large_communities=tuple(":".join(map(str, c)) for c in a.get("large-community", ())),
    )


def _as_path(value: object) -> tuple[int, ...]:
    if not value:
        return ()
    if isinstance(value, dict):  # {"0": {"element": ..., "value": [...]}, "1": ...}
        path: list[int] = []
        for key in sorted(value, key=int):
            path += value[key]["value"]
        return tuple(path)
    return tuple(_flatten(value))  # ExaBGP 4.x: a list, with a nested list for an AS_SET


def _flatten(items: Iterable) -> Iterable[int]:
    for item in items:
        if isinstance(item, list):
            yield from _flatten(item)
        else:
            yield int(item)


def _neighbor_table(rows: list) -> NeighborTable:
    out = []
    for row in rows:
        messages = row.get("messages", {})
        out.append(NeighborStatus(
            peer=row["peer"]["address"],
            fsm=row["fsm"],
            duration=float(row.get("duration", 0)),
            sent=int(messages.get("sent", {}).get("update", 0)),
            received=int(messages.get("received", {}).get("update", 0)),
        ))
    return NeighborTable(tuple(out))


_BY_TYPE = {"state": _state, "open": _open, "update": _update, "notification": _notification}


# -- commands -----------------------------------------------------------------------------


def format_attributes(a: PathAttributes) -> str:
    """`next-hop ... origin ...` in ExaBGP's static-route syntax."""
    parts = [f"next-hop {a.next_hop}", f"origin {a.origin}"]
    if a.as_path:
        parts.append(f"as-path [ {' '.join(map(str, a.as_path))} ]")
    if a.med is not None:
        parts.append(f"med {a.med}")
    if a.local_pref is not None:
        parts.append(f"local-preference {a.local_pref}")
    if a.communities:
        parts.append(f"community [ {' '.join(a.communities)} ]")
    if a.large_communities:
        parts.append(f"large-community [ {' '.join(a.large_communities)} ]")
    if a.originator_id:
        parts.append(f"originator-id {a.originator_id}")
    if a.cluster_list:
        parts.append(f"cluster-list [ {' '.join(a.cluster_list)} ]")
    return " ".join(parts)


def announce_commands(peer_ip: str, routes: Sequence[OutRoute],
                      max_per_command: int = MAX_PER_COMMAND) -> list[str]:
    """One `neighbor <ip> announce attributes ... nlri ...` per attribute set and chunk."""
    groups: dict[PathAttributes, list[str]] = {}
    for route in routes:
        groups.setdefault(route.attrs, []).append(route.prefix)
    out = []
    for attrs, prefixes in groups.items():
        head = f"neighbor {peer_ip} announce attributes {format_attributes(attrs)} nlri "
        out += [head + " ".join(chunk) for chunk in _chunks(prefixes, max_per_command)]
    return out


def withdraw_commands(peer_ip: str, prefixes: Sequence[str],
                      max_per_command: int = MAX_PER_COMMAND) -> list[str]:
    """Withdraws match on the prefix only; the next hop is required syntax, not compared."""
    head = f"neighbor {peer_ip} withdraw attributes next-hop 0.0.0.0 nlri "
    return [head + " ".join(chunk) for chunk in _chunks(list(prefixes), max_per_command)]


def end_of_rib_command(peer_ip: str) -> str:
    """End-of-RIB for IPv4 unicast to one established neighbor (with `manual-eor true`;
    ExaBGP answers `error` if the session is not up). ExaBGP sends it once the routes
    queued for that neighbor before it are out."""
    return f"neighbor {peer_ip} announce eor ipv4 unicast"


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    size = max(1, size)
    for i in range(0, len(items), size):
        yield items[i:i + size]
