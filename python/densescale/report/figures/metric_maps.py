"""Ranking metrics against CE (``metrics_vs_ce.png``): one panel per metric over every cell of
the study, with the fitted CE-to-metric map, its bootstrap band, chance and lexical baselines."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from densescale.scaling import MetricMap

from .._io import save_figure
from ..outcomes import SourceFits
from . import _style as style


def plot_metric_maps(
    all_fits: Mapping[str, SourceFits],
    path: Path,
    *,
    baselines: Mapping[str, Mapping] | None = None,
) -> bool:
    """Each ranking metric against CE over every cell of the study (one panel per metric),
    with the fitted CE-to-metric map and its bootstrap band, chance as a vertical line, and
    lexical baselines (e.g. BM25) as horizontal lines. Returns False when there is no map."""
    first = next(iter(all_fits.values()))
    maps: dict[str, MetricMap] = first.metric_maps
    if not maps:
        return False
    from matplotlib.figure import Figure

    names = list(maps)
    cols = min(2, len(names))
    rows = (len(names) + cols - 1) // cols
    fig = Figure(figsize=(5.2 * cols, 3.9 * rows))
    fig.subplots_adjust(
        left=0.09, right=0.98, bottom=0.14 if rows == 1 else 0.1, top=0.92, wspace=0.22, hspace=0.4
    )
    sources = list(all_fits)
    colors = dict(zip(sources, style.colors(len(sources))))
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        m = maps[name]
        for s, fits in all_fits.items():
            pts = [
                (c["ce"], c["metrics"][name], bool(c["excluded"]))
                for c in fits.metrics
                if name in c["metrics"]
            ]
            if not pts:
                continue
            ce, v, out = (np.array(x) for x in zip(*pts))
            ax.plot(ce[~out], v[~out], "o", color=colors[s], markersize=4, label=s)
            if out.any():
                ax.plot(ce[out], v[out], "x", color=colors[s], markersize=5)
        grid = np.linspace(0.0, max(m.grid.max(), (first.chance_ce or 0) * 1.05), 300)
        ax.plot(
            grid,
            m.predict(grid),
            "-",
            color="0.15",
            linewidth=1.2,
            label=f"{m.kind} map (RMSE {m.rmse:.3f})",
        )
        band = m.band(grid)
        if band is not None:
            ax.fill_between(
                grid,
                band[0],
                band[1],
                color="0.5",
                alpha=0.25,
                label=f"{100 * m.ci_level:.0f}% bootstrap band",
            )
        if first.chance_ce is not None:
            ax.axvline(
                first.chance_ce,
                color="crimson",
                linestyle="--",
                linewidth=1.0,
                label=f"chance ln(K+1) = {first.chance_ce:.3g}",
            )
        for label, b in (baselines or {}).items():
            value = (b.get("metrics") or {}).get(name)
            if value is not None:
                ax.axhline(
                    value,
                    color="darkorange",
                    linestyle="-.",
                    linewidth=1.0,
                    label=f"{label} = {value:.3g}",
                )
        ax.set_xlabel(style.CE_LABEL)
        ax.set_ylabel(name)
        ax.set_title(f"{name} against CE, every cell (x: left out of fits)", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    save_figure(fig, path)
    return True
