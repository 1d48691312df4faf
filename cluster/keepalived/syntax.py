"""keepalived.conf's syntax (keepalived.conf(5)): statements of words, blocks in braces.

A statement is the words of one line up to a ``{``, a ``}`` or the line's end; a ``{``
(on the same line or alone on the next) opens a block of statements closed by ``}``.
``#`` and ``!`` start comments; ``"..."`` is one word. What keepalived expands before
parsing (``include``, ``@`` conditional lines, ``$`` parameters) is refused by the converter.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Stmt:
    """``words`` on ``line`` of ``file``; ``block``: the statements inside its braces, or
    None when it has none."""

    words: list[str]
    file: str
    line: int
    block: list[Stmt] | None = None
    quoted: set[int] = field(default_factory=set)  # indexes of words that were quoted

    @property
    def key(self) -> str:
        return self.words[0]

    @property
    def args(self) -> list[str]:
        return self.words[1:]

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


class SyntaxProblem(Exception):
    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}")
        self.file, self.line, self.message = file, line, message


def _tokens(text: str, file: str) -> list[tuple[int, str, bool]]:
    """(line, word, quoted) of every word, brace and end of line ("\\n")."""
    out: list[tuple[int, str, bool]] = []
    for number, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        i, n = 0, len(raw)
        while i < n:
            c = raw[i]
            if c in " \t\r":
                i += 1
            elif c in "#!":
                break
            elif c in "{}":
                out.append((number, c, False))
                i += 1
            elif c == '"':
                end = raw.find('"', i + 1)
                if end < 0:
                    raise SyntaxProblem(file, number, "unterminated quoted string")
                out.append((number, raw[i + 1:end], True))
                i = end + 1
            else:
                j = i
                while j < n and raw[j] not in ' \t\r{}"#!':
                    j += 1
                out.append((number, raw[i:j], False))
                i = j
        out.append((number, "\n", False))
    return out


def parse(text: str, file: str) -> list[Stmt]:
    """The statements of ``text``; :class:`SyntaxProblem` at the first unbalanced brace."""
    tokens = _tokens(text, file)
    stack: list[tuple[list[Stmt], int]] = [([], 0)]  # (statements, line of the opening {)
    current: Stmt | None = None
    last: Stmt | None = None  # the statement a "{" alone on its line belongs to
    for line, word, quoted in tokens:
        if word == "\n" and not quoted:
            if current is not None:
                stack[-1][0].append(current)
                last, current = current, None
            continue
        if word == "{" and not quoted:
            owner = current or last
            if owner is None or owner.block is not None:
                raise SyntaxProblem(file, line, "'{' without a keyword before it")
            if current is not None:
                stack[-1][0].append(current)
            owner.block = []
            stack.append((owner.block, line))
            current = last = None
            continue
        if word == "}" and not quoted:
            if current is not None:
                stack[-1][0].append(current)
                current = None
            if len(stack) == 1:
                raise SyntaxProblem(file, line, "'}' without a block to close")
            stack.pop()
            last = None
            continue
        if current is None:
            current = Stmt([], file, line)
        if quoted:
            current.quoted.add(len(current.words))
        current.words.append(word)
        last = None
    if len(stack) > 1:
        raise SyntaxProblem(file, stack[-1][1], "block opened here is never closed "
                            "(missing '}')")
    return stack[0][0]
