"""Annotation sources compared (``sources.png``): CE against N of every source at the largest D
they all measured, with each source's joint law."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._io import save_figure
from ..outcomes import SourceFits
from . import _style as style


def plot_sources(
    all_fits: dict[str, SourceFits], path: Path, *, oracle_ce: float | None = None
) -> int | None:
    """Each source at the largest D measured by every source; returns that D (or None).

    Sources with a fitted joint law are compared (they have curves); the rest only when no source
    has one.
    """
    with_law = {k: f for k, f in all_fits.items() if f.joint.usable}  # curves: usable laws only
    all_fits = with_law if with_law else all_fits
    # the largest D at which every source with a curve (>= 2 model sizes) was measured
    curves = [
        {int(d) for d in np.unique(f.D[f.main_mask]) if np.sum(f.D[f.main_mask] == d) >= 2}
        for f in all_fits.values()
    ]
    curves = [c for c in curves if c]
    common = set.intersection(*curves) if curves else set()
    d = max(common) if common else None
    fig, ax = style.figure()
    for color, (name, fits) in zip(style.colors(len(all_fits)), all_fits.items()):
        main = fits.main_mask
        if not main.any():
            continue
        d_here = d if d is not None else int(fits.D[main].max())
        sel = main & (fits.D == d_here)
        label = name if d is not None else f"{name} (D = {d_here:,})"
        if not fits.joint.usable:
            label += f" (no curve: {style.why_not_drawn(fits.joint)})"
        ax.plot(fits.N[sel], fits.ce[sel], "o", color=color, label=label)
        grid = style.grid(fits, "N")
        if fits.joint.usable:
            ax.plot(grid, fits.joint.law.predict(grid, d_here), "-", color=color, linewidth=1.2)
    first = next(iter(all_fits.values()))
    style.yardsticks(ax, first, oracle_ce)
    style.data_limits(ax, list(all_fits.values()), oracle_ce, x="N")
    title = "Annotation sources compared" + (f" at D = {d:,}" if d is not None else "")
    style.finish(ax, style.N_LABEL, title + " (lines: joint law)")
    save_figure(fig, path)
    return d
