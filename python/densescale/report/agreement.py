"""Rank agreement of CE and a ranking metric over the cells of one slice (a pure function).

CE is the quantity the laws are fitted in; people quote MRR@10 or NDCG@10. When, across the
model sizes of one data size (or the data sizes of one model size), CE and the metric order the
cells differently, a law in CE answers a question nobody asked: which model ranks best. This
module measures that with Kendall's tau (tau-b, :func:`scipy.stats.kendalltau`) of ``-CE``
against the metric (lower CE is better, a higher metric is better), so +1 is the same order,
0 unrelated and -1 reversed.

A slice is flagged (``agree`` False) when

- tau < ``min_tau`` (default :data:`AGREEMENT_MIN_TAU` = 0.5: with 6 cells, tau 0.5 is 11 of 15
  pairs in the same order, already short of significance at 5%; below it, CE and the metric
  rank the cells roughly as often apart as together), or
- ``same_best`` (default True) and the best cell by CE is not the best by the metric: the law's
  answer to "which size should I use" would differ from the metric's, whatever tau says, or
- the metric is the same in every cell (tau undefined): it orders nothing.

Slices with fewer than ``min_cells`` (default 3) cells carrying the metric are not judged.

With the seed spread known (``ce_noise``, ``metric_noise``: the gap below which two cells are
not told apart, e.g. the median max - min over the seeds of a cell), a pair of cells that CE and
the metric order oppositely is a real swap only when both gaps exceed their noise; otherwise it
is a swap *within the seed spread* (``within_noise``): neither order is established, so it is
not evidence of disagreement. Then ``tau_resolved`` is Kendall's tau over the resolved pairs
only (concordant minus discordant over their sum, the pairs within noise counted as ties and
left out), and the best cells by CE and by the metric count as the same when they are within
the noise of each other. ``tau`` itself stays the plain tau-b over every pair.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

AGREEMENT_MIN_TAU = 0.5
"""Below this Kendall tau of -CE against a ranking metric, a slice is flagged as disagreeing."""

MIN_AGREEMENT_CELLS = 3
"""Fewest cells for a rank agreement (with two, tau is +-1 and says nothing)."""

_TITLES = {"mrr@10": "MRR@10", "ndcg@10": "NDCG@10"}


def metric_title(name: str) -> str:
    """ "MRR@10" for "mrr@10" (other names unchanged)."""
    return _TITLES.get(name, name)


@dataclass(frozen=True)
class RankAgreement:
    """How CE and one ranking metric order the cells of a slice.

    Attributes:
        metric: the metric's name, e.g. "mrr@10".
        tau: Kendall's tau-b of -CE against the metric (NaN when the metric or CE is constant).
        p_value: two-sided p-value of tau against no association (NaN with tau).
        n_cells: cells compared.
        best_by_ce, best_by_metric: labels of the best cell by each (lowest CE, highest metric).
        best_ce, best_metric: (CE, metric) of those two cells.
        agree: False when flagged (see the module docstring).
        reason: why it was flagged ("" when it agrees).
        min_tau, same_best: the thresholds it was judged with.
        swapped: the pairs of cells CE and the metric order oppositely, each as (better by CE,
            better by the metric); what keeps tau below 1.
        within_noise: the swapped pairs whose CE gap or metric gap is within the seed noise
            (empty when no noise was given).
        tau_resolved: Kendall's tau over the pairs the noise resolves (NaN without noise, or
            when it resolves no pair).
    """

    metric: str
    tau: float
    p_value: float
    n_cells: int
    best_by_ce: str
    best_by_metric: str
    best_ce: tuple[float, float]
    best_metric: tuple[float, float]
    agree: bool
    reason: str
    min_tau: float = AGREEMENT_MIN_TAU
    same_best: bool = True
    swapped: tuple[tuple[str, str], ...] = ()
    within_noise: tuple[tuple[str, str], ...] = ()
    tau_resolved: float = float("nan")

    def swapped_text(self, limit: int = 3) -> str:
        """ "" or e.g. "1 of 15 pairs swapped: L1-H16 by CE, L1-H32 by MRR@10" (", within the
        seed spread" when it is)."""
        if not self.swapped:
            return ""
        pairs = self.n_cells * (self.n_cells - 1) // 2
        title = metric_title(self.metric)

        def one(a: str, b: str) -> str:
            noise = " (within the seed spread)" if (a, b) in self.within_noise else ""
            return f"{a} by CE, {b} by {title}{noise}"

        shown = "; ".join(one(a, b) for a, b in self.swapped[:limit])
        more = f"; {len(self.swapped) - limit} more" if len(self.swapped) > limit else ""
        text = f"{len(self.swapped)} of {pairs} pairs swapped: {shown}{more}"
        if not math.isnan(self.tau_resolved):
            text += f"; tau {self.tau_resolved:.2f} over the pairs the seed spread resolves"
        return text

    def describe(self, what: str = "cells") -> str:
        """One line, e.g. "CE and MRR@10 agree on order (tau 0.87, 6 cells)" or "CE and MRR@10
        DISAGREE on the order of models (tau 0.07, 6 cells): best by CE ..., best by MRR@10 ..."
        (``what``: the plural noun of the slice's cells, e.g. "models", "data sizes")."""
        title = metric_title(self.metric)
        tau = "tau undefined" if math.isnan(self.tau) else f"tau {self.tau:.2f}"
        if self.agree:
            swapped = self.swapped_text()
            return f"CE and {title} agree on order ({tau}, {self.n_cells} cells" + (
                f"; {swapped})" if swapped else ")"
            )
        if not math.isnan(self.tau) and self.tau < self.min_tau:
            tau += f" < {self.min_tau:g}"
        why = [r for r in self.reason.split("; ") if not r.startswith("tau ")]
        return f"CE and {title} DISAGREE on the order of {what} ({tau}, {self.n_cells} cells)" + (
            f": {'; '.join(why)}" if why else ""
        )

    def to_json(self) -> dict:
        return {
            "metric": self.metric,
            "tau": None if math.isnan(self.tau) else self.tau,
            "p_value": None if math.isnan(self.p_value) else self.p_value,
            "cells": self.n_cells,
            "best_by_ce": self.best_by_ce,
            "best_by_metric": self.best_by_metric,
            "agree": self.agree,
            "reason": self.reason,
            "min_tau": self.min_tau,
            "same_best": self.same_best,
            "swapped": [list(pair) for pair in self.swapped],
            "within_noise": [list(pair) for pair in self.within_noise],
            "tau_resolved": None if math.isnan(self.tau_resolved) else self.tau_resolved,
        }


def rank_agreement(
    ce,
    values,
    *,
    metric: str = "mrr@10",
    labels: Sequence[str] | None = None,
    min_tau: float = AGREEMENT_MIN_TAU,
    same_best: bool = True,
    ce_noise: float | None = None,
    metric_noise: float | None = None,
) -> RankAgreement:
    """Kendall's tau of ``-ce`` against ``values`` over the cells of one slice, and the verdict.

    Args:
        ce: (n,) contrastive entropy per cell (lower is better).
        values: (n,) the ranking metric per cell (higher is better).
        metric: the metric's name (for the texts).
        labels: (n,) names of the cells (default "cell 0", "cell 1", ...).
        min_tau: flag when tau < min_tau (in [-1, 1]).
        same_best: also flag when the best cell by CE is not the best by the metric.
        ce_noise, metric_noise: gaps (>= 0) within which two cells are not told apart in CE and
            in the metric (both or neither; see the module docstring).

    Returns:
        A :class:`RankAgreement`.

    Raises:
        ValueError: fewer than :data:`MIN_AGREEMENT_CELLS` cells, different lengths, non-finite
            values, or ``min_tau`` outside [-1, 1].
    """
    from scipy.stats import kendalltau

    ce = np.asarray(ce, dtype=float)
    values = np.asarray(values, dtype=float)
    if ce.ndim != 1 or values.shape != ce.shape:
        raise ValueError(
            f"ce and values must be 1-d of one length, got shapes {ce.shape} and {values.shape}"
        )
    if len(ce) < MIN_AGREEMENT_CELLS:
        raise ValueError(f"ce must hold >= {MIN_AGREEMENT_CELLS} cells, got {len(ce)}")
    if not (np.all(np.isfinite(ce)) and np.all(np.isfinite(values))):
        raise ValueError("ce and values must be finite")
    if isinstance(min_tau, bool) or not (-1.0 <= float(min_tau) <= 1.0):
        raise ValueError(f"min_tau must be a number in [-1, 1], got {min_tau!r}")
    if (ce_noise is None) != (metric_noise is None):
        raise ValueError("ce_noise and metric_noise must be given together")
    noisy = ce_noise is not None
    if noisy and not all(
        not isinstance(v, bool) and math.isfinite(float(v)) and float(v) >= 0
        for v in (ce_noise, metric_noise)
    ):
        raise ValueError(
            f"ce_noise and metric_noise must be finite numbers >= 0, got {ce_noise!r}, {metric_noise!r}"
        )
    names = [f"cell {i}" for i in range(len(ce))] if labels is None else [str(x) for x in labels]
    if len(names) != len(ce):
        raise ValueError(f"labels must hold {len(ce)} names, got {len(names)}")
    if np.ptp(values) == 0 or np.ptp(ce) == 0:
        tau, p = float("nan"), float("nan")
    else:
        stat, pval = kendalltau(-ce, values)  # tau-b; a 2-tuple in every scipy >= 1.10
        tau, p = float(stat), float(pval)
    i_ce, i_m = int(np.argmin(ce)), int(np.argmax(values))
    title = metric_title(metric)
    reasons = []
    if math.isnan(tau):
        which = title if np.ptp(values) == 0 else "CE"
        reasons.append(f"{which} is the same in every cell, so it orders nothing")
    elif tau < min_tau:
        reasons.append(f"tau {tau:.2f} < {min_tau:g}")

    def within(i: int, j: int) -> bool:  # the seed noise does not tell cells i and j apart
        return noisy and (
            abs(ce[i] - ce[j]) <= ce_noise or abs(values[i] - values[j]) <= metric_noise
        )

    # ties at the top: the best by one is among the best by the other (or within the noise)
    best_ce = set(np.flatnonzero(ce == ce[i_ce]))
    best_m = set(np.flatnonzero(values == values[i_m]))
    if same_best and not (best_ce & best_m) and not within(i_ce, i_m):
        reasons.append(
            f"best by CE {names[i_ce]} (CE {ce[i_ce]:.4g}, {title} {values[i_ce]:.3g}), "
            f"best by {title} {names[i_m]} (CE {ce[i_m]:.4g}, {title} {values[i_m]:.3g})"
        )
    pairs = [(i, j) for i in range(len(ce)) for j in range(i + 1, len(ce))]
    sign = {p: np.sign((ce[p[1]] - ce[p[0]]) * (values[p[0]] - values[p[1]])) for p in pairs}

    def named(i: int, j: int) -> tuple[str, str]:  # (better by CE, better by the metric)
        return (names[i], names[j]) if ce[i] < ce[j] else (names[j], names[i])

    swapped = tuple(named(*p) for p in pairs if sign[p] < 0)
    within_noise = tuple(named(*p) for p in pairs if sign[p] < 0 and within(*p))
    tau_resolved = float("nan")
    if noisy:
        counted = [sign[p] for p in pairs if sign[p] != 0 and not within(*p)]
        if counted:
            tau_resolved = float(np.sum(counted) / len(counted))
    return RankAgreement(
        metric=metric,
        tau=tau,
        p_value=p,
        n_cells=len(ce),
        best_by_ce=names[i_ce],
        best_by_metric=names[i_m],
        best_ce=(float(ce[i_ce]), float(values[i_ce])),
        best_metric=(float(ce[i_m]), float(values[i_m])),
        agree=not reasons,
        reason="; ".join(reasons),
        min_tau=float(min_tau),
        same_best=bool(same_best),
        swapped=swapped,
        within_noise=within_noise,
        tau_resolved=tau_resolved,
    )
