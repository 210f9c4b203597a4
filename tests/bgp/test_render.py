"""bgp.render: the text per option, its stability, and what the real ExaBGP 5.0.15 makes of it."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from bgp.render import render_config, speaker_env
from bgp.types import GLOBAL, MESH, NODE_SPECIFIC, NodePlan, PeerPlan
from tests.unit.test_bgp_plan import FOUR, NO_MESH, RR_NODES, RR_PEER, config, peer, plan

EXABGP = Path(sys.executable).with_name("exabgp")
ARGV = [sys.executable, "-m", "bgp.relay"]  # exists and is executable: ExaBGP checks `run`


def mesh_peer(**kw) -> PeerPlan:
    base = dict(name="Mesh_10_0_0_2", peer_type=MESH, peer_ip="10.0.0.2", peer_as=64512,
                local_as=64512, local_address="10.0.0.1", peer_node="n2")
    return PeerPlan(**{**base, **kw})


def node_plan(*peers: PeerPlan, **kw) -> NodePlan:
    base = dict(node="n1", node_ip="10.0.0.1", router_id="10.0.0.1", local_as=64512,
                listen_address="10.0.0.1")
    return NodePlan(**{**base, **kw}, peers=tuple(peers))


def neighbor_block(text: str, ip: str) -> str:
    start = text.index(f"neighbor {ip} {{")
    return text[start:text.index("\n}\n", start) + 3]


GOLDEN = f"""\
# ExaBGP configuration of tortie node n1. Generated: do not edit.

process tortie {{
    run {sys.executable} -m bgp.relay;
    encoder json;
}}

neighbor 10.0.0.2 {{
    description "Mesh_10_0_0_2";
    router-id 10.0.0.1;
    local-address 10.0.0.1;
    local-as 64512;
    peer-as 64512;
    hold-time 240;
    connect 179;
    manual-eor true;
    family {{
        ipv4 unicast;
    }}
    capability {{
        graceful-restart 120;
        route-refresh;
    }}
    api {{
        processes [ tortie ];
        neighbor-changes;
        receive {{
            parsed;
            update;
            open;
            notification;
        }}
        send {{
            parsed;
            notification;
        }}
    }}
}}
"""


def test_golden_mesh_neighbor():
    assert render_config(node_plan(mesh_peer()), ARGV) == GOLDEN


@pytest.mark.parametrize("change, present, absent", [
    ({"passive": True}, ["    passive true;"], []),
    ({}, [], ["passive", "md5", "ttl"]),
    ({"peer_port": 1179}, ["    connect 1179;"], ["connect 179;"]),
    ({"hold_time": 9}, ["    hold-time 9;"], []),
    ({"restart_time": 30}, ["        graceful-restart 30;"], []),
    ({"local_address": None}, [], ["local-address"]),
    ({"password": "s3cret #;{}[], ok"}, ['    md5-password "s3cret #;{}[], ok";'], ["md5-base64"]),
    ({"password": 'q"uote'}, ['    md5-password "cSJ1b3Rl";', "    md5-base64 true;"], []),
    ({"password": "it's"}, ['    md5-password "aXQncw==";', "    md5-base64 true;"], []),
    ({"password": "back\\slash"}, ["    md5-base64 true;"], ["back"]),
    ({"password": "pässwörd"}, ["    md5-base64 true;"], ["pässwörd"]),
    ({"ttl_security": 1}, ["    outgoing-ttl 255;", "    incoming-ttl 255;"], []),
    ({"ttl_security": 3}, ["    outgoing-ttl 255;", "    incoming-ttl 253;"], []),
    ({"peer_as": 65000, "local_as": 65099}, ["    local-as 65099;", "    peer-as 65000;"], []),
    ({"rr_client": True, "next_hop_mode": "Self"}, [], ["rr", "next-hop"]),  # RIB's business
])
def test_options(change, present, absent):
    block = neighbor_block(render_config(node_plan(mesh_peer(**change)), ARGV), "10.0.0.2")
    for line in present:
        assert line + "\n" in block
    for fragment in absent:
        assert fragment not in block


def test_process_argv_is_quoted_for_exabgps_tokeniser():
    text = render_config(node_plan(), ["/usr/bin/env", "a b", "x,y", "--k=v"], "relay-1")
    assert '    run /usr/bin/env "a b" "x,y" --k=v;\n' in text and "process relay-1 {" in text
    with pytest.raises(ValueError):
        render_config(node_plan(), ["/bin/echo", 'say "hi"'])
    with pytest.raises(ValueError):
        render_config(node_plan(), ARGV, "bad name")
    with pytest.raises(ValueError):
        render_config(node_plan(), [])


def test_two_sessions_to_one_address_are_refused():
    with pytest.raises(ValueError, match="10.0.0.2"):
        render_config(node_plan(mesh_peer(), mesh_peer(name="Node_10_0_0_2")), ARGV)


def test_rendering_is_stable_and_blocks_depend_only_on_their_peer():
    a, b = mesh_peer(), mesh_peer(name="Global_10_0_0_9", peer_type=GLOBAL, peer_ip="10.0.0.9")
    text = render_config(node_plan(a, b), ARGV)
    assert text == render_config(node_plan(a, b), ARGV) == render_config(node_plan(b, a), ARGV)
    changed = render_config(node_plan(a, replace(b, hold_time=30)), ARGV)
    assert changed != text
    assert neighbor_block(changed, "10.0.0.2") == neighbor_block(text, "10.0.0.2")
    assert text.index("neighbor 10.0.0.9") < text.index("neighbor 10.0.0.2")  # Global_ < Mesh_


def test_speaker_env():
    env = speaker_env(node_plan(listen_port=1790))
    assert env == {
        "exabgp.daemon.user": "root", "exabgp.daemon.drop": "false",
        "exabgp.daemon.daemonize": "false", "exabgp.tcp.bind": "10.0.0.1",
        "exabgp.tcp.port": "1790", "exabgp.tcp.attempts": "0", "exabgp.bgp.passive": "false",
        "exabgp.api.ack": "true", "exabgp.api.cli": "false", "exabgp.api.encoder": "json",
        "exabgp.api.respawn": "true", "exabgp.log.destination": "stdout",
        "exabgp.log.statistics": "false", "exabgp.reactor.speed": "5.0"}
    # bindMode None: ExaBGP's wildcard; an empty bind would turn listening off altogether
    assert speaker_env(node_plan(listen_address=None))["exabgp.tcp.bind"] == "0.0.0.0"


# -- the real ExaBGP ----------------------------------------------------------------------------

# Loads configurations with ExaBGP's own parser and prints what it understood: the
# fields Neighbor compares on reload, and for a pair of files which neighbors are equal.
_LOAD = r"""
import json, sys
from exabgp.environment import getenv
from exabgp.logger import log
log.init(getenv())
from exabgp.configuration.configuration import Configuration
from exabgp.util.psk import decode_base64

def load(path):
    c = Configuration([path])
    if not c.reload():
        sys.exit("cannot load %s: %s" % (path, c.error))
    return c

def fields(n):
    md5 = n["md5-password"]
    if md5 and n["md5-base64"]:
        md5 = decode_base64(md5).decode()
    return {"description": n["description"], "router-id": str(n["router-id"]),
            "local-address": n["local-address"] and str(n["local-address"]),
            "local-as": int(n["local-as"]), "peer-as": int(n["peer-as"]),
            "hold-time": int(n["hold-time"]), "connect": n["connect"], "passive": n["passive"],
            "md5": md5, "outgoing-ttl": n["outgoing-ttl"], "incoming-ttl": n["incoming-ttl"],
            "graceful-restart": n["capability"]["graceful-restart"],
            "route-refresh": bool(n["capability"]["route-refresh"]),
            "manual-eor": n["manual-eor"],
            "families": ["%s %s" % f for f in n.families()],
            "api": sorted(k for k, v in n.api.items() if v)}

first = load(sys.argv[1])
out = {"processes": {k: v["run"] for k, v in first.processes.items()},
       "neighbors": {str(n["peer-address"]): fields(n) for n in first.neighbors.values()}}
if len(sys.argv) > 2:
    second = load(sys.argv[2])
    out["unchanged"] = sorted(str(n["peer-address"]) for k, n in first.neighbors.items()
                              if k in second.neighbors and second.neighbors[k] == n)
print(json.dumps(out))
"""

API_FLAGS = ["neighbor-changes", "processes", "receive-notification", "receive-open",
             "receive-parsed", "receive-update", "send-notification", "send-parsed"]


def exabgp_validate(path: Path) -> None:
    run = subprocess.run([str(EXABGP), "validate", "-n", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def exabgp_load(*paths: Path) -> dict:
    run = subprocess.run([sys.executable, "-c", _LOAD, *map(str, paths)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.splitlines()[-1])


def write(tmp_path: Path, name: str, p: NodePlan) -> Path:
    path = tmp_path / f"{name}.conf"
    path.write_text(render_config(p, ARGV))
    return path


SECRETS = {("tor", "pw"): 'p@ss "word"', ("mesh", "pw"): "meshpw"}
SCENARIOS = {
    "mesh": lambda: plan("n2", FOUR, configs=[config(nodeMeshPassword={
        "secretKeyRef": {"name": "mesh", "key": "pw"}})], secrets=SECRETS),
    "rr": lambda: plan("rr1", RR_NODES, [RR_PEER], [NO_MESH]),
    "tor": lambda: plan("n1", FOUR, [peer("tor", peerIP="10.0.0.254", asNumber=65000,
                                          password={"secretKeyRef": {"name": "tor", "key": "pw"}},
                                          ttlSecurity=1, keepaliveTime="10s")],
                        [NO_MESH], secrets=SECRETS),
    "port": lambda: plan("n1", FOUR, [peer("tor", peerIP="10.0.0.254:1179", asNumber=65000)],
                         [config(listenPort=1790)]),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_exabgp_validates_and_reads_back_the_plan(tmp_path, scenario):
    p = SCENARIOS[scenario]()
    assert p.peers and not p.problems
    path = write(tmp_path, scenario, p)
    exabgp_validate(path)
    got = exabgp_load(path)
    assert got["processes"] == {"tortie": ARGV}
    assert set(got["neighbors"]) == {pp.peer_ip for pp in p.peers}
    for pp in p.peers:
        n = got["neighbors"][pp.peer_ip]
        assert n == {
            "description": pp.name, "router-id": p.router_id, "local-address": pp.local_address,
            "local-as": pp.local_as, "peer-as": pp.peer_as, "hold-time": pp.hold_time,
            "connect": pp.peer_port, "passive": pp.passive, "md5": pp.password,
            "outgoing-ttl": 255 if pp.ttl_security else None,
            "incoming-ttl": 256 - pp.ttl_security if pp.ttl_security else None,
            "graceful-restart": pp.restart_time or 120, "route-refresh": True,
            "manual-eor": True,  # End-of-RIB is the daemon's, after its routes
            "families": ["ipv4 unicast"], "api": API_FLAGS}, pp.name


def test_exabgp_reads_awkward_passwords_byte_for_byte(tmp_path):
    words = ["plain", "with space", "#;{}[],", 'q"', "it's", "back\\slash", "pässwörd"]
    peers = [mesh_peer(name=f"Node_10_0_1_{i}", peer_type=NODE_SPECIFIC, peer_ip=f"10.0.1.{i}",
                       password=w) for i, w in enumerate(words, 1)]
    path = write(tmp_path, "pw", node_plan(*peers))
    exabgp_validate(path)
    got = exabgp_load(path)["neighbors"]
    assert {got[pp.peer_ip]["md5"] for pp in peers} == set(words)


def test_exabgp_reload_keeps_unchanged_neighbors(tmp_path):
    before = SCENARIOS["tor"]()
    extra = peer("tor2", peerIP="10.0.0.253", asNumber=65000)
    after = plan("n1", FOUR, [peer("tor", peerIP="10.0.0.254", asNumber=65000,
                                   password={"secretKeyRef": {"name": "tor", "key": "pw"}},
                                   ttlSecurity=1, keepaliveTime="10s"), extra],
                 [NO_MESH], secrets=SECRETS)
    got = exabgp_load(write(tmp_path, "before", before), write(tmp_path, "after", after))
    assert got["unchanged"] == ["10.0.0.254"]
    moved = replace(before, peers=tuple(replace(pp, hold_time=90) for pp in before.peers))
    got = exabgp_load(write(tmp_path, "before", before), write(tmp_path, "moved", moved))
    assert got["unchanged"] == []
