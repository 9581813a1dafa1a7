"""PNG bar charts of metrics across systems (matplotlib's Agg canvas; no display, no global backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def bar_chart(
    values: Mapping[str, Mapping[str, float | None]],
    path: str | Path,
    *,
    metrics: Sequence[str] | None = None,
    title: str | None = None,
    references: Mapping[str, float] | None = None,
) -> Path:
    """Write one bar subplot per metric, one bar per system; `references` draws a dashed line per metric.

    `values` maps system -> metric -> value (None or missing: no bar).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not values:
        raise ValueError("nothing to plot: no systems given")
    systems = list(values)
    names = list(metrics) if metrics else list(dict.fromkeys(m for row in values.values() for m in row))
    if not names:
        raise ValueError("nothing to plot: no metrics given")
    fig = Figure(figsize=(max(3.0, 1.0 + 0.6 * len(systems)) * len(names), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    colors = [f"C{i % 10}" for i in range(len(systems))]
    for ax, metric in zip(axes, names):
        heights = [values[s].get(metric) for s in systems]
        xs = [i for i, h in enumerate(heights) if h is not None]
        ax.bar(xs, [heights[i] for i in xs], color=[colors[i] for i in xs])
        for i in xs:
            ax.annotate(f"{heights[i]:.3g}", (i, heights[i]), ha="center", va="bottom", fontsize=8)
        if references and metric in references:
            ax.axhline(references[metric], color="k", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(systems)), systems, rotation=30, ha="right", fontsize=8)
        ax.set_title(metric, fontsize=10)
    if title:
        fig.suptitle(title)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=100)
    return out
