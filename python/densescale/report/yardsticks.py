"""The yardsticks of every slice of a source: does CE order the cells as the ranking metrics do
(:mod:`~densescale.report.agreement`), which quantity follows a law (CE or the metric), and are
adjacent sizes further apart than two seeds of one cell (:mod:`~densescale.report.noise`).

The slices are those of :func:`~densescale.report.fit_study`: the model sizes at each (D, d) and
the data sizes at each (N, d), over the cells the laws were fitted on (records near chance, and
unconverged unless ``include_unconverged``, left out), with >= 3 sizes.

The laws in the ranking metric: the same :func:`~densescale.scaling.fit_model_law` /
:func:`~densescale.scaling.fit_data_law` fitted to ``1 - m`` (:data:`METRIC_LAW_TRANSFORM`),
without bootstrap. ``1 - m`` is the metric's error, which falls with size like a loss, with the
law's delta the error no size removes (1 - the best reachable metric); unlike ``-log m`` it is
defined for m = 0 (a small model whose MRR@10 is 0) and keeps the metric's own scale, so its R^2
reads as the fraction of the metric's variance over the slice the law explains, beside the CE
law's R^2 on CE. Where a law holds in the metric and not in CE (or the reverse), the reader sees
which quantity scales; a metric of 1 in some cell (``1 - m = 0``) gets no law.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from densescale.scaling import fit_data_law, fit_model_law
from densescale.scaling.fitting import FitError

from .agreement import (
    AGREEMENT_MIN_TAU,
    MIN_AGREEMENT_CELLS,
    RankAgreement,
    metric_title,
    rank_agreement,
)
from .noise import (
    RESOLVE_FACTOR,
    Resolution,
    adjacent_resolution,
    median_spread,
    seed_spreads,
)
from .outcomes import QUOTED_METRICS
from .records import cells_of, exclusion_reasons

METRIC_LAW_TRANSFORM = "1 - m"
"""What the laws in a ranking metric m are fitted to (see the module docstring)."""

# describe() lists every slice up to this many; beyond, agreeing slices are one summary line
_DESCRIBE_ALL_SLICES = 3


@dataclass(frozen=True)
class YardstickOptions:
    """The thresholds of the yardsticks (documented in :mod:`~densescale.report.agreement` and
    :mod:`~densescale.report.noise`).

    Attributes:
        min_tau: flag a slice whose Kendall tau of -CE against a metric is below this.
        same_best: also flag a slice whose best cell by CE is not the best by the metric.
        resolve_factor: adjacent sizes are not resolved when factor x seed spread >= gap.
    """

    min_tau: float = AGREEMENT_MIN_TAU
    same_best: bool = True
    resolve_factor: float = RESOLVE_FACTOR

    def __post_init__(self) -> None:
        if isinstance(self.min_tau, bool) or not -1.0 <= float(self.min_tau) <= 1.0:
            raise ValueError(f"min_tau must be a number in [-1, 1], got {self.min_tau!r}")
        if not isinstance(self.same_best, bool):
            raise TypeError(f"same_best must be a bool, got {type(self.same_best).__name__}")
        if isinstance(self.resolve_factor, bool) or not float(self.resolve_factor) > 0:
            raise ValueError(f"resolve_factor must be > 0, got {self.resolve_factor!r}")


@dataclass(frozen=True)
class MetricLaw:
    """A law fitted to ``1 - m`` over one slice.

    Attributes:
        metric: e.g. "mrr@10"; transform: :data:`METRIC_LAW_TRANSFORM`.
        n_points: sizes fitted; law: the fitted law (None when not fitted).
        error: why not fitted ("" when fitted); caveat: e.g. a boundary fit, kept for its R^2.
    """

    metric: str
    n_points: int
    law: object | None = None
    error: str = ""
    caveat: str = ""
    transform: str = METRIC_LAW_TRANSFORM

    @property
    def r2(self) -> float | None:
        return None if self.law is None else float(self.law.r2)

    @property
    def quantity(self) -> str:
        """E.g. "1 - MRR@10"."""
        return f"1 - {metric_title(self.metric)}"

    def to_json(self) -> dict:
        d = {
            "metric": self.metric,
            "transform": self.transform,
            "points": self.n_points,
            "error": self.error,
        }
        if self.law is not None:
            d.update(formula=self.law.formula, params=self.law.params, r2=self.law.r2)
        if self.caveat:
            d["caveat"] = self.caveat
        return d


@dataclass(frozen=True)
class SliceYardsticks:
    """The yardsticks of one slice.

    Attributes:
        kind: "model" (model sizes at fixed D, d) or "data" (data sizes at fixed N, d).
        fixed: the fixed coordinates, as in the matching :class:`FitOutcome`.
        n_cells: cells of the slice.
        agreements: metric -> :class:`RankAgreement` (metrics with >= 3 cells).
        metric_laws: metric -> :class:`MetricLaw`.
        ce_r2: R^2 of the CE law of this slice (None when none fitted); ce_note: why none, or
            why the fitted law is not usable ("" when usable).
        resolutions: quantity ("ce", metric) -> :class:`Resolution` ({} when the seed spread is
            unknown).
    """

    kind: str
    fixed: dict
    n_cells: int
    agreements: dict
    metric_laws: dict
    ce_r2: float | None
    ce_note: str = ""
    resolutions: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """E.g. "model sizes at D = 10,689" ("data sizes at N = 3,704, d = 768")."""
        what = "model sizes" if self.kind == "model" else "data sizes"
        return f"{what} at " + ", ".join(f"{k} = {v:,}" for k, v in self.fixed.items())

    @property
    def ce_unusable(self) -> bool:
        """True when the slice's CE law was fitted but did not pass its checks."""
        return self.ce_r2 is not None and bool(self.ce_note)

    @property
    def agree(self) -> bool:
        return all(a.agree for a in self.agreements.values())

    @property
    def resolved(self) -> bool:
        return all(r.resolved for r in self.resolutions.values())

    @property
    def flagged(self) -> bool:
        return not (self.agree and self.resolved)

    def describe(self) -> str:
        """One line: every metric's agreement, the law R^2 when they disagree, and the seed
        noise when adjacent sizes are not resolved; starts with "!!" when flagged."""
        what = "models" if self.kind == "model" else "data sizes"
        parts = [a.describe(what) for a in self.agreements.values()]
        if not self.agree:
            ce = _r2(self.ce_r2, "law not fitted") + (" (not usable)" if self.ce_unusable else "")
            r2 = [f"CE {ce}"] + [
                f"{m.quantity} {_r2(m.r2, 'law not fitted')}" for m in self.metric_laws.values()
            ]
            parts.append("law R^2: " + ", ".join(r2))
        parts += [r.describe() for r in self.resolutions.values() if not r.resolved]
        if not parts:
            parts = ["no ranking metric in these cells"]
        return ("!! " if self.flagged else "") + f"{self.label}: " + "; ".join(parts)

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "fixed": self.fixed,
            "cells": self.n_cells,
            "agreement": {k: a.to_json() for k, a in self.agreements.items()},
            "ce_law_r2": self.ce_r2,
            "ce_law_note": self.ce_note,
            "metric_laws": {k: m.to_json() for k, m in self.metric_laws.items()},
            "seed_noise": {k: r.to_json() for k, r in self.resolutions.items()},
            "flagged": self.flagged,
            "text": self.describe(),
        }


@dataclass(frozen=True)
class SourceYardsticks:
    """The yardsticks of one annotation source: its slices and the seed spread of its cells.

    Attributes:
        source: the annotation source.
        options: the :class:`YardstickOptions` used.
        slices: one :class:`SliceYardsticks` per slice with >= 3 sizes (model slices first).
        spreads: one :class:`~densescale.report.noise.CellSpread` per fitted cell.
        metrics: the ranking metrics judged (e.g. ("mrr@10", "ndcg@10")).
    """

    source: str
    options: YardstickOptions
    slices: tuple
    spreads: tuple
    metrics: tuple

    @property
    def max_runs(self) -> int:
        return max((s.runs for s in self.spreads), default=0)

    @property
    def seed_spread_known(self) -> bool:
        """True when some cell has two runs or more."""
        return self.max_runs >= 2

    def median_spread(self, quantity: str = "ce") -> float | None:
        return median_spread(self.spreads, quantity)

    def noise_summary(self) -> str:
        """One phrase: the seed spread and how many slices it leaves unresolved, or that it is
        unknown."""
        if not self.spreads:
            return "seed spread: no fitted cells"
        if not self.seed_spread_known:
            return (
                "seed spread unknown (one run per cell): no gap between adjacent sizes can be "
                "told from seed noise"
            )
        multi = [s for s in self.spreads if s.runs >= 2]
        runs = sorted({s.runs for s in multi})
        runs_text = f"{runs[0]}" if len(runs) == 1 else f"{runs[0]}-{runs[-1]}"
        parts = [f"{self.median_spread('ce'):.3g} nats CE"]
        parts += [
            f"{v:.3g} {metric_title(m)}"
            for m in self.metrics
            if (v := self.median_spread(m)) is not None
        ]
        text = (
            f"seed spread median {', '.join(parts)} over {len(multi)} cells with {runs_text} runs"
        )
        judged = [s for s in self.slices if s.resolutions]
        bad = [s for s in judged if not s.resolved]
        if bad:
            return text + f"; adjacent sizes not resolved in {len(bad)} of {len(judged)} slices"
        return text + (f"; adjacent sizes resolved in all {len(judged)} slices" if judged else "")

    def agreement_summary(self) -> str:
        judged = [s for s in self.slices if s.agreements]
        if not judged:
            return "rank agreement: no slice with >= 3 cells carrying a ranking metric"
        names = ", ".join(metric_title(m) for m in self.metrics)
        taus = [a.tau for s in judged for a in s.agreements.values() if not np.isnan(a.tau)]
        low = f" (lowest tau {min(taus):.2f})" if taus else ""
        good = sum(s.agree for s in judged)
        return f"CE and {names} agree on order in {good} of {len(judged)} slices{low}"

    def describe_lines(self) -> list[str]:
        """The lines :meth:`SourceFits.describe` shows: a summary line, then one line per slice
        (every slice when there are at most 3, else only the flagged ones)."""
        listed = [s for s in self.slices if s.flagged or len(self.slices) <= _DESCRIBE_ALL_SLICES]
        head = [] if len(listed) == len(self.slices) and self.slices else [self.agreement_summary()]
        head.append(self.noise_summary())
        return ["  yardsticks: " + "; ".join(head)] + [f"  {s.describe()}" for s in listed]

    def to_json(self) -> dict:
        """The ``rank_agreement``, ``metric_laws`` and ``seed_noise`` entries of fits.json."""
        return {
            "rank_agreement": {
                "min_tau": self.options.min_tau,
                "same_best": self.options.same_best,
                "statistic": "Kendall tau-b of -CE against the metric (scipy.stats.kendalltau)",
                "summary": self.agreement_summary(),
                "slices": [
                    {"kind": s.kind, "fixed": s.fixed, "cells": s.n_cells, "flagged": not s.agree}
                    | {"agreement": {k: a.to_json() for k, a in s.agreements.items()}}
                    for s in self.slices
                ],
            },
            "metric_laws": {
                "transform": METRIC_LAW_TRANSFORM,
                "slices": [
                    {"kind": s.kind, "fixed": s.fixed, "ce_law_r2": s.ce_r2}
                    | {"laws": {k: m.to_json() for k, m in s.metric_laws.items()}}
                    for s in self.slices
                ],
            },
            "seed_noise": {
                "known": self.seed_spread_known,
                "resolve_factor": self.options.resolve_factor,
                "summary": self.noise_summary(),
                "median_spread": {q: self.median_spread(q) for q in ("ce", *self.metrics)},
                "cells": [s.to_json() for s in self.spreads if s.runs >= 2],
                "slices": [
                    {"kind": s.kind, "fixed": s.fixed, "resolved": s.resolved}
                    | {"quantities": {k: r.to_json() for k, r in s.resolutions.items()}}
                    for s in self.slices
                    if s.resolutions
                ],
            },
        }


def _r2(v: float | None, missing: str = "not fitted") -> str:
    return missing if v is None else f"{v:.2f}"


def _metric_law(kind: str, metric: str, sizes, values, seed: int) -> MetricLaw:
    """Fit the slice's law to 1 - values (no bootstrap)."""
    fit = fit_model_law if kind == "model" else fit_data_law
    k = len(np.unique(sizes))
    err = 1.0 - np.asarray(values, dtype=float)
    if np.any(err <= 0) or np.any(err > 1):
        return MetricLaw(metric, k, error=f"not fitted: {metric_title(metric)} outside [0, 1)")
    try:
        return MetricLaw(metric, k, fit(sizes, err, n_boot=0, seed=seed))
    except FitError as exc:
        if exc.law is not None:
            return MetricLaw(metric, k, exc.law, caveat=f"boundary fit: {exc.reason}")
        return MetricLaw(metric, k, error=f"not fitted: {exc.reason}")
    except ValueError as exc:
        return MetricLaw(metric, k, error=f"not fitted: {exc}")


def _ce_law(fits, kind: str, fixed: dict) -> tuple[float | None, str]:
    outcomes = fits.model_fits if kind == "model" else fits.data_fits
    o = next((o for o in outcomes if o.fixed == fixed), None)
    if o is None:
        return None, "no CE law for this slice"
    if o.law is None:
        return None, o.error
    # a law that failed its checks still has an R^2 to compare with; the note says so
    if getattr(o, "usable", True):
        return float(o.law.r2), ""
    note = str(getattr(o, "status", "")) or "not usable"
    return float(o.law.r2), note if note.startswith("not usable") else f"not usable: {note}"


def source_yardsticks(
    fits,
    records: Sequence[Mapping],
    *,
    include_unconverged: bool = False,
    options: YardstickOptions | None = None,
    seed: int = 0,
) -> SourceYardsticks:
    """The yardsticks of one source.

    Args:
        fits: the source's :class:`~densescale.report.SourceFits` (for the CE laws' R^2).
        records: the source's normalised records (:func:`~densescale.report.check_records`).
        include_unconverged: as given to :func:`~densescale.report.fit_study`.
        options: thresholds (default :class:`YardstickOptions`).
        seed: seed of the metric-law fits.
    """
    options = options or YardstickOptions()
    kept = [r for r in records if not exclusion_reasons(r, include_unconverged=include_unconverged)]
    cells = cells_of(kept, fits.source)
    spreads = tuple(seed_spreads(kept))
    by_cell = {(s.N, s.D, s.d): s for s in spreads}
    metrics = tuple(m for m in QUOTED_METRICS if any(m in c["metrics"] for c in cells))
    slices = []
    for kind, fixed_names, varied in (("model", ("D", "d"), "N"), ("data", ("N", "d"), "D")):
        groups: dict[tuple, list[dict]] = {}
        for c in cells:
            groups.setdefault(tuple(c[k] for k in fixed_names), []).append(c)
        for key in sorted(groups, key=lambda k: tuple(-1 if v is None else v for v in k)):
            group = sorted(groups[key], key=lambda c: c[varied])
            if len({c[varied] for c in group}) < MIN_AGREEMENT_CELLS:
                continue
            fixed = {k: int(v) for k, v in zip(fixed_names, key) if v is not None}
            slices.append(
                _slice(kind, fixed, varied, group, metrics, by_cell, spreads, fits, options, seed)
            )
    return SourceYardsticks(fits.source, options, tuple(slices), spreads, metrics)


def _noise(resolutions: dict, metric: str) -> dict:
    """The seed noise (factor x spread) of CE and ``metric`` for rank_agreement ({} unknown)."""
    ce, m = resolutions.get("ce"), resolutions.get(metric)
    if ce is None or m is None:
        return {}
    return {"ce_noise": ce.factor * ce.spread, "metric_noise": m.factor * m.spread}


def _slice(kind, fixed, varied, group, metrics, by_cell, spreads, fits, options, seed):
    sizes = np.array([c[varied] for c in group], dtype=float)
    ce = np.array([c["ce"] for c in group], dtype=float)
    labels = [c["model"] if kind == "model" else f"D = {c['D']:,}" for c in group]
    ce_r2, ce_note = _ce_law(fits, kind, fixed)
    resolutions: dict[str, Resolution] = {}
    mine = [by_cell[(c["N"], c["D"], c["d"])] for c in group]
    for q in ("ce", *metrics):
        have = [i for i, c in enumerate(group) if q == "ce" or q in c["metrics"]]
        spread, where = median_spread(mine, q), "this slice"
        n_multi = sum(mine[i].spread(q) is not None for i in have)
        if spread is None:
            spread, where = median_spread(spreads, q), "the source"
            n_multi = sum(s.spread(q) is not None for s in spreads)
        if spread is None or len(have) < 2:
            continue
        values = [group[i]["ce"] if q == "ce" else group[i]["metrics"][q] for i in have]
        resolutions[q] = adjacent_resolution(
            sizes[have],
            values,
            spread,
            quantity=q,
            size_name=varied,
            spread_from=f"median max - min over {n_multi} multi-run cells of {where}",
            factor=options.resolve_factor,
        )
    agreements: dict[str, RankAgreement] = {}
    laws: dict[str, MetricLaw] = {}
    for m in metrics:
        have = [i for i, c in enumerate(group) if m in c["metrics"]]
        if len(have) < MIN_AGREEMENT_CELLS:
            continue
        values = np.array([group[i]["metrics"][m] for i in have], dtype=float)
        agreements[m] = rank_agreement(
            ce[have],
            values,
            metric=m,
            labels=[labels[i] for i in have],
            min_tau=options.min_tau,
            same_best=options.same_best,
            **_noise(resolutions, m),
        )
        laws[m] = _metric_law(kind, m, sizes[have], values, seed)
    return SliceYardsticks(kind, fixed, len(group), agreements, laws, ce_r2, ce_note, resolutions)
