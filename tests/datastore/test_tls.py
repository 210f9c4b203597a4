"""etcd with --client-cert-auth: right certs work, missing certs give one clear line."""

from __future__ import annotations

import pytest

from lab.etcd import make_tls_files
from tests.support import need, start_etcd

from .ctlrun import run_script

POOL = b"""apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: tls-pool}
spec: {cidr: 10.60.0.0/16}
"""


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory):
    need("etcd", "openssl")
    base = tmp_path_factory.mktemp("tls")
    tls = make_tls_files(base / "pki")
    member = start_etcd(base, tls=tls)
    yield member, tls
    member.stop()


def test_client_certificates_via_config_file(tls_etcd, tmp_path):
    member, tls = tls_etcd
    cfg = tmp_path / "calicoctl.cfg"
    cfg.write_text(f"""apiVersion: projectcalico.org/v3
kind: CalicoAPIConfig
metadata:
spec:
  etcdEndpoints: {member.client_url}
  etcdCACertFile: {tls.ca}
  etcdCertFile: {tls.client_cert}
  etcdKeyFile: {tls.client_key}
""")
    res = run_script(["-c", str(cfg), "apply", "-f", "-"], "http://ignored:1", stdin=POOL)
    assert (res.rc, res.out) == (0, "Successfully applied 1 'IPPool' resource(s)\n"), res.err
    got = run_script(["-c", str(cfg), "get", "ippool"], "http://ignored:1")
    assert "tls-pool" in got.out


def test_client_certificates_via_environment(tls_etcd):
    member, tls = tls_etcd
    env = {"CALICO_ETCD_CA_CERT_FILE": tls.ca, "ETCD_CERT_FILE": tls.client_cert,
           "ETCD_KEY_FILE": tls.client_key}
    res = run_script(["get", "ippool"], member.client_url, extra_env=env)
    assert res.rc == 0 and res.out.startswith("NAME"), res.err


def test_without_client_certificate_one_clear_line(tls_etcd):
    member, tls = tls_etcd
    res = run_script(["get", "ippool"], member.client_url, extra_env={"ETCD_CA_CERT_FILE": tls.ca})
    assert res.rc == 1
    assert res.err.count("\n") == 1, res.err
    assert f"etcd connection failed: could not reach {member.client_url}" in res.err
    assert "no client certificate configured" in res.err
