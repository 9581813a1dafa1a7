"""chorus.images for real: the serve image builds (cached after the first time), is a valid OCI layout,
and runs `chorus --help` and imports the Serve app as the image's non-root user.

The first build takes minutes (mmdebstrap, pip from the cache, the base voice's ONNX export); later
runs reuse ~/.cache/chorus/images/serve-<hash>.oci.tar and unpack it (~1 min on 2 cores).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from chorus.images import build

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _sha256(f) -> str:
    h = hashlib.sha256()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


@pytest.fixture(scope="module")
def serve_image():
    """(archive, ref) of the serve image, built when its inputs changed."""
    if os.geteuid() != 0 or not shutil.which("mmdebstrap"):
        pytest.fail("building images needs root and mmdebstrap (tools/bootstrap.sh installs it)", pytrace=False)
    return build.ensure_image("serve")


@pytest.fixture(scope="module")
def serve_rootfs(serve_image, tmp_path_factory):
    """The serve image's layers unpacked in order into a temporary root filesystem; yields (root, config)."""
    archive, _ = serve_image
    root = tmp_path_factory.mktemp("serve-rootfs")
    root.chmod(0o755)  # the image's "/" (mktemp makes it 0700: uid 10001 could not resolve a path)
    blobs = tmp_path_factory.mktemp("serve-blobs")
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))
        manifest = json.load(tar.extractfile(f"blobs/sha256/{index['manifests'][0]['digest'].split(':')[1]}"))
        config = json.load(tar.extractfile(f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}"))
        for layer in manifest["layers"]:
            name = f"blobs/sha256/{layer['digest'].split(':')[1]}"
            tar.extract(name, blobs, filter="fully_trusted")
            subprocess.run(["tar", "-xf", str(blobs / name), "-C", str(root), "--numeric-owner"], check=True)
            (blobs / name).unlink()
    yield root, config
    shutil.rmtree(root, ignore_errors=True)


def test_archive_is_a_valid_oci_layout(serve_image):
    """oci-layout, index.json with the ref, a manifest whose config and layer digests match their blobs."""
    archive, ref = serve_image
    assert ref.startswith("localhost/chorus-serve:") and len(ref.rsplit(":", 1)[1]) == 12
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        assert json.load(tar.extractfile("oci-layout")) == {"imageLayoutVersion": "1.0.0"}
        index = json.load(tar.extractfile("index.json"))
        desc = index["manifests"][0]
        assert desc["annotations"]["org.opencontainers.image.ref.name"] == ref
        for d in [desc]:
            blob = tar.extractfile(f"blobs/sha256/{d['digest'].split(':')[1]}")
            manifest = json.loads(blob.read())
        assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
        assert len(manifest["layers"]) == 2  # base (Debian + venv) and top (chorus + baked voice)
        for d in [manifest["config"], *manifest["layers"]]:
            name = f"blobs/sha256/{d['digest'].split(':')[1]}"
            assert name in names
            member = tar.getmember(name)
            assert member.size == d["size"]
            assert _sha256(tar.extractfile(member)) == d["digest"].split(":")[1]
        config = json.load(tar.extractfile(f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}"))
    assert config["config"]["User"] == "10001:10001"
    assert config["config"]["Entrypoint"] == ["/opt/chorus/venv/bin/chorus"]
    assert len(config["rootfs"]["diff_ids"]) == 2


def _run_as_user(root: Path, config: dict, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(kv.split("=", 1) for kv in config["config"]["Env"])
    user = config["config"]["User"]
    for d in ("proc", "dev"):
        subprocess.run(["mount", "--rbind", f"/{d}", str(root / d)], check=True)
    try:
        return subprocess.run(["chroot", f"--userspec={user}", str(root), "/usr/bin/env", "-C",
                               config["config"]["WorkingDir"], *argv],
                              capture_output=True, text=True, env=env, timeout=timeout)
    finally:
        for d in ("proc", "dev"):
            subprocess.run(["umount", "-R", "-l", str(root / d)], check=False)


def test_chorus_help_runs_as_the_non_root_user(serve_rootfs):
    """The entrypoint works as uid 10001 with the image's environment."""
    root, config = serve_rootfs
    res = _run_as_user(root, config, *config["config"]["Entrypoint"], "--help")
    assert res.returncode == 0, res.stderr
    assert "serve" in res.stdout and "synth" in res.stdout


def test_serve_app_imports_and_the_base_voice_is_baked(serve_rootfs):
    """`import chorus.serving.app` works as uid 10001; the ONNX exports are in CHORUS_CACHE, read-only is fine."""
    root, config = serve_rootfs
    code = ("import chorus.serving.app, torch, onnxruntime; "
            "from chorus.settings import get_settings; import os; "
            "c = get_settings().cache_dir('onnx'); print(sorted(os.listdir(c))); "
            "print(torch.cuda.is_available(), os.access(c, os.W_OK))")
    res = _run_as_user(root, config, "python", "-c", code)
    assert res.returncode == 0, res.stderr
    listed, flags = res.stdout.strip().splitlines()[-2:]
    assert ".onnx" in listed
    assert flags == "False False"  # CPU-only torch; the cache is not writable by the user, nor needs to be
    owners = {(p.stat().st_uid, oct(p.stat().st_mode & 0o777)) for p in (root / "opt/chorus/cache").rglob("*.onnx")}
    assert owners and all(uid == 0 and mode == "0o644" for uid, mode in owners)
    assert not (root / "usr/lib/python3/dist-packages/pip").exists()
    assert not list((root / build.SITE[1:]).glob("nvidia/cublas*"))
