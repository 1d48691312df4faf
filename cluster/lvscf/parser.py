"""lvs.cf tokens to a tree of blocks, every problem collected on the way.

The tree is plain data (`Frame`s holding already-validated directive values); `assemble`
turns it into the model. Recovery rules keep going after any error so that one run reports
everything: a header without `{` is taken as opened, an unknown block is skipped whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from cluster.lvscf.directives import (
    BlockSpec,
    all_blocks,
    blocks_allowing,
    parents_of,
    root,
    suggestion,
)
from cluster.lvscf.lexer import Assign, Bad, Brace, Close, Open, Token
from cluster.lvscf.values import read_value
from cluster.model import describe


@dataclass
class Frame:
    """One block as read: spec None means an unknown block whose contents are skipped."""

    spec: BlockSpec | None
    keyword: str
    name: str | None
    line: int
    values: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    children: dict[str, list[Frame]] = field(default_factory=dict)

    def describe(self) -> str:
        """How messages name this block."""
        return self.spec.describe(self.name) if self.spec else "unknown block"


@dataclass
class Reader:
    """Feeds tokens into a tree of Frames; errors and warnings are (line, message)."""

    top: Frame = field(default_factory=lambda: Frame(root(), "global", None, 1))
    stack: list[Frame] = field(default_factory=list)
    pending: Frame | None = None
    errors: list[tuple[int, str]] = field(default_factory=list)
    warnings: list[tuple[int, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stack = [self.top]

    def feed(self, tokens: list[Token]) -> Frame:
        """Read all tokens; returns the global frame."""
        for token in tokens:
            self._token(token)
        self._finish()
        return self.top

    def _token(self, token: Token) -> None:
        if self.pending is not None and not isinstance(token, Brace):
            frame = self.pending
            self.errors.append((frame.line, f"expected '{{' after '{_header(frame)}'"))
            self._push(frame)
        if isinstance(token, Bad):
            self.errors.append((token.line, token.message))
        elif isinstance(token, Brace):
            if self.pending is None:
                self.errors.append((token.line, "unexpected '{' (no block header before it)"))
            else:
                self._push(self.pending)
        elif isinstance(token, Close):
            if len(self.stack) > 1:
                self.stack.pop()
            else:
                self.errors.append((token.line, "'}' without an open block"))
        elif isinstance(token, Open):
            self._open(token)
        else:
            self._assign(token)

    def _push(self, frame: Frame) -> None:
        self.stack.append(frame)
        self.pending = None

    def _finish(self) -> None:
        if self.pending is not None:
            frame = self.pending
            self.errors.append((frame.line, f"expected '{{' after '{_header(frame)}'"))
        for frame in self.stack[1:]:
            self.errors.append((frame.line, f"block '{_header(frame)}' opened here is never "
                                            "closed (missing '}')"))

    def _open(self, token: Open) -> None:
        parent = self.stack[-1]
        frame = Frame(None, token.keyword, token.name, token.line)
        if parent.spec is not None:
            problem = self._child_problem(parent.spec, token)
            if problem is None:
                fname, frame.spec = parent.spec.children[token.keyword]
                parent.children.setdefault(fname, []).append(frame)
            else:
                self.errors.append((token.line, problem))
                if not token.brace and token.keyword not in all_blocks():
                    return  # e.g. 'weight 5' or 'foo bar': not a block at all
        if token.brace:
            self._push(frame)
        else:
            self.pending = frame

    @staticmethod
    def _child_problem(spec: BlockSpec, token: Open) -> str | None:
        kw = token.keyword
        if kw in spec.children:
            return None if token.name else f"block '{kw}' needs a name: '{kw} NAME {{'"
        if kw in all_blocks():
            where = " or ".join(parents_of(kw)) or "no block"
            return f"'{kw}' block is not allowed in {spec.keyword} block; it belongs in {where}"
        if blocks_allowing(kw):
            return f"expected '{kw} = {token.name or 'value'}' (missing '=')"
        return f"unknown block '{kw}'{suggestion(kw)}"

    def _assign(self, token: Assign) -> None:
        frame = self.stack[-1]
        spec = frame.spec
        if spec is None:
            return
        directive = spec.directives.get(token.key)
        if directive is None:
            self.errors.append((token.line, _unknown(spec, token.key)))
            return
        if token.key in frame.lines:
            self.warnings.append((token.line, (
                f"warning: '{token.key}' repeated in {frame.describe()} (also set at line "
                f"{frame.lines[token.key]}); the value from line {token.line} wins")))
        frame.lines[token.key] = token.line
        frame.values.pop(token.key, None)
        frame.failed.discard(token.key)
        try:
            raw = read_value(directive.kind, token.text, token.quoted)
            frame.values[token.key] = directive.adapter.validate_python(raw)
        except ValueError as exc:  # ValidationError is a ValueError
            frame.failed.add(token.key)
            self.errors.append((token.line, _value_problem(token.key, exc)))


def _header(frame: Frame) -> str:
    return f"{frame.keyword} {frame.name}" if frame.name else frame.keyword


def _unknown(spec: BlockSpec, key: str) -> str:
    if key in spec.children or key in all_blocks():
        return f"'{key}' starts a block: write '{key} NAME {{'"
    where = blocks_allowing(key)
    if where:
        return f"'{key}' is not allowed in {spec.keyword} block; it belongs in {' or '.join(where)}"
    return f"unknown directive '{key}'{suggestion(key)}"


def _value_problem(key: str, exc: ValueError) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors(include_url=False)[0]
        inner = [p for p in err["loc"] if isinstance(p, str) and "[" not in p]
        return describe(err, inner[-1] if inner else key)
    return f"'{key}': {exc}"
