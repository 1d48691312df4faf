"""A config split into bounded, content-addressed parts and put back (cluster/config_layout.py).
Pure: no etcd."""

from __future__ import annotations

import json

import pytest

from cluster import lvscf
from cluster.config_layout import (
    PART_BYTES,
    Layout,
    assemble,
    referenced,
    source_chunks,
    split,
)
from cluster.documents import ClusterState, StoredConfig, StoredConfigError
from cluster.documents.config_parts import ConfigPart, digest
from cluster.etcd.client import KV
from cluster.keys import Keys
from cluster.model import LvsConfig
from tests.support.big_config import big_cf


def stored(text: str) -> StoredConfig:
    cfg = lvscf.parse(text, "big.cf").config
    assert cfg is not None
    return StoredConfig(cfg, text, "2026-12-06T00:00:00.000Z", "tester")


@pytest.fixture(scope="module")
def big() -> tuple[StoredConfig, Layout]:
    """400 virtuals x 16 real servers: many parts, two source chunks at least."""
    s = stored(big_cf(400, 16))
    return s, split(s)


def test_round_trip_every_part_bounded_and_named_by_its_digest(big) -> None:
    s, layout = big
    back = assemble(layout.head, layout.parts.get)
    assert back.config == s.config and back.source == s.source
    assert back.parts == set(layout.parts) == referenced(layout.head, layout.parts.get)
    assert all(len(v.encode()) <= PART_BYTES and digest(v) == d for d, v in layout.parts.items())
    assert layout.head.virtuals == 400 and layout.head.servers == 6400
    assert len(layout.head.encode()) < 16 * 1024
    kinds = [json.loads(v)["kind"] for v in layout.parts.values()]
    assert kinds.count("virtual") == 400 and kinds.count("manifest") == 1
    assert kinds.count("source") >= 2


def test_one_server_changed_changes_its_virtual_a_manifest_and_a_source_chunk(big) -> None:
    s, layout = big
    at = s.source.index("virtual web200 {")
    text = s.source[:at] + s.source[at:].replace("weight = 1\n", "weight = 5\n", 1)
    after = split(stored(text))
    new = set(after.parts) - set(layout.parts)
    kinds = sorted(json.loads(after.parts[d])["kind"] for d in new)
    assert kinds == ["manifest", "source", "virtual"]
    assert len(set(layout.parts) - set(after.parts)) == 3


def test_a_virtual_too_large_for_one_part_keeps_its_servers_in_more_parts() -> None:
    s = stored(big_cf(1, 4000))
    layout = split(s)
    (vd,) = (d for d, v in layout.parts.items() if json.loads(v)["kind"] == "virtual")
    part = ConfigPart.decode(layout.parts[vd])
    assert not part.servers and len(part.server_parts) >= 2
    assert all(len(v.encode()) <= PART_BYTES for v in layout.parts.values())
    assert assemble(layout.head, layout.parts.get).config == s.config


def test_source_chunks_join_to_the_text_and_cut_where_the_content_says() -> None:
    text = big_cf(600, 8)
    chunks = source_chunks(text)
    assert "".join(chunks) == text and len(chunks) >= 3
    assert all(c.startswith("virtual") for c in chunks[1:])
    # an edit early on moves no cut after the chunk it is in
    edited = source_chunks("# a comment\n" + text)
    assert edited[1:] == chunks[1:]
    long_line = "#" + "x" * (3 * PART_BYTES) + "\n"
    pieces = source_chunks(long_line)
    assert "".join(pieces) == long_line and len(pieces) >= 3


def test_missing_damaged_and_misplaced_parts_are_named_never_a_config(big) -> None:
    _, layout = big
    virtual = next(d for d, v in layout.parts.items() if json.loads(v)["kind"] == "virtual")
    source = layout.head.source[0]
    parts = dict(layout.parts)
    del parts[virtual]
    parts[source] = parts[source].replace("virtual", "virtuel")
    with pytest.raises(StoredConfigError) as err:
        assemble(layout.head, parts.get)
    assert f"virtual part {virtual} missing" in str(err.value)
    assert f"source part {source} damaged" in str(err.value)
    # a part put where another kind belongs
    parts = dict(layout.parts)
    parts[virtual] = layout.parts[source]
    with pytest.raises(StoredConfigError, match="damaged"):
        assemble(layout.head, parts.get)
    swapped = layout.head.model_copy(update={"source": (layout.head.manifest[0],)})
    with pytest.raises(StoredConfigError, match="is a manifest part, not a source part"):
        assemble(swapped, layout.parts.get)


def test_an_invalid_model_in_valid_parts_is_refused_with_its_path() -> None:
    cfg = LvsConfig.model_validate({"virtuals": [
        {"name": "a", "address": "10.0.0.1 eth0", "servers": [
            {"name": "s", "address": "10.0.1.1"}]}]})
    layout = split(StoredConfig(cfg, "", "", ""))
    parts = {}
    for d, v in layout.parts.items():
        data = json.loads(v)
        if data["kind"] == "virtual":
            data["servers"][0]["weight"] = 70000
            v = ConfigPart.decode(json.dumps(data)).encode()
            d2 = digest(v)
            parts[d2] = v
            manifest = ConfigPart(kind="manifest", entries=(("a", d2),)).encode()
            parts[digest(manifest)] = manifest
            head = layout.head.model_copy(update={"manifest": (digest(manifest),)})
        else:
            parts[d] = v
    with pytest.raises(StoredConfigError, match=r"virtuals\.0\.servers\.0\.weight"):
        assemble(head, parts.get)


def test_the_cluster_state_assembles_once_and_counts_junk_parts(big) -> None:
    s, layout = big
    keys = Keys("c")
    kvs = [KV(keys.config_part(d), v.encode(), 1, 1, 1, 0) for d, v in layout.parts.items()]
    head = KV(keys.config, layout.head.encode().encode(), 2, 2, 1, 0)
    state = ClusterState.from_kvs(keys, [head, *kvs])  # the head first, as etcd lists them
    assert state.config is not None and state.config.config == s.config
    assert state.config is state.config and state.junk == {}  # assembled once per head
    junk = keys.config_part("0" * 32)
    assert state.apply(junk, KV(junk, b'{"kind": "source", "text": "x"}', 3, 3, 1, 0))
    assert "does not match its key" in state.junk[junk]
    assert state.config is not None  # a part no head names changes nothing
    victim = layout.head.manifest[0]
    state.apply(keys.config_part(victim), None)
    state.apply(keys.config, KV(keys.config, head.value, 2, 4, 2, 0))
    assert state.config is None and f"manifest part {victim} missing" in (
        state.config_error or "")
