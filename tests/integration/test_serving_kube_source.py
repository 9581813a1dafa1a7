"""KubeTenantSource on a real API server: first snapshot, updates, deletions, bad records, KUBECONFIG, outages.

Each test makes its own platform namespace and writes tenant records shaped by the operator's builder.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from chorus.operator.apikey import generate_api_key, hash_api_key
from chorus.operator.builders import COMPONENT_LABEL, TenantRef, build_tenant_record, record_name
from chorus.operator.spec import parse_spec
from chorus.operator.testing import apply
from chorus.serving.kube_source import KubeTenantSource, TenantSourceUnavailable, _Expired
from chorus.serving.tenants import TenantDirectory, Tenants

pytestmark = pytest.mark.integration
LOGGER = "chorus.serving.kube_source"


def record(namespace: str, tenant: str, key: str, voices: list[dict], api: dict | None = None) -> dict:
    """A tenant record ConfigMap as the operator writes it (without the owner reference: no VoiceTenant here)."""
    spec = parse_spec({"owners": [{"kind": "User", "name": f"{tenant}-owner"}], "api": api or {}})
    cm = build_tenant_record(TenantRef(tenant, "0000-uid"), spec, hash_api_key(key), voices, namespace)
    del cm["metadata"]["ownerReferences"]  # the garbage collector would delete it: its owner does not exist
    return cm


def voice(name: str, version: int, state: str = "Ready") -> dict:
    """A voice as the operator's voice driver reports it: a Ready voice serves `version`, others nothing yet."""
    status = {"name": name, "state": state, "version": version}
    if state == "Ready":
        status.update(servingVersion=version, adapterUri=f"s3://adapters/{name}/v{version}")
    return status


class Snapshots:
    """An on_change callback that keeps every snapshot delivered, and waits for one that passes a check."""

    def __init__(self) -> None:
        self.seen: list[Tenants] = []
        self.threads: set[str] = set()
        self._cond = threading.Condition()

    def __call__(self, tenants: Tenants) -> None:
        with self._cond:
            self.seen.append(tenants)
            self.threads.add(threading.current_thread().name)
            self._cond.notify_all()

    @property
    def latest(self) -> Tenants:
        """The last snapshot delivered."""
        return self.seen[-1]

    def wait(self, check: Callable[[Tenants], bool], timeout: float = 5.0, what: str = "snapshot") -> Tenants:
        """The first latest snapshot that passes check, within timeout seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self.seen and check(self.seen[-1])):
                left = deadline - time.monotonic()
                if left <= 0:
                    names = [t.name for t in self.seen[-1].tenants] if self.seen else None
                    raise AssertionError(f"{what} not delivered in {timeout}s (latest tenants: {names})")
                self._cond.wait(min(left, 0.1))
            return self.seen[-1]


def wait_for_log(caplog, text: str, timeout: float = 10.0) -> None:
    """Wait until a captured log message contains text."""
    deadline = time.monotonic() + timeout
    while not any(text in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, f"no log message with {text!r} in {timeout}s"
        time.sleep(0.1)


@pytest.fixture
def platform(kubectl, unique_name) -> Iterator[str]:
    """A fresh namespace standing in for chorus-system."""
    kubectl("create", "namespace", unique_name, check=True)
    yield unique_name
    kubectl("delete", "namespace", unique_name, "--wait=false")


@pytest.fixture
def sources() -> Iterator[Callable[..., KubeTenantSource]]:
    """Make KubeTenantSources that are stopped after the test."""
    made: list[KubeTenantSource] = []

    def make(*args, **kwargs) -> KubeTenantSource:
        made.append(KubeTenantSource(*args, **kwargs))
        return made[-1]

    yield make
    for source in made:
        source.stop()


def version_of(tenants: Tenants, tenant: str, voice_name: str) -> int | None:
    """The version of a tenant's voice in a snapshot, or None."""
    found = tenants.by_name(tenant)
    entry = found.voice(voice_name) if found else None
    return entry.version if entry else None


def test_snapshot_then_updates_and_deletions(kubectl, kubeconfig, platform, sources, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    keys = {"acme": generate_api_key(), "globex": generate_api_key()}
    apply(kubectl,
          record(platform, "acme", keys["acme"], [voice("promo", 1), voice("narrator", 1, "Pending")],
                 {"requestsPerMinute": 120, "maxConcurrent": 3, "maxCharsPerRequest": 900}),
          record(platform, "globex", keys["globex"], [voice("anna", 4)]))
    snaps = Snapshots()
    source = sources(platform, kubeconfig=kubeconfig)
    source.start(snaps)

    # The first snapshot arrives before start returns, in the caller's thread.
    assert len(snaps.seen) == 1 and snaps.threads == {threading.current_thread().name}
    first = snaps.latest
    assert [t.name for t in first.tenants] == ["acme", "globex"]
    acme = first.by_name("acme")
    assert (acme.limits.requests_per_minute, acme.limits.max_concurrent, acme.limits.max_chars_per_request) == (
        120, 3, 900)
    assert acme.key_sha256 == (hash_api_key(keys["acme"]),)
    promo, narrator = acme.voice("promo"), acme.voice("narrator")
    assert (promo.version, promo.adapter_uri, promo.language, promo.servable) == (
        1, "s3://adapters/promo/v1", "en-us", True)
    assert narrator.state == "Pending" and not narrator.servable
    assert first.by_name("globex").limits.requests_per_minute == 600  # the operator's default, as written
    assert first.by_name("globex").voice("anna").version == 4

    directory = TenantDirectory(first)
    assert directory.authenticate(keys["acme"]).name == "acme"
    assert directory.authenticate(keys["globex"]).name == "globex"
    assert directory.authenticate(generate_api_key()) is None

    # A new voice version is delivered within seconds.
    apply(kubectl, record(platform, "acme", keys["acme"], [voice("promo", 2), voice("narrator", 1, "Pending")],
                          {"requestsPerMinute": 120, "maxConcurrent": 3, "maxCharsPerRequest": 900}))
    updated = snaps.wait(lambda t: version_of(t, "acme", "promo") == 2, what="promo v2")
    assert updated.by_name("acme").voice("promo").adapter_uri == "s3://adapters/promo/v2"
    assert updated.by_name("globex") == first.by_name("globex")

    # A deleted record removes its tenant: the key stops working, the other tenant keeps serving.
    kubectl("delete", "configmap", record_name("globex"), "-n", platform, check=True)
    gone = snaps.wait(lambda t: t.by_name("globex") is None, what="globex removed")
    directory.update(gone)
    assert directory.authenticate(keys["globex"]) is None
    assert directory.authenticate(keys["acme"]).name == "acme"

    # Later snapshots come from the watch thread; stop() ends it promptly.
    assert "chorus-tenant-kube" in snaps.threads
    thread = source._thread
    started = time.monotonic()
    source.stop()
    assert time.monotonic() - started < 2 and not thread.is_alive()
    assert not any(h in caplog.text for h in map(hash_api_key, keys.values())), "a key hash was logged"
    assert not any(k in caplog.text for k in keys.values()), "a key was logged"


def test_malformed_record_is_skipped_and_the_others_served(kubectl, kubeconfig, platform, sources, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    good_key, bad_key = generate_api_key(), generate_api_key()
    broken = record(platform, "broken", bad_key, [voice("promo", 1)])
    broken["data"]["voices.json"] = "[{not json"
    unlabelled = record(platform, "stray", generate_api_key(), [])
    del unlabelled["metadata"]["labels"][COMPONENT_LABEL]
    apply(kubectl, record(platform, "acme", good_key, [voice("promo", 1)]), broken, unlabelled)
    snaps = Snapshots()
    sources(platform, kubeconfig=kubeconfig).start(snaps)

    assert [t.name for t in snaps.latest.tenants] == ["acme"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    where = f"{platform}/{record_name('broken')}"
    assert any(where in w and "voices.json is not JSON" in w for w in warnings), warnings
    assert TenantDirectory(snaps.latest).authenticate(bad_key) is None

    # A bad key hash is named without being printed; fixing the record brings the tenant in.
    broken["data"]["voices.json"] = "[]"
    broken["data"]["apiKeySha256"] = "Z" + hash_api_key(bad_key)[1:]
    apply(kubectl, broken)
    wait_for_log(caplog, f"{record_name('broken')}: apiKeySha256: Value error")
    broken["data"]["apiKeySha256"] = hash_api_key(bad_key)
    apply(kubectl, broken)
    fixed = snaps.wait(lambda t: t.by_name("broken") is not None, what="the fixed record")
    assert TenantDirectory(fixed).authenticate(bad_key).name == "broken"
    assert [t.name for t in fixed.tenants] == ["acme", "broken"]
    assert hash_api_key(bad_key)[1:] not in caplog.text and hash_api_key(good_key) not in caplog.text


def test_kubeconfig_env_var_is_honoured(kubectl, kubeconfig, platform, sources, monkeypatch, tmp_path):
    key = generate_api_key()
    apply(kubectl, record(platform, "initech", key, [voice("promo", 1)]))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config to fall back on
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(TenantSourceUnavailable, match="missing.yaml"):
        sources(platform).start(Snapshots())

    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    snaps = Snapshots()
    sources(platform).start(snaps)
    assert TenantDirectory(snaps.latest).authenticate(key).name == "initech"


def test_expired_watch_lists_again(kubectl, kubeconfig, platform, sources, caplog, monkeypatch):
    # A fresh API server keeps its whole history, so 410 Gone cannot be provoked; it is fed in instead.
    caplog.set_level(logging.INFO, logger=LOGGER)
    keys = [generate_api_key(), generate_api_key()]
    apply(kubectl, record(platform, "hooli", keys[0], [voice("promo", 1)]))
    snaps = Snapshots()
    source = sources(platform, kubeconfig=kubeconfig, watch_timeout_s=1)
    with pytest.raises(_Expired):
        source._apply({"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                                   "message": "too old resource version: 1 (250)"}})
    source.start(snaps)

    watch = source._watch_once

    def expires_once() -> None:
        # The next watch finds its resource version compacted away, after a change it never saw as an event.
        monkeypatch.setattr(source, "_watch_once", watch)
        apply(kubectl, record(platform, "pied-piper", keys[1], [voice("promo", 1)]))
        raise _Expired("too old resource version")

    monkeypatch.setattr(source, "_watch_once", expires_once)
    wait_for_log(caplog, "listing again")
    listed = snaps.wait(lambda t: t.by_name("pied-piper") is not None, what="the tenant found by the relist")
    assert TenantDirectory(listed).authenticate(keys[1]).name == "pied-piper"
    apply(kubectl, record(platform, "hooli", keys[0], [voice("promo", 2)]))
    snaps.wait(lambda t: version_of(t, "hooli", "promo") == 2, what="a change watched after the relist")


class Relay:
    """A TCP relay to the API server that can drop every connection and refuse new ones, like a restart."""

    def __init__(self, server: str):
        url = urllib.parse.urlsplit(server)
        self.target = (url.hostname, url.port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            try:
                if not self.up:
                    raise OSError("down")
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                conn.close()
                continue
            with self._lock:
                self._open |= {conn, upstream}
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(src, dst)

    def _drop(self, *socks: socket.socket) -> None:
        for sock in socks:
            with self._lock:
                self._open.discard(sock)
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def cut(self) -> None:
        """Drop every open connection and refuse new ones until `up` is set again."""
        self.up = False
        with self._lock:
            socks = list(self._open)
        self._drop(*socks)

    def close(self) -> None:
        """Stop relaying."""
        self.cut()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()


@pytest.fixture
def relay(control_plane, kubeconfig, tmp_path) -> Iterator[tuple[Relay, Path]]:
    """A Relay to the API server and a kubeconfig that goes through it."""
    relay = Relay(control_plane.server)
    config = yaml.safe_load(Path(kubeconfig).read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{relay.port}"
    path = tmp_path / "relayed.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    yield relay, path
    relay.close()


def test_reconnects_after_the_api_server_goes_away(kubectl, platform, sources, relay, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    proxy, relayed = relay
    key = generate_api_key()
    apply(kubectl, record(platform, "umbrella", key, [voice("promo", 1)]))
    snaps = Snapshots()
    sources(platform, kubeconfig=relayed).start(snaps)
    assert version_of(snaps.latest, "umbrella", "promo") == 1

    proxy.cut()  # the API server "restarts": the watch drops, reconnects are refused
    apply(kubectl, record(platform, "umbrella", key, [voice("promo", 2)]))
    wait_for_log(caplog, "retrying in")
    assert version_of(snaps.latest, "umbrella", "promo") == 1  # the last snapshot keeps serving meanwhile
    proxy.up = True
    snaps.wait(lambda t: version_of(t, "umbrella", "promo") == 2, timeout=20, what="the change made while down")
    assert TenantDirectory(snaps.latest).authenticate(key).name == "umbrella"


def test_start_fails_clearly_when_the_api_server_is_unreachable(platform, sources, relay):
    proxy, relayed = relay
    proxy.cut()
    started = time.monotonic()
    with pytest.raises(TenantSourceUnavailable, match=f"namespace {platform} .* within 2s"):
        sources(platform, kubeconfig=relayed, start_timeout_s=2).start(Snapshots())
    assert time.monotonic() - started < 6
