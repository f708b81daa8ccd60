"""Annotation quality (``exchange.png``): left, CE against D for every source at the model size of
its exchange rate, with each usable data-size law and its 95% band; right, the pairs of each
source that reach the CE of D human pairs, with its band and the line "as good as human"."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .._io import save_figure
from ..exchange import REFERENCE_SOURCE
from ..outcomes import SourceFits
from . import _style as style


def plot_exchange(
    all_fits: Mapping[str, SourceFits], path: Path, *, oracle_ce: float | None = None
) -> bool:
    """Draw ``exchange.png``; returns False (and draws nothing) when no source has an exchange
    entry (no human source, or a single source)."""
    exchanges = {s: f.exchange for s, f in all_fits.items() if f.exchange is not None}
    if REFERENCE_SOURCE not in all_fits or not exchanges:
        return False
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12.0, 4.8))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.9, wspace=0.25)
    ax_ce, ax_rate = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    names = [REFERENCE_SOURCE, *exchanges]
    colors = dict(zip(names, style.colors(len(names))))
    # each source at its exchange slice; human at the first answered slice (else the first)
    ref_slice = next(
        (ex for ex in exchanges.values() if ex.answered), next(iter(exchanges.values()))
    )
    slices = {REFERENCE_SOURCE: (ref_slice.fixed, ref_slice.reference_outcome)}
    slices |= {s: (ex.fixed, ex.source_outcome) for s, ex in exchanges.items()}
    grid_all = []
    for s in names:
        fits, (fixed, o) = all_fits[s], slices[s]
        sel = np.ones(len(fits.ce), dtype=bool)
        if "N" in fixed:
            sel &= fits.N == fixed["N"]
        if "d" in fixed and fits.dims is not None:
            sel &= fits.dims == fixed["d"]
        if not sel.any():
            continue
        ax_ce.plot(
            fits.D[sel], fits.ce[sel], "o", color=colors[s], label=s + style.no_curve_label(o)
        )
        grid = np.geomspace(fits.D[sel].min() / 2, fits.D[sel].max() * 2, 200)
        grid_all.append(grid)
        if o is not None and o.usable:  # curves only from usable laws (SPEC 7)
            ax_ce.plot(grid, o.law.predict(grid), "-", color=colors[s], linewidth=1.2)
            band = o.law.interval(grid)
            if band is not None:
                ax_ce.fill_between(grid, band[0], band[1], color=colors[s], alpha=0.15, linewidth=0)
    ref = all_fits[REFERENCE_SOURCE]
    style.yardsticks(ax_ce, ref, oracle_ce)
    style.data_limits(ax_ce, [all_fits[s] for s in names], oracle_ce, x="D")
    where = f" at {ref_slice.where}" if ref_slice.where else ""
    style.finish(ax_ce, style.D_LABEL, f"CE against annotations, per source{where}")

    answered = {s: ex for s, ex in exchanges.items() if ex.answered}
    spans = []
    for s, ex in answered.items():
        c = ex.curve
        y = np.where(c.reaches, c.pairs, np.nan)
        ax_rate.plot(c.D, y, "-", color=colors[s], label=f"{s} ({ex.where})")
        if c.has_intervals:
            lo = np.where(np.isfinite(c.lower), c.lower, np.nan)
            hi = np.where(np.isfinite(c.upper), c.upper, np.nan)
            ax_rate.fill_between(c.D, lo, hi, color=colors[s], alpha=0.15, linewidth=0)
        if not c.reaches.all():
            first = c.D[~c.reaches][0]
            ax_rate.axvline(first, color=colors[s], linestyle=":", linewidth=0.8)
            ax_rate.plot([], [], " ", label=f"{s}: never reaches from D = {first:,.0f} (dotted)")
        spans.append(c.D)
    for s, ex in exchanges.items():
        if not ex.answered:
            ax_rate.plot([], [], " ", label=f"{s}: {_short(ex.note)}")
    if spans:
        xs = np.geomspace(min(x.min() for x in spans), max(x.max() for x in spans), 50)
        ax_rate.plot(xs, xs, "--", color="0.4", linewidth=1.0, label="as good as human (D_S = D)")
        ax_rate.set_xscale("log")
        ax_rate.set_yscale("log")
    else:  # no usable pair of laws: the legend says why, nothing is drawn
        ax_rate.text(
            0.5, 0.5, "no exchange rate (see legend)", ha="center", transform=ax_rate.transAxes
        )
    ax_rate.set_xlabel("human pairs D")
    ax_rate.set_ylabel("pairs of the source reaching the same CE")
    ax_rate.set_title("Exchange rate against human annotations (95% bands)", fontsize=10)
    ax_rate.grid(True, which="major", alpha=0.3)
    ax_rate.legend(fontsize=6, loc="best")
    save_figure(fig, path)
    return True


def _short(text: str, limit: int = 70) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
