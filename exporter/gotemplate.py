"""A tiny renderer for the subset of Go's text/template that the Ollama Modelfiles tmd writes use:
literal text, {{ .Field }}, {{ if }} / {{ else if }} / {{ else }} / {{ end }}, {{ range .Messages }},
and the conditions `.X`, `not .X`, `eq .X "text"`, with Go's {{- and -}} whitespace trimming.

It exists so that a test (and the exporter itself, before writing a file) can check that a TEMPLATE
renders exactly the prompt tmd's own renderer produces. Anything outside the subset is an error,
never silently rendered differently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tmd_local.core.errors import TmdError

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_STRING = re.compile(r'^"((?:[^"\\]|\\.)*)"$')


@dataclass
class _Node:
    kind: str  # text | field | if | range
    value: str = ""
    branches: list[tuple[str | None, list]] = field(default_factory=list)  # if: (condition, body)
    body: list = field(default_factory=list)  # range


def render_go(template: str, data: dict) -> str:
    """Render `template` with `data` (keys as Ollama names them: Messages, System, Prompt...)."""
    nodes, rest = _parse(_lex(template), stop=())
    if rest:
        raise TmdError(f"go template: unexpected {{{{ {rest[0][1]} }}}}")
    return _run(nodes, [data])


def _lex(template: str) -> list[tuple[str, str]]:
    """[("text", ...), ("action", ...)] with Go's trim markers applied to the neighbouring text."""
    tokens, position, trim_next = [], 0, False
    for match in _ACTION.finditer(template):
        text = template[position:match.start()]
        if trim_next:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        tokens.append(("text", text))
        tokens.append(("action", match.group(2).strip()))
        trim_next = bool(match.group(3))
        position = match.end()
    tail = template[position:]
    tokens.append(("text", tail.lstrip() if trim_next else tail))
    if "{{" in "".join(text for kind, text in tokens if kind == "text"):
        raise TmdError("go template: unbalanced '{{'")
    return [t for t in tokens if t != ("text", "")]


def _parse(tokens: list, stop: tuple[str, ...]) -> tuple[list[_Node], list]:
    nodes = []
    while tokens:
        kind, value = tokens[0]
        if kind == "text":
            nodes.append(_Node("text", value))
            tokens = tokens[1:]
            continue
        word = value.split()[0] if value.split() else ""
        if word in stop or value.startswith("else"):
            return nodes, tokens
        tokens = tokens[1:]
        if word == "if":
            node = _Node("if")
            condition = value[2:].strip()
            while True:
                body, tokens = _parse(tokens, stop=("end",))
                node.branches.append((condition, body))
                if not tokens:
                    raise TmdError("go template: {{ if }} without {{ end }}")
                action = tokens[0][1]
                tokens = tokens[1:]
                if action == "end":
                    break
                if action == "else":
                    condition = None
                elif action.startswith("else if "):
                    condition = action[len("else if "):].strip()
                else:
                    raise TmdError(f"go template: unexpected {{{{ {action} }}}}")
            nodes.append(node)
        elif word == "range":
            body, tokens = _parse(tokens, stop=("end",))
            if not tokens or tokens[0][1] != "end":
                raise TmdError("go template: {{ range }} without {{ end }}")
            tokens = tokens[1:]
            nodes.append(_Node("range", value[5:].strip(), body=body))
        elif value.startswith("."):
            nodes.append(_Node("field", value))
        else:
            raise TmdError(f"go template: {{{{ {value} }}}} is outside the subset tmd renders")
    return nodes, tokens


def _run(nodes: list[_Node], scopes: list[dict]) -> str:
    out = []
    for node in nodes:
        if node.kind == "text":
            out.append(node.value)
        elif node.kind == "field":
            out.append(str(_lookup(node.value, scopes) or ""))
        elif node.kind == "if":
            for condition, body in node.branches:
                if condition is None or _truth(condition, scopes):
                    out.append(_run(body, scopes))
                    break
        elif node.kind == "range":
            for item in _lookup(node.value, scopes) or []:
                out.append(_run(node.body, scopes + [item]))
    return "".join(out)


def _lookup(path: str, scopes: list[dict]):
    if not path.startswith(".") or not re.fullmatch(r"\.[A-Za-z_]\w*", path):
        raise TmdError(f"go template: {path!r} is outside the subset tmd renders")
    return scopes[-1].get(path[1:])


def _truth(condition: str, scopes: list[dict]) -> bool:
    parts = condition.split(None, 2)
    if parts[0] == "not" and len(parts) == 2:
        return not _truth(parts[1], scopes)
    if parts[0] == "eq" and len(parts) == 3:
        match = _STRING.match(parts[2])
        if not match:
            raise TmdError(f"go template: eq compares with a quoted string, got {parts[2]!r}")
        return _lookup(parts[1], scopes) == _unquote(match.group(1))
    if len(parts) == 1:
        return bool(_lookup(parts[0], scopes))
    raise TmdError(f"go template: condition {condition!r} is outside the subset tmd renders")


def _unquote(text: str) -> str:
    return text.encode("utf-8").decode("unicode_escape") if "\\" in text else text
