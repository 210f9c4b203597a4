"""Selector scoping against the vectors of Calico's update processor tests.

The expected strings are the ones projectcalico/calico asserts in
`libcalico-go/lib/backend/syncersv1/updateprocessors/{rules,networkpolicyprocessor,
globalnetworkpolicyprocessor}_test.go` (where a vector used a selector tortie's parser
refuses, as Calico's own parser does, such as `mylabel = value1`, the valid
`mylabel == 'value1'` stands in). They are compared as parsed selectors: equality is by
Calico's canonical string, so the tree shapes (which && group sits inside which) must be
the ones Felix parses from the strings Calico concatenates, and so the ipset names.
"""

from __future__ import annotations

import pytest

from datastore.selector import parse
from policy.scope import entity_selector, policy_selector, prefixed

POLICY_VECTORS = [
    # (selector, namespace, serviceAccountSelector, namespaceSelector (GNP), expected)
    ("projectcalico.org/orchestrator == 'k8s'", "default", "", "",
     "(projectcalico.org/orchestrator == 'k8s') && projectcalico.org/namespace == 'default'"),
    ("", "default", "", "", "projectcalico.org/namespace == 'default'"),
    ("mylabel == 'selectme'", "namespace2", "", "",
     "(mylabel == 'selectme') && projectcalico.org/namespace == 'namespace2'"),
    ("mylabel == 'selectme'", "namespace2", "role == 'development'", "",
     "((mylabel == 'selectme') && projectcalico.org/namespace == 'namespace2')"
     " && pcsa.role == \"development\""),
    # A NetworkPolicy's all() service account selector stays all() (no replacement there).
    ("mylabel == 'selectme'", "namespace2", "all()", "",
     "((mylabel == 'selectme') && projectcalico.org/namespace == 'namespace2') && all()"),
    # GlobalNetworkPolicy.
    ("mylabel == 'selectme'", None, "", "", "mylabel == 'selectme'"),
    ("", None, "", "", "all()"),
    ("mylabel == 'selectme'", None, "role == 'development'", "",
     "(mylabel == 'selectme') && pcsa.role == \"development\""),
    ("mylabel == 'selectme'", None, "all()", "",
     "(mylabel == 'selectme') && has(projectcalico.org/serviceaccount)"),
    ("mylabel == 'selectme'", None, "", "name == 'testing'",
     "(mylabel == 'selectme') && pcns.name == \"testing\""),
    ("mylabel == 'selectme'", None, "", "all()",
     "(mylabel == 'selectme') && has(projectcalico.org/namespace)"),
    ("mylabel == 'selectme'", None, "role == 'development'", "name == 'testing'",
     "((mylabel == 'selectme') && pcns.name == \"testing\") && pcsa.role == \"development\""),
    ("", None, "role == 'development'", "", "pcsa.role == \"development\""),
    ("", None, "", "name == 'testing'", "pcns.name == \"testing\""),
    ("", None, "role == 'development'", "name == 'testing'",
     "(pcns.name == \"testing\") && pcsa.role == \"development\""),
    # tortie's: Calico prints the prefixed `!(!x)` as `!!x`, which Felix reads as x.
    ("has(a)", "ns", "!(!role == 'dev')", "",
     "((has(a)) && projectcalico.org/namespace == 'ns') && !!pcsa.role == \"dev\""),
]


@pytest.mark.parametrize(("selector", "namespace", "sa", "ns_selector", "expected"),
                         POLICY_VECTORS)
def test_policy_selector(selector: str, namespace: str | None, sa: str, ns_selector: str,
                         expected: str) -> None:
    scoped = policy_selector(selector, namespace, service_account_selector=sa,
                             namespace_selector=ns_selector)
    assert scoped == parse(expected)
    assert parse(str(scoped)) == scoped  # canonical: the ipset key is stable


ENTITY_VECTORS = [
    # (policy namespace, fields, expected scoped selector or None)
    ("namespace2", {"selector": "mylabel == 'value1'", "not_selector": "has(label1)"},
     "(projectcalico.org/namespace == 'namespace2') && (mylabel == 'value1')"),
    # notSelector alone still limits the rule to the namespace.
    ("namespace2", {"not_selector": "has(label2)"}, "projectcalico.org/namespace == 'namespace2'"),
    ("namespace2", {"namespace_selector": "namespacelabel1 == 'value1'",
                    "not_selector": "has(label2)"},
     "pcns.namespacelabel1 == \"value1\""),
    # A GlobalNetworkPolicy rule with a namespace selector: the same.
    (None, {"namespace_selector": "namespacelabel1 == 'value1'"},
     "pcns.namespacelabel1 == \"value1\""),
    (None, {"selector": "has(foo)"}, "has(foo)"),
    ("namespace", {"selector": "projectcalico.org/orchestrator == 'k8s'",
                   "namespace_selector": "key == 'value'"},
     "(pcns.key == \"value\") && (projectcalico.org/orchestrator == 'k8s')"),
    ("namespace", {"namespace_selector": "!has(key) || (has(key) && !key in {'value'})"},
     "(!has(pcns.key) || (has(pcns.key) && !pcns.key in {\"value\"}))"),
    ("namespace", {"service_account_names": ("sa1", "sa2"),
                   "service_account_selector": "key == 'value1'"},
     "(projectcalico.org/namespace == 'namespace') && ((pcsa.key == \"value1\") && "
     "(projectcalico.org/serviceaccount in {\"sa1\", \"sa2\"}))"),
    ("namespace", {"namespace_selector": "nskey == 'nsvalue'", "service_account_names": ("sa3",),
                   "service_account_selector": "key == 'value2'"},
     "(pcns.nskey == \"nsvalue\") && ((pcsa.key == \"value2\") && "
     "(projectcalico.org/serviceaccount in {\"sa3\"}))"),
    (None, {"service_account_names": ("sa1", "sa2"), "service_account_selector": "key == 'value1'"},
     "(pcsa.key == \"value1\") && (projectcalico.org/serviceaccount in {\"sa1\", \"sa2\"})"),
    ("namespace", {"namespace_selector": "nskey == 'nsvalue'", "service_account_names": ("sa3",),
                   "service_account_selector": "key == 'value2'", "selector": "has(label1)"},
     "(pcns.nskey == \"nsvalue\") && (((pcsa.key == \"value2\") && "
     "(projectcalico.org/serviceaccount in {\"sa3\"})) && (has(label1)))"),
    ("ns", {"namespace_selector": "namespace == 'red'", "selector": "has(label1)"},
     "(pcns.namespace == \"red\") && (has(label1))"),
    ("ns", {"namespace_selector": "all()", "selector": "has(label2)"},
     "(has(projectcalico.org/namespace)) && (has(label2))"),
    ("ns", {"namespace_selector": "global()", "selector": "has(label3)"},
     "(!has(projectcalico.org/namespace)) && (has(label3))"),
    # tortie's: the text replacement turns `!global()` into `!!has(...)`, read as has().
    ("ns", {"namespace_selector": "!global()", "selector": "has(label3)"},
     "(!!has(projectcalico.org/namespace)) && (has(label3))"),
    # The k8s conversion's `namespaceSelector: {}` peer.
    ("default", {"namespace_selector": "all()",
                 "selector": "projectcalico.org/orchestrator == 'k8s'"},
     "(has(projectcalico.org/namespace)) && (projectcalico.org/orchestrator == 'k8s')"),
    # Nothing selector-like: no selector at all (ports-only, nets-only, empty SA match).
    ("namespace", {}, None),
    (None, {}, None),
]


@pytest.mark.parametrize(("namespace", "fields", "expected"), ENTITY_VECTORS)
def test_entity_selector(namespace: str | None, fields: dict[str, object],
                         expected: str | None) -> None:
    scoped = entity_selector(namespace, **fields)  # type: ignore[arg-type]
    if expected is None:
        assert scoped is None
    else:
        assert scoped == parse(expected)


def test_prefix_reaches_every_key_and_leaves_functions() -> None:
    sel = parse("a == 'x' && (has(b) || c in {'1'}) && !d starts with 'p' && all()")
    assert prefixed(sel, "pcns.") == parse(
        "pcns.a == 'x' && (has(pcns.b) || pcns.c in {'1'}) && !pcns.d starts with 'p' && all()")


def test_prefix_may_outgrow_the_name_limit() -> None:
    # Calico prefixes without re-validating: a key may outgrow the 512-character limit.
    key = "k" * 510
    sel = prefixed(parse(f"{key} == 'v'"), "pcns.")
    assert sel.evaluate({f"pcns.{key}": "v"})
    assert not sel.evaluate({key: "v"})
