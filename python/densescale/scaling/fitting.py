"""Fitting the laws of :mod:`densescale.scaling.laws` to measured losses.

Method (as in Hoffmann et al. 2022 and Besiroglu et al. 2024): the parameters live in log space
(log A, log B, log delta; the exponents as they are), predictions are log-sum-exps, and the
objective is the mean Huber loss of the log residuals ``r = log L - log L_hat``::

    objective(theta) = mean_i huber_h(r_i) / h,   huber_h(r) = r^2/2 if |r| <= h else h(|r| - h/2)

A grid of starting points is scored, the best few are refined with L-BFGS-B (analytic gradient,
box bounds), and the best converged refinement wins. Confidence intervals come from a seeded
bootstrap (by default the fitted curve plus simulated log-noise at the residual scale, that
scale itself redrawn per replicate; or resampled residuals; or resampled points; each replicate
refitted from the estimate; percentile intervals).
A fit whose optimum sits on a bound, or that does not converge, raises :class:`FitError`.
Every ``fit_*`` function takes the keyword options of :class:`FitOptions`. The forecast check
(a law refitted without its largest sizes) is in :mod:`densescale.scaling.forecast`.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from dataclasses import dataclass, fields, replace

import numpy as np
from scipy.optimize import minimize

from ._checks import choice, coverage, nonneg_int, positive_array, positive_number, same_length
from .laws import (
    ChinchillaLaw,
    DataSizeLaw,
    EmbeddingDimLaw,
    FitInfo,
    JointLaw,
    ModelDimLaw,
    ModelSizeLaw,
)

DEFAULT_HUBER_DELTA = 1e-3
DEFAULT_N_BOOT = 100
DEFAULT_BOOTSTRAP = "parametric"
# the irreducible term may not shrink below this fraction of the smallest loss: below it the fit
# has no floor at all (a pure power law) and delta is not identified
_MIN_DELTA_FRACTION = 1e-4
# below this share of the predicted loss everywhere, the power-law part is not seen in the data
_MIN_REDUCIBLE_FRACTION = 1e-3
_EXPONENT_BOUNDS = (1e-3, 10.0)
_BOUND_TOL = 1e-4


def _one_blas_thread(fn):
    """Run ``fn`` with BLAS limited to one thread.

    L-BFGS-B makes thousands of tiny BLAS calls; on a busy machine a multi-threaded OpenBLAS turns
    each into a thread rendezvous and a 50 ms fit into seconds. threadpoolctl is optional.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - depends on the environment
            limit = contextlib.nullcontext()
        else:
            limit = threadpool_limits(limits=1, user_api="blas")
        with limit:
            return fn(*args, **kwargs)

    return wrapper


class FitError(RuntimeError):
    """A fit that cannot be trusted: it sits on a bound or did not converge.

    Attributes:
        reason: what went wrong, in words.
        law: the best law found (with its FitInfo, without bootstrap), or None.
    """

    def __init__(self, reason: str, law=None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.law = law


@dataclass(frozen=True)
class FitOptions:
    """The keyword options every ``fit_*`` function (and :func:`forecast_check`) takes.

    Attributes:
        n_boot: bootstrap refits for the confidence intervals (0: none).
        seed: seed of the bootstrap resampling.
        huber_delta: Huber threshold on log-L residuals.
        ci_level: coverage of the percentile intervals in ``.ci``.
        bootstrap: "parametric" (default: refit the fitted curve plus Gaussian log-noise at the
            residual standard error, its scale redrawn per replicate from its chi-square
            distribution with n - p degrees of freedom, so that few points still give nominal
            coverage), "residuals" (the fitted curve plus resampled log residuals; narrower than
            nominal with few points) or "pairs" (resample the points themselves; wider). The
            first two keep the design fixed and give no intervals when there are no more points
            than parameters.
    """

    n_boot: int = DEFAULT_N_BOOT
    seed: int = 0
    huber_delta: float = DEFAULT_HUBER_DELTA
    ci_level: float = 0.95
    bootstrap: str = DEFAULT_BOOTSTRAP

    def __post_init__(self) -> None:
        choice("bootstrap", self.bootstrap, ("parametric", "residuals", "pairs"))
        nonneg_int("n_boot", self.n_boot)
        nonneg_int("seed", self.seed)
        positive_number("huber_delta", self.huber_delta)
        coverage("ci_level", self.ci_level)

    @classmethod
    def of(cls, caller: str, options: dict) -> FitOptions:
        """Check the keyword options a ``fit_*`` function received (unknown names: TypeError)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(
                f"{caller}() got unexpected keyword argument(s) {unknown}; options are "
                f"{sorted(known)}"
            )
        return cls(**options)


@dataclass(frozen=True)
class _Problem:
    law_cls: type
    log_n: np.ndarray | None  # (n,)
    log_d: np.ndarray | None  # (n,)
    log_l: np.ndarray  # (n,)
    bounds: list[tuple[float, float]]
    huber_delta: float

    def objective(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        pred, jac = self.law_cls._log_predict(theta, self.log_n, self.log_d)
        r = self.log_l - pred
        h = self.huber_delta
        a = np.abs(r)
        loss = np.where(a <= h, 0.5 * r * r, h * (a - 0.5 * h)) / h
        dloss = np.clip(r, -h, h) / h  # d loss / d r
        n = r.shape[0]
        return float(loss.sum() / n), -(dloss @ jac) / n

    def value(self, theta: np.ndarray) -> float:
        return self.objective(theta)[0]

    def resampled(self, idx: np.ndarray, log_l: np.ndarray) -> _Problem:
        """The same problem on the points ``idx`` with the losses ``log_l`` (a bootstrap)."""
        return replace(
            self,
            log_n=None if self.log_n is None else self.log_n[idx],
            log_d=None if self.log_d is None else self.log_d[idx],
            log_l=log_l,
        )


def _minimize(problem: _Problem, start: np.ndarray):
    x0 = np.clip(start, [b[0] for b in problem.bounds], [b[1] for b in problem.bounds])
    res = minimize(
        problem.objective,
        x0,
        jac=True,
        method="L-BFGS-B",
        bounds=problem.bounds,
        options={"maxiter": 1000, "ftol": 1e-12, "gtol": 1e-9},
    )
    return res


def _converged(problem: _Problem, res) -> bool:
    if res.success:
        return True
    # Huber kinks can end the line search early at the optimum: accept when the projected
    # gradient is negligible anyway
    lo = np.array([b[0] for b in problem.bounds])
    hi = np.array([b[1] for b in problem.bounds])
    g = np.asarray(res.jac, dtype=float).copy()
    g[(res.x <= lo + 1e-12) & (g > 0)] = 0.0
    g[(res.x >= hi - 1e-12) & (g < 0)] = 0.0
    return bool(np.all(np.isfinite(g)) and np.max(np.abs(g)) < 1e-5)


def _best_fit(problem: _Problem, starts: np.ndarray, n_polish: int):
    """Score every start, refine the best ``n_polish``; return (theta, objective, converged)."""
    scores = np.array([problem.value(s) for s in starts])
    order = np.argsort(np.where(np.isfinite(scores), scores, np.inf))[:n_polish]
    best = None
    for i in order:
        res = _minimize(problem, starts[i])
        ok = _converged(problem, res)
        key = (not ok, float(res.fun))
        if best is None or key < best[0]:
            best = (key, res.x, float(res.fun), ok)
    assert best is not None
    return best[1], best[2], best[3]


def _bound_violations(problem: _Problem, theta: np.ndarray) -> list[str]:
    names = problem.law_cls.param_names
    out = []
    for name, v, (lo, hi) in zip(names, theta, problem.bounds):
        span = hi - lo
        label = f"log {name}" if name in _LOG_NAMES else name
        if v - lo < _BOUND_TOL * span:
            hint = "; no irreducible loss visible: a pure power law fits" if name == "delta" else ""
            out.append(f"{name} at its lower bound ({label} = {v:.4g}, bound {lo:.4g}{hint})")
        elif hi - v < _BOUND_TOL * span:
            out.append(f"{name} at its upper bound ({label} = {v:.4g}, bound {hi:.4g})")
    return out


# the parameters fitted as logs (their bounds are on the log)
_LOG_NAMES = ("A", "B", "C", "delta")


def _run(law_cls, log_n, log_d, L, *, starts, bounds, opts: FitOptions, n_polish=8):
    """Fit ``law_cls`` from ``starts`` within ``bounds``, check it, then bootstrap it."""
    log_l = np.log(L)
    problem = _Problem(law_cls, log_n, log_d, log_l, bounds, opts.huber_delta)
    theta, obj, ok = _best_fit(problem, starts, n_polish)
    law = law_cls._from_theta(theta)
    pred_log, _ = law_cls._log_predict(theta, log_n, log_d)
    pred = np.exp(pred_log)
    ss_tot = float(np.sum((L - L.mean()) ** 2))
    r2 = 1.0 - float(np.sum((L - pred) ** 2)) / ss_tot if ss_tot > 0 else float("nan")
    n, p = len(L), len(law_cls.param_names)
    noise_scale = float(np.sqrt(np.sum((log_l - pred_log) ** 2) / (n - p))) if n > p else None
    hits = _bound_violations(problem, theta)
    x_range = _x_range(law_cls, log_n, log_d)
    info = FitInfo(
        r2=r2,
        residuals=L - pred,
        log_residuals=log_l - pred_log,
        ci={},
        ci_level=opts.ci_level,
        n_points=n,
        n_boot=0,
        objective=obj,
        huber_delta=opts.huber_delta,
        noise_scale=noise_scale,
        bound_hits=tuple(hits),
        converged=bool(ok),
        x_range=x_range,
    )
    law = law.with_fit(info)
    if not ok:
        raise FitError(f"{law_cls.__name__} fit did not converge (L-BFGS-B)", law)
    if hits:
        raise FitError(f"{law_cls.__name__} fit sits on a bound: " + "; ".join(hits), law)
    reducible = 1.0 - law.delta / pred
    if reducible.max() < _MIN_REDUCIBLE_FRACTION:
        # the power-law terms vanish over the data: a constant fit, their constants unidentified
        raise FitError(
            f"{law_cls.__name__} fit shows no scaling: the power-law part is below "
            f"{_MIN_REDUCIBLE_FRACTION:.0e} of the loss at every point (the loss does not fall "
            "with size here)",
            law,
        )
    if opts.n_boot == 0:
        return law
    boot = _bootstrap(problem, theta, pred_log, info, opts)
    ci = {}
    if len(boot) >= 2:
        tail = 100.0 * (1.0 - opts.ci_level) / 2.0
        # Weibull positions p (n + 1): their expected coverage is the nominal level at any
        # n_boot (the default linear rule covers ~90% with 40 refits, ~93% with 100)
        lo, hi = np.percentile(boot, [tail, 100.0 - tail], axis=0, method="weibull")
        ci = {name: (float(lo[j]), float(hi[j])) for j, name in enumerate(law_cls.param_names)}
    return law.with_fit(replace(info, ci=ci, n_boot=len(boot), bootstrap=boot))


def _x_range(law_cls, log_n, log_d) -> dict[str, tuple[float, float]]:
    """The sizes fitted, by name: (smallest, largest) of each axis the law has."""
    names = getattr(law_cls, "axes", None) or (law_cls.axis,)
    if len(names) == 1:
        columns = [log_n if log_d is None else log_d]
    else:
        columns = [log_n, log_d]
    return {
        name: (float(np.exp(c.min())), float(np.exp(c.max()))) for name, c in zip(names, columns)
    }


def _bootstrap(problem: _Problem, theta, pred_log, info: FitInfo, opts: FitOptions) -> np.ndarray:
    """(n_boot, p) parameter sets refitted from ``theta`` on resampled losses (converged only).

    The design (N, D grid) is fixed by the study, only the losses are noisy. "parametric":
    Gaussian log-noise at the residual standard error sigma = sqrt(sum r^2 / (n - p)), its
    scale redrawn per replicate as sigma * sqrt((n - p) / chi2(n - p)): with 8 points and 3
    parameters sigma itself is uncertain, and a fixed sigma (or resampled residuals, of which
    a near-L1 Huber fit makes p exactly 0) covers only ~89% at the 95% level (the t vs normal
    gap); the scale draw makes the replicates t-distributed and the intervals reach nominal
    coverage (tests/test_scaling_coverage.py). "residuals": centred log residuals resampled,
    inflated by sqrt(n / (n - p)). "pairs": the points themselves resampled.
    """
    law_cls, log_l = problem.law_cls, problem.log_l
    n, p = len(log_l), len(law_cls.param_names)
    rng = np.random.default_rng(opts.seed)
    cols = [c for c in (problem.log_n, problem.log_d) if c is not None]
    keys = [tuple(c[i] for c in cols) for i in range(n)]
    dof = n - p
    resid = info.log_residuals - info.log_residuals.mean()
    resid = resid * np.sqrt(n / dof) if dof > 0 else resid
    samples = []
    for _ in range(opts.n_boot if (opts.bootstrap == "pairs" or dof > 0) else 0):
        if opts.bootstrap == "parametric":
            idx = np.arange(n)
            scale = info.noise_scale * np.sqrt(dof / rng.chisquare(dof))
            sample_l = pred_log + scale * rng.standard_normal(n)
        elif opts.bootstrap == "residuals":
            idx = np.arange(n)
            sample_l = pred_log + resid[rng.integers(0, n, size=n)]
        else:
            for _attempt in range(20):
                idx = rng.integers(0, n, size=n)
                if len({keys[i] for i in idx}) >= p:  # fewer distinct points than parameters
                    break
            else:
                continue
            sample_l = log_l[idx]
        sub = problem.resampled(idx, sample_l)
        res = _minimize(sub, theta)
        if _converged(sub, res):
            samples.append(list(law_cls._from_theta(res.x).params.values()))
    return np.array(samples) if samples else np.empty((0, p))


def _min_points(what: str, n_distinct: int, needed: int) -> None:
    if n_distinct < needed:
        raise ValueError(
            f"{what} needs at least {needed} distinct points (one per parameter), got {n_distinct}"
        )


def _floor_bounds(L: np.ndarray) -> tuple[float, float]:
    return (float(np.log(L.min() * _MIN_DELTA_FRACTION)), float(np.log(L.max())))


def _scale_bounds(log_x: np.ndarray) -> tuple[float, float]:
    # wide: a small exponent puts the scale constant many orders of magnitude from the data
    return (float(log_x.min() - 200.0), float(log_x.max() + 200.0))


def _single_law(caller, law_cls, x_name, x, L, options):
    x = positive_array(x_name, x)
    L = positive_array("L", L)
    same_length(**{x_name: x, "L": L})
    opts = FitOptions.of(caller, options)
    _min_points(f"fitting {law_cls.formula}", len(np.unique(x)), 3)
    log_x = np.log(x)
    floors = L.min() * np.array([1e-3, 0.1, 0.5, 0.9])
    starts = []
    for delta, exponent in itertools.product(floors, [0.1, 0.25, 0.5, 1.0, 2.0]):
        # put the curve through the loss of the smallest x: (C/x_min)^e = L_max - delta
        reducible = max(L.max() - delta, 1e-3 * L.max())
        log_c = log_x.min() + np.log(reducible) / exponent
        for shift in (-1.0, 0.0, 1.0):
            starts.append([log_c + shift, exponent, np.log(delta)])
    bounds = [_scale_bounds(log_x), _EXPONENT_BOUNDS, _floor_bounds(L)]
    # the single axis goes in the first coordinate slot, except for D (the second)
    log_n, log_d = (None, log_x) if law_cls._slot == 1 else (log_x, None)
    return _run(
        law_cls, log_n, log_d, L, starts=np.array(starts), bounds=bounds, opts=opts, n_polish=3
    )


def _two_axis_law(caller, law_cls, first, second, L, options):
    (x_name, x), (y_name, y) = first, second
    x = positive_array(x_name, x)
    y = positive_array(y_name, y)
    L = positive_array("L", L)
    same_length(**{x_name: x, y_name: y, "L": L})
    opts = FitOptions.of(caller, options)
    _min_points("a joint fit", len(set(zip(x.tolist(), y.tolist()))), 5)
    for name, v in ((x_name, x), (y_name, y)):
        if len(np.unique(v)) < 2:
            raise ValueError(f"a joint fit needs at least 2 distinct values of {name}, got 1")
    paper_form = law_cls is not ChinchillaLaw
    log_x, log_y = np.log(x), np.log(y)
    starts = []
    floors = L.min() * np.array([1e-3, 0.3, 0.7, 0.95])
    exps = [0.2, 0.5, 1.0, 2.0]
    for delta, e1, e2 in itertools.product(floors, exps, exps):
        reducible = max(L.max() - delta, 1e-3 * L.max())
        if paper_form:
            # at the smallest sizes each term alone about equal to the reducible loss
            a0 = log_x.min() + np.log(reducible) / e1
            b0 = log_y.min() + np.log(reducible) / e2
        else:
            a0 = np.log(reducible / 2) + e1 * log_x.min()
            b0 = np.log(reducible / 2) + e2 * log_y.min()
        for da, db in itertools.product((-1.0, 1.0), (-1.0, 1.0)):
            starts.append([a0 + da, b0 + db, e1, e2, np.log(delta)])
    if paper_form:
        scale_bounds = [_scale_bounds(log_x), _scale_bounds(log_y)]
    else:
        scale_bounds = [(-200.0, 200.0 + 10.0 * log_x.max()), (-200.0, 200.0 + 10.0 * log_y.max())]
    bounds = scale_bounds + [_EXPONENT_BOUNDS, _EXPONENT_BOUNDS, _floor_bounds(L)]
    return _run(
        law_cls, log_x, log_y, L, starts=np.array(starts), bounds=bounds, opts=opts, n_polish=4
    )


@_one_blas_thread
def fit_model_law(N, L, **options) -> ModelSizeLaw:
    """Fit ``L(N) = (A/N)^alpha + delta`` to points ``(N_i, L_i)``.

    Args:
        N: (n,) model sizes (non-embedding parameters), > 0; at least 3 distinct values.
        L: (n,) losses (contrastive entropy), > 0.
        **options: the keyword options of :class:`FitOptions`: ``n_boot`` (bootstrap refits,
            default 100; 0: none), ``seed``, ``huber_delta``, ``ci_level`` (default 0.95) and
            ``bootstrap`` ("parametric", "residuals" or "pairs").

    Returns:
        A fitted :class:`ModelSizeLaw` (``.params``, ``.predict``, ``.r2``, ``.ci``, ``.residuals``).

    Raises:
        ValueError / TypeError: bad input (before any fitting).
        FitError: optimum on a bound (e.g. no irreducible term) or no convergence; ``.law`` holds
            the best fit found.
    """
    return _single_law("fit_model_law", ModelSizeLaw, "N", N, L, options)


@_one_blas_thread
def fit_data_law(D, L, **options) -> DataSizeLaw:
    """Fit ``L(D) = (B/D)^beta + delta`` to points ``(D_i, L_i)``; D: (n,) annotated pairs.

    Same arguments, result and errors as :func:`fit_model_law`.
    """
    return _single_law("fit_data_law", DataSizeLaw, "D", D, L, options)


@_one_blas_thread
def fit_dim_law(d, L, **options) -> EmbeddingDimLaw:
    """Fit ``L(d) = (C/d)^gamma + delta`` to points ``(d_i, L_i)``; d: (n,) embedding dimensions
    (at least 3 distinct), at one model size and data size.

    Same arguments, result and errors as :func:`fit_model_law`.
    """
    return _single_law("fit_dim_law", EmbeddingDimLaw, "d", d, L, options)


@_one_blas_thread
def fit_joint_law(N, D, L, *, form: str = "paper", **options) -> JointLaw | ChinchillaLaw:
    """Fit a joint law to points ``(N_i, D_i, L_i)``.

    ``form="paper"``: ``L = [(A/N)^(alpha/beta) + B/D]^beta + delta`` (:class:`JointLaw`);
    ``form="chinchilla"``: ``L = delta + A/N^alpha + B/D^beta`` (:class:`ChinchillaLaw`).

    Args:
        N, D, L: (n,) each, > 0; at least 5 distinct (N, D) points, 2 distinct N and 2 distinct D.
        **options: as in :func:`fit_model_law` (:class:`FitOptions`).
    """
    choice("form", form, ("paper", "chinchilla"))
    law_cls = JointLaw if form == "paper" else ChinchillaLaw
    return _two_axis_law("fit_joint_law", law_cls, ("N", N), ("D", D), L, options)


@_one_blas_thread
def fit_model_dim_law(N, d, L, *, D: float | None = None, **options) -> ModelDimLaw:
    """Fit ``L(N, d) = [(A/N)^(alpha/gamma) + C/d]^gamma + delta`` to points ``(N_i, d_i, L_i)``.

    Args:
        N, d, L: (n,) each, > 0 (d: embedding dimensions); at least 5 distinct (N, d) points,
            2 distinct N and 2 distinct d.
        D: the data size all points share (kept on the law for budget answers), or None.
        **options: as in :func:`fit_model_law` (:class:`FitOptions`).
    """
    if D is not None:
        D = positive_number("D", D)
    law = _two_axis_law("fit_model_dim_law", ModelDimLaw, ("N", N), ("d", d), L, options)
    return replace(law, D=D)
