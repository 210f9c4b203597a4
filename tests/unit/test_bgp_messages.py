"""bgp.messages against lines captured from real sessions (tests/bgp/fixtures/*.jsonl:
ExaBGP 5.0.15 with ExaBGP, BIRD 2.0.12 and FRR 8.4 peers; regenerate with capture.py)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from bgp.messages import (
    ACK_DONE,
    ACK_ERROR,
    SHOW_NEIGHBORS,
    Ack,
    announce_commands,
    format_attributes,
    parse_line,
    withdraw_commands,
)
from bgp.types import (
    EndOfRib,
    NeighborTable,
    OutRoute,
    PathAttributes,
    PeerNotification,
    PeerOpen,
    PeerState,
    RouteUpdate,
)

FIXTURES = Path(__file__).parents[1] / "bgp" / "fixtures"  # beside capture.py, which writes them


def lines(name: str) -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


def parsed(name: str) -> list:
    return [parse_line(line) for line in lines(name)]


def of(kind: type, items: list) -> list:
    return [i for i in items if isinstance(i, kind)]


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.jsonl")))
def test_every_captured_json_line_is_understood(name):
    for line in lines(name):
        result = parse_line(line)
        if line.startswith("relay ") or '"notification": "shutdown"' in line:
            assert result is None  # the relay's hello; ExaBGP's own goodbye
        elif line in ("done", "error"):
            assert isinstance(result, Ack)
        else:
            assert result is not None, line[:200]


def test_exabgp_session():
    items = parsed("exabgp_session.jsonl")
    states = of(PeerState, items)
    assert {s.state for s in states} == {"connected", "up", "down"}
    assert all(s.peer == "10.232.0.2" and s.time > 1.7e9 for s in states)
    assert all(s.reason for s in states if s.state == "down")
    assert of(PeerOpen, items)[0] == PeerOpen("10.232.0.2", "10.232.0.2", 64512, 9, None)
    assert of(EndOfRib, items) == [EndOfRib("10.232.0.2")]

    updates = of(RouteUpdate, items)
    first = updates[0].announced
    assert first == dict.fromkeys(["10.1.0.0/26", "10.1.0.64/26"], PathAttributes(
        next_hop="10.232.0.2", origin="incomplete", as_path=(64999, 65001, 65002, 65003),
        med=50, local_pref=200, communities=("64512:100", "65000:1"),
        originator_id="1.2.3.4", cluster_list=("5.6.7.8", "9.9.9.9")))
    announced = [p for u in updates[1:] for p in u.announced]
    withdrawn = [p for u in updates for p in u.withdrawn]
    assert len(announced) == len(set(announced)) == 2000  # in many UPDATEs
    assert len(updates) > 10
    assert len(withdrawn) == 1001 and "10.1.0.0/26" in withdrawn
    assert {a for u in updates[1:] for a in u.announced.values()} == {
        PathAttributes(next_hop="10.232.0.2", local_pref=100)}

    tables = of(NeighborTable, items)
    assert [[(r.peer, r.fsm) for r in t.rows] for t in tables] == [
        [("10.232.0.2", "ESTABLISHED")], [("10.232.0.2", "IDLE")]]
    assert (tables[0].rows[0].sent, tables[0].rows[0].received) == (1, 1)  # the EORs
    acks = of(Ack, items)
    assert acks.count(ACK_ERROR) == 0 and acks.count(ACK_DONE) == 2  # the two shows


def test_open_with_graceful_restart():
    opens = of(PeerOpen, parsed("exabgp_open_gr.jsonl"))
    assert opens and set(opens) == {PeerOpen("10.232.0.1", "10.232.0.1", 64512, 9, 120)}


def test_notifications_and_down_reasons():
    bad_as = parsed("notification_bad_as.jsonl")
    assert of(PeerNotification, bad_as) == [PeerNotification(
        "10.232.0.1", 2, 2, "ASN in OPEN (64512) did not match ASN expected (65000)", "receive")]
    reasons = {s.reason for s in of(PeerState, bad_as)}
    assert {"notification sent (2,2)", "notification received (2,2)"} <= reasons

    hold = parsed("notification_hold_timer.jsonl")
    assert of(PeerNotification, hold) == [PeerNotification("10.232.0.2", 4, 0, "", "send")]
    assert "notification sent (4,0)" in {s.reason for s in of(PeerState, hold)}


def test_bird_session():
    items = parsed("bird_session.jsonl")
    assert of(PeerOpen, items) == [PeerOpen("10.232.0.2", "10.232.0.2", 65002, 9, 120)]
    rib: dict[str, PathAttributes] = {}
    for u in of(RouteUpdate, items):
        rib.update(u.announced)
    assert rib == {
        "10.5.0.0/26": PathAttributes("10.232.0.2", as_path=(65002,)),
        "10.5.0.64/26": PathAttributes("10.232.0.2", as_path=(65002,)),
        "10.5.1.0/24": PathAttributes("10.232.0.2", as_path=(65002, 65010), med=7,
                                      communities=("65002:42",)),
    }
    assert sorted(p for u in of(RouteUpdate, items) for p in u.withdrawn) == sorted(rib)
    assert of(EndOfRib, items) == [EndOfRib("10.232.0.2")]
    assert of(PeerNotification, items) == [PeerNotification("10.232.0.2", 6, 2, "", "receive")]
    assert ACK_DONE in items  # our announce


def test_frr_session():
    items = parsed("frr_session.jsonl")
    assert of(PeerOpen, items)[0].restart_time is not None and of(PeerOpen, items)[0].asn == 65003
    rib: dict[str, PathAttributes] = {}
    for u in of(RouteUpdate, items):
        rib.update(u.announced)
    assert rib["10.7.0.64/26"] == PathAttributes(
        "10.232.0.2", as_path=(65003, 65020, 65021), med=33, communities=("65003:7",))
    # FRR sends our own route back (ExaBGP does no loop detection: the RIB must)
    assert rib["10.8.0.0/26"].as_path == (65003, 64512)
    assert of(EndOfRib, items) == []  # FRR sends EOR only to a peer that offered GR
    assert [p for u in of(RouteUpdate, items) for p in u.withdrawn] == ["10.7.0.0/26"]


@pytest.mark.parametrize("line", [
    "", "   ", "relay 1234", "reload in progress", "{", "[{", '{"type": "update"}',
    '{"type": "update", "neighbor": {"address": {"peer": "1.1.1.1"}}}',
    '{"type": "state", "neighbor": 5}', '{"type": "keepalive", "neighbor": {}}',
    '[{"peer": {}}]', "[1, 2]", '"done"', "null", "42",
])
def test_anything_else_is_none(line):
    assert parse_line(line) is None


def test_acks():
    assert parse_line("done") == Ack(True) and parse_line("error\n") == Ack(False)


def test_send_direction_updates_are_not_received_routes():
    line = next(line for line in lines("exabgp_session.jsonl") if '"attribute"' in line)
    assert parse_line(line.replace('"direction": "receive"', '"direction": "send"')) is None


@pytest.mark.parametrize("name", ["bird_session.jsonl", "frr_session.jsonl",
                                  "exabgp_session.jsonl"])
def test_compact_prefixes_read_as_the_long_form(name):
    """With exabgp.api.compact (tortie's default) a unicast prefix is a bare string: the
    same RouteUpdates. A list may mix both forms (ADD-PATH keeps the object)."""
    long = [line for line in lines(name) if '{ "nlri": ' in line]
    assert long
    compact = [re.sub(r'\{ "nlri": ("[^"]+") \}', r"\1", line) for line in long]
    assert all('"nlri"' not in line for line in compact)
    assert [parse_line(line) for line in compact] == [parse_line(line) for line in long]
    several = max(long, key=lambda line: line.count('"nlri"'))
    if several.count('"nlri"') > 1:
        mixed = re.sub(r'\{ "nlri": ("[^"]+") \}', r"\1", several, count=1)
        assert '"nlri"' in mixed and mixed != several
        assert parse_line(mixed) == parse_line(several)


def test_ten_thousand_prefixes_in_100_lines_share_attributes():
    template = json.loads(next(line for line in lines("bird_session.jsonl")
                               if '"10.5.1.0/24"' in line))
    out = []
    for i in range(100):
        nlris = [{"nlri": f"10.{i}.{j // 4}.{j % 4 * 64}/26"} for j in range(100)]
        template["neighbor"]["message"]["update"]["announce"]["ipv4 unicast"] = {"10.232.0.2": nlris}
        out.append(json.dumps(template))
    t0 = time.perf_counter()
    updates = [parse_line(line) for line in out]
    took = time.perf_counter() - t0
    assert sum(len(u.announced) for u in updates) == 10_000
    assert all(len({id(a) for a in u.announced.values()}) == 1 for u in updates)
    print(f"parsed 10,000 prefixes in 100 UPDATE lines in {took * 1000:.1f} ms")


# -- commands -------------------------------------------------------------------------------


FULL = PathAttributes(next_hop="10.0.0.1", origin="incomplete", as_path=(64999, 65001), med=50,
                      local_pref=200, communities=("64512:100", "65000:1"),
                      originator_id="1.2.3.4", cluster_list=("5.6.7.8", "9.9.9.9"))


def test_format_attributes():
    assert format_attributes(FULL) == (
        "next-hop 10.0.0.1 origin incomplete as-path [ 64999 65001 ] med 50 "
        "local-preference 200 community [ 64512:100 65000:1 ] originator-id 1.2.3.4 "
        "cluster-list [ 5.6.7.8 9.9.9.9 ]")
    # unset attributes are left out: ExaBGP then sends [] (iBGP) or [local AS] (eBGP)
    assert format_attributes(PathAttributes("10.0.0.1")) == "next-hop 10.0.0.1 origin igp"


def test_announce_commands_group_by_attributes_and_chunk():
    plain = PathAttributes("10.0.0.1")
    routes = [OutRoute(f"10.1.{i}.0/26", plain) for i in range(5)]
    routes.insert(2, OutRoute("10.9.0.0/26", FULL))
    assert announce_commands("10.0.0.2", routes, max_per_command=2) == [
        "neighbor 10.0.0.2 announce attributes next-hop 10.0.0.1 origin igp nlri 10.1.0.0/26 10.1.1.0/26",
        "neighbor 10.0.0.2 announce attributes next-hop 10.0.0.1 origin igp nlri 10.1.2.0/26 10.1.3.0/26",
        "neighbor 10.0.0.2 announce attributes next-hop 10.0.0.1 origin igp nlri 10.1.4.0/26",
        f"neighbor 10.0.0.2 announce attributes {format_attributes(FULL)} nlri 10.9.0.0/26",
    ]
    assert announce_commands("10.0.0.2", []) == []
    assert len(announce_commands("10.0.0.2", routes * 200)) == 3  # 500 per command by default


def test_withdraw_commands():
    assert withdraw_commands("10.0.0.2", ["10.1.0.0/26", "10.1.1.0/26", "10.1.2.0/26"], 2) == [
        "neighbor 10.0.0.2 withdraw attributes next-hop 0.0.0.0 nlri 10.1.0.0/26 10.1.1.0/26",
        "neighbor 10.0.0.2 withdraw attributes next-hop 0.0.0.0 nlri 10.1.2.0/26",
    ]
    assert withdraw_commands("10.0.0.2", []) == []
    assert SHOW_NEIGHBORS == "show neighbor json"
