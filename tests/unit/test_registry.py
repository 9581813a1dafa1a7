"""Adapter registry on file://: immutable versions, listing, verified download, delete, refusals, CLI."""

from __future__ import annotations

import json
import os
import posixpath

import pytest

from chorus.adapters import artifact as A
from chorus.adapters.registry import Registry, RegistryError, VersionExistsError, VersionNotFoundError
from chorus.adapters.testartifacts import make_artifact, passing_quality
from chorus.cli import main as chorus_main


@pytest.fixture
def artifacts(tmp_path, base_fp):
    """Three artifacts of acme/narrator (seeds 0..2; the second has no quality record) and one of globex/news."""
    out = []
    for seed in range(3):
        d = tmp_path / f"art{seed}"
        make_artifact(d, base_fingerprint=base_fp, seed=seed, quality=None if seed == 1 else passing_quality())
        out.append(d)
    d = tmp_path / "globex"
    make_artifact(d, tenant="globex", voice="news", base_fingerprint=base_fp, seed=7)
    out.append(d)
    return out


@pytest.fixture
def registry(tmp_path) -> Registry:
    return Registry((tmp_path / "registry").as_uri())


def test_publish_assigns_monotonic_versions_and_lists_them(registry, artifacts, base_fp):
    published = [registry.publish(a, expected_base_fingerprint=base_fp) for a in artifacts[:3]]
    assert [m.version for m in published] == [1, 2, 3]
    registry.publish(artifacts[3])
    assert registry.tenants() == ["acme", "globex"]
    assert registry.voices("acme") == ["narrator"]
    assert registry.versions("acme", "narrator") == [1, 2, 3]
    assert registry.latest("acme", "narrator") == 3
    infos = registry.list()
    assert [(i.tenant, i.voice, i.version) for i in infos] == [
        ("acme", "narrator", 1), ("acme", "narrator", 2), ("acme", "narrator", 3), ("globex", "news", 1)]
    assert [i.gate_passed for i in infos[:3]] == [True, None, True]
    assert infos[0].gap_closed == pytest.approx((0.85 - 0.69) / (0.88 - 0.69))
    assert registry.manifest("acme", "narrator", 2).version == 2
    assert registry.manifest("acme", "narrator", "latest").version == 3


def test_versions_are_immutable_and_numbers_never_reused(registry, artifacts):
    registry.publish(artifacts[0])
    with pytest.raises(VersionExistsError, match="version 1 already exists"):
        registry.publish(artifacts[1], version=1)
    assert registry.manifest("acme", "narrator", 1).files == A.verify_artifact(artifacts[0]).files
    registry.delete("acme", "narrator", 1)
    assert registry.versions("acme", "narrator") == []
    with pytest.raises(VersionExistsError):
        registry.publish(artifacts[1], version=1)  # deleted numbers stay used
    assert registry.publish(artifacts[1]).version == 2
    assert registry.publish(artifacts[2], version=7).version == 7
    assert registry.publish(artifacts[0]).version == 8
    with pytest.raises(VersionNotFoundError, match="version 1 is not published"):
        registry.manifest("acme", "narrator", 1)


def test_get_downloads_and_verifies(registry, artifacts, tmp_path, base_fp):
    registry.publish(artifacts[0])
    dest = tmp_path / "dl"
    m = registry.get("acme", "narrator", "latest", dest, base_fp)
    assert m.version == 1
    assert sorted(p.name for p in dest.iterdir()) == sorted([*A.REQUIRED_FILES, A.MANIFEST_FILE])
    for name in A.REQUIRED_FILES:
        assert (dest / name).read_bytes() == (artifacts[0] / name).read_bytes()
    with pytest.raises(RegistryError, match="already exists"):
        registry.get("acme", "narrator", 1, dest)
    loaded = registry.load("acme", "narrator", 1, base_fp, tmp_path / "cache")
    assert loaded.manifest.version == 1 and loaded.state_dict


def _version_dir(registry: Registry, version: int) -> str:
    return posixpath.join(registry.root, "acme", "narrator", str(version))


def test_corrupted_missing_and_foreign_versions_are_refused(registry, artifacts, tmp_path, base_fp):
    for a in artifacts[:3]:
        registry.publish(a)
    weights = posixpath.join(_version_dir(registry, 1), A.ADAPTER_WEIGHTS_FILE)
    data = bytearray(open(weights, "rb").read())
    data[100] ^= 0xFF
    open(weights, "wb").write(bytes(data))
    with pytest.raises(A.CorruptedFileError, match="adapter_model.safetensors is corrupted"):
        registry.get("acme", "narrator", 1, tmp_path / "bad1", base_fp)
    assert not (tmp_path / "bad1").exists()  # nothing unverified is left behind
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bad1")]
    with pytest.raises(A.CorruptedFileError):
        registry.load("acme", "narrator", 1, base_fp, tmp_path / "cache")

    os.remove(posixpath.join(_version_dir(registry, 2), A.ADAPTER_CONFIG_FILE))
    with pytest.raises(A.MissingFileError, match="adapter_config.json"):
        registry.verify("acme", "narrator", 2)
    with pytest.raises(A.MissingFileError):
        registry.load("acme", "narrator", 2, base_fp, tmp_path / "cache")

    with pytest.raises(A.BaseModelMismatchError, match="fingerprint"):
        registry.load("acme", "narrator", 3, "e" * 64, tmp_path / "cache")
    registry.verify("acme", "narrator", 3, base_fp)


def test_broken_manifest_is_listed_as_broken(registry, artifacts, capsys):
    registry.publish(artifacts[0])
    registry.publish(artifacts[2])
    manifest = posixpath.join(_version_dir(registry, 1), A.MANIFEST_FILE)
    with open(manifest, "w") as fh:
        fh.write("{not json")
    infos = registry.list()
    assert [(i.version, i.error is not None) for i in infos] == [(1, True), (2, False)]
    assert "not a valid Chorus manifest" in infos[0].error
    assert chorus_main(["adapter", "list", "--registry", registry.root_uri]) == 0
    assert "BROKEN" in capsys.readouterr().out


def test_half_written_version_is_not_listed(registry, artifacts):
    registry.publish(artifacts[0])
    vdir = _version_dir(registry, 2)
    registry.fs.makedirs(vdir, exist_ok=True)
    registry.fs.pipe_file(posixpath.join(vdir, A.ADAPTER_CONFIG_FILE), b"{}")  # as if publish died here
    registry.fs.pipe_file(vdir + ".claim", b"{}")
    assert registry.versions("acme", "narrator") == [1]
    assert registry.latest("acme", "narrator") == 1
    assert registry.publish(artifacts[1]).version == 3


def test_latest_passing_and_bad_names(registry, artifacts):
    registry.publish(artifacts[0])
    registry.publish(artifacts[1])  # no quality record: never counts as passing
    assert registry.latest("acme", "narrator") == 2
    assert registry.latest("acme", "narrator", passed_only=True) == 1
    with pytest.raises(RegistryError, match="invalid tenant name '../etc'"):
        registry.versions("../etc", "narrator")
    with pytest.raises(VersionNotFoundError, match="no published version"):
        registry.latest("acme", "nobody")
    with pytest.raises(RegistryError, match="invalid version 'x'"):
        registry.manifest("acme", "narrator", "x")


def test_publish_refuses_unverified_artifact(registry, artifacts):
    (artifacts[0] / "extra.bin").write_bytes(b"x")
    with pytest.raises(A.UnknownFileError):
        registry.publish(artifacts[0])
    assert registry.tenants() == []


def test_cli_publish_list_show_verify_delete(registry, artifacts, tmp_path, capsys, base_fp):
    reg = ["--registry", registry.root_uri]
    assert chorus_main(["adapter", "publish", str(artifacts[0]), *reg]) == 0
    assert chorus_main(["adapter", "publish", str(artifacts[1]), "--base-fingerprint", "any", *reg]) == 0
    assert "version 2" in capsys.readouterr().out
    assert chorus_main(["adapter", "publish", str(artifacts[1]), "--version", "2", *reg]) == 1
    assert "already exists" in capsys.readouterr().err
    assert chorus_main(["adapter", "list", *reg]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["tenant", "voice", "ver"] and len(table) == 3
    assert "pass" in table[1] and "84%" in table[1]
    assert chorus_main(["adapter", "list", "acme", "--json", *reg]) == 0
    assert [i["version"] for i in json.loads(capsys.readouterr().out)] == [1, 2]
    assert chorus_main(["adapter", "show", "acme", "narrator", *reg]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 2
    assert chorus_main(["adapter", "verify", "acme", "narrator", "1", *reg]) == 0
    assert "base model matches" in capsys.readouterr().out
    assert chorus_main(["adapter", "verify", str(artifacts[2]), "--base-fingerprint", "a" * 64]) == 1
    assert "fingerprint" in capsys.readouterr().err
    assert chorus_main(["adapter", "get", "acme", "narrator", "1", str(tmp_path / "got"), *reg]) == 0
    assert (tmp_path / "got" / A.MANIFEST_FILE).is_file()
    assert chorus_main(["adapter", "delete", "acme", "narrator", "1", *reg]) == 0
    assert registry.versions("acme", "narrator") == [2]


def test_concurrent_local_publishers_never_share_a_version(registry, artifacts):
    import threading

    results: list = []

    def publish(a, version):
        try:
            results.append(registry.publish(a, version=version).version)
        except VersionExistsError:
            results.append("exists")

    threads = [threading.Thread(target=publish, args=(artifacts[i % 3], 40 if i % 2 else None)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    numbers = [r for r in results if r != "exists"]
    assert results.count("exists") == 3 and 40 in numbers  # one of the four explicit v40 publishes won
    assert len(set(numbers)) == len(numbers) == 5
    assert registry.versions("acme", "narrator") == sorted(numbers)
    leftovers = [n for n in os.listdir(posixpath.join(registry.root, "acme", "narrator")) if n.startswith(".")]
    assert leftovers == []


def test_cli_verify_artifact_folder_by_uri(artifacts, capsys):
    pinned = A.file_sha256(artifacts[0] / A.MANIFEST_FILE)
    assert chorus_main(["adapter", "verify", artifacts[0].as_uri(), "--manifest-sha256", pinned]) == 0
    assert "2 files match" in capsys.readouterr().out
    assert chorus_main(["adapter", "verify", str(artifacts[0]), "--manifest-sha256", "2" * 64]) == 1
    assert "chorus_manifest.json has sha256" in capsys.readouterr().err
