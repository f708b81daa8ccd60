"""The exchange rate between annotation sources read off the measured cells, with no law: how
many pairs of a source reach the CE that D reference pairs reached, by interpolation between the
cells of both sources at one model size.

:mod:`densescale.scaling.exchange` answers from two fitted data-size laws, and only when both are
usable (SPEC 7): it can extrapolate, to the floors and beyond the data. When a law is not usable
(on MedQuAD the human curve keeps falling to the largest D, so its floor ``delta`` is not pinned
down), the cells themselves still say how the sources compare *inside* the measured range. This
module gives that reading and nothing beyond it:

1. Each source's cells, CE against D, are made non-increasing in D (isotonic regression of
   log CE on the cell order, :func:`scipy.optimize.isotonic_regression`; more data never makes
   the best reachable CE worse, so a rise between cells is noise) and joined by straight lines
   in (log D, log CE).
2. ``L_R(D)``: the reference curve at a measured reference D.
3. ``D_S(D)``: the smallest D on the source curve where it reaches ``L_R(D)``. Where the source
   curve never comes down to ``L_R(D)`` within its largest measured D, the answer is censored:
   "not reached within D_max pairs", no number; where even its smallest measured D is already
   at or below ``L_R(D)``, it is "at most D_min pairs".
4. The interval: the same reading on ``n_boot`` redraws of every cell's CE from its test-query
   standard error (log-normal with that relative spread), percentiles at the tails; censored
   draws count as 0 (at most D_min) or inf (not reached). It covers the evaluation noise only:
   with one training seed per cell the seed spread is unknown, and the interval says so.

Pure numpy/scipy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import isotonic_regression

from ._checks import coverage, nonneg_int, positive_values

REACHED, NOT_REACHED, AT_MOST = "reached", "not reached", "at most"


@dataclass(frozen=True, eq=False)  # holds arrays: identity equality
class MeasuredExchange:
    """``D_S(D)`` read off the measured cells (module docstring).

    Attributes:
        D: (m,) reference pair counts (measured cells of the reference).
        loss: (m,) the reference curve's CE at D (after the monotone smoothing).
        pairs: (m,) pairs of the source that reach ``loss``; NaN where censored.
        status: (m,) "reached", "not reached" (within the source's largest D) or "at most"
            (the source's smallest D already reaches it).
        lower, upper: (m,) the interval over the CE redraws (0: at most D_min, inf: not
            reached), None without standard errors.
        source_range: (smallest, largest) measured D of the source.
        n_draws: redraws used (0 without intervals); ci_level: e.g. 0.95.
        seeds: training seeds per cell (the smallest over the cells of both sources).
    """

    D: np.ndarray
    loss: np.ndarray
    pairs: np.ndarray
    status: tuple[str, ...]
    lower: np.ndarray | None
    upper: np.ndarray | None
    source_range: tuple[float, float]
    n_draws: int
    ci_level: float
    seeds: int = 1

    @property
    def rate(self) -> np.ndarray:
        """(m,) pairs of the source per reference pair (NaN where censored)."""
        return self.pairs / self.D

    @property
    def any_reached(self) -> bool:
        return any(s == REACHED for s in self.status)

    def text(self, i: int, *, reference: str = "reference", source: str = "source") -> str:
        """E.g. "D = 1,000 human pairs (CE 1.19) ~ 1,350 [1,210, 1,520] ict pairs (1.35x)" or
        "... not reached by ict within 12,000 pairs"."""
        head = f"D = {self.D[i]:,.0f} {reference} pairs (CE {self.loss[i]:.4g})"
        lo, hi = self.source_range
        if self.status[i] == NOT_REACHED:
            return f"{head}: not reached by {source} within its {hi:,.0f} measured pairs"
        if self.status[i] == AT_MOST:
            return (
                f"{head}: reached by {source} at its smallest measured D, {lo:,.0f} pairs, or fewer"
            )
        return f"{head} ~ {self.count_text(i)} {source} pairs ({self.rate[i]:.3g}x)"

    def count_text(self, i: int) -> str:
        """The pairs of point ``i`` (reached) with their interval, e.g. "1,336 [1,005, > 12,000]"."""
        text = f"{self.pairs[i]:,.0f}"
        if self.lower is not None:
            lo, hi = self.source_range
            text += f" [{_bound(self.lower[i], lo, hi)}, {_bound(self.upper[i], lo, hi)}]"
        return text

    @property
    def interval_note(self) -> str:
        """What the interval covers, in one phrase."""
        if self.lower is None:
            return "no interval (the records carry no CE standard errors)"
        what = f"{100 * self.ci_level:.0f}% over {self.n_draws} redraws of each cell's CE from its test-query standard error"
        if self.seeds < 2:
            return what + "; one training seed per cell, so the seed spread is not in it"
        return what + f"; the cells average {self.seeds} training seeds"


def _stderr(name: str, value, ce: np.ndarray) -> np.ndarray:
    se = np.asarray(value, dtype=float).ravel()
    if se.shape != ce.shape or not np.all(np.isfinite(se)) or np.any(se < 0):
        raise ValueError(f"{name} must be {len(ce)} finite numbers >= 0, got {se.tolist()}")
    return se


def _bound(v: float, lo: float, hi: float) -> str:
    """An interval end: a pair count, "> hi" (not reached within) or "<= lo" (at most)."""
    if not np.isfinite(v):
        return f"> {hi:,.0f}"
    if v <= 0:
        return f"<= {lo:,.0f}"
    return f"{v:,.0f}"


def monotone_curve(D, ce) -> tuple[np.ndarray, np.ndarray]:
    """(log D, log CE) of the cells sorted by D, log CE made non-increasing (isotonic)."""
    d = np.log(positive_values("D", D))
    c = np.log(positive_values("ce", ce))
    order = np.argsort(d, kind="stable")
    return d[order], isotonic_regression(c[order], increasing=False).x


def _value_at(log_d: np.ndarray, log_c: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.interp(x, log_d, log_c)


def _first_reach(log_d: np.ndarray, log_c: np.ndarray, target: float) -> float:
    """log D where the non-increasing curve first comes down to ``target``: -inf when its first
    point is already there, +inf when its last point is still above."""
    if log_c[0] <= target:
        return -np.inf
    if log_c[-1] > target:
        return np.inf
    i = int(np.argmax(log_c <= target))  # first point at or below; i >= 1
    c0, c1 = log_c[i - 1], log_c[i]
    t = (c0 - target) / (c0 - c1)
    return float(log_d[i - 1] + t * (log_d[i] - log_d[i - 1]))


def _read(ref: tuple, src: tuple, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    loss = _value_at(*ref, at)
    where = np.array([_first_reach(*src, v) for v in loss])
    return loss, where


def measured_exchange(
    reference_D,
    reference_ce,
    source_D,
    source_ce,
    *,
    D=None,
    reference_se=None,
    source_se=None,
    n_boot: int = 1000,
    ci_level: float = 0.95,
    seed: int = 0,
    seeds: int = 1,
) -> MeasuredExchange:
    """The pairs of a source that reach the CE of ``D`` reference pairs, read off the measured
    cells of both (one model size), with an interval over their evaluation noise.

    Args:
        reference_D, reference_ce: (n_R,) the reference source's cells (n_R >= 2 distinct
            D > 0, CE > 0: one value per cell, the mean over its seeds).
        source_D, source_ce: (n_S,) the source's cells at the same model size (n_S >= 2).
        D: reference pair counts to read at (default: every measured reference D); each must
            lie within the reference's measured range (no extrapolation).
        reference_se, source_se: (n_R,), (n_S,) each cell's CE standard error over test
            queries (>= 0); the interval needs both (None: no interval).
        n_boot: redraws for the interval (0: none); ci_level: its coverage.
        seed: seed of the redraws; seeds: training seeds averaged in each cell (for the note).

    Returns:
        :class:`MeasuredExchange`.

    Raises:
        ValueError: fewer than 2 cells of a source, lengths that differ, a size given twice, a
            non-positive D or CE, a negative standard error or only one of the two, a D outside
            the reference's measured range.
    """
    rd, rc = (np.asarray(positive_values(n, v), dtype=float).ravel() for n, v in
              (("reference_D", reference_D), ("reference_ce", reference_ce)))  # fmt: skip
    sd, sc = (np.asarray(positive_values(n, v), dtype=float).ravel() for n, v in
              (("source_D", source_D), ("source_ce", source_ce)))  # fmt: skip
    for name, a, b in (("reference", rd, rc), ("source", sd, sc)):
        if a.shape != b.shape or len(a) < 2:
            raise ValueError(
                f"{name}_D and {name}_ce must have the same length >= 2, got {len(a)} and {len(b)}"
            )
        if len(np.unique(a)) != len(a):  # one cell per size: seeds are averaged first
            raise ValueError(
                f"{name}_D must not repeat a size (average the runs of a cell first, as the "
                f"report does), got {a.tolist()}"
            )
    if (reference_se is None) != (source_se is None):
        raise ValueError("reference_se and source_se must be given together (or neither)")
    at = np.unique(rd) if D is None else np.atleast_1d(positive_values("D", D)).astype(float)
    if at.min() < rd.min() * (1 - 1e-9) or at.max() > rd.max() * (1 + 1e-9):
        raise ValueError(
            f"D must lie within the reference's measured range [{rd.min():,.0f}, "
            f"{rd.max():,.0f}] (no extrapolation), got {at.tolist()}"
        )
    nonneg_int("n_boot", n_boot)
    nonneg_int("seed", seed)
    coverage("ci_level", ci_level)
    ref, src = monotone_curve(rd, rc), monotone_curve(sd, sc)
    loss, where = _read(ref, src, np.log(at))
    status = tuple(
        REACHED if np.isfinite(w) else (AT_MOST if w < 0 else NOT_REACHED) for w in where
    )
    pairs = np.full(len(at), np.nan)
    pairs[np.isfinite(where)] = np.exp(where[np.isfinite(where)])
    lower = upper = None
    draws = 0
    if reference_se is not None and source_se is not None and n_boot > 0:
        rs = _stderr("reference_se", reference_se, rc)
        ss = _stderr("source_se", source_se, sc)
        rng = np.random.default_rng(seed)
        got = np.empty((n_boot, len(at)))
        for b in range(n_boot):
            rc_b = rc * np.exp(rng.normal(0.0, rs / rc))
            sc_b = sc * np.exp(rng.normal(0.0, ss / sc))
            _, w = _read(monotone_curve(rd, rc_b), monotone_curve(sd, sc_b), np.log(at))
            got[b] = np.where(w < 0, 0.0, np.inf)  # censored: at most D_min / not reached
            got[b, np.isfinite(w)] = np.exp(w[np.isfinite(w)])
        tail = (1.0 - ci_level) / 2.0
        lower, upper = np.quantile(got, [tail, 1.0 - tail], axis=0, method="inverted_cdf")
        draws = n_boot
    return MeasuredExchange(
        D=at,
        loss=np.exp(loss),
        pairs=pairs,
        status=status,
        lower=lower,
        upper=upper,
        source_range=(float(sd.min()), float(sd.max())),
        n_draws=draws,
        ci_level=float(ci_level),
        seeds=int(seeds),
    )
