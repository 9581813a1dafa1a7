"""Process settings for adapter tooling: where the registry lives (environment CHORUS_ADAPTERS_*)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_registry() -> str:
    return (Path.home() / ".cache" / "chorus" / "adapters").as_uri()


class AdapterSettings(BaseSettings):
    """Registry location and object-store endpoint; command-line flags override them."""

    model_config = SettingsConfigDict(env_prefix="CHORUS_ADAPTERS_", extra="forbid")

    registry_uri: str = Field(default_factory=_default_registry, description="fsspec root URI of the registry")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, moto); None = AWS")

    def storage_options(self, uri: str | None = None) -> dict:
        """fsspec storage options for `uri` (the registry by default)."""
        uri = uri or self.registry_uri
        if uri.startswith("s3://") and self.s3_endpoint_url:
            return {"client_kwargs": {"endpoint_url": self.s3_endpoint_url}}
        return {}
