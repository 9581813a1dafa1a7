"""Tiny images the test node needs, built locally and cached by a hash of their inputs.

- `pause_archive()`: the pod sandbox image, a `gcc -static` build of controlplane/pause.c.
- `busybox_archive()`: a workload image for tests, Debian's static busybox (package busybox-static)
  with one symlink per applet (sh, httpd, wget, nc, ...): about 1 MB, built in well under a second.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from chorus.controlplane.oci import OciError, write_oci_archive
from chorus.settings import get_settings

PAUSE_SOURCE = Path(__file__).with_name("pause.c")
BUSYBOX = Path("/bin/busybox")
PAUSE_REPO = "chorus.local/pause"
BUSYBOX_REPO = "chorus.local/busybox"
# Bump when the way an image is assembled changes (its inputs' hash would not).
RECIPE = "1"


def cache_dir() -> Path:
    """Where built images live: <chorus cache>/node/images (created)."""
    path = get_settings().cache_dir("node") / "images"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _hash(*parts: bytes) -> str:
    h = hashlib.sha256(RECIPE.encode())
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:12]


def _build(archive: Path, make_rootfs, ref: str, **image) -> Path:
    """Write archive from a temp root filesystem made by make_rootfs(root), unless it exists."""
    if archive.exists():
        return archive
    with tempfile.TemporaryDirectory(prefix=".rootfs-", dir=archive.parent) as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        make_rootfs(root)
        write_oci_archive(root, archive, ref, **image)
    return archive


def pause_archive() -> tuple[Path, str]:
    """The pause image's OCI archive and name (built with `gcc -static` on first use)."""
    source = PAUSE_SOURCE.read_bytes()
    tag = _hash(source)
    ref = f"{PAUSE_REPO}:{tag}"

    def rootfs(root: Path) -> None:
        gcc = shutil.which("gcc")
        if not gcc:
            raise OciError("gcc not found: the pause image needs `gcc -static` (Debian: build-essential)")
        result = subprocess.run([gcc, "-static", "-Os", "-s", "-o", str(root / "pause"), str(PAUSE_SOURCE)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise OciError(f"gcc -static {PAUSE_SOURCE} failed (is libc6-dev installed?): {result.stderr[-1500:]}")

    return _build(cache_dir() / f"pause-{tag}.tar", rootfs, ref, entrypoint=["/pause"]), ref


def busybox_archive() -> tuple[Path, str]:
    """A busybox image (sh, httpd, wget, ... in /bin; runs as root) for node tests: archive and name."""
    if not os.access(BUSYBOX, os.X_OK):
        raise OciError(f"{BUSYBOX} missing: install the Debian package busybox-static (tools/bootstrap.sh does)")
    binary = BUSYBOX.read_bytes()
    tag = _hash(binary)
    ref = f"{BUSYBOX_REPO}:{tag}"

    def rootfs(root: Path) -> None:
        applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
        for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "www"):
            (root / d).mkdir()
        (root / "tmp").chmod(0o1777)
        (root / "bin" / "busybox").write_bytes(binary)
        (root / "bin" / "busybox").chmod(0o755)
        for applet in sorted(set(applets) - {"busybox"}):
            (root / "bin" / applet).symlink_to("busybox")
        (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
        (root / "www" / "index.html").write_text("chorus busybox\n")

    return _build(cache_dir() / f"busybox-{tag}.tar", rootfs, ref, entrypoint=["/bin/sh"],
                  env={"PATH": "/bin"}, workdir="/"), ref


__all__ = ["busybox_archive", "pause_archive"]
