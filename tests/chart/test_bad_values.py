"""Bad values are refused by the chart's schema (or its `required` checks) with a message
that names the value, by every Helm fetched, and nothing is rendered.

Each file in bad_values/ starts with `# names: <value>`: the dotted path of the value the
message must name (Helm 3 prints `a.b.0.c`, Helm 4 `/a/b/0/c`), or the misspelt key."""

from __future__ import annotations

from pathlib import Path

import pytest

from .chart import CHART, NAMESPACE, RELEASE, helm

BAD = sorted((Path(__file__).parent / "bad_values").glob("*.yaml"))


def _named(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# names: "), f"{path.name} does not say which value is bad"
    return first.removeprefix("# names: ").strip()


def test_there_are_at_least_ten_bad_values_files() -> None:
    assert len(BAD) >= 10


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_values_fail_naming_the_value(path: Path, helms: dict[str, Path]) -> None:
    value = _named(path)
    for version, binary in helms.items():
        done = helm(binary, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                    "--values", str(path))
        assert done.returncode != 0, f"Helm {version} accepted {path.name}"
        assert done.stdout == "", f"Helm {version} rendered something for {path.name}"
        forms = (value, "/" + value.replace(".", "/"), f"'{value}'")
        assert any(f in done.stderr for f in forms), \
            f"Helm {version} on {path.name} does not name {value}: {done.stderr}"
