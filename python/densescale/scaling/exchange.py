"""The exchange rate between annotation sources (SPEC 1.5): how many pairs of one source reach the
loss that D pairs of a reference source (human qrels) reach, at one model size.

With the data-size laws of both sources fitted at the same model size N,

    L_R(D) = (B_R / D)^beta_R + delta_R        (the reference, e.g. human)
    L_S(D) = (B_S / D)^beta_S + delta_S        (the source, e.g. ICT)

the pairs of S that reach the loss of D reference pairs are

    D_S(D) = B_S / (L_R(D) - delta_S)^(1 / beta_S)        where L_R(D) > delta_S,

and S *never reaches* it where ``L_R(D) <= delta_S``: its floor lies at or above that loss, and no
amount of S matches D reference pairs (``D_S = inf``). ``D_S(D) / D`` is the exchange rate, pairs
of S per reference pair (above 1: a pair of S is worth less than a reference pair). Swapping the
two laws gives the other reading, the *effective reference data* of D pairs of S:
``D_R(D) = B_R / (L_S(D) - delta_R)^(1 / beta_R)``. The curves cross (S as good as the reference,
pair for pair) where ``L_S(D) = L_R(D)``: :func:`crossings`.

The interval comes from the bootstrap parameter sets both fits carry (``FitInfo.bootstrap``):
draw ``i`` of the reference goes with draw ``pi(i)`` of the source, ``pi`` a seeded permutation
(two fits bootstrapped with the same seed draw the same noise; pairing them in order would
correlate the laws), ``D_S`` is computed for every pair, and the interval is the pair of order
statistics at the tails (``inverted_cdf``): where S never reaches in more than the tail share of
draws, the upper end is ``inf``.

Pure numpy/scipy; whether the laws may answer at all (SPEC 7) is the caller's check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from ._checks import coverage, nonneg_int, positive_number, positive_values
from .laws import DataSizeLaw


@dataclass(frozen=True, eq=False)  # holds arrays: identity equality
class ExchangeRate:
    """``D_S(D)``: the pairs of a source that reach the loss of ``D`` reference pairs.

    Attributes:
        D: (m,) reference pair counts, as given.
        pairs: (m,) ``D_S(D) = B_S / (L_R(D) - delta_S)^(1/beta_S)`` from the fitted laws;
            ``inf`` where the source never reaches ``L_R(D)`` (``L_R(D) <= delta_S``).
        loss: (m,) ``L_R(D)``, the loss both sides reach.
        lower, upper: (m,) the bootstrap interval of ``pairs`` at ``ci_level`` (``upper`` is
            ``inf`` where too many draws never reach); None when a law has no bootstrap.
        reach_share: (m,) share of the bootstrap draws in which the source reaches ``L_R(D)``,
            or None.
        n_draws: bootstrap pairs used (0 without intervals).
        ci_level: e.g. 0.95.
        reference, source: the two data-size laws (fitted at the same model size).
    """

    D: np.ndarray
    pairs: np.ndarray
    loss: np.ndarray
    lower: np.ndarray | None
    upper: np.ndarray | None
    reach_share: np.ndarray | None
    n_draws: int
    ci_level: float
    reference: DataSizeLaw
    source: DataSizeLaw

    @property
    def rate(self) -> np.ndarray:
        """(m,) pairs of the source per reference pair, ``D_S(D) / D`` (inf: never reaches)."""
        return self.pairs / self.D

    @property
    def reaches(self) -> np.ndarray:
        """(m,) bool: the fitted source law reaches ``L_R(D)``."""
        return np.isfinite(self.pairs)

    @property
    def has_intervals(self) -> bool:
        return self.lower is not None

    def text(self, i: int, *, reference: str = "reference", source: str = "source") -> str:
        """One phrase for point ``i``, e.g. "D = 1,600 human pairs ~ 3,120 [2,410, 4,260] ict
        pairs (1.95x)", or "... never reached by ict (its floor 0.62 >= CE 0.41)"."""
        d, n = float(self.D[i]), float(self.pairs[i])
        head = f"D = {d:,.0f} {reference} pairs (CE {self.loss[i]:.4g})"
        if not np.isfinite(n):
            floor = self.source.delta
            tail = ""
            if self.reach_share is not None:
                tail = f"; reached in {100 * self.reach_share[i]:.0f}% of bootstrap draws"
            return f"{head}: never reached by {source} (its floor {floor:.4g} >= {self.loss[i]:.4g}{tail})"
        text = f"{head} ~ {_count(n)}"
        if self.has_intervals:
            text += f" [{_count(self.lower[i])}, {_count(self.upper[i])}]"
        return text + f" {source} pairs ({n / d:.3g}x)"


def _count(v: float) -> str:
    """A pair count: "3,120", "1.2e+09" when huge, "inf" (never reached)."""
    if not np.isfinite(v):
        return "inf"
    return f"{v:,.0f}" if v < 1e7 else f"{v:.3g}"


def _check_law(name: str, law: object) -> DataSizeLaw:
    if not isinstance(law, DataSizeLaw):
        raise TypeError(f"{name} must be a DataSizeLaw, got {type(law).__name__}")
    return law


def pairs_to_match(reference: DataSizeLaw, source: DataSizeLaw, D) -> float | np.ndarray:
    """``D_S(D) = B_S / (L_R(D) - delta_S)^(1/beta_S)``, the pairs of ``source`` that reach the
    loss of ``D`` pairs of ``reference`` (any shape, > 0); ``inf`` where it never does."""
    _check_law("reference", reference)
    _check_law("source", source)
    return source.D_for_loss(reference.predict(positive_values("D", D)))


def exchange_rate(
    reference: DataSizeLaw,
    source: DataSizeLaw,
    D,
    *,
    ci_level: float | None = None,
    seed: int = 0,
) -> ExchangeRate:
    """The pairs of ``source`` that reach the loss of ``D`` pairs of ``reference``, with the
    bootstrap interval of both laws (see the module docstring for the formula).

    Args:
        reference, source: data-size laws fitted at the same model size (a law without
            ``fit.bootstrap`` gives no interval).
        D: (m,) reference pair counts (> 0); a scalar is taken as one point.
        ci_level: interval coverage (default: the reference fit's ``ci_level``, else 0.95).
        seed: seed of the permutation that pairs the two laws' bootstrap draws.

    Returns:
        :class:`ExchangeRate`.

    Raises:
        TypeError: a law is not a :class:`~densescale.scaling.DataSizeLaw`.
        ValueError: ``D`` not positive, ``ci_level`` not in (0, 1).
    """
    _check_law("reference", reference)
    _check_law("source", source)
    d = np.atleast_1d(positive_values("D", D)).astype(float).ravel()
    nonneg_int("seed", seed)
    if ci_level is None:
        ci_level = reference.fit.ci_level if reference.fit is not None else 0.95
    coverage("ci_level", ci_level)
    loss = np.atleast_1d(np.asarray(reference.predict(d), dtype=float))
    pairs = np.atleast_1d(np.asarray(source.D_for_loss(loss), dtype=float))
    draws = _paired_draws(reference, source, seed)
    lower = upper = share = None
    if draws is not None:
        ref_draws, src_draws = draws
        # (n_draws, m): D_S of every draw pair at every D
        theirs = np.stack(
            [
                np.atleast_1d(np.asarray(s.D_for_loss(r.predict(d)), dtype=float))
                for r, s in zip(ref_draws, src_draws)
            ]
        )
        tail = (1.0 - ci_level) / 2.0
        lower, upper = np.quantile(theirs, [tail, 1.0 - tail], axis=0, method="inverted_cdf")
        share = np.mean(np.isfinite(theirs), axis=0)
    return ExchangeRate(
        D=d,
        pairs=pairs,
        loss=loss,
        lower=lower,
        upper=upper,
        reach_share=share,
        n_draws=0 if draws is None else len(draws[0]),
        ci_level=float(ci_level),
        reference=reference,
        source=source,
    )


def effective_data(reference: DataSizeLaw, source: DataSizeLaw, D_source, **options):
    """The effective reference data of ``D_source`` pairs of ``source``: the reference pairs that
    reach the same loss, ``D_R = B_R / (L_S(D_source) - delta_R)^(1/beta_R)`` (the exchange rate
    read the other way; :func:`exchange_rate` with the laws swapped, same options)."""
    return exchange_rate(source, reference, D_source, **options)


def _paired_draws(reference: DataSizeLaw, source: DataSizeLaw, seed: int):
    """The bootstrap laws of both fits, paired through a seeded permutation, or None."""
    boots = [law.fit.bootstrap if law.fit is not None else None for law in (reference, source)]
    if any(b is None or len(b) < 2 for b in boots):
        return None
    ref_boot, src_boot = boots
    n = min(len(ref_boot), len(src_boot))
    order = np.random.default_rng(seed).permutation(len(src_boot))[:n]
    names = DataSizeLaw.param_names
    ref = [DataSizeLaw(**dict(zip(names, row))) for row in ref_boot[:n]]
    src = [DataSizeLaw(**dict(zip(names, row))) for row in src_boot[order]]
    return ref, src


def crossings(law_a: DataSizeLaw, law_b: DataSizeLaw, lo: float, hi: float) -> np.ndarray:
    """The data sizes in ``[lo, hi]`` where two data-size laws give the same loss,
    ``L_a(D) = L_b(D)`` (sign changes of ``log L_a - log L_b`` on a log grid of 400 points,
    each refined with Brent's method); ascending, empty when the curves do not cross there.
    Below a crossing one source is better, above it the other."""
    _check_law("law_a", law_a)
    _check_law("law_b", law_b)
    lo, hi = positive_number("lo", lo), positive_number("hi", hi)
    if hi <= lo:
        raise ValueError(f"hi must be > lo, got lo = {lo!r}, hi = {hi!r}")

    def gap(log_d: float) -> float:
        d = np.exp(log_d)
        return float(np.log(law_a.predict(d)) - np.log(law_b.predict(d)))

    grid = np.linspace(np.log(lo), np.log(hi), 400)
    values = np.array([gap(x) for x in grid])
    out = []
    for i in range(len(grid) - 1):
        a, b = values[i], values[i + 1]
        if a == 0.0:
            out.append(float(np.exp(grid[i])))
        elif a * b < 0:
            out.append(float(np.exp(brentq(gap, grid[i], grid[i + 1], xtol=1e-10))))
    if values[-1] == 0.0:
        out.append(float(hi))
    return np.array(out)
