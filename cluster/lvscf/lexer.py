"""lvs.cf lines to tokens: `key = value`, `KEYWORD NAME {`, `{`, `}`; comments and quotes.

A value is either quoted (" or ', with escapes \\n \\r \\t \\\\ \\' \\") or the rest of
the line up to a `#` comment, trimmed. Line ends may be LF, CRLF or CR.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", "'": "'", '"': '"'}

_ASSIGN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$", re.DOTALL)
_HEADER = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\s+([^\s{}]+))?\s*(\{)?$")
_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class Assign:
    """`key = value`; text is unquoted and unescaped when quoted is True."""

    line: int
    key: str
    text: str
    quoted: bool


@dataclass(frozen=True)
class Open:
    """`keyword name {` (brace False: the `{` should follow on a later line)."""

    line: int
    keyword: str
    name: str | None
    brace: bool


@dataclass(frozen=True)
class Brace:
    """A `{` alone on its line."""

    line: int


@dataclass(frozen=True)
class Close:
    """A `}` alone on its line."""

    line: int


@dataclass(frozen=True)
class Bad:
    """A line that could not be read."""

    line: int
    message: str


Token = Assign | Open | Brace | Close | Bad


def unescape(text: str) -> str:
    """Decode \\n \\r \\t \\\\ \\' \\"; any other backslash is kept as it is."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in ESCAPES:
            out.append(ESCAPES[text[i + 1]])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def tokenize(text: str) -> list[Token]:
    """Every meaningful line of `text` as a token (blank and comment lines are skipped)."""
    tokens: list[Token] = []
    for number, line in enumerate(_LINE_END.split(text), start=1):
        token = _line_token(number, line)
        if token is not None:
            tokens.append(token)
    return tokens


def _line_token(number: int, line: str) -> Token | None:
    match = _ASSIGN.match(line)
    if match:
        return _assignment(number, match.group(1), match.group(2))
    body = line.split("#", 1)[0].strip()
    if not body:
        return None
    if body == "}":
        return Close(number)
    if body == "{":
        return Brace(number)
    header = _HEADER.fullmatch(body)
    if header:
        return Open(number, header.group(1), header.group(2), header.group(3) is not None)
    shown = body if len(body) <= 60 else body[:57] + "..."
    return Bad(number, f"cannot read {shown!r}: expected 'key = value', 'block NAME {{' or '}}'")


def _assignment(number: int, key: str, rest: str) -> Token:
    rest = rest.lstrip()
    if rest[:1] in ("'", '"'):
        return _quoted(number, key, rest)
    value = rest.split("#", 1)[0].strip()
    if not value:
        return Bad(number, f"missing value for '{key}'")
    return Assign(number, key, value, quoted=False)


def _quoted(number: int, key: str, rest: str) -> Token:
    quote, i = rest[0], 1
    while i < len(rest) and rest[i] != quote:
        i += 2 if rest[i] == "\\" and i + 1 < len(rest) else 1
    if i >= len(rest):
        return Bad(number, f"unterminated quote in value of '{key}' (missing closing {quote})")
    after = rest[i + 1:].strip()
    if after and not after.startswith("#"):
        return Bad(number, f"unexpected text after the closing quote of '{key}': {after[:40]!r}")
    return Assign(number, key, unescape(rest[1:i]), quoted=True)
