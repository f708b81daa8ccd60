"""Fit orchestration of a study: every law per annotation source, with its checks and budget.

Per source, :func:`fit_study` fits, at each embedding dimension d:

- the model-size law ``L(N)`` for every D with >= 3 model sizes,
- the data-size law ``L(D)`` for every N with >= 3 data sizes,
- both joint forms ``L(N, D)`` (at the d with the most cells) when there are enough cells,

and across dimensions the dimension law ``L(d)`` for every (N, D) with >= 3 values of d and the
joint ``L(N, d)`` at the D with the most cells. Each fit comes with bootstrap intervals, R^2 and
(where enough points remain) a forecast check: the law refitted without the largest size (or
two), asked to forecast the held-out cells with intervals. A fit that cannot run is recorded with
the reason (too few points, bad input) instead of stopping the report; a fit that raised a
FitError with its best law (a parameter on a bound) keeps that law for the record.

Every law is then judged by :func:`densescale.scaling.check_law` against ``checks``
(:class:`~densescale.scaling.LawChecks`: R^2, no parameter on a bound, points per parameter,
interval widths, the forecast check; SPEC 7): each :class:`FitOutcome` carries its verdict, and
budget answers, predictions and drawn curves come only from usable laws, else the reason.

Cells near chance (CE >= 0.9 ln(K+1)) never enter a fit; unconverged cells stay out unless
``include_unconverged``; each exclusion is listed. Over every cell of the study, a map from CE
to each ranking metric (:class:`~densescale.scaling.MetricMap`) is fitted too.
Records are described in :mod:`densescale.report.records`, the results in
:mod:`densescale.report.outcomes`; the fits themselves are the pure functions of
:mod:`densescale.scaling`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from densescale.scaling import (
    CostModel,
    FitError,
    LawChecks,
    MetricMap,
    check_law,
    fit_data_law,
    fit_dim_law,
    fit_joint_law,
    fit_metric_map,
    fit_model_dim_law,
    fit_model_law,
    forecast_check,
    optimal_allocation,
)
from densescale.scaling._checks import nonneg_int, positive_number
from densescale.scaling.fitting import DEFAULT_N_BOOT

from .exchange import study_exchange
from .outcomes import FitOutcome, SourceFits
from .records import cells_of, check_records, exclusion_reasons
from .yardsticks import YardstickOptions, source_yardsticks

# where the budget answer is searched, relative to the sizes measured: the laws are fitted there
# and extrapolating them by more than ~3 decades is not something a report should recommend
_SEARCH_DECADES_BELOW = 1.0
_SEARCH_DECADES_ABOVE = 3.0


_FIT_ERROR = "FitError: "


def _try_fit(kind: str, fixed: dict, n_points: int, fit, check, excluded=()) -> FitOutcome:
    """Fit one law and its forecast check. A FitError that carries its best law (a parameter
    on a bound, no convergence) keeps that law for the record, with the error as ``caveat``:
    :func:`_judged` then marks it not usable."""
    excluded = tuple(excluded)
    try:
        law = fit()
    except FitError as exc:
        if exc.law is None:
            return FitOutcome(kind, fixed, n_points, error=f"not fitted: {exc}", excluded=excluded)
        note = "the fit itself failed its checks"
        caveat = _FIT_ERROR + exc.reason
        return FitOutcome(kind, fixed, n_points, exc.law, "", None, note, caveat, excluded)
    except ValueError as exc:
        return FitOutcome(kind, fixed, n_points, error=f"not fitted: {exc}", excluded=excluded)
    try:
        extrapolation, note = check(), ""
    except ValueError:
        extrapolation, note = None, "too few points to hold the largest size out"
    except FitError as exc:
        extrapolation, note = None, f"fit without the largest size failed: {exc}"
    return FitOutcome(kind, fixed, n_points, law, "", extrapolation, note, "", excluded)


def _judged(o: FitOutcome | None, checks: LawChecks) -> FitOutcome | None:
    """``o`` with the verdict of :func:`~densescale.scaling.check_law` on its law (SPEC 7)."""
    if o is None or o.law is None:
        return o
    fit_error = o.caveat[len(_FIT_ERROR) :] if o.caveat.startswith(_FIT_ERROR) else ""
    verdict = check_law(o.law, checks, forecast=o.extrapolation, fit_error=fit_error)
    return replace(o, usability=verdict)


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
        out[kind] = _two_axis_fit(
            kind,
            fixed,
            notes,
            {"N": N, "D": D},
            ce,
            lambda form=form: fit_joint_law(N, D, ce, form=form, **opts),
            lambda form=form: forecast_check(ce, N=N, D=D, holdout="N", form=form, **opts),
            need="need >= 5 cells, >= 2 of each",
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
    return _two_axis_fit(
        "model_dim",
        fixed,
        notes,
        {"N": N, "d": dim},
        ce,
        lambda: fit_model_dim_law(N, dim, ce, D=best, **opts),
        lambda: forecast_check(ce, N=N, d=dim, holdout="N", **opts),
        need="need >= 5, >= 2 of each",
    )


def _two_axis_fit(kind, fixed, notes, sizes: dict, ce, fit, check, *, need: str) -> FitOutcome:
    """A law of two sizes over one slice, or why it was skipped (< 5 cells, < 2 of a size)."""
    distinct = {k: len(np.unique(v)) for k, v in sizes.items()}
    if len(ce) < 5 or min(distinct.values()) < 2:
        over = " x ".join(f"{n} {k}" for k, n in distinct.items())
        error = f"skipped: {len(ce)} cells over {over}; {need}"
        return FitOutcome(kind, fixed, len(ce), error=error, excluded=notes)
    return _try_fit(kind, fixed, len(ce), fit, check, notes)


def _as_arrays(cells: list[dict]) -> dict:
    return {
        "list": cells,
        "N": np.array([c["N"] for c in cells], dtype=float),
        "D": np.array([c["D"] for c in cells], dtype=float),
        "d": np.array([np.nan if c["d"] is None else c["d"] for c in cells], dtype=float),
        "dim": np.array([np.nan if c["d"] is None else c["d"] for c in cells], dtype=float),
        "ce": np.array([c["ce"] for c in cells], dtype=float),
    }


def _fit_source(
    source, recs, n_boot, seed, cost, budget, memory_budget, include_unconverged, checks=None
):
    checks = LawChecks() if checks is None else checks
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
    # SPEC 7: every law is judged before anything answers from it
    model_fits, data_fits, dim_fits = (
        [_judged(o, checks) for o in group] for group in (model_fits, data_fits, dim_fits)
    )
    joint, chinchilla, model_dim = (_judged(o, checks) for o in (joint, chinchilla, model_dim))
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
        checks=checks,
        cost=cost,
    )
    fits = _with_budget(fits, cost, budget)
    return _with_memory_budget(fits, cost, budget, memory_budget)


def _search_range(sizes: np.ndarray) -> tuple[float, float]:
    """Where a budget answer may put a size: the measured range, widened by the decades above."""
    return (
        float(sizes.min() / 10**_SEARCH_DECADES_BELOW),
        float(sizes.max() * 10**_SEARCH_DECADES_ABOVE),
    )


def _with_budget(fits: SourceFits, cost: CostModel, budget: float | None) -> SourceFits:
    law = fits.budget_law
    if law is None:
        return replace(fits, budget_note=_no_law_note(fits.joint, fits.chinchilla, "budget"))
    box = {"N_bounds": _search_range(fits.N), "D_bounds": _search_range(fits.D)}
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


def _no_law_note(joint, chinchilla, what: str) -> str:
    """Why there is no answer: the joint law's own reason (and the additive form's, if fitted)."""
    if joint.law is None and (chinchilla is None or chinchilla.law is None):
        return f"no {what} answer: no joint law could be fitted ({joint.error or 'not fitted'})"
    note = f"no {what} answer: the joint law (paper form) is {_why(joint)}"
    if chinchilla is not None and chinchilla.law is not None:
        note += f"; the additive form is {_why(chinchilla)}"
    return note


def _why(o: FitOutcome) -> str:
    if o.law is None:
        return o.error or "not fitted"
    return o.usability.line if o.usability is not None else "not checked"


def _with_memory_budget(fits, cost, budget, memory_budget) -> SourceFits:
    o = fits.model_dim
    if o is None or o.law is None:
        return fits
    if not o.usable:
        note = f"no memory answer: the model-dimension law is {_why(o)}"
        return replace(fits, memory_note=note)
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
            N_bounds=_search_range(fits.N),
            d_bounds=(float(dims.min() / 4), float(dims.max() * 4)),
        )
    except ValueError as exc:
        return replace(fits, memory_budget=memory_budget, memory_note=f"no answer: {exc}")
    return replace(fits, allocation_dim=answer, memory_budget=memory_budget, memory_note=note)


def collection_cost(recs: list[dict], cost: CostModel | None) -> tuple[CostModel, dict]:
    """The cost model of a study's budget answers and where each assumption came from.

    A given ``cost`` is used as it is. Otherwise :class:`CostModel` defaults, with the corpus
    size of the collection the cells were evaluated on when the records give it (``corpus_size``
    or the evaluation's ``num_passages``): an index of 8.8M MS MARCO passages is not the cost of
    serving a 50k-passage collection. Queries served stays an assumption, said so.
    """
    if cost is not None:
        return cost, {"all": "given by the caller"}
    sizes = [r["corpus_size"] for r in recs if r.get("corpus_size")]
    queries = CostModel().queries_served
    sources = {"queries_served": f"assumption: {queries:.3g} queries over the model's life"}
    known = {}
    # a [pretrain] stage: its tokens are spent once per model, whatever D (issue 18)
    pretrained = [r["pretrain"]["tokens"] for r in recs if r.get("pretrain")]
    if pretrained:
        known["pretrain_tokens"] = float(max(pretrained))
        sources["pretrain_tokens"] = "from the records: the pretraining stage's tokens"
    if sizes:
        known["corpus_size"] = float(max(sizes))
        sources["corpus_size"] = "from the records: the collection's corpus, searched at inference"
    else:
        sources["corpus_size"] = "assumption: MS MARCO's size; the records give no corpus size"
    return CostModel(**known), sources


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
    yardsticks: YardstickOptions | None = None,
    checks: LawChecks | None = None,
) -> dict[str, SourceFits]:
    """Fit every law for every annotation source of ``records`` (see the module docstring).

    Args:
        records: result records (see :mod:`densescale.report.records`).
        cost: the cost model for the budget answer (default: ``CostModel()``, documented there,
            with ``corpus_size`` taken from the records' evaluated corpus when they give it;
            ``SourceFits.cost_sources`` says where each value came from).
        budget: dollars (default: what the largest measured cell costs under ``cost``).
        n_boot, seed: bootstrap refits and seed of every fit (and of the forecast checks and the
            CE-to-metric maps).
        include_unconverged: also fit cells that stopped at the step cap (left out by default).
            Cells near chance are always left out.
        memory_budget: serving-memory bytes for the (N, d) answer when the study varies d
            (default: the largest index and encoder measured).
        checks: the thresholds a law must pass before it answers anything (SPEC 7; default
            :class:`~densescale.scaling.LawChecks`, documented there). Every outcome carries
            its verdict (``usability``); budget answers, predictions and curves come only from
            usable laws.
        yardsticks: thresholds of the rank agreement of CE and the ranking metrics and of the
            seed noise (default :class:`~densescale.report.yardsticks.YardstickOptions`).

    Returns:
        source -> :class:`SourceFits`, sources in sorted order; every source but ``human``
        carries its exchange rate against ``human`` (``SourceFits.exchange``,
        :mod:`densescale.report.exchange`) when the study has human annotations.
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
    if yardsticks is not None and not isinstance(yardsticks, YardstickOptions):
        raise TypeError(
            f"yardsticks must be a YardstickOptions or None, got {type(yardsticks).__name__}"
        )
    if checks is not None and not isinstance(checks, LawChecks):
        raise TypeError(f"checks must be a LawChecks or None, got {type(checks).__name__}")
    cost, cost_sources = collection_cost(recs, cost)
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
            checks,
        )
        fits = replace(fits, metric_maps=maps, cost_sources=cost_sources)
        sticks = source_yardsticks(
            fits,
            [r for r in recs if r["source"] == source],
            include_unconverged=include_unconverged,
            options=yardsticks,
            seed=seed,
        )
        out[source] = replace(fits, yardsticks=sticks)
    # the third question: every source against human annotations, at one model size
    for source, exchange in study_exchange(out, seed=seed).items():
        out[source] = replace(out[source], exchange=exchange)
    return out
