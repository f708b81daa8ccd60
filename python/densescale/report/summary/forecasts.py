"""``### Forecast check`` (each law refitted without its largest sizes, against the measured
held-out cells) and ``### What the laws predict, in the metrics people quote`` (each headline
law a decade beyond the measured range, in CE and through the CE-to-metric maps)."""

from __future__ import annotations

import numpy as np

from ..outcomes import SourceFits
from . import _format as fmt

_FORECAST_INTRO = (
    "Each law refitted without its largest size(s) forecasts the held-out cells; the "
    "interval is where a new measurement should fall (bootstrap curves with the fit's "
    "own measurement noise). An observation outside it says: do not trust this law's "
    "extrapolation."
)


def forecast_section(fits: SourceFits, files: dict) -> list[str]:
    """One row per held-out cell of every law with a forecast check, in CE and the quoted
    metrics, then the figure."""
    checks = [o for o in fits.all_outcomes if o.extrapolation is not None]
    if not checks:
        none = "No law had enough points to hold its largest size out."
        return ["### Forecast check", "", none, ""]
    out = ["### Forecast check", "", _FORECAST_INTRO, ""]
    quoted = fmt.quoted(fits)
    head = "| law | held-out cell | observed CE | forecast CE [95%] | inside |"
    for k in quoted:
        t = fmt.METRIC_TITLES.get(k, k)
        head += f" observed {t} | forecast {t} [95%] |"
    out += [head, "|" + "---|" * (5 + 2 * len(quoted))]
    for o in checks:
        e = o.extrapolation
        axis = e.holdout
        values = {"N": e.N, "D": e.D, "d": e.d}[axis]
        for i in range(len(e.observed)):
            coords = {**o.fixed, axis: round(float(values[i]))}
            for other, arr in (("N", e.N), ("D", e.D), ("d", e.d)):
                if arr is not None:
                    coords[other] = round(float(arr[i]))
            cell = fmt.find_cell(fits, coords)
            lo = None if not e.has_intervals else float(e.lower[i])
            hi = None if not e.has_intervals else float(e.upper[i])
            inside = "-" if e.inside is None else ("yes" if e.inside[i] else "**no**")
            name = cell["model"] if cell else ""
            where = ", ".join(f"{k} = {v:,}" for k, v in coords.items())
            line = (
                f"| {o.label} | {name} ({where}) | {e.observed[i]:.4f} | "
                f"{fmt.interval(float(e.predicted[i]), lo, hi)} | {inside} |"
            )
            for k in quoted:
                obs = None if cell is None else cell["metrics"].get(k)
                if not o.usable:  # no metric is predicted from a law that failed its checks
                    line += f" {fmt.metric_cell(obs)} | - (law not usable) |"
                    continue
                v, mlo, mhi = fits.metric_maps[k].interval(float(e.predicted[i]), lo, hi)
                line += f" {fmt.metric_cell(obs)} | {fmt.interval(v, mlo, mhi, '.3f')} |"
            out.append(line)
    if "forecast" in files:
        out += ["", f"![forecast check]({files['forecast']})"]
    return out + [""]


def predictions_section(fits: SourceFits) -> list[str]:
    """What each headline law predicts beyond the measured range, in CE and the quoted metrics;
    only usable laws predict, every other family gets one line saying which check failed."""
    rows = []
    if len(fits.N) == 0:
        return []
    silent = _no_prediction_lines(fits)
    n_max, d_max = float(fits.N.max()), float(fits.D.max())
    o = fmt.headline(fits.model_fits, "D")
    if o is not None:
        rows.append((o, "N = " + fmt.num(10 * n_max), (10 * n_max,)))
    o = fmt.headline(fits.data_fits, "N")
    if o is not None:
        rows.append((o, "D = " + fmt.num(10 * d_max), (10 * d_max,)))
    if fits.joint.usable:
        rows.append(
            (
                fits.joint,
                f"N = {fmt.num(10 * n_max)}, D = {fmt.num(10 * d_max)}",
                (10 * n_max, 10 * d_max),
            )
        )
    o = fmt.headline(fits.dim_fits, "N")
    if o is not None:
        dim_max = float(np.nanmax(fits.dims))
        rows.append((o, f"d = {fmt.num(4 * dim_max)}", (4 * dim_max,)))
    if fits.model_dim is not None and fits.model_dim.usable:
        dim_max = float(np.nanmax(fits.dims))
        rows.append(
            (
                fits.model_dim,
                f"N = {fmt.num(10 * n_max)}, d = {fmt.num(dim_max)}",
                (10 * n_max, dim_max),
            )
        )
    if not rows and not silent:
        return []
    out = [
        "### What the laws predict, in the metrics people quote",
        "",
        (
            "Each headline law one decade beyond the largest size measured (4x for d); CE "
            "intervals are the bootstrap band of the curve, carried through the CE-to-metric "
            "map with its own band."
        ),
        "",
        "| law | at | predicted CE [95%] |" + fmt.metric_heads(fits),
        "|" + "---|" * (3 + len(fmt.quoted(fits))),
    ]
    for o, at, coords in rows:
        ce = float(o.law.predict(*coords))
        lo, hi = fmt.band(o.law, *coords)
        out.append(
            f"| {o.label} | {at} | {fmt.interval(ce, lo, hi)} |" + fmt.in_metrics(fits, ce, lo, hi)
        )
    if not rows:
        out = out[:2] + ["No usable law, so no prediction."]
    if silent:
        out += ["", "No prediction from these laws (SPEC 7: a law answers only when usable):", ""]
        out += silent
    return out + [""]


def _no_prediction_lines(fits: SourceFits) -> list[str]:
    """One line per law family that was fitted but has no usable law: the headline slice's own
    reason (the slice with the most points)."""
    out = []
    families = [
        ("model-size law", fits.model_fits),
        ("data-size law", fits.data_fits),
        ("joint law (paper form)", [fits.joint]),
        ("dimension law", fits.dim_fits),
        ("model-dimension law", [fits.model_dim] if fits.model_dim is not None else []),
    ]
    for name, outcomes in families:
        fitted = [o for o in outcomes if o.law is not None]
        if not fitted or any(o.usable for o in outcomes):
            continue
        o = max(fitted, key=lambda o: (o.n_points, sorted(o.fixed.values())))
        where = ", ".join(f"{k} = {v:,}" for k, v in o.fixed.items())
        out.append(f"- {name}" + (f" at {where}" if where else "") + f": {o.status}")
    return out
