"""The adapter artifact contract: peft's own two files plus a Chorus manifest that pins every byte.

An artifact is a flat directory holding exactly:
  adapter_config.json         peft's LoraConfig (peft.utils.CONFIG_NAME)
  adapter_model.safetensors   the LoRA weights (peft.utils.SAFETENSORS_WEIGHTS_NAME)
  chorus_manifest.json        who/what/how: tenant, voice, version, base-model fingerprint, dataset hash,
                              training settings, measured quality + gate verdict, voice profile, and the
                              sha256 and size of every other file.
`verify_artifact` refuses a missing file, an unlisted file, a changed file and an adapter made for
another base model, each with its own AdapterArtifactError subclass. The manifest does not hash itself:
it is the root of trust, and the registry never rewrites a published one.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import fsspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chorus.adapters.gate import GateResult, GateThresholds, QualityMetrics

ADAPTER_CONFIG_FILE = "adapter_config.json"  # == peft.utils.CONFIG_NAME
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"  # == peft.utils.SAFETENSORS_WEIGHTS_NAME
MANIFEST_FILE = "chorus_manifest.json"
REQUIRED_FILES = (ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE)
# Further files an artifact may carry; a later feature that adds one names it here so verify accepts it.
OPTIONAL_FILES: tuple[str, ...] = ()
MANIFEST_SCHEMA_VERSION = 1
PROFILE_SCHEMA_VERSION = 1
BASE_MODEL_NAME = "en_US-joe-medium"

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"  # a DNS label: usable in Kubernetes names and paths
SHA256_PATTERN = r"^[0-9a-f]{64}$"


class AdapterArtifactError(RuntimeError):
    """An adapter artifact is unusable; subclasses say why and name the file."""

    def __init__(self, message: str, *, file: str | None = None, expected: str | None = None,
                 actual: str | None = None):
        super().__init__(message)
        self.file, self.expected, self.actual = file, expected, actual


class ManifestError(AdapterArtifactError):
    """chorus_manifest.json is missing or not a valid manifest."""


class MissingFileError(AdapterArtifactError):
    """A file the contract or the manifest requires is absent."""


class UnknownFileError(AdapterArtifactError):
    """A file is present that the manifest does not list."""


class CorruptedFileError(AdapterArtifactError):
    """A file's size or sha256 differs from the manifest."""


class BaseModelMismatchError(AdapterArtifactError):
    """The adapter was trained on a different base model than the one loading it."""


class FileEntry(BaseModel):
    """Size and sha256 of one artifact file."""

    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(pattern=SHA256_PATTERN, description="hex sha256 of the file's bytes")
    size: int = Field(ge=0, description="bytes")


class BaseModelRef(BaseModel):
    """The base model an adapter belongs to."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(BASE_MODEL_NAME, description="base voice name")
    fingerprint: str = Field(pattern=SHA256_PATTERN, description="sha256 of the base weights (BaseVoice.fingerprint)")


class VoiceProfile(BaseModel):
    """Voice parameters beyond the LoRA weights (pitch factor, length scale, ...); free-form, versioned."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = Field(PROFILE_SCHEMA_VERSION, ge=1, description="version of the profile's field set")


class QualityRecord(BaseModel):
    """Measured quality of the adapter and the gate's verdict on it."""

    metrics: QualityMetrics
    thresholds: GateThresholds
    gate: GateResult


class ChorusManifest(BaseModel):
    """chorus_manifest.json."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = Field(MANIFEST_SCHEMA_VERSION, description="manifest format version")
    tenant: str = Field(pattern=NAME_PATTERN, description="tenant name (DNS label)")
    voice: str = Field(pattern=NAME_PATTERN, description="voice name within the tenant (DNS label)")
    version: int | None = Field(None, ge=1, description="registry version; set when published")
    base_model: BaseModelRef
    dataset_hash: str = Field(pattern=SHA256_PATTERN, description="hash of the prepared training data")
    training: dict[str, Any] = Field(default_factory=dict, description="training settings as run")
    quality: QualityRecord | None = Field(None, description="evaluation on held-out clips, with the gate verdict")
    profile: VoiceProfile = Field(default_factory=VoiceProfile)
    files: dict[str, FileEntry] = Field(description="every artifact file except the manifest")
    created: datetime = Field(description="when the artifact was built (UTC)")

    @property
    def gate_passed(self) -> bool | None:
        """The gate's verdict, or None if the adapter was never evaluated."""
        return None if self.quality is None else self.quality.gate.passed


def file_sha256(data_or_path: bytes | str | Path) -> str:
    """Hex sha256 of bytes or of a local file."""
    if isinstance(data_or_path, bytes):
        return hashlib.sha256(data_or_path).hexdigest()
    digest = hashlib.sha256()
    with open(data_or_path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def allowed_files() -> set[str]:
    """Names an artifact may contain besides the manifest."""
    return set(REQUIRED_FILES) | set(OPTIONAL_FILES)


def _check_peft_files(root: Path) -> None:
    try:
        config = json.loads((root / ADAPTER_CONFIG_FILE).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{ADAPTER_CONFIG_FILE} is not valid JSON: {exc}", file=ADAPTER_CONFIG_FILE) from exc
    if not isinstance(config, dict) or "peft_type" not in config:
        raise ManifestError(f"{ADAPTER_CONFIG_FILE} is not a peft adapter config (no 'peft_type')",
                            file=ADAPTER_CONFIG_FILE)
    from safetensors import safe_open

    try:
        with safe_open(str(root / ADAPTER_WEIGHTS_FILE), framework="numpy") as fh:
            if not list(fh.keys()):
                raise ManifestError(f"{ADAPTER_WEIGHTS_FILE} holds no tensors", file=ADAPTER_WEIGHTS_FILE)
    except ManifestError:
        raise
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise ManifestError(f"{ADAPTER_WEIGHTS_FILE} is not a safetensors file: {exc}",
                            file=ADAPTER_WEIGHTS_FILE) from exc


def build_manifest(
    artifact_dir: str | Path,
    *,
    tenant: str,
    voice: str,
    base_fingerprint: str,
    dataset_hash: str,
    training: dict[str, Any] | None = None,
    quality: QualityRecord | None = None,
    profile: VoiceProfile | dict[str, Any] | None = None,
    base_name: str = BASE_MODEL_NAME,
) -> ChorusManifest:
    """Hash the peft files saved in `artifact_dir` and write chorus_manifest.json beside them."""
    root = Path(artifact_dir)
    present = {p.name for p in root.iterdir() if p.name != MANIFEST_FILE}
    for name in REQUIRED_FILES:
        if name not in present:
            raise MissingFileError(f"{root}: required file {name} is missing (save the peft model first)", file=name)
    unknown = sorted(present - allowed_files())
    if unknown:
        raise UnknownFileError(f"{root}: unexpected file(s) {unknown}; an artifact holds only "
                               f"{sorted(allowed_files())} and {MANIFEST_FILE}", file=unknown[0])
    _check_peft_files(root)
    files = {n: FileEntry(sha256=file_sha256(root / n), size=(root / n).stat().st_size) for n in sorted(present)}
    try:
        manifest = ChorusManifest(
            tenant=tenant, voice=voice, base_model=BaseModelRef(name=base_name, fingerprint=base_fingerprint),
            dataset_hash=dataset_hash, training=training or {}, quality=quality,
            profile=profile if isinstance(profile, VoiceProfile) else VoiceProfile(**(profile or {})),
            files=files, created=datetime.now(UTC))
    except ValidationError as exc:
        raise ManifestError(f"invalid manifest values: {exc}") from exc
    write_manifest(root, manifest)
    return manifest


def save_peft_adapter(peft_model: Any, out_dir: str | Path, adapter_name: str = "default") -> Path:
    """Save one adapter of a peft model as exactly the two contract files in `out_dir`.

    peft's save_pretrained also writes a README.md model card, and puts a non-default adapter under
    `<dir>/<name>/`; both are normalised here so the artifact holds only the contract's files.
    """
    import tempfile

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chorus-peft-") as tmp:
        peft_model.save_pretrained(tmp, selected_adapters=[adapter_name], safe_serialization=True)
        src = Path(tmp) if adapter_name == "default" else Path(tmp) / adapter_name
        for name in REQUIRED_FILES:
            if not (src / name).is_file():
                raise MissingFileError(f"peft did not write {name} for adapter {adapter_name!r}", file=name)
            (out / name).write_bytes((src / name).read_bytes())
    return out


def write_artifact(
    peft_model: Any, out_dir: str | Path, *, adapter_name: str = "default", **manifest_fields: Any
) -> ChorusManifest:
    """Save a peft adapter and its manifest as a complete artifact (fields as for build_manifest)."""
    save_peft_adapter(peft_model, out_dir, adapter_name)
    return build_manifest(out_dir, **manifest_fields)


def manifest_bytes(manifest: ChorusManifest) -> bytes:
    """Canonical JSON encoding of a manifest."""
    return (json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_manifest(artifact_dir: str | Path, manifest: ChorusManifest) -> None:
    """Write chorus_manifest.json into a local artifact directory."""
    (Path(artifact_dir) / MANIFEST_FILE).write_bytes(manifest_bytes(manifest))


def parse_manifest(data: bytes, where: str = MANIFEST_FILE) -> ChorusManifest:
    """Parse manifest bytes; ManifestError names what is wrong."""
    try:
        return ChorusManifest.model_validate_json(data)
    except ValidationError as exc:
        raise ManifestError(f"{where} is not a valid Chorus manifest: {exc}", file=MANIFEST_FILE) from exc


def verify_artifact(
    path: str | Path,
    expected_base_fingerprint: str | None = None,
    *,
    fs: fsspec.AbstractFileSystem | None = None,
    expected_manifest_sha256: str | None = None,
) -> ChorusManifest:
    """Check an artifact directory (local, or on `fs`) against its manifest and, if given, the base model.

    `expected_manifest_sha256` pins the manifest itself (e.g. a checksum in a VoiceTenant spec).
    Raises ManifestError, MissingFileError, UnknownFileError, CorruptedFileError or BaseModelMismatchError.
    """
    fs = fs or fsspec.filesystem("file")
    root = str(path).rstrip("/")
    manifest_path = posixpath.join(root, MANIFEST_FILE)
    if not fs.exists(manifest_path):
        raise ManifestError(f"{root}: {MANIFEST_FILE} is missing: not an adapter artifact (or a half-written one)",
                            file=MANIFEST_FILE)
    raw = fs.cat_file(manifest_path)
    if expected_manifest_sha256 is not None and file_sha256(raw) != expected_manifest_sha256:
        raise CorruptedFileError(
            f"{root}: {MANIFEST_FILE} has sha256 {file_sha256(raw)}, expected {expected_manifest_sha256}",
            file=MANIFEST_FILE, expected=expected_manifest_sha256, actual=file_sha256(raw))
    manifest = parse_manifest(raw, manifest_path)
    present = {posixpath.basename(p.rstrip("/")): p for p in fs.ls(root, detail=False)}
    present.pop(MANIFEST_FILE, None)
    for name in REQUIRED_FILES:
        if name not in manifest.files:
            raise ManifestError(f"{manifest_path} does not list required file {name}", file=name)
    for name in sorted(manifest.files):
        if name not in present:
            raise MissingFileError(f"{root}: file {name} listed in the manifest is missing", file=name)
    unknown = sorted(set(present) - set(manifest.files))
    if unknown:
        raise UnknownFileError(f"{root}: file {unknown[0]} is not listed in the manifest "
                               f"(listed: {sorted(manifest.files)})", file=unknown[0])
    for name, entry in sorted(manifest.files.items()):
        data = fs.cat_file(present[name])
        actual = file_sha256(data)
        if len(data) != entry.size or actual != entry.sha256:
            raise CorruptedFileError(
                f"{root}: file {name} is corrupted: sha256 {actual} ({len(data)} bytes), manifest says "
                f"{entry.sha256} ({entry.size} bytes)", file=name, expected=entry.sha256, actual=actual)
    if expected_base_fingerprint is not None and manifest.base_model.fingerprint != expected_base_fingerprint:
        raise BaseModelMismatchError(
            f"{root}: adapter {manifest.tenant}/{manifest.voice} was made for base model "
            f"{manifest.base_model.name} with fingerprint {manifest.base_model.fingerprint}, but the loaded base "
            f"model's fingerprint is {expected_base_fingerprint}",
            file=MANIFEST_FILE, expected=expected_base_fingerprint, actual=manifest.base_model.fingerprint)
    return manifest


def verify_artifact_uri(
    uri: str,
    expected_base_fingerprint: str | None = None,
    *,
    expected_manifest_sha256: str | None = None,
    storage_options: dict | None = None,
) -> ChorusManifest:
    """verify_artifact for an artifact folder named by an fsspec URI (file://, s3://, ...)."""
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    return verify_artifact(path, expected_base_fingerprint, fs=fs, expected_manifest_sha256=expected_manifest_sha256)


class LoadedAdapter(BaseModel):
    """A verified artifact's contents: manifest, peft config and LoRA tensors (torch)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    path: Path
    manifest: ChorusManifest
    peft_config: dict[str, Any]
    state_dict: dict[str, Any]


def load_artifact(path: str | Path, expected_base_fingerprint: str) -> LoadedAdapter:
    """Verify a local artifact (refusing corrupt, incomplete or foreign-base ones) and read its tensors."""
    from safetensors.torch import load_file

    manifest = verify_artifact(path, expected_base_fingerprint)
    root = Path(path)
    config = json.loads((root / ADAPTER_CONFIG_FILE).read_text("utf-8"))
    return LoadedAdapter(path=root, manifest=manifest, peft_config=config,
                         state_dict=load_file(str(root / ADAPTER_WEIGHTS_FILE)))
