"""How ``summary.md`` writes numbers, intervals and the law tables every section shares."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ..outcomes import QUOTED_METRICS, FitOutcome, SourceFits

METRIC_TITLES = {"mrr@10": "MRR@10", "ndcg@10": "NDCG@10"}


def table_head(columns: str) -> list[str]:
    """The header row and the separator row of a markdown table whose column titles are
    ``columns``, separated by `` | `` (the separator counts them)."""
    return [f"| {columns} |", "|" + "---|" * len(columns.split(" | "))]


def num(v: float) -> str:
    if v == 0 or not math.isfinite(v):
        return f"{v}"
    if 1e-3 <= abs(v) < 1e4:
        return f"{v:.4g}"
    return f"{v:.3g}"


def with_ci(law, name: str) -> str:
    text = num(law.params[name])
    if name in law.ci:
        lo, hi = law.ci[name]
        text += f" [{num(lo)}, {num(hi)}]"
    return text


def interval(v: float, lo: float | None, hi: float | None, fmt: str = ".4f") -> str:
    text = format(v, fmt)
    if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
        text += f" [{format(lo, fmt)}, {format(hi, fmt)}]"
    return text


def dash(v) -> str:
    return "-" if v is None else str(v)


def metric_cell(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def cell_where(c: Mapping) -> str:
    where = f"N = {c['N']:,}, D = {c['D']:,}"
    return where + (f", d = {c['d']:,}" if c["d"] is not None else "")


def in_metrics(fits: SourceFits, ce: float, ce_lo=None, ce_hi=None) -> str:
    parts = []
    for v, lo, hi in fits.in_metrics(ce, ce_lo, ce_hi).values():
        parts.append(f" {interval(v, lo, hi, '.3f')} |")
    return "".join(parts)


def metric_heads(fits: SourceFits, prefix: str = "") -> str:
    return "".join(f" {prefix}{METRIC_TITLES.get(k, k)} |" for k in quoted(fits))


def find_cell(fits: SourceFits, coords: Mapping) -> dict | None:
    for c in fits.metrics:
        if all(c.get(k) == v for k, v in coords.items()):
            return c
    return None


def headline(outcomes: list[FitOutcome], key: str) -> FitOutcome | None:
    """The usable law at the largest ``key`` (then the most points), or None: what a section
    that answers from a law (predictions, irreducible loss) may use."""
    usable = [o for o in outcomes if o.usable]
    return max(usable, key=lambda o: (o.fixed.get(key, 0), o.n_points)) if usable else None


def forecast_text(o: FitOutcome) -> str:
    """The forecast-check cell of a law table, e.g. "held out N = 8.6e+07: 1/1 inside 95%
    (max error 2.1%)"."""
    if o.extrapolation is None:
        return f"n/a ({o.extrapolation_note})" if o.extrapolation_note else "n/a"
    e = o.extrapolation
    held = ", ".join(num(v) for v in e.held_out_values)
    err = f"max error {100 * e.max_abs_relative_error:.1f}%"
    if e.has_intervals:
        k = int(np.sum(e.inside))
        verdict = f"{k}/{len(e.observed)} inside {100 * e.ci_level:.0f}%"
        return f"held out {e.holdout} = {held}: {verdict} ({err})"
    return f"held out {e.holdout} = {held}: {err} (no intervals)"


def law_table(
    outcomes: list[FitOutcome], keys: tuple[str, ...], names: tuple[str, ...]
) -> list[str]:
    """One row per usable law (constants with their intervals, R^2, forecast check); every
    other slice is one line under the table saying why it has no law or which check its law
    failed (its constants stay in fits.json, for the record)."""
    head = (
        "| " + " | ".join(keys) + " | points | " + " | ".join(names) + " | R^2 | forecast check |"
    )
    lines = [head, "|" + "---|" * (len(names) + len(keys) + 3)]
    notes = []
    for o in outcomes:
        label = " | ".join(f"{o.fixed[k]:,}" if k in o.fixed else "-" for k in keys)
        where = ", ".join(f"{k} = {o.fixed[k]:,}" for k in keys if k in o.fixed)
        if o.excluded:
            notes.append(f"- {where}: {o.excluded_line()}")
        if not o.usable:
            notes.append(f"- {where} ({o.n_points} points): {o.status}")
            continue
        cells = " | ".join(with_ci(o.law, n) for n in names)
        lines.append(f"| {label} | {o.n_points} | {cells} | {o.law.r2:.4f} | {forecast_text(o)} |")
    if len(lines) == 2:
        lines = ["(no usable law: each slice's reason below)" if outcomes else "(no fit)"]
    return lines + ([""] + notes if notes else [])


def quoted(fits: SourceFits) -> list[str]:
    """The quoted metrics (MRR@10, NDCG@10) that have a CE-to-metric map in this study."""
    return [k for k in QUOTED_METRICS if k in fits.metric_maps]


def band(law, *coords) -> tuple[float | None, float | None]:
    """The bootstrap interval of ``law.predict(*coords)`` as floats, (None, None) without one."""
    b = law.interval(*coords)
    return (None, None) if b is None else (float(b[0]), float(b[1]))


def form_table(rows, names: tuple[str, ...]) -> list[str]:
    """A table of laws, one row per form: ``rows`` holds (outcome, formula, unfitted); a usable
    law's row shows ``formula`` and the constants, any other the reason (why it was not fitted,
    or which check its law failed)."""
    out = ["| form | points | " + " | ".join(names) + " | R^2 | forecast check |", "|" + "---|" * 9]
    for o, formula, unfitted in rows:
        if not o.usable:  # one cell says why; the constants stay in fits.json only
            out.append(f"| `{formula or unfitted}` | {o.n_points} | {o.status} |" + " |" * 6)
        else:
            cells = " | ".join(with_ci(o.law, n) for n in names)
            out.append(
                f"| `{formula}` | {o.n_points} | {cells} | {o.law.r2:.4f} | {forecast_text(o)} |"
            )
    return out
