"""The field tables of docs/etcd-layout.md, generated from the document types.

Between ``<!-- fields: NodeRecord -->`` and ``<!-- /fields -->`` the doc holds the table of
that type's fields; ``python -m cluster.documents.layout docs/etcd-layout.md`` rewrites
them, and a test fails when the doc and the types differ.
"""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from . import DOCUMENTS, ConfigEnvelope, ConfigRefusal, Document

TYPES: dict[str, type[Document]] = {
    cls.__name__: cls for cls in [*DOCUMENTS.values(), ConfigRefusal, ConfigEnvelope]}

_BLOCK = re.compile(r"(<!-- fields: (\w+) -->\n)(.*?)(<!-- /fields -->)", re.S)


def type_name(annotation: Any) -> str:
    """A field's JSON type in words."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        text = " or ".join(type_name(a) for a in rest)
        return f"{text} or null" if len(rest) < len(args) else text
    if origin is Literal:
        return " or ".join(f"`{json.dumps(a)}`" for a in args)
    if origin is tuple or origin is list:
        return f"list of {type_name(args[0])}s"
    if origin is dict or annotation is dict:
        return "object"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "`{" + ", ".join(f'"{f}"' for f in annotation.model_fields) + "}`"
    return {str: "string", int: "integer", bool: "boolean", float: "number"}.get(
        annotation, str(annotation))


def field_table(cls: type[Document]) -> str:
    rows = ["| field | type | if absent | meaning |", "|---|---|---|---|"]
    for name, info in cls.model_fields.items():
        absent = "required" if info.is_required() else f"`{json.dumps(info.get_default())}`"
        meaning = " ".join((info.description or "").split())
        rows.append(f"| `{name}` | {type_name(info.annotation)} | {absent} | {meaning} |")
    return "\n".join(rows) + "\n"


def render(text: str) -> str:
    """``text`` with every field table regenerated."""
    def table(m: re.Match[str]) -> str:
        cls = TYPES.get(m.group(2))
        if cls is None:
            raise KeyError(f"no document type {m.group(2)!r} (known: {', '.join(TYPES)})")
        return m.group(1) + field_table(cls) + m.group(4)
    return _BLOCK.sub(table, text)


def tables_in(text: str) -> list[str]:
    """The type names whose tables ``text`` holds."""
    return [m.group(2) for m in _BLOCK.finditer(text)]


def main() -> None:
    for arg in sys.argv[1:]:
        path = Path(arg)
        path.write_text(render(path.read_text()))


if __name__ == "__main__":  # pragma: no cover
    main()
