"""Connection settings read exactly as calicoctl reads them."""

import pytest

from datastore.config import ConfigError, load, load_env, load_file, parse_endpoints


def test_env_with_and_without_calico_prefix():
    cfg = load_env({"ETCD_ENDPOINTS": "http://10.0.0.1:2379,http://10.0.0.2:2379"})
    assert cfg.urls == ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
    assert cfg.provenance["endpoints"] == "env ETCD_ENDPOINTS"
    pref = load_env({"CALICO_ETCD_ENDPOINTS": "http://10.0.0.9:2379",
                     "ETCD_ENDPOINTS": "http://10.0.0.1:2379"})
    assert pref.urls == ["http://10.0.0.9:2379"]


def test_defaults_when_nothing_set():
    assert load_env({}).urls == ["http://127.0.0.1:2379"]


def test_file_format(tmp_path):
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
    f = tmp_path / "calicoctl.cfg"
    f.write_text(f"""apiVersion: projectcalico.org/v3
kind: CalicoAPIConfig
metadata:
spec:
  datastoreType: etcdv3
  etcdEndpoints: https://10.0.0.1:2379,https://10.0.0.2:2379
  etcdCACertFile: {tmp_path}/ca.pem
  etcdCertFile: {tmp_path}/cert.pem
  etcdKeyFile: {tmp_path}/key.pem
""")
    cfg = load(str(f), environ={"ETCD_ENDPOINTS": "http://ignored:1"})
    assert cfg.urls == ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]
    assert cfg.tls and cfg.cert_file.endswith("cert.pem")


@pytest.mark.parametrize("text, message", [
    ("apiVersion: v1\nkind: CalicoAPIConfig\n", "unknown APIVersion 'v1'"),
    ("apiVersion: projectcalico.org/v3\nkind: Other\n", "expected kind 'CalicoAPIConfig', got 'Other'"),
    ("apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n  datastoreType: kubernetes\n",
     "unsupported datastoreType 'kubernetes'"),
    ("apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n  etcdCertFile: /nope\n",
     "must be given together"),
    ("{{{", "syntax error in"),
])
def test_bad_files(tmp_path, text, message):
    f = tmp_path / "c.cfg"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_file(str(f))
    assert message in str(err.value)


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        load(str(tmp_path / "absent.cfg"))
    assert str(err.value) == f"Error reading config file: {tmp_path / 'absent.cfg'}"


@pytest.mark.parametrize("text", ["ftp://x:1", "http://:2379", "http://h:notaport", ",,"])
def test_bad_endpoints(text):
    with pytest.raises(ConfigError):
        parse_endpoints(text)
