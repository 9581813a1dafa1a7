"""Adapter registry over an fsspec root (file:// by default, s3:// works) with immutable versions.

Layout:
  <root>/<tenant>/<voice>/<version>/            the artifact files (chorus_manifest.json written last)
  <root>/<tenant>/<voice>/<version>.claim       created exclusively when a publish takes the number
Versions are monotonic integers 1, 2, 3, ... per voice (not semver: a voice's versions are retrainings with
no API to be compatible with; an integer orders them and a Kubernetes spec can pin one). A publish first
creates the claim with an exclusive create (local O_EXCL; on S3 a conditional PUT, If-None-Match: *), so
two publishers can never share a number and a number is never reused, even after delete. Files go up
before the manifest, and only versions with a manifest are listed: a crashed publish is never visible.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import fsspec
from pydantic import BaseModel

from chorus.adapters.artifact import (
    MANIFEST_FILE,
    AdapterArtifactError,
    NAME_PATTERN,
    ChorusManifest,
    LoadedAdapter,
    load_artifact,
    manifest_bytes,
    parse_manifest,
    verify_artifact,
)

CLAIM_SUFFIX = ".claim"
LATEST = "latest"


class RegistryError(RuntimeError):
    """A registry operation cannot be done."""


class VersionExistsError(RegistryError):
    """The version is already published (or its number was used before): versions are immutable."""


class VersionNotFoundError(RegistryError):
    """No such tenant, voice or version in the registry."""


class VersionInfo(BaseModel):
    """One published version, summarised for listings."""

    tenant: str
    voice: str
    version: int
    created: datetime | None = None
    base_fingerprint: str | None = None
    dataset_hash: str | None = None
    gate_passed: bool | None = None
    gap_closed: float | None = None
    wer_adapted: float | None = None
    dnsmos_adapted: float | None = None
    size_bytes: int | None = None
    error: str | None = None  # set when the manifest cannot be read: the version is listed as broken


def _check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not re.match(NAME_PATTERN, value):
        raise RegistryError(f"invalid {kind} name {value!r}: use a DNS label (lower-case letters, digits, '-', "
                            "at most 63 characters, starting and ending with a letter or digit)")
    return value


def _summary(m: ChorusManifest) -> VersionInfo:
    metrics = m.quality.metrics if m.quality else None
    return VersionInfo(
        tenant=m.tenant, voice=m.voice, version=m.version or 0, created=m.created,
        base_fingerprint=m.base_model.fingerprint, dataset_hash=m.dataset_hash, gate_passed=m.gate_passed,
        gap_closed=metrics.gap_closed() if metrics else None,
        wer_adapted=metrics.wer_adapted if metrics else None,
        dnsmos_adapted=metrics.dnsmos_adapted if metrics else None,
        size_bytes=sum(f.size for f in m.files.values()))


class Registry:
    """Publish, list, fetch and delete adapter versions under one fsspec root URI."""

    def __init__(self, root_uri: str, storage_options: dict | None = None):
        self.root_uri = root_uri
        self.fs, root = fsspec.core.url_to_fs(root_uri, **(storage_options or {}))
        self.root = root.rstrip("/")
        self._local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    # ---- paths -------------------------------------------------------------------------------------
    def _voice_dir(self, tenant: str, voice: str) -> str:
        return posixpath.join(self.root, _check_name("tenant", tenant), _check_name("voice", voice))

    def _version_dir(self, tenant: str, voice: str, version: int) -> str:
        if not isinstance(version, int) or version < 1:
            raise RegistryError(f"invalid version {version!r}: versions are integers >= 1")
        return posixpath.join(self._voice_dir(tenant, voice), str(version))

    def _names(self, path: str) -> list[str]:
        self.fs.invalidate_cache()
        try:
            entries = self.fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(e.rstrip("/")) for e in entries)

    # ---- listing -----------------------------------------------------------------------------------
    def tenants(self) -> list[str]:
        """Tenants with at least one voice directory."""
        return [n for n in self._names(self.root) if re.match(NAME_PATTERN, n)]

    def voices(self, tenant: str) -> list[str]:
        """Voice names of a tenant."""
        return [n for n in self._names(posixpath.join(self.root, _check_name("tenant", tenant)))
                if re.match(NAME_PATTERN, n)]

    def _used_numbers(self, tenant: str, voice: str) -> set[int]:
        names = self._names(self._voice_dir(tenant, voice))
        return {int(n.removesuffix(CLAIM_SUFFIX)) for n in names if n.removesuffix(CLAIM_SUFFIX).isdigit()}

    def versions(self, tenant: str, voice: str) -> list[int]:
        """Published (complete, not deleted) versions, ascending."""
        vdir = self._voice_dir(tenant, voice)
        nums = sorted(int(n) for n in self._names(vdir) if n.isdigit())
        return [v for v in nums if self.fs.exists(posixpath.join(vdir, str(v), MANIFEST_FILE))]

    def manifest(self, tenant: str, voice: str, version: int | str = LATEST) -> ChorusManifest:
        """The manifest of a published version ('latest' for the highest)."""
        v = self.resolve(tenant, voice, version)
        path = posixpath.join(self._version_dir(tenant, voice, v), MANIFEST_FILE)
        return parse_manifest(self.fs.cat_file(path), f"{self.root_uri} {tenant}/{voice}/{v}")

    def list(self, tenant: str | None = None, voice: str | None = None) -> list[VersionInfo]:
        """Summaries of every published version, optionally of one tenant or one voice."""
        out = []
        for t in [tenant] if tenant else self.tenants():
            for vo in [voice] if voice else self.voices(t):
                for v in self.versions(t, vo):
                    try:
                        out.append(_summary(self.manifest(t, vo, v)))
                    except AdapterArtifactError as exc:  # one broken manifest must not hide the others
                        out.append(VersionInfo(tenant=t, voice=vo, version=v, error=str(exc)))
        return out

    def latest(self, tenant: str, voice: str, passed_only: bool = False) -> int:
        """Highest published version (of those that passed the quality gate, with passed_only)."""
        versions = self.versions(tenant, voice)
        if passed_only:
            versions = [v for v in versions if self.manifest(tenant, voice, v).gate_passed]
        if not versions:
            what = "passing the quality gate " if passed_only else ""
            raise VersionNotFoundError(f"no published version {what}of {tenant}/{voice} in {self.root_uri}")
        return versions[-1]

    def resolve(self, tenant: str, voice: str, version: int | str) -> int:
        """An integer version from an int, a digit string or 'latest'; VersionNotFoundError if unpublished."""
        if version == LATEST:
            return self.latest(tenant, voice)
        try:
            v = int(version)
        except (TypeError, ValueError):
            raise RegistryError(f"invalid version {version!r}: an integer >= 1 or {LATEST!r}") from None
        if v not in self.versions(tenant, voice):
            have = self.versions(tenant, voice)
            raise VersionNotFoundError(f"{tenant}/{voice} version {v} is not published in {self.root_uri} "
                                       f"(published: {have or 'none'})")
        return v

    # ---- writing -----------------------------------------------------------------------------------
    def _put_exclusive(self, path: str, data: bytes, tmp_dir: str) -> None:
        """Create `path` with `data`, atomically, failing with FileExistsError if it exists.

        Local: written to a temporary file in `tmp_dir` (the voice directory, whose listing ignores it, so
        a killed publish leaves no stray file inside a version), then hard-linked into place (link(2)
        refuses an existing name), so the file appears whole or not at all. fsspec's local
        pipe_file(mode="create") checks then writes, which two processes can both pass. Object stores: a
        conditional PUT (If-None-Match: *), which AWS S3, MinIO and moto honour.
        """
        if not self._local:
            self.fs.pipe_file(path, data, mode="create")
            return
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=tmp_dir)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.link(tmp, path)
        finally:
            os.unlink(tmp)

    def _claim(self, tenant: str, voice: str, version: int | None) -> int:
        vdir = self._voice_dir(tenant, voice)
        if self._local:
            self.fs.makedirs(vdir, exist_ok=True)
        explicit = version is not None
        candidate = version if explicit else max(self._used_numbers(tenant, voice), default=0) + 1
        body = json.dumps({"claimed": datetime.now(UTC).isoformat()}).encode()
        for _ in range(100):
            try:
                self._put_exclusive(posixpath.join(vdir, f"{candidate}{CLAIM_SUFFIX}"), body, vdir)
                return candidate
            except FileExistsError:
                if explicit:
                    raise VersionExistsError(
                        f"{tenant}/{voice} version {candidate} already exists or was used before in {self.root_uri}: "
                        "versions are immutable; publish without a version to take the next number") from None
                candidate += 1
        raise RegistryError(f"could not claim a version number for {tenant}/{voice} (100 tries)")

    def publish(self, artifact_dir: str | Path, version: int | None = None,
                expected_base_fingerprint: str | None = None) -> ChorusManifest:
        """Upload a verified local artifact as a new immutable version; returns its manifest (version set)."""
        local = verify_artifact(artifact_dir, expected_base_fingerprint)
        if version is not None and (not isinstance(version, int) or version < 1):
            raise RegistryError(f"invalid version {version!r}: versions are integers >= 1")
        v = self._claim(local.tenant, local.voice, version)
        vdir = self._version_dir(local.tenant, local.voice, v)
        voice_dir = self._voice_dir(local.tenant, local.voice)
        if self.fs.exists(vdir):  # written outside the registry (no claim): never overwrite it
            raise VersionExistsError(f"{vdir} already exists although its number was unclaimed; refusing to "
                                     "overwrite it")
        if self._local:
            self.fs.makedirs(vdir, exist_ok=True)
        for name in sorted(local.files):
            self._put_exclusive(posixpath.join(vdir, name), (Path(artifact_dir) / name).read_bytes(), voice_dir)
        published = local.model_copy(update={"version": v})
        self._put_exclusive(posixpath.join(vdir, MANIFEST_FILE), manifest_bytes(published), voice_dir)
        return published

    def delete(self, tenant: str, voice: str, version: int | str) -> None:
        """Remove a published version; its number stays used (never republished)."""
        v = self.resolve(tenant, voice, version)
        vdir = self._version_dir(tenant, voice, v)
        self.fs.rm(posixpath.join(vdir, MANIFEST_FILE))  # first: a half-deleted version is never listed
        self.fs.rm(vdir, recursive=True)
        self.fs.invalidate_cache()

    # ---- reading -----------------------------------------------------------------------------------
    def verify(self, tenant: str, voice: str, version: int | str = LATEST,
               expected_base_fingerprint: str | None = None) -> ChorusManifest:
        """Verify a published version in place (every file re-hashed from the store)."""
        v = self.resolve(tenant, voice, version)
        return verify_artifact(self._version_dir(tenant, voice, v), expected_base_fingerprint, fs=self.fs)

    def get(self, tenant: str, voice: str, version: int | str, dest: str | Path,
            expected_base_fingerprint: str | None = None) -> ChorusManifest:
        """Download a version into `dest` (created; must not exist) and verify it there.

        The files land in a temporary sibling first and are moved into place only once verified, so
        `dest` never holds an artifact that failed verification.
        """
        v = self.resolve(tenant, voice, version)
        dest = Path(dest)
        if dest.exists():
            raise RegistryError(f"download target {str(dest)!r} already exists")
        dest.parent.mkdir(parents=True, exist_ok=True)
        vdir = self._version_dir(tenant, voice, v)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            for path in self.fs.ls(vdir, detail=False):
                name = posixpath.basename(path.rstrip("/"))
                (tmp / name).write_bytes(self.fs.cat_file(path))
            manifest = verify_artifact(tmp, expected_base_fingerprint)
            tmp.rename(dest)
            return manifest
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)

    def load(self, tenant: str, voice: str, version: int | str, expected_base_fingerprint: str,
             cache_dir: str | Path) -> LoadedAdapter:
        """Fetch (or reuse from `cache_dir`), verify against the base model, and read the adapter tensors."""
        v = self.resolve(tenant, voice, version)
        local = Path(cache_dir) / tenant / voice / str(v)
        if not local.exists():
            self.get(tenant, voice, v, local, expected_base_fingerprint)
        return load_artifact(local, expected_base_fingerprint)
