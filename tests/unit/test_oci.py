"""chorus.controlplane.oci: archives are valid OCI layouts and their digest is a content hash."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time

import pytest

from chorus.controlplane.oci import OciError, archive_digest, archive_ref, normalize_ref, write_oci_archive


def make_tree(root, text="hello"):
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_text("#!/bin/sh\necho hi\n")
    (root / "bin" / "tool").chmod(0o755)
    (root / "etc").mkdir()
    (root / "etc" / "greeting").write_text(text)
    (root / "bin" / "sh").symlink_to("tool")
    os.link(root / "etc" / "greeting", root / "etc" / "hardlink")
    return root


def read_archive(path):
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_archive_is_an_oci_layout_with_config_and_layer(tmp_path):
    root = make_tree(tmp_path / "root")
    out = tmp_path / "img.tar"
    digest = write_oci_archive(root, out, "chorus.local/tool:1", entrypoint=["/bin/tool"],
                               env={"A": "b"}, user="1000:1000", workdir="/etc", cmd=["x"])
    files = read_archive(out)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    assert index["manifests"][0]["digest"] == digest == archive_digest(out)
    assert archive_ref(out) == "chorus.local/tool:1"
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1], name
    manifest = json.loads(files[f"blobs/sha256/{digest.removeprefix('sha256:')}"])
    config = json.loads(files[f"blobs/sha256/{manifest['config']['digest'].removeprefix('sha256:')}"])
    assert config["config"] == {"Entrypoint": ["/bin/tool"], "Cmd": ["x"], "Env": ["A=b"],
                                "User": "1000:1000", "WorkingDir": "/etc"}
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
    blob = files[f"blobs/sha256/{layer['digest'].removeprefix('sha256:')}"]
    assert config["rootfs"]["diff_ids"] == [layer["digest"]]  # uncompressed: diff_id == digest
    extract = tmp_path / "extract"
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        names = tar.getnames()
        # Breadth by directory, each directory's entries sorted: the same tree, the same bytes.
        assert names == ["bin", "etc", "bin/sh", "bin/tool", "etc/greeting", "etc/hardlink"]
        assert all(m.mtime == 0 and not m.uname for m in tar.getmembers())
        assert tar.getmember("bin/sh").issym() and tar.getmember("etc/hardlink").islnk()
        tar.extractall(extract)
    assert (extract / "etc" / "greeting").read_text() == "hello"
    assert os.access(extract / "bin" / "tool", os.X_OK)


def test_digest_is_a_content_hash(tmp_path):
    a = make_tree(tmp_path / "a")
    b = make_tree(tmp_path / "b")
    os.utime(b / "etc" / "greeting", (time.time() - 1000, time.time() - 1000))
    c = make_tree(tmp_path / "c", text="other")
    args = dict(entrypoint=["/bin/tool"])
    for compression in ("none", "gzip"):
        da = write_oci_archive(a, tmp_path / "a.tar", "t:1", compression=compression, **args)
        db = write_oci_archive(b, tmp_path / "b.tar", "t:1", compression=compression, **args)
        dc = write_oci_archive(c, tmp_path / "c.tar", "t:1", compression=compression, **args)
        assert da == db != dc
        assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert write_oci_archive(a, tmp_path / "d.tar", "t:1", entrypoint=["/bin/sh"]) != da


def test_one_layer_per_root_in_order(tmp_path):
    base = make_tree(tmp_path / "base")
    top = tmp_path / "top"
    (top / "app").mkdir(parents=True)
    (top / "app" / "main").write_text("x")
    out = tmp_path / "two.tar"
    digest = write_oci_archive([base, top], out, "two", compression="gzip")
    files = read_archive(out)
    manifest = json.loads(files[f"blobs/sha256/{digest.removeprefix('sha256:')}"])
    assert [layer["mediaType"] for layer in manifest["layers"]] == [
        "application/vnd.oci.image.layer.v1.tar+gzip"] * 2
    assert archive_ref(out) == "docker.io/library/two:latest"


def test_normalize_ref():
    assert normalize_ref("pause:1") == "docker.io/library/pause:1"
    assert normalize_ref("org/app:2") == "docker.io/org/app:2"
    assert normalize_ref("chorus.local/app") == "chorus.local/app:latest"
    assert normalize_ref("localhost:5000/app:3") == "localhost:5000/app:3"
    with pytest.raises(OciError, match="invalid image reference"):
        normalize_ref("bad ref")


def test_errors_name_the_input(tmp_path):
    with pytest.raises(OciError, match="not a directory"):
        write_oci_archive(tmp_path / "missing", tmp_path / "x.tar", "x:1")
    with pytest.raises(OciError, match="compression"):
        write_oci_archive(tmp_path, tmp_path / "x.tar", "x:1", compression="zstd")
    assert not (tmp_path / "x.tar").exists()
