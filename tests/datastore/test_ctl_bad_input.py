"""Bad input: one clear error naming the field and value, exit 1, etcd byte-identical."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .ctlrun import dump, refused, run_inprocess

HEAD = "apiVersion: projectcalico.org/v3\n"


def pool(spec: str, name: str = "p") -> str:
    return f"{HEAD}kind: IPPool\nmetadata:\n  name: {name}\nspec:\n{spec}"


def peer(spec: str) -> str:
    return f"{HEAD}kind: BGPPeer\nmetadata:\n  name: tor\nspec:\n{spec}"


EXISTING = pool("  cidr: 10.50.0.0/16\n  blockSize: 26\n", name="existing")

BIG = ("# padding\n" * (10 * 1024 * 1024 // 10)).encode()

CASES: list[tuple[str, bytes | str, str]] = [
    ("unmasked cidr", pool("  cidr: 10.0.0.1/16\n"), "IPPool.Spec.CIDR = '10.0.0.1/16' (IPPool CIDR is not strictly masked)"),
    ("cidr /33", pool("  cidr: 10.0.0.0/33\n"), "IPPool.Spec.CIDR = '10.0.0.0/33'"),
    ("cidr garbage", pool("  cidr: not-a-cidr\n"), "IPPool.Spec.CIDR = 'not-a-cidr'"),
    ("cidr without prefix", pool("  cidr: 10.0.0.0\n"), "IPPool.Spec.CIDR = '10.0.0.0'"),
    ("unknown spec field", pool("  cidr: 10.0.0.0/16\n  ipip: Always\n"), "not recognized or is in the wrong location: spec.ipip"),
    ("unknown top field", pool("  cidr: 10.0.0.0/16\n") + "specs: {}\n", "not recognized or is in the wrong location: specs"),
    ("unknown metadata field", f"{HEAD}kind: IPPool\nmetadata:\n  nam: p\nspec:\n  cidr: 10.0.0.0/16\n", "wrong location: metadata.nam"),
    ("blockSize string", pool("  cidr: 10.0.0.0/16\n  blockSize: '26'\n"), "IPPool.Spec.BlockSize = '26'"),
    ("natOutgoing string", pool("  cidr: 10.0.0.0/16\n  natOutgoing: 'true'\n"), "IPPool.Spec.NatOutgoing = 'true'"),
    ("spec is a list", f"{HEAD}kind: IPPool\nmetadata:\n  name: p\nspec: [1, 2]\n", "IPPool.Spec"),
    ("overlaps existing", pool("  cidr: 10.50.128.0/17\n"), "IPPool(p) CIDR overlaps with IPPool(existing) CIDR 10.50.0.0/16"),
    ("changed cidr", pool("  cidr: 10.51.0.0/16\n", name="existing"), "IPPool.Spec.CIDR = '10.51.0.0/16' (IPPool CIDR cannot be modified)"),
    ("changed blockSize", pool("  cidr: 10.50.0.0/16\n  blockSize: 28\n", name="existing"), "IPPool.Spec.BlockSize = '28' (IPPool BlockSize cannot be modified)"),
    ("blockSize 33", pool("  cidr: 10.0.0.0/16\n  blockSize: 33\n"), "IPPool.Spec.BlockSize = '33' (blockSize must be between 20 and 32"),
    ("blockSize 16", pool("  cidr: 10.0.0.0/16\n  blockSize: 16\n"), "IPPool.Spec.BlockSize = '16'"),
    ("pool smaller than block", pool("  cidr: 10.0.0.0/28\n"), "IPPool.Spec.CIDR = '10.0.0.0/28' (IP pool size is too small"),
    ("link local", pool("  cidr: 169.254.0.0/16\n"), "IPPool.Spec.CIDR = '169.254.0.0/16' (IPPool CIDR overlaps with IPv4 link local range"),
    ("ipip and vxlan", pool("  cidr: 10.0.0.0/16\n  ipipMode: Always\n  vxlanMode: CrossSubnet\n"), "IPPool.Spec.IPIPMode = 'Always' (ipipMode and vxlanMode cannot both be enabled)"),
    ("ipip on v6", pool("  cidr: fd00:1::/64\n  ipipMode: Always\n"), "IPIP is not supported on IPv6 pools"),
    ("bad mode", pool("  cidr: 10.0.0.0/16\n  vxlanMode: always\n"), "IPPool.Spec.VXLANMode = 'always'"),
    ("asn too big", peer("  peerIP: 10.0.0.1\n  asNumber: 4294967296\n"), "BGPPeer.Spec.ASNumber = '4294967296' (AS number out of range"),
    ("asn negative", peer("  peerIP: 10.0.0.1\n  asNumber: -1\n"), "BGPPeer.Spec.ASNumber = '-1'"),
    ("asdot out of range", peer("  peerIP: 10.0.0.1\n  asNumber: '1.70000'\n"), "BGPPeer.Spec.ASNumber = '1.70000'"),
    ("asn word", peer("  peerIP: 10.0.0.1\n  asNumber: sixty\n"), "BGPPeer.Spec.ASNumber = 'sixty'"),
    ("asn unquoted dot", peer("  peerIP: 10.0.0.1\n  asNumber: 1.10\n"), "BGPPeer.Spec.ASNumber = '1.1'"),
    ("peer port 0", peer("  peerIP: '10.0.0.1:0'\n  asNumber: 1\n"), "BGPPeer.Spec.PeerIP = '10.0.0.1:0'"),
    ("peer ip bad", peer("  peerIP: 300.1.1.1\n  asNumber: 1\n"), "BGPPeer.Spec.PeerIP = '300.1.1.1'"),
    ("bgpconfig asn", f"{HEAD}kind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  asNumber: abc\n", "BGPConfiguration.Spec.ASNumber = 'abc'"),
    ("node asn", f"{HEAD}kind: Node\nmetadata:\n  name: n1\nspec:\n  bgp:\n    asNumber: 99999999999\n", "Node.Spec.BGP.ASNumber = '99999999999'"),
    ("selector unbalanced", pool("  cidr: 10.0.0.0/16\n  nodeSelector: has(a\n"), "IPPool.Spec.NodeSelector = 'has(a'"),
    ("selector unquoted", pool("  cidr: 10.0.0.0/16\n  nodeSelector: a == b\n"), "IPPool.Spec.NodeSelector = 'a == b'"),
    ("peer selector", peer("  peerSelector: '&&'\n"), "BGPPeer.Spec.PeerSelector = '&&'"),
    ("duplicate names", pool("  cidr: 10.1.0.0/16\n") + "---\n" + pool("  cidr: 10.2.0.0/16\n"), "duplicate IPPool name 'p'"),
    ("duplicate key", pool("  cidr: 10.1.0.0/16\n  cidr: 10.2.0.0/16\n"), "duplicate field 'cidr'"),
    ("overlap inside file", pool("  cidr: 10.1.0.0/16\n", "a") + "---\n" + pool("  cidr: 10.1.0.0/24\n", "b"), "IPPool(a) CIDR overlaps with IPPool(b) CIDR 10.1.0.0/24"),
    ("second doc bad", pool("  cidr: 10.1.0.0/16\n", "a") + "---\n" + pool("  cidr: 10.2.0.1/16\n", "b"), "document 2: error with field IPPool.Spec.CIDR = '10.2.0.1/16'"),
    ("empty", b"", "No resources specified"),
    ("only comments", b"# nothing here\n---\n", "No resources specified"),
    ("binary", bytes(range(256)) * 4, "not UTF-8 text"),
    ("nul bytes", b"kind: IPPool\x00\x00", "contains NUL bytes"),
    ("ten megabytes", BIG, "larger than the 4 MiB manifest limit"),
    ("yaml syntax", b"apiVersion: [unterminated\n", "invalid YAML"),
    ("unknown kind", f"{HEAD}kind: Banana\nmetadata:\n  name: b\n", "unknown resource type (Banana) and/or version (projectcalico.org/v3)"),
    ("wrong version", "apiVersion: v1\nkind: IPPool\nmetadata:\n  name: b\n", "unknown resource type (IPPool) and/or version (v1)"),
    ("missing name", f"{HEAD}kind: IPPool\nmetadata: {{}}\nspec:\n  cidr: 10.0.0.0/16\n", "resource name may not be empty"),
    ("bad name", pool("  cidr: 10.0.0.0/16\n", name="Bad_Name"), "IPPool.Metadata.Name = 'Bad_Name'"),
    ("json wrong type", b'{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"j"},"spec":{"cidr":"10.0.0.0/16","disabled":1}}', "IPPool.Spec.Disabled = '1'"),
    ("ipamconfig rule", f"{HEAD}kind: IPAMConfiguration\nmetadata:\n  name: default\nspec:\n  maxBlocksPerHost: 4\n", "IPAMConfiguration.Spec.MaxBlocksPerHost = '4' (maxBlocksPerHost requires strictAffinity)"),
    ("yaml alias", "a: &x [1]\nb: *x\n", "YAML aliases (*x) are not supported"),
    ("list without items", f"{HEAD}kind: IPPoolList\n", "IPPoolList has no 'items' list"),
    ("scalar document", b"42\n", "expected a mapping"),
]


@pytest.fixture
def seeded(etcd_endpoint, etcd_client, monkeypatch):
    monkeypatch.setenv("ETCD_ENDPOINTS", etcd_endpoint)
    assert run_inprocess(["create", "-f", "-"], EXISTING.encode()).rc == 0
    return etcd_client


@pytest.mark.parametrize("verb", ["apply", "create"])
@pytest.mark.parametrize("name, manifest, message", CASES, ids=[c[0] for c in CASES])
def test_bad_manifest(seeded, verb, name, manifest, message):
    if verb == "create" and name.startswith("changed"):
        message = "resource already exists: IPPool(existing) with error: <nil>"
    data = manifest.encode() if isinstance(manifest, str) else manifest
    refused(seeded, [verb, "-f", "-"], data, message)


def test_table_is_large_enough():
    assert len(CASES) >= 30


def test_bad_file_path(seeded, tmp_path):
    before = dump(seeded)
    res = run_inprocess(["apply", "-f", str(tmp_path / "absent.yaml")])
    assert res.rc == 1 and "absent.yaml" in res.err and "No such file" in res.err
    assert dump(seeded) == before


yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                         st.text(max_size=20))
yaml_values = st.recursive(yaml_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12)


def _as_manifest(kind: str, spec: object) -> bytes:
    import yaml as _yaml
    return _yaml.safe_dump({"apiVersion": "projectcalico.org/v3", "kind": kind,
                            "metadata": {"name": "fuzz"}, "spec": spec}).encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(str.encode),
    st.builds(_as_manifest, st.sampled_from(["IPPool", "BGPPeer", "Node", "BGPConfiguration",
                                             "IPAMConfiguration"]), yaml_values),
))
def test_arbitrary_input_never_prints_a_traceback(seeded, data):
    res = run_inprocess(["apply", "-f", "-"], data)
    assert res.rc in (0, 1)
    assert "Traceback" not in res.err + res.out
    assert "internal error" not in res.err
    if res.rc == 1:
        assert res.err.strip(), "a failure must say why"

