"""CE against model size N (``loss_vs_N_<src>.png``) and against annotations D
(``loss_vs_D_<src>.png``): the measured cells at the joint laws' d, one colour per value of the
other size, with the single-size law of each slice (solid) and the joint law (dotted).

Both figures are one drawing, :func:`_loss_vs_size`, along either axis; ``_AXES`` holds what
differs between them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._io import save_figure
from ..outcomes import SourceFits
from . import _style as style

# axis -> (marker, legend of the per-slice law, x label, title)
_AXES = {
    "N": ("o", "model-size law fit per D", style.N_LABEL, "Loss vs model size"),
    "D": ("s", "data-size law fit per N", style.D_LABEL, "Loss vs annotations"),
}


def plot_loss_vs_n(fits: SourceFits, path: Path, *, oracle_ce: float | None = None) -> None:
    """CE against N, one colour per D (at the joint laws' d), with the model-size law per D
    (solid) and the joint law (dotted)."""
    _loss_vs_size(fits, path, "N", oracle_ce)


def plot_loss_vs_d(fits: SourceFits, path: Path, *, oracle_ce: float | None = None) -> None:
    """CE against D, one colour per N (at the joint laws' d), with the data-size law per N
    (solid) and the joint law (dotted)."""
    _loss_vs_size(fits, path, "D", oracle_ce)


def _series_label(fits: SourceFits, axis: str, value: float) -> str:
    """A series is one D on the N figure, one model (N) on the D figure."""
    if axis == "N":
        return f"D = {int(value):,}"
    return f"{fits.models.get(int(value), '')} (N = {value:.3g})"


def _loss_vs_size(fits: SourceFits, path: Path, axis: str, oracle_ce: float | None) -> None:
    """CE against ``axis`` ("N" or "D"), one series per value of the other size."""
    marker, law_label, xlabel, title = _AXES[axis]
    other = "D" if axis == "N" else "N"
    fig, ax = style.figure()
    main = fits.main_mask
    sizes = {"N": fits.N[main], "D": fits.D[main]}
    x, series, ce = sizes[axis], sizes[other], fits.ce[main]
    xs = style.grid(fits, axis)
    per_slice = fits.model_fits if axis == "N" else fits.data_fits
    outcomes = {o.fixed[other]: o for o in per_slice if o.fixed.get("d") == fits.main_dim}
    joint = fits.joint.usable_law  # curves only from usable laws (SPEC 7)
    values = np.unique(series)
    for color, v in zip(style.colors(len(values)), values):
        sel = series == v
        o = outcomes.get(int(v))
        label = _series_label(fits, axis, v) + style.no_curve_label(o)
        ax.plot(x[sel], ce[sel], marker, color=color, label=label)
        if o is not None and o.usable:
            ax.plot(xs, o.law.predict(xs), "-", color=color, linewidth=1.2)
        if joint is not None:
            at = (xs, v) if axis == "N" else (v, xs)
            ax.plot(xs, joint.predict(*at), ":", color=color, linewidth=1.0)
    if any(o.usable for o in outcomes.values()):
        ax.plot([], [], "-", color="0.3", label=law_label)
    if joint is not None:
        ax.plot([], [], ":", color="0.3", label="joint law")
    elif fits.joint.law is not None:
        ax.plot([], [], " ", label=f"joint law not drawn: {style.why_not_drawn(fits.joint)}")
    style.left_out(ax, fits, axis)
    style.yardsticks(ax, fits, oracle_ce)
    style.data_limits(ax, fits, oracle_ce, x=axis)
    at = f", d = {fits.main_dim}" if fits.main_dim is not None else ""
    style.finish(ax, xlabel, f"{title} ({fits.source} annotations{at})")
    save_figure(fig, path)
