"""The study report: every law fitted per annotation source, the budget answer, plots, Markdown.

Input is the list of result records of a study, one per trained and evaluated grid cell::

    {"model": "bert-L4-H256", "N": 3422208, "D": 10000, "source": "human", "ce": 0.119,
     "metrics": {"mrr@10": 0.31, ...}, ...}   # further keys are ignored

Records of the same (source, N, D) (e.g. several seeds) are averaged into one point before
fitting, so repeated seeds never count as extra design points.

Per source, :func:`fit_study` fits the model-size law for every D with >= 3 model sizes, the
data-size law for every N with >= 3 data sizes, and both joint forms when there are enough cells;
each fit comes with bootstrap intervals, R^2 and (where enough points remain) an extrapolation
check that holds out the largest N (or D). A fit that cannot run is recorded with the reason
(too few points, or the FitError message) instead of stopping the report.
:func:`write_report` turns that into ``summary.md``, ``fits.json`` and PNG figures.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import numbers
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from ._checks import nonneg_int, positive_number
from ._io import atomic_write_text, save_figure
from .budget import Allocation, CostModel, optimal_allocation, plot_budget
from .fitting import (
    DEFAULT_N_BOOT,
    ExtrapolationCheck,
    FitError,
    extrapolation_check,
    fit_data_law,
    fit_joint_law,
    fit_model_law,
)
from .laws import ChinchillaLaw, DataSizeLaw, JointLaw, ModelSizeLaw

# where the budget answer is searched, relative to the sizes measured: the laws are fitted there
# and extrapolating them by more than ~3 decades is not something a report should recommend
_SEARCH_DECADES_BELOW = 1.0
_SEARCH_DECADES_ABOVE = 3.0


@dataclass(frozen=True, eq=False)  # holds arrays: identity equality
class FitOutcome:
    """One attempted fit.

    Attributes:
        kind: "model" (L(N) at fixed D), "data" (L(D) at fixed N), "joint" or "chinchilla".
        fixed: the fixed coordinate, e.g. {"D": 10000} for a model-size fit; {} for joint fits.
        n_points: distinct points available.
        law: the fitted law, or None.
        error: "" when fitted; otherwise why not (too few points, FitError message).
        extrapolation: the hold-out-the-largest check, or None.
        extrapolation_note: why there is no check ("" when there is one).
        caveat: set when the law shown is a boundary fit: the only FitError was an irreducible
            term pinned at its lower bound (no floor visible over the measured range), so the
            best fit is kept, as a pure power law, with this warning instead of being dropped.
    """

    kind: str
    fixed: dict
    n_points: int
    law: ModelSizeLaw | DataSizeLaw | JointLaw | ChinchillaLaw | None = None
    error: str = ""
    extrapolation: ExtrapolationCheck | None = None
    extrapolation_note: str = ""
    caveat: str = ""


@dataclass(frozen=True, eq=False)  # holds arrays: identity equality
class SourceFits:
    """Everything fitted for one annotation source.

    Attributes:
        source: annotation source name.
        N, D, ce: (m,) the averaged cells; ``runs``: (m,) records per cell.
        models: N -> model name (first seen).
        model_fits: one :class:`FitOutcome` per D; data_fits: one per N.
        joint, chinchilla: the joint fits (paper form, additive form).
        allocation, allocation_no_inference: the budget answer with and without inference cost,
            or None; ``budget_note`` says why not or what was assumed.
    """

    source: str
    N: np.ndarray
    D: np.ndarray
    ce: np.ndarray
    runs: np.ndarray
    models: dict
    metrics: list
    model_fits: list
    data_fits: list
    joint: FitOutcome
    chinchilla: FitOutcome
    allocation: Allocation | None = None
    allocation_no_inference: Allocation | None = None
    budget: float | None = None
    budget_note: str = ""
    search_box: dict = field(default_factory=dict)

    def describe(self) -> str:
        """A few lines for a terminal: the joint law, the model-size law at the largest D, the
        data-size law at the largest N, and the budget answer (what fitted of those)."""
        lines = [f"[{self.source}] {len(self.ce)} cells"]
        for label, o in (("joint", self.joint), ("additive joint", self.chinchilla)):
            text = o.law.describe() if o.law is not None else o.error
            lines.append(f"  {label}: {text}" + (f" [{o.caveat}]" if o.caveat else ""))
        for label, outcomes, key in (
            ("model-size", self.model_fits, "D"),
            ("data-size", self.data_fits, "N"),
        ):
            fitted = [o for o in outcomes if o.law is not None]
            if fitted:
                o = max(fitted, key=lambda o: o.fixed[key])
                caveat = f" [{o.caveat}]" if o.caveat else ""
                lines.append(f"  {label} at {key} = {o.fixed[key]:,}: {o.law.describe()}{caveat}")
            else:
                lines.append(f"  {label}: no fit")
        a = self.allocation
        if a is not None:
            lines.append(
                f"  budget ${a.budget:,.0f}: N = {a.N:.3g}, D = {a.D:.3g}, predicted CE "
                f"{a.loss:.4f} (with inference cost)"
            )
        return "\n".join(lines)

    @property
    def budget_law(self) -> JointLaw | ChinchillaLaw | None:
        """The joint law the budget answer uses: the paper's form, else the additive one."""
        for outcome in (self.joint, self.chinchilla):
            if outcome.law is not None:
                return outcome.law
        return None


# ----------------------------------------------------------------------------- input


def _check_records(records) -> list[dict]:
    if isinstance(records, (str, bytes, Mapping)) or not isinstance(records, Sequence):
        raise TypeError(f"records must be a list of dicts, got {type(records).__name__}")
    if len(records) == 0:
        raise ValueError("records must not be empty")
    out = []
    for i, r in enumerate(records):
        where = f"records[{i}]"
        if not isinstance(r, Mapping):
            raise TypeError(f"{where} must be a dict, got {type(r).__name__}")
        for key in ("model", "N", "D", "source", "ce"):
            if key not in r:
                raise ValueError(f"{where} is missing the key {key!r} (has {sorted(r)})")
        for key in ("model", "source"):
            if not isinstance(r[key], str) or not r[key]:
                raise TypeError(f"{where}[{key!r}] must be a non-empty str, got {r[key]!r}")
        for key in ("N", "D"):
            v = r[key]
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
                raise ValueError(f"{where}[{key!r}] must be a positive int, got {v!r}")
        ce = r["ce"]
        if isinstance(ce, bool) or not isinstance(ce, numbers.Real):
            raise TypeError(f"{where}['ce'] must be a real number, got {type(ce).__name__}")
        if not math.isfinite(ce) or ce <= 0:
            raise ValueError(f"{where}['ce'] must be finite and > 0, got {ce!r}")
        metrics = r.get("metrics", {}) or {}
        if not isinstance(metrics, Mapping):
            raise TypeError(f"{where}['metrics'] must be a dict, got {type(metrics).__name__}")
        for k, v in metrics.items():
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise TypeError(f"{where}['metrics'][{k!r}] must be a number, got {v!r}")
        out.append(
            {
                "model": r["model"],
                "N": int(r["N"]),
                "D": int(r["D"]),
                "source": r["source"],
                "ce": float(ce),
                "metrics": {str(k): float(v) for k, v in metrics.items()},
            }
        )
    return out


def _check_oracle(oracle_ce, sources: list[str]) -> dict[str, float]:
    if oracle_ce is None:
        return {}
    if isinstance(oracle_ce, Mapping):
        out = {}
        for k, v in oracle_ce.items():
            out[str(k)] = positive_number(f"oracle_ce[{k!r}]", v)
        return out
    v = positive_number("oracle_ce", oracle_ce)
    return dict.fromkeys(sources, v)


# ----------------------------------------------------------------------------- fitting


def _floor_only(exc: FitError) -> bool:
    """True when the fit converged and its only bound hit is delta at the lower bound."""
    hits = exc.reason.split(": ", 1)[-1].split("; ")
    return (
        exc.law is not None
        and "sits on a bound" in exc.reason
        and len(hits) == 1
        and hits[0].startswith("log delta")
        and "lower bound" in hits[0]
    )


def _try_fit(kind: str, fixed: dict, n_points: int, fit, check) -> FitOutcome:
    try:
        law = fit()
    except FitError as exc:
        if not _floor_only(exc):
            return FitOutcome(kind, fixed, n_points, error=f"not fitted: {exc}")
        caveat = (
            "delta at its lower bound: no irreducible loss visible over this range, shown "
            "as a pure power law (no bootstrap intervals)"
        )
        return FitOutcome(kind, fixed, n_points, exc.law, "", None, "boundary fit", caveat)
    except ValueError as exc:
        return FitOutcome(kind, fixed, n_points, error=f"not fitted: {exc}")
    try:
        extrapolation, note = check(), ""
    except ValueError:
        extrapolation, note = None, "too few points to hold the largest size out"
    except FitError as exc:
        extrapolation, note = None, f"fit without the largest size failed: {exc}"
    return FitOutcome(kind, fixed, n_points, law, "", extrapolation, note)


def _per_slice_fits(kind: str, ce, *, fixed, varied, opts) -> list[FitOutcome]:
    """One single-variable law per value of the fixed coordinate: L(N) at each D ("model") or
    L(D) at each N ("data"); slices with fewer than 3 sizes are recorded as skipped."""
    fixed_name, fixed_values = fixed
    varied_name, varied_values = varied
    fit = fit_model_law if kind == "model" else fit_data_law
    what = "model size(s)" if kind == "model" else "data size(s)"
    out = []
    for v in np.unique(fixed_values):
        sel = fixed_values == v
        k = int(sel.sum())
        label = {fixed_name: int(v)}
        if k < 3:
            out.append(FitOutcome(kind, label, k, error=f"skipped: {k} {what}, need 3"))
            continue
        x, y = varied_values[sel], ce[sel]
        out.append(
            _try_fit(
                kind,
                label,
                k,
                lambda x=x, y=y: fit(x, y, **opts),
                lambda x=x, y=y: extrapolation_check(y, **{varied_name: x}),
            )
        )
    return out


def _fit_source(source, cells, n_boot, seed, cost, budget) -> SourceFits:
    N = np.array([c["N"] for c in cells], dtype=float)
    D = np.array([c["D"] for c in cells], dtype=float)
    ce = np.array([c["ce"] for c in cells])
    opts = {"n_boot": n_boot, "seed": seed}

    model_fits = _per_slice_fits("model", ce, fixed=("D", D), varied=("N", N), opts=opts)
    data_fits = _per_slice_fits("data", ce, fixed=("N", N), varied=("D", D), opts=opts)
    joints = {}
    for form in ("paper", "chinchilla"):
        kind = "joint" if form == "paper" else "chinchilla"
        if len(ce) < 5 or len(np.unique(N)) < 2 or len(np.unique(D)) < 2:
            joints[kind] = FitOutcome(
                kind,
                {},
                len(ce),
                error=(
                    f"skipped: {len(ce)} cells over {len(np.unique(N))} N x "
                    f"{len(np.unique(D))} D; need >= 5 cells, >= 2 of each"
                ),
            )
            continue
        joints[kind] = _try_fit(
            kind,
            {},
            len(ce),
            lambda form=form: fit_joint_law(N, D, ce, form=form, **opts),
            lambda form=form: extrapolation_check(ce, N=N, D=D, holdout="N", form=form),
        )
    fits = SourceFits(
        source=source,
        N=N,
        D=D,
        ce=ce,
        runs=np.array([c["runs"] for c in cells]),
        models={c["N"]: c["model"] for c in reversed(cells)},  # first name seen wins
        metrics=cells,
        model_fits=model_fits,
        data_fits=data_fits,
        joint=joints["joint"],
        chinchilla=joints["chinchilla"],
    )
    return _with_budget(fits, cost, budget)


def _with_budget(fits: SourceFits, cost: CostModel, budget: float | None) -> SourceFits:
    law = fits.budget_law
    if law is None:
        return replace(fits, budget_note="no joint law could be fitted, so no budget answer")
    box = {
        "N_bounds": (
            float(fits.N.min() / 10**_SEARCH_DECADES_BELOW),
            float(fits.N.max() * 10**_SEARCH_DECADES_ABOVE),
        ),
        "D_bounds": (
            float(fits.D.min() / 10**_SEARCH_DECADES_BELOW),
            float(fits.D.max() * 10**_SEARCH_DECADES_ABOVE),
        ),
    }
    note = ""
    if budget is None:
        # the question a study answers first: what would the money of its largest run buy?
        budget = float(cost.cost(fits.N.max(), fits.D.max()))
        note = "budget not given: the cost of the largest cell measured (max N, max D)"
    try:
        with_inf = optimal_allocation(law, cost, budget, include_inference=True, **box)
        without = optimal_allocation(law, cost, budget, include_inference=False, **box)
    except ValueError as exc:
        return replace(fits, budget=budget, budget_note=f"no budget answer: {exc}", search_box=box)
    return replace(
        fits,
        allocation=with_inf,
        allocation_no_inference=without,
        budget=budget,
        budget_note=note,
        search_box=box,
    )


def _cells(records: list[dict], source: str) -> list[dict]:
    groups: dict[tuple[int, int], list[dict]] = {}
    for r in records:
        if r["source"] == source:
            groups.setdefault((r["N"], r["D"]), []).append(r)
    cells = []
    for (n, d), rs in sorted(groups.items()):
        names = sorted({m for r in rs for m in r["metrics"]})
        cells.append(
            {
                "model": rs[0]["model"],
                "N": n,
                "D": d,
                "runs": len(rs),
                "ce": float(np.mean([r["ce"] for r in rs])),
                "metrics": {
                    k: float(np.mean([r["metrics"][k] for r in rs if k in r["metrics"]]))
                    for k in names
                },
            }
        )
    return cells


def fit_study(
    records: Sequence[Mapping],
    *,
    cost: CostModel | None = None,
    budget: float | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
) -> dict[str, SourceFits]:
    """Fit every law for every annotation source of ``records`` (see the module docstring).

    Args:
        records: result records (dicts with model, N, D, source, ce and optional metrics).
        cost: the cost model for the budget answer (default: ``CostModel()``, documented there).
        budget: dollars (default: what the largest measured cell costs under ``cost``).
        n_boot, seed: bootstrap refits and seed of every fit.

    Returns:
        source -> :class:`SourceFits`, sources in sorted order.
    """
    recs = _check_records(records)
    if cost is not None and not isinstance(cost, CostModel):
        raise TypeError(f"cost must be a CostModel or None, got {type(cost).__name__}")
    if budget is not None:
        budget = positive_number("budget", budget)
    nonneg_int("n_boot", n_boot)
    nonneg_int("seed", seed)
    cost = cost or CostModel()
    out = {}
    for source in sorted({r["source"] for r in recs}):
        cells = _cells(recs, source)
        out[source] = _fit_source(source, cells, n_boot, seed, cost, budget)
    return out


# ----------------------------------------------------------------------------- plots

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


def _plot_loss_vs_n(fits: SourceFits, path: Path) -> None:
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


def _plot_loss_vs_d(fits: SourceFits, path: Path) -> None:
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


def _plot_residuals(fits: SourceFits, path: Path) -> None:
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


def _plot_sources(all_fits: dict[str, SourceFits], path: Path) -> int | None:
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


# ----------------------------------------------------------------------------- markdown


def _num(v: float) -> str:
    if v == 0 or not math.isfinite(v):
        return f"{v}"
    if 1e-3 <= abs(v) < 1e4:
        return f"{v:.4g}"
    return f"{v:.3g}"


def _with_ci(law, name: str) -> str:
    text = _num(law.params[name])
    if name in law.ci:
        lo, hi = law.ci[name]
        text += f" [{_num(lo)}, {_num(hi)}]"
    return text


def _extrap_text(o: FitOutcome) -> str:
    if o.extrapolation is None:
        return f"n/a ({o.extrapolation_note})" if o.extrapolation_note else "n/a"
    e = o.extrapolation
    held = ", ".join(_num(v) for v in e.held_out_values)
    return (
        f"{100 * e.mean_abs_relative_error:.1f}% mean, {100 * e.max_abs_relative_error:.1f}% "
        f"max (held out {e.holdout} = {held})"
    )


def _law_table(outcomes: list[FitOutcome], key: str, names: tuple[str, ...]) -> list[str]:
    head = f"| {key} | points | " + " | ".join(names) + " | R^2 | extrapolation error |"
    lines = [head, "|" + "---|" * (len(names) + 4)]
    notes = []
    for o in outcomes:
        label = f"{o.fixed[key]:,}" if key in o.fixed else "-"
        if o.law is None:
            notes.append(f"- {key} = {label}: {o.error}")
            continue
        cells = " | ".join(_with_ci(o.law, n) for n in names)
        lines.append(f"| {label} | {o.n_points} | {cells} | {o.law.r2:.4f} | {_extrap_text(o)} |")
        if o.caveat:
            notes.append(f"- {key} = {label}: {o.caveat}")
    if len(lines) == 2:
        lines = ["(no fit)"]
    return lines + ([""] + notes if notes else [])


def _source_section(fits: SourceFits, oracle: float | None, files: dict, n_boot: int) -> list[str]:
    s = fits.source
    out = [f"## Source `{s}`", ""]
    metric_names = sorted({k for c in fits.metrics for k in c["metrics"]})
    out += [
        "### Measurements (mean over runs)",
        "",
        "| model | N | D | runs | CE (nats) |" + "".join(f" {k} |" for k in metric_names),
        "|" + "---|" * (5 + len(metric_names)),
    ]
    for c in fits.metrics:
        extra = "".join(f" {_num(c['metrics'].get(k, float('nan')))} |" for k in metric_names)
        out.append(
            f"| {c['model']} | {c['N']:,} | {c['D']:,} | {c['runs']} | {c['ce']:.4f} |{extra}"
        )
    intervals = (
        f"Values in brackets are 95% bootstrap intervals ({n_boot} residual-bootstrap refits; "
        "none where a fit has no more points than parameters)"
        if n_boot
        else "No bootstrap intervals (n_boot = 0)"
    )
    out += [
        "",
        (
            f"{intervals}; extrapolation error = |predicted - observed| / observed on the held-out "
            "largest size, fitting without it."
        ),
        "",
        "### Model-size law `L(N) = (A/N)^alpha + delta`, per D",
        "",
    ]
    out += _law_table(fits.model_fits, "D", ("A", "alpha", "delta"))
    out += ["", f"![loss vs model size]({files['loss_vs_N']})", ""]
    out += ["### Data-size law `L(D) = (B/D)^beta + delta`, per N", ""]
    out += _law_table(fits.data_fits, "N", ("B", "beta", "delta"))
    out += ["", f"![loss vs annotations]({files['loss_vs_D']})", ""]
    out += ["### Joint laws", ""]
    names = ("A", "B", "alpha", "beta", "delta")
    out += [
        "| form | points | " + " | ".join(names) + " | R^2 | extrapolation error |",
        "|" + "---|" * 9,
    ]
    for o, formula in (
        (fits.joint, JointLaw.formula),
        (fits.chinchilla, ChinchillaLaw.formula),
    ):
        if o.law is None:
            out.append(f"| `{formula}` | {o.n_points} | {o.error} |" + " |" * 6)
        else:
            cells = " | ".join(_with_ci(o.law, n) for n in names)
            out.append(
                f"| `{formula}` | {o.n_points} | {cells} | {o.law.r2:.4f} | {_extrap_text(o)} |"
            )
    out += ["", f"![residuals]({files['residuals']})", ""]

    out += ["### Irreducible loss", ""]
    rows = []
    if fits.joint.law is not None:
        rows.append(("joint law (paper form)", fits.joint.law))
    largest = [o for o in fits.model_fits if o.law is not None]
    if largest:
        o = max(largest, key=lambda o: o.fixed["D"])
        rows.append((f"model-size law at D = {o.fixed['D']:,}", o.law))
    if not rows:
        out.append("No law with an irreducible term could be fitted.")
    else:
        head = "| law | delta (nats) |" + (" oracle CE (nats) | delta - oracle |" if oracle else "")
        out += [head, "|---|---|" + ("---|---|" if oracle else "")]
        for label, law in rows:
            line = f"| {label} | {_with_ci(law, 'delta')} |"
            if oracle:
                line += f" {oracle:.4f} | {law.delta - oracle:+.4f} |"
            out.append(line)
        if oracle:
            out += [
                "",
                (
                    "The oracle contrastive entropy is the loss of the Bayes-optimal scorer under "
                    "the collection's known generative model: no encoder can go below it, so a "
                    "fitted delta near it means the law's floor is the data's own noise, and a "
                    "delta far below it means the measured range does not reach the floor yet."
                ),
            ]
    out.append("")

    out += ["### Budget", ""]
    if fits.allocation is None:
        out += [fits.budget_note or "No budget answer.", ""]
    else:
        a, b = fits.allocation, fits.allocation_no_inference
        law_name = "joint law (paper form)" if fits.joint.law is not None else "additive joint law"
        out += [
            f"Minimise the {law_name} subject to cost <= ${fits.budget:,.2f}"
            + (f" ({fits.budget_note})" if fits.budget_note else "")
            + f"; N searched in [{_num(fits.search_box['N_bounds'][0])}, "
            f"{_num(fits.search_box['N_bounds'][1])}], D in "
            f"[{_num(fits.search_box['D_bounds'][0])}, {_num(fits.search_box['D_bounds'][1])}].",
            "",
            (
                "| | N | D | predicted CE | annotation $ | training $ | inference $ | total $ "
                "| on search bound |"
            ),
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for label, x in (("with inference cost", a), ("without inference cost", b)):
            out.append(
                f"| {label} | {x.N:.3g} | {x.D:.3g} | {x.loss:.4f} | {x.cost.annotation:,.2f} "
                f"| {x.cost.training:,.2f} | {x.cost.inference:,.2f} | {x.cost.total:,.2f} "
                f"| {x.at_bound or 'no'} |"
            )
        out += ["", f"![budget]({files['budget']})", ""]
    return out


def _cost_table(cost: CostModel) -> list[str]:
    lines = ["| parameter | value |", "|---|---|"]
    for f in fields(cost):
        lines.append(f"| {f.name} | {getattr(cost, f.name)} |")
    return lines


def _law_json(o: FitOutcome) -> dict:
    d = {"kind": o.kind, "fixed": o.fixed, "points": o.n_points, "error": o.error}
    if o.law is not None:
        d.update(
            formula=o.law.formula,
            params=o.law.params,
            ci={k: list(v) for k, v in o.law.ci.items()},
            r2=o.law.r2,
        )
    if o.extrapolation is not None:
        e = o.extrapolation
        d["extrapolation"] = {
            "holdout": e.holdout,
            "held_out_values": e.held_out_values.tolist(),
            "mean_abs_relative_error": e.mean_abs_relative_error,
            "max_abs_relative_error": e.max_abs_relative_error,
        }
    return d


def _alloc_json(a: Allocation | None) -> dict | None:
    if a is None:
        return None
    return {
        "N": a.N,
        "D": a.D,
        "loss": a.loss,
        "budget": a.budget,
        "include_inference": a.include_inference,
        "at_bound": a.at_bound,
        "cost": {
            "annotation": a.cost.annotation,
            "training": a.cost.training,
            "inference": a.cost.inference,
            "total": a.cost.total,
        },
    }


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "source"


def write_report(
    records: Sequence[Mapping],
    out_dir: str | os.PathLike,
    *,
    oracle_ce: float | Mapping[str, float] | None = None,
    cost: CostModel | None = None,
    budget: float | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    fits: Mapping[str, SourceFits] | None = None,
) -> Path:
    """Fit every law of ``records`` and write a report folder; returns the path of summary.md.

    Writes into ``out_dir`` (created if needed), each file atomically:
    ``loss_vs_N_<source>.png``, ``loss_vs_D_<source>.png``, ``residuals_<source>.png``,
    ``budget_<source>.png`` (when a joint law fitted), ``sources.png`` (two or more sources),
    ``fits.json`` (every fitted constant, interval, R^2, extrapolation error, budget answer) and
    ``summary.md`` last (tables, with the plots linked).

    Args:
        records: result records, see the module docstring.
        out_dir: report folder.
        oracle_ce: the collection's oracle contrastive entropy (one float, or per source), to
            compare with the fitted irreducible term.
        cost: cost model of the budget answer (default ``CostModel()``).
        budget: dollars (default: the cost of the largest measured cell).
        n_boot, seed: bootstrap refits per fit and their seed.
        fits: the result of ``fit_study(records, cost=cost, budget=budget, n_boot=n_boot,
            seed=seed)`` when already computed (e.g. to print it first); fitted here otherwise.
    """
    recs = _check_records(records)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir must be a folder, got the file {str(out)!r}")
    sources = sorted({r["source"] for r in recs})
    oracle = _check_oracle(oracle_ce, sources)
    cost = cost if cost is not None else CostModel()
    if fits is None:
        all_fits = fit_study(recs, cost=cost, budget=budget, n_boot=n_boot, seed=seed)
    else:
        if not isinstance(fits, Mapping) or not all(
            isinstance(v, SourceFits) for v in fits.values()
        ):
            raise TypeError("fits must be the dict returned by fit_study")
        if set(fits) != set(sources):
            raise ValueError(
                f"fits covers sources {sorted(fits)} but records have {sources}; "
                "pass the fit_study result of these records"
            )
        all_fits = dict(fits)
    out.mkdir(parents=True, exist_ok=True)

    files_by_source = {}
    for s, source_fits in all_fits.items():
        slug = _slug(s)
        files = {
            "loss_vs_N": f"loss_vs_N_{slug}.png",
            "loss_vs_D": f"loss_vs_D_{slug}.png",
            "residuals": f"residuals_{slug}.png",
        }
        _plot_loss_vs_n(source_fits, out / files["loss_vs_N"])
        _plot_loss_vs_d(source_fits, out / files["loss_vs_D"])
        _plot_residuals(source_fits, out / files["residuals"])
        if source_fits.allocation is not None:
            files["budget"] = f"budget_{slug}.png"
            plot_budget(
                source_fits.budget_law,
                cost,
                source_fits.budget,
                out / files["budget"],
                title=f"Budget ${source_fits.budget:,.0f} ({s} annotations): predicted CE (nats)",
                **source_fits.search_box,
            )
        files_by_source[s] = files
    sources_png = None
    if len(all_fits) >= 2:
        sources_png = "sources.png"
        common_d = _plot_sources(all_fits, out / sources_png)

    payload = {
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "records": len(recs),
        "cost_model": {f.name: getattr(cost, f.name) for f in fields(cost)},
        "sources": {
            s: {
                "model_size": [_law_json(o) for o in f.model_fits],
                "data_size": [_law_json(o) for o in f.data_fits],
                "joint": _law_json(f.joint),
                "chinchilla": _law_json(f.chinchilla),
                "oracle_ce": oracle.get(s),
                "budget": f.budget,
                "budget_note": f.budget_note,
                "allocation": _alloc_json(f.allocation),
                "allocation_without_inference": _alloc_json(f.allocation_no_inference),
                "plots": files_by_source[s],
            }
            for s, f in all_fits.items()
        },
    }
    atomic_write_text(out / "fits.json", json.dumps(payload, indent=2) + "\n")

    lines = [
        "# Dense retrieval scaling-law report",
        "",
        (
            f"Generated {payload['generated']} from {len(recs)} result records; loss = contrastive "
            "entropy (CE, nats) on the test pairs; N = non-embedding parameters; D = annotated "
            "(query, passage) pairs. Fits: Huber loss on log CE, L-BFGS-B from a grid of starts "
            "(`densescale.scaling`). Machine-readable values: [fits.json](fits.json)."
        ),
        "",
        "| source | cells | runs | model sizes N | data sizes D | CE range (nats) |",
        "|---|---|---|---|---|---|",
    ]
    for s, f in all_fits.items():
        lines.append(
            f"| {s} | {len(f.ce)} | {int(f.runs.sum())} | {len(np.unique(f.N))} "
            f"({_num(f.N.min())} - {_num(f.N.max())}) | {len(np.unique(f.D))} "
            f"({_num(f.D.min())} - {_num(f.D.max())}) | {f.ce.min():.4f} - {f.ce.max():.4f} |"
        )
    lines.append("")
    for s, f in all_fits.items():
        lines += _source_section(f, oracle.get(s), files_by_source[s], n_boot)
    if sources_png is not None:
        at = f" at D = {common_d:,}" if common_d is not None else " at each source's largest D"
        lines += [
            "## Annotation sources compared",
            "",
            f"CE against N for every source{at}; lower curves mean better annotations.",
            "",
            "| source | alpha (joint) | beta (joint) | delta (joint) |",
            "|---|---|---|---|",
        ]
        for s, f in all_fits.items():
            if f.joint.law is None:
                lines.append(f"| {s} | - | - | - |")
            else:
                law = f.joint.law
                lines.append(
                    f"| {s} | {_with_ci(law, 'alpha')} | {_with_ci(law, 'beta')} "
                    f"| {_with_ci(law, 'delta')} |"
                )
        lines += ["", f"![sources]({sources_png})", ""]
    lines += ["## Cost model of the budget answers", ""] + _cost_table(cost) + [""]
    lines += [
        (
            "Training FLOPs = 6 N x tokens seen, inference FLOPs = 2 N x (corpus tokens + query "
            "tokens); dollars = FLOPs / achieved FLOP/s / 3600 x accelerator $/hour "
            "(`densescale.scaling.CostModel`)."
        ),
        "",
    ]
    return atomic_write_text(out / "summary.md", "\n".join(lines))
