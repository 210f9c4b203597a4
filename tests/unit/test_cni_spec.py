"""The CNI protocol values (cni/spec.py, cni/errors.py): pure, no root, no etcd."""

from __future__ import annotations

import json

import pytest

from cni.errors import (
    CheckFailed,
    CniError,
    DecodingFailure,
    IncompatibleVersion,
    InvalidEnvironment,
    UnsupportedField,
    error_for_code,
)
from cni.spec import (
    SUPPORTED_VERSIONS,
    CniEnv,
    Interface,
    IPConfig,
    Result,
    RouteConfig,
    check_version,
    parse_cni_args,
    supports_check,
    version_result,
)

ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc", "CNI_NETNS": "/run/netns/x",
       "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin:/usr/lib/cni"}


def test_env_is_parsed_with_the_path_split() -> None:
    env = CniEnv.from_environ(ENV)
    assert (env.command, env.container_id, env.netns, env.ifname) == ("ADD", "abc",
                                                                      "/run/netns/x", "eth0")
    assert env.path == ("/opt/cni/bin", "/usr/lib/cni")


@pytest.mark.parametrize("change, fragment", [
    ({"CNI_COMMAND": ""}, "CNI_COMMAND is not set"),
    ({"CNI_COMMAND": "GC2"}, "CNI_COMMAND='GC2' is not one of ADD"),
    ({"CNI_CONTAINERID": ""}, "CNI_CONTAINERID not set for ADD"),
    ({"CNI_NETNS": "", "CNI_IFNAME": ""}, "variables CNI_IFNAME, CNI_NETNS not set"),
    ({"CNI_CONTAINERID": "-bad"}, "CNI_CONTAINERID='-bad' is invalid"),
    ({"CNI_CONTAINERID": "a/b"}, "CNI_CONTAINERID='a/b' is invalid"),
    ({"CNI_IFNAME": "a" * 16}, "too long"),
    ({"CNI_IFNAME": "et:h0"}, "not a valid interface name"),
    ({"CNI_IFNAME": ".."}, "not a valid interface name"),
])
def test_bad_environment_is_code_4_naming_the_variable(change, fragment) -> None:
    with pytest.raises(InvalidEnvironment) as err:
        CniEnv.from_environ({**ENV, **change})
    assert err.value.code == 4
    assert fragment in err.value.msg


def test_del_does_not_need_a_netns_and_version_needs_nothing() -> None:
    assert CniEnv.from_environ({**ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}).netns == ""
    assert CniEnv.from_environ({"CNI_COMMAND": "VERSION"}).command == "VERSION"


def test_cni_args() -> None:
    assert parse_cni_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;X=a=b") == {
        "IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "ns", "K8S_POD_NAME": "p", "X": "a=b"}
    assert parse_cni_args("") == {}
    with pytest.raises(InvalidEnvironment, match="'oops' is not KEY=VALUE"):
        parse_cni_args("K8S_POD_NAME=p;oops")


def test_versions() -> None:
    assert set(SUPPORTED_VERSIONS) >= {"0.3.1", "0.4.0", "1.0.0"}
    assert check_version("0.4.0") == "0.4.0"
    with pytest.raises(IncompatibleVersion) as err:
        check_version("0.2.0")
    assert err.value.code == 1 and "'0.2.0'" in err.value.msg and "1.0.0" in err.value.msg
    assert not supports_check("0.3.1") and supports_check("0.4.0") and supports_check("1.0.0")
    assert version_result() == {"cniVersion": "1.0.0",
                                "supportedVersions": list(SUPPORTED_VERSIONS)}


RESULT = Result(
    interfaces=(Interface("cali123", "ee:ee:ee:ee:ee:ee"),
                Interface("eth0", "02:00:00:00:00:01", "/run/netns/x")),
    ips=(IPConfig("10.65.0.5/32", None, 1),),
    routes=(RouteConfig("0.0.0.0/0", "169.254.1.1"),),
)


def test_result_1_0_0_has_no_ip_version() -> None:
    doc = RESULT.to_dict("1.0.0")
    assert doc["ips"] == [{"interface": 1, "address": "10.65.0.5/32"}]
    assert doc["interfaces"][1]["sandbox"] == "/run/netns/x"
    assert doc["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]
    assert doc["dns"] == {} and doc["cniVersion"] == "1.0.0"


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_older_results_carry_the_ip_version(version: str) -> None:
    doc = RESULT.to_dict(version)
    assert doc["cniVersion"] == version
    assert doc["ips"][0]["version"] == "4"


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0"])
def test_results_round_trip(version: str) -> None:
    assert Result.from_dict(json.loads(json.dumps(RESULT.to_dict(version)))) == RESULT


@pytest.mark.parametrize("doc", ["x", {"ips": [{"gateway": "1.1.1.1"}]},
                                 {"ips": [{"address": "10.0.0.1"}]}])
def test_malformed_prev_result_is_a_decoding_failure(doc) -> None:
    with pytest.raises(DecodingFailure):
        Result.from_dict(doc)


def test_error_objects() -> None:
    err = CheckFailed("eth0 lacks 10.0.0.5/32", "netns /run/netns/x")
    assert json.loads(err.to_json("0.4.0")) == {
        "cniVersion": "0.4.0", "code": 104, "msg": "eth0 lacks 10.0.0.5/32",
        "details": "netns /run/netns/x"}
    unsupported = UnsupportedField("ipam.assign_ipv6", "true", "IPv4 only")
    assert unsupported.code == 2
    assert unsupported.msg == ('unsupported field in network configuration: '
                               'ipam.assign_ipv6="true": IPv4 only')
    rebuilt = error_for_code(11, "etcd is down", "d")
    assert rebuilt.code == 11 and type(rebuilt).__name__ == "TryAgainLater"
    odd = error_for_code(42, "someone else's code")
    assert isinstance(odd, CniError) and odd.code == 42
