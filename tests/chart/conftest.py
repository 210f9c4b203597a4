"""Fixtures of the chart tier: the fetched Helm binaries and one rendering per value set."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .chart import VALUE_SETS, Rendered, helm_binaries, render

FETCH_HINT = "run scripts/setup.sh or `.venv/bin/python scripts/fetch_helm.py`"


@pytest.fixture(scope="session")
def helms() -> dict[str, Path]:
    """Helm version -> binary, for each pinned Helm that is fetched; skips if none is."""
    found = {v: p for v, p in helm_binaries().items() if p is not None}
    if not found:
        pytest.skip(f"Helm not fetched into .cache/tools/ ({FETCH_HINT})")
    return found


@pytest.fixture(scope="session")
def values_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("chart-values")
    for name, values in VALUE_SETS.items():
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(values))
    return directory


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def value_set(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def renderings(value_set: str, helms: dict[str, Path],
               values_dir: Path) -> Iterator[dict[str, Rendered]]:
    """Helm version -> the chart rendered with `value_set`, once per module and set."""
    path = values_dir / f"{value_set}.yaml"
    yield {v: render(binary, path, VALUE_SETS[value_set]) for v, binary in helms.items()}


@pytest.fixture(scope="module")
def rendered(renderings: dict[str, Rendered]) -> Rendered:
    """The rendering of the newest Helm fetched (the others must equal it: a test says so)."""
    return renderings[max(renderings, key=lambda v: tuple(int(x) for x in v[1:].split(".")))]
