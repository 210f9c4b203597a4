"""Calico label selectors (IPPool.nodeSelector, BGPPeer.nodeSelector/peerSelector).

Owns the selector language of libcalico-go's `lib/selector`: a tokenizer, a
hand-written recursive-descent parser and a tree of frozen nodes that evaluate
against a label mapping, and `calico_string`, the form Calico's own printer
gives (which Felix hashes into ipset names). Invariants: every Selector renders
to one canonical string, parse(str(s)) == s, and equality and hashing go by that string; "" is
all(); keys are valid Kubernetes label keys; input (or its canonical form)
longer than 4096 characters, or nested deeper than 100 levels, is a
SelectorError, never a RecursionError.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

__all__ = [
    "All",
    "calico_string",
    "And",
    "Contains",
    "EndsWith",
    "Eq",
    "Global",
    "Has",
    "In",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "Ne",
    "Not",
    "NotIn",
    "Or",
    "Selector",
    "SelectorError",
    "StartsWith",
    "parse",
    "validate",
]

MAX_LENGTH = 4096
MAX_DEPTH = 100

_NAME_RE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_PREFIX_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class SelectorError(ValueError):
    """A selector that cannot be parsed, or a node that cannot be built."""

    def __init__(
        self,
        reason: str,
        selector: str | None = None,
        position: int | None = None,
        found: str | None = None,
    ) -> None:
        self.reason = reason
        self.selector = selector
        self.position = position
        text = reason
        if position is not None:
            text += f" at position {position}"
        if found is not None:
            text += f" (found {found})"
        if selector is not None:
            shown = repr(selector) if len(selector) <= 200 else repr(selector[:200]) + "..."
            text = f"invalid selector {shown} : {text}"
        super().__init__(text)


def _key_problem(key: str) -> str | None:
    """Why `key` is not a Kubernetes label key, or None when it is one."""
    prefix, slash, name = key.rpartition("/")
    if "/" in prefix:
        return "a label key has at most one '/'"
    if slash and not (len(prefix) <= 253 and _PREFIX_RE.fullmatch(prefix)):
        return "the prefix must be a lowercase DNS subdomain of at most 253 characters"
    if not 1 <= len(name) <= 63:
        return "the name must be 1-63 characters"
    if not _NAME_RE.fullmatch(name):
        return (
            "the name must start and end with a letter or digit and contain only "
            "letters, digits, '-', '_' and '.'"
        )
    return None


def _check_key(key: str) -> None:
    problem = _key_problem(key)
    if problem:
        raise SelectorError(f"invalid label key {key!r}: {problem}")


def _quote(value: str) -> str:
    # Calico strings have no escapes: a value is quoted with whichever quote it lacks.
    return f'"{value}"' if "'" in value else f"'{value}'"


def _check_value(value: str) -> None:
    if "'" in value and '"' in value:
        raise SelectorError(f"label value {value!r} contains both quote characters")


# --- the tree ---------------------------------------------------------------


class Selector:
    """A parsed selector. Immutable; == and hash go by the canonical string."""

    __slots__ = ()

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        raise NotImplementedError

    def __str__(self) -> str:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Selector):
            return NotImplemented
        return str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


@dataclass(frozen=True, eq=False)
class All(Selector):
    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return True

    def __str__(self) -> str:
        return "all()"


@dataclass(frozen=True, eq=False)
class Global(Selector):
    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return True

    def __str__(self) -> str:
        return "global()"


@dataclass(frozen=True, eq=False)
class Has(Selector):
    key: str

    def __post_init__(self) -> None:
        _check_key(self.key)

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return self.key in labels

    def __str__(self) -> str:
        return f"has({self.key})"


@dataclass(frozen=True, eq=False)
class _KeyValue(Selector):
    key: str
    value: str
    op = ""

    def __post_init__(self) -> None:
        _check_key(self.key)
        _check_value(self.value)

    def __str__(self) -> str:
        return f"{self.key} {self.op} {_quote(self.value)}"


@dataclass(frozen=True, eq=False)
class Eq(_KeyValue):
    op = "=="

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return labels.get(self.key) == self.value


@dataclass(frozen=True, eq=False)
class Ne(_KeyValue):
    op = "!="

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return labels.get(self.key) != self.value


@dataclass(frozen=True, eq=False)
class Contains(_KeyValue):
    op = "contains"

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return self.key in labels and self.value in labels[self.key]


@dataclass(frozen=True, eq=False)
class StartsWith(_KeyValue):
    op = "starts with"

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return self.key in labels and labels[self.key].startswith(self.value)


@dataclass(frozen=True, eq=False)
class EndsWith(_KeyValue):
    op = "ends with"

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return self.key in labels and labels[self.key].endswith(self.value)


@dataclass(frozen=True, eq=False)
class _KeySet(Selector):
    key: str
    values: frozenset[str]
    op = ""

    def __post_init__(self) -> None:
        _check_key(self.key)
        object.__setattr__(self, "values", frozenset(self.values))
        for value in self.values:
            _check_value(value)

    def __str__(self) -> str:
        return f"{self.key} {self.op} {{{', '.join(_quote(v) for v in sorted(self.values))}}}"


@dataclass(frozen=True, eq=False)
class In(_KeySet):
    op = "in"

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return self.key in labels and labels[self.key] in self.values


@dataclass(frozen=True, eq=False)
class NotIn(_KeySet):
    op = "not in"

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return not (self.key in labels and labels[self.key] in self.values)


@dataclass(frozen=True, eq=False)
class Not(Selector):
    operand: Selector

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return not self.operand.evaluate(labels)

    def __str__(self) -> str:
        if isinstance(self.operand, And | Or):
            return f"!({self.operand})"
        return f"!{self.operand}"


@dataclass(frozen=True, eq=False)
class _Chain(Selector):
    """n-ary && / ||: a flat tuple keeps chains shallow, so no deep recursion."""

    terms: tuple[Selector, ...]
    op = ""

    def __post_init__(self) -> None:
        flat: list[Selector] = []
        for term in self.terms:
            flat.extend(term.terms if type(term) is type(self) else (term,))
        if len(flat) < 2:
            raise SelectorError(f"{type(self).__name__} needs at least two terms")
        object.__setattr__(self, "terms", tuple(flat))

    def __str__(self) -> str:
        parts = []
        for term in self.terms:
            parts.append(f"({term})" if isinstance(term, Or) else str(term))
        return f" {self.op} ".join(parts)


@dataclass(frozen=True, eq=False)
class And(_Chain):
    op = "&&"

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        for term in self.terms:
            if not term.evaluate(labels):
                return False
        return True


@dataclass(frozen=True, eq=False)
class Or(_Chain):
    op = "||"

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        for term in self.terms:
            if term.evaluate(labels):
                return True
        return False


# --- tokenizer --------------------------------------------------------------


class _Token(NamedTuple):
    kind: str  # a punctuation string itself, or "word", "string", "end"
    value: str  # the word, or the string's contents
    pos: int
    end: int


_WORD_CHARS = frozenset(string.ascii_letters + string.digits + "-_./")
_SPACE = frozenset(" \t\r\n\f\v")
_PUNCT = ("&&", "||", "==", "!=", "!", "(", ")", "{", "}", ",")


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _SPACE:
            i += 1
        if i == n:
            tokens.append(_Token("end", "", n, n))
            return tokens
        ch = text[i]
        if ch in "'\"":
            close = text.find(ch, i + 1)
            if close < 0:
                raise SelectorError("unterminated string", text, i)
            tokens.append(_Token("string", text[i + 1 : close], i, close + 1))
            i = close + 1
        elif ch in _WORD_CHARS:
            start = i
            while i < n and text[i] in _WORD_CHARS:
                i += 1
            tokens.append(_Token("word", text[start:i], start, i))
        else:
            punct = next((p for p in _PUNCT if text.startswith(p, i)), None)
            if punct is None:
                raise SelectorError(f"unexpected character {ch!r}", text, i)
            tokens.append(_Token(punct, punct, i, i + len(punct)))
            i += len(punct)


# --- parser -----------------------------------------------------------------
#
#   selector := or-expr END | END
#   or-expr  := and-expr ("||" and-expr)*
#   and-expr := unary ("&&" unary)*
#   unary    := "!"* primary
#   primary  := "(" or-expr ")" | "all" "(" ")" | "global" "(" ")"
#             | "has" "(" KEY ")" | KEY op
#   op       := ("==" | "!=" | "contains" | "starts" "with" | "ends" "with") STRING
#             | ("in" | "not" "in") "{" [STRING ("," STRING)*] "}"


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0

    def error(self, reason: str, tok: _Token) -> SelectorError:
        found = None if tok.kind == "end" else repr(self.text[tok.pos : tok.end])
        return SelectorError(reason, self.text, tok.pos, found)

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def advance(self) -> _Token:
        tok = self.tokens[self.i]
        if tok.kind != "end":
            self.i += 1
        return tok

    def expect(self, kind: str, what: str) -> _Token:
        if self.peek().kind != kind:
            raise self.error(f"expected {what}", self.peek())
        return self.advance()

    def expect_word(self, word: str) -> None:
        tok = self.peek()
        if tok.kind != "word" or tok.value != word:
            raise self.error(f"expected '{word}'", tok)
        self.advance()

    def enter(self, tok: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise SelectorError(f"nested deeper than {MAX_DEPTH} levels", self.text, tok.pos)

    def parse(self) -> Selector:
        if self.peek().kind == "end":
            return All()
        selector = self.parse_or()
        if self.peek().kind != "end":
            raise self.error("unexpected trailing text", self.peek())
        return selector

    def parse_or(self) -> Selector:
        terms = [self.parse_and()]
        while self.peek().kind == "||":
            self.advance()
            terms.append(self.parse_and())
        return terms[0] if len(terms) == 1 else Or(tuple(terms))

    def parse_and(self) -> Selector:
        terms = [self.parse_unary()]
        while self.peek().kind == "&&":
            self.advance()
            terms.append(self.parse_unary())
        return terms[0] if len(terms) == 1 else And(tuple(terms))

    def parse_unary(self) -> Selector:
        bangs = 0
        while self.peek().kind == "!":
            self.enter(self.advance())
            bangs += 1
        selector = self.parse_primary()
        for _ in range(bangs):
            selector = Not(selector)
        self.depth -= bangs
        return selector

    def parse_primary(self) -> Selector:
        tok = self.advance()
        if tok.kind == "(":
            self.enter(tok)
            selector = self.parse_or()
            self.expect(")", "')'")
            self.depth -= 1
            return selector
        if tok.kind != "word":
            raise self.error("expected a label key, has(), all(), '!' or '('", tok)
        if self.peek().kind == "(":
            return self.parse_function(tok)
        return self.parse_comparison(tok)

    def parse_function(self, name: _Token) -> Selector:
        if name.value not in ("all", "global", "has"):
            raise self.error(f"unknown function {name.value!r}", name)
        self.advance()  # "("
        selector: Selector
        if name.value == "has":
            selector = Has(self.key(self.expect("word", "a label key")))
        else:
            selector = All() if name.value == "all" else Global()
        self.expect(")", "')'")
        return selector

    def key(self, tok: _Token) -> str:
        problem = _key_problem(tok.value)
        if problem:
            raise SelectorError(f"invalid label key {tok.value!r}: {problem}", self.text, tok.pos)
        return tok.value

    def parse_comparison(self, key_tok: _Token) -> Selector:
        key = self.key(key_tok)
        op = self.advance()
        word = op.value if op.kind == "word" else None
        if op.kind in ("==", "!="):
            value = self.expect("string", f"a quoted string after '{op.kind}'").value
            return Eq(key, value) if op.kind == "==" else Ne(key, value)
        if word == "contains":
            return Contains(key, self.expect("string", "a quoted string after 'contains'").value)
        if word in ("starts", "ends"):
            self.expect_word("with")
            value = self.expect("string", f"a quoted string after '{word} with'").value
            return StartsWith(key, value) if word == "starts" else EndsWith(key, value)
        if word == "in":
            return In(key, self.parse_set())
        if word == "not":
            self.expect_word("in")
            return NotIn(key, self.parse_set())
        raise self.error(
            f"expected ==, !=, in, not in, contains, starts with or ends with after {key!r}", op
        )

    def parse_set(self) -> frozenset[str]:
        self.expect("{", "'{'")
        values: list[str] = []
        if self.peek().kind != "}":
            values.append(self.expect("string", "a quoted string or '}'").value)
            while self.peek().kind == ",":
                self.advance()
                values.append(self.expect("string", "a quoted string").value)
        self.expect("}", "',' or '}'")
        return frozenset(values)


@lru_cache(maxsize=4096)
def parse(text: str) -> Selector:
    """Parse a Calico selector; "" means all(). Raises SelectorError."""
    if len(text) > MAX_LENGTH:
        raise SelectorError(
            f"selector too long ({len(text)} characters, at most {MAX_LENGTH})", text
        )
    selector = _Parser(text).parse()
    # Checked too so that parse(str(s)) == s holds: "a==''&&a==''" grows when rendered.
    if len(canonical := str(selector)) > MAX_LENGTH:
        raise SelectorError(
            f"selector too long (canonical form {len(canonical)} characters, at most {MAX_LENGTH})",
            text,
        )
    return selector


def validate(text: str) -> None:
    """Raise SelectorError unless `text` is a valid selector."""
    parse(text)


# --- Calico's print form ------------------------------------------------------


def _calico_quoted(value: str) -> str:
    # Calico's printer prefers double quotes (parser/ast.go); tortie's own prefers single.
    return f"'{value}'" if '"' in value else f'"{value}"'


def calico_string(selector: Selector) -> str:
    """The canonical string Calico's selector parser prints (parser/ast.go), which Felix
    hashes into ipset IDs: double quotes unless the value holds one, every && and ||
    group in parentheses. tortie's selector tree flattens nested && (and ||) chains, so
    for `a && (b && c)` this prints `(a && b && c)` where Calico keeps the nesting; the
    set is the same, only its name differs from Felix's then."""
    if isinstance(selector, All):
        return "all()"
    if isinstance(selector, Global):
        return "global()"
    if isinstance(selector, Has):
        return f"has({selector.key})"
    if isinstance(selector, Eq | Ne | Contains | StartsWith | EndsWith):
        return f"{selector.key} {selector.op} {_calico_quoted(selector.value)}"
    if isinstance(selector, In | NotIn):
        values = ", ".join(_calico_quoted(v) for v in sorted(selector.values))
        return f"{selector.key} {selector.op} {{{values}}}"
    if isinstance(selector, Not):
        return "!" + calico_string(selector.operand)
    if isinstance(selector, And | Or):
        joiner = f" {selector.op} "
        return "(" + joiner.join(calico_string(t) for t in selector.terms) + ")"
    raise TypeError(f"unknown selector node {type(selector).__name__}")
