"""Annotation quality (``exchange.png``): left, CE against D for every source at the model size of
its exchange rate, with each usable data-size law and its 95% band, chance, the oracle (where
known) and each lexical baseline (BM25) as the CE at which the study's CE-to-MRR@10 map reaches
the baseline's MRR@10 (drawn only inside the CE range the map was fitted on); right, the pairs
of each source that reach the CE of D human pairs: a line with its band from two usable laws,
squares with error bars where the rate is read off the cells with no law (only inside the
measured ranges), and the line "as good as human"."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .._io import save_figure
from ..exchange import REFERENCE_SOURCE
from ..outcomes import SourceFits
from . import _style as style


def plot_exchange(
    all_fits: Mapping[str, SourceFits],
    path: Path,
    *,
    oracle_ce: float | None = None,
    baselines: Mapping[str, Mapping] | None = None,
) -> bool:
    """Draw ``exchange.png``; returns False (and draws nothing) when no source has an exchange
    entry (no human source, or a single source)."""
    exchanges = {s: f.exchange for s, f in all_fits.items() if f.exchange is not None}
    if REFERENCE_SOURCE not in all_fits or not exchanges:
        return False
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12.0, 7.0))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.30, top=0.93, wspace=0.25)
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
    _baseline_lines(ax_ce, ref, baselines)
    style.data_limits(ax_ce, [all_fits[s] for s in names], oracle_ce, x="D")
    where = f" at {ref_slice.where}" if ref_slice.where else ""
    style.finish(ax_ce, style.D_LABEL, f"CE against annotations, per source{where}")
    # below the axes: CE-vs-D points fill every corner between chance and the best cell
    ax_ce.legend().remove()  # one legend for the figure, across both panels' width
    fig.legend(*ax_ce.get_legend_handles_labels(), fontsize=6, loc="lower center", ncol=2)

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
        m = ex.measured
        if m is None or not m.any_reached:
            continue
        ok = np.array([st == "reached" for st in m.status])
        lo_d, hi_d = m.source_range
        yerr = None
        if m.lower is not None:  # censored ends drawn at the measured range they lie beyond
            lo = np.clip(m.lower[ok], lo_d, None)
            hi = np.where(np.isfinite(m.upper[ok]), m.upper[ok], hi_d)
            yerr = [
                m.pairs[ok] - np.minimum(lo, m.pairs[ok]),
                np.maximum(hi, m.pairs[ok]) - m.pairs[ok],
            ]
        ax_rate.errorbar(m.D[ok], m.pairs[ok], yerr=yerr, fmt="s", color=colors[s], markersize=4,
                         capsize=2, label=f"{s}: measured ({ex.where}; cells, no law)")  # fmt: skip
        if m.upper is not None and not np.isfinite(m.upper[ok]).all():  # open above: a caret
            up = ~np.isfinite(m.upper[ok])
            ax_rate.plot(m.D[ok][up], np.full(up.sum(), hi_d), "^", color=colors[s], markersize=6,
                         label=f"{s}: interval open above {hi_d:,.0f} (beyond its cells)")  # fmt: skip
        spans.append(m.D)
    unanswered = [f"{s}: {ex.note}" for s, ex in exchanges.items() if not ex.answered]
    if spans:  # the reasons are in the summary; here one short entry per source without a law rate
        for s, ex in exchanges.items():
            if not ex.answered:
                ax_rate.plot([], [], " ", label=f"{s}: no rate from the laws (see the report)")
        xs = np.geomspace(min(x.min() for x in spans), max(x.max() for x in spans), 50)
        ax_rate.plot(xs, xs, "--", color="0.4", linewidth=1.0, label="as good as human (D_S = D)")
        ax_rate.set_xscale("log")
        ax_rate.set_yscale("log")
    else:  # no usable pair of laws and no measured rate: the panel says why, nothing is drawn
        why = "\n\n".join(style.short(line, 60, lines=4) for line in unanswered)
        ax_rate.text(0.5, 0.5, "no exchange rate:\n\n" + why, ha="center", va="center",
                     fontsize=7, transform=ax_rate.transAxes)  # fmt: skip
        ax_rate.set_xticks([])
        ax_rate.set_yticks([])
    ax_rate.set_xlabel("human pairs D")
    ax_rate.set_ylabel("pairs of the source reaching the same CE")
    ax_rate.set_title(
        "Exchange rate against human annotations\n(lines: laws, 95% bands; squares: read off the cells)",
        fontsize=10,
    )
    ax_rate.grid(True, which="major", alpha=0.3)
    if spans:
        ax_rate.legend(
            fontsize=6, loc="lower right"
        )  # below "as good as human": the rates lie above
    save_figure(fig, path)
    return True


def _baseline_lines(ax, ref: SourceFits, baselines: Mapping[str, Mapping] | None) -> None:
    """A lexical baseline has a ranking metric, not a CE: its line is the CE where the study's
    CE-to-MRR@10 map gives the baseline's MRR@10, or a legend entry saying why there is none."""
    m = ref.metric_maps.get("mrr@10")
    for label, b in (baselines or {}).items():
        value = (b.get("metrics") or {}).get("mrr@10")
        if value is None:
            continue
        ce = None if m is None else _ce_of_metric(m, float(value))
        if ce is None:
            why = "no CE-to-MRR@10 map" if m is None else "outside the cells' MRR@10 range"
            ax.plot([], [], " ", label=f"{label}: MRR@10 {value:.3g} ({why}: no CE line)")
            continue
        ax.axhline(
            ce,
            color="darkorange",
            linestyle="-.",
            linewidth=1.0,
            label=f"{label}: MRR@10 {value:.3g} ~ CE {ce:.3g} (CE-to-MRR@10 map)",
        )


def _ce_of_metric(m, value: float) -> float | None:
    """The CE in the map's fitted range where the (non-increasing) map equals ``value``."""
    grid = np.linspace(float(np.min(m.ce)), float(np.max(m.ce)), 2001)
    curve = np.asarray(m.predict(grid), dtype=float)
    if not curve.min() <= value <= curve.max():
        return None
    # np.interp needs increasing x: the map read from high CE (low metric) to low CE
    return float(np.interp(value, curve[::-1], grid[::-1]))
