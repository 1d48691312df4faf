"""Piranha's lvs.cf: a strict reader (every problem at once, as FILE:LINE: message) and a
canonical writer, both derived from the fields of `cluster.model`.

    parse(text, filename) -> ParseResult      # .config (None on any error), .errors, .warnings
    parse_file(path) -> ParseResult           # an unreadable file is one problem, no exception
    parse(text, filename, runnable=True)      # ... and every reason its config cannot run
    cannot_run(cfg, filename, source=...)     # every reason a config cannot run, FILE:LINE
    load(path) -> LvsConfig                   # a config to run; ConfigError lists every problem
    write(cfg) -> str                         # parse(write(cfg)).config == cfg
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping

from cluster.bulk import gc_paused
from cluster.lvscf.assemble import assemble, locate
from cluster.lvscf.errors import ConfigError, ConfigProblem, ParseResult
from cluster.lvscf.lexer import tokenize
from cluster.lvscf.parser import Reader
from cluster.lvscf.writer import write
from cluster.model import LvsConfig, Path, dotted
from cluster.runnable import run_problems

__all__ = ["ConfigError", "ConfigProblem", "ParseResult", "cannot_run", "load", "parse",
           "parse_file", "write"]

log = logging.getLogger(__name__)

# What one lvs.cf may hold: past these a file is refused before it is read (bytes) or parsed
# (blocks), so a huge or runaway file is one clear error, never memory exhausted. Ten times
# the largest deployments we know of (docs/lvs-cf.md, "Limits").
MAX_BYTES = 64 * 1024 * 1024
MAX_SERVERS = 400_000
MAX_VIRTUALS = 100_000
_BLOCK = {"server": re.compile(r"^[ \t]*server[ \t]", re.M),
          "virtual": re.compile(r"^[ \t]*virtual[ \t]", re.M)}


def too_large(size: int, text: str | None = None) -> str | None:
    """Why a file of ``size`` bytes (and, given, this text) is past the limits; None if not."""
    if size > MAX_BYTES:
        return (f"{size:,} bytes: more than lvs.cf may hold ({MAX_BYTES:,} bytes, "
                f"{MAX_BYTES // 2**20} MiB)")
    if text is None:
        return None
    for what, limit, plural in (("server", MAX_SERVERS, "real servers"),
                                ("virtual", MAX_VIRTUALS, "virtual services")):
        n = sum(1 for _ in _BLOCK[what].finditer(text))
        if n > limit:
            return f"{n:,} {plural}: more than one config may hold ({limit:,})"
    return None


def parse(text: str, filename: str = "<string>", *, runnable: bool = False) -> ParseResult:
    """Read lvs.cf text; never raises for any input.

    ``runnable``: a config that reads well must also be able to run (:func:`cannot_run`);
    its problems are errors then.
    """
    big = too_large(len(text.encode("utf-8", "replace")) if len(text) * 4 > MAX_BYTES
                    else len(text), text)
    if big is not None:
        return ParseResult(None, [ConfigProblem(filename, 0, big)])
    try:
        with gc_paused():  # hundreds of thousands of objects for 40,000 servers: 40 % faster
            reader = Reader()
            cfg, semantic, lines = assemble(reader.feed(tokenize(text.removeprefix("\ufeff"))))
        errors = reader.errors + semantic
        warnings = reader.warnings
    except Exception as exc:  # a bug here must still be a config problem, not a traceback
        log.exception("lvs.cf parser failed on %s", filename)
        return ParseResult(None, [ConfigProblem(filename, 0, f"internal parser error: {exc!r}")])
    problems = sorted(ConfigProblem(filename, line, msg) for line, msg in errors)
    if runnable and cfg is not None and not problems:
        problems = cannot_run(cfg, filename, lines=lines)
    return ParseResult(None if problems else cfg, problems,
                       sorted(ConfigProblem(filename, line, msg) for line, msg in warnings),
                       lines)


def cannot_run(cfg: LvsConfig, filename: str = "lvs.cf", *, source: str | None = None,
               lines: Mapping[Path, int] | None = None) -> list[ConfigProblem]:
    """Every reason ``cfg`` cannot run on its routers, as FILE:LINE: message; [] if it can.

    The decision is :func:`cluster.runnable.run_problems`. Lines come from ``lines`` (what
    :func:`parse` recorded), else from ``source`` if that lvs.cf text reads as this very
    config (e.g. the text stored with a pushed config); without them a problem gets line 0
    and names its model path.
    """
    problems = run_problems(cfg)
    if not problems:
        return []
    if lines is None and source is not None:
        try:
            reader = Reader()
            read, _, found = assemble(reader.feed(tokenize(source.removeprefix("\ufeff"))))
        except Exception:  # the text is only a help for line numbers
            read, found = None, {}
        lines = found if read == cfg else None
    if lines is None:
        return [ConfigProblem(filename, 0, f"{dotted(p.path)}: {p.message}" + (
            f" (first defined at {dotted(p.other)})" if p.other is not None else ""))
            for p in problems]
    return sorted(ConfigProblem(filename, *locate(p, lines)) for p in problems)


def parse_file(path: str | os.PathLike[str], *, runnable: bool = False) -> ParseResult:
    """Read an lvs.cf file; a missing, unreadable or non-UTF-8 file is one problem."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as fh:
            big = too_large(os.fstat(fh.fileno()).st_size)
            if big is not None:  # refused unread
                return ParseResult(None, [ConfigProblem(name, 0, big)])
            data = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        return ParseResult(None, [ConfigProblem(name, 0, f"cannot read: {exc.strerror or exc}")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return ParseResult(None, [ConfigProblem(
            name, line, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})")])
    return parse(text, name, runnable=runnable)


def load(path: str | os.PathLike[str]) -> LvsConfig:
    """The config in an lvs.cf file, able to run; ConfigError (with .problems) on any error."""
    result = parse_file(path, runnable=True)
    for warning in result.warnings:
        log.warning("%s", warning)
    if result.config is None:
        raise ConfigError(result.errors)
    return result.config
