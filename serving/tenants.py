"""Who may call the API and which voices they reach: tenants, key hashes, limits, voices; one interface, two sources.

A `TenantSource` produces `Tenants` snapshots (immutable) and calls back when they change; the serving
tier keeps the latest one in a `TenantDirectory`. Sources: `FileTenantSource` (a YAML file, re-read when
it changes: the embedded default and installs without Kubernetes) and
`chorus.serving.kube_source.KubeTenantSource` (the operator's tenant-record ConfigMaps, watched).
Keys never reach this module's data: only their sha256, as the operator publishes them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from chorus.operator.spec import DNS_LABEL, ApiLimits

log = logging.getLogger(__name__)

READY = "Ready"
DEFAULT_VOICE = "default"
"""The base voice: every tenant has it, with no adapter."""

SHA256_HEX = r"^[0-9a-f]{64}$"


class TenantSourceError(ValueError):
    """A tenant file or record that cannot be used; the message names the field and the value's problem."""


class VoiceEntry(BaseModel):
    """One voice of a tenant as serving sees it: where its adapter is and whether it may serve."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    name: str = Field(pattern=DNS_LABEL, max_length=63, description="voice name, unique in the tenant")
    state: str = Field(READY, description="operator state; only Ready voices serve")
    version: int | None = Field(None, ge=1, description="registry version being served")
    adapter_uri: str | None = Field(None, alias="adapterUri",
                                    description="fsspec URI of the artifact directory (a registry version folder)")
    language: str = Field("en-us", description="espeak-ng voice of the text front end")

    @property
    def servable(self) -> bool:
        """Ready with an adapter to load."""
        return self.state == READY and self.adapter_uri is not None


class Tenant(BaseModel):
    """A tenant: its key hashes (several during a rotation), API limits and voices."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    name: str = Field(pattern=DNS_LABEL, max_length=63, description="tenant name")
    key_sha256: tuple[str, ...] = Field(alias="apiKeySha256", min_length=1, repr=False,
                                        description="hex sha256 of each valid API key (kept out of repr and logs)")
    limits: ApiLimits = Field(ApiLimits(), description="requests per minute, concurrency, characters per request")
    voices: tuple[VoiceEntry, ...] = Field((), description="the tenant's voices (the base voice is implied)")

    @field_validator("key_sha256", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return (value,) if isinstance(value, str) else value

    @field_validator("key_sha256")
    @classmethod
    def _hex(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import re

        bad = [v for v in value if not re.match(SHA256_HEX, v)]
        if bad:
            raise ValueError(f"{len(bad)} key hash(es) are not 64 lower-case hex digits (a sha256 of the key)")
        return value

    def voice(self, name: str) -> VoiceEntry | None:
        """The named voice, or None (the base voice is `default` and has no entry)."""
        return next((v for v in self.voices if v.name == name), None)


class Tenants(BaseModel):
    """An immutable snapshot of every tenant."""

    model_config = ConfigDict(frozen=True)

    tenants: tuple[Tenant, ...] = ()

    def by_name(self, name: str) -> Tenant | None:
        """The tenant called `name`, or None."""
        return next((t for t in self.tenants if t.name == name), None)


def hash_key(key: str) -> str:
    """The hex sha256 of a presented key (the form the operator publishes)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class TenantDirectory:
    """The current snapshot, and key -> tenant by constant-time comparison of sha256 hashes."""

    def __init__(self, tenants: Tenants | None = None):
        self._tenants = tenants or Tenants()
        self._lock = threading.Lock()

    @property
    def tenants(self) -> Tenants:
        """The latest snapshot."""
        return self._tenants

    def update(self, tenants: Tenants) -> None:
        """Replace the snapshot (requests already authenticated keep the tenant they got)."""
        with self._lock:
            self._tenants = tenants

    def authenticate(self, key: str) -> Tenant | None:
        """The tenant whose key this is, or None.

        Every stored hash is compared with hmac.compare_digest, with no early exit, so the time taken
        does not depend on which tenant (if any) matched or how much of a hash did.
        """
        presented = hash_key(key).encode()
        found: Tenant | None = None
        for tenant in self._tenants.tenants:
            for stored in tenant.key_sha256:
                if hmac.compare_digest(presented, stored.encode()) and found is None:
                    found = tenant
        return found


class TenantSource(Protocol):
    """Where tenants come from; `start` calls `on_change` with the first snapshot and then with each change."""

    def start(self, on_change: Callable[[Tenants], None]) -> None:
        """Begin delivering snapshots (the first one before returning)."""
        ...

    def stop(self) -> None:
        """Stop watching."""
        ...


def parse_tenants(data: object, where: str) -> Tenants:
    """A Tenants snapshot from the YAML document {tenants: [...]}; TenantSourceError names each bad field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TenantSourceError(f"{where}: expected a mapping with one key, 'tenants' (a list)")
    unknown = sorted(str(k) for k in set(data) - {"tenants"})
    if unknown:
        raise TenantSourceError(f"{where}: unknown key(s) {unknown}; the only key is 'tenants' (a list)")
    parsed = []
    for i, item in enumerate(data.get("tenants") or ()):
        try:
            parsed.append(Tenant.model_validate(item))
        except ValidationError as exc:
            problems = "; ".join(f"tenants.{i}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise TenantSourceError(f"{where}: {problems}") from None
    tenants = Tenants(tenants=tuple(parsed))
    names = [t.name for t in tenants.tenants]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TenantSourceError(f"{where}: tenant names repeated: {', '.join(dupes)}")
    return tenants


class FileTenantSource:
    """Tenants from a YAML file, polled for changes; a bad edit is logged and the last good snapshot kept."""

    def __init__(self, path: Path | str, poll_s: float = 1.0):
        self.path = Path(path)
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: tuple[int, int] | None = None

    def load(self) -> Tenants:
        """Read and validate the file now (TenantSourceError if it is missing or invalid)."""
        try:
            text = self.path.read_text("utf-8")
        except OSError as exc:
            raise TenantSourceError(f"tenant file {self.path}: {exc.strerror or exc}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise TenantSourceError(f"tenant file {self.path} is not valid YAML: {exc}") from None
        return parse_tenants(data, f"tenant file {self.path}")

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def start(self, on_change: Callable[[Tenants], None]) -> None:
        """Deliver the file's tenants now (fail fast if invalid), then poll for changes in a thread."""
        self._seen = self._stamp()
        on_change(self.load())

        def poll() -> None:
            while not self._stop.wait(self.poll_s):
                stamp = self._stamp()
                if stamp == self._seen:
                    continue
                self._seen = stamp
                try:
                    tenants = self.load()
                    if not tenants.tenants and self.path.stat().st_size == 0:
                        # a file being rewritten in place reads empty for a moment: wait for its content
                        raise TenantSourceError(f"tenant file {self.path} is empty")
                    on_change(tenants)
                except (TenantSourceError, OSError) as exc:  # keep serving what was there
                    log.warning("%s; keeping the previous tenants", exc)

        self._thread = threading.Thread(target=poll, name="chorus-tenant-file", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
