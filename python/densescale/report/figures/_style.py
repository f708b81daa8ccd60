"""What every figure of the report shares: axis labels, the figure and colours, the yardstick lines
(chance, oracle), the cells left out of the fits, the log grid and the log-log finish.

matplotlib is imported only inside these functions (Agg canvas, no pyplot state).
"""

from __future__ import annotations

import numpy as np

from ..outcomes import SourceFits

CE_LABEL = "contrastive entropy (nats)"
N_LABEL = "model size N (non-embedding parameters)"
D_LABEL = "annotations D (query-passage pairs)"
DIM_LABEL = "embedding dimension d"


def figure(figsize=(6.4, 4.6)):
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    fig.subplots_adjust(left=0.15, right=0.97, bottom=0.12, top=0.92)
    return fig, fig.add_subplot(1, 1, 1)


def colors(k: int):
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.9 * i / max(k - 1, 1)) for i in range(k)]


def yardsticks(ax, fits: SourceFits, oracle_ce: float | None = None, *, vertical=False) -> None:
    """Chance ln(K+1) and the oracle CE as lines (horizontal on CE-as-y figures)."""
    line = ax.axvline if vertical else ax.axhline
    if fits.chance_ce is not None:
        line(
            fits.chance_ce,
            color="crimson",
            linestyle="--",
            linewidth=1.0,
            label=f"chance ln(K+1) = {fits.chance_ce:.3g}",
        )
        line(
            0.9 * fits.chance_ce,
            color="crimson",
            linestyle=":",
            linewidth=0.8,
            label="0.9 x chance (cells above: left out)",
        )
    oracle = oracle_ce if oracle_ce is not None else fits.oracle_ce
    if oracle is not None:
        line(
            oracle,
            color="seagreen",
            linestyle="--",
            linewidth=1.0,
            label=f"oracle CE = {oracle:.3g}",
        )


def left_out(ax, fits: SourceFits, axis: str) -> None:
    cells = [c for c in fits.metrics if c["excluded"] and len(c["excluded"]) == c["runs"]]
    if cells:
        ax.plot(
            [c[axis] for c in cells],
            [c["ce"] for c in cells],
            "x",
            color="0.5",
            label="left out of fits",
        )


def data_limits(ax, all_fits, oracle_ce: float | None = None, *, x: str | None = None) -> None:
    """Axis limits from the data and the yardsticks only (every cell's CE, chance, 0.9 x chance,
    the oracle), so that no drawn curve sets them: a law that runs off to 3,000 nats must not
    squash the measured points. ``x``: also limit the x axis to the measured values of that size
    (half a factor of 2 out, like :func:`grid`). ``all_fits``: one SourceFits or several."""
    many = all_fits if isinstance(all_fits, (list, tuple)) else [all_fits]
    ys = [c["ce"] for f in many for c in f.metrics]
    for f in many:
        if f.chance_ce is not None:
            ys += [f.chance_ce, 0.9 * f.chance_ce]
        oracle = oracle_ce if oracle_ce is not None else f.oracle_ce
        if oracle is not None:
            ys.append(oracle)
    ys = [v for v in ys if np.isfinite(v) and v > 0]
    if ys:
        ax.set_ylim(min(ys) / 1.25, max(ys) * 1.25)
    if x is not None:
        xs = [c[x] for f in many for c in f.metrics if c.get(x) is not None]
        if xs:
            ax.set_xlim(min(xs) / 2, max(xs) * 2)


def why_not_drawn(o) -> str:
    """Why a slice's law draws no curve ("" when it does): no law, or its first failed check."""
    if o is None or o.usable:
        return ""
    if o.law is None:
        return short(o.error.split(": ", 1)[-1] if o.error else "not fitted")
    u = o.usability
    return short(u.reasons[0] if u is not None and u.reasons else "not checked")


def no_curve_label(o) -> str:
    """Legend suffix of a slice whose law is not drawn, e.g. " (no curve: R^2 = 0.61 < 0.95)"."""
    why = why_not_drawn(o)
    return f" (no curve: {why})" if why else ""


def short(text: str, limit: int = 60, lines: int = 2) -> str:
    """A legend-sized reason: wrapped at ``limit`` characters on at most ``lines`` lines (a cut
    reason reads as a different one, so it is wrapped first and shortened only past that)."""
    import textwrap

    wrapped = textwrap.wrap(text, limit) or [""]
    if len(wrapped) > lines:
        wrapped = wrapped[:lines]
        wrapped[-1] = wrapped[-1][: limit - 3].rstrip() + "..."
    return "\n".join(wrapped)


def grid(fits: SourceFits, key: str, num: int = 200) -> np.ndarray:
    """A log grid over every measured value of ``key`` (fitted or not), half a factor of 2 out."""
    values = [c[key] for c in fits.metrics if c.get(key) is not None]
    return np.geomspace(min(values) / 2, max(values) * 2, num)


def finish(ax, xlabel: str, title: str) -> None:
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    # matplotlib labels minor log ticks when a range spans under a decade; on the N axis those
    # labels ("2x10^3 3x10^4") run into each other, so only decades carry labels
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(CE_LABEL)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=6, loc="best")
