"""lab.routers config helpers: pure text; BIRD's own parser (`bird -p`) accepts what they render."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lab.routers import (
    _gobgp_path,
    bird_peer,
    bird_proto_name,
    bird_route_reflector,
    frr_tor,
    gobgp_config,
)
from tests.support import need


def bird_parses(text: str, tmp_path: Path) -> None:
    need("bird")
    conf = tmp_path / "bird.conf"
    conf.write_text(text)
    res = subprocess.run(["bird", "-p", "-c", str(conf)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr + "\n" + text


def test_bird_peer_generator(tmp_path: Path) -> None:
    text = bird_peer("10.1.1.1", 65000, [("10.1.1.11", 64512, "10.1.1.1")],
                     ["172.16.0.0/26", "192.0.2.0/24 via 10.1.1.11"], disabled=True)
    bird_parses(text, tmp_path)
    assert "route 172.16.0.0/26 blackhole;" in text
    assert "route 192.0.2.0/24 via 10.1.1.11;" in text
    assert "disabled;" in text and "protocol kernel" not in text
    assert f"protocol bgp {bird_proto_name('10.1.1.11')} from peer" in text


def test_bird_peer_receiver_installs_only_bgp_routes(tmp_path: Path) -> None:
    text = bird_peer("10.1.1.11", 64512, [("10.1.1.1", 65000, "10.1.1.11")],
                     install_learned=True, password="s3cret", multihop=True)
    bird_parses(text, tmp_path)
    assert "export where source = RTS_BGP;" in text.split("protocol kernel", 1)[1]
    assert 'password "s3cret";' in text and "multihop;" in text


def test_bird_route_reflector(tmp_path: Path) -> None:
    text = bird_route_reflector("10.1.1.1", 64512, [("10.1.1.11", "10.1.1.1"),
                                                    ("10.1.2.11", "10.1.2.1")],
                                cluster_id="1.1.1.1", hold_time=9, password="pw")
    bird_parses(text, tmp_path)
    assert "rr client;" in text and "rr cluster id 1.1.1.1;" in text
    assert "export where source = RTS_BGP;" in text and "multihop;" in text
    assert "neighbor 10.1.2.11 as 64512; source address 10.1.2.1;" in text


def test_bird_rejects_quotes_in_passwords() -> None:
    with pytest.raises(ValueError):
        bird_peer("10.1.1.1", 1, [], password='a"b')


def test_frr_tor() -> None:
    text = frr_tor("10.1.1.11", 65001, [("10.1.1.1", 65000), ("10.1.1.12", 65001)],
                   ["198.51.100.0/24"], hold_time=9, password="pw")
    assert "router bgp 65001" in text and " no bgp ebgp-requires-policy" in text
    assert " timers bgp 3 9" in text and "  network 198.51.100.0/24" in text
    assert " neighbor 10.1.1.1 ebgp-multihop 255" in text
    assert "neighbor 10.1.1.12 ebgp-multihop" not in text  # iBGP: no TTL games
    assert " neighbor 10.1.1.12 password pw" in text


def test_receive_only_speakers_announce_nothing(tmp_path: Path) -> None:
    # A benchmark receiver must not send the generator's routes back (bench/bgp.py).
    bird = bird_peer("10.1.1.11", 64512, [("10.1.1.1", 65000, "10.1.1.11")],
                     install_learned=True, receive_only=True)
    bird_parses(bird, tmp_path)
    assert "ipv4 { import all; export none; };" in bird
    frr = frr_tor("10.1.1.11", 64512, [("10.1.1.1", 65000)], receive_only=True)
    assert "  neighbor 10.1.1.1 route-map ANNOUNCE-NOTHING out" in frr
    assert "route-map ANNOUNCE-NOTHING deny 10" in frr


def test_bird_keepalive_time(tmp_path: Path) -> None:
    text = bird_peer("10.1.1.1", 65000, [("10.1.1.11", 64512, "10.1.1.1")], keepalive=1)
    bird_parses(text, tmp_path)
    assert "  keepalive time 1;" in text
    assert "keepalive time" not in bird_peer("10.1.1.1", 65000, [])


def test_gobgp_config_ebgp_multihop_and_reflector_clients(tmp_path: Path) -> None:
    need("gobgpd")
    text = gobgp_config("10.1.1.1", 64512, [("10.1.1.11", 64512), ("10.1.1.12", 65001)],
                        rr_clients=True, cluster_id="244.0.0.9")
    conf = tmp_path / "gobgpd.toml"
    conf.write_text(text)
    # gobgpd's own dry run (-d) reads and checks the file, starting nothing.
    res = subprocess.run(["gobgpd", "-t", "toml", "-f", str(conf), "-d"], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stdout + res.stderr + "\n" + text
    ibgp, ebgp = text.split("[[neighbors]]")[1:]
    assert "route-reflector-client = true" in ibgp and '"244.0.0.9"' in ibgp
    assert "multihop" not in ibgp
    assert "route-reflector" not in ebgp and "multihop-ttl = 255" in ebgp


def test_gobgp_path_decoding() -> None:
    # The community attributes as `gobgp -j global rib` (GoBGP 3.10) printed them here for
    # a route added with `community 1:2 large-community 3:4:5`; the AS_PATH and neighbour
    # in the same JSON form (tests/e2e/test_bgp_advertise.py reads real learned paths).
    raw = {"nlri": {"prefix": "198.51.100.0/24"}, "neighbor-ip": "10.1.1.11",
           "attrs": [{"type": 1, "value": 2},
                     {"type": 2, "as_paths": [{"segment_type": 2, "num": 1, "asns": [64512]}]},
                     {"type": 8, "communities": [65538]},
                     {"type": 32, "value": [{"ASN": 3, "LocalData1": 4, "LocalData2": 5}]},
                     {"type": 3, "nexthop": "10.1.1.11"}]}
    assert _gobgp_path(raw) == {"neighbor-ip": "10.1.1.11", "nexthop": "10.1.1.11",
                                "as-path": [64512], "communities": ["1:2"],
                                "large-communities": ["3:4:5"]}
