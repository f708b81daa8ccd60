"""Forecast checks (``forecast_<src>.png``): per held-out cell, the observed CE relative to the
forecast and the forecast's 95% interval."""

from __future__ import annotations

from pathlib import Path

from .._io import save_figure
from ..outcomes import SourceFits


def plot_forecasts(fits: SourceFits, path: Path) -> bool:
    """Forecast checks, one row per held-out cell: the observed CE relative to the forecast (dot)
    and the forecast's 95% interval (bar), both as % of the forecast; green when the observation
    falls inside, red when not, grey without an interval. Returns False (and writes nothing)
    when no law has a check."""
    rows = []
    for o in fits.all_outcomes:
        e = o.extrapolation
        if e is None:
            continue
        coords = {"N": e.N, "D": e.D, "d": e.d}[e.holdout]
        for i in range(len(e.observed)):
            p = float(e.predicted[i])
            where = f"{e.holdout} = {coords[i]:.3g}"
            others = [
                (k, a) for k, a in (("N", e.N), ("D", e.D)) if a is not None and k != e.holdout
            ]
            where += "".join(f", {k} = {a[i]:.3g}" for k, a in others)
            band = None
            if e.has_intervals:
                band = (100 * (e.lower[i] / p - 1), 100 * (e.upper[i] / p - 1))
            rows.append((f"{o.label}: {where}", 100 * (e.observed[i] / p - 1), band))
    if not rows:
        return False
    from matplotlib.figure import Figure

    height = 1.4 + 0.24 * len(rows)
    fig = Figure(figsize=(7.6, height))
    fig.subplots_adjust(left=0.5, right=0.97, bottom=0.9 / height, top=1 - 0.45 / height)
    ax = fig.add_subplot(1, 1, 1)
    for y, (label, rel, band) in enumerate(rows):
        if band is None:
            color = "0.5"
        else:
            color = "seagreen" if band[0] <= rel <= band[1] else "crimson"
            ax.plot(band, [y, y], "-", color=color, linewidth=2.0, alpha=0.5)
        ax.plot([rel], [y], "o", color=color, markersize=4)
    ax.axvline(0.0, color="0.2", linewidth=0.8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r[0] for r in rows], fontsize=6)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("observed / forecast CE - 1 (%); bar: 95% forecast interval")
    ax.set_title(f"Forecast of the held-out largest sizes ({fits.source} annotations)", fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    save_figure(fig, path)
    return True
