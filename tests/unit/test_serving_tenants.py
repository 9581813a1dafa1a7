"""serving.tenants: the tenant document is validated field by field without echoing key hashes, keys
authenticate by hash (both keys during a rotation), and the file source delivers edits and survives bad ones."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest
import yaml

from chorus.serving.tenants import (
    FileTenantSource,
    TenantDirectory,
    Tenants,
    TenantSourceError,
    VoiceEntry,
    hash_key,
    parse_tenants,
)

ACME_KEYS = ("acme-old-key", "acme-new-key")
GLOBEX_KEY = "globex-key"


def _doc() -> dict:
    """A good tenant document: acme mid-rotation (two keys), with limits and voices; globex with defaults."""
    return {"tenants": [
        {"name": "acme", "apiKeySha256": [hash_key(k) for k in ACME_KEYS],
         "limits": {"requestsPerMinute": 120, "maxConcurrent": 3, "maxCharsPerRequest": 2000},
         "voices": [{"name": "narrator", "state": "Ready", "version": 2, "adapterUri": "s3://voices/acme/narrator/2"},
                    {"name": "draft", "state": "Training"}]},
        {"name": "globex", "apiKeySha256": hash_key(GLOBEX_KEY)},
    ]}


ALL_HASHES = [hash_key(k) for k in (*ACME_KEYS, GLOBEX_KEY)]


def test_parse_good_yaml():
    tenants = parse_tenants(yaml.safe_load(yaml.safe_dump(_doc())), "test")
    assert [t.name for t in tenants.tenants] == ["acme", "globex"]
    acme, globex = tenants.by_name("acme"), tenants.by_name("globex")
    assert acme.key_sha256 == tuple(hash_key(k) for k in ACME_KEYS)
    assert globex.key_sha256 == (hash_key(GLOBEX_KEY),)  # one hash may be written as a plain string
    assert (acme.limits.requests_per_minute, acme.limits.max_concurrent, acme.limits.max_chars_per_request) == (
        120, 3, 2000)
    assert globex.limits.requests_per_minute == 600 and globex.voices == ()  # defaults
    narrator = acme.voice("narrator")
    assert narrator.version == 2 and narrator.adapter_uri == "s3://voices/acme/narrator/2"
    assert acme.voice("draft").state == "Training" and acme.voice("default") is None
    assert tenants.by_name("initech") is None


@pytest.mark.parametrize("data", [None, {}, {"tenants": None}, {"tenants": []}])
def test_an_empty_document_is_no_tenants(data):
    assert parse_tenants(data, "test") == Tenants()


def _bad(mutate):
    doc = _doc()
    mutate(doc)
    return doc


def _set(path, value):
    """A mutation that sets doc[path...] = value."""
    def mutate(doc):
        node = doc
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    return mutate


UPPER = hash_key("uppercased").upper()
BAD_INPUTS = [
    ("list", lambda: [_doc()["tenants"][0]], ["'tenants'", "mapping"]),
    ("string", lambda: "tenants", ["'tenants'", "mapping"]),
    ("unknown-top-key", lambda: {**_doc(), "defaults": {"limits": {}}}, ["'tenants'"]),
    ("short-hash", lambda: _bad(_set(["tenants", 1, "apiKeySha256"], hash_key(GLOBEX_KEY)[:-1])),
     ["apiKeySha256", "64 lower-case hex"]),
    ("upper-case-hash", lambda: _bad(_set(["tenants", 1, "apiKeySha256"], UPPER)), ["apiKeySha256", "hex"]),
    ("raw-key-instead-of-hash", lambda: _bad(_set(["tenants", 0, "apiKeySha256"], [ALL_HASHES[0], "sk-live-1234"])),
     ["apiKeySha256"]),
    ("no-hash", lambda: _bad(_set(["tenants", 1, "apiKeySha256"], [])), ["apiKeySha256"]),
    ("missing-hash", lambda: {"tenants": [{"name": "acme"}]}, ["apiKeySha256"]),
    ("duplicate-names", lambda: _bad(_set(["tenants", 1, "name"], "acme")), ["repeated", "acme"]),
    ("bad-tenant-name", lambda: _bad(_set(["tenants", 1, "name"], "Globex Inc")), ["name"]),
    ("bad-voice-name", lambda: _bad(_set(["tenants", 0, "voices", 0, "name"], "Narrator_1")),
     ["voices", "name"]),
    ("voice-version-zero", lambda: _bad(_set(["tenants", 0, "voices", 0, "version"], 0)), ["version"]),
    ("rpm-zero", lambda: _bad(_set(["tenants", 0, "limits", "requestsPerMinute"], 0)),
     ["limits", "requestsPerMinute"]),
    ("concurrency-too-high", lambda: _bad(_set(["tenants", 0, "limits", "maxConcurrent"], 10_000)),
     ["limits", "maxConcurrent"]),
    ("chars-negative", lambda: _bad(_set(["tenants", 0, "limits", "maxCharsPerRequest"], -1)),
     ["limits", "maxCharsPerRequest"]),
    ("unknown-tenant-field", lambda: _bad(_set(["tenants", 0, "apiKey"], "acme-new-key")), ["apiKey"]),
    ("tenant-not-a-mapping", lambda: {"tenants": [hash_key("x")]}, ["tenant"]),
]


@pytest.mark.parametrize("make, fields", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_documents_name_the_field_and_never_echo_a_key_hash(make, fields):
    data = make()
    with pytest.raises(TenantSourceError) as info:
        parse_tenants(data, "tenant file /etc/chorus/tenants.yaml")
    message = str(info.value)
    assert message.startswith("tenant file /etc/chorus/tenants.yaml: ")
    for field in fields:
        assert field in message, f"{field!r} not named in: {message}"
    for secret in (*ALL_HASHES, UPPER, hash_key(GLOBEX_KEY)[:-1], hash_key("x"), "sk-live-1234", "acme-new-key"):
        assert secret not in message and secret.lower() not in message.lower(), message


def _directory() -> TenantDirectory:
    return TenantDirectory(parse_tenants(_doc(), "test"))


def test_authenticate_by_key():
    directory = _directory()
    assert directory.authenticate(GLOBEX_KEY).name == "globex"
    assert directory.authenticate("not-a-key") is None
    assert directory.authenticate("") is None
    assert directory.authenticate(hash_key(GLOBEX_KEY)) is None  # the hash itself is not a key
    assert directory.authenticate(GLOBEX_KEY + " ") is None
    assert TenantDirectory().authenticate(GLOBEX_KEY) is None  # no snapshot yet: nobody


def test_both_keys_work_during_a_rotation():
    directory = _directory()
    assert [directory.authenticate(k).name for k in ACME_KEYS] == ["acme", "acme"]
    # the rotation ends: the old key stops working, the new one keeps working
    doc = _doc()
    doc["tenants"][0]["apiKeySha256"] = hash_key(ACME_KEYS[1])
    directory.update(parse_tenants(doc, "test"))
    assert directory.authenticate(ACME_KEYS[0]) is None
    assert directory.authenticate(ACME_KEYS[1]).name == "acme"
    assert directory.tenants.by_name("acme").key_sha256 == (hash_key(ACME_KEYS[1]),)


def test_voice_entry_servable():
    uri = "s3://voices/acme/narrator/2"
    assert VoiceEntry(name="narrator", adapterUri=uri).servable  # Ready by default
    assert VoiceEntry(name="narrator", state="Ready", adapter_uri=uri).servable
    assert not VoiceEntry(name="narrator", state="Ready").servable  # nothing to load
    for state in ("Training", "Failed", "Pending", "ready"):
        assert not VoiceEntry(name="narrator", state=state, adapterUri=uri).servable, state


# --- FileTenantSource ------------------------------------------------------------------------------------


def _write(path: Path, data) -> None:
    """Replace the file at once, as an editor's save or a ConfigMap update does (no half-written file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(data if isinstance(data, str) else yaml.safe_dump(data), "utf-8")
    os.replace(tmp, path)


class Collector:
    """on_change that records each snapshot and lets a test wait for the next."""

    def __init__(self):
        self.snapshots: list[Tenants] = []
        self._changed = threading.Condition()

    def __call__(self, tenants: Tenants) -> None:
        with self._changed:
            self.snapshots.append(tenants)
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 2.0) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self.snapshots) >= count, timeout)


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "tenants.yaml"
    _write(path, _doc())
    src = FileTenantSource(path, poll_s=0.1)
    yield src
    src.stop()


def test_start_delivers_the_first_snapshot_before_returning(source):
    seen = Collector()
    source.start(seen)
    assert len(seen.snapshots) == 1
    assert [t.name for t in seen.snapshots[0].tenants] == ["acme", "globex"]


def test_an_edit_is_delivered_within_two_seconds(source):
    seen = Collector()
    source.start(seen)
    doc = _doc()
    doc["tenants"].append({"name": "initech", "apiKeySha256": hash_key("initech-key")})
    start = time.monotonic()
    _write(source.path, doc)
    assert seen.wait_for(2), "the edit was not delivered within 2 s"
    assert time.monotonic() - start < 2.0
    assert [t.name for t in seen.snapshots[1].tenants] == ["acme", "globex", "initech"]
    time.sleep(0.3)  # an unchanged file is not delivered again
    assert len(seen.snapshots) == 2


def test_a_broken_edit_keeps_the_previous_snapshot(source, caplog):
    seen = Collector()
    directory = TenantDirectory()
    source.start(lambda tenants: (directory.update(tenants), seen(tenants)))
    with caplog.at_level(logging.WARNING, logger="chorus.serving.tenants"):
        doc = _doc()
        doc["tenants"][1]["limits"] = {"requestsPerMinute": 0}
        _write(source.path, doc)
        deadline = time.monotonic() + 2.0
        while not caplog.records and time.monotonic() < deadline:
            time.sleep(0.02)
        _write(source.path, "tenants:\n  - name: acme\n    apiKeySha256: [" + ALL_HASHES[0] + "\n")  # not YAML
        deadline = time.monotonic() + 2.0
        while len(caplog.records) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    warnings = [r for r in caplog.records if r.name == "chorus.serving.tenants" and r.levelno == logging.WARNING]
    assert len(warnings) == 2, [r.getMessage() for r in caplog.records]
    assert "requestsPerMinute" in warnings[0].getMessage()
    assert "not valid YAML" in warnings[1].getMessage()
    assert all("keeping the previous tenants" in w.getMessage() for w in warnings)
    assert not any(h in w.getMessage() for w in warnings for h in ALL_HASHES)
    assert len(seen.snapshots) == 1  # nothing delivered: serving keeps the last good tenants
    assert directory.authenticate(GLOBEX_KEY).name == "globex"
    # a good edit after the broken ones is delivered again
    doc = _doc()
    del doc["tenants"][1]
    _write(source.path, doc)
    assert seen.wait_for(2)
    assert [t.name for t in seen.snapshots[1].tenants] == ["acme"]
    assert directory.authenticate(GLOBEX_KEY) is None


def test_a_missing_or_invalid_file_at_start_raises(tmp_path):
    seen = Collector()
    missing = FileTenantSource(tmp_path / "absent.yaml", poll_s=0.1)
    with pytest.raises(TenantSourceError, match="absent.yaml"):
        missing.start(seen)
    bad = tmp_path / "bad.yaml"
    _write(bad, {"tenants": [{"name": "acme", "apiKeySha256": "nothex"}]})
    with pytest.raises(TenantSourceError, match=r"bad\.yaml: tenants\.0\.apiKeySha256"):
        FileTenantSource(bad, poll_s=0.1).start(seen)
    assert seen.snapshots == []


def test_stop_ends_polling(source):
    seen = Collector()
    source.start(seen)
    source.stop()
    doc = _doc()
    del doc["tenants"][0]
    _write(source.path, doc)
    time.sleep(0.4)
    assert len(seen.snapshots) == 1
