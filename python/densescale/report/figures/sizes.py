"""CE against model size N (``loss_vs_N_<src>.png``) and against annotations D
(``loss_vs_D_<src>.png``): the measured cells at the joint laws' d, one colour per value of the
other size, with the single-size law of each slice (solid) and the joint law (dotted).

Both figures are one drawing, :func:`_loss_vs_size`, along either axis; ``_AXES`` holds what
differs between them. The N figure also marks placed models (:mod:`densescale.report.placements`)
at their effective N, with its 95% interval as a horizontal error bar, only from a usable law.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._io import save_figure
from ..outcomes import SourceFits
from . import _style as style

if TYPE_CHECKING:
    from densescale.eval.placement import Placement

# axis -> (marker, legend of the per-slice law, x label, title)
_AXES = {
    "N": ("o", "model-size law fit per D", style.N_LABEL, "Loss vs model size"),
    "D": ("s", "data-size law fit per N", style.D_LABEL, "Loss vs annotations"),
}


def plot_loss_vs_n(
    fits: SourceFits,
    path: Path,
    *,
    oracle_ce: float | None = None,
    placed: Sequence[Placement] = (),
) -> None:
    """CE against N, one colour per D (at the joint laws' d), with the model-size law per D
    (solid) and the joint law (dotted). Each usable placement of ``placed`` is a labelled star
    at (effective N, its CE) with its interval as a horizontal error bar; one that is not
    usable, or out of reach of any size, is a legend line saying why (no point)."""
    _loss_vs_size(fits, path, "N", oracle_ce, placed)


def plot_loss_vs_d(fits: SourceFits, path: Path, *, oracle_ce: float | None = None) -> None:
    """CE against D, one colour per N (at the joint laws' d), with the data-size law per N
    (solid) and the joint law (dotted)."""
    _loss_vs_size(fits, path, "D", oracle_ce)


def _series_label(fits: SourceFits, axis: str, value: float) -> str:
    """A series is one D on the N figure, one model (N) on the D figure."""
    if axis == "N":
        return f"D = {int(value):,}"
    return f"{fits.models.get(int(value), '')} (N = {value:.3g})"


def _loss_vs_size(
    fits: SourceFits, path: Path, axis: str, oracle_ce: float | None, placed=()
) -> None:
    """CE against ``axis`` ("N" or "D"), one series per value of the other size."""
    marker, law_label, xlabel, title = _AXES[axis]
    other = "D" if axis == "N" else "N"
    fig, ax = style.figure()
    main = fits.main_mask
    sizes = {"N": fits.N[main], "D": fits.D[main]}
    x, series, ce = sizes[axis], sizes[other], fits.ce[main]
    xs = _widened(style.grid(fits, axis), placed)
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
    for p in placed:
        _mark_placed(ax, p)
    at = f", d = {fits.main_dim}" if fits.main_dim is not None else ""
    style.finish(ax, xlabel, f"{title} ({fits.source} annotations{at})")
    save_figure(fig, path)


def _drawn(p: Placement) -> bool:
    return p.usable and p.N is not None and math.isfinite(p.N)


def _widened(xs: np.ndarray, placed) -> np.ndarray:
    """The log grid of the curves, widened to every placed point and the finite ends of its
    interval, so that the law is drawn out to where it places the model."""
    ends = [v for p in placed if _drawn(p) for v in (p.N, *(p.interval or ())) if math.isfinite(v)]
    if not ends:
        return xs
    return np.geomspace(min(xs[0], min(ends) / 1.5), max(xs[-1], max(ends) * 1.5), len(xs))


def _mark_placed(ax, p: Placement) -> None:
    """A placed model at (effective N, CE), its interval as an x error bar (an open upper end
    runs to the right edge with an arrow), the axes widened to show it; else a legend line."""
    if not _drawn(p):
        why = p.reason if not p.usable else "CE out of reach of the law at any size"
        ax.plot([], [], "*", color="0.6", label=f"{p.name} not placed: {style.short(why, 70)}")
        return
    lo, hi = p.interval or (p.N, p.N)
    left, right = ax.get_xlim()
    left = min(left, lo / 1.5) if lo > 0 else left
    right = max(right, p.N * 1.5, hi * 1.5 if math.isfinite(hi) else 0)
    ax.set_xlim(left, right)
    bottom, top = ax.get_ylim()
    ax.set_ylim(min(bottom, p.ce / 1.25), max(top, p.ce * 1.25))
    end = hi if math.isfinite(hi) else right
    where = f"D = {p.fixed['D']:,}" if p.fixed and "D" in p.fixed else "largest D"
    ax.errorbar(
        [p.N],
        [p.ce],
        xerr=[[p.N - lo], [end - p.N]],
        fmt="*",
        color="black",
        markersize=11,
        capsize=3,
        label=f"{p.name}: effective N {p.N:.3g} at {where} ({p.basis})",
    )
    if not math.isfinite(hi):
        ax.plot([end], [p.ce], ">", color="black", markersize=6)
    ax.annotate(
        p.name, (p.N, p.ce), textcoords="offset points", xytext=(-4, 9), ha="right", fontsize=7
    )
