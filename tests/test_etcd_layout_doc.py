"""docs/etcd-layout.md cannot drift from the document types: its field tables are generated
from them, and every document and key has its place in it."""

from __future__ import annotations

from pathlib import Path

from cluster.documents import DOCUMENTS
from cluster.documents.layout import TYPES, field_table, render, tables_in

DOC = Path("docs/etcd-layout.md")


def test_field_tables_are_generated_from_the_types() -> None:
    text = DOC.read_text()
    assert render(text) == text, (
        "docs/etcd-layout.md is out of date: run "
        "`.venv/bin/python -m cluster.documents.layout docs/etcd-layout.md`")


def test_every_document_has_a_table_and_a_key() -> None:
    text = DOC.read_text()
    assert sorted(tables_in(text)) == sorted(TYPES)
    for key in DOCUMENTS:
        assert f"| `{key.replace('<serial_no>', '<serial_no, 12 digits>')}` |" in text, key
        assert f"## `{key}`" in text, key


def test_a_renamed_field_changes_the_table() -> None:
    cls = TYPES["NodeRecord"]
    table = field_table(cls)
    assert all(f"| `{name}` |" in table for name in cls.model_fields)
    assert "| `config_serial` | integer or null | `null` |" in table
    assert "| `role` | string | required |" in table
