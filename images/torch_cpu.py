"""Make PyPI's CUDA build of torch a CPU-only torch, without the ~3 GB of nvidia-* libraries.

PyPI has one torch wheel for Linux x86_64 and it is the CUDA build: its libraries link cuBLAS,
cuFFT, cuSPARSE(Lt), cuDNN, NCCL, NVRTC and NVSHMEM (the nvidia-* wheels, ~3 GB). The CPU wheel
lives on download.pytorch.org, which these machines cannot reach, and would be a second lock. Chorus
never runs torch on a GPU (ONNX Runtime serves; training runs on CPU), so the image installs torch
without those wheels and gives the dynamic linker a tiny stub for each of those libraries instead:

- a stub `libcublas.so.13` etc. defines exactly the symbols torch's libraries import from it (with
  the same symbol version), each an abort that names the function. They are C APIs torch calls only
  on CUDA tensors, which need a GPU; `import torch`, CPU tensors and training never reach them;
- the small CUDA runtime libraries torch's CPU code links directly stay real: cudart (it answers
  "no device", so `torch.cuda.is_available()` is False as on any machine without a GPU), cupti
  (profiler) and cuFile (nvidia-cuda-runtime, nvidia-cuda-cupti, nvidia-cufile: ~10 MB);
- `libtorch_cuda.so` stays (torch's Python bindings construct some of its C++ objects at import);
  the helpers torch only dlopens for CUDA work (cuda_linalg, caffe2_nvrtc) are deleted.

A libtorch_cuda-only stub was tried first and fails: `import torch` constructs
ProcessGroupNCCL::Options from it. `python -m chorus.images.torch_cpu SITE_PACKAGES` runs this
(the Dockerfile does); it needs `nm` (binutils) and a C compiler.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# The libraries replaced by stubs: soname -> (symbol version the imports carry, or None; prefix of
# the unversioned imports that come from it, or None). Versioned imports name their library.
STUBS: dict[str, tuple[str | None, str | None]] = {
    "libcublas.so.13": ("libcublas.so.13", None),
    "libcublasLt.so.13": ("libcublasLt.so.13", None),
    "libcufft.so.12": ("libcufft.so.12", None),
    "libcusparse.so.12": ("libcusparse.so.12", None),
    "libcusparseLt.so.0": (None, "cusparseLt"),
    "libcudnn.so.9": ("libcudnn.so.9", None),
    "libnvrtc.so.13": ("libnvrtc.so.13", None),
    "libnccl.so.2": (None, "nccl"),
    "libnvshmem_host.so.3": ("NVSHMEM", "nvshmem"),
}
DELETE = ("libtorch_cuda_linalg.so", "libcaffe2_nvrtc.so")  # dlopened only for CUDA work
MARKER = ".chorus-cpu-only"


class TorchCpuError(RuntimeError):
    """The torch install does not look like the CUDA wheel this module knows how to trim."""


def _nm(args: list[str], path: Path) -> list[list[str]]:
    out = subprocess.run(["nm", "-D", *args, str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        raise TorchCpuError(f"`nm -D {' '.join(args)} {path}` failed: {out.stderr.strip()}")
    return [line.split() for line in out.stdout.splitlines() if line.strip()]


def _kept_elves(torch_dir: Path, dropped: set[str]) -> list[Path]:
    return sorted(p for p in torch_dir.rglob("*.so*") if p.is_file() and p.name not in dropped
                  and not p.name.endswith(".py"))


def _undefined(elves: list[Path]) -> set[str]:
    """Undefined dynamic symbols of the kept libraries, with their '@version' where they have one."""
    names: set[str] = set()
    for elf in elves:
        for fields in _nm(["--undefined-only"], elf):
            names.add(fields[-1])
    return names


def _stub_source(functions: list[str]) -> str:
    lines = ["  .text"]
    for i, name in enumerate(functions):
        lines.append(f"  .globl {name}\n  .type {name}, @function\n{name}:\n"
                     f"  leaq .Lname{i}(%rip), %rdi\n  jmp chorus_no_cuda@PLT\n  .size {name}, .-{name}")
    lines.append("  .section .rodata")
    for i, name in enumerate(functions):
        lines.append(f".Lname{i}:\n  .string \"{name}\"")
    lines.append('  .section .note.GNU-stack,"",@progbits')
    return "\n".join(lines) + "\n"


_ABORT_C = r"""
#include <stdio.h>
#include <stdlib.h>
void chorus_no_cuda(const char *symbol) {
  fprintf(stderr, "chorus: this image's torch is CPU-only (CUDA libraries removed); "
                  "a CUDA library function was called: %s\n", symbol);
  abort();
}
"""


def _link(soname: str, asm: str, out: Path, cc: str, version: str | None = None) -> None:
    with tempfile.TemporaryDirectory(prefix="chorus-stub-") as tmp:
        (Path(tmp) / "stub.s").write_text(asm)
        (Path(tmp) / "abort.c").write_text(_ABORT_C)
        cmd = [cc, "-shared", "-fPIC", "-O2", "-o", str(out), f"-Wl,-soname,{soname}",
               str(Path(tmp) / "stub.s"), str(Path(tmp) / "abort.c")]
        if version:
            script = Path(tmp) / "version.map"
            script.write_text(f"{version} {{ global: *; local: chorus_no_cuda; }};\n")
            cmd.insert(-1, f"-Wl,--version-script={script}")
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise TorchCpuError(f"linking the stub {soname} with {cc} failed: {res.stderr.strip()[-2000:]}")


def make_cpu_only(site_packages: Path, cc: str = "gcc") -> dict[str, int]:
    """Give torch in site_packages stub CUDA math libraries (see module doc); returns {stub soname: symbols}."""
    torch_lib = Path(site_packages) / "torch" / "lib"
    if (torch_lib / MARKER).exists():
        return {}
    if not (torch_lib / "libtorch_cuda.so").is_file():
        raise TorchCpuError(f"{torch_lib} has no libtorch_cuda.so: not PyPI's CUDA torch wheel "
                            "(a CPU build needs no trimming)")
    for tool in ("nm", cc):
        if not shutil.which(tool):
            raise TorchCpuError(f"`{tool}` not found: install binutils and gcc to trim torch")
    for lib in DELETE:
        (torch_lib / lib).unlink(missing_ok=True)
    undefined = _undefined(_kept_elves(torch_lib.parent, set(DELETE)))
    made: dict[str, int] = {}
    for soname, (version, prefix) in STUBS.items():
        names = set()
        for sym in undefined:
            name, _, ver = sym.partition("@")
            ver = ver.lstrip("@")
            if (version and ver == version) or (prefix and not ver and name.startswith(prefix)):
                names.add(name)
        if not names:
            continue
        _link(soname, _stub_source(sorted(names)), torch_lib / soname, cc, version=version)
        made[soname] = len(names)
    (torch_lib / MARKER).write_text("CUDA math libraries stubbed by chorus.images.torch_cpu\n")
    return made


def main(argv: list[str] | None = None) -> int:
    """CLI: trim the torch in SITE_PACKAGES to its CPU half."""
    parser = argparse.ArgumentParser(prog="python -m chorus.images.torch_cpu", description=__doc__.splitlines()[0])
    parser.add_argument("site_packages", type=Path)
    parser.add_argument("--cc", default="gcc")
    args = parser.parse_args(argv)
    made = make_cpu_only(args.site_packages, args.cc)
    print("torch_cpu: " + (", ".join(f"{k} ({n} symbols)" for k, n in made.items()) or "already trimmed"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
