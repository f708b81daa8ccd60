"""Scaling laws of dense retrieval (Fang et al., SIGIR 2024, eqs. 3-5) as frozen dataclasses.

Each law holds its constants, predicts the loss (contrastive entropy, nats), and derives the model
size or data size needed for a target loss. A fitted law also carries its :class:`FitInfo`
(R^2, residuals, bootstrap confidence intervals), exposed as ``.r2``, ``.ci`` and ``.residuals``.

Predictions are computed in log space with log-sum-exp, e.g. for the model-size law
``log L = logaddexp(alpha * (log A - log N), log delta)``, so they stay finite over many orders of
magnitude. The same functions (with their Jacobians in the log-space parameters) drive the fits in
:mod:`densescale.scaling.fitting`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np

from ._checks import positive_values


@dataclass(frozen=True, eq=False)  # holds arrays: identity equality
class FitInfo:
    """How well a law fits the points it was fitted on.

    Attributes:
        r2: coefficient of determination on L (not log L): ``1 - sum (L - L_hat)^2 / sum (L - mean L)^2``.
        residuals: ``L - L_hat``, shape (n,), in the order of the input points.
        log_residuals: ``log L - log L_hat``, shape (n,) (what the Huber loss saw).
        ci: parameter name -> (lo, hi), percentile bootstrap interval at ``ci_level``; empty when
            the fit ran without bootstrap.
        ci_level: e.g. 0.95.
        n_points: number of points fitted.
        n_boot: number of bootstrap refits that succeeded (0 when none ran).
        objective: mean Huber loss at the optimum.
        huber_delta: the Huber threshold on log-L residuals.
        bootstrap: (n_boot, n_params) bootstrap estimates of the parameters in ``params`` order,
            or None.
        noise_scale: the noise of one measurement in log L, ``sqrt(sum r_i^2 / (n - p))``
            (None when ``n <= p``); a new observation is ``L_hat * exp(noise)``.
        bound_hits: one phrase per parameter that sits on a bound of the fit's search box,
            e.g. "delta at its lower bound (log delta = -9.2, bound -9.21)"; empty for a law
            whose optimum is inside the box (a :class:`~densescale.scaling.FitError` carries
            the law with its hits).
        converged: whether L-BFGS-B converged at the optimum.
        x_range: name of each size -> (smallest, largest) value fitted, e.g. {"N": (5e5, 8.6e7)}.
    """

    r2: float
    residuals: np.ndarray
    log_residuals: np.ndarray
    ci: Mapping[str, tuple[float, float]]
    ci_level: float
    n_points: int
    n_boot: int
    objective: float
    huber_delta: float
    bootstrap: np.ndarray | None = field(default=None, repr=False)
    noise_scale: float | None = None
    bound_hits: tuple[str, ...] = ()
    converged: bool = True
    x_range: Mapping[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Law:
    """Shared behaviour: ``params``, fit diagnostics, log-space parameter vector."""

    param_names: ClassVar[tuple[str, ...]] = ()
    formula: ClassVar[str] = ""
    fit: FitInfo | None = field(default=None, kw_only=True, compare=False, repr=False)

    @property
    def params(self) -> dict[str, float]:
        """The constants by name (as in the paper's table)."""
        return {k: float(getattr(self, k)) for k in self.param_names}

    @property
    def r2(self) -> float | None:
        return None if self.fit is None else self.fit.r2

    @property
    def ci(self) -> dict[str, tuple[float, float]]:
        return {} if self.fit is None else dict(self.fit.ci)

    @property
    def residuals(self) -> np.ndarray | None:
        return None if self.fit is None else self.fit.residuals

    def with_fit(self, fit: FitInfo | None):
        return replace(self, fit=fit)

    def interval(
        self, *coords, level: float | None = None, observation: bool = False, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Bootstrap interval of the prediction at ``coords`` (as ``predict`` takes them).

        Percentiles of ``predict`` over the bootstrap parameter sets (``fit.bootstrap``), at
        ``level`` (default the fit's ``ci_level``). ``observation=True`` gives the interval of a
        new measurement instead: each bootstrap curve times ``exp(noise_scale * t)``, ``t`` drawn
        from Student's t with ``n - p`` degrees of freedom (seeded). None without a bootstrap.
        """
        if self.fit is None or self.fit.bootstrap is None or len(self.fit.bootstrap) < 2:
            return None
        level = self.fit.ci_level if level is None else float(level)
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level!r}")
        boot = self.fit.bootstrap
        preds = np.stack(
            [
                np.asarray(type(self)(**dict(zip(self.param_names, row))).predict(*coords))
                for row in boot
            ]
        )
        if observation and self.fit.noise_scale:
            dof = max(self.fit.n_points - len(self.param_names), 1)
            rng = np.random.default_rng(seed)
            t = rng.standard_t(dof, size=preds.shape)
            preds = preds * np.exp(self.fit.noise_scale * t)
        tail = 100.0 * (1.0 - level) / 2.0
        lo, hi = np.percentile(preds, [tail, 100.0 - tail], axis=0, method="weibull")
        return _out(lo), _out(hi)

    def __post_init__(self) -> None:
        for k in self.param_names:
            v = getattr(self, k)
            if not np.isfinite(v) or v <= 0:
                raise ValueError(f"{type(self).__name__}.{k} must be finite and > 0, got {v!r}")

    def describe(self) -> str:
        """One line: the formula with the constants filled in, and R^2 when fitted."""
        text = self._filled_formula()
        if self.fit is not None:
            text += f"  (R^2 = {self.fit.r2:.4f}, {self.fit.n_points} points)"
        return text

    def __str__(self) -> str:
        return self.describe()

    def _filled_formula(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def _theta(self) -> np.ndarray:
        """The parameters in ``param_names`` order, scales and floors as logs (what is fitted)."""
        return np.array([np.log(v) if k in _LOG_SPACE else v for k, v in self.params.items()])

    @classmethod
    def _from_theta(cls, theta: np.ndarray):
        values = zip(cls.param_names, (float(t) for t in theta))
        return cls(**{k: float(np.exp(t)) if k in _LOG_SPACE else t for k, t in values})


# the parameters fitted in log space (the exponents are fitted as they are)
_LOG_SPACE = frozenset({"A", "B", "C", "delta"})


def _out(x: np.ndarray) -> float | np.ndarray:
    return float(x) if np.ndim(x) == 0 else x


def _lse(*terms: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """log(sum exp(terms)) and the softmax weights of each term (the derivative of the result)."""
    if len(terms) == 2:  # the common case, without stacking (fits call this thousands of times)
        a, b = terms
        out = np.logaddexp(a, b)
        return out, [np.exp(a - out), np.exp(b - out)]
    stacked = np.stack(np.broadcast_arrays(*terms))
    out = np.logaddexp.reduce(stacked, axis=0)
    return out, list(np.exp(stacked - out))


def _power_plus_floor(log_c: float, exponent: float, log_delta: float, log_x: np.ndarray):
    """log[(C/x)^e + delta] and its Jacobian w.r.t. (log C, e, log delta); shapes (n,), (n, 3)."""
    u = exponent * (log_c - log_x)
    out, (w_u, w_d) = _lse(u, log_delta)
    jac = np.empty(u.shape + (3,))
    jac[..., 0] = w_u * exponent
    jac[..., 1] = w_u * (log_c - log_x)
    jac[..., 2] = w_d
    return out, jac


@dataclass(frozen=True)
class _OneAxisLaw(_Law):
    """``L(x) = (S / x)^e + delta`` along one axis ``x``; ``param_names`` is (S, e, "delta").

    The subclasses name the axis and the constants; the algebra lives here once.
    """

    axis: ClassVar[str] = "x"
    # which slot of ``_log_predict(theta, log_n, log_d)`` holds the axis (D: the second)
    _slot: ClassVar[int] = 0

    @property
    def _scale_and_exponent(self) -> tuple[float, float]:
        return getattr(self, self.param_names[0]), getattr(self, self.param_names[1])

    def _predict(self, x) -> float | np.ndarray:
        log_x = np.log(positive_values(self.axis, x))
        slots = (log_x, None) if self._slot == 0 else (None, log_x)
        return _out(np.exp(self._log_predict(self._theta(), *slots)[0]))

    def _size_for_loss(self, target) -> float | np.ndarray:
        """``x = S * (target - delta)^(-1/e)``; inf where ``target <= delta``."""
        scale, exponent = self._scale_and_exponent
        t = positive_values("target", target)
        gap = t - self.delta
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(gap > 0, scale * np.abs(gap) ** (-1.0 / exponent), np.inf)
        return _out(x)

    @classmethod
    def _log_predict(cls, theta: np.ndarray, log_n: np.ndarray | None, log_d=None):
        return _power_plus_floor(theta[0], theta[1], theta[2], (log_n, log_d)[cls._slot])

    def _filled_formula(self) -> str:
        scale, exponent = self._scale_and_exponent
        x = self.axis
        return f"L({x}) = ({scale:.4g}/{x})^{exponent:.4g} + {self.delta:.4g}"


@dataclass(frozen=True)
class ModelSizeLaw(_OneAxisLaw):
    """Model-size law ``L(N) = (A / N)^alpha + delta``.

    N: non-embedding parameters (SPEC 1.2); L: contrastive entropy (nats); ``delta`` is the
    irreducible loss (the loss of an infinitely large model trained on this data).
    MS MARCO (paper): A = 3.22e4, alpha = 0.53, delta = 0.04.
    """

    A: float
    alpha: float
    delta: float

    param_names: ClassVar[tuple[str, ...]] = ("A", "alpha", "delta")
    formula: ClassVar[str] = "L(N) = (A/N)^alpha + delta"
    axis: ClassVar[str] = "N"

    def predict(self, N) -> float | np.ndarray:
        """Predicted loss at model size(s) ``N`` (any shape, > 0)."""
        return self._predict(N)

    def reducible(self, N) -> float | np.ndarray:
        """The part of the loss that more parameters can remove: ``(A/N)^alpha``."""
        n = positive_values("N", N)
        return _out(np.exp(self.alpha * (np.log(self.A) - np.log(n))))

    def N_for_loss(self, target) -> float | np.ndarray:
        """Model size needed to reach ``target``: ``N = A * (target - delta)^(-1/alpha)``.

        ``inf`` where ``target <= delta`` (out of reach at any size).
        """
        return self._size_for_loss(target)


@dataclass(frozen=True)
class DataSizeLaw(_OneAxisLaw):
    """Data-size law ``L(D) = (B / D)^beta + delta``.

    D: annotated (query, positive passage) pairs; L: contrastive entropy (nats).
    MS MARCO (paper): B = 3.49e3, beta = 1.05.
    """

    B: float
    beta: float
    delta: float

    param_names: ClassVar[tuple[str, ...]] = ("B", "beta", "delta")
    formula: ClassVar[str] = "L(D) = (B/D)^beta + delta"
    axis: ClassVar[str] = "D"
    _slot: ClassVar[int] = 1

    def predict(self, D) -> float | np.ndarray:
        """Predicted loss at data size(s) ``D`` (any shape, > 0)."""
        return self._predict(D)

    def D_for_loss(self, target) -> float | np.ndarray:
        """Annotations needed to reach ``target``: ``D = B * (target - delta)^(-1/beta)``; inf if
        ``target <= delta``."""
        return self._size_for_loss(target)


@dataclass(frozen=True)
class EmbeddingDimLaw(_OneAxisLaw):
    """Embedding-dimension law ``L(d) = (C / d)^gamma + delta``.

    d: output dimension of the encoder (the vector stored per passage); L: contrastive entropy
    (nats); ``delta``: the loss with unbounded vectors at this model and data size (Killingback
    et al. 2026 report such a power law in d).
    """

    C: float
    gamma: float
    delta: float

    param_names: ClassVar[tuple[str, ...]] = ("C", "gamma", "delta")
    formula: ClassVar[str] = "L(d) = (C/d)^gamma + delta"
    axis: ClassVar[str] = "d"

    def predict(self, d) -> float | np.ndarray:
        """Predicted loss at embedding dimension(s) ``d`` (any shape, > 0)."""
        return self._predict(d)

    def d_for_loss(self, target) -> float | np.ndarray:
        """Dimension needed to reach ``target``: ``d = C * (target - delta)^(-1/gamma)``; inf if
        ``target <= delta``."""
        return self._size_for_loss(target)


@dataclass(frozen=True)
class _TwoAxisLaw(_Law):
    """A law of two sizes; ``_log_predict(theta, log_x, log_y)`` takes them in ``axes`` order."""

    axes: ClassVar[tuple[str, str]] = ("N", "D")

    def _predict(self, x, y) -> float | np.ndarray:
        (x_name, y_name) = self.axes
        x, y = np.broadcast_arrays(positive_values(x_name, x), positive_values(y_name, y))
        return _out(np.exp(self._log_predict(self._theta(), np.log(x), np.log(y))[0]))

    def _targets(self, target, size, name: str) -> tuple[np.ndarray, np.ndarray]:
        return np.broadcast_arrays(positive_values("target", target), positive_values(name, size))


@dataclass(frozen=True)
class _LawOfNAndD(_TwoAxisLaw):
    """A law of model size N and data size D with the constants A, B, alpha, beta, delta (the
    paper's joint form and the additive one read them differently)."""

    A: float
    B: float
    alpha: float
    beta: float
    delta: float

    param_names: ClassVar[tuple[str, ...]] = ("A", "B", "alpha", "beta", "delta")

    def predict(self, N, D) -> float | np.ndarray:
        """Predicted loss; ``N`` and ``D`` broadcast against each other (any shapes, > 0)."""
        return self._predict(N, D)


@dataclass(frozen=True)
class JointLaw(_LawOfNAndD):
    """Joint law (the paper's form) ``L(N, D) = [(A/N)^(alpha/beta) + B/D]^beta + delta``.

    With D -> inf it reduces to the model-size law ``(A/N)^alpha + delta``; with N -> inf to the
    data-size law ``(B/D)^beta + delta``. MS MARCO (paper): A = 3.6e4, B = 7.1e3, alpha = 0.56,
    beta = 1.31, delta = 0.03.
    """

    formula: ClassVar[str] = "L(N, D) = [(A/N)^(alpha/beta) + B/D]^beta + delta"

    def at_infinite_data(self) -> ModelSizeLaw:
        """The model-size law this joint law tends to as D -> inf."""
        return ModelSizeLaw(A=self.A, alpha=self.alpha, delta=self.delta)

    def at_infinite_model(self) -> DataSizeLaw:
        """The data-size law this joint law tends to as N -> inf."""
        return DataSizeLaw(B=self.B, beta=self.beta, delta=self.delta)

    def D_for_loss(self, target, N) -> float | np.ndarray:
        """Annotations needed at model size ``N``:
        ``D = B / ((target - delta)^(1/beta) - (A/N)^(alpha/beta))``; inf when unreachable."""
        t, n = self._targets(target, N, "N")
        gap = np.clip(t - self.delta, 0.0, None) ** (1.0 / self.beta)
        rest = gap - (self.A / n) ** (self.alpha / self.beta)
        with np.errstate(divide="ignore"):
            return _out(np.where(rest > 0, self.B / np.where(rest > 0, rest, 1.0), np.inf))

    def N_for_loss(self, target, D) -> float | np.ndarray:
        """Model size needed with ``D`` annotations:
        ``N = A * ((target - delta)^(1/beta) - B/D)^(-beta/alpha)``; inf when unreachable."""
        t, d = self._targets(target, D, "D")
        gap = np.clip(t - self.delta, 0.0, None) ** (1.0 / self.beta)
        rest = gap - self.B / d
        safe = np.where(rest > 0, rest, 1.0)
        return _out(np.where(rest > 0, self.A * safe ** (-self.beta / self.alpha), np.inf))

    @staticmethod
    def _log_predict(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray):
        a, b, alpha, beta, e = theta
        # s = log[(A/N)^(alpha/beta) + B/D];  log L = logaddexp(beta * s, log delta)
        s, (p1, p2) = _lse((alpha / beta) * (a - log_n), b - log_d)
        t = beta * s
        out, (w_t, w_e) = _lse(t, e)
        jac = np.stack(
            [
                w_t * p1 * alpha,
                w_t * p2 * beta,
                w_t * p1 * (a - log_n),
                w_t * (s - p1 * (alpha / beta) * (a - log_n)),
                w_e,
            ],
            axis=-1,
        )
        return out, jac

    def _filled_formula(self) -> str:
        return (
            f"L(N, D) = [({self.A:.4g}/N)^({self.alpha:.4g}/{self.beta:.4g}) + {self.B:.4g}/D]"
            f"^{self.beta:.4g} + {self.delta:.4g}"
        )


@dataclass(frozen=True)
class ChinchillaLaw(_LawOfNAndD):
    """Additive joint law (Hoffmann et al. 2022) ``L(N, D) = delta + A/N^alpha + B/D^beta``.

    ``delta`` plays the role of Chinchilla's ``E`` (also available as ``.E``). Note that A and B
    here are coefficients, not the scales of the paper's form.
    """

    formula: ClassVar[str] = "L(N, D) = delta + A/N^alpha + B/D^beta"

    @property
    def E(self) -> float:
        return self.delta

    def D_for_loss(self, target, N) -> float | np.ndarray:
        """``D = (B / (target - delta - A/N^alpha))^(1/beta)``; inf when unreachable."""
        t, n = self._targets(target, N, "N")
        return _additive_inverse(t - self.delta - self.A / n**self.alpha, self.B, self.beta)

    def N_for_loss(self, target, D) -> float | np.ndarray:
        """``N = (A / (target - delta - B/D^beta))^(1/alpha)``; inf when unreachable."""
        t, d = self._targets(target, D, "D")
        return _additive_inverse(t - self.delta - self.B / d**self.beta, self.A, self.alpha)

    @staticmethod
    def _log_predict(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray):
        a, b, alpha, beta, e = theta
        out, (w1, w2, w3) = _lse(a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e))
        jac = np.stack([w1, w2, -w1 * log_n, -w2 * log_d, w3], axis=-1)
        return out, jac

    def _filled_formula(self) -> str:
        return (
            f"L(N, D) = {self.delta:.4g} + {self.A:.4g}/N^{self.alpha:.4g}"
            f" + {self.B:.4g}/D^{self.beta:.4g}"
        )


def _additive_inverse(rest: np.ndarray, coef: float, exponent: float) -> float | np.ndarray:
    """Solve ``coef / x^exponent = rest`` for x: ``(coef / rest)^(1/exponent)``; inf if rest <= 0."""
    safe = np.where(rest > 0, rest, 1.0)
    return _out(np.where(rest > 0, (coef / safe) ** (1.0 / exponent), np.inf))


@dataclass(frozen=True)
class ModelDimLaw(_TwoAxisLaw):
    """Joint law of model size and embedding dimension, in the paper's joint form::

        L(N, d) = [(A/N)^(alpha/gamma) + C/d]^gamma + delta

    With d -> inf it reduces to the model-size law ``(A/N)^alpha + delta``; with N -> inf to the
    dimension law ``(C/d)^gamma + delta``. Fitted at one data size D (``D`` records it, or None).
    """

    A: float
    C: float
    alpha: float
    gamma: float
    delta: float
    D: float | None = field(default=None, kw_only=True, compare=False)

    param_names: ClassVar[tuple[str, ...]] = ("A", "C", "alpha", "gamma", "delta")
    formula: ClassVar[str] = "L(N, d) = [(A/N)^(alpha/gamma) + C/d]^gamma + delta"
    axes: ClassVar[tuple[str, str]] = ("N", "d")

    def predict(self, N, d) -> float | np.ndarray:
        """Predicted loss; ``N`` and ``d`` broadcast against each other (any shapes, > 0)."""
        return self._predict(N, d)

    def at_infinite_dim(self) -> ModelSizeLaw:
        """The model-size law this law tends to as d -> inf."""
        return ModelSizeLaw(A=self.A, alpha=self.alpha, delta=self.delta)

    def at_infinite_model(self) -> EmbeddingDimLaw:
        """The dimension law this law tends to as N -> inf."""
        return EmbeddingDimLaw(C=self.C, gamma=self.gamma, delta=self.delta)

    # the same algebra as the paper's L(N, D), with (C, gamma, d) in place of (B, beta, D)
    _log_predict = staticmethod(JointLaw._log_predict)

    def _filled_formula(self) -> str:
        return (
            f"L(N, d) = [({self.A:.4g}/N)^({self.alpha:.4g}/{self.gamma:.4g}) + {self.C:.4g}/d]"
            f"^{self.gamma:.4g} + {self.delta:.4g}"
        )


Law = ModelSizeLaw | DataSizeLaw | JointLaw | ChinchillaLaw | EmbeddingDimLaw | ModelDimLaw
