"""What :func:`~densescale.report.fit_study` returns: one :class:`FitOutcome` per attempted fit,
gathered per annotation source in a :class:`SourceFits` (with its budget answers and maps).

Both are plain frozen records over the laws of :mod:`densescale.scaling`; ``describe()`` gives the
few lines a terminal shows. Every figure and section of the report is drawn from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from densescale.scaling import (
    Allocation,
    ChinchillaLaw,
    CostModel,
    ForecastCheck,
    JointLaw,
    LawChecks,
    Usability,
    extrapolation,
    extrapolation_text,
)
from densescale.scaling.laws import Law

if TYPE_CHECKING:
    from .exchange import SourceExchange
    from .yardsticks import SourceYardsticks

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
        law: the fitted law, or None. A fit that raised a FitError (a parameter on a bound, no
            convergence) keeps its best law here for the record; whether any law may answer
            anything is ``usability`` (use :attr:`usable_law` for answers).
        error: "" when a law was fitted; otherwise why not (too few points, bad input).
        extrapolation: the forecast check (fitted without the largest sizes), or None.
        extrapolation_note: why there is no check ("" when there is one).
        caveat: a note on the law shown (e.g. the FitError it raised), or "".
        excluded: one note per cell of this slice left out of the fit (near chance, not
            converged), with the reason.
        usability: the verdict of :func:`densescale.scaling.check_law` on ``law`` (None when
            there is no law): which checks of :class:`~densescale.scaling.LawChecks` failed.
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
    usability: Usability | None = None

    @property
    def usable(self) -> bool:
        """True when a law was fitted and passed every check (SPEC 7)."""
        return self.law is not None and self.usability is not None and self.usability.usable

    @property
    def usable_law(self) -> Law | None:
        """The law when it is usable, else None: every answer (budget, forecast, prediction,
        drawn curve) comes from here."""
        return self.law if self.usable else None

    @property
    def status(self) -> str:
        """One line: why there is no law, why it is not usable, or "usable"."""
        if self.law is None:
            return self.error or "not fitted"
        return self.usability.line if self.usability is not None else "not checked"

    def intervals_line(self) -> str:
        """The 95% intervals of the law's parameters, or that it has none."""
        if self.law is None:
            return ""
        ci = self.law.ci
        if not ci:
            return "no parameter intervals (fitted without bootstrap, or too few points)"
        level = self.law.fit.ci_level if self.law.fit is not None else 0.95
        parts = ", ".join(f"{k} [{lo:.3g}, {hi:.3g}]" for k, (lo, hi) in ci.items())
        return f"{100 * level:.0f}% intervals: {parts}"

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
            or None; ``budget_note`` says why not (which check the joint law failed) or what was
            assumed. Answers come only from a usable law (:attr:`budget_law`).
        allocation_dim: the (N, d) answer under the memory budget ``memory_budget`` (bytes).
        excluded: one note per cell left out of every fit, with the reason.
        metric_maps: metric -> the CE-to-metric map over every cell of the study.
        chance_ce, oracle_ce: the yardsticks of the source's records (None when unknown).
        yardsticks: per slice, the rank agreement of CE and each ranking metric, the laws in
            the metrics and the seed noise against the gaps between sizes
            (:class:`~densescale.report.yardsticks.SourceYardsticks`), or None.
        checks: the :class:`~densescale.scaling.LawChecks` every law was judged by.
        cost: the cost model of the budget answers (its corpus size from the records when they
            give one); ``cost_sources``: parameter -> where its value came from.
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
    # rank agreement of CE and the metrics, laws in the metrics, seed noise (yardsticks.py)
    yardsticks: SourceYardsticks | None = None
    checks: LawChecks = field(default_factory=LawChecks)
    cost: CostModel | None = None
    cost_sources: dict = field(default_factory=dict)
    # the exchange rate against human annotations (exchange.py; None for human itself)
    exchange: SourceExchange | None = None

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
        data-size and dimension laws, each with its parameter intervals, forecast check and the
        cells left out, and the budget answer. A law that fails its checks (SPEC 7) is one line
        saying which check failed, with no number from it."""
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
            if o.usable:
                lines.append(f"  {label}: {o.law.describe()}")
                lines.append(f"      {o.intervals_line()}")
                lines.append(f"      {o.forecast_line()}")
            else:
                lines.append(f"  {label}: {o.status}")
            if o.excluded:
                lines.append(f"      {o.excluded_line()}")

        if self.joint.usable or not self.chinchilla.usable:
            add(self.joint, "joint")
        if self.chinchilla.usable and not self.joint.usable:
            add(self.chinchilla, "additive joint")
        for label, outcomes, key in (
            ("model-size", self.model_fits, "D"),
            ("data-size", self.data_fits, "N"),
            ("dimension", self.dim_fits, "N"),
        ):
            o = headline(outcomes, key)
            if o is None:
                if label != "dimension":
                    lines.append(f"  {label}: no fit")
            elif o.law is None:
                lines.append(f"  {label}: no fit ({o.error})")
            else:
                where = ", ".join(f"{k} = {v:,}" for k, v in o.fixed.items())
                add(o, f"{label} at {where}")
        if self.model_dim is not None and self.model_dim.law is not None:
            add(self.model_dim, "model-dimension")
        a = self.allocation
        if a is not None:
            law = self.budget_law
            lines.append(
                f"  budget ${a.budget:,.0f}: {_sized(law, 'N', a.N)}, {_sized(law, 'D', a.D)}, "
                f"predicted CE {self.ce_text(law, a.N, a.D)}{self._metric_text(a.loss)} "
                "(with inference cost)"
            )
        elif self.budget_note:
            lines.append(f"  budget: {self.budget_note}")
        if self.allocation_dim is not None:
            b = self.allocation_dim
            law = self.model_dim.law
            lines.append(
                f"  memory {b.memory_budget / 1e9:.3g} GB: {_sized(law, 'N', b.N)}, "
                f"{_sized(law, 'd', b.d, '.0f')}, predicted CE {self.ce_text(law, b.N, b.d)}"
                f"{self._metric_text(b.loss)}"
            )
        if self.exchange is not None:
            lines += [f"  {line}" for line in self.exchange.lines()]
        if self.yardsticks is not None:
            lines += self.yardsticks.describe_lines()
        return "\n".join(lines)

    @staticmethod
    def ce_text(law, *coords) -> str:
        """A predicted CE with its 95% bootstrap interval, e.g. "0.0612 [0.0590, 0.0640]", or
        "0.0612 (no interval: fitted without bootstrap)"."""
        ce = float(law.predict(*coords))
        band = law.interval(*coords)
        if band is None:
            return f"{ce:.4f} (no interval: the law has no bootstrap)"
        return f"{ce:.4f} [{float(band[0]):.4f}, {float(band[1]):.4f}]"

    @staticmethod
    def extrapolation_line(law, **at: float) -> str:
        """How far an answer lies beyond the sizes the law was fitted on, per axis, e.g.
        "N 290x beyond the largest fitted model (8.62e+07); D within the fitted range (...)"."""
        ranges = {} if law.fit is None else dict(law.fit.x_range)
        parts = [extrapolation_text(k, v, ranges[k]) for k, v in at.items() if k in ranges]
        return "; ".join(parts) if parts else "fitted range unknown"

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
        """The joint law the budget answer uses: the paper's form, else the additive one; only
        a usable law (None when neither passed its checks)."""
        for outcome in (self.joint, self.chinchilla):
            if outcome.usable:
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


def _sized(law, axis: str, value: float, fmt: str = ".3g") -> str:
    """E.g. "N = 2.5e+10 (290x beyond the largest fitted, 8.62e+07)" or "D = 3e+04 (within the
    fitted range)": a size of an answer with how far the law extrapolates to reach it."""
    ranges = {} if law.fit is None else law.fit.x_range
    text = f"{axis} = {format(value, fmt)}"
    if axis not in ranges:
        return text + " (fitted range unknown)"
    lo, hi = ranges[axis]
    factor = extrapolation(value, (lo, hi))
    if value > hi:
        return text + f" ({factor:.3g}x beyond the largest fitted, {hi:.3g})"
    if value < lo:
        return text + f" ({factor:.3g}x below the smallest fitted, {lo:.3g})"
    return text + " (within the fitted range)"


def headline(outcomes: list[FitOutcome], key: str) -> FitOutcome | None:
    """The slice a one-line summary shows for a family of per-slice laws: the usable law at the
    largest ``key`` (then the most points); without one, the slice with the most points (then
    the largest ``key``), so the reason shown is that slice's own, not another slice's."""
    if not outcomes:
        return None
    usable = [o for o in outcomes if o.usable]
    if usable:
        return max(usable, key=lambda o: (o.fixed.get(key, 0), o.n_points))
    return max(outcomes, key=lambda o: (o.law is not None, o.n_points, o.fixed.get(key, 0)))
