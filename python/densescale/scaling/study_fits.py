"""Fit orchestration of a study: every law per annotation source, with its checks and budget.

Per source, :func:`fit_study` fits the model-size law for every D with >= 3 model sizes, the
data-size law for every N with >= 3 data sizes, and both joint forms when there are enough cells;
each fit comes with bootstrap intervals, R^2 and (where enough points remain) an extrapolation
check that holds out the largest N (or D). A fit that cannot run is recorded with the reason
(too few points, or the FitError message) instead of stopping the report.
Records are described in :mod:`densescale.scaling.records`; the report that shows these fits is
written by :mod:`densescale.scaling.summary` (figures: :mod:`densescale.scaling.plots`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ._checks import nonneg_int, positive_number
from .budget import Allocation, CostModel, optimal_allocation
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
from .records import cells_of, check_records

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
    recs = check_records(records)
    if cost is not None and not isinstance(cost, CostModel):
        raise TypeError(f"cost must be a CostModel or None, got {type(cost).__name__}")
    if budget is not None:
        budget = positive_number("budget", budget)
    nonneg_int("n_boot", n_boot)
    nonneg_int("seed", seed)
    cost = cost or CostModel()
    out = {}
    for source in sorted({r["source"] for r in recs}):
        cells = cells_of(recs, source)
        out[source] = _fit_source(source, cells, n_boot, seed, cost, budget)
    return out
