"""The chart's values are documented and agree with the code: every value has a `# --`
description, docs/install.md's table is the one scripts/values_table.py makes now, the
chart's appVersion is the project's version, and the schema's Calico specs have exactly
the fields of tortie's resource models. Needs no Helm."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import tomllib
from typing import Any

import pytest
import yaml

from .chart import CHART, ROOT


def _values_table() -> Any:
    if "values_table" not in sys.modules:
        spec = importlib.util.spec_from_file_location("values_table",
                                                      ROOT / "scripts" / "values_table.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["values_table"] = module
        spec.loader.exec_module(module)
    return sys.modules["values_table"]


def test_every_value_is_documented() -> None:
    assert _values_table().undocumented((CHART / "values.yaml").read_text()) == []


def test_the_install_doc_has_the_current_values_table() -> None:
    vt = _values_table()
    doc = vt.DOC.read_text()
    assert vt.with_table(doc, vt.VALUES.read_text()) == doc, \
        "docs/install.md is stale: run .venv/bin/python scripts/values_table.py"


def test_the_table_reads_helm_docs_comments() -> None:
    text = ("# -- top\na: 1\nb:\n  # -- inner,\n  # continued\n  c: [x]\n  d: 2\n"
            "# not a description\ne: {}\n")
    vt = _values_table()
    assert vt.documented(text) == [("a", "top"), ("b.c", "inner, continued")]
    assert vt.undocumented(text) == ["b.d", "e"]
    assert vt.table(text).splitlines()[2:] == ['| `a` | `1` | top |',
                                              '| `b.c` | `["x"]` | inner, continued |']


def test_app_version_is_the_project_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    with (ROOT / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["version"]


@pytest.mark.parametrize("value, model", [
    ("ipPools", "datastore.resources.ippool:IPPoolSpec"),
    ("bgpPeers", "datastore.resources.bgp:BGPPeerSpec"),
    ("bgpConfiguration", "datastore.resources.bgp:BGPConfigurationSpec"),
])
def test_schema_specs_have_the_fields_of_tortie_models(value: str, model: str) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    node = schema["properties"][value]
    spec = node["items"]["properties"]["spec"] if node.get("type") == "array" else node
    module, name = model.split(":")
    fields = set(vars(importlib.import_module(module))[name].model_fields)
    assert spec["additionalProperties"] is False
    assert set(spec["properties"]) == fields
