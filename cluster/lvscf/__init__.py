"""Piranha's lvs.cf: a strict reader (every problem at once, as FILE:LINE: message) and a
canonical writer, both derived from the fields of `cluster.model`.

    parse(text, filename) -> ParseResult      # .config (None on any error), .errors, .warnings
    parse_file(path) -> ParseResult           # an unreadable file is one problem, no exception
    load(path) -> LvsConfig                   # raises ConfigError listing every problem
    write(cfg) -> str                         # parse(write(cfg)).config == cfg
"""

from __future__ import annotations

import logging
import os

from cluster.lvscf.assemble import assemble
from cluster.lvscf.errors import ConfigError, ConfigProblem, ParseResult
from cluster.lvscf.lexer import tokenize
from cluster.lvscf.parser import Reader
from cluster.lvscf.writer import write
from cluster.model import LvsConfig

__all__ = ["ConfigError", "ConfigProblem", "ParseResult", "load", "parse", "parse_file", "write"]

log = logging.getLogger(__name__)


def parse(text: str, filename: str = "<string>") -> ParseResult:
    """Read lvs.cf text; never raises for any input."""
    try:
        reader = Reader()
        cfg, semantic = assemble(reader.feed(tokenize(text.removeprefix("\ufeff"))))
        errors = reader.errors + semantic
        warnings = reader.warnings
    except Exception as exc:  # a bug here must still be a config problem, not a traceback
        log.exception("lvs.cf parser failed on %s", filename)
        return ParseResult(None, [ConfigProblem(filename, 0, f"internal parser error: {exc!r}")])
    problems = sorted(ConfigProblem(filename, line, msg) for line, msg in errors)
    return ParseResult(None if problems else cfg, problems,
                       sorted(ConfigProblem(filename, line, msg) for line, msg in warnings))


def parse_file(path: str | os.PathLike[str]) -> ParseResult:
    """Read an lvs.cf file; a missing, unreadable or non-UTF-8 file is one problem."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return ParseResult(None, [ConfigProblem(name, 0, f"cannot read: {exc.strerror or exc}")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return ParseResult(None, [ConfigProblem(
            name, line, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})")])
    return parse(text, name)


def load(path: str | os.PathLike[str]) -> LvsConfig:
    """The config in an lvs.cf file; ConfigError (with .problems) on any error."""
    result = parse_file(path)
    for warning in result.warnings:
        log.warning("%s", warning)
    if result.config is None:
        raise ConfigError(result.errors)
    return result.config
