"""Pure drift detection: which fields of a desired object an observed object no longer matches.

Only the fields the operator sets are compared (the server adds defaults, status and metadata
of its own). Resource quantities compare by value, since the server may store "0.5" as "500m".
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_SUFFIX = {
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[numkMGTPE]i?|)$")
IGNORED_METADATA = ("annotations",)  # people may annotate children; only labels and owners are enforced


def parse_quantity(value: str | int) -> Decimal | None:
    """A Kubernetes quantity as a Decimal, or None if value is not one."""
    match = _QUANTITY.match(str(value))
    if not match:
        return None
    number, suffix = match.groups()
    try:
        if suffix[:1] in ("e", "E"):
            return Decimal(number + suffix)
        if suffix not in _SUFFIX:
            return None
        return Decimal(number) * _SUFFIX[suffix]
    except InvalidOperation:
        return None


def _same_scalar(want, have) -> bool:
    if want == have:
        return True
    if isinstance(want, (str, int)) and isinstance(have, (str, int)) and not isinstance(want, bool):
        a, b = parse_quantity(want), parse_quantity(have)
        return a is not None and a == b
    return False


def differences(desired, observed, path: str = "") -> list[str]:
    """Dotted paths where observed departs from desired (desired's keys only; lists must match item by item)."""
    if isinstance(desired, dict):
        if not isinstance(observed, dict):
            return [path or "."]
        found = []
        for key, want in desired.items():
            if path == "metadata" and key in IGNORED_METADATA:
                continue
            sub = f"{path}.{key}" if path else key
            found += differences(want, observed.get(key), sub) if key in observed else [sub]
        return found
    if isinstance(desired, list):
        if not isinstance(observed, list) or len(desired) != len(observed):
            return [path]
        found = []
        for i, (want, have) in enumerate(zip(desired, observed)):
            found += differences(want, have, f"{path}[{i}]")
        return found
    return [] if _same_scalar(desired, observed) else [path]
