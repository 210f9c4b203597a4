"""The shim's wire protocol on the Python side (cni/shim_protocol.py), the installer's choice
of shim or launchers, and what a shim call's plugin sees of the environment."""

from __future__ import annotations

import struct

import pytest

from cni import install, shim_protocol
from cni.shim_protocol import FrameError, ShimReply, ShimRequest
from cni.shim_server import call_environ, netns_fd_path


def test_request_round_trip_keeps_environment_program_and_stdin() -> None:
    env = {"CNI_COMMAND": "ADD", "CNI_ARGS": "A=1;B=x=y", "EMPTY": ""}
    data = shim_protocol.encode_request(env, "tortie-ipam", b'{"cniVersion": "1.0.0"}')
    assert data[:8] == b"TCNI\x00\x00\x00\x01"  # network byte order
    assert shim_protocol.decode_request(data) == ShimRequest(
        env, "tortie-ipam", b'{"cniVersion": "1.0.0"}')


def test_reply_round_trip() -> None:
    data = shim_protocol.encode_reply(1, b'{"code": 11}\n', b"warning\n")
    assert data[:4] == b"\x00\x00\x00\x01"
    assert shim_protocol.decode_reply(data) == ShimReply(1, b'{"code": 11}\n', b"warning\n")


def u32(n: int) -> bytes:
    return struct.pack("!I", n)


@pytest.mark.parametrize(("frame", "message"), [
    (b"JSON" + u32(1), "magic=b'JSON': a shim request starts with b'TCNI'"),
    (b"TCNI" + u32(2), "version=2: this server speaks shim protocol 1"),
    (b"TCNI" + u32(1) + u32(5000), "environment count=5000 is over the limit of 4096"),
    (b"TCNI" + u32(1) + u32(1) + u32(200_000),
     "environment string 0: length 200000 is over the limit of 131072 bytes"),
    (b"TCNI" + u32(1) + u32(1) + u32(5) + b"NOVAL",
     "environment string 0=b'NOVAL' is not KEY=VALUE"),
    (b"TCNI" + u32(1) + u32(0) + u32(6) + b"tortie" + u32(17 << 20),
     "stdin: length 17825792 is over the limit of 16777216 bytes"),
])
def test_bad_frames_are_refused_naming_field_and_value(frame: bytes, message: str) -> None:
    with pytest.raises(FrameError) as err:
        shim_protocol.decode_request(frame)
    assert str(err.value).startswith(message)


def test_truncated_request_names_where_it_ended() -> None:
    whole = shim_protocol.encode_request({"CNI_COMMAND": "DEL"}, "tortie", b"{}")
    with pytest.raises(FrameError, match=r"truncated frame: it ends inside stdin \(0 of 2"):
        shim_protocol.decode_request(whole[:-2])
    with pytest.raises(FrameError, match="inside the version"):
        shim_protocol.decode_request(whole[:6])


def test_call_environment_keeps_cni_and_etcd_the_call_wins() -> None:
    call = {"CNI_COMMAND": "ADD", "ETCD_ENDPOINTS": "http://call:2379", "PATH": "/evil",
            "PYTHONPATH": "/evil", "HOME": "/root"}
    server = {"ETCD_ENDPOINTS": "http://server:2379", "ETCD_CA_CERT_FILE": "/ca.pem",
              "PATH": "/usr/bin"}
    assert call_environ(call, server) == {"CNI_COMMAND": "ADD",
                                          "ETCD_ENDPOINTS": "http://call:2379",
                                          "ETCD_CA_CERT_FILE": "/ca.pem"}


def test_netns_is_reached_through_the_servers_fd_table() -> None:
    assert netns_fd_path(7, pid=1234) == "/proc/1234/fd/7"
    assert netns_fd_path(None) == ""  # the shim could not open CNI_NETNS: it is gone


def test_installer_prefers_the_shim_unless_python_is_asked_for() -> None:
    here = set(install.shim_candidates())
    found = install.choose_shim("", False, is_file=lambda p: p in here)
    assert found == install.shim_candidates()[0]  # <sys.prefix>/libexec first
    assert install.choose_shim("", True, is_file=lambda p: True) is None
    assert install.choose_shim("", False, is_file=lambda p: False) is None  # launchers
    assert install.choose_shim("/x/shim", True, is_file=lambda p: p == "/x/shim") == "/x/shim"
    with pytest.raises(install.InstallError, match=r"--shim='/x/shim': no such file"):
        install.choose_shim("/x/shim", False, is_file=lambda p: False)


def test_chained_plugins_are_those_after_tortie() -> None:
    doc = install.render_conflist(install.Settings(bandwidth=True))
    assert install.chained_types(doc) == ["portmap", "bandwidth"]
