"""Calico label selectors: parsing, evaluation, canonical form, errors, limits."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datastore.selector import (
    MAX_DEPTH,
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
    validate,
)

NODE = {"kubernetes.io/hostname": "node-1", "rack": "r1", "zone": "eu-west", "a.b-c_d": "x"}

# (selector, labels, expected)
EVALUATE = [
    ("", {}, True),
    ("all()", {}, True),
    ("all()", NODE, True),
    ("global()", NODE, True),
    ("has(rack)", NODE, True),
    ("has(rack)", {}, False),
    ("has( kubernetes.io/hostname )", NODE, True),
    ("!has(rack)", NODE, False),
    ("!has(rack)", {}, True),
    ("rack == 'r1'", NODE, True),
    ('rack == "r1"', NODE, True),
    ("rack == 'r2'", NODE, False),
    ("rack == ''", {"rack": ""}, True),
    ("rack == ''", {}, False),  # absent is not equal to anything
    ("rack != 'r2'", NODE, True),
    ("rack != 'r1'", NODE, False),
    ("rack != 'r1'", {}, True),  # absent is unequal to everything
    ("rack in {'r1', 'r2'}", NODE, True),
    ("rack in {'r2','r3'}", NODE, False),
    ("rack in {}", NODE, False),
    ("rack in {'r1'}", {}, False),
    ("rack not in {'r2'}", NODE, True),
    ("rack not in {'r1', 'r2'}", NODE, False),
    ("rack not in {}", NODE, True),
    ("rack not in {'r1'}", {}, True),
    ("zone contains 'west'", NODE, True),
    ("zone contains 'east'", NODE, False),
    ("zone contains ''", {}, False),
    ("zone starts with 'eu-'", NODE, True),
    ("zone starts with 'us-'", NODE, False),
    ("zone starts with ''", {}, False),
    ("zone ends with 'west'", NODE, True),
    ("zone ends with 'eu'", NODE, False),
    ("zone ends with ''", {}, False),
    ("kubernetes.io/hostname == 'node-1'", NODE, True),
    ("a.b-c_d == 'x'", NODE, True),
    ("has(rack) && rack == 'r1'", NODE, True),
    ("has(rack) && rack == 'r2'", NODE, False),
    ("has(nope) || rack == 'r1'", NODE, True),
    ("has(nope) || rack == 'r2'", NODE, False),
    ("!(has(rack) && rack == 'r1')", NODE, False),
    ("!!has(rack)", NODE, True),
    ("!rack == 'r2'", NODE, True),
    ("(((has(rack))))", NODE, True),
    ('q == "it\'s"', {"q": "it's"}, True),
    ("q == 'say \"hi\"'", {"q": 'say "hi"'}, True),
    # keywords are only keywords where an operator or function is expected
    ("in == 'x' && has(not) && all in {'y'}", {"in": "x", "not": "", "all": "y"}, True),
    # whitespace is optional between tokens and may be any ASCII whitespace
    ("has(rack)&&rack=='r1'||!has(zone)", NODE, True),
    ("\t rack\nin\r{ 'r1' ,'r9' }\n", NODE, True),
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


def test_precedence_tree_shape() -> None:
    a, b, c = Eq("a", "x"), Eq("b", "y"), Eq("c", "z")
    assert parse(PRECEDENCE) == Or((a, And((b, c))))
    assert parse("!has(a) && has(b)") == And((Not(Has("a")), Has("b")))
    assert parse("(a == 'x' || b == 'y') && c == 'z'") == And((Or((a, b)), c))
    # chains are left-associative, flattened into one n-ary node
    chain = parse("has(a) && has(b) && has(c)")
    assert isinstance(chain, And) and chain.terms == (Has("a"), Has("b"), Has("c"))


# (input, canonical form)
CANONICAL = [
    ("", "all()"),
    ("  all( )  ", "all()"),
    ("global()", "global()"),
    ('has(a)&&b=="c"', "has(a) && b == 'c'"),
    ("a!='b'", "a != 'b'"),
    ('a == "it\'s"', 'a == "it\'s"'),
    ("a in {'y','x','y'}", "a in {'x', 'y'}"),
    ("a not in {}", "a not in {}"),
    ('a contains"x"', "a contains 'x'"),
    ("a starts  with 'x'", "a starts with 'x'"),
    ("a ends\twith 'x'", "a ends with 'x'"),
    ("!(has(a))", "!has(a)"),
    ("!(has(a) || has(b))", "!(has(a) || has(b))"),
    ("!(has(a) && has(b))", "!(has(a) && has(b))"),
    ("(has(a) && has(b)) && has(c)", "has(a) && has(b) && has(c)"),
    ("has(a) || (has(b) || has(c))", "has(a) || has(b) || has(c)"),
    ("(has(a) || has(b)) && has(c)", "(has(a) || has(b)) && has(c)"),
    ("has(a) || (has(b) && has(c))", "has(a) || has(b) && has(c)"),
    (PRECEDENCE, PRECEDENCE),
]


@pytest.mark.parametrize(("text", "canonical"), CANONICAL)
def test_canonical_form_round_trips(text: str, canonical: str) -> None:
    selector = parse(text)
    assert str(selector) == canonical
    assert parse(str(selector)) == selector
    assert hash(parse(canonical)) == hash(selector)


def test_equality_and_hash_go_by_canonical_string() -> None:
    assert parse("has(a)&&has(b)") == parse("has(a) && has(b)")
    assert parse("") == All() == parse("all()")
    assert parse("all()") != parse("global()")
    assert parse("has(a)") != "has(a)"
    assert len({parse("a in {'x','y'}"), parse("a in {'y', 'x'}"), In("a", {"x", "y"})}) == 1
    assert And((And((Has("a"), Has("b"))), Has("c"))) == parse("has(a) && has(b) && has(c)")


def test_selectors_are_immutable_and_cached() -> None:
    selector = parse("a == 'x'")
    with pytest.raises(dataclasses.FrozenInstanceError):
        selector.value = "y"  # type: ignore[misc]
    assert parse("a == 'x'") is selector
    assert isinstance(selector, Selector)


def test_constructors_validate() -> None:
    with pytest.raises(SelectorError, match="invalid label key 'Bad/key'"):
        Has("Bad/key")
    with pytest.raises(SelectorError, match="both quote characters"):
        Eq("a", "'\"")
    with pytest.raises(SelectorError, match="both quote characters"):
        In("a", {"ok", "'\""})
    with pytest.raises(SelectorError, match="at least two terms"):
        And((Has("a"),))


def test_validate() -> None:
    assert validate("has(a) && b in {'c'}") is None
    with pytest.raises(SelectorError):
        validate("has(a")


# (invalid selector, fragment of the message)
INVALID = [
    ("has(a", "expected ')' at position 5"),
    ("all() x", "unexpected trailing text at position 6"),
    ("has(a) has(b)", "unexpected trailing text at position 7"),
    ("(has(a)", "expected ')' at position 7"),
    ("has(a))", "unexpected trailing text at position 6"),
    ("()", "expected a label key"),
    ("a == 'b", "unterminated string at position 5"),
    ('a in {"x}', "unterminated string at position 6"),
    ("a == b", "expected a quoted string after '==' at position 5"),
    ("a != ", "expected a quoted string after '!='"),
    ("a = 'b'", "unexpected character '='"),
    ("has(a) & has(b)", "unexpected character '&'"),
    ("has(a) | has(b)", "unexpected character '|'"),
    ("has(a) &&", "expected a label key"),
    ("|| has(a)", "expected a label key"),
    ("!", "expected a label key"),
    ("a", "expected ==, !=, in, not in, contains, starts with or ends with"),
    ("a in 'x'", "expected '{'"),
    ("a in {'x',}", "expected a quoted string at position 10"),
    ("a in {'x' 'y'}", "expected ',' or '}'"),
    ("a in {x}", "expected a quoted string or '}'"),
    ("a not 'x'", "expected 'in'"),
    ("a starts 'x'", "expected 'with'"),
    ("a ends with", "expected a quoted string after 'ends with'"),
    ("a contains x", "expected a quoted string after 'contains'"),
    ("has()", "expected a label key at position 4"),
    ("all(a)", "expected ')'"),
    ("foo(a)", "unknown function 'foo'"),
    ("Kubernetes.io/hostname == 'x'", "invalid label key 'Kubernetes.io/hostname'"),
    ("a/b/c == 'x'", "at most one '/'"),
    ("/a == 'x'", "prefix must be a lowercase DNS subdomain"),
    ("a/ == 'x'", "the name must be 1-63 characters"),
    ("-a == 'x'", "the name must start and end with a letter or digit"),
    ("a. == 'x'", "the name must start and end with a letter or digit"),
    ("has(" + "n" * 64 + ")", "the name must be 1-63 characters"),
    ("p" * 254 + "/n == 'x'", "prefix must be a lowercase DNS subdomain"),
    ("héllo == 'x'", "unexpected character 'é'"),
]


@pytest.mark.parametrize(("text", "fragment"), INVALID)
def test_invalid(text: str, fragment: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse(text)
    message = str(caught.value)
    assert text[:200] in message
    assert fragment in message
    assert caught.value.selector == text


def test_error_message_format_and_position() -> None:
    with pytest.raises(SelectorError) as caught:
        parse("has(a")
    assert str(caught.value) == "invalid selector 'has(a' : expected ')' at position 5"
    assert caught.value.position == 5
    assert isinstance(caught.value, ValueError)


def test_length_limit() -> None:
    fits = "has(a) || " * ((MAX_LENGTH - 6) // 10) + "has(b)"
    fits += " " * (MAX_LENGTH - len(fits))
    assert len(fits) == MAX_LENGTH
    assert parse(fits).evaluate({"b": "1"})
    with pytest.raises(SelectorError, match="selector too long"):
        parse(fits + " ")


def test_depth_limit() -> None:
    ok = "(" * MAX_DEPTH + "has(a)" + ")" * MAX_DEPTH
    assert parse(ok) == Has("a")
    assert parse("!" * MAX_DEPTH + "has(a)").evaluate({"a": ""})  # even count of '!'
    assert parse("!(" * (MAX_DEPTH // 2) + "has(a)" + ")" * (MAX_DEPTH // 2)).evaluate({"a": ""})
    with pytest.raises(SelectorError, match="nested deeper than 100"):
        parse("(" * (MAX_DEPTH + 1) + "has(a)" + ")" * (MAX_DEPTH + 1))
    with pytest.raises(SelectorError, match="nested deeper than 100"):
        parse("!" * (MAX_DEPTH + 1) + "has(a)")


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
    levels = MAX_DEPTH // 3  # each level opens '(' and '!(': three levels of nesting
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
    with pytest.raises(SelectorError, match="too long \\(canonical form 6431 characters"):
        parse(compact)


# --- property tests -----------------------------------------------------------

SELECTORISH = "()!&|='\" {},abcdhinotswle/.-_\t\n"


@settings(max_examples=300)
@given(st.one_of(st.text(), st.text(alphabet=SELECTORISH)))
def test_parse_never_raises_anything_but_selector_error(text: str) -> None:
    try:
        result = parse(text)
    except SelectorError:
        return
    assert isinstance(result, Selector)
    assert parse(str(result)) == result


KEYS = ["a", "b", "rack", "in", "not", "has", "kubernetes.io/hostname", "x.y-z_w"]
VALUES = ["", "x", "y", "xy", "it's", 'say "hi"']
labels_st = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=len(KEYS))

ws = st.sampled_from(["", " ", "  ", "\t", "\n "])
ws1 = st.sampled_from([" ", "\t", " \n "])

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
        return f"{kind}{w}({draw(ws)})", lambda labels: True, 3
    if kind == "has":
        return f"has{w}({draw(ws)}{k}{draw(ws)})", lambda labels: k in labels, 3
    if kind in ("in", "not in"):
        vs = draw(st.lists(st.sampled_from(VALUES), max_size=3))
        items = f"{draw(ws)},{draw(ws)}".join([draw(quoted(x)) for x in vs])
        op = "in" if kind == "in" else f"not{w1}in"
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
            f"{k}{w1}starts{draw(ws1)}with{w}{q}",
            lambda labels: k in labels and labels[k].startswith(v),
            3,
        )
    return (
        f"{k}{w1}ends{draw(ws1)}with{w}{q}",
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
    assert again == selector and str(again) == str(selector)
    for labels in label_sets:
        assert selector.evaluate(labels) is predicate(labels), (text, labels)
        assert again.evaluate(labels) is predicate(labels)


# Trees built from the node classes directly, with arbitrary valid keys and values.
key_st = st.one_of(
    st.sampled_from(KEYS),
    st.from_regex(
        r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?",
        fullmatch=True,
    ).filter(lambda k: len(k.rpartition("/")[2]) <= 63 and len(k.rpartition("/")[0]) <= 253),
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
    assert parsed == tree
    assert str(parsed) == text
    assert hash(parsed) == hash(tree)
    for labels in label_sets:
        assert parsed.evaluate(labels) is tree.evaluate(labels)
