"""Calico label selectors: parsing, evaluation, canonical form, errors, limits.

The CALICO_* tables are Calico's own test cases, translated case by case from
projectcalico/calico `libcalico-go/lib/selector/parser/parser_test.go` and
`libcalico-go/lib/selector/tokenizer/tokenizer_test.go`; the rest are tortie's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datastore.selector import (
    MAX_DEPTH,
    MAX_LABEL_LENGTH,
    MAX_LENGTH,
    All,
    And,
    Contains,
    EndsWith,
    Eq,
    Global,
    Has,
    In,
    Ne,
    Not,
    NotIn,
    Or,
    Selector,
    SelectorError,
    StartsWith,
    parse,
    tokenize,
    validate,
)
from policy.render import selector_set_id
from policy.scope import prefixed

# --- Calico's parser tests (libcalico-go/lib/selector/parser/parser_test.go) -------------

Labels = dict[str, str]

# selectorTests: (selector, labels it matches, labels it does not match)
CALICO_SELECTOR_TESTS: list[tuple[str, list[Labels], list[Labels]]] = [
    ('a == "b"', [{"a": "b"}, {"a": "b", "c": "d"}], [{}, {"a": "c"}, {"c": "d"}]),
    ('a == "b" && c == "d"', [{"a": "b", "c": "d"}],
     [{}, {"a": "b", "c": "e"}, {"a": "c", "c": "d"}, {"c": "d"}, {"a": "b"}]),
    ('a == "b" || c == "d"', [{"a": "b", "c": "d"}, {"a": "b"}, {"c": "d"}],
     [{}, {"a": "e", "c": "e"}, {"c": "e"}, {"a": "e"}]),
    ("a in {\"'\", '\"', \"c\"}", [{"a": "c"}, {"a": '"'}, {"a": "'"}], [{}, {"a": "e"}]),
    ("a not in {\"'\", '\"', \"c\"}", [{}, {"a": "e"}], [{"a": "c"}, {"a": '"'}, {"a": "'"}]),
    ("a == 'a'", [{"a": "a"}], []),
    ('a == "a"', [{"a": "a"}], []),
    ('a != "b"', [{"a": "a"}], []),
    ('a != "a"', [{}], []),
    ('a contains "a"', [{"a": "a"}, {"a": "bab"}, {"a": "aaa", "b": "c"}],
     [{}, {"a": "b"}, {"b": "aaa"}]),
    ('a starts with "a"', [{"a": "a"}, {"a": "abb"}, {"a": "aaa", "b": "c"}],
     [{}, {"a": "b"}, {"a": "baa"}, {"b": "aaa"}]),
    ('a ends with "a"', [{"a": "a"}, {"a": "bba"}, {"a": "aaa", "b": "c"}],
     [{}, {"a": "b"}, {"a": "aab"}, {"b": "aaa"}]),
    ('a in {"a"}', [{"a": "a"}], []),
    ('!a in {"a"}', [{"a": "b"}], []),
    ('a in {"a", "b"}', [{"a": "a"}], []),
    ('a in {"a", "b"}', [{"a": "b"}], []),
    ('a not in {"d", "e"}', [{"a": "a"}], []),
    ("has(a)", [{"a": "b"}], []),
    ("!has(a)", [{"b": "b"}], []),
    ("", [{}], []),
    (" ", [{}], []),
    ("", [{"a": "b"}], []),
    ("all()", [{}], []),
    (" all()", [{}], []),
    (" all()", [{"a": "b"}], []),
    ("global()", [{}], []),
    (" global()", [{}], []),
    (" global()", [{"a": "b"}], []),
    ("a == 'a'", [], [{"a": "b"}]),
    ("a == 'a'", [], [{}]),
    ('a != "a"', [], [{"a": "a"}]),
    ("a != 'a'", [], [{"a": "a"}]),
    ('a in {"a"}', [], [{"a": "b"}]),
    ('a not in {"a"}', [], [{"a": "a"}]),
    ('a in {"a", "b"}', [], [{"a": "c"}]),
    ("has(b)", [], [{"a": "b"}]),
    ("!!has(b)", [], [{"a": "b"}]),
    ("! has(a)", [], [{"a": "b"}]),
    ("!has(a)", [], [{"a": "b"}]),
    ("!!! has(a)", [], [{"a": "b"}]),
    ("!!!has(a)", [], [{"a": "b"}]),
    ("!! ! has(a)", [], [{"a": "b"}]),
    ("! !!has(a)", [], [{"a": "b"}]),
    # Boolean expressions...
    ("a == 'a1' && b == 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a == 'a1' && b != 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("a != 'a1' && b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("a != 'a1' && b != 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("a != 'a1' && !b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("!a == 'a1' && b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("has(a) && !has(b)", [{"a": "a"}], []),
    ("!has(b) && has(a)", [{"a": "a"}], []),
    ("!(!has(a) || has(b))", [{"a": "a"}], []),
    ("!(has(b) || !has(a))", [{"a": "a"}], []),
    ("a == 'a1' || b == 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a == 'a1' || b != 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a != 'a1' || b == 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a != 'a1' || b != 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("! a == 'a1' || ! b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
]


@pytest.mark.parametrize(("text", "matches", "non_matches"), CALICO_SELECTOR_TESTS)
def test_calico_selector_cases(text: str, matches: list[Labels], non_matches: list[Labels]) -> None:
    selector = parse(text)
    assert validate(text) is None
    canonicalised = parse(str(selector))  # "should match after canonicalising"
    for labels in matches:
        assert selector.evaluate(labels) is True, labels
        assert canonicalised.evaluate(labels) is True, labels
    for labels in non_matches:
        assert selector.evaluate(labels) is False, labels
        assert canonicalised.evaluate(labels) is False, labels
    assert selector_set_id(selector) == selector_set_id(parse(text))


# badSelectors
CALICO_BAD_SELECTORS = [
    "b == b",  # label == label
    "b contains b",  # label contains label
    "b starts with b",  # label starts with label
    "b ends with b",  # label starts with label
    "'b1' == b",  # literal on lhs
    "b",  # bare label
    "a b",  # Garbage
    "!",  # Garbage
    'foo == "bar" &',  # Garbage
    'foo == "bar" |',  # Garbage
    "foo != ||",  # Garbage
    'foo in {"", ||',  # Garbage
    'foo in ""',  # Expect set literal
    '"FOO',  # Unterminated string
    "\"FOO'",  # Unterminated string
    "'FOO",  # Unterminated string
    "(",  # Unterminated paren
    '(a == "foo"',  # Unterminated paren
    ")",  # Unterminated paren
    "()",  # Unterminated paren
    "%",  # Unexpected char
    'a == "b" && %',  # Unexpected char
    'a == "b" || %',  # Unexpected char
    "a ",  # should be followed by operator
    "has(foo) &&",  # should be followed by operator
]


@pytest.mark.parametrize("text", CALICO_BAD_SELECTORS)
def test_calico_bad_selectors(text: str) -> None:
    with pytest.raises(SelectorError) as caught:
        validate(text)
    assert repr(text) in str(caught.value) and caught.value.selector == text


# canonicalisationTests: (input, Calico's String(), Calico's UniqueID() or "")
CALICO_CANONICAL = [
    ("", "all()", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    (" all() ", "all()", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    (" (all() )", "all()", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    ("! (has( b)||! has(a ))", "!(has(b) || !has(a))", "s:Iss0uCleLYv1GSv_pNm7hAO58kE9jAx1NKyG3Q"),
    ('! (a == "b"&&! c != "d")', '!(a == "b" && !c != "d")',
     "s:lh3haoY1ikTRkd4UZu0nWSaIBknYLPJLX16d-w"),
    ("a == \"'\"", "a == \"'\"", ""),
    ("a == '\"'", "a == '\"'", ""),
    ("a contains '\"'", "a contains '\"'", ""),
    ("a contains \"'\"", "a contains \"'\"", ""),
    ("a startswith '\"'", "a starts with '\"'", ""),
    ("a endswith \"'\"", "a ends with \"'\"", ""),
    ("a!='\"'", "a != '\"'", ""),
    # Set items get sorted/de-duped.
    ('a in {"d"}', 'a in {"d"}', ""),
    ('a in {"a", "b"}', 'a in {"a", "b"}', ""),
    ('a in {"d", "a", "b"}', 'a in {"a", "b", "d"}', ""),
    ('a in {"z", "x", "y", "a"}', 'a in {"a", "x", "y", "z"}', ""),
    ('a in {"z", "z", "x", "y", "x", "a"}', 'a in {"a", "x", "y", "z"}', ""),
]


@pytest.mark.parametrize(("text", "canonical", "uid"), CALICO_CANONICAL)
def test_calico_canonical_form_and_unique_id(text: str, canonical: str, uid: str) -> None:
    selector = parse(text)
    assert str(selector) == canonical
    round_tripped = parse(canonical)
    assert str(round_tripped) == canonical
    assert selector_set_id(round_tripped) == selector_set_id(selector)
    if uid:  # Felix's ipset ID for this selector (hash.MakeUniqueID("s", String()))
        assert selector_set_id(selector) == uid


# Visitor tests: PrefixVisitor{Prefix: "visited/"} (tortie: policy.scope.prefixed)
CALICO_VISITOR = [
    ("k == 'v'", 'visited/k == "v"'),
    ("k != 'v'", 'visited/k != "v"'),
    ("k contains 'v'", 'visited/k contains "v"'),
    ("k starts with 'v'", 'visited/k starts with "v"'),
    ("k ends with 'v'", 'visited/k ends with "v"'),
    ("k == 'v' && x == 'y'", '(visited/k == "v" && visited/x == "y")'),
    ("k == 'v' || has(x)", '(visited/k == "v" || has(visited/x))'),
    ("!(k == 'v')", '!visited/k == "v"'),
    ("k in {'v'}", 'visited/k in {"v"}'),
    ("k not in {'v'}", 'visited/k not in {"v"}'),
    ("!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
     '!(!((visited/k == "v" && has(visited/t)) || all()) && visited/a in {"b", "c"})'),
]


@pytest.mark.parametrize(("text", "expected"), CALICO_VISITOR)
def test_calico_prefix_visitor(text: str, expected: str) -> None:
    assert str(prefixed(parse(text), "visited/")) == expected


# --- Calico's tokenizer tests (libcalico-go/lib/selector/tokenizer/tokenizer_test.go) ----

# (input, [(kind, value)] without the final "end", or None for an error). Calico's TokEq
# etc. are tortie's "==" etc.; values of operator tokens are the operator itself.
L, S = "label", "string"
CALICO_TOKENS: list[tuple[str, list[tuple[str, str]] | None]] = [
    ('a=="b"', [(L, "a"), ("==", ""), (S, "b")]),
    ('a!="b"', [(L, "a"), ("!=", ""), (S, "b")]),
    ('a != "b"', [(L, "a"), ("!=", ""), (S, "b")]),
    ('(a=="b")', [("(", ""), (L, "a"), ("==", ""), (S, "b"), (")", "")]),
    ('label == "value"', [(L, "label"), ("==", ""), (S, "value")]),
    ('label contains "value"', [(L, "label"), ("contains", ""), (S, "value")]),
    ('contains contains "contains"', [(L, "contains"), ("contains", ""), (S, "contains")]),
    ("contains contains 'contains'", [(L, "contains"), ("contains", ""), (S, "contains")]),
    ('label contains"value"', [(L, "label"), ("contains", ""), (S, "value")]),
    ('label startswith "value"', [(L, "label"), ("starts with", ""), (S, "value")]),
    ('label endswith "value"', [(L, "label"), ("ends with", ""), (S, "value")]),
    ('label starts with "value"', [(L, "label"), ("starts with", ""), (S, "value")]),
    ('startswith starts with "value"', [(L, "startswith"), ("starts with", ""), (S, "value")]),
    ('label ends with "value"', [(L, "label"), ("ends with", ""), (S, "value")]),
    ('endswith ends with "value"', [(L, "endswith"), ("ends with", ""), (S, "value")]),
    ('label starts  with "value"', [(L, "label"), ("starts with", ""), (S, "value")]),
    ('label ends  with "value"', [(L, "label"), ("ends with", ""), (S, "value")]),
    ("a" * 512 + ' == "value"', [(L, "a" * 512), ("==", ""), (S, "value")]),
    ("a" * 513 + ' == "value"', None),
    ('label == "value', None),
    ("label == 'value", None),
    ('label = "value"', None),
    ("all(", None),
    ("global(", None),
    ("has()", None),
    ("has(foo", None),
    ("has( foo ", None),
    ('a == "b" & has(foo)', None),
    ('a == "b" | has(foo)', None),
    ('label starts foo "value"', None),
    ('label inf "value"', None),
    ('label ends foo "value"', None),
    ('label ends withs "value"', None),
    ('label squiggles "value"', None),
    ('a not in "bar" && !has(foo) || b in c',
     [(L, "a"), ("not in", ""), (S, "bar"), ("&&", ""), ("!", ""), ("has", "foo"), ("||", ""),
      (L, "b"), ("in", ""), (L, "c")]),
    ("has(calico/k8s_ns)", [("has", "calico/k8s_ns")]),
    ("has(calico/k8s_ns/role)", [("has", "calico/k8s_ns/role")]),
    ("has(calico/k8s_NS-.1/role)", [("has", "calico/k8s_NS-.1/role")]),
    ('calico/k8s_ns == "kube-system" && k8s-app == "kube-dns"',
     [(L, "calico/k8s_ns"), ("==", ""), (S, "kube-system"), ("&&", ""), (L, "k8s-app"),
      ("==", ""), (S, "kube-dns")]),
    ('a  not  in  "bar"  &&  ! has( foo )  ||  b  in  c ',
     [(L, "a"), ("not in", ""), (S, "bar"), ("&&", ""), ("!", ""), ("has", "foo"), ("||", ""),
      (L, "b"), ("in", ""), (L, "c")]),
    ('a notin"bar"&&!has(foo)||b in"c"',
     [(L, "a"), ("not in", ""), (S, "bar"), ("&&", ""), ("!", ""), ("has", "foo"), ("||", ""),
      (L, "b"), ("in", ""), (S, "c")]),
    ("a not in {}", [(L, "a"), ("not in", ""), ("{", ""), ("}", "")]),
    ('a not in {"a"}', [(L, "a"), ("not in", ""), ("{", ""), (S, "a"), ("}", "")]),
    ('a not in {"a","B"}',
     [(L, "a"), ("not in", ""), ("{", ""), (S, "a"), (",", ""), (S, "B"), ("}", "")]),
    ("global()", [("global", "")]),
    ("global( )", [("global", "")]),
    ("all()", [("all", "")]),
    ("all( )", [("all", "")]),
]


@pytest.mark.parametrize(("text", "expected"), CALICO_TOKENS)
def test_calico_tokens(text: str, expected: list[tuple[str, str]] | None) -> None:
    if expected is None:
        with pytest.raises(SelectorError):
            tokenize(text)
        return
    tokens = tokenize(text)
    assert tokens[-1].kind == "end"
    # A label, string or has() token carries a value; an operator token carries itself.
    got = [(t.kind, t.value if t.kind in (L, S, "has") else "") for t in tokens[:-1]]
    assert got == expected


# --- tortie's own cases ---------------------------------------------------------------

NODE = {"kubernetes.io/hostname": "node-1", "rack": "r1", "zone": "eu-west", "a.b-c_d": "x"}

# (selector, labels, expected)
EVALUATE = [
    ("", {}, True),
    ("all()", NODE, True),
    ("global()", NODE, True),
    ("has(rack)", NODE, True),
    ("has(rack)", {}, False),
    ("has( kubernetes.io/hostname\t)", NODE, True),
    ("rack == ''", {"rack": ""}, True),
    ("rack == ''", {}, False),  # absent is not equal to anything
    ("rack != 'r1'", {}, True),  # absent is unequal to everything
    ("rack in {'r1', 'r2'}", NODE, True),
    ("rack in {'r2','r3'}", NODE, False),
    ("rack in {}", NODE, False),
    ("rack in {'r1',}", NODE, True),  # a trailing comma, as Calico allows
    ("rack in {'r9', 'r1' , }", NODE, True),
    ("rack not in {}", NODE, True),
    ("rack not in {'r1'}", {}, True),
    ("rack notin {'r1'}", NODE, False),
    ("rack not\t in {'r2'}", NODE, True),
    ("zone contains 'west'", NODE, True),
    ("zone contains ''", {}, False),
    ("zone startswith 'eu-'", NODE, True),
    ("zone starts with 'us-'", NODE, False),
    ("zone endswith 'west'", NODE, True),
    ("zone ends with ''", {}, False),
    ("kubernetes.io/hostname == 'node-1'", NODE, True),
    ("a.b-c_d == 'x'", NODE, True),
    # label keys are any run of [A-Za-z0-9_./-], not only Kubernetes label keys
    ("Kubernetes.io/Host/Name == 'x' && -a. == 'y'", {"Kubernetes.io/Host/Name": "x", "-a.": "y"},
     True),
    ("has(/) && has(.) && has(0)", {"/": "", ".": "", "0": ""}, True),
    ("has(" + "k" * MAX_LABEL_LENGTH + ")", {"k" * MAX_LABEL_LENGTH: ""}, True),
    ("!(has(rack) && rack == 'r1')", NODE, False),
    ("!(!has(rack))", NODE, True),
    ("(((has(rack))))", NODE, True),
    ('q == "it\'s"', {"q": "it's"}, True),
    ("q == 'say \"hi\"'", {"q": 'say "hi"'}, True),
    ("q == 'line\nbreak'", {"q": "line\nbreak"}, True),  # inside a string anything goes
    # operator words are labels where a label is expected, and labels may hold them
    ("in == 'x' && has(not) && all in {'y'} && contains contains 'z'",
     {"in": "x", "not": "", "all": "y", "contains": "z"}, True),
    ("has(has) && hasx == 'x' && all()", {"has": "", "hasx": "x"}, True),
    # whitespace is optional between tokens, and is spaces and tabs only
    ("has(rack)&&rack=='r1'||!has(zone)", NODE, True),
    ("\t rack\tin { 'r1' ,'r9' }\t", NODE, True),
]


@pytest.mark.parametrize(("text", "labels", "expected"), EVALUATE)
def test_evaluate(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse(text).evaluate(labels) is expected


# a == 'x' || b == 'y' && c == 'z'  means  a == 'x' || (b == 'y' && c == 'z')
PRECEDENCE = "a == 'x' || b == 'y' && c == 'z'"


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"a": "x"}, True),
        ({"b": "y"}, False),  # would be True if parsed as (a || b) && c
        ({"b": "y", "c": "z"}, True),
        ({"a": "x", "c": "nope"}, True),  # would be False if parsed as (a || b) && c
        ({}, False),
    ],
)
def test_and_binds_tighter_than_or(labels: dict[str, str], expected: bool) -> None:
    assert parse(PRECEDENCE).evaluate(labels) is expected


def test_tree_shape_is_calicos() -> None:
    a, b, c = Eq("a", "x"), Eq("b", "y"), Eq("c", "z")
    assert parse(PRECEDENCE) == Or((a, And((b, c))))
    assert parse("!has(a) && has(b)") == And((Not(Has("a")), Has("b")))
    assert parse("(a == 'x' || b == 'y') && c == 'z'") == And((Or((a, b)), c))
    # one chain is one node; a parenthesised chain is a node of its own
    chain = parse("has(a) && has(b) && has(c)")
    assert isinstance(chain, And) and chain.terms == (Has("a"), Has("b"), Has("c"))
    nested = parse("(has(a) && has(b)) && has(c)")
    assert isinstance(nested, And) and nested.terms == (And((Has("a"), Has("b"))), Has("c"))
    assert nested != chain
    # a run of '!' is one negation or none; '!(!x)' keeps both
    assert parse("!!!has(a)") == Not(Has("a")) and parse("!!has(a)") == Has("a")
    assert parse("!(!has(a))") == Not(Not(Has("a")))


# (input, canonical form: Calico's String())
CANONICAL = [
    ("global()", "global()"),
    ('has(a)&&b=="c"', '(has(a) && b == "c")'),
    ("a in {'y','x','y',}", 'a in {"x", "y"}'),
    ("a not in {}", "a not in {}"),
    ("a notin {'x'}", 'a not in {"x"}'),
    ("a starts  with 'x'", 'a starts with "x"'),
    ("a ends\twith 'x'", 'a ends with "x"'),
    ("!(has(a))", "!has(a)"),
    ("!(a == 'b')", '!a == "b"'),
    ("!(has(a) || has(b))", "!(has(a) || has(b))"),
    ("(has(a) && has(b)) && has(c)", "((has(a) && has(b)) && has(c))"),
    ("has(a) || (has(b) || has(c))", "(has(a) || (has(b) || has(c)))"),
    ("has(a) || has(b) && has(c)", "(has(a) || (has(b) && has(c)))"),
    ("!(!has(a))", "!!has(a)"),  # as Calico prints it; it reads back as has(a)
    (PRECEDENCE, '(a == "x" || (b == "y" && c == "z"))'),
]


@pytest.mark.parametrize(("text", "canonical"), CANONICAL)
def test_canonical_form(text: str, canonical: str) -> None:
    selector = parse(text)
    assert str(selector) == canonical
    again = parse(canonical)
    assert str(parse(str(again))) == str(again)  # stable from the first reprint on
    if "!!" not in canonical:
        assert again == selector and hash(again) == hash(selector)


def test_equality_and_hash_go_by_canonical_string() -> None:
    assert parse("has(a)&&has(b)") == parse("has(a) && has(b)")
    assert parse("") == All() == parse("all()")
    assert parse("all()") != parse("global()")
    assert parse("has(a)") != "has(a)"
    assert len({parse("a in {'x','y'}"), parse("a in {'y', 'x'}"), In("a", {"x", "y"})}) == 1


def test_selectors_are_immutable_and_cached() -> None:
    selector = parse("a == 'x'")
    with pytest.raises(dataclasses.FrozenInstanceError):
        selector.value = "y"  # type: ignore[misc]
    assert parse("a == 'x'") is selector
    assert isinstance(selector, Selector)


def test_constructors_validate() -> None:
    with pytest.raises(SelectorError, match="invalid label key 'a b'"):
        Has("a b")
    with pytest.raises(SelectorError, match="invalid label key ''"):
        Eq("", "x")
    with pytest.raises(SelectorError, match="at most 512 characters"):
        Has("k" * (MAX_LABEL_LENGTH + 1))
    with pytest.raises(SelectorError, match="both quote characters"):
        Eq("a", "'\"")
    with pytest.raises(SelectorError, match="both quote characters"):
        In("a", {"ok", "'\""})
    with pytest.raises(SelectorError, match="at least two terms"):
        And((Has("a"),))


# (invalid selector, fragment of the message)
INVALID = [
    ("has(a", "no closing ')' after has( at position 5"),
    ("has (a)", "expected ==, !=, in, not in, contains, starts with or ends with after 'has'"),
    ("all ()", "after 'all' at position 4 (found '(')"),
    ("all(a)", "no closing ')' after all( at position 4"),
    ("all() x", "unexpected content at end of selector at position 6"),
    ("has(a) has(b)", "unexpected content at end of selector at position 7"),
    ("(has(a)", "expected ')' at position 7"),
    ("has(a))", "unexpected content at end of selector at position 6"),
    ("()", "expected a label key, has(), all(), global(), '!' or '(' at position 1"),
    ("a == 'b", "unterminated string at position 5"),
    ('a in {"x}', "unterminated string at position 6"),
    ("a == b", "expected a quoted string after '==' at position 5"),
    ("a != ", "expected a quoted string after '!='"),
    ("a = 'b'", "expected == at position 2"),
    ("has(a) & has(b)", "expected && at position 7"),
    ("has(a) | has(b)", "expected || at position 7"),
    ("has(a) &&", "expected a label key"),
    ("!", "expected a label key"),
    ("a", "expected ==, !=, in, not in, contains, starts with or ends with after 'a'"),
    ("a in 'x'", "expected a set literal '{' after 'in'"),
    ("a in {,}", "expected a quoted string, ',' or '}' at position 6"),
    ("a in {'x',,}", "expected ',' or '}' at position 10"),
    ("a in {'x' 'y'}", "expected ',' or '}' at position 10"),
    ("a in {x}", "expected a quoted string, ',' or '}'"),
    ("a not 'x'", "expected an operator after label 'a'"),
    ("a starts 'x'", "expected an operator after label 'a'"),
    ("a startswithx 'x'", "expected an operator after label 'a'"),
    ("a ends with", "expected a quoted string after 'ends with'"),
    ("a contains x", "expected a quoted string after 'contains'"),
    ("has()", "expected a label key in has() at position 4 (found ')')"),
    ("foo(a)", "after 'foo' at position 3 (found '(')"),
    ("has(" + "n" * (MAX_LABEL_LENGTH + 1) + ")", "label key too long (513 characters, at most 512)"),
    ("héllo == 'x'", "expected an operator after label 'h'"),
    ("é == 'x'", "unexpected character at position 0 (found 'é')"),
    # Calico's whitespace is spaces and tabs: a newline (or \r, \f, \v) is refused
    ("has(a)\n", "unexpected character at position 6 (found '\\n')"),
    ("has(a) &&\nhas(b)", "unexpected character at position 9"),
    ("a\n== 'x'", "expected an operator after label 'a' (==, !=, in, not in, contains, "
     "starts with or ends with) at position 1"),
    ("\rhas(a)", "unexpected character at position 0"),
]


@pytest.mark.parametrize(("text", "fragment"), INVALID)
def test_invalid(text: str, fragment: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse(text)
    message = str(caught.value)
    assert repr(text[:200]) in message
    assert fragment in message
    assert caught.value.selector == text


def test_error_message_format_and_position() -> None:
    with pytest.raises(SelectorError) as caught:
        parse("(has(a)")
    assert str(caught.value) == "invalid selector '(has(a)' : expected ')' at position 7"
    assert caught.value.position == 7
    assert isinstance(caught.value, ValueError)


def test_length_limit() -> None:
    # the canonical form adds the chain's parentheses, so leave room for them
    fits = "has(a) || " * ((MAX_LENGTH - 8) // 10) + "has(b)"
    fits += " " * (MAX_LENGTH - len(fits))
    assert len(fits) == MAX_LENGTH
    assert parse(fits).evaluate({"b": "1"})
    with pytest.raises(SelectorError, match="selector too long"):
        parse(fits + " ")


def test_depth_limit() -> None:
    ok = "(" * MAX_DEPTH + "has(a)" + ")" * MAX_DEPTH
    assert parse(ok) == Has("a")
    # a run of '!' collapses as Calico's parser collapses it: no nesting at all
    assert parse("!" * (MAX_LENGTH - 6) + "has(a)") == Has("a")
    assert parse("!(" * MAX_DEPTH + "has(a)" + ")" * MAX_DEPTH).evaluate({"a": ""})
    with pytest.raises(SelectorError, match="parentheses nested deeper than 100"):
        parse("(" * (MAX_DEPTH + 1) + "has(a)" + ")" * (MAX_DEPTH + 1))
    with pytest.raises(SelectorError, match="parentheses nested deeper than 100"):
        parse("!(" * (MAX_DEPTH + 1) + "has(a)" + ")" * (MAX_DEPTH + 1))


@pytest.mark.parametrize(
    "text",
    [
        "(" * MAX_LENGTH,
        "!" * MAX_LENGTH,
        "!(" * (MAX_LENGTH // 2),
        "(" * 2000 + "has(a)" + ")" * 2000,
        "(has(a) || " * 400 + "has(b)" + ")" * 400,
        "(" * 100_000,
    ],
)
def test_deep_input_is_a_selector_error_not_recursion_error(text: str) -> None:
    with pytest.raises(SelectorError):
        parse(text)


def test_deepest_allowed_tree_evaluates_and_renders() -> None:
    levels = MAX_DEPTH // 2  # each level opens '(' and '!(': two levels of parentheses
    text = "(has(a) || !(has(b) && " * levels + "has(c)" + "))" * levels
    selector = parse(text)
    assert parse(str(selector)) == selector
    assert selector.evaluate({"a": ""})
    assert hash(selector) == hash(parse(str(selector)))


def test_long_flat_chain_is_shallow() -> None:
    text = " && ".join(["a == ''"] * ((MAX_LENGTH + 4) // 11))
    assert len(text) <= MAX_LENGTH
    selector = parse(text)
    assert isinstance(selector, And) and len(selector.terms) == 372
    assert selector.evaluate({"a": ""}) and not selector.evaluate({})
    assert parse(str(selector)) == selector


def test_canonical_form_must_fit_the_length_limit_too() -> None:
    compact = "&&".join(["a==''"] * ((MAX_LENGTH + 2) // 7))
    assert len(compact) <= MAX_LENGTH
    with pytest.raises(SelectorError, match="too long \\(canonical form 6433 characters"):
        parse(compact)


# --- property tests -----------------------------------------------------------

SELECTORISH = "()!&|='\" {},abcdhinotswle/.-_\t\n"


def _double_not(tree: Selector) -> bool:
    """Whether a Not sits directly in a Not: Calico prints it `!!x`, which reads back as x."""
    if isinstance(tree, Not):
        return isinstance(tree.operand, Not) or _double_not(tree.operand)
    if isinstance(tree, And | Or):
        return any(_double_not(t) for t in tree.terms)
    return False


@settings(max_examples=300)
@given(st.one_of(st.text(), st.text(alphabet=SELECTORISH)))
def test_parse_never_raises_anything_but_selector_error(text: str) -> None:
    try:
        result = parse(text)
    except SelectorError:
        return
    assert isinstance(result, Selector)
    again = parse(str(result))
    assert parse(str(again)) == again
    assert again == result or _double_not(result)


KEYS = ["a", "b", "rack", "in", "not", "has", "kubernetes.io/hostname", "x.y-z_w", "A/b/-."]
VALUES = ["", "x", "y", "xy", "it's", 'say "hi"']
labels_st = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=len(KEYS))

ws = st.sampled_from(["", " ", "  ", "\t", "\t "])
ws1 = st.sampled_from([" ", "\t", " \t "])

# A reference tree: (text, predicate, binding) where binding is 3 for a term,
# 2 for an && chain and 1 for an || chain, so parentheses go exactly where needed.
Ref = tuple[str, Callable[[Mapping[str, str]], bool], int]


@st.composite
def quoted(draw: st.DrawFn, value: str) -> str:
    if "'" in value:
        return f'"{value}"'
    if '"' in value:
        return f"'{value}'"
    quote = draw(st.sampled_from(["'", '"']))
    return f"{quote}{value}{quote}"


@st.composite
def ref_leaf(draw: st.DrawFn) -> Ref:
    k = draw(st.sampled_from(KEYS))
    v = draw(st.sampled_from(VALUES))
    kind = draw(
        st.sampled_from(
            ["all", "global", "has", "==", "!=", "contains", "starts", "ends", "in", "not in"]
        )
    )
    w, w1 = draw(ws), draw(ws1)
    if kind in ("all", "global"):
        return f"{kind}({draw(ws)})", lambda labels: True, 3
    if kind == "has":
        return f"has({draw(ws)}{k}{draw(ws)})", lambda labels: k in labels, 3
    if kind in ("in", "not in"):
        vs = draw(st.lists(st.sampled_from(VALUES), max_size=3))
        items = f"{draw(ws)},{draw(ws)}".join([draw(quoted(x)) for x in vs])
        if vs and draw(st.booleans()):
            items += draw(ws) + ","  # a trailing comma
        op = "in" if kind == "in" else f"not{w}in"
        text = f"{k}{w1}{op}{draw(ws1)}{{{draw(ws)}{items}{draw(ws)}}}"
        negate = kind == "not in"
        return text, lambda labels: (labels.get(k) in vs) != negate, 3
    q = draw(quoted(v))
    if kind == "==":
        return f"{k}{w}=={draw(ws)}{q}", lambda labels: labels.get(k) == v, 3
    if kind == "!=":
        return f"{k}{w}!={draw(ws)}{q}", lambda labels: labels.get(k) != v, 3
    if kind == "contains":
        return f"{k}{w1}contains{w}{q}", lambda labels: k in labels and v in labels[k], 3
    if kind == "starts":
        return (
            f"{k}{w1}starts{draw(ws)}with{w}{q}",
            lambda labels: k in labels and labels[k].startswith(v),
            3,
        )
    return (
        f"{k}{w1}ends{draw(ws)}with{w}{q}",
        lambda labels: k in labels and labels[k].endswith(v),
        3,
    )


def _wrap(ref: Ref, at_least: int, force: bool) -> str:
    text, _, binding = ref
    return f"({text})" if force or binding < at_least else text


@st.composite
def ref_compound(draw: st.DrawFn, children: st.SearchStrategy[Ref]) -> Ref:
    kind = draw(st.sampled_from(["!", "&&", "||"]))
    if kind == "!":
        child = draw(children)
        return (
            "!" + draw(ws) + _wrap(child, 3, draw(st.booleans())),
            (lambda labels: not child[1](labels)),
            3,
        )
    terms = draw(st.lists(children, min_size=2, max_size=4))
    need = 2 if kind == "&&" else 1
    sep = draw(ws) + kind + draw(ws)
    text = sep.join(_wrap(t, need, draw(st.booleans())) for t in terms)
    preds = [t[1] for t in terms]
    if kind == "&&":
        return text, lambda labels: all(p(labels) for p in preds), 2
    return text, lambda labels: any(p(labels) for p in preds), 1


refs = st.recursive(ref_leaf(), ref_compound, max_leaves=16)


@settings(max_examples=300)
@given(refs, st.lists(labels_st, min_size=1, max_size=5))
def test_rendered_reference_tree_parses_and_evaluates(ref: Ref, label_sets: list) -> None:
    text, predicate, _ = ref
    selector = parse(text)
    again = parse(str(selector))
    assert again == selector or _double_not(selector)
    assert parse(str(again)) == again
    for labels in label_sets:
        assert selector.evaluate(labels) is predicate(labels), (text, labels)
        assert again.evaluate(labels) is predicate(labels)


# Trees built from the node classes directly, with arbitrary valid keys and values.
key_st = st.one_of(
    st.sampled_from(KEYS),
    st.from_regex(r"[A-Za-z0-9_./-]{1,40}", fullmatch=True),
)
value_st = st.one_of(
    st.sampled_from(VALUES),
    st.text(max_size=6).filter(lambda v: not ("'" in v and '"' in v)),
)
node_leaves = st.one_of(
    st.just(All()),
    st.just(Global()),
    st.builds(Has, key_st),
    *(st.builds(cls, key_st, value_st) for cls in (Eq, Ne, Contains, StartsWith, EndsWith)),
    *(st.builds(cls, key_st, st.frozensets(value_st, max_size=3)) for cls in (In, NotIn)),
)


def _extend(children: st.SearchStrategy[Selector]) -> st.SearchStrategy[Selector]:
    terms = st.lists(children, min_size=2, max_size=4).map(tuple)
    return st.one_of(st.builds(Not, children), st.builds(And, terms), st.builds(Or, terms))


nodes = st.recursive(node_leaves, _extend, max_leaves=16)


@settings(max_examples=300)
@given(nodes, st.lists(labels_st, min_size=1, max_size=5))
def test_node_tree_round_trips_and_evaluates_the_same(tree: Selector, label_sets: list) -> None:
    text = str(tree)
    parsed = parse(text)
    if not _double_not(tree):
        assert parsed == tree and str(parsed) == text and hash(parsed) == hash(tree)
    assert parse(str(parsed)) == parsed
    for labels in label_sets:
        assert parsed.evaluate(labels) is tree.evaluate(labels)
