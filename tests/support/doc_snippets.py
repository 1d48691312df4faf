"""Check the Python code blocks of Markdown pages: their imports import, and they compile.

A fenced block whose info string starts with ``python`` (or ``py``) is a snippet. Every
``import x`` / ``from x import y`` in it must work: the module imports and ``y`` is a name in
it (or a submodule). The whole snippet must also compile (top-level ``await`` allowed, as
the docs show calls from async code), unless its info string carries the word ``sketch``
(```` ```python sketch ````): a sketch shows call signatures (``f(x) -> T``) and is not
Python; its import lines are still checked (there, every line that starts with ``import``
or ``from`` must be one import statement). Problems are ``FILE:LINE: message``.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt

PYTHON = frozenset({"python", "py", "python3"})
SKETCH = "sketch"
_IMPORT_LINE = re.compile(r"^\s*(import|from)\s+[\w.]")


@dataclass(frozen=True)
class Snippet:
    """One fenced Python block: ``line`` is the page line of its first code line."""

    path: str
    line: int
    info: str
    code: str

    @property
    def sketch(self) -> bool:
        return SKETCH in self.info.split()[1:]

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def snippets(text: str, path: str) -> Iterator[Snippet]:
    """The Python blocks of a Markdown text, in page order."""
    for tok in MarkdownIt("commonmark").parse(text):
        words = tok.info.split()
        if tok.type == "fence" and words and words[0].lower() in PYTHON and tok.map:
            yield Snippet(path, tok.map[0] + 2, tok.info.strip(), tok.content)


def problems(snippet: Snippet) -> list[str]:
    """Everything wrong with one snippet, as ``FILE:LINE: message`` lines."""
    out: list[str] = []
    tree: ast.Module | None = None
    if not snippet.sketch:
        try:
            compile(snippet.code, snippet.where, "exec",
                    flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
            tree = ast.parse(snippet.code)
        except SyntaxError as exc:
            line = snippet.line + (exc.lineno or 1) - 1
            out.append(f"{snippet.path}:{line}: does not compile: {exc.msg} "
                       f"(mark the block `python {SKETCH}` if it is not meant to)")
    statements = _imports(tree) if tree is not None else _import_lines(snippet.code)
    for offset, stmt in statements:
        where = f"{snippet.path}:{snippet.line + offset - 1}"
        if stmt is None:
            out.append(f"{where}: cannot parse this import line")
        else:
            out += [f"{where}: {p}" for p in import_problems(stmt)]
    return out


def import_problems(stmt: ast.Import | ast.ImportFrom) -> list[str]:
    """Why one import statement fails here (empty if it works)."""
    if isinstance(stmt, ast.Import):
        return [p for a in stmt.names for p in [_module_problem(a.name)] if p]
    if stmt.level or not stmt.module:
        return ["relative import: a doc snippet must name the package"]
    module = stmt.module
    problem = _module_problem(module)
    if problem:
        return [problem]
    mod = importlib.import_module(module)
    out = []
    for alias in stmt.names:
        if alias.name == "*" or hasattr(mod, alias.name):
            continue
        if _module_problem(f"{module}.{alias.name}") is None:
            continue  # a submodule
        out.append(f"{module} has no name {alias.name!r}")
    return out


def _module_problem(name: str) -> str | None:
    try:
        importlib.import_module(name)
    except Exception as exc:  # any failure to import is the snippet's problem
        return f"cannot import {name}: {type(exc).__name__}: {exc}"
    return None


Statement = tuple[int, ast.Import | ast.ImportFrom | None]


def _imports(tree: ast.Module) -> list[Statement]:
    return [(node.lineno, node) for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)]


def _import_lines(code: str) -> list[Statement]:
    """Import statements of text that is not Python as a whole, found line by line
    (a parenthesised or backslash-continued import may span lines)."""
    lines = code.splitlines()
    out: list[Statement] = []
    i = 0
    while i < len(lines):
        if not _IMPORT_LINE.match(lines[i]):
            i += 1
            continue
        start, text = i, lines[i].strip()
        while (text.count("(") > text.count(")") or text.endswith("\\")) and i + 1 < len(lines):
            i += 1
            text = text.removesuffix("\\") + " " + lines[i].strip()
        i += 1
        try:
            body = ast.parse(text).body
        except SyntaxError:
            body = []
        if len(body) == 1 and isinstance(body[0], ast.Import | ast.ImportFrom):
            out.append((start + 1, body[0]))
        else:
            out.append((start + 1, None))
    return out


def pages(root: Path) -> list[Path]:
    """The pages whose snippets must stay importable: README.md and docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]
