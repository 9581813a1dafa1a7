"""Tenant API keys: random, shown once in the tenant's Secret; only the sha256 hash leaves that namespace."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

KEY_PREFIX = "chorus_"  # lets secret scanners and people recognise a Chorus key
KEY_BYTES = 32  # 256 bits of randomness: the hash cannot be brute-forced, so it may be shared
KEY_PATTERN = re.compile(r"^chorus_[A-Za-z0-9_-]{43}$")


def generate_api_key() -> str:
    """A new random API key, e.g. 'chorus_3q2…' (50 characters)."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def hash_api_key(key: str) -> str:
    """The hex sha256 of a key: what the serving tier compares a presented key against."""
    return hashlib.sha256(key.encode()).hexdigest()


def is_valid_api_key(key: str | None) -> bool:
    """True if key has the shape generate_api_key makes."""
    return bool(key) and KEY_PATTERN.match(key) is not None


def key_matches(key: str, expected_hash: str) -> bool:
    """Constant-time check of a presented key against a stored hash."""
    return hmac.compare_digest(hash_api_key(key), expected_hash)
