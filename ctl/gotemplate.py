"""A bounded subset of Go's text/template, for `ctl get -o go-template=...`.

No maintained Python library implements Go's template language (Jinja2, Chevron and
friends differ in syntax and semantics), so this module parses and executes the part
of it that calicoctl users write, with Go's rules (text/template/parse/lex.go, parse.go,
exec.go, funcs.go):

* text; actions `{{PIPELINE}}`; trim markers `{{- ` and ` -}}`; comments `{{/* */}}`;
* `{{if}}` / `{{else if}}` / `{{else}}` / `{{end}}`, `{{range}}` (with `$i, $e :=`) and
  `{{with}}` (also `{{else with}}`), each with its `{{else}}`; Go's truth;
* operands: `.`, field chains `.A.B`, `$`, `$x.A`, `(PIPELINE).A`, string (quoted and
  raw), number and boolean literals; `$x := ...`, `$x = ...`; pipes `a | b`;
* functions: `and or not len index printf (%s %d %v %q) eq ne lt le gt ge`, and
  calicoctl's own `join`, `joinAndTruncate` and `config "asnumber"`.

Everything else (`define`, `template`, `block`, `break`, `continue`, `nil`, character
constants, other functions and printf verbs, methods) is refused when the template is
parsed, naming the construct and where it is, so nothing is ever half-printed. Errors
use Go's wording: `template: get:1: function "foo" not defined` when parsing,
`template: get:1:2: executing "get" at <.Foo>: can't evaluate field Foo in type ...`
when executing. Execution builds the whole text before returning it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Union

from .gofields import STRUCTS
from .govalue import (
    NO_VALUE,
    GoValue,
    GoValueError,
    fmt_v,
    format_v,
    go_quote,
    indirect,
    map_elem_type,
    struct_field,
    truth,
    wrap,
)

NAME = "get"  # calicoctl's template name, which every error message carries
_SPACE = " \t\r\n"
FUNCTIONS = {"and", "or", "not", "len", "index", "printf", "eq", "ne", "lt", "le", "gt", "ge",
             "join", "joinAndTruncate", "config"}
# Go's other builtins: valid Go, not implemented here.
_UNSUPPORTED_FUNCTIONS = {"html", "js", "urlquery", "print", "println", "call", "slice"}
_UNSUPPORTED_KEYWORDS = {"define", "template", "block", "break", "continue"}
_KEYWORDS = {"if", "else", "end", "range", "with", *_UNSUPPORTED_KEYWORDS}
_PRINTF_VERB = re.compile(r"%([-+# 0]*)(\d*)(?:\.(\d*))?(.)", re.S)


class TemplateError(ValueError):
    """A template that does not parse, or fails while executing (Go's wording)."""


# ---- lexing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    typ: str  # text left right space field dot var ident keyword string number bool nil
    #           declare assign pipe lparen rparen comma char eof
    val: str
    pos: int
    line: int
    trim: bool = False  # a `{{- ` or ` -}}` delimiter


def _line_at(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _parse_error(text: str, pos: int, message: str) -> TemplateError:
    return TemplateError(f"template: {NAME}:{_line_at(text, pos)}: {message}")


def _unsupported(text: str, pos: int, what: str) -> TemplateError:
    line = _line_at(text, pos)
    col = pos - (text.rfind("\n", 0, pos) + 1)
    return TemplateError(f"template: {NAME}:{line}:{col}: {what} is not supported by ctl's "
                         "go-template")


def _has_left_trim(s: str) -> bool:
    return len(s) >= 2 and s[0] == "-" and s[1] in _SPACE


def _has_right_trim(s: str) -> bool:
    return len(s) >= 2 and s[0] in _SPACE and s[1] == "-"


_NUMBER = re.compile(r"[+-]?(0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|"
                     r"(\d[\d_]*)?\.?\d[\d_]*([eE][+-]?\d+)?)")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
            "\\": "\\", '"': '"', "'": "'"}


def _unquote(text: str, literal: str, pos: int) -> str:
    """A Go interpreted string literal's value (strconv.Unquote)."""
    out, i, body = [], 0, literal[1:-1]
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        e = body[i + 1]
        if e in _ESCAPES:
            out.append(_ESCAPES[e])
            i += 2
        elif e in "xuU":
            n = {"x": 2, "u": 4, "U": 8}[e]
            digits = body[i + 2:i + 2 + n]
            if len(digits) != n or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise _parse_error(text, pos, f"invalid syntax: {literal}")
            out.append(chr(int(digits, 16)))
            i += 2 + n
        elif e in "01234567":
            out.append(chr(int(body[i + 1:i + 4], 8)))
            i += 4
        else:
            raise _parse_error(text, pos, f"invalid syntax: {literal}")
    return "".join(out)


def lex(text: str) -> list[Token]:
    """Go's lexer with the default delimiters: text, then action tokens between {{ }}."""
    tokens: list[Token] = []
    pos = 0
    trim_next_text = False
    while True:
        start = text.find("{{", pos)
        chunk = text[pos:] if start < 0 else text[pos:start]
        if start >= 0 and _has_left_trim(text[start + 2:]):
            chunk = chunk.rstrip(_SPACE)
        if trim_next_text:
            chunk = chunk.lstrip(_SPACE)
        if chunk:
            tokens.append(Token("text", chunk, pos, _line_at(text, pos)))
        if start < 0:
            tokens.append(Token("eof", "", len(text), _line_at(text, len(text))))
            return tokens
        left_trim = _has_left_trim(text[start + 2:])
        p = start + 2 + (2 if left_trim else 0)
        if text.startswith("/*", p):
            end = text.find("*/", p + 2)
            if end < 0:
                raise _parse_error(text, start, "unclosed comment")
            after = end + 2
            trim_next_text = _has_right_trim(text[after:])
            if trim_next_text:
                after += 2
            if not text.startswith("}}", after):
                raise _parse_error(text, start, "comment ends before closing delimiter")
            pos = after + 2
            continue
        tokens.append(Token("left", "{{", start, _line_at(text, start), left_trim))
        pos, trim_next_text = _lex_action(text, p, tokens)


def _lex_action(text: str, p: int, tokens: list[Token]) -> tuple[int, bool]:
    """The tokens of one action from p; returns where the text after it starts."""
    parens = 0
    while True:
        line = _line_at(text, p)
        if _has_right_trim(text[p:]) and text.startswith("}}", p + 2):
            tokens.append(Token("right", "}}", p, line, True))
            return p + 4, True
        if text.startswith("}}", p):
            if parens:
                raise _parse_error(text, p, "unclosed left paren")
            tokens.append(Token("right", "}}", p, line))
            return p + 2, False
        if p >= len(text):
            raise _parse_error(text, p, "unclosed action")
        c = text[p]
        if c in _SPACE:
            q = p
            while q < len(text) and text[q] in _SPACE and not (
                    _has_right_trim(text[q:]) and text.startswith("}}", q + 2)):
                q += 1
            tokens.append(Token("space", text[p:q], p, line))
            p = q
            continue
        if c == '"':
            q = p + 1
            while q < len(text) and text[q] != '"':
                if text[q] == "\\":
                    q += 1
                if q < len(text) and text[q] == "\n":
                    raise _parse_error(text, p, "unterminated quoted string")
                q += 1
            if q >= len(text):
                raise _parse_error(text, p, "unterminated quoted string")
            literal = text[p:q + 1]
            tokens.append(Token("string", literal, p, line))
            p = q + 1
        elif c == "`":
            q = text.find("`", p + 1)
            if q < 0:
                raise _parse_error(text, p, "unterminated raw quoted string")
            tokens.append(Token("rawstring", text[p:q + 1], p, line))
            p = q + 1
        elif c == "'":
            raise _unsupported(text, p, "a character constant")
        elif c == ":":
            if not text.startswith(":=", p):
                raise _parse_error(text, p, "expected :=")
            tokens.append(Token("declare", ":=", p, line))
            p += 2
        elif c in "=|(),":
            typ = {"=": "assign", "|": "pipe", "(": "lparen", ")": "rparen", ",": "comma"}[c]
            parens += {"(": 1, ")": -1}.get(c, 0)
            if parens < 0:
                raise _parse_error(text, p, "unexpected right paren")
            tokens.append(Token(typ, c, p, line))
            p += 1
        elif c == "$":
            m = re.compile(r"\$[A-Za-z0-9_]*").match(text, p)
            assert m
            tokens.append(Token("var", m.group(), p, line))
            p = m.end()
        elif c == "." and p + 1 < len(text) and (text[p + 1].isalpha() or text[p + 1] == "_"):
            m = _IDENT.match(text, p + 1)
            assert m
            tokens.append(Token("field", "." + m.group(), p, line))
            p = m.end()
        elif c.isdigit() or (c in "+-." and p + 1 < len(text) and text[p + 1].isdigit()):
            m = _NUMBER.match(text, p)
            if not m or (m.end() < len(text) and (text[m.end()].isalnum())):
                raise _parse_error(text, p, f"bad number syntax: {text[p:p + 10]!r}")
            tokens.append(Token("number", m.group(), p, line))
            p = m.end()
        elif c == ".":
            tokens.append(Token("dot", ".", p, line))
            p += 1
        elif c.isalpha() or c == "_":
            m = _IDENT.match(text, p)
            assert m
            word = m.group()
            typ = ("keyword" if word in _KEYWORDS else "bool" if word in ("true", "false")
                   else "nil" if word == "nil" else "ident")
            tokens.append(Token(typ, word, p, line))
            p = m.end()
        else:
            raise _parse_error(text, p, f"unrecognized character in action: {c!r}")


# ---- the parse tree ---------------------------------------------------------------------


def _chain(idents: Sequence[str]) -> str:
    return "".join("." + i for i in idents)


@dataclass
class Node:
    pos: int


@dataclass
class TextNode(Node):
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass
class FieldNode(Node):
    idents: tuple[str, ...]

    def __str__(self) -> str:
        return _chain(self.idents)


@dataclass
class VariableNode(Node):
    name: str
    idents: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.name + _chain(self.idents)


@dataclass
class DotNode(Node):
    def __str__(self) -> str:
        return "."


@dataclass
class IdentifierNode(Node):
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass
class LiteralNode(Node):
    text: str  # as written
    value: GoValue

    def __str__(self) -> str:
        return self.text


@dataclass
class ChainNode(Node):
    node: PipeNode
    idents: tuple[str, ...]

    def __str__(self) -> str:
        return f"({self.node})" + _chain(self.idents)


Operand = Union[FieldNode, VariableNode, DotNode, IdentifierNode, LiteralNode, ChainNode,
                "PipeNode"]


@dataclass
class CommandNode(Node):
    args: list[Operand]

    def __str__(self) -> str:
        return " ".join(f"({a})" if isinstance(a, PipeNode) else str(a) for a in self.args)


@dataclass
class PipeNode(Node):
    decl: list[str] = field(default_factory=list)
    is_assign: bool = False
    cmds: list[CommandNode] = field(default_factory=list)

    def __str__(self) -> str:
        head = ""
        if self.decl:
            head = ", ".join(self.decl) + (" = " if self.is_assign else " := ")
        return head + " | ".join(str(c) for c in self.cmds)


@dataclass
class ActionNode(Node):
    pipe: PipeNode

    def __str__(self) -> str:
        return "{{" + str(self.pipe) + "}}"


@dataclass
class BranchNode(Node):
    kind: str  # if, range, with
    pipe: PipeNode
    body: list[Node]
    else_body: list[Node] | None

    def __str__(self) -> str:
        text = "{{" + self.kind + " " + str(self.pipe) + "}}" + "".join(map(str, self.body))
        if self.else_body is not None:
            text += "{{else}}" + "".join(map(str, self.else_body))
        return text + "{{end}}"


# ---- parsing ----------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = lex(text)
        self.i = 0
        self.vars: list[str] = ["$"]

    def error(self, token: Token, message: str) -> TemplateError:
        return TemplateError(f"template: {NAME}:{token.line}: {message}")

    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def peek_non_space(self) -> Token:
        while self.tokens[self.i].typ == "space":
            self.i += 1
        return self.tokens[self.i]

    def next_non_space(self) -> Token:
        token = self.peek_non_space()
        self.i += 1
        return token

    def parse(self) -> list[Node]:
        nodes, stop = self.item_list()
        if stop is not None:
            raise self.error(stop, f"unexpected {{{{{stop.val}}}}}")
        return nodes

    def item_list(self, in_control: bool = False) -> tuple[list[Node], Token | None]:
        """Nodes up to `{{end}}` or `{{else}}` (returned as the token that stopped it)."""
        nodes: list[Node] = []
        while True:
            token = self.next()
            if token.typ == "eof":
                if in_control:
                    raise self.error(token, "unexpected EOF")
                return nodes, None
            if token.typ == "text":
                nodes.append(TextNode(token.pos, token.val))
                continue
            after_left = self.peek().pos  # Go places an action at the token after {{
            word = self.peek_non_space()
            if word.typ == "keyword":
                if word.val in _UNSUPPORTED_KEYWORDS:
                    raise _unsupported(self.text, word.pos, f"{{{{{word.val}}}}}")
                self.next()
                if word.val == "end":
                    self.expect_right("end")
                    return nodes, word
                if word.val == "else":
                    after = self.peek_non_space()
                    if after.typ != "keyword" or after.val not in ("if", "with"):
                        self.expect_right("else")
                    return nodes, word
                nodes.append(self.control(word))
                continue
            pipe = self.pipeline("command", "right")
            nodes.append(ActionNode(after_left, pipe))

    def expect_right(self, context: str) -> None:
        token = self.next_non_space()
        if token.typ != "right":
            raise self.error(token, f"unexpected {token.val!r} in {context}")

    def control(self, word: Token) -> BranchNode:
        mark = len(self.vars)
        pipe = self.pipeline(word.val, "right")
        body, stop = self.item_list(in_control=True)
        assert stop is not None
        else_body: list[Node] | None = None
        if stop.val == "else":
            after = self.peek_non_space()
            if after.typ == "keyword" and after.val in ("if", "with"):
                if after.val != word.val:
                    raise self.error(after, f"unexpected {{{{else {after.val}}}}} in "
                                            f"{{{{{word.val}}}}}")
                # {{if a}}x{{else if b}}y{{end}} is {{if a}}x{{else}}{{if b}}y{{end}}{{end}}
                self.next()
                else_body = [self.control(after)]
            else:
                else_body, stop = self.item_list(in_control=True)
                assert stop is not None
                if stop.val != "end":
                    raise self.error(stop, "expected end; found {{else}}")
        del self.vars[mark:]
        # parse.go parseControl: the node is placed where its pipeline starts.
        return BranchNode(pipe.pos, word.val, pipe, body, else_body)

    def pipeline(self, context: str, end: str) -> PipeNode:
        start = self.peek_non_space()
        pipe = PipeNode(start.pos)
        self.declarations(pipe, context)
        while True:
            token = self.peek_non_space()
            if token.typ == end:
                self.next()
                break
            if token.typ in ("right", "rparen", "eof"):
                raise self.error(token, f"unexpected {token.val or 'EOF'!r} in {context}")
            pipe.cmds.append(self.command())
        if not pipe.cmds:
            raise self.error(start, f"missing value for {context}")
        for n, cmd in enumerate(pipe.cmds[1:], start=2):
            if isinstance(cmd.args[0], (LiteralNode, DotNode)):
                raise self.error(start, f"non executable command in pipeline stage {n}")
        if pipe.decl and not pipe.is_assign:
            self.vars.extend(pipe.decl)
        return pipe

    def declarations(self, pipe: PipeNode, context: str) -> None:
        while True:
            v = self.peek_non_space()
            if v.typ != "var":
                return
            save = self.i
            self.next()
            after = self.peek_non_space()
            if after.typ in ("declare", "assign"):
                self.next()
                pipe.is_assign = after.typ == "assign"
                if pipe.is_assign and v.val not in self.vars:
                    raise self.error(v, f"undefined variable {v.val!r}".replace("'", '"'))
                pipe.decl.append(v.val)
                return
            if after.typ == "comma" and context == "range" and not pipe.decl:
                self.next()
                pipe.decl.append(v.val)
                continue
            if after.typ == "comma":
                raise self.error(after, f"too many declarations in {context}")
            self.i = save
            return

    def command(self) -> CommandNode:
        cmd = CommandNode(self.peek_non_space().pos, [])
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                cmd.args.append(operand)
            token = self.peek()
            if token.typ == "space":
                self.next()
                continue
            if token.typ in ("right", "rparen"):
                break
            if token.typ == "pipe":
                self.next()
                break
            raise self.error(token, f"unexpected {token.val!r} in operand")
        if not cmd.args:
            raise self.error(self.peek(), "empty command")
        return cmd

    def operand(self) -> Operand | None:
        node = self.term()
        if node is None:
            return None
        idents: list[str] = []
        while self.peek().typ == "field":
            idents.append(self.next().val[1:])
        if not idents:
            return node
        if isinstance(node, FieldNode):
            return FieldNode(node.pos, node.idents + tuple(idents))
        if isinstance(node, VariableNode):
            return VariableNode(node.pos, node.name, node.idents + tuple(idents))
        if isinstance(node, PipeNode):
            return ChainNode(node.pos, node, tuple(idents))
        if isinstance(node, DotNode):
            raise self.error(self.tokens[self.i - 1], "unexpected . after term \".\"")
        raise self.error(self.tokens[self.i - 1], f"unexpected . after term {str(node)!r}")

    def term(self) -> Operand | None:
        token = self.next_non_space()
        if token.typ == "ident":
            if token.val in _UNSUPPORTED_FUNCTIONS:
                raise _unsupported(self.text, token.pos, f"the function {token.val!r}")
            if token.val not in FUNCTIONS:
                raise self.error(token, f'function "{token.val}" not defined')
            return IdentifierNode(token.pos, token.val)
        if token.typ == "dot":
            return DotNode(token.pos)
        if token.typ == "nil":
            raise _unsupported(self.text, token.pos, "nil")
        if token.typ == "var":
            if token.val not in self.vars:
                raise self.error(token, f'undefined variable "{token.val}"')
            return VariableNode(token.pos, token.val)
        if token.typ == "field":
            return FieldNode(token.pos, (token.val[1:],))
        if token.typ == "bool":
            return LiteralNode(token.pos, token.val, GoValue("bool", "bool", token.val == "true"))
        if token.typ == "number":
            return LiteralNode(token.pos, token.val, self.number(token))
        if token.typ in ("string", "rawstring"):
            value = (_unquote(self.text, token.val, token.pos) if token.typ == "string"
                     else token.val[1:-1])
            return LiteralNode(token.pos, token.val, GoValue("string", "string", value))
        if token.typ == "lparen":
            return self.pipeline("parenthesized pipeline", "rparen")
        if token.typ == "keyword":
            raise self.error(token, f"unexpected <{token.val}> in command")
        self.i -= 1
        return None

    def number(self, token: Token) -> GoValue:
        text = token.val.replace("_", "")
        try:
            if re.fullmatch(r"[+-]?0[xX][0-9a-fA-F]+|[+-]?0[bB][01]+|[+-]?0[oO]?[0-7]+|[+-]?\d+",
                            text):
                return GoValue("int", "int", int(text, 0) if not re.fullmatch(
                    r"[+-]?0[0-7]+", text) else int(text, 8))
            return GoValue("float64", "float", float(text))
        except ValueError:
            raise self.error(token, f"illegal number syntax: {token.val!r}") from None


# ---- executing --------------------------------------------------------------------------


class _ExecError(Exception):
    def __init__(self, node: object, message: str) -> None:
        super().__init__(message)
        self.node = node
        self.message = message


@dataclass(frozen=True)
class Template:
    """A parsed template: `execute` it on a Go value."""

    text: str
    nodes: tuple[Node, ...]

    def execute(self, data: GoValue, config: Callable[[str], str] | None = None) -> str:
        state = _State(self.text, [("$", data)], config)
        out: list[str] = []
        try:
            state.walk(data, list(self.nodes), out)
        except _ExecError as exc:
            raise TemplateError(state.context(exc.node, exc.message)) from None
        return "".join(out)


def parse(text: str) -> Template:
    """Parse the whole template; a TemplateError names what is wrong and where."""
    nodes = _Parser(text).parse()
    _check_printf_formats(text, nodes)
    return Template(text, tuple(nodes))


def _walk_nodes(nodes: Sequence[object]) -> list[object]:
    found: list[object] = []
    for n in nodes:
        found.append(n)
        if isinstance(n, BranchNode):
            found += _walk_nodes([n.pipe, *n.body, *(n.else_body or [])])
        elif isinstance(n, ActionNode):
            found += _walk_nodes([n.pipe])
        elif isinstance(n, PipeNode):
            found += _walk_nodes(n.cmds)
        elif isinstance(n, ChainNode):
            found += _walk_nodes([n.node])
        elif isinstance(n, CommandNode):
            found += _walk_nodes(n.args)
    return found


def _check_printf_formats(text: str, nodes: Sequence[Node]) -> None:
    """A printf whose format is a literal is checked before anything runs."""
    for n in _walk_nodes(nodes):
        if (isinstance(n, CommandNode) and isinstance(n.args[0], IdentifierNode)
                and n.args[0].name == "printf" and len(n.args) > 1
                and isinstance(n.args[1], LiteralNode) and n.args[1].value.kind == "string"):
            bad = _bad_verb(n.args[1].value.value)
            if bad:
                raise _unsupported(text, n.args[1].pos, f"the printf directive %{bad}")


def _bad_verb(fmt: str) -> str | None:
    """The first printf directive ctl does not implement (a verb other than s d v q %, a
    precision, a flag other than - and 0), without its %."""
    for m in _PRINTF_VERB.finditer(fmt):
        flags, _, precision, verb = m.groups()
        if verb not in "sdvq%" or precision is not None or flags.strip("-0"):
            return m.group()[1:]
    return None


class _State:
    def __init__(self, text: str, variables: list[tuple[str, GoValue]],
                 config: Callable[[str], str] | None) -> None:
        self.text = text
        self.vars = variables
        self.config = config

    def context(self, node: object, message: str) -> str:
        pos = getattr(node, "pos", 0)
        line = _line_at(self.text, pos)
        col = pos - (self.text.rfind("\n", 0, pos) + 1)
        where = str(node)
        if len(where) > 20:
            where = where[:20] + "..."
        return f'template: {NAME}:{line}:{col}: executing "{NAME}" at <{where}>: {message}'

    # -- statements --

    def walk(self, dot: GoValue, nodes: list[Node], out: list[str]) -> None:
        for node in nodes:
            if isinstance(node, TextNode):
                out.append(node.text)
            elif isinstance(node, ActionNode):
                value = self.pipeline(dot, node.pipe)
                if not node.pipe.decl:
                    try:
                        out.append(format_v(value))
                    except GoValueError as exc:
                        raise _ExecError(node, str(exc)) from None
            elif isinstance(node, BranchNode):
                mark = len(self.vars)
                if node.kind == "range":
                    self.walk_range(dot, node, out)
                else:
                    value = self.pipeline(dot, node.pipe)
                    if truth(_indirect_interface(value)):
                        self.walk(value if node.kind == "with" else dot, node.body, out)
                    elif node.else_body is not None:
                        self.walk(dot, node.else_body, out)
                del self.vars[mark:]

    def walk_range(self, dot: GoValue, node: BranchNode, out: list[str]) -> None:
        value, _ = indirect(self.pipeline(dot, node.pipe))
        items: list[tuple[GoValue, GoValue]] = []
        if value.kind == "slice":
            items = [(GoValue("int", "int", i), e) for i, e in enumerate(value.value or ())]
        elif value.kind == "map":
            items = [(GoValue("string", "string", k), e)
                     for k, e in sorted((value.value or {}).items())]
        elif value.kind in ("int", "uint"):
            # Go 1.22: a range over an integer counts from 0.
            if len(node.pipe.decl) > 1:
                raise _ExecError(node, f"can't use {value.value} to iterate over more than "
                                       "one variable")
            items = [(GoValue("int", "int", i), GoValue(value.type, value.kind, i))
                     for i in range(value.value)]
        elif value.kind != "invalid":
            raise _ExecError(node, f"range can't iterate over {self.show(node, value)}")
        decl, top = node.pipe.decl, len(self.vars)
        for index, elem in items:
            # exec.go walkRange: the element goes to the last variable, the index to the
            # first of two (pushed once by the pipeline, reassigned on each pass).
            bound = list(zip(decl[::-1], (elem, index), strict=False))
            for depth, (name, v) in enumerate(bound, start=1):
                if node.pipe.is_assign:
                    self.set_var(name, v)
                else:
                    self.vars[top - depth] = (name, v)
            mark = len(self.vars)
            self.walk(elem, node.body, out)
            del self.vars[mark:]
        if not items and node.else_body is not None:
            self.walk(dot, node.else_body, out)

    def show(self, node: object, value: GoValue) -> str:
        try:
            return format_v(value)
        except GoValueError as exc:
            raise _ExecError(node, str(exc)) from None

    def set_var(self, name: str, value: GoValue) -> None:
        """`$x = value`: the innermost binding of $x changes."""
        for i in range(len(self.vars) - 1, -1, -1):
            if self.vars[i][0] == name:
                self.vars[i] = (name, value)
                return
        raise AssertionError(f"undefined variable {name}")  # the parser checked

    def var(self, name: str) -> GoValue:
        for n, v in reversed(self.vars):
            if n == name:
                return v
        raise AssertionError(f"undefined variable {name}")  # the parser checked

    # -- expressions --

    def pipeline(self, dot: GoValue, pipe: PipeNode) -> GoValue:
        value: GoValue | None = None
        for cmd in pipe.cmds:
            value = self.command(dot, cmd, value)
        assert value is not None
        for name in pipe.decl:
            if pipe.is_assign:
                self.set_var(name, value)
            else:
                self.vars.append((name, value))
        return value

    def command(self, dot: GoValue, cmd: CommandNode, final: GoValue | None) -> GoValue:
        first = cmd.args[0]
        if isinstance(first, IdentifierNode):
            return self.call(dot, cmd, first.name, cmd.args[1:], final)
        if len(cmd.args) > 1 or final is not None:
            if isinstance(first, (FieldNode, VariableNode, ChainNode)):
                last = first.idents[-1] if first.idents else str(first)
                raise _ExecError(first, f"{last} has arguments but cannot be invoked as "
                                        "function")
            raise _ExecError(first, f"can't give argument to non-function {first}")
        return self.arg(dot, first)

    def arg(self, dot: GoValue, node: Operand) -> GoValue:
        if isinstance(node, DotNode):
            return dot
        if isinstance(node, LiteralNode):
            return node.value
        if isinstance(node, FieldNode):
            return self.fields(node, dot, node.idents)
        if isinstance(node, VariableNode):
            return self.fields(node, self.var(node.name), node.idents)
        if isinstance(node, ChainNode):
            return self.fields(node, self.pipeline(dot, node.node), node.idents)
        if isinstance(node, PipeNode):
            mark = len(self.vars)
            value = self.pipeline(dot, node)
            del self.vars[mark:]
            return value
        assert isinstance(node, IdentifierNode)
        return self.call(dot, CommandNode(node.pos, [node]), node.name, [], None)

    def fields(self, node: object, receiver: GoValue, idents: Sequence[str]) -> GoValue:
        for name in idents:
            receiver = self.field(node, receiver, name)
        return receiver

    def field(self, node: object, receiver: GoValue, name: str) -> GoValue:
        """exec.go evalField: a struct's field, a map's key, or Go's error."""
        if receiver.kind == "invalid":
            return NO_VALUE
        typ = receiver.type
        value, is_nil = indirect(receiver)
        if value.kind == "struct":
            found = struct_field(value, name)
            if found is not None:
                return found
        elif value.kind == "map":
            found = (value.value or {}).get(name)
            return found if isinstance(found, GoValue) else NO_VALUE
        elif is_nil:
            target = value.type.lstrip("*")
            if value.kind == "iface" or target not in STRUCTS or struct_field(
                    wrap(target, {}), name) is not None:
                raise _ExecError(node, f"nil pointer evaluating {typ}.{name}")
        elif value.kind == "opaque":
            raise _ExecError(node, f"ctl cannot evaluate the fields of {typ}")
        raise _ExecError(node, f"can't evaluate field {name} in type {typ}")

    def call(self, dot: GoValue, cmd: CommandNode, name: str, args: Sequence[Operand],
             final: GoValue | None) -> GoValue:
        if name in ("and", "or"):
            return self.and_or(dot, cmd, name, args, final)
        values = [self.arg(dot, a) for a in args]
        if final is not None:
            values.append(final)
        try:
            return _call(name, values, self.config)
        except GoValueError as exc:
            raise _ExecError(cmd, f"error calling {name}: {exc}") from None
        except _ArgError as exc:
            raise _ExecError(cmd, str(exc)) from None

    def and_or(self, dot: GoValue, cmd: CommandNode, name: str, args: Sequence[Operand],
               final: GoValue | None) -> GoValue:
        """Go 1.18's and/or: arguments evaluated in order until the answer is known."""
        count = len(args) + (final is not None)
        if count < 1:
            raise _ExecError(cmd, f"wrong number of args for {name}: want at least 1 got 0")
        value = NO_VALUE
        for i in range(count):
            value = self.arg(dot, args[i]) if i < len(args) else final or NO_VALUE
            if truth(value) == (name == "or"):
                return value
        return value


class _ArgError(Exception):
    pass


def _indirect_interface(v: GoValue) -> GoValue:
    return v.value if v.kind == "iface" and v.value is not None else v


def _arity(name: str, values: list[GoValue], want: int, at_least: bool = False) -> None:
    if len(values) < want or (not at_least and len(values) != want):
        more = "at least " if at_least else ""
        raise _ArgError(f"wrong number of args for {name}: want {more}{want} got {len(values)}")


def _want_string(v: GoValue) -> str:
    if v.kind != "string":
        raise _ArgError(f"wrong type for value; expected string; got {v.type or 'nil'}")
    return str(v.value)


def _want_int(v: GoValue) -> int:
    if v.kind not in ("int", "uint"):
        raise _ArgError(f"wrong type for value; expected int; got {v.type or 'nil'}")
    return int(v.value)


def _basic(v: GoValue) -> str:
    v = _indirect_interface(v)
    if v.kind in ("string", "int", "uint", "float", "bool"):
        return v.kind
    raise GoValueError("invalid type for comparison")


def _compare(name: str, a: GoValue, b: GoValue) -> bool:
    ka, kb = _basic(a), _basic(b)
    x, y = _indirect_interface(a).value, _indirect_interface(b).value
    if ka != kb and {ka, kb} != {"int", "uint"}:
        raise GoValueError("incompatible types for comparison")
    if name in ("eq", "ne"):
        return bool(x == y) == (name == "eq")
    if ka == "bool":
        raise GoValueError("invalid type for comparison")
    return bool({"lt": x < y, "le": x <= y, "gt": x > y, "ge": x >= y}[name])


def join_texts(texts: Sequence[str], separator: str, max_len: int = 0) -> str:
    """calicoctl's joinAndTruncate on strings: joined, and cut with `...` once the text
    passes max_len bytes (0: never)."""
    out = b""
    sep = separator.encode()
    for i, text in enumerate(texts):
        out += (sep if i else b"") + text.encode()
        if max_len > 0 and len(out) > max_len:
            return (out[:max_len - 3] + b"...").decode(errors="ignore")
    return out.decode()


def _join(items: GoValue, separator: str, max_len: int) -> str:
    """printer.go joinAndTruncate: a map as sorted k=v, a slice item by item, anything
    else as a slice of one."""
    if items.kind == "invalid":
        return ""
    if items.kind == "map":
        texts = sorted(f"{k}={fmt_v(v, 0)}" for k, v in (items.value or {}).items())
    elif items.kind == "slice":
        texts = [fmt_v(x, 0) for x in items.value or ()]
    else:
        texts = [fmt_v(items, 0)]
    return join_texts(texts, separator, max_len)


def _index(item: GoValue, keys: list[GoValue]) -> GoValue:
    item = _indirect_interface(item)
    for key in keys:
        target, is_nil = indirect(item)
        if target.kind == "invalid":
            raise GoValueError("index of untyped nil")
        if is_nil:
            raise GoValueError("index of nil pointer")
        if target.kind == "slice":
            if key.kind not in ("int", "uint"):
                raise GoValueError(f"cannot index slice/array with type {key.type}")
            elems = target.value or ()
            if not 0 <= key.value < len(elems):
                raise GoValueError(f"index out of range: {key.value}")
            item = elems[key.value]
        elif target.kind == "map":
            if key.kind != "string":
                raise GoValueError(f"value has type {key.type}; should be string")
            found = (target.value or {}).get(key.value)
            item = found if found is not None else wrap(map_elem_type(target.type), None)
        else:
            raise GoValueError(f"can't index item of type {target.type}")
    return item


def _call(name: str, values: list[GoValue], config: Callable[[str], str] | None) -> GoValue:
    def text(s: str) -> GoValue:
        return GoValue("string", "string", s)

    def boolean(b: bool) -> GoValue:
        return GoValue("bool", "bool", b)

    if name == "not":
        _arity(name, values, 1)
        return boolean(not truth(values[0]))
    if name == "len":
        _arity(name, values, 1)
        target, is_nil = indirect(values[0])
        if is_nil or target.kind == "invalid":
            raise GoValueError("len of nil pointer")
        if target.kind in ("slice", "map"):
            return GoValue("int", "int", len(target.value or ()))
        if target.kind == "string":
            return GoValue("int", "int", len(str(target.value).encode()))
        raise GoValueError(f"len of type {target.type}")
    if name == "index":
        _arity(name, values, 1, at_least=True)
        return _index(values[0], values[1:])
    if name == "printf":
        _arity(name, values, 1, at_least=True)
        return text(sprintf(_want_string(values[0]), values[1:]))
    if name in ("eq", "ne", "lt", "le", "gt", "ge"):
        if name == "eq":
            _arity(name, values, 1, at_least=True)
            if len(values) == 1:
                raise GoValueError("missing argument for comparison")
            return boolean(any(_compare("eq", values[0], v) for v in values[1:]))
        _arity(name, values, 2)
        return boolean(_compare(name, values[0], values[1]))
    if name == "join":
        _arity(name, values, 2)
        return text(_join(values[0], _want_string(values[1]), 0))
    if name == "joinAndTruncate":
        _arity(name, values, 3)
        return text(_join(values[0], _want_string(values[1]), _want_int(values[2])))
    assert name == "config"
    _arity(name, values, 1)
    key = _want_string(values[0])
    if key.lower() != "asnumber" or config is None:
        raise GoValueError("unhandled config type")
    return text(config(key))


def _printf_operand(verb: str, v: GoValue) -> str:
    """One operand of printf: %v as fmt prints it, %s/%d/%q where Go accepts the type,
    fmt's %!verb(type=value) where it does not."""
    if v.kind == "invalid":
        return f"%!{verb}(<nil>)"
    target = _indirect_interface(v)
    if verb == "v":
        return fmt_v(v, 0)
    if verb == "d" and target.kind in ("int", "uint"):
        return str(target.value)
    if verb == "s" and target.kind in ("string", "stringer", "time"):
        return fmt_v(target, 0)
    if verb == "s" and target.kind in ("slice", "map", "struct"):
        return fmt_v(target, 0)
    if verb == "q" and target.kind in ("string", "stringer"):
        return go_quote(str(target.value))
    if verb == "q" and target.kind == "slice" and all(
            x.kind == "string" for x in target.value or ()):
        return "[" + " ".join(go_quote(x.value) for x in target.value or ()) + "]"
    return f"%!{verb}({v.type}={fmt_v(v, 0)})"


def sprintf(fmt: str, args: Sequence[GoValue]) -> str:
    """fmt.Sprintf for the verbs %s %d %v %q and %% with flags `-` and `0` and a width."""
    bad = _bad_verb(fmt)
    if bad:
        raise GoValueError(f"the printf directive %{bad} is not supported by ctl's "
                           "go-template")
    out: list[str] = []
    used = 0
    last = 0
    for m in _PRINTF_VERB.finditer(fmt):
        out.append(fmt[last:m.start()])
        last = m.end()
        flags, width, _, verb = m.groups()
        if verb == "%":
            out.append("%")
            continue
        if used >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        piece = _printf_operand(verb, args[used])
        used += 1
        if width:
            w = int(width)
            if "-" in flags:
                piece = piece.ljust(w)
            elif "0" in flags and verb == "d":
                sign = "-" if piece.startswith("-") else ""
                piece = sign + piece.lstrip("-").rjust(w - len(sign), "0")
            else:
                piece = piece.rjust(w)
        out.append(piece)
    out.append(fmt[last:])
    if used < len(args):
        extra = ", ".join(f"{a.type}={fmt_v(a, 0)}" for a in args[used:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)
