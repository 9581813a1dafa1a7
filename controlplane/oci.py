"""OCI image archives without a registry or a container builder, and their import into containerd.

`write_oci_archive` turns one or more root-filesystem directories (one layer each, in order) plus
the image config (entrypoint, cmd, env, user, workdir) into an OCI image-layout tar archive:
`oci-layout`, `index.json`, and under `blobs/sha256/` the manifest, the config and the layers.
The output is deterministic: entries are sorted, every mtime is the fixed `mtime` argument (0 by
default), owners are numeric only, the config has no creation date and gzip headers carry no name
or time. The returned manifest digest is therefore a content hash of the inputs: rebuild the same
tree and you get the same digest (and `ctr` sees the same image).

Caveat of fixed mtimes: CPython's timestamp-based .pyc files then look stale against their .py
sources and are recompiled at run time (or not at all on a read-only root). Compile with
`python -m compileall --invalidation-mode unchecked-hash` inside the tree before writing it.

`import_image` loads such an archive into containerd (namespace `k8s.io`, the one the kubelet's
CRI uses) with `ctr images import`, so pods can run it with `imagePullPolicy: Never`.

Example::

    digest = write_oci_archive(Path("rootfs"), Path("out/app.tar"), "chorus.local/app:1",
                               entrypoint=["/usr/bin/python3", "-m", "app"], env={"LANG": "C.UTF-8"},
                               user="1000:1000", workdir="/app")
    import_image(Path("out/app.tar"), address="/run/containerd/containerd.sock")
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
K8S_NAMESPACE = "k8s.io"
_CHUNK = 1 << 20


class OciError(RuntimeError):
    """Writing or importing an OCI image failed; the message says which input or command."""


@dataclass(frozen=True)
class _Blob:
    media_type: str
    digest: str  # "sha256:<hex>"
    size: int
    path: Path | None = None  # on disk (layers) ...
    data: bytes | None = None  # ... or in memory (config, manifest)

    def descriptor(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def normalize_ref(ref: str) -> str:
    """The fully qualified image name containerd and the kubelet use: 'pause:1' → 'docker.io/library/pause:1'."""
    if not ref or any(c.isspace() for c in ref):
        raise OciError(f"invalid image reference {ref!r}: expected e.g. 'chorus.local/app:1'")
    name, _, _ = ref.partition("@")
    first, slash, _ = name.partition("/")
    has_domain = bool(slash) and ("." in first or ":" in first or first == "localhost")
    if not has_domain:
        ref = f"docker.io/{ref}" if slash else f"docker.io/library/{ref}"
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in ref:
        ref += ":latest"
    return ref


def _tarinfo(tar: tarfile.TarFile, path: Path, arcname: str, mtime: int) -> tarfile.TarInfo | None:
    info = tar.gettarinfo(str(path), arcname)
    if info is None:  # sockets and other types a layer cannot hold
        return None
    info.mtime = mtime
    info.uname = info.gname = ""
    info.pax_headers = {}
    return info


def _write_layer(rootfs: Path, dest: Path, compression: str, mtime: int) -> tuple[str, str, int]:
    """Tar rootfs into dest (sorted, fixed mtimes); returns (blob digest, diff_id, blob size)."""
    if not rootfs.is_dir():
        raise OciError(f"root filesystem {rootfs} is not a directory")
    diff = hashlib.sha256()
    blob = hashlib.sha256()

    class _Hashing(io.RawIOBase):
        """Hashes what the tar writer emits (the diff_id) and passes it on (maybe to gzip)."""

        def __init__(self, sink) -> None:
            self.sink = sink

        def writable(self) -> bool:
            return True

        def write(self, b) -> int:
            diff.update(b)
            self.sink.write(b)
            return len(b)

    class _BlobSink(io.RawIOBase):
        """Hashes the stored bytes (the blob digest) and writes them to the file."""

        def __init__(self, f) -> None:
            self.f = f
            self.size = 0

        def writable(self) -> bool:
            return True

        def write(self, b) -> int:
            blob.update(b)
            self.f.write(b)
            self.size += len(b)
            return len(b)

    with dest.open("wb") as f:
        sink = _BlobSink(f)
        gz = gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0, compresslevel=1) \
            if compression == "gzip" else None
        hashing = _Hashing(gz or sink)
        with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            # os.walk top-down, sorted in place: parents before children, names in byte order.
            for dirpath, dirnames, filenames in os.walk(rootfs):
                dirnames.sort()
                here = Path(dirpath)
                rel = here.relative_to(rootfs)
                entries = sorted(dirnames + filenames)
                for name in entries:
                    path = here / name
                    arcname = (rel / name).as_posix()
                    info = _tarinfo(tar, path, arcname, mtime)
                    if info is None:
                        continue
                    if info.isreg():
                        with path.open("rb") as content:
                            tar.addfile(info, content)
                    else:
                        tar.addfile(info)
                # os.walk does not descend into symlinked directories: it lists them in dirnames,
                # and gettarinfo reports them as symlinks, which is what a layer must hold.
        if gz is not None:
            gz.close()
    return f"sha256:{blob.hexdigest()}", f"sha256:{diff.hexdigest()}", sink.size


def _json_blob(obj: dict, media_type: str) -> _Blob:
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return _Blob(media_type, f"sha256:{hashlib.sha256(data).hexdigest()}", len(data), data=data)


def write_oci_archive(
    rootfs: Path | Sequence[Path],
    out: Path,
    ref: str,
    entrypoint: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    user: str = "",
    workdir: str = "",
    *,
    cmd: Sequence[str] | None = None,
    labels: Mapping[str, str] | None = None,
    exposed_ports: Sequence[str] = (),
    compression: str = "none",
    mtime: int = 0,
    architecture: str = "amd64",
) -> str:
    """Write an OCI image archive of rootfs (one layer per directory) to out; returns the manifest digest.

    ref: the image name recorded in index.json (normalised, e.g. 'chorus.local/app:1');
    entrypoint/cmd/env/user/workdir/labels/exposed_ports ('8000/tcp'): the image config;
    compression: 'none' (plain tar layers, fastest for local imports) or 'gzip';
    mtime: the timestamp every file gets. The write is atomic (temp file, then rename).
    """
    if compression not in ("none", "gzip"):
        raise OciError(f"compression must be 'none' or 'gzip', not {compression!r}")
    roots = [Path(rootfs)] if isinstance(rootfs, (str, os.PathLike)) else [Path(r) for r in rootfs]
    if not roots:
        raise OciError("write_oci_archive needs at least one root filesystem directory")
    name = normalize_ref(ref)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    media = MEDIA_LAYER_GZIP if compression == "gzip" else MEDIA_LAYER_TAR
    with tempfile.TemporaryDirectory(prefix=".oci-", dir=out.parent) as tmp:
        layers: list[_Blob] = []
        diff_ids: list[str] = []
        for i, root in enumerate(roots):
            path = Path(tmp) / f"layer{i}"
            digest, diff_id, size = _write_layer(root, path, compression, mtime)
            layers.append(_Blob(media, digest, size, path=path))
            diff_ids.append(diff_id)
        config: dict = {}
        if entrypoint is not None:
            config["Entrypoint"] = list(entrypoint)
        if cmd is not None:
            config["Cmd"] = list(cmd)
        if env:
            config["Env"] = [f"{k}={v}" for k, v in env.items()]
        if user:
            config["User"] = user
        if workdir:
            config["WorkingDir"] = workdir
        if labels:
            config["Labels"] = dict(labels)
        if exposed_ports:
            config["ExposedPorts"] = {port: {} for port in exposed_ports}
        image_config = _json_blob({
            "architecture": architecture, "os": "linux", "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }, MEDIA_CONFIG)
        manifest = _json_blob({
            "schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
            "config": image_config.descriptor(), "layers": [b.descriptor() for b in layers],
        }, MEDIA_MANIFEST)
        index = {"schemaVersion": 2, "manifests": [{
            **manifest.descriptor(),
            "annotations": {REF_NAME: name, CONTAINERD_NAME: name},
        }]}
        partial = Path(tmp) / "archive.tar"
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            def add(arcname: str, blob_or_bytes: _Blob | bytes) -> None:
                info = tarfile.TarInfo(arcname)
                info.mtime, info.mode = mtime, 0o644
                if isinstance(blob_or_bytes, bytes):
                    info.size = len(blob_or_bytes)
                    tar.addfile(info, io.BytesIO(blob_or_bytes))
                elif blob_or_bytes.data is not None:
                    info.size = blob_or_bytes.size
                    tar.addfile(info, io.BytesIO(blob_or_bytes.data))
                else:
                    assert blob_or_bytes.path is not None
                    info.size = blob_or_bytes.size
                    with blob_or_bytes.path.open("rb") as f:
                        tar.addfile(info, f)

            add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            add("index.json", json.dumps(index, sort_keys=True, separators=(",", ":")).encode())
            seen: set[str] = set()
            for blob in (manifest, image_config, *layers):
                if blob.digest not in seen:  # two identical layers share one blob
                    seen.add(blob.digest)
                    add(f"blobs/sha256/{blob.digest.removeprefix('sha256:')}", blob)
        os.replace(partial, out)
    return manifest.digest


def archive_digest(archive: Path) -> str:
    """The manifest digest recorded in an archive's index.json (what write_oci_archive returned)."""
    try:
        with tarfile.open(archive) as tar:
            member = tar.extractfile("index.json")
            assert member is not None
            index = json.load(member)
        return index["manifests"][0]["digest"]
    except (OSError, KeyError, IndexError, tarfile.TarError, AssertionError, ValueError) as exc:
        raise OciError(f"{archive} is not an OCI archive with an index.json: {exc}") from exc


def archive_ref(archive: Path) -> str:
    """The image name recorded in an archive's index.json."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        if member is None:
            raise OciError(f"{archive} has no index.json")
        index = json.load(member)
    try:
        return index["manifests"][0]["annotations"][REF_NAME]
    except (KeyError, IndexError) as exc:
        raise OciError(f"{archive}'s index.json names no image ({REF_NAME})") from exc


def ctr_path() -> str:
    """containerd's `ctr` CLI from PATH, or an error naming the Debian package that provides it."""
    found = shutil.which("ctr")
    if not found:
        raise OciError("`ctr` not found on PATH: install the Debian package containerd "
                       "(tools/bootstrap.sh does)")
    return found


def import_image(archive: Path, address: str | Path = "/run/containerd/containerd.sock",
                 namespace: str = K8S_NAMESPACE, timeout: float = 300.0) -> str:
    """Import an OCI archive into containerd (namespace k8s.io by default) with `ctr`; returns the image name."""
    archive = Path(archive)
    if not archive.is_file():
        raise OciError(f"image archive {archive} does not exist")
    name = archive_ref(archive)
    result = subprocess.run(
        [ctr_path(), "--address", str(address), "--namespace", namespace, "images", "import",
         str(archive)],
        capture_output=True, text=True, timeout=timeout,
    )
    if result.returncode != 0:
        raise OciError(f"`ctr images import {archive}` into {address} (namespace {namespace}) failed "
                       f"with code {result.returncode}: {(result.stderr or result.stdout).strip()[-2000:]}")
    return name


__all__ = ["OciError", "archive_digest", "archive_ref", "ctr_path", "import_image", "normalize_ref",
           "write_oci_archive"]
