"""Every figure of a study report, one function per figure; each writes a PNG atomically.

| figure (file)                          | function              |
|----------------------------------------|-----------------------|
| CE vs N per D (``loss_vs_N_<src>``)     | :func:`plot_loss_vs_n` |
| CE vs D per N (``loss_vs_D_<src>``)     | :func:`plot_loss_vs_d` |
| residuals (``residuals_<src>``)         | :func:`plot_residuals` |
| sources compared (``sources.png``)      | :func:`plot_sources`   |
| budget contours (``budget_<src>``)      | :func:`plot_budget`    |

matplotlib is imported only inside these functions (Agg canvas, no pyplot state).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._io import save_figure
from .budget import CostModel, _check_law, optimal_allocation
from .laws import ChinchillaLaw, JointLaw
from .study_fits import SourceFits

_CE_LABEL = "contrastive entropy (nats)"
_N_LABEL = "model size N (non-embedding parameters)"
_D_LABEL = "annotations D (query-passage pairs)"


def _figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.6))
    fig.subplots_adjust(left=0.15, right=0.97, bottom=0.12, top=0.92)
    return fig, fig.add_subplot(1, 1, 1)


def _colors(k: int):
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.9 * i / max(k - 1, 1)) for i in range(k)]


def _finish(ax, xlabel: str, title: str) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(_CE_LABEL)
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def plot_loss_vs_n(fits: SourceFits, path: Path) -> None:
    fig, ax = _figure()
    d_values = np.unique(fits.D)
    grid = np.geomspace(fits.N.min() / 2, fits.N.max() * 2, 200)
    outcomes = {o.fixed["D"]: o for o in fits.model_fits}
    for color, d in zip(_colors(len(d_values)), d_values):
        sel = fits.D == d
        ax.plot(fits.N[sel], fits.ce[sel], "o", color=color, label=f"D = {int(d):,}")
        law = outcomes[int(d)].law
        if law is not None:
            ax.plot(grid, law.predict(grid), "-", color=color, linewidth=1.2)
        if fits.joint.law is not None:
            ax.plot(grid, fits.joint.law.predict(grid, d), ":", color=color, linewidth=1.0)
    ax.plot([], [], "-", color="0.3", label="model-size law fit per D")
    if fits.joint.law is not None:
        ax.plot([], [], ":", color="0.3", label="joint law")
    _finish(ax, _N_LABEL, f"Loss vs model size ({fits.source} annotations)")
    save_figure(fig, path)


def plot_loss_vs_d(fits: SourceFits, path: Path) -> None:
    fig, ax = _figure()
    n_values = np.unique(fits.N)
    grid = np.geomspace(fits.D.min() / 2, fits.D.max() * 2, 200)
    outcomes = {o.fixed["N"]: o for o in fits.data_fits}
    for color, n in zip(_colors(len(n_values)), n_values):
        sel = fits.N == n
        name = fits.models.get(int(n), "")
        ax.plot(fits.D[sel], fits.ce[sel], "s", color=color, label=f"{name} (N = {n:.3g})")
        law = outcomes[int(n)].law
        if law is not None:
            ax.plot(grid, law.predict(grid), "-", color=color, linewidth=1.2)
        if fits.joint.law is not None:
            ax.plot(grid, fits.joint.law.predict(n, grid), ":", color=color, linewidth=1.0)
    ax.plot([], [], "-", color="0.3", label="data-size law fit per N")
    if fits.joint.law is not None:
        ax.plot([], [], ":", color="0.3", label="joint law")
    _finish(ax, _D_LABEL, f"Loss vs annotations ({fits.source} annotations)")
    save_figure(fig, path)


def plot_residuals(fits: SourceFits, path: Path) -> None:
    fig, ax = _figure()
    if fits.joint.law is not None:
        pred = fits.joint.law.predict(fits.N, fits.D)
        what = "joint law"
    else:  # per-D model-size laws, where they exist
        pred = np.full_like(fits.ce, np.nan)
        for o in fits.model_fits:
            if o.law is not None:
                sel = fits.D == o.fixed["D"]
                pred[sel] = o.law.predict(fits.N[sel])
        what = "model-size law per D"
    rel = 100.0 * (fits.ce - pred) / pred
    d_values = np.unique(fits.D)
    for color, d in zip(_colors(len(d_values)), d_values):
        sel = (fits.D == d) & np.isfinite(rel)
        if sel.any():
            ax.plot(fits.N[sel], rel[sel], "o-", color=color, label=f"D = {int(d):,}")
    ax.axhline(0.0, color="0.2", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel(_N_LABEL)
    ax.set_ylabel("residual (observed - fitted) / fitted (%)")
    ax.set_title(f"Residuals of the {what} ({fits.source} annotations)")
    ax.grid(True, which="major", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    save_figure(fig, path)


def plot_sources(all_fits: dict[str, SourceFits], path: Path) -> int | None:
    """Each source at the largest D measured by every source; returns that D (or None).

    Sources with a fitted joint law are compared (they have curves); the rest only when no source
    has one.
    """
    with_law = {k: f for k, f in all_fits.items() if f.joint.law is not None}
    all_fits = with_law if with_law else all_fits
    # the largest D at which every source with a curve (>= 2 model sizes) was measured
    curves = [{int(d) for d in np.unique(f.D) if np.sum(f.D == d) >= 2} for f in all_fits.values()]
    curves = [c for c in curves if c]
    common = set.intersection(*curves) if curves else set()
    d = max(common) if common else None
    fig, ax = _figure()
    for color, (name, fits) in zip(_colors(len(all_fits)), all_fits.items()):
        d_here = d if d is not None else int(fits.D.max())
        sel = fits.D == d_here
        label = name if d is not None else f"{name} (D = {d_here:,})"
        ax.plot(fits.N[sel], fits.ce[sel], "o", color=color, label=label)
        grid = np.geomspace(fits.N.min() / 2, fits.N.max() * 2, 200)
        if fits.joint.law is not None:
            ax.plot(grid, fits.joint.law.predict(grid, d_here), "-", color=color, linewidth=1.2)
    title = "Annotation sources compared" + (f" at D = {d:,}" if d is not None else "")
    _finish(ax, _N_LABEL, title + " (lines: joint law)")
    save_figure(fig, path)
    return d


def plot_budget(
    law: JointLaw | ChinchillaLaw,
    cost: CostModel,
    budget: float,
    path: str | os.PathLike,
    *,
    include_inference: bool = True,
    N_bounds: tuple[float, float] = (1e5, 1e11),
    D_bounds: tuple[float, float] = (1e2, 1e9),
    title: str | None = None,
):
    """Iso-loss and iso-cost curves over (N, D) with the optimum marked; writes a PNG atomically.

    The optimum with inference cost (when ``include_inference``) and without it are both marked,
    so the shift to smaller models shows. Returns the :class:`Allocation` plotted first.
    """
    _check_law(law)
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    answers = [
        optimal_allocation(
            law,
            cost,
            budget,
            include_inference=include_inference,
            N_bounds=N_bounds,
            D_bounds=D_bounds,
        )
    ]
    if include_inference:
        answers.append(
            optimal_allocation(
                law, cost, budget, include_inference=False, N_bounds=N_bounds, D_bounds=D_bounds
            )
        )
    ns = [a.N for a in answers]
    ds = [a.D for a in answers]
    # frame the optimum: two decades either side, inside the search box
    n_lo, n_hi = max(N_bounds[0], min(ns) / 100), min(N_bounds[1], max(ns) * 100)
    d_lo, d_hi = max(D_bounds[0], min(ds) / 100), min(D_bounds[1], max(ds) * 100)
    n_grid = np.geomspace(n_lo, n_hi, 200)
    d_grid = np.geomspace(d_lo, d_hi, 200)
    NN, DD = np.meshgrid(n_grid, d_grid)
    loss = law.predict(NN, DD)
    dollars = cost.cost(NN, DD, include_inference=include_inference)

    fig = Figure(figsize=(6.4, 4.8))
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.11, top=0.92)
    ax = fig.add_subplot(1, 1, 1)
    lq = np.quantile(loss, [0.02, 0.98])
    levels = np.unique(np.geomspace(lq[0], lq[1], 9))  # losses span decades: log-spaced levels
    cs = ax.contour(NN, DD, loss, levels=levels, cmap="viridis")
    ax.clabel(cs, fmt="%.3g", fontsize=7)
    cost_levels = budget * np.array([0.25, 0.5, 2.0, 4.0])
    cc = ax.contour(
        NN, DD, dollars, levels=cost_levels, colors="0.45", linestyles="dashed", linewidths=0.9
    )
    ax.clabel(cc, fmt=lambda v: f"${v:,.0f}", fontsize=7)
    ax.contour(NN, DD, dollars, levels=[budget], colors="crimson", linewidths=1.6)
    if include_inference:
        no_inference = cost.cost(NN, DD, include_inference=False)
        ax.contour(
            NN,
            DD,
            no_inference,
            levels=[budget],
            colors="black",
            linewidths=1.0,
            linestyles="dotted",
        )
    markers = [("*", "crimson", "optimum" + (" (with inference)" if include_inference else ""))]
    if include_inference:
        markers.append(("o", "black", "optimum (training + annotation only)"))
    for a, (m, c, _) in zip(answers, markers):
        ax.plot([a.N], [a.D], marker=m, color=c, markersize=13 if m == "*" else 8, linestyle="none")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("model size N (non-embedding parameters)")
    ax.set_ylabel("annotations D (query-passage pairs)")
    ax.set_title(title or f"Budget ${budget:,.0f}: predicted contrastive entropy (nats)")
    handles = [
        Line2D([], [], color=cs.cmap(0.5), label="iso-loss (CE, nats)"),
        Line2D([], [], color="0.45", linestyle="dashed", label="iso-cost ($)"),
        Line2D([], [], color="crimson", label=f"budget ${budget:,.0f}"),
    ]
    if include_inference:
        handles.append(
            Line2D([], [], color="black", linestyle="dotted", label="budget without inference")
        )
    handles += [
        Line2D(
            [],
            [],
            marker=m,
            color=c,
            linestyle="none",
            label=f"{label}: N={a.N:.3g}, D={a.D:.3g}, CE={a.loss:.3f}",
        )
        for a, (m, c, label) in zip(answers, markers)
    ]
    ax.legend(handles=handles, fontsize=7, loc="upper right")
    ax.grid(True, which="major", alpha=0.3)
    save_figure(fig, path)
    return answers[0]
