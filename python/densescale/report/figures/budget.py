"""Budget contours (``budget_<src>.png``, and ``densescale budget --plot``): iso-loss and iso-cost
curves of a joint law over (N, D), with the optimum with and without inference cost marked."""

from __future__ import annotations

import os

import numpy as np

from densescale.scaling import ChinchillaLaw, CostModel, JointLaw, optimal_allocation
from densescale.scaling.budget import _check_law

from .._io import save_figure


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
