"""From contrastive entropy to the ranking metrics people quote: a monotone map fitted over cells.

Every cell of a study gives one point (CE, metric), e.g. (0.31 nats, MRR@10 = 0.34). Lower CE
means better ranking, so the map is non-increasing in CE. Two forms:

- ``logistic``: ``m(CE) = 1 / (1 + exp(b * (CE - c)))``, two parameters: ``c`` the CE at which
  the metric is 0.5 and ``b > 0`` the steepness; least squares on the metric.
- ``isotonic``: the best non-increasing fit (pool-adjacent-violators on the points sorted by CE),
  linear between the fitted points and flat beyond the measured range.

``kind="auto"`` picks the one with the smaller leave-one-out error (the logistic unless the
isotonic fit is clearly better: a smooth two-parameter curve extrapolates, a step function does
not). Bands come from a seeded pairs bootstrap over the cells: each replicate resamples the cells
and refits the same form; the band at a CE is the percentile interval of the replicates there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

from ._checks import choice, coverage, nonneg_int, same_length
from .fitting import FitError

DEFAULT_MAP_BOOT = 200
# the isotonic form wins "auto" only when its leave-one-out RMSE is below this share of the
# logistic's: a step function is chosen only when the data clearly reject the smooth curve
_ISOTONIC_MARGIN = 0.8
_LOGIT_CLIP = 1e-4


def _logistic(ce: np.ndarray, c: float, b: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(np.clip(b * (ce - c), -500.0, 500.0)))


def _fit_logistic(ce: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    # start: a straight line through logit(y) against CE (b from its slope, c where it crosses 0)
    q = np.clip(y, _LOGIT_CLIP, 1 - _LOGIT_CLIP)
    z = np.log(q / (1 - q))
    slope = np.polyfit(ce, z, 1)[0] if np.ptp(ce) > 0 else -1.0
    b0 = max(-slope, 1e-2)
    c0 = float(np.mean(ce + z / b0))
    scale = max(float(np.ptp(ce)), 1e-3)
    res = least_squares(
        lambda t: _logistic(ce, t[0], np.exp(t[1])) - y,
        x0=[c0, np.log(b0)],
        bounds=([ce.min() - 100 * scale, np.log(1e-3 / scale)], [ce.max() + 100 * scale, 10.0]),
        method="trf",
    )
    if not res.success:
        raise FitError(f"logistic CE map did not converge: {res.message}")
    return float(res.x[0]), float(np.exp(res.x[1]))


def _pava_decreasing(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-increasing least-squares fit; returns the distinct x (ascending) and fitted values."""
    ux, inverse = np.unique(x, return_inverse=True)
    sums = np.bincount(inverse, weights=y)
    counts = np.bincount(inverse).astype(float)
    # blocks of (sum, count, how many distinct x); merge while a later block is higher
    blocks: list[list[float]] = []
    for s, c in zip(sums, counts):
        blocks.append([s, c, 1])
        while len(blocks) > 1 and blocks[-1][0] / blocks[-1][1] > blocks[-2][0] / blocks[-2][1]:
            s2, c2, k2 = blocks.pop()
            blocks[-1][0] += s2
            blocks[-1][1] += c2
            blocks[-1][2] += k2
    fitted = np.concatenate([np.full(int(k), s / c) for s, c, k in blocks])
    return ux, fitted


def _isotonic_predict(knots_x: np.ndarray, knots_y: np.ndarray, ce: np.ndarray) -> np.ndarray:
    return np.interp(ce, knots_x, knots_y)  # flat beyond the ends


def _fit_form(kind: str, ce: np.ndarray, y: np.ndarray):
    """Fit one form; returns a predict function of CE."""
    if kind == "logistic":
        c, b = _fit_logistic(ce, y)
        return (lambda x: _logistic(x, c, b)), {"c": c, "b": b}
    kx, ky = _pava_decreasing(ce, y)
    return (lambda x: _isotonic_predict(kx, ky, x)), {"knots_ce": kx, "knots_value": ky}


def _loo_rmse(kind: str, ce: np.ndarray, y: np.ndarray) -> float:
    errors = []
    for i in range(len(ce)):
        keep = np.arange(len(ce)) != i
        try:
            f, _ = _fit_form(kind, ce[keep], y[keep])
        except FitError:
            return float("inf")
        errors.append(float(f(ce[i : i + 1])[0] - y[i]))
    return float(np.sqrt(np.mean(np.square(errors))))


@dataclass(frozen=True, eq=False)  # holds arrays: identity equality
class MetricMap:
    """A monotone (non-increasing) map from contrastive entropy to a ranking metric.

    ``kind == "logistic"``: ``m(CE) = 1 / (1 + exp(b * (CE - c)))`` (``params``: c, b).
    ``kind == "isotonic"``: pool-adjacent-violators fit, linear between ``params["knots_ce"]``
    and flat outside (``params``: knots_ce, knots_value).

    Attributes:
        metric: the metric's name, e.g. "mrr@10".
        kind: "logistic" or "isotonic".
        params: the constants of the form (see above).
        ce, values: (n,) the cells the map was fitted on.
        rmse: root-mean-square error of the map on those cells.
        loo_rmse: form -> leave-one-out RMSE (what ``kind="auto"`` compared).
        grid: (g,) CE values where the bootstrap replicates were evaluated.
        boot_curves: (n_boot, g) the replicates on ``grid`` (empty when n_boot = 0).
        ci_level: coverage of :meth:`band`.
    """

    metric: str
    kind: str
    params: dict
    ce: np.ndarray
    values: np.ndarray
    rmse: float
    loo_rmse: dict
    grid: np.ndarray = field(repr=False)
    boot_curves: np.ndarray = field(repr=False)
    ci_level: float = 0.95

    @property
    def formula(self) -> str:
        if self.kind == "logistic":
            return f"{self.metric} = 1 / (1 + exp(b (CE - c)))"
        return f"{self.metric} = isotonic(CE), non-increasing"

    @property
    def n_boot(self) -> int:
        return len(self.boot_curves)

    def predict(self, ce) -> float | np.ndarray:
        """The metric at contrastive entropy ``ce`` (any shape, >= 0)."""
        x = _ce_values(ce)
        if self.kind == "logistic":
            out = _logistic(x, self.params["c"], self.params["b"])
        else:
            out = _isotonic_predict(self.params["knots_ce"], self.params["knots_value"], x)
        return float(out) if np.ndim(out) == 0 else out

    def band(self, ce, level: float | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """Bootstrap interval ``(lo, hi)`` of the map at ``ce`` (NaN past 1.25 x the largest
        fitted CE, where no replicate was evaluated); None without a bootstrap."""
        if self.n_boot < 2:
            return None
        level = self.ci_level if level is None else float(level)
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level!r}")
        tail = 100.0 * (1.0 - level) / 2.0
        lo, hi = np.percentile(self.boot_curves, [tail, 100.0 - tail], axis=0, method="weibull")
        x = _ce_values(ce)
        # beyond the evaluated grid there is no bootstrap: NaN, not a flat extrapolation
        outside = (x < self.grid[0]) | (x > self.grid[-1])
        out = (
            np.where(outside, np.nan, np.interp(x, self.grid, lo)),
            np.where(outside, np.nan, np.interp(x, self.grid, hi)),
        )
        return tuple(float(v) if np.ndim(v) == 0 else v for v in out)

    def interval(self, ce: float, ce_lo: float | None = None, ce_hi: float | None = None):
        """``(value, lo, hi)`` of the metric at ``ce``, where CE itself has the interval
        ``[ce_lo, ce_hi]`` (e.g. a law's prediction): the map's band at ``ce_hi`` gives the low
        end and at ``ce_lo`` the high end (the map falls with CE), so both uncertainties count.
        ``lo``/``hi`` are NaN without a bootstrap."""
        value = float(self.predict(ce))
        lo_ce = ce if ce_lo is None else ce_lo
        hi_ce = ce if ce_hi is None else ce_hi
        if self.n_boot < 2:
            return value, float("nan"), float("nan")
        lo = float(self.band(hi_ce)[0])
        hi = float(self.band(lo_ce)[1])
        return value, min(lo, value), max(hi, value)

    def describe(self) -> str:
        """One line, e.g. ``mrr@10 = 1 / (1 + exp(b (CE - c))), c = 0.41, b = 3.2 (RMSE ...)``."""
        if self.kind == "logistic":
            what = f"c = {self.params['c']:.4g}, b = {self.params['b']:.4g}"
        else:
            what = f"{len(self.params['knots_ce'])} knots"
        return f"{self.formula}, {what} (RMSE {self.rmse:.3g} over {len(self.ce)} cells)"


def _ce_values(ce) -> np.ndarray:
    if isinstance(ce, (str, bytes)) or ce is None:
        raise TypeError(f"ce must be a number or an array, got {type(ce).__name__}")
    x = np.asarray(ce, dtype=float)
    if not np.all(np.isfinite(x)) or np.any(x < 0):
        raise ValueError("ce must be finite and >= 0")
    return x


def fit_metric_map(
    ce,
    values,
    *,
    metric: str = "mrr@10",
    kind: str = "auto",
    n_boot: int = DEFAULT_MAP_BOOT,
    seed: int = 0,
    ci_level: float = 0.95,
) -> MetricMap:
    """Fit a non-increasing map from contrastive entropy to a ranking metric over study cells.

    Args:
        ce: (n,) contrastive entropy of each cell (nats, >= 0).
        values: (n,) the metric of the same cells, in [0, 1].
        metric: its name (for labels).
        kind: "logistic", "isotonic" or "auto" (the smaller leave-one-out error, see the module
            docstring).
        n_boot: pairs-bootstrap replicates for :meth:`MetricMap.band` (0: none).
        seed, ci_level: seed of the bootstrap and coverage of the band.

    Raises:
        ValueError / TypeError: bad input, fewer than 3 cells, or fewer than 2 distinct CE.
        FitError: the logistic fit failed (kind="logistic").
    """
    choice("kind", kind, ("auto", "logistic", "isotonic"))
    if not isinstance(metric, str) or not metric:
        raise TypeError(f"metric must be a non-empty str, got {metric!r}")
    x = _ce_values(ce).astype(float)
    if x.ndim != 1:
        raise ValueError(f"ce must have 1 dimension, got shape {x.shape}")
    try:
        y = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"values must be numbers, got {type(values).__name__}") from exc
    if y.ndim != 1:
        raise ValueError(f"values must have 1 dimension, got shape {y.shape}")
    if not np.all(np.isfinite(y)) or np.any(y < 0) or np.any(y > 1):
        raise ValueError("values must be finite and in [0, 1] (a ranking metric)")
    same_length(ce=x, values=y)
    nonneg_int("n_boot", n_boot)
    nonneg_int("seed", seed)
    ci = coverage("ci_level", ci_level)
    if len(x) < 3:
        raise ValueError(f"a CE-to-{metric} map needs at least 3 cells, got {len(x)}")
    if len(np.unique(x)) < 2:
        raise ValueError(f"a CE-to-{metric} map needs at least 2 distinct CE values, got 1")

    loo = {k: _loo_rmse(k, x, y) for k in ("logistic", "isotonic")} if len(x) >= 4 else {}
    if kind == "auto":
        if loo and loo["isotonic"] < _ISOTONIC_MARGIN * loo["logistic"]:
            kind = "isotonic"
        else:
            kind = "logistic"
            try:
                _fit_form("logistic", x, y)
            except FitError:
                kind = "isotonic"
    f, params = _fit_form(kind, x, y)
    rmse = float(np.sqrt(np.mean((f(x) - y) ** 2)))

    grid = np.linspace(0.0, 1.25 * float(x.max()), 400)
    rng = np.random.default_rng(seed)
    curves = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(x), size=len(x))
        if len(np.unique(x[idx])) < 2:
            continue
        try:
            fb, _ = _fit_form(kind, x[idx], y[idx])
        except FitError:
            continue
        curves.append(fb(grid))
    boot = np.array(curves) if curves else np.empty((0, len(grid)))
    return MetricMap(
        metric=metric,
        kind=kind,
        params=params,
        ce=x,
        values=y,
        rmse=rmse,
        loo_rmse=loo,
        grid=grid,
        boot_curves=boot,
        ci_level=ci,
    )
