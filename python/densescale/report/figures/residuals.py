"""Residuals (``residuals_<src>.png``): the relative residuals of the joint law (else of the
model-size law per D) against N, one colour per D."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._io import save_figure
from ..outcomes import SourceFits
from . import _style as style


def plot_residuals(fits: SourceFits, path: Path) -> None:
    """Relative residuals of the joint law (else of the model-size law per D) against N."""
    fig, ax = style.figure()
    main = fits.main_mask
    N, D, ce = fits.N[main], fits.D[main], fits.ce[main]
    if fits.joint.usable:
        pred = fits.joint.law.predict(N, D)
        what = "joint law"
    else:  # per-D model-size laws, where they are usable (SPEC 7)
        pred = np.full_like(ce, np.nan)
        for o in fits.model_fits:
            if o.usable and o.fixed.get("d") == fits.main_dim:
                sel = D == o.fixed["D"]
                pred[sel] = o.law.predict(N[sel])
        what = "model-size law per D"
    rel = 100.0 * (ce - pred) / pred
    d_values = np.unique(D)
    for color, d in zip(style.colors(len(d_values)), d_values):
        sel = (D == d) & np.isfinite(rel)
        if sel.any():
            ax.plot(N[sel], rel[sel], "o-", color=color, label=f"D = {int(d):,}")
    ax.axhline(0.0, color="0.2", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel(style.N_LABEL)
    ax.set_ylabel("residual (observed - fitted) / fitted (%)")
    title = f"Residuals of the {what} ({fits.source} annotations)"
    if not np.any(np.isfinite(rel)):
        title = f"No usable law to show residuals of ({fits.source} annotations)"
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    save_figure(fig, path)
