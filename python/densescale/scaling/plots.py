"""Every figure of a study report, one function per figure; each writes a PNG atomically.

| figure (file in the report folder)               | function                   |
|--------------------------------------------------|----------------------------|
| CE vs N per D (``loss_vs_N_<src>.png``)           | :func:`plot_loss_vs_n`      |
| CE vs D per N (``loss_vs_D_<src>.png``)           | :func:`plot_loss_vs_d`      |
| CE vs embedding dim per (N, D) (``loss_vs_dim_``) | :func:`plot_loss_vs_dim`    |
| residuals (``residuals_<src>.png``)               | :func:`plot_residuals`      |
| forecast checks (``forecast_<src>.png``)          | :func:`plot_forecasts`      |
| sources compared (``sources.png``)                | :func:`plot_sources`        |
| ranking metrics vs CE, with the maps (``metrics_vs_ce.png``) | :func:`plot_metric_maps` |
| budget contours (``budget_<src>.png``)            | :func:`plot_budget`         |
| training curves of cells (``training_curves.png``) | :func:`plot_training_curves` |

Every CE figure draws chance, ln(K+1), and the oracle CE where known as horizontal lines, and
marks cells left out of the fits (near chance, not converged) with grey crosses.
matplotlib is imported only inside these functions (Agg canvas, no pyplot state).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ._io import save_figure
from .budget import CostModel, _check_law, optimal_allocation
from .laws import ChinchillaLaw, JointLaw
from .metric_map import MetricMap
from .study_fits import SourceFits

_CE_LABEL = "contrastive entropy (nats)"
_N_LABEL = "model size N (non-embedding parameters)"
_D_LABEL = "annotations D (query-passage pairs)"
_DIM_LABEL = "embedding dimension d"


def _figure(figsize=(6.4, 4.6)):
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    fig.subplots_adjust(left=0.15, right=0.97, bottom=0.12, top=0.92)
    return fig, fig.add_subplot(1, 1, 1)


def _colors(k: int):
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.9 * i / max(k - 1, 1)) for i in range(k)]


def _yardsticks(ax, fits: SourceFits, oracle_ce: float | None = None, *, vertical=False) -> None:
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


def _left_out(ax, fits: SourceFits, axis: str) -> None:
    cells = [c for c in fits.metrics if c["excluded"] and len(c["excluded"]) == c["runs"]]
    if cells:
        ax.plot(
            [c[axis] for c in cells],
            [c["ce"] for c in cells],
            "x",
            color="0.5",
            label="left out of fits",
        )


def _grid(fits: SourceFits, key: str, num: int = 200) -> np.ndarray:
    """A log grid over every measured value of ``key`` (fitted or not), half a factor of 2 out."""
    values = [c[key] for c in fits.metrics if c.get(key) is not None]
    return np.geomspace(min(values) / 2, max(values) * 2, num)


def _finish(ax, xlabel: str, title: str) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(_CE_LABEL)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=6, loc="best")


def plot_loss_vs_n(fits: SourceFits, path: Path, *, oracle_ce: float | None = None) -> None:
    """CE against N, one colour per D (at the joint laws' d), with the model-size law per D
    (solid) and the joint law (dotted)."""
    fig, ax = _figure()
    main = fits.main_mask
    N, D, ce = fits.N[main], fits.D[main], fits.ce[main]
    d_values = np.unique(D)
    grid = _grid(fits, "N")
    outcomes = {o.fixed["D"]: o for o in fits.model_fits if o.fixed.get("d") == fits.main_dim}
    for color, d in zip(_colors(len(d_values)), d_values):
        sel = D == d
        ax.plot(N[sel], ce[sel], "o", color=color, label=f"D = {int(d):,}")
        o = outcomes.get(int(d))
        if o is not None and o.law is not None:
            ax.plot(grid, o.law.predict(grid), "-", color=color, linewidth=1.2)
        if fits.joint.law is not None:
            ax.plot(grid, fits.joint.law.predict(grid, d), ":", color=color, linewidth=1.0)
    ax.plot([], [], "-", color="0.3", label="model-size law fit per D")
    if fits.joint.law is not None:
        ax.plot([], [], ":", color="0.3", label="joint law")
    _left_out(ax, fits, "N")
    _yardsticks(ax, fits, oracle_ce)
    at = f", d = {fits.main_dim}" if fits.main_dim is not None else ""
    _finish(ax, _N_LABEL, f"Loss vs model size ({fits.source} annotations{at})")
    save_figure(fig, path)


def plot_loss_vs_d(fits: SourceFits, path: Path, *, oracle_ce: float | None = None) -> None:
    """CE against D, one colour per N (at the joint laws' d), with the data-size law per N
    (solid) and the joint law (dotted)."""
    fig, ax = _figure()
    main = fits.main_mask
    N, D, ce = fits.N[main], fits.D[main], fits.ce[main]
    n_values = np.unique(N)
    grid = _grid(fits, "D")
    outcomes = {o.fixed["N"]: o for o in fits.data_fits if o.fixed.get("d") == fits.main_dim}
    for color, n in zip(_colors(len(n_values)), n_values):
        sel = N == n
        name = fits.models.get(int(n), "")
        ax.plot(D[sel], ce[sel], "s", color=color, label=f"{name} (N = {n:.3g})")
        o = outcomes.get(int(n))
        if o is not None and o.law is not None:
            ax.plot(grid, o.law.predict(grid), "-", color=color, linewidth=1.2)
        if fits.joint.law is not None:
            ax.plot(grid, fits.joint.law.predict(n, grid), ":", color=color, linewidth=1.0)
    ax.plot([], [], "-", color="0.3", label="data-size law fit per N")
    if fits.joint.law is not None:
        ax.plot([], [], ":", color="0.3", label="joint law")
    _left_out(ax, fits, "D")
    _yardsticks(ax, fits, oracle_ce)
    at = f", d = {fits.main_dim}" if fits.main_dim is not None else ""
    _finish(ax, _D_LABEL, f"Loss vs annotations ({fits.source} annotations{at})")
    save_figure(fig, path)


def plot_loss_vs_dim(fits: SourceFits, path: Path, *, oracle_ce: float | None = None) -> None:
    """CE against the embedding dimension, one colour per (N, D), with the dimension law per
    (N, D) (solid) and the joint L(N, d) at its D (dotted)."""
    fig, ax = _figure()
    known = np.isfinite(fits.dims)
    # one series per encoder and D: an encoder's N grows with d (the head), so group by name
    names = np.array([fits.models.get(int(n), str(int(n))) for n in fits.N])
    keys = sorted({(m, d) for m, d in zip(names[known], fits.D[known])})
    grid = _grid(fits, "d")
    outcomes = {(o.fixed["N"], o.fixed["D"]): o for o in fits.dim_fits}
    md = fits.model_dim.law if fits.model_dim is not None else None
    for color, (name, d) in zip(_colors(len(keys)), keys):
        sel = known & (names == name) & (fits.D == d)
        n = fits.N[sel].max()
        ax.plot(
            fits.dims[sel],
            fits.ce[sel],
            "D",
            color=color,
            markersize=4,
            label=f"{name} (N = {n:.3g}), D = {int(d):,}",
        )
        o = outcomes.get((int(n), int(d)))
        if o is not None and o.law is not None:
            ax.plot(grid, o.law.predict(grid), "-", color=color, linewidth=1.2)
        if md is not None and fits.model_dim.fixed.get("D") == int(d):
            ax.plot(grid, md.predict(n, grid), ":", color=color, linewidth=1.0)
    ax.plot([], [], "-", color="0.3", label="dimension law fit per (N, D)")
    if md is not None:
        ax.plot([], [], ":", color="0.3", label="joint L(N, d)")
    _left_out(ax, fits, "d")
    _yardsticks(ax, fits, oracle_ce)
    _finish(ax, _DIM_LABEL, f"Loss vs embedding dimension ({fits.source} annotations)")
    save_figure(fig, path)


def plot_residuals(fits: SourceFits, path: Path) -> None:
    """Relative residuals of the joint law (else of the model-size law per D) against N."""
    fig, ax = _figure()
    main = fits.main_mask
    N, D, ce = fits.N[main], fits.D[main], fits.ce[main]
    if fits.joint.law is not None:
        pred = fits.joint.law.predict(N, D)
        what = "joint law"
    else:  # per-D model-size laws, where they exist
        pred = np.full_like(ce, np.nan)
        for o in fits.model_fits:
            if o.law is not None and o.fixed.get("d") == fits.main_dim:
                sel = D == o.fixed["D"]
                pred[sel] = o.law.predict(N[sel])
        what = "model-size law per D"
    rel = 100.0 * (ce - pred) / pred
    d_values = np.unique(D)
    for color, d in zip(_colors(len(d_values)), d_values):
        sel = (D == d) & np.isfinite(rel)
        if sel.any():
            ax.plot(N[sel], rel[sel], "o-", color=color, label=f"D = {int(d):,}")
    ax.axhline(0.0, color="0.2", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel(_N_LABEL)
    ax.set_ylabel("residual (observed - fitted) / fitted (%)")
    ax.set_title(f"Residuals of the {what} ({fits.source} annotations)", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    save_figure(fig, path)


def plot_forecasts(fits: SourceFits, path: Path) -> bool:
    """Forecast checks, one row per held-out cell: the observed CE relative to the forecast (dot)
    and the forecast's 95% interval (bar), both as % of the forecast; green when the observation
    falls inside, red when not, grey without an interval. Returns False (and writes nothing)
    when no law has a check."""
    rows = []
    for o in fits.all_outcomes:
        e = o.extrapolation
        if e is None:
            continue
        coords = {"N": e.N, "D": e.D, "d": e.d}[e.holdout]
        for i in range(len(e.observed)):
            p = float(e.predicted[i])
            where = f"{e.holdout} = {coords[i]:.3g}"
            others = [
                (k, a) for k, a in (("N", e.N), ("D", e.D)) if a is not None and k != e.holdout
            ]
            where += "".join(f", {k} = {a[i]:.3g}" for k, a in others)
            band = None
            if e.has_intervals:
                band = (100 * (e.lower[i] / p - 1), 100 * (e.upper[i] / p - 1))
            rows.append((f"{o.label}: {where}", 100 * (e.observed[i] / p - 1), band))
    if not rows:
        return False
    from matplotlib.figure import Figure

    height = 1.4 + 0.24 * len(rows)
    fig = Figure(figsize=(7.6, height))
    fig.subplots_adjust(left=0.5, right=0.97, bottom=0.9 / height, top=1 - 0.45 / height)
    ax = fig.add_subplot(1, 1, 1)
    for y, (label, rel, band) in enumerate(rows):
        if band is None:
            color = "0.5"
        else:
            color = "seagreen" if band[0] <= rel <= band[1] else "crimson"
            ax.plot(band, [y, y], "-", color=color, linewidth=2.0, alpha=0.5)
        ax.plot([rel], [y], "o", color=color, markersize=4)
    ax.axvline(0.0, color="0.2", linewidth=0.8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r[0] for r in rows], fontsize=6)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("observed / forecast CE - 1 (%); bar: 95% forecast interval")
    ax.set_title(f"Forecast of the held-out largest sizes ({fits.source} annotations)", fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    save_figure(fig, path)
    return True


def plot_sources(
    all_fits: dict[str, SourceFits], path: Path, *, oracle_ce: float | None = None
) -> int | None:
    """Each source at the largest D measured by every source; returns that D (or None).

    Sources with a fitted joint law are compared (they have curves); the rest only when no source
    has one.
    """
    with_law = {k: f for k, f in all_fits.items() if f.joint.law is not None}
    all_fits = with_law if with_law else all_fits
    # the largest D at which every source with a curve (>= 2 model sizes) was measured
    curves = [
        {int(d) for d in np.unique(f.D[f.main_mask]) if np.sum(f.D[f.main_mask] == d) >= 2}
        for f in all_fits.values()
    ]
    curves = [c for c in curves if c]
    common = set.intersection(*curves) if curves else set()
    d = max(common) if common else None
    fig, ax = _figure()
    for color, (name, fits) in zip(_colors(len(all_fits)), all_fits.items()):
        main = fits.main_mask
        if not main.any():
            continue
        d_here = d if d is not None else int(fits.D[main].max())
        sel = main & (fits.D == d_here)
        label = name if d is not None else f"{name} (D = {d_here:,})"
        ax.plot(fits.N[sel], fits.ce[sel], "o", color=color, label=label)
        grid = _grid(fits, "N")
        if fits.joint.law is not None:
            ax.plot(grid, fits.joint.law.predict(grid, d_here), "-", color=color, linewidth=1.2)
    first = next(iter(all_fits.values()))
    _yardsticks(ax, first, oracle_ce)
    title = "Annotation sources compared" + (f" at D = {d:,}" if d is not None else "")
    _finish(ax, _N_LABEL, title + " (lines: joint law)")
    save_figure(fig, path)
    return d


def plot_metric_maps(
    all_fits: Mapping[str, SourceFits],
    path: Path,
    *,
    baselines: Mapping[str, Mapping] | None = None,
) -> bool:
    """Each ranking metric against CE over every cell of the study (one panel per metric),
    with the fitted CE-to-metric map and its bootstrap band, chance as a vertical line, and
    lexical baselines (e.g. BM25) as horizontal lines. Returns False when there is no map."""
    first = next(iter(all_fits.values()))
    maps: dict[str, MetricMap] = first.metric_maps
    if not maps:
        return False
    from matplotlib.figure import Figure

    names = list(maps)
    cols = min(2, len(names))
    rows = (len(names) + cols - 1) // cols
    fig = Figure(figsize=(5.2 * cols, 3.9 * rows))
    fig.subplots_adjust(
        left=0.09, right=0.98, bottom=0.14 if rows == 1 else 0.1, top=0.92, wspace=0.22, hspace=0.4
    )
    sources = list(all_fits)
    colors = dict(zip(sources, _colors(len(sources))))
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        m = maps[name]
        for s, fits in all_fits.items():
            pts = [
                (c["ce"], c["metrics"][name], bool(c["excluded"]))
                for c in fits.metrics
                if name in c["metrics"]
            ]
            if not pts:
                continue
            ce, v, out = (np.array(x) for x in zip(*pts))
            ax.plot(ce[~out], v[~out], "o", color=colors[s], markersize=4, label=s)
            if out.any():
                ax.plot(ce[out], v[out], "x", color=colors[s], markersize=5)
        grid = np.linspace(0.0, max(m.grid.max(), (first.chance_ce or 0) * 1.05), 300)
        ax.plot(
            grid,
            m.predict(grid),
            "-",
            color="0.15",
            linewidth=1.2,
            label=f"{m.kind} map (RMSE {m.rmse:.3f})",
        )
        band = m.band(grid)
        if band is not None:
            ax.fill_between(
                grid,
                band[0],
                band[1],
                color="0.5",
                alpha=0.25,
                label=f"{100 * m.ci_level:.0f}% bootstrap band",
            )
        if first.chance_ce is not None:
            ax.axvline(
                first.chance_ce,
                color="crimson",
                linestyle="--",
                linewidth=1.0,
                label=f"chance ln(K+1) = {first.chance_ce:.3g}",
            )
        for label, b in (baselines or {}).items():
            value = (b.get("metrics") or {}).get(name)
            if value is not None:
                ax.axhline(
                    value,
                    color="darkorange",
                    linestyle="-.",
                    linewidth=1.0,
                    label=f"{label} = {value:.3g}",
                )
        ax.set_xlabel(_CE_LABEL)
        ax.set_ylabel(name)
        ax.set_title(f"{name} against CE, every cell (x: left out of fits)", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    save_figure(fig, path)
    return True


def _metrics_files(cells) -> list[Path]:
    if isinstance(cells, (str, os.PathLike)):
        root = Path(cells)
        if root.is_file():
            return [root]
        if not root.is_dir():
            raise ValueError(f"cells must be a study folder or cell folders, got {str(root)!r}")
        direct = root / "metrics.jsonl"
        if direct.exists():
            return [direct]
        return sorted(root.rglob("metrics.jsonl"))
    if not isinstance(cells, Sequence):
        raise TypeError(
            f"cells must be a folder or a list of cell folders, got {type(cells).__name__}"
        )
    out = []
    for c in cells:
        p = Path(c)
        p = p if p.name == "metrics.jsonl" else p / "metrics.jsonl"
        if not p.exists():
            raise ValueError(f"cells: {str(p)!r} does not exist")
        out.append(p)
    return out


def read_training_log(path: str | os.PathLike) -> list[dict]:
    """The lines of a ``metrics.jsonl`` (one JSON object each: step, loss, dev_ce, lr,
    tokens_per_s, elapsed); blank and half-written last lines are skipped, a bad line elsewhere
    raises ValueError naming the file and line."""
    path = Path(path)
    lines = path.read_text().splitlines()
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines):  # the trainer may be writing it right now
                break
            raise ValueError(f"{path}:{i}: not a JSON object ({exc})") from exc
        if not isinstance(row, dict) or "step" not in row:
            raise ValueError(f"{path}:{i}: expected an object with a 'step' key, got {line!r}")
        rows.append(row)
    return rows


def plot_training_curves(cells, path: str | os.PathLike) -> Path:
    """Training curves of a study's cells: train loss (left) and dev CE (right) against step.

    Args:
        cells: a study folder (every ``metrics.jsonl`` below it, e.g. ``cells/*/metrics.jsonl``),
            one cell folder, or a list of cell folders (or ``metrics.jsonl`` paths).
        path: the PNG to write (atomically).

    Raises:
        ValueError: no ``metrics.jsonl`` found, or a malformed line (file and line named).
    """
    files = _metrics_files(cells)
    if not files:
        raise ValueError(f"cells: no metrics.jsonl found under {str(cells)!r}")
    logs = [(f.parent.name, read_training_log(f)) for f in files]
    logs = [(n, rows) for n, rows in logs if rows]
    if not logs:
        raise ValueError("cells: every metrics.jsonl is empty")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.0, 4.4))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.9, wspace=0.2)
    ax_loss, ax_dev = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    any_dev = False
    for color, (name, rows) in zip(_colors(len(logs)), logs):
        train = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
        dev = [(r["step"], r["dev_ce"]) for r in rows if r.get("dev_ce") is not None]
        if train:
            ax_loss.plot(*zip(*train), "-", color=color, linewidth=1.0, label=name)
        if dev:
            any_dev = True
            ax_dev.plot(*zip(*dev), "o-", color=color, markersize=3, linewidth=1.0, label=name)
    for ax, what in ((ax_loss, "training loss (nats)"), (ax_dev, "dev CE (nats)")):
        ax.set_xlabel("step")
        ax.set_ylabel(what)
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    ax_loss.set_title("Training loss per cell", fontsize=10)
    ax_dev.set_title(
        "Dev contrastive entropy per cell" + ("" if any_dev else " (none logged)"), fontsize=10
    )
    if len(logs) <= 16:
        ax_loss.legend(fontsize=6, loc="best")
    return save_figure(fig, path)


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
