"""Process-wide settings shared by every Chorus package (environment -> one pydantic object)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ChorusSettings(BaseSettings):
    """Settings read from CHORUS_* environment variables; nothing else in Chorus reads os.environ for these."""

    model_config = SettingsConfigDict(env_prefix="CHORUS_", extra="ignore")

    cache: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "chorus",
        description="Root of the on-disk caches: imported weights, ONNX exports, control-plane binaries.",
    )
    controlplane_bin: Path | None = Field(
        default=None, description="Directory with etcd/kube-apiserver/kube-controller-manager/helm (overrides the cache)."
    )

    def cache_dir(self, name: str) -> Path:
        """A named sub-directory of the cache root (not created)."""
        return Path(self.cache).expanduser() / name


@lru_cache(maxsize=1)
def _cached() -> ChorusSettings:
    return ChorusSettings()


def get_settings(*, fresh: bool = False) -> ChorusSettings:
    """The process's settings (read once; fresh=True re-reads the environment, for tests)."""
    if fresh:
        _cached.cache_clear()
    return _cached()
