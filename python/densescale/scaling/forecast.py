"""The forecast check: how far to trust a law beyond the sizes it was fitted on.

A law is refitted without the largest value(s) of one axis and asked to forecast the held-out
cells, which were measured; each observation is compared with the forecast and with the forecast's
bootstrap interval for a new measurement. SPEC 7 makes this one of the checks a law must pass
before it answers anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import fitting
from ._checks import choice, nonneg_int, positive_array, same_length
from .laws import Law

# the fit of each single axis
_FITS = {"N": fitting.fit_model_law, "D": fitting.fit_data_law, "d": fitting.fit_dim_law}


@dataclass(frozen=True, eq=False)  # holds arrays: identity equality
class ForecastCheck:
    """A law fitted without the largest sizes along one axis, then asked to forecast them.

    This is how to decide whether to trust an extrapolation: the held-out cells were measured, so
    the forecast ``L_hat`` (with its bootstrap interval for a new measurement, ``[lower, upper]``)
    is compared with what was observed; ``inside`` says whether each observation falls in it::

        relative_error = (predicted - observed) / observed

    Attributes:
        law: the law fitted on the kept points (with bootstrap when ``n_boot`` > 0).
        holdout: "N", "D" or "d", the axis along which the largest values were held out.
        held_out_values: the held-out values of that axis, ascending.
        N, D, d: (m,) coordinates of the held-out points (None for the axes a law lacks).
        observed, predicted: (m,) losses at the held-out points.
        relative_error: (m,) ``(predicted - observed) / observed``.
        lower, upper: (m,) the forecast interval of a new measurement at ``ci_level`` (bootstrap
            curves times the fit's measurement noise); NaN when the fit had no bootstrap.
        ci_level: e.g. 0.95.
    """

    law: Law
    holdout: str
    held_out_values: np.ndarray
    N: np.ndarray | None
    D: np.ndarray | None
    observed: np.ndarray
    predicted: np.ndarray
    relative_error: np.ndarray
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    ci_level: float = 0.95
    d: np.ndarray | None = None

    @property
    def mean_abs_relative_error(self) -> float:
        return float(np.mean(np.abs(self.relative_error)))

    @property
    def max_abs_relative_error(self) -> float:
        return float(np.max(np.abs(self.relative_error)))

    @property
    def has_intervals(self) -> bool:
        return self.lower is not None and bool(np.all(np.isfinite(self.lower)))

    @property
    def inside(self) -> np.ndarray | None:
        """(m,) bool: each observation inside its forecast interval; None without intervals."""
        if not self.has_intervals:
            return None
        return (self.observed >= self.lower) & (self.observed <= self.upper)

    @property
    def all_inside(self) -> bool | None:
        inside = self.inside
        return None if inside is None else bool(np.all(inside))

    def describe(self) -> str:
        """One line for a terminal, e.g. ``forecast of N = 1.1e+08 from smaller N: 1/1 inside the
        95% interval (CE 0.0581 observed, 0.0602 [0.0550, 0.0671] forecast, +3.6%)``."""
        held = ", ".join(f"{v:.3g}" for v in self.held_out_values)
        worst = int(np.argmax(np.abs(self.relative_error)))
        obs, pred = self.observed[worst], self.predicted[worst]
        what = f"CE {obs:.4g} observed, {pred:.4g}"
        if self.has_intervals:
            what += f" [{self.lower[worst]:.4g}, {self.upper[worst]:.4g}]"
        what += f" forecast, {100 * self.relative_error[worst]:+.1f}%"
        if len(self.observed) > 1:
            what = f"worst: {what}"
        head = f"forecast of {self.holdout} = {held} from smaller {self.holdout}"
        if not self.has_intervals:
            return f"{head}: {100 * self.mean_abs_relative_error:.1f}% mean error ({what})"
        k, m = int(np.sum(self.inside)), len(self.observed)
        verdict = f"{k}/{m} inside the {100 * self.ci_level:.0f}% interval"
        return f"{head}: {verdict} ({what})"


ExtrapolationCheck = ForecastCheck
"""Older name of :class:`ForecastCheck`."""


def forecast_check(
    L,
    *,
    N=None,
    D=None,
    d=None,
    holdout: str | None = None,
    n_holdout: int = 1,
    form: str = "paper",
    **options,
) -> ForecastCheck:
    """Fit on all but the ``n_holdout`` largest values of one axis, forecast the held-out points.

    The law follows from the coordinates given: ``N`` only -> model-size law, ``D`` only ->
    data-size law, ``d`` only -> dimension law, ``N`` and ``D`` -> joint law of ``form``, ``N``
    and ``d`` -> :class:`ModelDimLaw` (``holdout`` says which axis, default "N").

    Args:
        L: (n,) losses; N, D, d: (n,) coordinates.
        holdout: the axis to hold out along; default the only axis given, or "N" for joint laws.
        n_holdout: how many of the largest distinct values to hold out (>= 1).
        form: "paper" or "chinchilla" (N and D only).
        **options: passed to the fit (:class:`~densescale.scaling.fitting.FitOptions`: n_boot,
            seed, huber_delta, ci_level, bootstrap); ``n_boot = 0`` gives a check without
            intervals.

    Raises:
        ValueError: bad input, or too few points left to fit after holding out.
        FitError: the fit on the kept points failed.
    """
    given = {k: v for k, v in (("N", N), ("D", D), ("d", d)) if v is not None}
    if not given:
        raise ValueError("forecast_check needs N, D or both (or d, or N and d), got none")
    if len(given) == 3 or set(given) == {"D", "d"}:
        raise ValueError(f"forecast_check takes one axis, or N with D or d; got {sorted(given)}")
    L = positive_array("L", L)
    coords = {k: positive_array(k, v) for k, v in given.items()}
    same_length(L=L, **coords)
    if holdout is None:
        holdout = "N" if "N" in coords else next(iter(coords))
    choice("holdout", holdout, tuple(coords))
    if nonneg_int("n_holdout", n_holdout) < 1:
        raise ValueError(f"n_holdout must be >= 1, got {n_holdout}")
    axis = coords[holdout]
    values = np.unique(axis)
    if len(values) <= n_holdout:
        raise ValueError(
            f"holding out {n_holdout} value(s) of {holdout} leaves nothing to fit: "
            f"{len(values)} distinct value(s)"
        )
    held_values = values[-n_holdout:]
    held = np.isin(axis, held_values)
    keep = ~held
    kept = {k: v[keep] for k, v in coords.items()}
    at = {k: v[held] for k, v in coords.items()}
    if set(coords) == {"N", "D"}:
        law = fitting.fit_joint_law(kept["N"], kept["D"], L[keep], form=form, **options)
        args = (at["N"], at["D"])
    elif set(coords) == {"N", "d"}:
        law = fitting.fit_model_dim_law(kept["N"], kept["d"], L[keep], **options)
        args = (at["N"], at["d"])
    else:
        (name,) = coords
        law = _FITS[name](kept[name], L[keep], **options)
        args = (at[name],)
    opts = fitting.FitOptions.of("forecast_check", options)
    predicted = np.atleast_1d(np.asarray(law.predict(*args), dtype=float))
    band = law.interval(*args, observation=True, seed=opts.seed)
    lower = upper = None
    if band is not None:
        lower, upper = (np.atleast_1d(np.asarray(b, dtype=float)) for b in band)
    observed = L[held]
    return ForecastCheck(
        law=law,
        holdout=holdout,
        held_out_values=held_values,
        N=at.get("N"),
        D=at.get("D"),
        d=at.get("d"),
        observed=observed,
        predicted=predicted,
        relative_error=(predicted - observed) / observed,
        lower=lower,
        upper=upper,
        ci_level=opts.ci_level,
    )


def extrapolation_check(L, *, N=None, D=None, n_boot: int = 0, **kwargs) -> ForecastCheck:
    """:func:`forecast_check` without bootstrap by default (the older name and default)."""
    return forecast_check(L, N=N, D=D, n_boot=n_boot, **kwargs)
