"""Whether a fitted law may answer anything (SPEC 7): documented, configurable checks.

A law answers (budget allocations, forecasts beyond the data, CE-to-metric predictions,
effective-N / effective-data answers, curves drawn over the data) only when it passes every check
of :class:`LawChecks`; otherwise :func:`check_law` says in one line which check failed. The
checks, in the order they are judged:

1. ``fit``: the optimiser converged (L-BFGS-B), and the law shows scaling at all.
2. ``bound``: no parameter sits on a bound of the search box. A parameter on its bound is not
   estimated, it is wherever the box ends (e.g. a floor ``delta`` pinned at ~0 because no
   irreducible loss is visible, an exponent at its cap); every answer then moves with the box.
3. ``points``: at least ``min_points_over_params`` points per parameter. With as many points as
   parameters the curve passes through every point (R^2 = 1 by construction); with one more, the
   noise rests on a single degree of freedom. Below the margin R^2 and intervals are not evidence,
   so they are not judged (nor shown as evidence).
4. ``r2``: R^2 (on L) at least ``min_r2``.
5. ``intervals``: no parameter's bootstrap interval spans more than ``max_ci_decades`` decades
   (``log10(hi / lo)``; every constant of the laws is positive). A law fitted without a bootstrap
   passes unless ``require_intervals``.
6. ``forecast``: where a forecast check exists (the law refitted without its largest sizes), the
   held-out cells fall inside their forecast intervals (all but ``forecast_max_outside`` of
   them, rounded down), or, without intervals, within ``max_forecast_error`` of the forecast.

Pure: numpy only; the report (:mod:`densescale.report`) carries the verdict of each fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._checks import positive_number
from .forecast import ForecastCheck

CHECK_NAMES = ("fit", "bound", "points", "r2", "intervals", "forecast")
"""The checks of :func:`check_law`, in the order they are judged."""


@dataclass(frozen=True)
class LawChecks:
    """The thresholds a fitted law must meet before it answers anything.

    Attributes:
        min_r2: smallest R^2 on L. 0.95: the paper's weakest reported law (MS MARCO data size,
            0.954) passes; a law that leaves 5% or more of the variance of its own points
            unexplained does not describe them well enough to extrapolate.
        min_points_over_params: fewest points per parameter. 1.5: 5 points for a 3-parameter
            law (L(N), L(D), L(d)), 8 for the 5-parameter joint laws; a 3- or 4-point fit of a
            3-parameter law is never usable (its R^2 of ~1 is built in).
        max_ci_decades: widest a parameter's bootstrap interval may be, in decades of
            ``hi / lo``. 2.0: an interval of 100x means the data do not pin the constant down;
            an answer that depends on it can be anything in that range.
        require_intervals: a law without bootstrap intervals fails (default False: a fit run
            with ``n_boot = 0`` is judged on the other checks, and says it has no intervals).
        forecast: judge the forecast check where one exists (default True).
        max_forecast_error: without forecast intervals, the largest relative error of the
            forecast of a held-out cell. 0.1: ten per cent of the CE.
        forecast_max_outside: share of the held-out cells that may fall outside their 95%
            forecast interval, rounded down. 0.25: a correct law puts each cell outside with 5%
            chance, so demanding all m inside would fail it 1 - 0.95^m of the time (23% with the
            5 held-out cells of a joint law); a quarter (one of 4-7 cells, none of 1-3) keeps
            that near 2-3%, while a law that bends the wrong way misses most of them.
    """

    min_r2: float = 0.95
    min_points_over_params: float = 1.5
    max_ci_decades: float = 2.0
    require_intervals: bool = False
    forecast: bool = True
    max_forecast_error: float = 0.1
    forecast_max_outside: float = 0.25

    def __post_init__(self) -> None:
        if isinstance(self.min_r2, bool) or not isinstance(self.min_r2, (int, float)):
            raise TypeError(f"min_r2 must be a number, got {type(self.min_r2).__name__}")
        if not (math.isfinite(self.min_r2) and self.min_r2 <= 1):
            raise ValueError(f"min_r2 must be finite and <= 1, got {self.min_r2!r}")
        positive_number("min_points_over_params", self.min_points_over_params)
        positive_number("max_ci_decades", self.max_ci_decades)
        positive_number("max_forecast_error", self.max_forecast_error)
        positive_number("forecast_max_outside", self.forecast_max_outside, allow_zero=True)
        if self.forecast_max_outside >= 1:
            raise ValueError(
                f"forecast_max_outside must be in [0, 1), got {self.forecast_max_outside!r}"
            )
        for name in ("require_intervals", "forecast"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")

    def min_points(self, n_params: int) -> int:
        """Fewest points a law of ``n_params`` parameters needs."""
        return max(n_params + 1, math.ceil(self.min_points_over_params * n_params - 1e-9))


@dataclass(frozen=True)
class Usability:
    """The verdict of :func:`check_law`.

    Attributes:
        usable: True when every check passed.
        failed: names of the failed checks (of :data:`CHECK_NAMES`), in order.
        reasons: one phrase per failed check, e.g. "R^2 = 0.61 < 0.95".
        notes: what was not judged and why, e.g. "no intervals (fitted without bootstrap)".
        evidence: whether R^2 and the intervals mean anything (False below the points margin,
            where they must not be shown as evidence).
    """

    usable: bool
    failed: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    evidence: bool = True

    @property
    def line(self) -> str:
        """One line: "usable" (with what was not judged) or "not usable: <reasons>"."""
        if self.usable:
            return "usable" + (f" ({'; '.join(self.notes)})" if self.notes else "")
        return "not usable: " + "; ".join(self.reasons)


def ci_decades(law) -> dict[str, float]:
    """Width of each parameter's bootstrap interval in decades, ``log10(hi / lo)`` ({} without
    intervals; inf where the interval reaches 0)."""
    out = {}
    for name, (lo, hi) in law.ci.items():
        out[name] = math.log10(hi / lo) if lo > 0 and hi > 0 else math.inf
    return out


def check_law(
    law,
    checks: LawChecks | None = None,
    *,
    forecast: ForecastCheck | None = None,
    fit_error: str = "",
) -> Usability:
    """Judge a fitted law (with its :class:`~densescale.scaling.FitInfo`) against ``checks``.

    Args:
        law: a fitted law (``law.fit`` set; a law from ``FitError.law`` is judged too, and fails
            ``fit`` or ``bound``).
        checks: the thresholds (default :class:`LawChecks()`).
        forecast: the law's forecast check, when one was run.
        fit_error: the :class:`~densescale.scaling.FitError` message when the fit raised one
            (``law`` is then ``FitError.law``); a failure of ``fit`` unless the law's bound
            hits or non-convergence already explain it.

    Returns:
        :class:`Usability`; ``usable`` only when every check passed.
    """
    checks = LawChecks() if checks is None else checks
    if not isinstance(checks, LawChecks):
        raise TypeError(f"checks must be a LawChecks, got {type(checks).__name__}")
    info = getattr(law, "fit", None)
    if info is None:
        return Usability(False, ("fit",), ("not fitted (no fit diagnostics)",), evidence=False)
    failed: list[tuple[str, str]] = []
    notes: list[str] = []
    if not info.converged:
        failed.append(("fit", "the fit did not converge"))
    elif fit_error and not info.bound_hits:
        failed.append(("fit", fit_error.split(": ", 1)[-1]))
    if info.bound_hits:
        failed.append(("bound", "; ".join(info.bound_hits)))
    p = len(law.param_names)
    need = checks.min_points(p)
    evidence = info.n_points >= need
    if not evidence:
        failed.append(("points", f"{info.n_points} points for {p} parameters (need >= {need})"))
    else:
        if not (math.isfinite(info.r2) and info.r2 >= checks.min_r2):
            failed.append(("r2", f"R^2 = {info.r2:.4f} < {checks.min_r2:g}"))
        widths = ci_decades(law)
        if widths:
            wide = {k: w for k, w in widths.items() if w > checks.max_ci_decades}
            if wide:
                text = ", ".join(f"{k} in [{law.ci[k][0]:.3g}, {law.ci[k][1]:.3g}]" for k in wide)
                failed.append(
                    (
                        "intervals",
                        f"95% interval wider than {checks.max_ci_decades:g} decades: {text}",
                    )
                )
        elif checks.require_intervals:
            failed.append(("intervals", "no intervals (fitted without bootstrap)"))
        else:
            notes.append("no intervals")
    if checks.forecast:
        if forecast is None:
            notes.append("no forecast check")
        else:
            bad = _forecast_failure(forecast, checks)
            if bad:
                failed.append(("forecast", bad))
    return Usability(
        usable=not failed,
        failed=tuple(k for k, _ in failed),
        reasons=tuple(r for _, r in failed),
        notes=tuple(notes),
        evidence=evidence,
    )


def _forecast_failure(e: ForecastCheck, checks: LawChecks) -> str:
    held = ", ".join(f"{v:.3g}" for v in e.held_out_values)
    if e.has_intervals:
        inside = e.inside
        k = int(np.sum(~inside))
        if k > math.floor(checks.forecast_max_outside * len(inside) + 1e-9):
            worst = int(np.argmax(np.abs(e.relative_error)))
            return (
                f"forecast check failed: {k}/{len(inside)} held-out cell(s) ({e.holdout} = "
                f"{held}) outside the {100 * e.ci_level:.0f}% forecast interval "
                f"(error {100 * e.relative_error[worst]:+.1f}%)"
            )
        return ""
    if e.max_abs_relative_error > checks.max_forecast_error:
        return (
            f"forecast check failed: held-out {e.holdout} = {held} forecast "
            f"{100 * e.max_abs_relative_error:.1f}% off (limit "
            f"{100 * checks.max_forecast_error:.0f}%)"
        )
    return ""


def extrapolation(value: float, fitted: tuple[float, float]) -> float:
    """How far ``value`` lies beyond the fitted range ``(lo, hi)``: ``value / hi`` above it,
    ``lo / value`` below it, 1.0 inside."""
    lo, hi = fitted
    if value > hi:
        return float(value / hi)
    if value < lo:
        return float(lo / value)
    return 1.0


def extrapolation_text(axis: str, value: float, fitted: tuple[float, float]) -> str:
    """E.g. "N 290x beyond the largest fitted model (8.62e+07)", "D within the fitted range"."""
    what = {"N": "model", "D": "data size", "d": "dimension"}.get(axis, axis)
    lo, hi = fitted
    factor = extrapolation(value, fitted)
    if value > hi:
        return f"{axis} {factor:.3g}x beyond the largest fitted {what} ({hi:.3g})"
    if value < lo:
        return f"{axis} {factor:.3g}x below the smallest fitted {what} ({lo:.3g})"
    return f"{axis} within the fitted range ({lo:.3g} - {hi:.3g})"
