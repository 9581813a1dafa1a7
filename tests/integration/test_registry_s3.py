"""Adapter registry and dataset preparation on s3:// (s3fs against a moto S3 server on 127.0.0.1)."""

from __future__ import annotations

import threading
import uuid

import pytest

from chorus.adapters import artifact as A
from chorus.adapters import testvoices as T
from chorus.adapters.dataset import DatasetConfig, prepare_dataset
from chorus.adapters.registry import Registry, VersionExistsError
from chorus.adapters.testartifacts import make_artifact, passing_quality
from chorus.cli import main as chorus_main

pytestmark = pytest.mark.integration


@pytest.fixture
def bucket(s3_endpoint) -> str:
    """A fresh bucket per test."""
    import s3fs

    name = f"chorus-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}).mkdir(name)
    return name


@pytest.fixture
def registry(s3_endpoint, bucket) -> Registry:
    return Registry(f"s3://{bucket}/adapters", {"client_kwargs": {"endpoint_url": s3_endpoint}})


@pytest.fixture
def artifacts(tmp_path, base_fp):
    out = []
    for seed in range(3):
        d = tmp_path / f"art{seed}"
        make_artifact(d, base_fingerprint=base_fp, seed=seed, quality=passing_quality() if seed != 1 else None)
        out.append(d)
    return out


def test_publish_list_get_delete_on_s3(registry, artifacts, tmp_path, base_fp):
    assert [registry.publish(a, expected_base_fingerprint=base_fp).version for a in artifacts] == [1, 2, 3]
    assert registry.tenants() == ["acme"] and registry.voices("acme") == ["narrator"]
    assert [i.version for i in registry.list()] == [1, 2, 3]
    keys = sorted(k.rsplit("/", 1)[1] for k in registry.fs.find(f"{registry.root}/acme/narrator/1"))
    assert keys == sorted([*A.REQUIRED_FILES, A.MANIFEST_FILE])
    with pytest.raises(VersionExistsError):
        registry.publish(artifacts[0], version=2)
    m = registry.get("acme", "narrator", 2, tmp_path / "dl", base_fp)
    assert m.version == 2 and m.gate_passed is None
    for name in A.REQUIRED_FILES:
        assert (tmp_path / "dl" / name).read_bytes() == (artifacts[1] / name).read_bytes()
    registry.delete("acme", "narrator", 3)
    assert registry.versions("acme", "narrator") == [1, 2]
    assert registry.publish(artifacts[2]).version == 4  # 3 stays used
    loaded = registry.load("acme", "narrator", "latest", base_fp, tmp_path / "cache")
    assert loaded.manifest.version == 4 and set(loaded.state_dict)


def test_concurrent_publishers_never_share_a_version(registry, artifacts):
    results: list = []

    def publish(a, version):
        try:
            results.append(("ok", version, registry.publish(a, version=version).version))
        except VersionExistsError:
            results.append(("exists", version, None))

    # 50: out of reach of the automatic numbers (1..4, or 51.. once 50 is taken), so exactly one may win it
    threads = [threading.Thread(target=publish, args=(artifacts[i % 3], 50)) for i in range(4)]
    threads += [threading.Thread(target=publish, args=(artifacts[i % 3], None)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    explicit = [r for r in results if r[1] == 50]
    assert sorted(r[0] for r in explicit) == ["exists", "exists", "exists", "ok"]
    auto = [r[2] for r in results if r[1] is None]
    assert all(r[0] == "ok" for r in results if r[1] is None)
    published = [r[2] for r in results if r[0] == "ok"]
    assert len(set(published)) == len(published) == 5
    assert registry.versions("acme", "narrator") == sorted(published)
    for v in auto:
        registry.verify("acme", "narrator", v)


def test_corrupted_missing_foreign_and_half_written_on_s3(registry, artifacts, tmp_path, base_fp):
    for a in artifacts:
        registry.publish(a)
    vdir = f"{registry.root}/acme/narrator"
    registry.fs.pipe_file(f"{vdir}/1/{A.ADAPTER_WEIGHTS_FILE}", b"\x00" * 64)  # overwritten behind our back
    with pytest.raises(A.CorruptedFileError, match="adapter_model.safetensors is corrupted"):
        registry.get("acme", "narrator", 1, tmp_path / "x", base_fp)
    assert not (tmp_path / "x").exists()
    registry.fs.rm(f"{vdir}/2/{A.ADAPTER_CONFIG_FILE}")
    with pytest.raises(A.MissingFileError, match="adapter_config.json"):
        registry.load("acme", "narrator", 2, base_fp, tmp_path / "cache")
    with pytest.raises(A.BaseModelMismatchError):
        registry.load("acme", "narrator", 3, "0" * 64, tmp_path / "cache")
    registry.fs.pipe_file(f"{vdir}/9/{A.ADAPTER_CONFIG_FILE}", b"{}")  # a publish that died before its manifest
    assert registry.versions("acme", "narrator") == [1, 2, 3]


def test_cli_against_s3(registry, artifacts, s3_endpoint, capsys):
    reg = ["--registry", registry.root_uri, "--s3-endpoint-url", s3_endpoint]
    assert chorus_main(["adapter", "publish", str(artifacts[0]), *reg]) == 0
    assert chorus_main(["adapter", "list", "--json", *reg]) == 0
    out = capsys.readouterr().out
    assert '"version": 1' in out and '"gate_passed": true' in out
    assert chorus_main(["adapter", "verify", "acme", "narrator", *reg]) == 0
    assert chorus_main(["adapter", "delete", "acme", "narrator", "1", *reg]) == 0
    assert registry.versions("acme", "narrator") == []


def test_prepare_dataset_from_s3(s3_endpoint, bucket, tmp_path):
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    for i in range(3):
        fs.pipe_file(f"{bucket}/raw/{i}.flac", T.encode(T.espeak_say(T.SENTENCES[i])[0], T.ESPEAK_SAMPLE_RATE, "flac"))
    fs.pipe_file(f"{bucket}/raw/broken.wav", T.undecodable_bytes())
    fs.pipe_file(f"{bucket}/raw/metadata.csv", "".join(f"{i}|{T.SENTENCES[i]}\n" for i in range(3)).encode())
    report = prepare_dataset(f"s3://{bucket}/raw", tmp_path / "out", DatasetConfig(min_total_s=5.0),
                             storage_options={"client_kwargs": {"endpoint_url": s3_endpoint}})
    assert sorted(c.source for c in report.clips) == ["0.flac", "1.flac", "2.flac"]
    assert [(r.source, r.reason) for r in report.rejected] == [("broken.wav", "undecodable")]


def test_serving_attaches_a_voice_from_s3(s3_endpoint, registry, tmp_path, model, base_fp):
    """The voice cache fetches an s3:// artifact, verifies it and merges it; a changed file is refused."""
    import fsspec

    from chorus.adapters.testartifacts import make_engine_artifact
    from chorus.serving.voices import VoiceCache, VoiceKey, VoiceUnavailable

    make_engine_artifact(tmp_path / "v", model, tenant="acme", voice="bright", base_fingerprint=base_fp, seed=4)
    version = registry.publish(tmp_path / "v").version
    uri = f"{registry.root_uri}/acme/bright/{version}"
    base = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    options = {"client_kwargs": {"endpoint_url": s3_endpoint}}
    cache = VoiceCache(base_fp, base, check=lambda w: None, storage_options=lambda u: options)
    s3 = fsspec.filesystem("s3", **options)
    voice, hit = cache.get(VoiceKey("acme", "bright", version, uri))
    assert not hit and voice.weights and voice.nbytes > 1_000_000
    # a changed weights file in the store: refused with the reason, not served
    path = f"{uri.removeprefix('s3://')}/adapter_model.safetensors"
    data = bytearray(s3.cat_file(path))
    data[-50] ^= 0xFF
    s3.pipe_file(path, bytes(data))
    with pytest.raises(VoiceUnavailable, match="sha256|Corrupt"):
        cache.get(VoiceKey("acme", "bright", version, uri + "/"))
