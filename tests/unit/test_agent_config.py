"""The agent's settings registry: parsing, defaults, provenance, refusals."""

from __future__ import annotations

import logging

import pytest

from agent.config import (
    SETTINGS,
    AgentConfig,
    describe_settings,
    load,
    parse_duration,
    setting,
)
from agent.errors import ConfigError


def test_defaults_with_empty_environment() -> None:
    cfg = load({})
    assert cfg == AgentConfig()
    assert cfg.ip == "" and cfg.ip6 == ""
    assert cfg.ip_autodetection_method == "first-found"
    assert cfg.autodetect_poll_interval == 60.0
    assert cfg.networking_backend == "bird" and cfg.bgp_enabled and not cfg.policy_only
    assert cfg.health_host == "localhost" and cfg.health_port == 9099
    assert cfg.route_refresh_interval == 90.0
    assert cfg.iptables_refresh_interval == 180.0
    assert cfg.ipsets_refresh_interval == 90.0
    assert (cfg.vxlan_vni, cfg.vxlan_port, cfg.vxlan_mtu, cfg.ipip_mtu) == (4096, 4789, 0, 0)
    assert cfg.log_severity_screen == "Info" and cfg.log_level == logging.INFO
    assert cfg.nodename_file == "/var/lib/calico/nodename"
    assert all(cfg.source_of(s.name) == "default" for s in SETTINGS)


def test_values_from_environment_with_provenance() -> None:
    cfg = load({
        "NODENAME": " node-1 ", "IP": "10.0.0.5/24", "IP6": "autodetect",
        "IP_AUTODETECTION_METHOD": "can-reach=10.0.0.1", "AUTODETECT_POLL_INTERVAL": "1m30s",
        "AS": "64513", "CALICO_NETWORKING_BACKEND": "VXLAN", "DISABLE_NODE_IP_CHECK": "True",
        "FELIX_HEALTHENABLED": "yes", "FELIX_HEALTHPORT": "9199",
        "FELIX_ROUTEREFRESHINTERVAL": "30", "FELIX_IPTABLESREFRESHINTERVAL": "0",
        "FELIX_VXLANVNI": "4097", "FELIX_VXLANMTU": "1400", "FELIX_LOGSEVERITYSCREEN": "debug",
        "CALICO_IPV4POOL_CIDR": "10.65.0.0/16",  # not ours: ignored here
    })
    assert cfg.nodename == "node-1"
    assert cfg.ip == "10.0.0.5/24" and cfg.ip6 == "autodetect"
    assert cfg.ip_autodetection_method == "can-reach=10.0.0.1"
    assert cfg.autodetect_poll_interval == 90.0
    assert cfg.as_number == 64513
    assert cfg.networking_backend == "vxlan" and not cfg.bgp_enabled
    assert cfg.disable_node_ip_check is True and cfg.health_enabled is True
    assert cfg.health_port == 9199
    assert cfg.route_refresh_interval == 30.0 and cfg.iptables_refresh_interval == 0.0
    assert cfg.vxlan_vni == 4097 and cfg.vxlan_mtu == 1400
    assert cfg.log_severity_screen == "Debug" and cfg.log_level == logging.DEBUG
    assert cfg.source_of("AS") == "env" and cfg.source_of("FELIX_VXLANPORT") == "default"


def test_empty_value_counts_as_unset() -> None:
    cfg = load({"AS": "", "AUTODETECT_POLL_INTERVAL": "  ", "IP": ""})
    assert cfg.as_number is None and cfg.autodetect_poll_interval == 60.0
    assert cfg.source_of("AS") == "default"


def test_dotted_as_number() -> None:
    assert load({"AS": "1.10"}).as_number == 65546


@pytest.mark.parametrize("text,seconds", [
    ("90s", 90.0), ("1m30s", 90.0), ("250ms", 0.25), ("1h", 3600.0), ("1.5s", 1.5),
    ("90", 90.0), ("0.5", 0.5), ("2h45m", 9900.0), ("1us", 1e-6), ("-5s", -5.0),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("env,name,value", [
    ({"AUTODETECT_POLL_INTERVAL": "abc"}, "AUTODETECT_POLL_INTERVAL", "abc"),
    ({"AUTODETECT_POLL_INTERVAL": "0s"}, "AUTODETECT_POLL_INTERVAL", "0s"),
    ({"AUTODETECT_POLL_INTERVAL": "10x"}, "AUTODETECT_POLL_INTERVAL", "10x"),
    ({"AUTODETECT_POLL_INTERVAL": "s"}, "AUTODETECT_POLL_INTERVAL", "s"),
    ({"FELIX_ROUTEREFRESHINTERVAL": "-1"}, "FELIX_ROUTEREFRESHINTERVAL", "-1"),
    ({"FELIX_IPSETSREFRESHINTERVAL": "nan"}, "FELIX_IPSETSREFRESHINTERVAL", "nan"),
    ({"AS": "banana"}, "AS", "banana"),
    ({"AS": "4294967296"}, "AS", "4294967296"),
    ({"CALICO_NETWORKING_BACKEND": "gobgp"}, "CALICO_NETWORKING_BACKEND", "gobgp"),
    ({"DISABLE_NODE_IP_CHECK": "maybe"}, "DISABLE_NODE_IP_CHECK", "maybe"),
    ({"FELIX_HEALTHENABLED": "on"}, "FELIX_HEALTHENABLED", "on"),
    ({"FELIX_HEALTHPORT": "0"}, "FELIX_HEALTHPORT", "0"),
    ({"FELIX_HEALTHPORT": "99999"}, "FELIX_HEALTHPORT", "99999"),
    ({"FELIX_VXLANVNI": "16777216"}, "FELIX_VXLANVNI", "16777216"),
    ({"FELIX_VXLANPORT": "x"}, "FELIX_VXLANPORT", "x"),
    ({"FELIX_VXLANMTU": "50"}, "FELIX_VXLANMTU", "50"),
    ({"FELIX_IPINIPMTU": "-1"}, "FELIX_IPINIPMTU", "-1"),
    ({"FELIX_MTUIFACEPATTERN": "eth[0"}, "FELIX_MTUIFACEPATTERN", "eth[0"),
    ({"FELIX_LOGSEVERITYSCREEN": "verbose"}, "FELIX_LOGSEVERITYSCREEN", "verbose"),
    ({"CALICO_ROUTER_ID": "10.0.0.256"}, "CALICO_ROUTER_ID", "10.0.0.256"),
    ({"CALICO_ROUTER_ID": "0.0.0.0"}, "CALICO_ROUTER_ID", "0.0.0.0"),
    ({"CALICO_ROUTER_ID": "Hash"}, "CALICO_ROUTER_ID", "Hash"),
])
def test_bad_values_name_variable_and_value(env: dict[str, str], name: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(env)
    assert err.value.name == name and err.value.value == value
    assert name in str(err.value) and repr(value) in str(err.value)


def test_bad_poll_interval_message() -> None:
    with pytest.raises(ConfigError) as err:
        load({"AUTODETECT_POLL_INTERVAL": "abc"})
    assert str(err.value) == (
        "invalid value for AUTODETECT_POLL_INTERVAL: 'abc': "
        "not a duration (use e.g. 60s, 1m30s, or plain seconds)")


@pytest.mark.parametrize("env,message", [
    ({"IP": "10.0.0.300"}, "Environment does not contain a valid IPv4 address: IP=10.0.0.300"),
    ({"IP": "fd00::1"}, "Environment does not contain a valid IPv4 address: IP=fd00::1"),
    ({"IP": "auto"}, "Environment does not contain a valid IPv4 address: IP=auto"),
    ({"IP6": "10.0.0.1"}, "Environment does not contain a valid IPv6 address: IP6=10.0.0.1"),
])
def test_bad_ip_uses_calicos_message(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(env)
    assert str(err.value) == message


@pytest.mark.parametrize("value", ["autodetect", "none", "10.0.0.5", "10.0.0.5/24"])
def test_good_ip_values(value: str) -> None:
    assert load({"IP": value}).ip == value


def test_every_effective_value_is_logged_with_its_source(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="agent.config"):
        load({"AS": "64600", "FELIX_VXLANMTU": "1450"})
    lines = [r.getMessage() for r in caplog.records]
    assert "config AS=64600 (env)" in lines
    assert "config FELIX_VXLANMTU=1450 (env)" in lines
    assert "config AUTODETECT_POLL_INTERVAL=60s (default)" in lines
    assert "config NODENAME=(unset) (default)" in lines
    assert len(lines) == len(SETTINGS)


@pytest.mark.parametrize("text,value", [("", None), ("hash", "hash"),
                                        ("10.1.2.3", "10.1.2.3")])
def test_router_id(text: str, value: str | None) -> None:
    assert load({"CALICO_ROUTER_ID": text}).router_id == value


def test_describe_settings_documents_every_setting() -> None:
    rows = describe_settings()
    names = [r[0] for r in rows]
    assert len(names) == len(set(names)) == len(SETTINGS)
    for required in ("NODENAME", "IP", "IP6", "IP_AUTODETECTION_METHOD",
                     "IP6_AUTODETECTION_METHOD", "AUTODETECT_POLL_INTERVAL", "AS",
                     "CALICO_NETWORKING_BACKEND", "DISABLE_NODE_IP_CHECK", "FELIX_HEALTHENABLED",
                     "FELIX_HEALTHHOST", "FELIX_HEALTHPORT", "FELIX_ROUTEREFRESHINTERVAL",
                     "FELIX_IPTABLESREFRESHINTERVAL", "FELIX_IPSETSREFRESHINTERVAL",
                     "FELIX_VXLANVNI", "FELIX_VXLANPORT", "FELIX_VXLANMTU", "FELIX_IPINIPMTU",
                     "FELIX_MTUIFACEPATTERN", "FELIX_LOGSEVERITYSCREEN"):
        assert required in names
    assert dict((n, d) for n, d, _ in rows)["AUTODETECT_POLL_INTERVAL"] == "60s"
    assert all(desc for _, _, desc in rows)


def test_documented_defaults_parse_to_the_defaults() -> None:
    for s in SETTINGS:
        if s.default is None or s.default == "":
            continue
        assert s.parse(s.default_text) == s.default, s.name


def test_setting_lookup() -> None:
    assert setting("FELIX_VXLANPORT").default == 4789
    with pytest.raises(KeyError):
        setting("NOPE")


@pytest.mark.parametrize("env,message", [
    ({"IP_AUTODETECTION_METHOD": "bogus"}, "Invalid IP autodetection method: bogus"),
    ({"IP6_AUTODETECTION_METHOD": "cidr=fd00::/300"},
     'Invalid CIDR "fd00::/300" for IP autodetection method: cidr=fd00::/300'),
    ({"IP_AUTODETECTION_METHOD": "kubernetes-internal-ip"},
     "Cannot use method 'kubernetes-internal-ip' when not running on a Kubernetes cluster"),
])
def test_unusable_detection_method_is_refused_at_load(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(env)
    assert str(err.value) == message


def test_detection_methods_are_kept_as_written() -> None:
    cfg = load({"IP_AUTODETECTION_METHOD": "interface=eth0, ens.*",
                "IP6_AUTODETECTION_METHOD": "can-reach=2001:db8::1"})
    assert cfg.ip_autodetection_method == "interface=eth0, ens.*"
    assert cfg.ip6_autodetection_method == "can-reach=2001:db8::1"


def test_pod_mtu_is_the_smallest_tunnel_mtu_else_the_host_mtu() -> None:
    from agent.main import pod_mtu
    from agent.types import DesiredDataplane, IPIPDevice, VXLANDevice

    vxlan = VXLANDevice(name="vxlan.calico", vni=4096, port=4789, local_ip="10.0.0.1",
                        parent="eth0", mac="66:00:00:00:00:01", address="10.244.0.0", mtu=1450)
    ipip = IPIPDevice(name="tunl0", address=None, mtu=1480)
    assert pod_mtu(DesiredDataplane(), 1500) == 1500
    assert pod_mtu(DesiredDataplane(ipip=ipip), 1500) == 1480
    assert pod_mtu(DesiredDataplane(vxlan=vxlan, ipip=ipip), 1500) == 1450
