"""The adapter artifact contract: exact files, save -> reload identical, refusal of broken artifacts."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from chorus.adapters import artifact as A
from chorus.adapters.testartifacts import TEST_DATASET_HASH, make_artifact, passing_quality, tiny_peft_model

OTHER_BASE = "f" * 64


@pytest.fixture
def artifact(tmp_path, base_fp):
    out = tmp_path / "artifact"
    make_artifact(out, base_fingerprint=base_fp, seed=3, quality=passing_quality())
    return out


def test_file_names_are_peft_own():
    from peft.utils import CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME

    assert (A.ADAPTER_CONFIG_FILE, A.ADAPTER_WEIGHTS_FILE) == (CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME)


def test_artifact_holds_exactly_the_contract_files(artifact, base_fp):
    names = sorted(p.name for p in artifact.iterdir())
    assert names == sorted([A.ADAPTER_CONFIG_FILE, A.ADAPTER_WEIGHTS_FILE, A.MANIFEST_FILE])
    manifest = A.verify_artifact(artifact, base_fp)
    assert sorted(manifest.files) == sorted(A.REQUIRED_FILES)
    for name, entry in manifest.files.items():
        assert entry.sha256 == A.file_sha256(artifact / name)
        assert entry.size == (artifact / name).stat().st_size
    assert manifest.base_model.fingerprint == base_fp
    assert manifest.dataset_hash == TEST_DATASET_HASH
    assert manifest.profile.schema_version == A.PROFILE_SCHEMA_VERSION
    assert manifest.profile.model_dump()["pitch_factor"] == 1.0
    assert manifest.gate_passed is True
    on_disk = json.loads((artifact / A.MANIFEST_FILE).read_text())
    assert on_disk["tenant"] == "acme" and on_disk["voice"] == "narrator" and on_disk["version"] is None
    assert on_disk["quality"]["gate"]["passed"] is True


def test_save_then_reload_gives_identical_outputs(artifact, base_fp):
    from peft import set_peft_model_state_dict

    original = tiny_peft_model(seed=3)
    x = torch.randn(2, 4, 50, generator=torch.Generator().manual_seed(0))
    loaded = A.load_artifact(artifact, base_fp)
    assert loaded.peft_config["peft_type"] == "LORA" and loaded.peft_config["r"] == 4
    reloaded = tiny_peft_model(seed=3)
    with torch.no_grad():
        for p in reloaded.parameters():
            if p.requires_grad:  # wipe the LoRA factors so only the loaded ones can explain equality
                p.zero_()
        before = reloaded(x)
        set_peft_model_state_dict(reloaded, loaded.state_dict)
        after, expected = reloaded(x), original(x)
    assert not torch.allclose(before, expected, atol=1e-4)
    assert torch.equal(after, expected)


def test_corrupted_file_is_refused(artifact, base_fp):
    weights = artifact / A.ADAPTER_WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(A.CorruptedFileError, match="adapter_model.safetensors is corrupted") as exc:
        A.verify_artifact(artifact, base_fp)
    assert exc.value.file == A.ADAPTER_WEIGHTS_FILE and exc.value.expected != exc.value.actual
    with pytest.raises(A.CorruptedFileError):
        A.load_artifact(artifact, base_fp)


def test_missing_file_is_refused(artifact, base_fp):
    (artifact / A.ADAPTER_CONFIG_FILE).unlink()
    with pytest.raises(A.MissingFileError, match="adapter_config.json") as exc:
        A.verify_artifact(artifact, base_fp)
    assert exc.value.file == A.ADAPTER_CONFIG_FILE


def test_missing_manifest_is_refused(artifact, base_fp):
    (artifact / A.MANIFEST_FILE).unlink()
    with pytest.raises(A.ManifestError, match="chorus_manifest.json is missing"):
        A.verify_artifact(artifact, base_fp)


def test_unknown_file_is_refused(artifact, base_fp):
    (artifact / "README.md").write_text("model card")
    with pytest.raises(A.UnknownFileError, match="README.md is not listed"):
        A.verify_artifact(artifact, base_fp)


def test_wrong_base_model_is_refused(artifact, base_fp):
    A.verify_artifact(artifact)  # without a base to check, the files alone verify
    with pytest.raises(A.BaseModelMismatchError, match=OTHER_BASE) as exc:
        A.load_artifact(artifact, OTHER_BASE)
    assert exc.value.expected == OTHER_BASE and exc.value.actual == base_fp


def test_invalid_manifest_is_refused(artifact, base_fp):
    m = json.loads((artifact / A.MANIFEST_FILE).read_text())
    m["tenant"] = "Not A DNS Label"
    (artifact / A.MANIFEST_FILE).write_text(json.dumps(m))
    with pytest.raises(A.ManifestError, match="tenant"):
        A.verify_artifact(artifact, base_fp)


def test_build_refuses_stray_files_and_non_peft_files(tmp_path, base_fp, artifact):
    stray = tmp_path / "stray"
    shutil.copytree(artifact, stray)
    (stray / A.MANIFEST_FILE).unlink()
    (stray / "notes.txt").write_text("x")
    with pytest.raises(A.UnknownFileError, match="notes.txt"):
        A.build_manifest(stray, tenant="acme", voice="v", base_fingerprint=base_fp, dataset_hash=TEST_DATASET_HASH)
    (stray / "notes.txt").unlink()
    (stray / A.ADAPTER_WEIGHTS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(A.ManifestError, match="not a safetensors file"):
        A.build_manifest(stray, tenant="acme", voice="v", base_fingerprint=base_fp, dataset_hash=TEST_DATASET_HASH)


def test_build_rejects_bad_names_and_hashes(tmp_path, base_fp, artifact):
    d = tmp_path / "d"
    shutil.copytree(artifact, d)
    with pytest.raises(A.ManifestError, match="voice"):
        A.build_manifest(d, tenant="acme", voice="Bad_Name", base_fingerprint=base_fp, dataset_hash=TEST_DATASET_HASH)
    with pytest.raises(A.ManifestError, match="fingerprint"):
        A.build_manifest(d, tenant="acme", voice="v", base_fingerprint="abc", dataset_hash=TEST_DATASET_HASH)


def test_verify_by_uri_with_pinned_manifest(artifact, base_fp):
    pinned = A.file_sha256(artifact / A.MANIFEST_FILE)
    m = A.verify_artifact_uri(artifact.as_uri(), base_fp, expected_manifest_sha256=pinned)
    assert m.tenant == "acme"
    with pytest.raises(A.CorruptedFileError, match="chorus_manifest.json has sha256") as exc:
        A.verify_artifact_uri(artifact.as_uri(), base_fp, expected_manifest_sha256="1" * 64)
    assert exc.value.file == A.MANIFEST_FILE and exc.value.actual == pinned
