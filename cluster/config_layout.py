"""A configuration of any size in etcd: split into bounded parts, put back together. Pure.

etcd refuses a request over 1.5 MiB (its default), so one value cannot hold 40,000 real
servers (11 MB). :func:`split` turns a config into a small head (``config``, format 2) and
parts (``config-parts/<digest>``, each at most :data:`PART_BYTES`): one per virtual
service (its real servers in further parts if they do not fit), the manifest (the virtuals
in order, with the digest of each one's part) in chunks, and the lvs.cf text in chunks cut
at ``virtual`` lines chosen by their content, so an edit changes the chunk it is in and no
other. A part's key is the digest of its value: a push writes only the parts the current
head does not name already, and one that changes a real server writes that virtual's part,
a manifest chunk, a source chunk and the head. :func:`assemble` checks every part against
its digest and the whole model against the head's, so a damaged or missing part is an
error naming it, never a config. docs/etcd-layout.md, "Configuration".
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .bulk import gc_paused, in_thread
from .documents.base import DocumentError
from .documents.config import StoredConfig, StoredConfigError
from .documents.config_parts import ConfigHead, ConfigPart, canonical, digest
from .etcd.client import KV
from .model import ConfigError, Virtual, config_from_virtuals, virtual_from_json

PART_BYTES = 256 * 1024  # the largest part value (a push batches parts up to 1 MiB)
SOURCE_MIN = 64 * 1024  # a source chunk is cut only past this size ...
SOURCE_CUT = 4  # ... before a `virtual` line whose CRC is 0 modulo this (content-defined)

Lookup = Callable[[str], bytes | str | None]  # digest -> the part's value, None if absent


@dataclass(frozen=True)
class Layout:
    """A config as etcd holds it: the head and every part it names (digest -> value)."""

    head: ConfigHead
    parts: dict[str, str]

    def encode_head(self) -> str:
        return self.head.encode()


def model_digest(model: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a model (format 1's ``sha256`` too)."""
    return hashlib.sha256(json.dumps(model, sort_keys=True).encode()).hexdigest()


def split(stored: StoredConfig) -> Layout:
    """The head and parts of ``stored``."""
    model = stored.config.model_dump(mode="json")
    parts: dict[str, str] = {}

    def add(part: ConfigPart) -> str:
        value = part.encode()
        d = digest(value)
        parts[d] = value
        return d

    entries = [(v["name"], add(_virtual_part(v, add))) for v in model["virtuals"]]
    manifest = [add(ConfigPart(kind="manifest", entries=tuple(chunk)))
                for chunk in _chunks(entries, lambda e: len(canonical(list(e))) + 1)]
    source = [add(ConfigPart(kind="source", text=text)) for text in source_chunks(stored.source)]
    head = ConfigHead(
        format=2, serial_no=stored.config.serial_no, pushed_at=stored.pushed_at,
        pushed_by=stored.pushed_by, sha256=model_digest(model),
        globals={k: v for k, v in model.items() if k != "virtuals"},
        manifest=tuple(manifest), source=tuple(source), virtuals=len(model["virtuals"]),
        servers=sum(len(v["servers"]) for v in model["virtuals"]), parts=len(parts),
        bytes=sum(len(v.encode()) for v in parts.values()))
    return Layout(head, parts)


def _virtual_part(virtual: dict[str, Any], add: Callable[[ConfigPart], str]) -> ConfigPart:
    servers = tuple(virtual["servers"])
    rest = {k: v for k, v in virtual.items() if k != "servers"}
    whole = ConfigPart(kind="virtual", virtual=rest, servers=servers)
    if len(whole.encode()) <= PART_BYTES:
        return whole
    chunks = _chunks(servers, lambda s: len(canonical(s)) + 1)
    return ConfigPart(kind="virtual", virtual=rest, server_parts=tuple(
        add(ConfigPart(kind="servers", servers=tuple(c))) for c in chunks))


def _chunks(items: Iterable[Any], size: Callable[[Any], int],
            limit: int = PART_BYTES - 1024) -> Iterator[list[Any]]:
    """Consecutive runs of ``items`` whose sizes add up to at most ``limit`` (one item per
    run at least)."""
    run: list[Any] = []
    total = 0
    for item in items:
        n = size(item)
        if run and total + n > limit:
            yield run
            run, total = [], 0
        run.append(item)
        total += n
    if run:
        yield run


def source_chunks(text: str) -> list[str]:
    """``text`` in chunks of at most :data:`PART_BYTES` encoded, cut before ``virtual``
    lines picked by their content (past :data:`SOURCE_MIN`), so that the cuts do not move
    when text elsewhere changes. Joined, they give ``text`` back."""
    out: list[str] = []
    run: list[str] = []
    size = 0
    for line in _pieces(text):
        n = len(json.dumps(line)) - 2
        cut = (size >= SOURCE_MIN and line.lstrip().startswith("virtual")
               and zlib.crc32(line.encode("utf-8", "replace")) % SOURCE_CUT == 0)
        if run and (cut or size + n > PART_BYTES - 1024):
            out.append("".join(run))
            run, size = [], 0
        run.append(line)
        size += n
    if run:
        out.append("".join(run))
    return out


def _pieces(text: str) -> Iterator[str]:
    """The lines of ``text`` with their ends; a line too long for a part, in pieces."""
    step = (PART_BYTES - 1024) // 12  # a character is at most 12 bytes of JSON
    for line in text.splitlines(keepends=True):
        if len(json.dumps(line)) <= PART_BYTES - 1024:
            yield line
        else:
            yield from (line[i:i + step] for i in range(0, len(line), step))


def assemble(head: ConfigHead, lookup: Lookup, *, revision: int = 0) -> StoredConfig:
    """The config ``head`` names, from its parts; StoredConfigError naming every part that
    is missing or damaged, or saying why the config they make is not valid."""
    steps = _assembly(head, lookup, revision)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value()  # type: ignore[no-any-return]


async def assemble_async(head: ConfigHead, lookup: Lookup, *, revision: int = 0,
                         ) -> StoredConfig:
    """:func:`assemble`, letting the event loop run between virtuals (validating 100,000
    real servers in one go would hold it for seconds); the parts are read on the loop
    (``lookup`` may be a view's, which the loop updates), the model of the whole config
    is made in a worker thread (0.3-0.5 s at 100,000 real servers)."""
    steps = _assembly(head, lookup, revision)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return await in_thread(done.value)  # type: ignore[no-any-return]
        await asyncio.sleep(0)


STEP = 50  # virtuals validated between two yields of the assembly


def _assembly(head: ConfigHead, lookup: Lookup, revision: int
              ) -> Generator[None, None, Callable[[], StoredConfig]]:
    """Read and check the parts, yielding every :data:`STEP` virtuals; what it returns
    makes the config of them (and validates it whole), reading no part. The head names the
    manifest parts by digest, they name the virtual parts, and those their server parts:
    checking each part against its key checks the whole against the head."""
    problems: list[str] = []
    named: set[str] = set()

    def part(d: str, kind: str) -> ConfigPart | None:
        named.add(d)
        value = lookup(d)
        if value is None:
            problems.append(f"{kind} part {d} missing")
            return None
        if digest(value) != d:
            problems.append(f"{kind} part {d} damaged (its value does not match its key)")
            return None
        try:
            got = ConfigPart.decode(value)
        except DocumentError as exc:
            problems.append(f"{kind} part {d}: {exc}")
            return None
        if got.kind != kind:
            problems.append(f"part {d} is a {got.kind} part, not a {kind} part")
            return None
        return got

    virtuals: list[Virtual] = []
    invalid: list[object] = []
    for m in head.manifest:
        chunk = part(m, "manifest")
        for name, d in chunk.entries if chunk is not None else ():
            v = part(d, "virtual")
            if v is None or v.virtual is None:
                continue
            servers = list(v.servers)
            for s in v.server_parts:
                more = part(s, "servers")
                servers += more.servers if more is not None else ()
            if v.virtual.get("name") != name:
                problems.append(f"virtual part {d} holds {v.virtual.get('name')!r}, "
                                f"the manifest says {name!r}")
            try:
                virtuals.append(virtual_from_json({**v.virtual, "servers": servers},
                                                  len(virtuals) + len(invalid)))
            except ConfigError as exc:
                invalid += exc.problems
            if (len(virtuals) + 1) % STEP == 0:
                yield
    source = [part(d, "source") for d in head.source]
    if problems:
        raise StoredConfigError(f"config serial_no {head.serial_no}: " + "; ".join(
            problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else ""))

    def made() -> StoredConfig:
        try:
            if invalid:
                raise ConfigError(invalid)
            cfg = config_from_virtuals(head.globals, virtuals)
        except ConfigError as exc:
            raise StoredConfigError(f"invalid config: {exc}") from None
        text = "".join(p.text for p in source if p is not None)
        return StoredConfig(cfg, text, head.pushed_at, head.pushed_by, revision,
                            parts=frozenset(named))
    return made


def head_of(kv: KV) -> ConfigHead | None:
    """The format-2 head in ``kv``, None if it holds another format (format 1: the whole
    config in one value). StoredConfigError if it claims format 2 and is junk."""
    try:
        fmt = json.loads(kv.value).get("format")
    except (ValueError, AttributeError):
        return None
    if fmt != 2:
        return None
    try:
        return ConfigHead.decode(kv.value)
    except DocumentError as exc:
        raise StoredConfigError(f"{kv.key}: {exc}") from None


def load(kv: KV, lookup: Lookup) -> StoredConfig:
    """The config under the config key, either format; StoredConfigError saying why not."""
    head = head_of(kv)
    if head is None:
        return StoredConfig.from_kv(kv)
    try:
        return assemble(head, lookup, revision=kv.mod_revision)
    except StoredConfigError as exc:
        raise StoredConfigError(f"{kv.key}: {exc}") from None


async def load_async(kv: KV, lookup: Lookup) -> StoredConfig:
    """:func:`load` without holding the event loop for long."""
    head = head_of(kv)
    if head is None:
        return StoredConfig.from_kv(kv)
    try:
        with gc_paused():  # a model of 40,000 servers: cluster/bulk.py
            return await assemble_async(head, lookup, revision=kv.mod_revision)
    except StoredConfigError as exc:
        raise StoredConfigError(f"{kv.key}: {exc}") from None


def referenced(head: ConfigHead, lookup: Lookup) -> set[str]:
    """Every part ``head`` names (those it names through missing parts excepted)."""
    found: set[str] = set(head.manifest) | set(head.source)
    for m in head.manifest:
        chunk = _decode(lookup(m))
        for _, d in chunk.entries if chunk is not None else ():
            found.add(d)
            v = _decode(lookup(d))
            found.update(v.server_parts if v is not None else ())
    return found


def _decode(value: bytes | str | None) -> ConfigPart | None:
    try:
        return ConfigPart.decode(value) if value is not None else None
    except DocumentError:
        return None
