"""Every etcd document: round trip, readable JSON with the documented field names, old
records still decode, junk is one DocumentError with a clear message."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.documents import STRATEGIES

from cluster import lvscf
from cluster.documents import (
    DOCUMENTS,
    AdminFlag,
    ConfigEnvelope,
    ConfigHead,
    ConfigHistoryEntry,
    ConfigPart,
    ConfigRefusal,
    Document,
    DocumentError,
    EvictionVote,
    FailoverEvent,
    HashSeed,
    HealthGroup,
    HealthTransition,
    HealthVerdict,
    LeaderDoc,
    LeaderKey,
    NodeRecord,
    Observation,
    ObservationGroup,
    ReleasedMarker,
    StoredConfig,
    StoredConfigError,
    SwitchoverEvent,
    SwitchoverRequest,
    epoch,
    iso,
    now_iso,
)
from cluster.etcd.client import KV

# The JSON field names running clusters hold (docs/etcd-layout.md): renaming one breaks them.
FIELDS = {
    LeaderDoc: ("node", "since"),
    NodeRecord: ("node", "role", "address", "pid", "version", "started_at", "dataplane",
                 "etcd", "term", "config_serial", "config_refused", "metrics"),
    HealthVerdict: ("state", "since", "weight", "reason", "observed_by", "term"),
    Observation: ("state", "since", "weight", "reason"),
    HealthGroup: ("servers",),
    ObservationGroup: ("servers",),
    AdminFlag: ("state", "by", "at"),
    SwitchoverRequest: ("to", "term", "id", "by", "reason", "at"),
    ReleasedMarker: ("node", "term", "at", "reason"),
    EvictionVote: ("term", "node", "at"),
    ConfigHistoryEntry: ("serial_no", "pushed_at", "pushed_by", "changes"),
    HashSeed: ("seed", "created_at", "created_by"),
    FailoverEvent: ("at", "node", "term", "previous", "previous_term", "reason", "gap_ms",
                    "takeover_ms"),
    SwitchoverEvent: ("at", "node", "term", "previous", "previous_term", "by", "reason", "to",
                      "request", "gap_ms"),
    HealthTransition: ("at", "virtual", "server", "previous", "state", "since", "reason",
                       "observed_by", "by", "term", "dropped_before"),
    ConfigEnvelope: ("format", "serial_no", "pushed_at", "pushed_by", "sha256", "config",
                     "source"),
    ConfigHead: ("format", "serial_no", "pushed_at", "pushed_by", "sha256", "globals",
                 "manifest", "source", "virtuals", "servers", "parts", "bytes"),
    ConfigPart: ("kind", "virtual", "servers", "server_parts", "entries", "text"),
}


def test_every_document_is_covered() -> None:
    assert set(DOCUMENTS.values()) | {ConfigEnvelope} == set(FIELDS)
    # ConfigEnvelope: format 1, read only; ConfigPart: canonical JSON, sorted and without
    # empty fields (tests/test_config_layout.py)
    assert set(STRATEGIES) == set(FIELDS) - {ConfigEnvelope, ConfigPart}


@pytest.mark.parametrize("cls", list(FIELDS), ids=lambda c: c.__name__)
def test_field_names_are_the_stored_ones(cls: type[Document]) -> None:
    assert cls.fields() == FIELDS[cls]


@pytest.mark.parametrize("cls", list(STRATEGIES), ids=lambda c: c.__name__)
@given(data=st.data())
def test_round_trip_as_readable_json(cls: type[Document], data: st.DataObject) -> None:
    doc = data.draw(STRATEGIES[cls])
    value = doc.encode()
    assert cls.decode(value) == doc
    assert cls.decode(value.encode()) == doc  # bytes, as etcd returns them
    plain = json.loads(value)
    assert isinstance(plain, dict) and tuple(plain) == FIELDS[cls]


JUNK = ["", "not json", "{bad", "[1, 2]", "42", "null", '"text"', b"\xff\xfe{}"]


@pytest.mark.parametrize("cls", list(FIELDS), ids=lambda c: c.__name__)
@pytest.mark.parametrize("value", JUNK)
def test_junk_is_one_clear_error(cls: type[Document], value: str | bytes) -> None:
    with pytest.raises(DocumentError, match=f"^not a valid {cls.WHAT}: "):
        cls.decode(value)


@pytest.mark.parametrize(("cls", "value", "problem"), [
    (LeaderDoc, "{}", "node: Field required"),
    (LeaderDoc, '{"node": 7}', "node: Input should be a valid string"),
    (NodeRecord, '{"node": "r1"}', "role: Field required"),
    (NodeRecord, '{"role": "backup", "pid": "12"}', "pid: Input should be a valid integer"),
    (NodeRecord, '{"role": "backup", "config_serial": true}', "config_serial"),
    (NodeRecord, '{"role": "backup", "config_refused": {"serial_no": 3}}',
     "config_refused.reason: Field required"),
    (NodeRecord, '{"role": "backup", "config_refused": 3}', "config_refused"),
    (HealthVerdict, '{"state": "sideways"}', "state: Input should be 'up', 'down' or 'unknown'"),
    (HealthVerdict, '{"state": "up", "weight": 70000}', "weight: Input should be less than"),
    (HealthVerdict, '{"state": "up", "observed_by": [1]}', "observed_by.0: "),
    (Observation, '{"state": "up", "weight": -1}', "weight: Input should be greater than"),
    (AdminFlag, '{"state": "explode"}', "state: Input should be 'drain' or 'disable'"),
    (SwitchoverRequest, '{"to": 5, "term": "x"}', "to: Input should be a valid string; "
     "term: Input should be a valid integer"),
    (ReleasedMarker, '{"node": "r1"}', "term: Field required"),
    (EvictionVote, '{"term": "t"}', "term: Input should be a valid integer"),
    (ConfigHistoryEntry, '{"serial_no": 1, "changes": "x"}', "changes"),
])
def test_wrong_shapes_name_the_field(cls: type[Document], value: str, problem: str) -> None:
    with pytest.raises(DocumentError) as err:
        cls.decode(value)
    assert problem in str(err.value)


def test_old_records_still_decode() -> None:
    """Values as agents and lvsctl wrote them before the typed layer (and docs/etcd-layout.md)."""
    node = NodeRecord.decode(
        '{"node": "r1", "role": "backup", "address": "10.0.0.11", "pid": 4242, '
        '"version": "0.1.0", "started_at": "2026-11-24T21:30:00.123Z", '
        '"dataplane": "nftables", "etcd": true, "term": 0}')
    assert node.role == "backup" and node.pid == 4242 and node.dataplane == "nftables"
    assert node.config_serial is None and node.config_refused is None
    assert NodeRecord.decode('{"role": "active"}').node == ""  # the name is in the key
    assert LeaderDoc.decode('{"node": "r1", "since": "2026-11-24T21:31:02.001Z"}').node == "r1"
    verdict = HealthVerdict.decode('{"state": "down", "reason": "connect refused"}')
    assert verdict.weight == 1 and verdict.observed_by == () and verdict.term == 0
    assert EvictionVote.decode('{"term": 12}').node == ""
    assert SwitchoverRequest.decode('{"to": "", "term": 3}').to == ""


def test_unknown_fields_are_ignored_so_newer_writers_stay_readable() -> None:
    node = NodeRecord.decode('{"role": "backup", "licence": {"until": 3}, "term": 2}')
    assert node.term == 2 and "licence" not in node.encode()


def test_node_record_config_fields() -> None:
    node = NodeRecord(role="backup", config_serial=4,
                      config_refused=ConfigRefusal(serial_no=5, reason="needs a device"))
    plain = json.loads(node.encode())
    assert plain["config_serial"] == 4
    assert plain["config_refused"] == {"serial_no": 5, "reason": "needs a device"}
    assert node.runs(4) and not node.runs(5)
    assert node.refused(5) == ConfigRefusal(serial_no=5, reason="needs a device")
    assert node.refused(4) is None
    assert json.loads(NodeRecord(role="x").encode())["config_refused"] is None


def test_documents_are_frozen() -> None:
    flag = AdminFlag(state="drain")
    with pytest.raises(ValueError, match="frozen"):
        flag.state = "disable"  # type: ignore[misc]


def test_text_that_is_not_unicode_still_encodes_to_readable_json() -> None:
    flag = AdminFlag(state="drain", by="bad\udc80name")
    assert AdminFlag.decode(flag.encode()).by == "bad?name"
    assert AdminFlag.decode(AdminFlag(state="drain", by="ok \U0001f600").encode()).by == \
        "ok \U0001f600"


def test_leader_key_holds_its_term_even_when_the_value_is_junk() -> None:
    kv = KV("/lvs/c/leader", b'{"node": "r1", "since": "s"}', 41, 41, 1, 7)
    assert LeaderKey.from_kv(kv) == LeaderKey("r1", 41, 7, "s")
    junk = KV("/lvs/c/leader", b"garbage", 52, 52, 1, 9)
    assert LeaderKey.from_kv(junk) == LeaderKey("", 52, 9, "")
    assert LeaderKey.from_kv(kv).doc() == LeaderDoc(node="r1", since="s")


def test_timestamps() -> None:
    assert iso(1764000000.5) == "2025-11-24T16:00:00.500Z"
    assert epoch("2025-11-24T16:00:00.500Z") == 1764000000.5
    assert epoch("x") == 0.0 and epoch(None) == 0.0
    assert now_iso().endswith("Z") and epoch(now_iso()) > 1.7e9


# -- the stored config -------------------------------------------------------------------

def test_stored_config_round_trip_and_readable() -> None:
    cfg = lvscf.load("deploy/examples/lvs.cf")
    stored = StoredConfig(cfg, "serial_no = 1\n", "2026-11-24T21:30:00.123Z", "me@host")
    value = stored.encode()
    plain = json.loads(value)
    assert tuple(plain) == FIELDS[ConfigEnvelope]
    assert plain["format"] == 1 and plain["serial_no"] == cfg.serial_no
    assert plain["config"]["virtuals"][0]["name"] == "http" and len(plain["sha256"]) == 64
    assert "\n" in value  # indented: readable with etcdctl
    assert StoredConfig.decode(value, revision=9) == StoredConfig(
        cfg, "serial_no = 1\n", "2026-11-24T21:30:00.123Z", "me@host", 9)
    kv = KV("/lvs/c/config", value.encode(), 3, 12, 2, 0)
    assert StoredConfig.from_kv(kv).revision == 12


def test_stored_config_junk() -> None:
    cfg = lvscf.load("deploy/examples/lvs.cf")
    good = json.loads(StoredConfig(cfg, "", "", "").encode())
    bad_weight = json.loads(json.dumps(good))
    bad_weight["config"]["virtuals"][0]["servers"][0]["weight"] = 70000
    cases = {
        "this is not json": "not JSON",
        "[]": "not a JSON object",
        '{"serial_no": 3}': "config: Field required",
        json.dumps({**good, "format": 2}): "unknown format 2",
        json.dumps(bad_weight): "invalid config",
    }
    for value, problem in cases.items():
        with pytest.raises(StoredConfigError) as err:
            StoredConfig.decode(value)
        assert problem in str(err.value), (value, err.value)
        assert isinstance(err.value, DocumentError)
    with pytest.raises(StoredConfigError, match=r"^/lvs/c/config: .*weight"):
        StoredConfig.from_kv(KV("/lvs/c/config", json.dumps(bad_weight).encode(), 1, 1, 1, 0))
    old = {k: v for k, v in good.items() if k in ("config",)}  # only the model: still fine
    assert StoredConfig.decode(json.dumps(old)).config == cfg


def test_documents_given_the_same_fields_share_one_set_of_their_names():
    """pydantic gives each model its own set of the field names it was given (728 bytes
    for a health entry's six): frozen documents share one; a copy with changes gets its
    own, and the shared one stays as it was."""
    from cluster.documents.health import HealthGroup, HealthVerdict

    raw = ('{"servers": {"a": {"state": "up", "since": "2026-12-07T00:00:00.000Z", '
           '"weight": null, "reason": "ok", "observed_by": ["r1"], "term": 3}, '
           '"b": {"state": "down", "since": "2026-12-07T00:00:01.000Z", "weight": 2, '
           '"reason": "refused", "observed_by": [], "term": 3}}}')
    one, two = HealthGroup.decode(raw), HealthGroup.decode(raw)
    a, b = one.servers["a"], two.servers["b"]
    assert a.model_fields_set is b.model_fields_set is one.servers["b"].model_fields_set
    made = HealthVerdict(state="up", since="x", weight=None, reason="", observed_by=(),
                         term=1)
    assert made.model_fields_set is a.model_fields_set
    fewer = HealthVerdict(state="up")
    assert fewer.model_fields_set == {"state"} and fewer.model_fields_set is not a.model_fields_set
    changed = fewer.model_copy(update={"reason": "copied"})
    assert changed.model_fields_set == {"state", "reason"}
    assert fewer.model_fields_set == {"state"}  # the shared set did not change
    assert HealthVerdict(state="up").model_fields_set is fewer.model_fields_set
