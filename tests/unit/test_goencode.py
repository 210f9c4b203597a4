"""calicoctl's JSON and YAML encoders (ctl/goencode.py) against Go's own test vectors.

The YAML cases come from go-yaml v2's encode_test.go as kept in kubernetes-sigs/yaml
(goyaml.v2/encode_test.go: marshalTests and TestSortedOutput), the library
calicoctl's sigs.k8s.io/yaml uses; the JSON cases are encoding/json's documented
behaviour (HTML-safe escaping, float formatting) as calicoctl's printer.go relies on it.
"""

import functools

import pytest

from ctl.goencode import go_json, go_key_less, go_yaml

# goyaml.v2/encode_test.go marshalTests: (value, expected text).
MARSHAL = [
    ({"v": "hi"}, "v: hi\n"),
    ({"v": "true"}, 'v: "true"\n'),
    ({"v": "false"}, 'v: "false"\n'),
    ({"v": True}, "v: true\n"),
    ({"v": 10}, "v: 10\n"),
    ({"v": -10}, "v: -10\n"),
    ({"v": 4294967296}, "v: 4294967296\n"),
    ({"v": "10"}, 'v: "10"\n'),
    ({"v": 0.1}, "v: 0.1\n"),
    ({"v": -0.1}, "v: -0.1\n"),
    ({"v": None}, "v: null\n"),
    ({"v": ""}, 'v: ""\n'),
    ({"v": ["A", "B"]}, "v:\n- A\n- B\n"),
    ({"v": ["A", "B\nC"]}, "v:\n- A\n- |-\n  B\n  C\n"),
    ({"v": ["A", 1, {"B": [2, 3]}]}, "v:\n- A\n- 1\n- B:\n  - 2\n  - 3\n"),
    ({"a": {"b": "c"}}, "a:\n  b: c\n"),
    ({"a": "-"}, "a: '-'\n"),
    ({"a": "<foo>"}, "a: <foo>\n"),
    ({"a": "你好"}, "a: 你好\n"),
    ({"a": "1.2.3.4"}, "a: 1.2.3.4\n"),
    ({"a": "b: c"}, "a: 'b: c'\n"),
    ({"a": "Hello #comment"}, "a: 'Hello #comment'\n"),
    ({"a": "你好 #comment"}, "a: '你好 #comment'\n"),
    ({"a": 100.5}, "a: 100.5\n"),
    ({"a": "bogus"}, "a: bogus\n"),
]


@pytest.mark.parametrize(("value", "expected"), MARSHAL)
def test_yaml_marshal_vectors(value, expected):
    assert go_yaml(value) == expected


@pytest.mark.parametrize("text", ["y", "Y", "yes", "on", "n", "off", "~", "null", "1e3", "0x1F",
                                  "0o17", "-12", "+.inf", ".5", "1_000", "2026-12-06",
                                  "2026-12-06T23:06:27Z", "190:20:30"])
def test_strings_go_yaml_would_read_as_other_types_are_double_quoted(text):
    # goyaml.v2 resolve.go (the bool/null/float map, ints, floats, timestamps) and
    # encode.go isBase60Float: such strings are written in double quotes.
    assert go_yaml({"v": text}) == f'v: "{text}"\n'


@pytest.mark.parametrize("text", ["all()", "10.0.1.0/24", "fed0:8001::/64", "Automatic",
                                  "2026-13-45", "1.2.3", "k8s", "kns.default"])
def test_strings_that_stay_strings_are_plain(text):
    assert go_yaml({"v": text}) == f"v: {text}\n"


def test_sorted_output_order():
    # goyaml.v2/encode_test.go TestSortedOutput, its string keys (the numeric and bool keys
    # of that test cannot occur in JSON objects).
    order = ["", ".1", ".2", ".a", "1", "2", "a!10", "a/0001", "a/002", "a/3", "a/10", "a/11",
             "a/0012", "a/100", "a~10", "ab/1", "b/1", "b/01", "b/2", "b/02", "b/3", "b/03",
             "b1", "b01", "b3", "c2.10", "c10.2", "d1", "d7", "d7abc", "d12", "d12a"]
    shuffled = list(reversed(order))
    cmp = functools.cmp_to_key(lambda a, b: -1 if go_key_less(a, b) else
                               (1 if go_key_less(b, a) else 0))
    assert sorted(shuffled, key=cmp) == order
    text = go_yaml({k: 1 for k in shuffled})
    assert [line.rsplit(":", 1)[0].strip("\"'") for line in text.splitlines()] == order


def test_json_is_marshalindent_with_html_escaping_and_go_floats():
    value = {"sel": "a == 'x' && b < 3 > 2", "order": 100.0, "small": 1e-7, "big": 1e21,
             "half": 0.5, "int": 7, "none": None, "list": [], "map": {}, "sep": "\u2028",
             "ctl": "\x01\n", "utf": "你好"}
    assert go_json(value) == (
        '{\n'
        '  "sel": "a == \'x\' \\u0026\\u0026 b \\u003c 3 \\u003e 2",\n'
        '  "order": 100,\n'
        '  "small": 1e-7,\n'
        '  "big": 1e+21,\n'
        '  "half": 0.5,\n'
        '  "int": 7,\n'
        '  "none": null,\n'
        '  "list": [],\n'
        '  "map": {},\n'
        '  "sep": "\\u2028",\n'
        '  "ctl": "\\u0001\\n",\n'
        '  "utf": "你好"\n'
        '}')


def test_yaml_sees_floats_after_the_json_round_trip():
    # sigs.k8s.io/yaml marshals to JSON first: 1000000.0 is "1000000" there, an int to go-yaml.
    assert go_yaml({"order": 1000000.0, "frac": 1234567.5}) == (
        "frac: 1.2345675e+06\norder: 1000000\n")
