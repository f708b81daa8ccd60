"""Fitting the laws of :mod:`densescale.scaling.laws` to measured losses.

Method (as in Hoffmann et al. 2022 and Besiroglu et al. 2024): the parameters live in log space
(log A, log B, log delta; the exponents as they are), predictions are log-sum-exps, and the
objective is the mean Huber loss of the log residuals ``r = log L - log L_hat``::

    objective(theta) = mean_i huber_h(r_i) / h,   huber_h(r) = r^2/2 if |r| <= h else h(|r| - h/2)

A grid of starting points is scored, the best few are refined with L-BFGS-B (analytic gradient,
box bounds), and the best converged refinement wins. Confidence intervals come from a seeded
bootstrap (resampled log residuals by default, or resampled points; each replicate refitted from
the estimate; percentile intervals).
A fit whose optimum sits on a bound, or that does not converge, raises :class:`FitError`.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from ._checks import choice, nonneg_int, positive_array, positive_number, same_length
from .laws import ChinchillaLaw, DataSizeLaw, FitInfo, JointLaw, ModelSizeLaw

DEFAULT_HUBER_DELTA = 1e-3
DEFAULT_N_BOOT = 100
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
        label = f"log {name}" if name in ("A", "B", "delta") else name
        if v - lo < _BOUND_TOL * span:
            hint = (
                " (no irreducible loss visible: a pure power law fits)" if name == "delta" else ""
            )
            out.append(f"{label} = {v:.4g} at its lower bound {lo:.4g}{hint}")
        elif hi - v < _BOUND_TOL * span:
            out.append(f"{label} = {v:.4g} at its upper bound {hi:.4g}")
    return out


def _design_key(log_n, log_d, n):
    cols = [c for c in (log_n, log_d) if c is not None]
    return [tuple(c[i] for c in cols) for i in range(n)]


def _run(
    law_cls,
    log_n,
    log_d,
    L,
    *,
    starts,
    bounds,
    huber_delta,
    n_boot,
    seed,
    ci_level,
    bootstrap,
    n_polish=8,
):
    log_l = np.log(L)
    problem = _Problem(law_cls, log_n, log_d, log_l, bounds, huber_delta)
    theta, obj, ok = _best_fit(problem, starts, n_polish)
    law = law_cls._from_theta(theta)
    pred_log, _ = law_cls._log_predict(theta, log_n, log_d)
    pred = np.exp(pred_log)
    ss_tot = float(np.sum((L - L.mean()) ** 2))
    r2 = 1.0 - float(np.sum((L - pred) ** 2)) / ss_tot if ss_tot > 0 else float("nan")
    info = FitInfo(
        r2=r2,
        residuals=L - pred,
        log_residuals=log_l - pred_log,
        ci={},
        ci_level=ci_level,
        n_points=len(L),
        n_boot=0,
        objective=obj,
        huber_delta=huber_delta,
    )
    law = law.with_fit(info)
    if not ok:
        raise FitError(f"{law_cls.__name__} fit did not converge (L-BFGS-B)", law)
    hits = _bound_violations(problem, theta)
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
    if n_boot == 0:
        return law

    rng = np.random.default_rng(seed)
    n = len(L)
    p = len(law_cls.param_names)
    keys = _design_key(log_n, log_d, n)
    # residual bootstrap: the design (N, D grid) is fixed by the study, only the losses are noisy;
    # centred log residuals, inflated by sqrt(n / (n - p)) for the degrees of freedom the fit used
    resid = info.log_residuals - info.log_residuals.mean()
    resid = resid * np.sqrt(n / (n - p)) if n > p else resid
    samples = []
    for _ in range(n_boot if (bootstrap == "pairs" or n > p) else 0):
        if bootstrap == "residuals":
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
        sub = _Problem(
            law_cls,
            None if log_n is None else log_n[idx],
            None if log_d is None else log_d[idx],
            sample_l,
            bounds,
            huber_delta,
        )
        res = _minimize(sub, theta)
        if _converged(sub, res):
            samples.append(list(law_cls._from_theta(res.x).params.values()))
    boot = np.array(samples) if samples else np.empty((0, p))
    ci = {}
    if len(boot) >= 2:
        tail = 100.0 * (1.0 - ci_level) / 2.0
        lo, hi = np.percentile(boot, [tail, 100.0 - tail], axis=0)
        ci = {name: (float(lo[j]), float(hi[j])) for j, name in enumerate(law_cls.param_names)}
    info = FitInfo(
        r2=r2,
        residuals=info.residuals,
        log_residuals=info.log_residuals,
        ci=ci,
        ci_level=ci_level,
        n_points=n,
        n_boot=len(boot),
        objective=obj,
        huber_delta=huber_delta,
        bootstrap=boot,
    )
    return law.with_fit(info)


def _common_options(n_boot, seed, huber_delta, ci_level, bootstrap):
    choice("bootstrap", bootstrap, ("residuals", "pairs"))
    nonneg_int("n_boot", n_boot)
    nonneg_int("seed", seed)
    positive_number("huber_delta", huber_delta)
    level = positive_number("ci_level", ci_level)
    if not level < 1:
        raise ValueError(f"ci_level must be in (0, 1), got {ci_level!r}")


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


def _single_law(law_cls, x_name, x, L, n_boot, seed, huber_delta, ci_level, bootstrap):
    x = positive_array(x_name, x)
    L = positive_array("L", L)
    same_length(**{x_name: x, "L": L})
    _common_options(n_boot, seed, huber_delta, ci_level, bootstrap)
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
    log_n, log_d = (log_x, None) if law_cls is ModelSizeLaw else (None, log_x)
    return _run(
        law_cls,
        log_n,
        log_d,
        L,
        starts=np.array(starts),
        bounds=bounds,
        huber_delta=huber_delta,
        n_boot=n_boot,
        seed=seed,
        ci_level=ci_level,
        bootstrap=bootstrap,
        n_polish=3,
    )


@_one_blas_thread
def fit_model_law(
    N,
    L,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    huber_delta: float = DEFAULT_HUBER_DELTA,
    ci_level: float = 0.95,
    bootstrap: str = "residuals",
) -> ModelSizeLaw:
    """Fit ``L(N) = (A/N)^alpha + delta`` to points ``(N_i, L_i)``.

    Args:
        N: (n,) model sizes (non-embedding parameters), > 0; at least 3 distinct values.
        L: (n,) losses (contrastive entropy), > 0.
        n_boot: bootstrap refits for the confidence intervals (0: none).
        seed: seed of the bootstrap resampling.
        huber_delta: Huber threshold on log-L residuals.
        ci_level: coverage of the percentile intervals in ``.ci``.
        bootstrap: "residuals" (refit the fitted curve plus resampled log residuals: the design is
            fixed; no intervals when there are no more points than parameters) or "pairs"
            (resample the points themselves).

    Returns:
        A fitted :class:`ModelSizeLaw` (``.params``, ``.predict``, ``.r2``, ``.ci``, ``.residuals``).

    Raises:
        ValueError / TypeError: bad input (before any fitting).
        FitError: optimum on a bound (e.g. no irreducible term) or no convergence; ``.law`` holds
            the best fit found.
    """
    return _single_law(ModelSizeLaw, "N", N, L, n_boot, seed, huber_delta, ci_level, bootstrap)


@_one_blas_thread
def fit_data_law(
    D,
    L,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    huber_delta: float = DEFAULT_HUBER_DELTA,
    ci_level: float = 0.95,
    bootstrap: str = "residuals",
) -> DataSizeLaw:
    """Fit ``L(D) = (B/D)^beta + delta`` to points ``(D_i, L_i)``; D: (n,) annotated pairs.

    Same arguments, result and errors as :func:`fit_model_law`.
    """
    return _single_law(DataSizeLaw, "D", D, L, n_boot, seed, huber_delta, ci_level, bootstrap)


@_one_blas_thread
def fit_joint_law(
    N,
    D,
    L,
    *,
    form: str = "paper",
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    huber_delta: float = DEFAULT_HUBER_DELTA,
    ci_level: float = 0.95,
    bootstrap: str = "residuals",
) -> JointLaw | ChinchillaLaw:
    """Fit a joint law to points ``(N_i, D_i, L_i)``.

    ``form="paper"``: ``L = [(A/N)^(alpha/beta) + B/D]^beta + delta`` (:class:`JointLaw`);
    ``form="chinchilla"``: ``L = delta + A/N^alpha + B/D^beta`` (:class:`ChinchillaLaw`).

    Args:
        N, D, L: (n,) each, > 0; at least 5 distinct (N, D) points, 2 distinct N and 2 distinct D.
        Other arguments as in :func:`fit_model_law`.
    """
    choice("form", form, ("paper", "chinchilla"))
    N = positive_array("N", N)
    D = positive_array("D", D)
    L = positive_array("L", L)
    same_length(N=N, D=D, L=L)
    _common_options(n_boot, seed, huber_delta, ci_level, bootstrap)
    _min_points("a joint fit", len(set(zip(N.tolist(), D.tolist()))), 5)
    for name, x in (("N", N), ("D", D)):
        if len(np.unique(x)) < 2:
            raise ValueError(f"a joint fit needs at least 2 distinct values of {name}, got 1")
    law_cls = JointLaw if form == "paper" else ChinchillaLaw
    log_n, log_d = np.log(N), np.log(D)
    starts = []
    floors = L.min() * np.array([1e-3, 0.3, 0.7, 0.95])
    exps = [0.2, 0.5, 1.0, 2.0]
    for delta, alpha, beta in itertools.product(floors, exps, exps):
        reducible = max(L.max() - delta, 1e-3 * L.max())
        if form == "paper":
            # at the smallest N and D each term alone about equal to the reducible loss
            a0 = log_n.min() + np.log(reducible) / alpha
            b0 = log_d.min() + np.log(reducible) / beta
        else:
            a0 = np.log(reducible / 2) + alpha * log_n.min()
            b0 = np.log(reducible / 2) + beta * log_d.min()
        for da, db in itertools.product((-1.0, 1.0), (-1.0, 1.0)):
            starts.append([a0 + da, b0 + db, alpha, beta, np.log(delta)])
    if form == "paper":
        scale_bounds = [_scale_bounds(log_n), _scale_bounds(log_d)]
    else:
        scale_bounds = [(-200.0, 200.0 + 10.0 * log_n.max()), (-200.0, 200.0 + 10.0 * log_d.max())]
    bounds = scale_bounds + [_EXPONENT_BOUNDS, _EXPONENT_BOUNDS, _floor_bounds(L)]
    return _run(
        law_cls,
        log_n,
        log_d,
        L,
        starts=np.array(starts),
        bounds=bounds,
        huber_delta=huber_delta,
        n_boot=n_boot,
        seed=seed,
        ci_level=ci_level,
        bootstrap=bootstrap,
        n_polish=4,
    )


@dataclass(frozen=True, eq=False)  # holds arrays: identity equality
class ExtrapolationCheck:
    """A law fitted without the largest model (or data) sizes, scored on them.

    Attributes:
        law: the law fitted on the kept points.
        holdout: "N" or "D", the axis along which the largest values were held out.
        held_out_values: the held-out values of that axis, ascending.
        N, D: (m,) coordinates of the held-out points (None for the axis a law lacks).
        observed, predicted: (m,) losses at the held-out points.
        relative_error: (m,) ``(predicted - observed) / observed``.
    """

    law: ModelSizeLaw | DataSizeLaw | JointLaw | ChinchillaLaw
    holdout: str
    held_out_values: np.ndarray
    N: np.ndarray | None
    D: np.ndarray | None
    observed: np.ndarray
    predicted: np.ndarray
    relative_error: np.ndarray

    @property
    def mean_abs_relative_error(self) -> float:
        return float(np.mean(np.abs(self.relative_error)))

    @property
    def max_abs_relative_error(self) -> float:
        return float(np.max(np.abs(self.relative_error)))


def extrapolation_check(
    L,
    *,
    N=None,
    D=None,
    holdout: str | None = None,
    n_holdout: int = 1,
    form: str = "paper",
    n_boot: int = 0,
    seed: int = 0,
    huber_delta: float = DEFAULT_HUBER_DELTA,
) -> ExtrapolationCheck:
    """Fit on all but the ``n_holdout`` largest values of N (or D), predict the held-out points.

    The law follows from the coordinates given: ``N`` only -> model-size law, ``D`` only ->
    data-size law, both -> joint law of ``form`` (``holdout`` says which axis, default "N").

    Args:
        L: (n,) losses; N, D: (n,) coordinates.
        holdout: "N" or "D"; default the only axis given, or "N" for joint fits.
        n_holdout: how many of the largest distinct values to hold out (>= 1).
        form, n_boot, seed, huber_delta: passed to the fit (no bootstrap by default).

    Raises:
        ValueError: bad input, or too few points left to fit after holding out.
        FitError: the fit on the kept points failed.
    """
    if N is None and D is None:
        raise ValueError("extrapolation_check needs N, D or both, got neither")
    L = positive_array("L", L)
    N = None if N is None else positive_array("N", N)
    D = None if D is None else positive_array("D", D)
    same_length(L=L, **{k: v for k, v in (("N", N), ("D", D)) if v is not None})
    if holdout is None:
        holdout = "D" if N is None else "N"
    choice("holdout", holdout, tuple(k for k, v in (("N", N), ("D", D)) if v is not None))
    if nonneg_int("n_holdout", n_holdout) < 1:
        raise ValueError(f"n_holdout must be >= 1, got {n_holdout}")
    axis = N if holdout == "N" else D
    values = np.unique(axis)
    if len(values) <= n_holdout:
        raise ValueError(
            f"holding out {n_holdout} value(s) of {holdout} leaves nothing to fit: "
            f"{len(values)} distinct value(s)"
        )
    held_values = values[-n_holdout:]
    held = np.isin(axis, held_values)
    keep = ~held
    opts = {"n_boot": n_boot, "seed": seed, "huber_delta": huber_delta}
    if N is not None and D is not None:
        law = fit_joint_law(N[keep], D[keep], L[keep], form=form, **opts)
        predicted = law.predict(N[held], D[held])
    elif N is not None:
        law = fit_model_law(N[keep], L[keep], **opts)
        predicted = law.predict(N[held])
    else:
        law = fit_data_law(D[keep], L[keep], **opts)
        predicted = law.predict(D[held])
    predicted = np.atleast_1d(np.asarray(predicted, dtype=float))
    observed = L[held]
    return ExtrapolationCheck(
        law=law,
        holdout=holdout,
        held_out_values=held_values,
        N=None if N is None else N[held],
        D=None if D is None else D[held],
        observed=observed,
        predicted=predicted,
        relative_error=(predicted - observed) / observed,
    )
