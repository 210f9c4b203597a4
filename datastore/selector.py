"""Calico label selectors (policy selectors, IPPool.nodeSelector, BGPPeer selectors).

Owns the selector language of libcalico-go's `lib/selector`: a tokenizer and a
recursive-descent parser that accept exactly what Calico's accept, and a tree of frozen
nodes that evaluate against a label mapping and print Calico's canonical form
(`parser/ast.go` String(), the string Felix hashes into ipset names).

Invariants:
- the tree keeps Calico's shape: `a && b && c` is one And of three, `(a && b) && c` an
  And inside an And; a run of `!` collapses to one Not or none, `!(!a)` stays two;
- `str(s)` is Calico's String(): double quotes unless the value holds one, every && and
  || group in parentheses, `in` sets sorted and de-duplicated; == and hash go by it;
- parse(str(s)) == s, except that a Not directly inside a Not prints as Calico prints it
  (`!!a`), which reads back as `a` (Calico does the same); one more round is stable;
- "" is all(); label keys are runs of `[A-Za-z0-9_./-]` of 1-512 characters;
- tortie's safety bounds, which Calico lacks: input (and its canonical form) at most
  4096 characters, parentheses nested at most 100 deep; beyond them a SelectorError,
  never a RecursionError.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

__all__ = [
    "All",
    "And",
    "Contains",
    "EndsWith",
    "Eq",
    "Global",
    "Has",
    "In",
    "MAX_DEPTH",
    "MAX_LABEL_LENGTH",
    "MAX_LENGTH",
    "Ne",
    "Not",
    "NotIn",
    "Or",
    "Selector",
    "SelectorError",
    "StartsWith",
    "Token",
    "parse",
    "tokenize",
    "validate",
]

MAX_LENGTH = 4096
MAX_DEPTH = 100
MAX_LABEL_LENGTH = 512  # tokenizer.MaxLabelLength

# tokenizer.identifierChar: what a label key is made of.
_LABEL_CHARS = frozenset(string.ascii_letters + string.digits + "_./-")
# tokenizer.trimWhitespace: only spaces and tabs; a newline is an unexpected character.
_SPACE = " \t"


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
    """Why `key` is not a label key Calico's tokenizer reads (tokenizer.ValidLabel)."""
    if not key:
        return "a label key must not be empty"
    if len(key) > MAX_LABEL_LENGTH:
        return f"a label key has at most {MAX_LABEL_LENGTH} characters (this one {len(key)})"
    if not _LABEL_CHARS.issuperset(key):
        return "a label key contains only letters, digits, '_', '.', '/' and '-'"
    return None


def _check_key(key: str) -> None:
    problem = _key_problem(key)
    if problem:
        raise SelectorError(f"invalid label key {key!r}: {problem}")


def _check_value(value: str) -> None:
    # Strings have no escapes, so a value holding both quotes cannot be written back.
    if "'" in value and '"' in value:
        raise SelectorError(f"label value {value!r} contains both quote characters")


def _quote(value: str) -> str:
    # ast.go appendLabelOpAndQuotedString: double quotes unless the value holds one.
    return f"'{value}'" if '"' in value else f'"{value}"'


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
        # ast.go collectInOpFragments over a StringSet (sorted, de-duplicated).
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
        # No parentheses of its own: an && / || operand prints its own.
        return f"!{self.operand}"


@dataclass(frozen=True, eq=False)
class _Chain(Selector):
    """n-ary && / ||, as Calico's AndNode / OrNode: one node per chain as written, so
    `a && b && c` is one node and `(a && b) && c` two (their canonical strings differ)."""

    terms: tuple[Selector, ...]
    op = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "terms", tuple(self.terms))
        if len(self.terms) < 2:
            raise SelectorError(f"{type(self).__name__} needs at least two terms")

    def __str__(self) -> str:
        return "(" + f" {self.op} ".join(str(term) for term in self.terms) + ")"


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


# --- tokenizer (libcalico-go/lib/selector/tokenizer/tokenizer.go) ------------


class Token(NamedTuple):
    """One token. `kind` is the operator or punctuation itself ("==", "not in", "(", ...),
    or "label", "string", "has" (value: its key), "all", "global" or "end"."""

    kind: str
    value: str
    pos: int
    end: int


_PUNCT = {"(": "(", ")": ")", "{": "{", "}": "}", ",": ","}
_PAIRS = {"=": "==", "&": "&&", "|": "||"}
# Operators read only right after a label, in Calico's order ("not in" before "in").
_OPERATORS = (
    ("contains",),
    ("starts", "with"),
    ("ends", "with"),
    ("not", "in"),
    ("in",),
)
_FUNCTIONS = ("has(", "all(", "global(")


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in _SPACE:
        i += 1
    return i


def _at_word_end(text: str, i: int) -> bool:
    return i == len(text) or text[i] not in _LABEL_CHARS


def _cut_operator(text: str, i: int) -> tuple[str, int] | None:
    """The operator at `i` and where it ends: the words of a two-word one may be run
    together or apart (`startswith`, `starts  with`; spaces after it are part of it, as in
    cutMultiWordPrefixCheckBreak), and it must end at a word boundary."""
    for words in _OPERATORS:
        j = i
        for word in words:
            if not text.startswith(word, j):
                break
            j += len(word)
            if len(words) > 1:
                j = _skip_space(text, j)
        else:
            if _at_word_end(text, j):
                return " ".join(words), j
    return None


def _cut_label(text: str, i: int, missing: str) -> int:
    """Where the label at `i` ends; SelectorError(`missing`) if there is none, or if it
    is too long."""
    j = i
    while j < len(text) and text[j] in _LABEL_CHARS:
        j += 1
    if j == i:
        found = repr(text[i]) if i < len(text) else None
        raise SelectorError(missing, text, i, found)
    if j - i > MAX_LABEL_LENGTH:
        raise SelectorError(
            f"label key too long ({j - i} characters, at most {MAX_LABEL_LENGTH})", text, i
        )
    return j


def tokenize(text: str) -> list[Token]:
    """Calico's tokens of `text`, ending with an "end" token. Raises SelectorError."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while True:
        i = _skip_space(text, i)
        if i == n:
            tokens.append(Token("end", "", n, n))
            return tokens
        ch = text[i]
        after_label = bool(tokens) and tokens[-1].kind == "label"
        if ch in _PUNCT:
            tokens.append(Token(_PUNCT[ch], ch, i, i + 1))
            i += 1
        elif ch in "'\"":
            close = text.find(ch, i + 1)
            if close < 0:
                raise SelectorError("unterminated string", text, i)
            tokens.append(Token("string", text[i + 1 : close], i, close + 1))
            i = close + 1
        elif ch == "!":
            kind = "!=" if text.startswith("!=", i) else "!"
            tokens.append(Token(kind, kind, i, i + len(kind)))
            i += len(kind)
        elif ch in _PAIRS:
            pair = _PAIRS[ch]
            if not text.startswith(pair, i):
                raise SelectorError(f"expected {pair}", text, i, repr(ch))
            tokens.append(Token(pair, pair, i, i + 2))
            i += 2
        elif after_label:
            found = _cut_operator(text, i)
            if found is None:
                raise SelectorError(
                    f"expected an operator after label {tokens[-1].value!r} (==, !=, in, "
                    "not in, contains, starts with or ends with)",
                    text,
                    i,
                )
            tokens.append(Token(found[0], found[0], i, found[1]))
            i = found[1]
        elif function := next((f for f in _FUNCTIONS if text.startswith(f, i)), None):
            start, j = i, _skip_space(text, i + len(function))
            key = ""
            if function == "has(":
                end = _cut_label(text, j, "expected a label key in has()")
                key, j = text[j:end], _skip_space(text, end)
            if not text.startswith(")", j):
                raise SelectorError(f"no closing ')' after {function}", text, j)
            tokens.append(Token(function[:-1], key, start, j + 1))
            i = j + 1
        else:
            end = _cut_label(text, i, "unexpected character")
            tokens.append(Token("label", text[i:end], i, end))
            i = end


# --- parser (libcalico-go/lib/selector/parser/parser.go) ---------------------
#
#   selector  := or-expr END | END
#   or-expr   := and-expr ("||" and-expr)*
#   and-expr  := operation ("&&" operation)*
#   operation := "!"* ( "(" or-expr ")" | has(KEY) | all() | global()
#                      | LABEL ("==" | "!=" | contains | starts with | ends with) STRING
#                      | LABEL (in | not in) "{" (STRING ("," STRING)*)? ","? "}" )

_STRING_OPERATORS = {
    "==": Eq,
    "!=": Ne,
    "contains": Contains,
    "starts with": StartsWith,
    "ends with": EndsWith,
}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    def error(self, reason: str, tok: Token) -> SelectorError:
        found = None if tok.kind == "end" else repr(self.text[tok.pos : tok.end])
        return SelectorError(reason, self.text, tok.pos, found)

    def peek(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind != "end":
            self.i += 1
        return tok

    def expect(self, kind: str, what: str) -> Token:
        if self.peek().kind != kind:
            raise self.error(f"expected {what}", self.peek())
        return self.advance()

    def parse(self) -> Selector:
        if self.peek().kind == "end":
            return All()
        selector = self.parse_or()
        if self.peek().kind != "end":
            raise self.error("unexpected content at end of selector", self.peek())
        return selector

    def parse_or(self) -> Selector:
        terms = [self.parse_and()]
        while self.peek().kind == "||":
            self.advance()
            terms.append(self.parse_and())
        return terms[0] if len(terms) == 1 else Or(tuple(terms))

    def parse_and(self) -> Selector:
        terms = [self.parse_operation()]
        while self.peek().kind == "&&":
            self.advance()
            terms.append(self.parse_operation())
        return terms[0] if len(terms) == 1 else And(tuple(terms))

    def parse_operation(self) -> Selector:
        negated = False
        while self.peek().kind == "!":  # a run of '!' is one negation or none
            self.advance()
            negated = not negated
        tok = self.advance()
        selector: Selector
        if tok.kind == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise SelectorError(
                    f"parentheses nested deeper than {MAX_DEPTH} levels", self.text, tok.pos
                )
            selector = self.parse_or()
            self.expect(")", "')'")
            self.depth -= 1
        elif tok.kind == "has":
            selector = Has(tok.value)
        elif tok.kind == "all":
            selector = All()
        elif tok.kind == "global":
            selector = Global()
        elif tok.kind == "label":
            selector = self.parse_comparison(tok)
        else:
            raise self.error("expected a label key, has(), all(), global(), '!' or '('", tok)
        return Not(selector) if negated else selector

    def parse_comparison(self, label: Token) -> Selector:
        op = self.advance()
        if op.kind in _STRING_OPERATORS:
            value = self.expect("string", f"a quoted string after '{op.kind}'").value
            return _STRING_OPERATORS[op.kind](label.value, value)
        if op.kind in ("in", "not in"):
            self.expect("{", f"a set literal '{{' after '{op.kind}'")
            values: list[str] = []
            while self.peek().kind == "string":
                values.append(self.advance().value)
                if self.peek().kind != ",":
                    break
                self.advance()  # a trailing comma before '}' is allowed
            self.expect("}", "a quoted string, ',' or '}'" if not values else "',' or '}'")
            return (In if op.kind == "in" else NotIn)(label.value, frozenset(values))
        raise self.error(
            f"expected ==, !=, in, not in, contains, starts with or ends with after "
            f"{label.value!r}",
            op,
        )


@lru_cache(maxsize=4096)
def parse(text: str) -> Selector:
    """Parse a Calico selector; "" means all(). Raises SelectorError."""
    if len(text) > MAX_LENGTH:
        raise SelectorError(
            f"selector too long ({len(text)} characters, at most {MAX_LENGTH})", text
        )
    selector = _Parser(text).parse()
    # Checked too so that every selector tortie stores prints within the bound:
    # "a==''&&a==''" grows when printed.
    if len(canonical := str(selector)) > MAX_LENGTH:
        raise SelectorError(
            f"selector too long (canonical form {len(canonical)} characters, at most {MAX_LENGTH})",
            text,
        )
    return selector


def validate(text: str) -> None:
    """Raise SelectorError unless `text` is a valid selector."""
    parse(text)
