"""The serving app's typed builder: arguments as `serve run`, a Serve config file or KubeRay's serveConfigV2 pass them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
from ray.serve.deployment import Application

from chorus.serving.app import ServingArgs, build_app


def test_builder_takes_plain_args_as_serve_passes_them(tmp_path):
    # `serve run chorus.serving.app:build_app tenants_file=...` and config files pass strings/dicts
    app = call_user_app_builder_with_args_if_necessary(build_app, {"tenants_file": str(tmp_path / "t.yaml"),
                                                                   "synthesis_replicas": "2", "voice_cache_mb": 64})
    assert isinstance(app, Application)


@pytest.mark.parametrize("args, words", [
    ({}, "exactly one tenant source"),
    ({"tenants_file": "t.yaml", "kubernetes_namespace": "chorus-system"}, "exactly one tenant source"),
    ({"tenants_file": "t.yaml", "threads": 0}, "threads"),
    ({"tenants_file": "t.yaml", "voice_cache": 64}, "voice_cache"),  # a typo is refused, not ignored
])
def test_bad_args_are_refused_with_what_is_wrong(args, words):
    with pytest.raises(ValidationError, match=words):
        ServingArgs(**args)


def test_s3_adapters_get_the_configured_endpoint():
    args = ServingArgs(tenants_file="t.yaml", s3_endpoint_url="http://127.0.0.1:9000")
    assert args.storage_options("s3://bucket/acme/v/1") == {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}
    assert args.storage_options("file:///reg/acme/v/1") == {}
