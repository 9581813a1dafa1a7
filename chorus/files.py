"""File helpers shared by the engine's caches and the adapter trainer."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: Path | str, write: Callable[[str], None]) -> None:
    """Create or replace `path` atomically: `write(tmp)` fills a temporary file beside it, which is then renamed.

    Concurrent readers see the old file or the new one, never a partial one; a failed write leaves the old
    file in place and no temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
