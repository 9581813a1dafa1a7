"""Shared benchmark helpers: interleaved timing, machine info, JSON lines, result files, tables and plots."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def emit(record: Mapping[str, Any]) -> None:
    """Print one result as a JSON line on stdout (flushed, so a pipe sees it at once)."""
    print(json.dumps(record, default=_jsonable), flush=True)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, load, library versions, commit."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "commit": _git_commit(),
    }
    for module in ("numpy", "torch", "onnxruntime"):
        mod = sys.modules.get(module)
        if mod is not None:
            info[module] = getattr(mod, "__version__", "?")
    return info


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def round_robin(runners: Mapping[str, Callable[[], Any]], repeats: int,
                warmup: int = 1) -> dict[str, list[dict[str, float]]]:
    """Time each runner `repeats` times, interleaved: one call of each per round, start rotated each round.

    Other processes on the machine slow whichever runner happens to be running; interleaving spreads
    that contention over all runners alike instead of penalising the one measured during a busy spell.
    Each sample records wall seconds and this process's CPU seconds (all threads), plus `value`
    when the runner returns a number (e.g. seconds of audio it produced, for a real-time factor).
    """
    names = list(runners)
    for _ in range(warmup):
        for name in names:
            runners[name]()
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for round_no in range(repeats):
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            result = runners[name]()
            sample = {"wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0}
            if isinstance(result, (int, float)):
                sample["value"] = float(result)
            samples[name].append(sample)
    return samples


def median(values: Iterable[float]) -> float:
    """Median of an iterable of numbers."""
    return statistics.median(list(values))


def write_results(name: str, payload: Mapping[str, Any], markdown: str | None = None) -> Path:
    """Write bench/results/<name>.json (and <name>.md when given); returns the JSON path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    if markdown is not None:
        (RESULTS_DIR / f"{name}.md").write_text(markdown, encoding="utf-8")
    return path


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], digits: int = 3) -> str:
    """A GitHub markdown table of `rows` over `columns`; floats rounded to `digits`."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(col)) for col in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def bar_plot(path: Path, labels: Sequence[str], values: Sequence[float], ylabel: str, title: str,
             reference: float | None = None) -> Path:
    """Save a simple bar chart as PNG (matplotlib, no display); an optional dashed reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(labels, values, color="#4878a8")
    if reference is not None:
        ax.axhline(reference, color="#b04040", linestyle="--", linewidth=1)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=15)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
