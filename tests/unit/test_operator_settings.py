"""Operator settings and the `chorus operator run` command line (no cluster)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chorus.cli import build_parser
from chorus.operator.settings import Settings


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CHORUS_OPERATOR_PLATFORM_NAMESPACE", "voice-platform")
    monkeypatch.setenv("CHORUS_OPERATOR_KUBECONFIG", str(tmp_path / "kc"))
    monkeypatch.setenv("CHORUS_OPERATOR_STANDALONE", "true")
    monkeypatch.setenv("CHORUS_OPERATOR_RESYNC_INTERVAL_S", "60")
    settings = Settings()
    assert settings.platform_namespace == "voice-platform" and settings.kubeconfig == tmp_path / "kc"
    assert settings.standalone and settings.resync_interval_s == 60


def test_replicas_get_different_priorities_by_default():
    assert len({Settings().priority for _ in range(20)}) > 1


@pytest.mark.parametrize("field, value, fragment", [
    ("platform_namespace", "Chorus_System", "should match pattern"),
    ("log_level", "LOUD", "'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
    ("resync_interval_s", 0, "greater than 0"),
    ("bogus", 1, "Extra inputs are not permitted"),
])
def test_bad_settings_are_refused(field, value, fragment):
    with pytest.raises(ValidationError) as info:
        Settings(**{field: value})
    assert fragment in str(info.value)


def test_operator_run_is_a_chorus_subcommand():
    args = build_parser().parse_args(["operator", "run", "--standalone", "--platform-namespace", "p", "--log-level",
                                      "DEBUG"])
    assert args.standalone is True and args.platform_namespace == "p" and args.log_level == "DEBUG"
    assert callable(args.func)
