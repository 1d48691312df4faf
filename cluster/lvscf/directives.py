"""The lvs.cf directive tables, derived from the model's fields and their `Cf` markers."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import cache
from typing import Annotated, Any, get_args

from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo

from cluster.model import Cf, LvsConfig


@dataclass(frozen=True)
class Directive:
    """One `key = value` directive of a block."""

    name: str
    kind: str
    always: bool
    required: bool
    default: Any
    adapter: TypeAdapter[Any] = field(compare=False, repr=False)


@dataclass(frozen=True)
class BlockSpec:
    """A block kind ('global', 'virtual', ...): its model, directives and child blocks."""

    keyword: str
    model: type[BaseModel]
    directives: dict[str, Directive]
    children: dict[str, tuple[str, BlockSpec]]  # child keyword -> (model field, spec)

    def describe(self, name: str | None) -> str:
        """'global section' or "virtual 'web'"."""
        return "global section" if name is None else f"{self.keyword} '{name}'"


def find_cf(info: FieldInfo) -> Cf | None:
    """The Cf marker of a model field (also inside `X | None`)."""
    for meta in info.metadata:
        if isinstance(meta, Cf):
            return meta
    return _cf_in(info.annotation)


def _cf_in(annotation: Any) -> Cf | None:
    for meta in getattr(annotation, "__metadata__", ()):
        if isinstance(meta, Cf):
            return meta
    for arg in get_args(annotation):
        found = _cf_in(arg)
        if found is not None:
            return found
    return None


def build_spec(keyword: str, model: type[BaseModel]) -> BlockSpec:
    """The spec of block `keyword` read into `model` (child blocks included)."""
    directives: dict[str, Directive] = {}
    children: dict[str, tuple[str, BlockSpec]] = {}
    for name, info in model.model_fields.items():
        cf = find_cf(info)
        if cf is None:
            continue  # the block's name
        if cf.kind == "blocks":
            (child_model,) = [a for a in get_args(info.annotation) if a is not Ellipsis]
            children[cf.block] = (name, build_spec(cf.block, child_model))
            continue
        annotated = Annotated[(info.annotation, *info.metadata)] if info.metadata else \
            info.annotation
        directives[name] = Directive(name, cf.kind, cf.always, info.is_required(),
                                     info.default, TypeAdapter(annotated))
    return BlockSpec(keyword, model, directives, children)


@cache
def root() -> BlockSpec:
    """The global block spec (built once)."""
    return build_spec("global", LvsConfig)


@cache
def all_blocks() -> dict[str, BlockSpec]:
    """Every block spec by keyword, 'global' included."""
    out: dict[str, BlockSpec] = {}
    todo = [root()]
    while todo:
        spec = todo.pop()
        out[spec.keyword] = spec
        todo.extend(child for _, child in spec.children.values())
    return out


def blocks_allowing(key: str) -> list[str]:
    """The block keywords in which directive `key` is allowed."""
    return [kw for kw, spec in all_blocks().items() if key in spec.directives]


def parents_of(keyword: str) -> list[str]:
    """The block keywords that may contain a `keyword` block."""
    return [kw for kw, spec in all_blocks().items() if keyword in spec.children]


def suggestion(word: str) -> str:
    """' (did you mean 'x'?)' for a misspelt directive or block keyword, else ''."""
    known = {d for spec in all_blocks().values() for d in (*spec.directives, *spec.children)}
    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""
