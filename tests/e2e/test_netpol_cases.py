"""The conformance cases (tests/netpol_cases.py) in the lab, with real traffic.

Nine pods in namespaces x, y, z on three nodes over two subnets, each serving TCP
and UDP on 80 and 81 (tests/e2e/netpol.py). Each case applies its manifests with
`ctl apply -f`, changes pod labels with `ctl label`, and after every step probes
every ordered pair on every port and protocol the case checks (SCTP, with the raw
INIT probe, only in the SCTP cases) until the observation matches the expectation (or the convergence time is up, and then fails with upstream's truth
tables). Then `ctl explain`'s model is asked about the same pairs from inside the
lab, against the lab's etcd: its verdicts must equal what the probes saw. Each case
leaves the cluster as it found it (its manifests deleted, namespaces and labels
restored).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import yaml

from tests.netpol_cases import CASES, Case, Context, Expectation, namespaces

from .netpol import NetpolLab, netpol_lab
from .pods import ctl

pytestmark = [pytest.mark.slow, pytest.mark.root]

@pytest.fixture(scope="module")
def world(lab_env: None) -> Iterator[NetpolLab]:
    with netpol_lab() as built:
        apply(built, namespaces())
        yield built


def apply(world: NetpolLab, documents: list[dict], verb: str = "apply") -> None:
    if documents:
        ctl(world.lab, [verb, "-f", "-"], stdin=yaml.safe_dump_all(documents))


def explained(world: NetpolLab, combos: Sequence[tuple[int, str]]) -> dict[str, bool]:
    script = str(Path(__file__).with_name("explain_pairs.py"))
    res = world.lab.exec("node1", [sys.executable, script],
                         input=json.dumps([world.ips, list(combos)]),
                         env={"ETCD_ENDPOINTS": ",".join(world.lab.etcd_endpoints)})
    return json.loads(res.stdout)


def check_step(world: NetpolLab, expect: Expectation, combos: Sequence[tuple[int, str]],
               where: str) -> None:
    """Probes agree with the expectation on every combination, and so does ctl explain."""
    expected = {(port, proto): expect(port, proto) for port, proto in combos}
    for (port, proto), reach in expected.items():
        world.check(reach, ports=[port], protocols=[proto])
    verdicts = explained(world, combos)
    disagree = [f"{proto}/{port} {a} -> {b}"
                for (port, proto), reach in expected.items()
                for a in world.model.keys for b in world.model.keys
                if a != b and verdicts[f"{port}/{proto} {a} {b}"] != reach[(a, b)]]
    assert not disagree, (f"{where}: ctl explain disagrees with the probes on "
                          + ", ".join(disagree[:20]))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(world: NetpolLab, case: Case) -> None:
    context = Context(world.ips, "10.247.0.0/16")
    applied: list[dict] = []
    relabelled: set[str] = set()
    try:
        for number, step in enumerate(case.steps, start=1):
            documents = step.apply(context)
            apply(world, documents)
            applied += documents
            apply(world, step.delete(context), verb="delete")
            for key, labels in step.relabel.items():
                world.label_pod(key, dict(labels))
                relabelled.add(key)
            check_step(world, step.expect, case.combos, f"{case.name} step {number}")
    finally:
        deletable = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
                     for d in applied if d["kind"] != "Namespace"
                     and not d["metadata"]["name"].startswith("kns.")}
        for document in reversed(list(deletable.values())):
            ctl(world.lab, ["delete", "--skip-not-exists", "-f", "-"],
                stdin=yaml.safe_dump(document))
        apply(world, namespaces())
        for key in relabelled:
            world.label_pod(key, {"pod": key.split("/")[1]})
