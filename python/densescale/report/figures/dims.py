"""CE against the embedding dimension d (``loss_vs_dim_<src>.png``), one colour per encoder and
D, with the dimension law per (N, D) (solid) and the joint L(N, d) at its D (dotted)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._io import save_figure
from ..outcomes import SourceFits
from . import _style as style


def plot_loss_vs_dim(fits: SourceFits, path: Path, *, oracle_ce: float | None = None) -> None:
    """CE against the embedding dimension, one colour per (N, D), with the dimension law per
    (N, D) (solid) and the joint L(N, d) at its D (dotted)."""
    fig, ax = style.figure()
    known = np.isfinite(fits.dims)
    # one series per encoder and D: an encoder's N grows with d (the head), so group by name
    names = np.array([fits.models.get(int(n), str(int(n))) for n in fits.N])
    keys = sorted({(m, d) for m, d in zip(names[known], fits.D[known])})
    grid = style.grid(fits, "d")
    outcomes = {(o.fixed["N"], o.fixed["D"]): o for o in fits.dim_fits}
    md = fits.model_dim.usable_law if fits.model_dim is not None else None  # SPEC 7
    for color, (name, d) in zip(style.colors(len(keys)), keys):
        sel = known & (names == name) & (fits.D == d)
        n = fits.N[sel].max()
        o = outcomes.get((int(n), int(d)))
        ax.plot(
            fits.dims[sel],
            fits.ce[sel],
            "D",
            color=color,
            markersize=4,
            label=f"{name} (N = {n:.3g}), D = {int(d):,}" + style.no_curve_label(o),
        )
        if o is not None and o.usable:
            ax.plot(grid, o.law.predict(grid), "-", color=color, linewidth=1.2)
        if md is not None and fits.model_dim.fixed.get("D") == int(d):
            ax.plot(grid, md.predict(n, grid), ":", color=color, linewidth=1.0)
    ax.plot([], [], "-", color="0.3", label="dimension law fit per (N, D)")
    if md is not None:
        ax.plot([], [], ":", color="0.3", label="joint L(N, d)")
    elif fits.model_dim is not None:
        why = style.why_not_drawn(fits.model_dim)
        ax.plot([], [], " ", label=f"joint L(N, d) not drawn: {why}")
    style.left_out(ax, fits, "d")
    style.yardsticks(ax, fits, oracle_ce)
    style.data_limits(ax, fits, oracle_ce, x="d")
    style.finish(ax, style.DIM_LABEL, f"Loss vs embedding dimension ({fits.source} annotations)")
    save_figure(fig, path)
