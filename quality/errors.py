"""Errors of the quality harness."""


class QualityModelError(RuntimeError):
    """A bundled model is missing or cannot be loaded (never downloaded: install its package)."""
