"""Fit orchestration of a study: every law per annotation source, with its checks and budget.

Per source, :func:`fit_study` fits, at each embedding dimension d:

- the model-size law ``L(N)`` for every D with >= 3 model sizes,
- the data-size law ``L(D)`` for every N with >= 3 data sizes,
- both joint forms ``L(N, D)`` (at the d with the most cells) when there are enough cells,

and across dimensions the dimension law ``L(d)`` for every (N, D) with >= 3 values of d and the
joint ``L(N, d)`` at the D with the most cells. Each fit comes with bootstrap intervals, R^2 and
(where enough points remain) a forecast check: the law refitted without the largest size (or
two), asked to forecast the held-out cells with intervals. A fit that cannot run is recorded with
the reason (too few points, or the FitError message) instead of stopping the report.

Cells near chance (CE >= 0.9 ln(K+1)) never enter a fit; unconverged cells stay out unless
``include_unconverged``; each exclusion is listed. Over every cell of the study, a map from CE
to each ranking metric (:class:`~densescale.scaling.MetricMap`) is fitted too.
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
    FitError,
    ForecastCheck,
    fit_data_law,
    fit_dim_law,
    fit_joint_law,
    fit_model_dim_law,
    fit_model_law,
    forecast_check,
)
from .laws import ChinchillaLaw, JointLaw, Law
from .metric_map import MetricMap, fit_metric_map
from .records import cells_of, check_records, exclusion_reasons

# where the budget answer is searched, relative to the sizes measured: the laws are fitted there
# and extrapolating them by more than ~3 decades is not something a report should recommend
_SEARCH_DECADES_BELOW = 1.0
_SEARCH_DECADES_ABOVE = 3.0
# the ranking metrics every CE is also shown in (when the records carry them)
QUOTED_METRICS = ("mrr@10", "ndcg@10")

_LABELS = {
    "model": "model-size",
    "data": "data-size",
    "joint": "joint",
    "chinchilla": "additive joint",
    "dim": "dimension",
    "model_dim": "model-dimension",
}


@dataclass(frozen=True, eq=False)  # holds arrays: identity equality
class FitOutcome:
    """One attempted fit.

    Attributes:
        kind: "model" (L(N) at fixed D, d), "data" (L(D) at fixed N, d), "joint" or
            "chinchilla" (L(N, D) at fixed d), "dim" (L(d) at fixed N, D) or "model_dim"
            (L(N, d) at fixed D).
        fixed: the fixed coordinates, e.g. {"D": 10000, "d": 768} for a model-size fit ("d" only
            when the records give it).
        n_points: distinct points available.
        law: the fitted law, or None.
        error: "" when fitted; otherwise why not (too few points, FitError message).
        extrapolation: the forecast check (fitted without the largest sizes), or None.
        extrapolation_note: why there is no check ("" when there is one).
        caveat: set when the law shown is a boundary fit: the only FitError was an irreducible
            term pinned at its lower bound (no floor visible over the measured range), so the
            best fit is kept, as a pure power law, with this warning instead of being dropped.
        excluded: one note per cell of this slice left out of the fit (near chance, not
            converged), with the reason.
    """

    kind: str
    fixed: dict
    n_points: int
    law: Law | None = None
    error: str = ""
    extrapolation: ForecastCheck | None = None
    extrapolation_note: str = ""
    caveat: str = ""
    excluded: tuple[str, ...] = ()

    @property
    def forecast(self) -> ForecastCheck | None:
        """The forecast check (same as ``extrapolation``)."""
        return self.extrapolation

    @property
    def label(self) -> str:
        """E.g. "model-size law at D = 10,000, d = 768"."""
        where = ", ".join(f"{k} = {v:,}" for k, v in self.fixed.items())
        return f"{_LABELS.get(self.kind, self.kind)} law" + (f" at {where}" if where else "")

    def forecast_line(self) -> str:
        """One line: the forecast check, or why there is none."""
        if self.extrapolation is not None:
            return self.extrapolation.describe()
        return f"forecast: n/a ({self.extrapolation_note or 'not fitted'})"

    def excluded_line(self) -> str:
        """One line: how many cells were left out and why ("" when none)."""
        if not self.excluded:
            return ""
        reasons: dict[str, int] = {}
        for note in self.excluded:
            for reason in note.split(": ", 1)[-1].split("; "):
                key = reason.split(" (", 1)[0]
                reasons[key] = reasons.get(key, 0) + 1
        why = ", ".join(f"{v} {k}" for k, v in reasons.items())
        return f"{len(self.excluded)} cell(s) left out: {why}"


@dataclass(frozen=True, eq=False)  # holds arrays: identity equality
class SourceFits:
    """Everything fitted for one annotation source.

    Attributes:
        source: annotation source name.
        N, D, ce: (m,) the averaged cells that entered the fits; ``runs``: (m,) records per cell;
            ``dims``: (m,) their embedding dimension (NaN where the records give none).
        models: N -> model name (first seen).
        metrics: every cell of the source (fitted or not), as dicts: model, checkpoint, N, D, d,
            runs, ce, metrics, chance_ce, oracle_ce, converged, near_chance, flags, seen_bias,
            and ``excluded`` (the reasons it was left out, [] when fitted).
        model_fits: one :class:`FitOutcome` per (D, d); data_fits: one per (N, d);
            dim_fits: one per (N, D) with >= 2 dimensions.
        joint, chinchilla: the joint fits of N and D (paper form, additive form).
        model_dim: the joint fit of N and d.
        allocation, allocation_no_inference: the budget answer with and without inference cost,
            or None; ``budget_note`` says why not or what was assumed.
        allocation_dim: the (N, d) answer under the memory budget ``memory_budget`` (bytes).
        excluded: one note per cell left out of every fit, with the reason.
        metric_maps: metric -> the CE-to-metric map over every cell of the study.
        chance_ce, oracle_ce: the yardsticks of the source's records (None when unknown).
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
    dims: np.ndarray | None = None
    dim_fits: list = field(default_factory=list)
    model_dim: FitOutcome | None = None
    allocation_dim: Allocation | None = None
    memory_budget: float | None = None
    memory_note: str = ""
    excluded: list = field(default_factory=list)
    metric_maps: dict = field(default_factory=dict)
    chance_ce: float | None = None
    oracle_ce: float | None = None
    include_unconverged: bool = False

    @property
    def main_dim(self) -> int | None:
        """The embedding dimension of the N-D laws (the joint fits' d), None when unknown."""
        return self.joint.fixed.get("d")

    @property
    def main_mask(self) -> np.ndarray:
        """(m,) bool: the fitted cells at :attr:`main_dim` (all of them when d is unknown)."""
        if self.main_dim is None or self.dims is None:
            return np.ones(len(self.ce), dtype=bool)
        return self.dims == self.main_dim

    @property
    def cells(self) -> list:
        """Every cell of the source (same as ``metrics``)."""
        return self.metrics

    def describe(self) -> str:
        """A few lines for a terminal: the joint law, the model-size law at the largest D, the
        data-size and dimension laws, each with its forecast check and the cells left out, and
        the budget answer (what fitted of those)."""
        fitted = any(o.law is not None for o in self.all_outcomes)
        head = f"[{self.source}] {len(self.ce)} cells " + (
            "fitted" if fitted else "(no law fitted)"
        )
        if self.excluded:
            head += f", {len(self.excluded)} left out"
        if self.chance_ce is not None:
            head += f" (chance ln(K+1) = {self.chance_ce:.4g} nats)"
        lines = [head]

        def add(o: FitOutcome, label: str) -> None:
            text = o.law.describe() if o.law is not None else o.error
            lines.append(f"  {label}: {text}" + (f" [{o.caveat}]" if o.caveat else ""))
            if o.law is not None:
                lines.append(f"      {o.forecast_line()}")
            if o.excluded:
                lines.append(f"      {o.excluded_line()}")

        joint = self.joint if self.joint.law is not None or self.chinchilla.law is None else None
        add(joint or self.chinchilla, "joint" if joint else "additive joint")
        for label, outcomes, key in (
            ("model-size", self.model_fits, "D"),
            ("data-size", self.data_fits, "N"),
            ("dimension", self.dim_fits, "N"),
        ):
            fitted = [o for o in outcomes if o.law is not None]
            if fitted:
                o = max(fitted, key=lambda o: (o.fixed[key], o.n_points))
                where = ", ".join(f"{k} = {v:,}" for k, v in o.fixed.items())
                add(o, f"{label} at {where}")
            elif outcomes or label != "dimension":
                why = next((o.error for o in outcomes if o.error), None)
                lines.append(f"  {label}: no fit" + (f" ({why})" if why else ""))
        if self.model_dim is not None and self.model_dim.law is not None:
            add(self.model_dim, "model-dimension")
        a = self.allocation
        if a is not None:
            lines.append(
                f"  budget ${a.budget:,.0f}: N = {a.N:.3g}, D = {a.D:.3g}, predicted CE "
                f"{a.loss:.4f}{self._metric_text(a.loss)} (with inference cost)"
            )
        if self.allocation_dim is not None:
            b = self.allocation_dim
            lines.append(
                f"  memory {b.memory_budget / 1e9:.3g} GB: N = {b.N:.3g}, d = {b.d:.0f}, "
                f"predicted CE {b.loss:.4f}{self._metric_text(b.loss)}"
            )
        return "\n".join(lines)

    def _metric_text(self, ce: float) -> str:
        m = self.metric_maps.get("mrr@10")
        if m is None:
            return ""
        v, lo, hi = m.interval(ce)
        band = f" [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else ""
        return f", MRR@10 ~ {v:.3f}{band}"

    def in_metrics(
        self, ce: float, ce_lo: float | None = None, ce_hi: float | None = None
    ) -> dict[str, tuple[float, float, float]]:
        """A CE (with its interval) in each quoted ranking metric: metric -> (value, lo, hi),
        through the study's CE-to-metric maps; lo/hi are NaN without a bootstrap."""
        return {
            k: self.metric_maps[k].interval(ce, ce_lo, ce_hi)
            for k in QUOTED_METRICS
            if k in self.metric_maps
        }

    @property
    def budget_law(self) -> JointLaw | ChinchillaLaw | None:
        """The joint law the budget answer uses: the paper's form, else the additive one."""
        for outcome in (self.joint, self.chinchilla):
            if outcome.law is not None:
                return outcome.law
        return None

    @property
    def all_outcomes(self) -> list[FitOutcome]:
        """Every attempted fit, in report order."""
        extra = [self.model_dim] if self.model_dim is not None else []
        return [
            *self.model_fits,
            *self.data_fits,
            self.joint,
            self.chinchilla,
            *self.dim_fits,
            *extra,
        ]


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


def _try_fit(kind: str, fixed: dict, n_points: int, fit, check, excluded=()) -> FitOutcome:
    excluded = tuple(excluded)
    try:
        law = fit()
    except FitError as exc:
        if not _floor_only(exc):
            return FitOutcome(kind, fixed, n_points, error=f"not fitted: {exc}", excluded=excluded)
        caveat = (
            "delta at its lower bound: no irreducible loss visible over this range, shown "
            "as a pure power law (no bootstrap intervals)"
        )
        return FitOutcome(
            kind, fixed, n_points, exc.law, "", None, "boundary fit", caveat, excluded
        )
    except ValueError as exc:
        return FitOutcome(kind, fixed, n_points, error=f"not fitted: {exc}", excluded=excluded)
    try:
        extrapolation, note = check(), ""
    except ValueError:
        extrapolation, note = None, "too few points to hold the largest size out"
    except FitError as exc:
        extrapolation, note = None, f"fit without the largest size failed: {exc}"
    return FitOutcome(kind, fixed, n_points, law, "", extrapolation, note, "", excluded)


def _n_holdout(n_values: int) -> int:
    """Hold out the largest two sizes when at least 4 remain to fit (3 parameters + 1)."""
    return 2 if n_values >= 6 else 1


_SINGLE = {
    "model": (fit_model_law, "N", "model size(s)"),
    "data": (fit_data_law, "D", "data size(s)"),
    "dim": (fit_dim_law, "d", "embedding dimension(s)"),
}


def _per_slice_fits(kind: str, cells: dict, fixed_names: tuple, opts, excluded) -> list:
    """One single-variable law per value of the fixed coordinates: L(N) at each (D, d), L(D) at
    each (N, d), L(d) at each (N, D); slices with fewer than 3 sizes are recorded as skipped."""
    fit, varied, what = _SINGLE[kind]
    keys = [tuple(c[k] for k in fixed_names) for c in cells["list"]]
    out = []
    for key in sorted(set(keys), key=lambda k: tuple(-1 if v is None else v for v in k)):
        sel = np.array([k == key for k in keys])
        label = {k: int(v) for k, v in zip(fixed_names, key) if v is not None and k != "model"}
        if "model" in fixed_names:  # the slice's N: the encoder at its largest dimension
            label = {"N": int(cells["N"][sel].max()), **label}
        x, y = cells[varied][sel], cells["ce"][sel]
        k = len(np.unique(x))
        notes = [
            note
            for coords, note in excluded
            if all(coords[n] == v for n, v in zip(fixed_names, key))
        ]
        if kind == "dim" and k < 2:
            continue  # one d per (N, D): no dimension axis here, nothing to report
        if k < 3:
            out.append(
                FitOutcome(
                    kind, label, k, error=f"skipped: {k} {what}, need 3", excluded=tuple(notes)
                )
            )
            continue
        nh = _n_holdout(k)
        out.append(
            _try_fit(
                kind,
                label,
                k,
                lambda x=x, y=y: fit(x, y, **opts),
                lambda x=x, y=y, nh=nh: forecast_check(y, **{varied: x}, n_holdout=nh, **opts),
                notes,
            )
        )
    return out


def _joint_fits(cells: dict, opts, excluded) -> tuple[FitOutcome, FitOutcome]:
    """Both L(N, D) forms at the embedding dimension with the most cells (the largest on ties)."""
    dims = [c["d"] for c in cells["list"]]
    counts = {v: dims.count(v) for v in set(dims)}
    best = max(counts, key=lambda v: (counts[v], -1 if v is None else v)) if counts else None
    sel = np.array([v == best for v in dims], dtype=bool)
    N, D, ce = cells["N"][sel], cells["D"][sel], cells["ce"][sel]
    fixed = {} if best is None else {"d": int(best)}
    notes = tuple(note for coords, note in excluded if coords["d"] == best)
    out = {}
    for form in ("paper", "chinchilla"):
        kind = "joint" if form == "paper" else "chinchilla"
        n_n, n_d = len(np.unique(N)), len(np.unique(D))
        if len(ce) < 5 or n_n < 2 or n_d < 2:
            out[kind] = FitOutcome(
                kind,
                fixed,
                len(ce),
                error=(
                    f"skipped: {len(ce)} cells over {n_n} N x {n_d} D; need >= 5 cells, >= 2 of "
                    "each"
                ),
                excluded=notes,
            )
            continue
        out[kind] = _try_fit(
            kind,
            fixed,
            len(ce),
            lambda form=form: fit_joint_law(N, D, ce, form=form, **opts),
            lambda form=form: forecast_check(ce, N=N, D=D, holdout="N", form=form, **opts),
            notes,
        )
    return out["joint"], out["chinchilla"]


def _model_dim_fit(cells: dict, opts, excluded) -> FitOutcome | None:
    """L(N, d) at the data size with the most cells, when the study varies d."""
    dims = [c["d"] for c in cells["list"]]
    if len({v for v in dims if v is not None}) < 2:
        return None
    known = np.array([v is not None for v in dims])
    d_sizes = cells["D"][known]
    values, counts = np.unique(d_sizes, return_counts=True)
    best = float(values[np.lexsort((values, counts))[-1]])
    sel = known & (cells["D"] == best)
    N, dim, ce = cells["N"][sel], cells["dim"][sel], cells["ce"][sel]
    fixed = {"D": int(best)}
    notes = tuple(note for coords, note in excluded if coords["D"] == best)
    n_n, n_d = len(np.unique(N)), len(np.unique(dim))
    if len(ce) < 5 or n_n < 2 or n_d < 2:
        return FitOutcome(
            "model_dim",
            fixed,
            len(ce),
            error=f"skipped: {len(ce)} cells over {n_n} N x {n_d} d; need >= 5, >= 2 of each",
            excluded=notes,
        )
    return _try_fit(
        "model_dim",
        fixed,
        len(ce),
        lambda: fit_model_dim_law(N, dim, ce, D=best, **opts),
        lambda: forecast_check(ce, N=N, d=dim, holdout="N", **opts),
        notes,
    )


def _as_arrays(cells: list[dict]) -> dict:
    return {
        "list": cells,
        "N": np.array([c["N"] for c in cells], dtype=float),
        "D": np.array([c["D"] for c in cells], dtype=float),
        "d": np.array([np.nan if c["d"] is None else c["d"] for c in cells], dtype=float),
        "dim": np.array([np.nan if c["d"] is None else c["d"] for c in cells], dtype=float),
        "ce": np.array([c["ce"] for c in cells], dtype=float),
    }


def _fit_source(source, recs, n_boot, seed, cost, budget, memory_budget, include_unconverged):
    kept, left_out = [], {}
    for r in recs:
        reasons = exclusion_reasons(r, include_unconverged=include_unconverged)
        if reasons:
            left_out.setdefault((r["N"], r["D"], r["d"]), []).append("; ".join(reasons))
        else:
            kept.append(r)
    every = cells_of(recs, source)
    excluded = []  # (coords, note) per cell with any run left out
    for c in every:
        reasons = left_out.get((c["N"], c["D"], c["d"]), [])
        c["excluded"] = sorted(set(reasons))
        if reasons:
            where = f"N = {c['N']:,}, D = {c['D']:,}" + (
                f", d = {c['d']:,}" if c["d"] is not None else ""
            )
            runs = "" if len(reasons) == c["runs"] else f"{len(reasons)} of {c['runs']} runs, "
            note = f"{c['model']} ({where}): {runs}{'; '.join(sorted(set(reasons)))}"
            excluded.append(({"N": c["N"], "D": c["D"], "d": c["d"], "model": c["model"]}, note))
    cells = _as_arrays(cells_of(kept, source))
    opts = {"n_boot": n_boot, "seed": seed}

    model_fits = _per_slice_fits("model", cells, ("D", "d"), opts, excluded)
    data_fits = _per_slice_fits("data", cells, ("N", "d"), opts, excluded)
    # one encoder across dimensions: its N grows with d (the head), so slice by model, not N
    dim_fits = _per_slice_fits("dim", cells, ("model", "D"), opts, excluded)
    joint, chinchilla = _joint_fits(cells, opts, excluded)
    model_dim = _model_dim_fit(cells, opts, excluded)
    chance = [c["chance_ce"] for c in every if c["chance_ce"] is not None]
    oracle = [c["oracle_ce"] for c in every if c["oracle_ce"] is not None]
    fits = SourceFits(
        source=source,
        N=cells["N"],
        D=cells["D"],
        ce=cells["ce"],
        runs=np.array([c["runs"] for c in cells["list"]], dtype=int),
        models={c["N"]: c["model"] for c in reversed(every)},  # first name seen wins
        metrics=every,
        model_fits=model_fits,
        data_fits=data_fits,
        joint=joint,
        chinchilla=chinchilla,
        dims=cells["dim"],
        dim_fits=dim_fits,
        model_dim=model_dim,
        excluded=[note for _, note in excluded],
        chance_ce=float(np.max(chance)) if chance else None,
        oracle_ce=float(np.mean(oracle)) if oracle else None,
        include_unconverged=include_unconverged,
    )
    fits = _with_budget(fits, cost, budget)
    return _with_memory_budget(fits, cost, budget, memory_budget)


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


def _with_memory_budget(fits, cost, budget, memory_budget) -> SourceFits:
    o = fits.model_dim
    if o is None or o.law is None:
        return fits
    dims = fits.dims[np.isfinite(fits.dims)]
    note = ""
    if memory_budget is None:
        memory_budget = float(cost.serving_bytes(fits.N.max(), dims.max()))
        note = (
            "memory budget not given: the index of the largest d measured plus the largest "
            f"encoder ({cost.corpus_size:.3g} passages x d x {cost.bytes_per_value:g} bytes + "
            f"N x {cost.bytes_per_param:g} bytes)"
        )
    try:
        answer = optimal_allocation(
            o.law,
            cost,
            None,
            memory_budget=memory_budget,
            N_bounds=(
                float(fits.N.min() / 10**_SEARCH_DECADES_BELOW),
                float(fits.N.max() * 10**_SEARCH_DECADES_ABOVE),
            ),
            d_bounds=(float(dims.min() / 4), float(dims.max() * 4)),
        )
    except ValueError as exc:
        return replace(fits, memory_budget=memory_budget, memory_note=f"no answer: {exc}")
    return replace(fits, allocation_dim=answer, memory_budget=memory_budget, memory_note=note)


def fit_metric_maps(
    records: Sequence[Mapping], *, n_boot: int = DEFAULT_N_BOOT, seed: int = 0
) -> dict[str, MetricMap]:
    """The CE-to-metric map of every ranking metric over every cell of ``records`` (all sources,
    fitted or left out: the map is about the measurement, not the laws); metrics with fewer than
    3 cells or a failed fit are skipped. Returns metric -> :class:`MetricMap`."""
    cells = cells_of(check_records(records))
    names = sorted({k for c in cells for k in c["metrics"]})
    maps = {}
    for name in names:
        pts = [(c["ce"], c["metrics"][name]) for c in cells if name in c["metrics"]]
        if len(pts) < 3:
            continue
        ce, v = (np.array(x, dtype=float) for x in zip(*pts))
        if np.any(v < 0) or np.any(v > 1):
            continue
        try:
            maps[name] = fit_metric_map(ce, v, metric=name, n_boot=n_boot, seed=seed)
        except (ValueError, FitError):
            continue
    return maps


def fit_study(
    records: Sequence[Mapping],
    *,
    cost: CostModel | None = None,
    budget: float | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    include_unconverged: bool = False,
    memory_budget: float | None = None,
) -> dict[str, SourceFits]:
    """Fit every law for every annotation source of ``records`` (see the module docstring).

    Args:
        records: result records (see :mod:`densescale.scaling.records`).
        cost: the cost model for the budget answer (default: ``CostModel()``, documented there).
        budget: dollars (default: what the largest measured cell costs under ``cost``).
        n_boot, seed: bootstrap refits and seed of every fit (and of the forecast checks and the
            CE-to-metric maps).
        include_unconverged: also fit cells that stopped at the step cap (left out by default).
            Cells near chance are always left out.
        memory_budget: serving-memory bytes for the (N, d) answer when the study varies d
            (default: the largest index and encoder measured).

    Returns:
        source -> :class:`SourceFits`, sources in sorted order.
    """
    recs = check_records(records)
    if cost is not None and not isinstance(cost, CostModel):
        raise TypeError(f"cost must be a CostModel or None, got {type(cost).__name__}")
    if budget is not None:
        budget = positive_number("budget", budget)
    if memory_budget is not None:
        memory_budget = positive_number("memory_budget", memory_budget)
    if not isinstance(include_unconverged, bool):
        raise TypeError(
            f"include_unconverged must be a bool, got {type(include_unconverged).__name__}"
        )
    nonneg_int("n_boot", n_boot)
    nonneg_int("seed", seed)
    cost = cost or CostModel()
    maps = fit_metric_maps(recs, n_boot=n_boot, seed=seed)
    out = {}
    for source in sorted({r["source"] for r in recs}):
        fits = _fit_source(
            source,
            [r for r in recs if r["source"] == source],
            n_boot,
            seed,
            cost,
            budget,
            memory_budget,
            include_unconverged,
        )
        out[source] = replace(fits, metric_maps=maps)
    return out
