"""The study report on disk: ``summary.md`` (tables, plots linked) and ``fits.json``.

:func:`write_report` fits the study (:mod:`densescale.scaling.study_fits`) unless given the fits,
draws every figure (:mod:`densescale.scaling.plots`) and writes the Markdown and JSON here.

What ``summary.md`` holds, in order: an overview per source; the CE-to-ranking-metric maps
(every cell, with bands); then per source: the cells (with chance, converged, flags and the
lexical baselines as reference rows, and a plain sentence for every cell whose numbers mean
nothing), the model-size, data-size, joint and embedding-dimension laws, the forecast checks,
the laws' predictions in MRR@10 / NDCG@10, the irreducible loss against the oracle, and the
budget answers; last the cost model.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import numbers
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path

import numpy as np

from ._io import atomic_write_text
from .budget import Allocation, CostModel
from .fitting import DEFAULT_N_BOOT
from .laws import ChinchillaLaw, JointLaw
from .plots import (
    plot_budget,
    plot_forecasts,
    plot_loss_vs_d,
    plot_loss_vs_dim,
    plot_loss_vs_n,
    plot_metric_maps,
    plot_residuals,
    plot_sources,
    plot_training_curves,
)
from .records import NEAR_CHANCE_FRACTION, check_oracle, check_records
from .study_fits import QUOTED_METRICS, FitOutcome, SourceFits, fit_study

_METRIC_TITLES = {"mrr@10": "MRR@10", "ndcg@10": "NDCG@10"}


def _num(v: float) -> str:
    if v == 0 or not math.isfinite(v):
        return f"{v}"
    if 1e-3 <= abs(v) < 1e4:
        return f"{v:.4g}"
    return f"{v:.3g}"


def _with_ci(law, name: str) -> str:
    text = _num(law.params[name])
    if name in law.ci:
        lo, hi = law.ci[name]
        text += f" [{_num(lo)}, {_num(hi)}]"
    return text


def _interval(v: float, lo: float | None, hi: float | None, fmt: str = ".4f") -> str:
    text = format(v, fmt)
    if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
        text += f" [{format(lo, fmt)}, {format(hi, fmt)}]"
    return text


def _forecast_text(o: FitOutcome) -> str:
    """The forecast-check cell of a law table, e.g. "held out N = 8.6e+07: 1/1 inside 95%
    (max error 2.1%)"."""
    if o.extrapolation is None:
        return f"n/a ({o.extrapolation_note})" if o.extrapolation_note else "n/a"
    e = o.extrapolation
    held = ", ".join(_num(v) for v in e.held_out_values)
    err = f"max error {100 * e.max_abs_relative_error:.1f}%"
    if e.has_intervals:
        k = int(np.sum(e.inside))
        verdict = f"{k}/{len(e.observed)} inside {100 * e.ci_level:.0f}%"
        return f"held out {e.holdout} = {held}: {verdict} ({err})"
    return f"held out {e.holdout} = {held}: {err} (no intervals)"


def _law_table(
    outcomes: list[FitOutcome], keys: tuple[str, ...], names: tuple[str, ...]
) -> list[str]:
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
        if o.law is None:
            notes.append(f"- {where}: {o.error}")
            continue
        cells = " | ".join(_with_ci(o.law, n) for n in names)
        lines.append(f"| {label} | {o.n_points} | {cells} | {o.law.r2:.4f} | {_forecast_text(o)} |")
        if o.caveat:
            notes.append(f"- {where}: {o.caveat}")
    if len(lines) == 2:
        lines = ["(no fit)"]
    return lines + ([""] + notes if notes else [])


def _dash(v) -> str:
    return "-" if v is None else str(v)


def _metric_cell(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _cells_table(fits: SourceFits, baselines: Mapping[str, Mapping]) -> list[str]:
    quoted = [m for m in QUOTED_METRICS if any(m in c["metrics"] for c in fits.metrics)]
    quoted += [m for m in QUOTED_METRICS if m not in quoted and _baseline_has(baselines, m)]
    others = sorted(
        {k for c in fits.metrics for k in c["metrics"]} - set(quoted)
    )  # recall@100, map, ...
    metric_names = quoted + others
    head = (
        "| model | checkpoint | N | d | D | runs | CE (nats) | chance |"
        + "".join(f" {_METRIC_TITLES.get(k, k)} |" for k in metric_names)
        + " converged | flags |"
    )
    lines = [head, "|" + "---|" * (10 + len(metric_names))]
    for c in fits.metrics:
        extra = "".join(f" {_metric_cell(c['metrics'].get(k))} |" for k in metric_names)
        conv = {True: "yes", False: "**no**", None: "-"}[c["converged"]]
        flags = ", ".join(c["flags"]) or "-"
        if c["excluded"]:
            flags += " (left out of fits)"
        chance = "-" if c["chance_ce"] is None else f"{c['chance_ce']:.4f}"
        ce = f"{c['ce']:.4f}" + (" **(near chance)**" if c["near_chance"] else "")
        lines.append(
            f"| {c['model']} | {_dash(c['checkpoint'])} | {c['N']:,} | "
            f"{'-' if c['d'] is None else format(c['d'], ',')} | {c['D']:,} | {c['runs']} | "
            f"{ce} | {chance} |{extra} {conv} | {flags} |"
        )
    for label, b in baselines.items():
        metrics = b.get("metrics") or {}
        extra = "".join(f" {_metric_cell(metrics.get(k))} |" for k in metric_names)
        split = b.get("split")
        lines.append(
            f"| **{label}** (reference{', ' + split + ' split' if split else ''}) | - | - | - "
            f"| - | - | - | - |{extra} - | lexical baseline |"
        )
    return lines


def _baseline_has(baselines: Mapping[str, Mapping], metric: str) -> bool:
    return any(metric in (b.get("metrics") or {}) for b in baselines.values())


def _where(c: Mapping) -> str:
    where = f"N = {c['N']:,}, D = {c['D']:,}"
    return where + (f", d = {c['d']:,}" if c["d"] is not None else "")


def _meaningless_notes(fits: SourceFits) -> list[str]:
    """A plain sentence for every near-chance cell, and the seen-passage-bias explanation."""
    out = []
    near = [c for c in fits.metrics if c["near_chance"]]
    if near:
        out += ["**Cells whose numbers mean nothing:**", ""]
        for c in near:
            if c["chance_ce"] is not None:
                rel = "worse than" if c["ce"] >= c["chance_ce"] else "at"
                out.append(
                    f"- **{c['model']}** ({_where(c)}): CE {c['ce']:.4f} nats against chance "
                    f"ln(K+1) = {c['chance_ce']:.4f}: {rel} chance: this model has not learned "
                    "to rank. Its ranking metrics are noise, and it is left out of every fit."
                )
            else:
                out.append(
                    f"- **{c['model']}** ({_where(c)}): flagged near chance by the study: this "
                    "model has not learned to rank. It is left out of every fit."
                )
        out += [
            "",
            (
                f"A cell is near chance when its CE is at least {NEAR_CHANCE_FRACTION} x "
                "ln(K+1), the CE of a scorer that ranks the positive among K random negatives "
                "at random."
            ),
            "",
        ]
    biased = [c for c in fits.metrics if c.get("decides_ranking")]
    if biased:
        out += [
            "**Seen-passage bias decides the ranking:**",
            "",
            (
                "On average, the encoder scores passages that were *training* positives above "
                "the *test* positives it should retrieve: it learned which passages it was "
                "trained to return (e.g. by giving them larger vectors), so its ranking follows "
                "seen / unseen, not relevance. Its metrics measure that memorisation; exclude "
                "every evaluation positive from the training negatives (the default) and check "
                "that train and test topics are disjoint."
            ),
            "",
        ]
        for c in biased:
            b = c["seen_bias"] or {}

            def g(k, fmt=".3g", b=b):
                return "?" if k not in b else format(b[k], fmt)

            out.append(
                f"- {c['model']} ({_where(c)}): mean score of training-positive passages "
                f"{g('mean_score_seen')}, of never-seen passages {g('mean_score_unseen')}, of "
                f"the test positives {g('mean_score_positive')}; training positives are "
                f"{g('top10_seen_fraction', '.0%')} of the top 10 but "
                f"{g('corpus_seen_fraction', '.1%')} of the corpus."
            )
        out.append("")
    if fits.excluded:
        why = "near-chance cells are never fitted; unconverged cells are " + (
            "fitted (include_unconverged=True)" if fits.include_unconverged else "left out"
        )
        out += [f"**Left out of the law fits** ({why}):", ""]
        out += [f"- {note}" for note in fits.excluded] + [""]
    return out


def _metrics_of(fits: SourceFits, ce: float, ce_lo=None, ce_hi=None) -> str:
    parts = []
    for v, lo, hi in fits.in_metrics(ce, ce_lo, ce_hi).values():
        parts.append(f" {_interval(v, lo, hi, '.3f')} |")
    return "".join(parts)


def _metric_heads(fits: SourceFits, prefix: str = "") -> str:
    return "".join(
        f" {prefix}{_METRIC_TITLES.get(k, k)} |" for k in QUOTED_METRICS if k in fits.metric_maps
    )


def _find_cell(fits: SourceFits, coords: Mapping) -> dict | None:
    for c in fits.metrics:
        if all(c.get(k) == v for k, v in coords.items()):
            return c
    return None


def _forecast_section(fits: SourceFits, files: dict) -> list[str]:
    checks = [o for o in fits.all_outcomes if o.extrapolation is not None]
    out = ["### Forecast check", ""]
    if not checks:
        return out + ["No law had enough points to hold its largest size out.", ""]
    out += [
        (
            "Each law refitted without its largest size(s) forecasts the held-out cells; the "
            "interval is where a new measurement should fall (bootstrap curves with the fit's "
            "own measurement noise). An observation outside it says: do not trust this law's "
            "extrapolation."
        ),
        "",
    ]
    quoted = [k for k in QUOTED_METRICS if k in fits.metric_maps]
    head = "| law | held-out cell | observed CE | forecast CE [95%] | inside |"
    for k in quoted:
        t = _METRIC_TITLES.get(k, k)
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
            cell = _find_cell(fits, coords)
            lo = None if not e.has_intervals else float(e.lower[i])
            hi = None if not e.has_intervals else float(e.upper[i])
            inside = "-" if e.inside is None else ("yes" if e.inside[i] else "**no**")
            name = cell["model"] if cell else ""
            where = ", ".join(f"{k} = {v:,}" for k, v in coords.items())
            line = (
                f"| {o.label} | {name} ({where}) | {e.observed[i]:.4f} | "
                f"{_interval(float(e.predicted[i]), lo, hi)} | {inside} |"
            )
            for k in quoted:
                obs = None if cell is None else cell["metrics"].get(k)
                v, mlo, mhi = fits.metric_maps[k].interval(float(e.predicted[i]), lo, hi)
                line += f" {_metric_cell(obs)} | {_interval(v, mlo, mhi, '.3f')} |"
            out.append(line)
    if "forecast" in files:
        out += ["", f"![forecast check]({files['forecast']})"]
    return out + [""]


def _headline(outcomes: list[FitOutcome], key: str) -> FitOutcome | None:
    fitted = [o for o in outcomes if o.law is not None]
    return max(fitted, key=lambda o: (o.fixed.get(key, 0), o.n_points)) if fitted else None


def _predictions_section(fits: SourceFits) -> list[str]:
    """What each headline law predicts beyond the measured range, in CE and the quoted metrics."""
    rows = []
    if len(fits.N) == 0:
        return []
    n_max, d_max = float(fits.N.max()), float(fits.D.max())
    o = _headline(fits.model_fits, "D")
    if o is not None:
        rows.append((o, "N = " + _num(10 * n_max), (10 * n_max,)))
    o = _headline(fits.data_fits, "N")
    if o is not None:
        rows.append((o, "D = " + _num(10 * d_max), (10 * d_max,)))
    if fits.joint.law is not None:
        rows.append(
            (
                fits.joint,
                f"N = {_num(10 * n_max)}, D = {_num(10 * d_max)}",
                (10 * n_max, 10 * d_max),
            )
        )
    o = _headline(fits.dim_fits, "N")
    if o is not None:
        dim_max = float(np.nanmax(fits.dims))
        rows.append((o, f"d = {_num(4 * dim_max)}", (4 * dim_max,)))
    if fits.model_dim is not None and fits.model_dim.law is not None:
        dim_max = float(np.nanmax(fits.dims))
        rows.append(
            (fits.model_dim, f"N = {_num(10 * n_max)}, d = {_num(dim_max)}", (10 * n_max, dim_max))
        )
    if not rows:
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
        "| law | at | predicted CE [95%] |" + _metric_heads(fits),
        "|" + "---|" * (3 + len([k for k in QUOTED_METRICS if k in fits.metric_maps])),
    ]
    for o, at, coords in rows:
        ce = float(o.law.predict(*coords))
        band = o.law.interval(*coords)
        lo, hi = (None, None) if band is None else (float(band[0]), float(band[1]))
        out.append(
            f"| {o.label} | {at} | {_interval(ce, lo, hi)} |" + _metrics_of(fits, ce, lo, hi)
        )
    return out + [""]


def _dim_section(fits: SourceFits, files: dict) -> list[str]:
    if not fits.dim_fits and fits.model_dim is None:
        return []
    out = ["### Embedding-dimension law `L(d) = (C/d)^gamma + delta`, per (N, D)", ""]
    out += _law_table(fits.dim_fits, ("N", "D"), ("C", "gamma", "delta"))
    o = fits.model_dim
    if o is not None:
        names = ("A", "C", "alpha", "gamma", "delta")
        out += [
            "",
            f"Joint law of model size and dimension at D = {o.fixed.get('D', 0):,}:",
            "",
            "| form | points | " + " | ".join(names) + " | R^2 | forecast check |",
            "|" + "---|" * 9,
        ]
        if o.law is None:
            out.append(
                f"| `{o.formula if False else 'L(N, d)'}` | {o.n_points} | {o.error} |" + " |" * 6
            )
        else:
            cells = " | ".join(_with_ci(o.law, n) for n in names)
            out.append(
                f"| `{o.law.formula}` | {o.n_points} | {cells} | {o.law.r2:.4f} | "
                f"{_forecast_text(o)} |"
            )
    if "loss_vs_dim" in files:
        out += ["", f"![loss vs embedding dimension]({files['loss_vs_dim']})"]
    b = fits.allocation_dim
    if b is not None:
        out += [
            "",
            (
                f"Under a serving-memory budget of {b.memory_budget / 1e9:.4g} GB (index "
                "= corpus_size x d x bytes_per_value, plus the encoder's N x bytes_per_param"
                + (f"; {fits.memory_note}" if fits.memory_note else "")
                + "), the law's best trade of d against N:"
            ),
            "",
            "| N | d | predicted CE [95%] | memory (GB) | on search bound |" + _metric_heads(fits),
            "|---|---|---|---|---|"
            + "---|" * len([k for k in QUOTED_METRICS if k in fits.metric_maps]),
        ]
        band = o.law.interval(b.N, b.d)
        lo, hi = (None, None) if band is None else (float(band[0]), float(band[1]))
        out.append(
            f"| {b.N:.3g} | {b.d:.0f} | {_interval(b.loss, lo, hi)} | {b.memory_bytes / 1e9:.4g} "
            f"| {b.at_bound or 'no'} |" + _metrics_of(fits, b.loss, lo, hi)
        )
    elif fits.memory_note:
        out += ["", fits.memory_note]
    return out + [""]


def _source_section(
    fits: SourceFits,
    oracle: float | None,
    files: dict,
    n_boot: int,
    baselines: Mapping[str, Mapping],
) -> list[str]:
    s = fits.source
    known_d = fits.dims is not None and bool(np.any(np.isfinite(fits.dims)))
    out = [f"## Source `{s}`", ""]
    out += ["### Cells (mean over runs)", ""]
    out += _cells_table(fits, baselines)
    out += [""] + _meaningless_notes(fits)
    intervals = (
        f"Values in brackets are 95% bootstrap intervals ({n_boot} refits with resimulated "
        "measurement noise; none where a fit has no more points than parameters)"
        if n_boot
        else "No bootstrap intervals (n_boot = 0)"
    )
    at = f" (at d = {fits.main_dim:,})" if fits.main_dim is not None and known_d else ""
    out += [
        (
            f"{intervals}; forecast check = the law refitted without the largest size(s) and "
            "asked to forecast them (details below)."
        ),
        "",
        f"### Model-size law `L(N) = (A/N)^alpha + delta`, per D{at}",
        "",
    ]
    keys_n = ("D", "d") if known_d else ("D",)
    keys_d = ("N", "d") if known_d else ("N",)
    out += _law_table(fits.model_fits, keys_n, ("A", "alpha", "delta"))
    out += ["", f"![loss vs model size]({files['loss_vs_N']})", ""]
    out += [f"### Data-size law `L(D) = (B/D)^beta + delta`, per N{at}", ""]
    out += _law_table(fits.data_fits, keys_d, ("B", "beta", "delta"))
    out += ["", f"![loss vs annotations]({files['loss_vs_D']})", ""]
    out += [f"### Joint laws{at}", ""]
    names = ("A", "B", "alpha", "beta", "delta")
    out += [
        "| form | points | " + " | ".join(names) + " | R^2 | forecast check |",
        "|" + "---|" * 9,
    ]
    for o, formula in (
        (fits.joint, JointLaw.formula),
        (fits.chinchilla, ChinchillaLaw.formula),
    ):
        if o.law is None:
            out.append(f"| `{formula}` | {o.n_points} | {o.error} |" + " |" * 6)
        else:
            cells = " | ".join(_with_ci(o.law, n) for n in names)
            out.append(
                f"| `{formula}` | {o.n_points} | {cells} | {o.law.r2:.4f} | {_forecast_text(o)} |"
            )
    if fits.joint.excluded:
        out += ["", f"- {fits.joint.excluded_line()}"]
    out += ["", f"![residuals]({files['residuals']})", ""]
    out += _dim_section(fits, files)
    out += _forecast_section(fits, files)
    out += _predictions_section(fits)

    out += ["### Irreducible loss", ""]
    rows = []
    if fits.joint.law is not None:
        rows.append(("joint law (paper form)", fits.joint.law))
    largest = _headline(fits.model_fits, "D")
    if largest is not None:
        rows.append((largest.label, largest.law))
    if not rows:
        out.append("No law with an irreducible term could be fitted.")
    else:
        head = "| law | delta (nats) |" + (" oracle CE (nats) | delta - oracle |" if oracle else "")
        out += [head, "|---|---|" + ("---|---|" if oracle else "")]
        for label, law in rows:
            line = f"| {label} | {_with_ci(law, 'delta')} |"
            if oracle:
                line += f" {oracle:.4f} | {law.delta - oracle:+.4f} |"
            out.append(line)
        if oracle:
            out += [
                "",
                (
                    "The oracle contrastive entropy is the loss of the Bayes-optimal scorer under "
                    "the collection's known generative model: no encoder can go below it, so a "
                    "fitted delta near it means the law's floor is the data's own noise, and a "
                    "delta far below it means the measured range does not reach the floor yet."
                ),
            ]
    out.append("")

    out += ["### Budget", ""]
    if fits.allocation is None:
        out += [fits.budget_note or "No budget answer.", ""]
    else:
        a, b = fits.allocation, fits.allocation_no_inference
        law_name = "joint law (paper form)" if fits.joint.law is not None else "additive joint law"
        law = fits.budget_law
        out += [
            f"Minimise the {law_name} subject to cost <= ${fits.budget:,.2f}"
            + (f" ({fits.budget_note})" if fits.budget_note else "")
            + f"; N searched in [{_num(fits.search_box['N_bounds'][0])}, "
            f"{_num(fits.search_box['N_bounds'][1])}], D in "
            f"[{_num(fits.search_box['D_bounds'][0])}, {_num(fits.search_box['D_bounds'][1])}].",
            "",
            (
                "| | N | D | predicted CE [95%] | annotation $ | training $ | inference $ | "
                "total $ | on search bound |" + _metric_heads(fits)
            ),
            "|---|---|---|---|---|---|---|---|---|"
            + "---|" * len([k for k in QUOTED_METRICS if k in fits.metric_maps]),
        ]
        for label, x in (("with inference cost", a), ("without inference cost", b)):
            band = law.interval(x.N, x.D)
            lo, hi = (None, None) if band is None else (float(band[0]), float(band[1]))
            out.append(
                f"| {label} | {x.N:.3g} | {x.D:.3g} | {_interval(x.loss, lo, hi)} "
                f"| {x.cost.annotation:,.2f} | {x.cost.training:,.2f} | {x.cost.inference:,.2f} "
                f"| {x.cost.total:,.2f} | {x.at_bound or 'no'} |"
                + _metrics_of(fits, x.loss, lo, hi)
            )
        out += ["", f"![budget]({files['budget']})", ""]
    return out


def _maps_section(fits: SourceFits, png: str | None) -> list[str]:
    maps = fits.metric_maps
    out = ["## From contrastive entropy to ranking metrics", ""]
    if not maps:
        return out + ["No ranking metrics in the records (or fewer than 3 cells): no map.", ""]
    out += [
        (
            "Every cell of the study (every source, fitted or left out), each ranking metric "
            "against its CE, with a monotone map fitted over them: a two-parameter logistic "
            "`m = 1 / (1 + exp(b (CE - c)))` or an isotonic (non-increasing) fit, whichever has "
            "the smaller leave-one-out error (the logistic unless the isotonic is clearly "
            "better), with a pairs-bootstrap band. Every CE below is also given through these "
            "maps."
        ),
        "",
        "| metric | form | c | b | RMSE | leave-one-out RMSE (logistic / isotonic) | cells |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in maps.items():
        c = _num(m.params["c"]) if m.kind == "logistic" else "-"
        b = _num(m.params["b"]) if m.kind == "logistic" else "-"
        loo = f"{m.loo_rmse['logistic']:.4f} / {m.loo_rmse['isotonic']:.4f}" if m.loo_rmse else "-"
        out.append(f"| {name} | {m.kind} | {c} | {b} | {m.rmse:.4f} | {loo} | {len(m.ce)} |")
    if png:
        out += ["", f"![ranking metrics against CE]({png})"]
    return out + [""]


def _cost_table(cost: CostModel) -> list[str]:
    lines = ["| parameter | value |", "|---|---|"]
    for f in fields(cost):
        lines.append(f"| {f.name} | {getattr(cost, f.name)} |")
    return lines


def _arr(x) -> list | None:
    return None if x is None else np.asarray(x, dtype=float).tolist()


def _law_json(o: FitOutcome | None) -> dict | None:
    if o is None:
        return None
    d = {
        "kind": o.kind,
        "fixed": o.fixed,
        "points": o.n_points,
        "error": o.error,
        "excluded": list(o.excluded),
    }
    if o.law is not None:
        d.update(
            formula=o.law.formula,
            params=o.law.params,
            ci={k: list(v) for k, v in o.law.ci.items()},
            r2=o.law.r2,
        )
        if o.caveat:
            d["caveat"] = o.caveat
    if o.extrapolation is not None:
        e = o.extrapolation
        d["forecast"] = d["extrapolation"] = {
            "holdout": e.holdout,
            "held_out_values": e.held_out_values.tolist(),
            "N": _arr(e.N),
            "D": _arr(e.D),
            "d": _arr(e.d),
            "observed": e.observed.tolist(),
            "predicted": e.predicted.tolist(),
            "lower": _arr(e.lower),
            "upper": _arr(e.upper),
            "inside": None if e.inside is None else [bool(v) for v in e.inside],
            "ci_level": e.ci_level,
            "mean_abs_relative_error": e.mean_abs_relative_error,
            "max_abs_relative_error": e.max_abs_relative_error,
            "text": e.describe(),
        }
    elif o.extrapolation_note:
        d["forecast_note"] = o.extrapolation_note
    return d


def _alloc_json(a: Allocation | None) -> dict | None:
    if a is None:
        return None
    out = {
        "N": a.N,
        "D": a.D,
        "loss": a.loss,
        "budget": a.budget,
        "include_inference": a.include_inference,
        "at_bound": a.at_bound,
        "cost": {
            "annotation": a.cost.annotation,
            "training": a.cost.training,
            "inference": a.cost.inference,
            "total": a.cost.total,
        },
    }
    if a.d is not None:
        out.update(d=a.d, memory_budget=a.memory_budget, memory_bytes=a.memory_bytes)
    return out


def _map_json(m) -> dict:
    params = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in m.params.items()}
    return {
        "metric": m.metric,
        "kind": m.kind,
        "formula": m.formula,
        "params": params,
        "rmse": m.rmse,
        "loo_rmse": m.loo_rmse,
        "cells": len(m.ce),
        "n_boot": m.n_boot,
    }


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "source"


def _check_baselines(baselines) -> dict[str, dict]:
    if baselines is None:
        return {}
    if not isinstance(baselines, Mapping):
        raise TypeError(
            "baselines must be a dict like {'BM25': {'metrics': {'mrr@10': 0.4}, 'split': "
            f"'test'}}, got {type(baselines).__name__}"
        )
    out = {}
    for name, b in baselines.items():
        where = f"baselines[{name!r}]"
        if not isinstance(name, str) or not name:
            raise TypeError(f"baselines keys must be non-empty str, got {name!r}")
        if not isinstance(b, Mapping):
            raise TypeError(f"{where} must be a dict with 'metrics', got {type(b).__name__}")
        metrics = b.get("metrics")
        if not isinstance(metrics, Mapping):
            raise TypeError(f"{where}['metrics'] must be a dict of numbers, got {metrics!r}")
        clean = {}
        for k, v in metrics.items():
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                raise TypeError(f"{where}['metrics'][{k!r}] must be a finite number, got {v!r}")
            clean[str(k)] = float(v)
        split = b.get("split")
        if split is not None and not isinstance(split, str):
            raise TypeError(f"{where}['split'] must be a str, got {split!r}")
        out[name] = {"metrics": clean, "split": split}
    return out


def write_report(
    records: Sequence[Mapping],
    out_dir: str | os.PathLike,
    *,
    oracle_ce: float | Mapping[str, float] | None = None,
    cost: CostModel | None = None,
    budget: float | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    fits: Mapping[str, SourceFits] | None = None,
    baselines: Mapping[str, Mapping] | None = None,
    include_unconverged: bool = False,
    study_dir: str | os.PathLike | None = None,
) -> Path:
    """Fit every law of ``records`` and write a report folder; returns the path of summary.md.

    Writes into ``out_dir`` (created if needed), each file atomically:
    ``loss_vs_N_<source>.png``, ``loss_vs_D_<source>.png``, ``residuals_<source>.png``,
    ``forecast_<source>.png`` (when a law has a forecast check), ``loss_vs_dim_<source>.png``
    (when the study varies d), ``budget_<source>.png`` (when a joint law fitted),
    ``sources.png`` (two or more sources), ``metrics_vs_ce.png`` (the CE-to-metric maps),
    ``training_curves.png`` (when ``study_dir`` holds ``metrics.jsonl`` files), ``fits.json``
    (every fitted constant, interval, R^2, forecast check, map, cell and budget answer) and
    ``summary.md`` last (tables, with the plots linked).

    Args:
        records: result records, see :mod:`densescale.scaling.records`.
        out_dir: report folder.
        oracle_ce: the collection's oracle contrastive entropy (one float, or per source), to
            compare with the fitted irreducible term; default: the records' ``oracle_ce``.
        cost: cost model of the budget answer (default ``CostModel()``).
        budget: dollars (default: the cost of the largest measured cell).
        n_boot, seed: bootstrap refits per fit and their seed.
        fits: the result of ``fit_study(records, cost=cost, budget=budget, n_boot=n_boot,
            seed=seed, include_unconverged=...)`` when already computed (e.g. to print it
            first); fitted here otherwise.
        baselines: reference rows, e.g. ``{"BM25": {"metrics": {"mrr@10": 0.4, "ndcg@10":
            0.45}, "split": "test"}}``, shown in every cell table and metric figure.
        include_unconverged: passed to :func:`fit_study` (when ``fits`` is None).
        study_dir: a study folder whose cells' ``metrics.jsonl`` are drawn as training curves.
    """
    recs = check_records(records)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir must be a folder, got the file {str(out)!r}")
    sources = sorted({r["source"] for r in recs})
    oracle = check_oracle(oracle_ce, sources)
    refs = _check_baselines(baselines)
    if study_dir is not None and not Path(study_dir).is_dir():
        raise ValueError(f"study_dir must be a folder, got {str(study_dir)!r}")
    cost = cost if cost is not None else CostModel()
    if fits is None:
        all_fits = fit_study(
            recs,
            cost=cost,
            budget=budget,
            n_boot=n_boot,
            seed=seed,
            include_unconverged=include_unconverged,
        )
    else:
        if not isinstance(fits, Mapping) or not all(
            isinstance(v, SourceFits) for v in fits.values()
        ):
            raise TypeError("fits must be the dict returned by fit_study")
        if set(fits) != set(sources):
            raise ValueError(
                f"fits covers sources {sorted(fits)} but records have {sources}; "
                "pass the fit_study result of these records"
            )
        all_fits = dict(fits)
    for s, f in all_fits.items():
        if s not in oracle and f.oracle_ce is not None:
            oracle[s] = f.oracle_ce
    out.mkdir(parents=True, exist_ok=True)

    files_by_source = {}
    for s, source_fits in all_fits.items():
        slug = _slug(s)
        files = {
            "loss_vs_N": f"loss_vs_N_{slug}.png",
            "loss_vs_D": f"loss_vs_D_{slug}.png",
            "residuals": f"residuals_{slug}.png",
        }
        plot_loss_vs_n(source_fits, out / files["loss_vs_N"], oracle_ce=oracle.get(s))
        plot_loss_vs_d(source_fits, out / files["loss_vs_D"], oracle_ce=oracle.get(s))
        plot_residuals(source_fits, out / files["residuals"])
        if plot_forecasts(source_fits, out / f"forecast_{slug}.png"):
            files["forecast"] = f"forecast_{slug}.png"
        if source_fits.dim_fits or source_fits.model_dim is not None:
            files["loss_vs_dim"] = f"loss_vs_dim_{slug}.png"
            plot_loss_vs_dim(source_fits, out / files["loss_vs_dim"], oracle_ce=oracle.get(s))
        if source_fits.allocation is not None:
            files["budget"] = f"budget_{slug}.png"
            plot_budget(
                source_fits.budget_law,
                cost,
                source_fits.budget,
                out / files["budget"],
                title=f"Budget ${source_fits.budget:,.0f} ({s} annotations): predicted CE (nats)",
                **source_fits.search_box,
            )
        files_by_source[s] = files
    sources_png = None
    if len(all_fits) >= 2:
        sources_png = "sources.png"
        common_d = plot_sources(
            all_fits, out / sources_png, oracle_ce=next(iter(oracle.values()), None)
        )
    maps_png = (
        "metrics_vs_ce.png"
        if plot_metric_maps(all_fits, out / "metrics_vs_ce.png", baselines=refs)
        else None
    )
    curves_png = None
    if study_dir is not None:
        try:
            plot_training_curves(study_dir, out / "training_curves.png")
            curves_png = "training_curves.png"
        except ValueError:
            curves_png = None
    first = next(iter(all_fits.values()))

    payload = {
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "records": len(recs),
        "cost_model": {f.name: getattr(cost, f.name) for f in fields(cost)},
        "baselines": refs,
        "metric_maps": {k: _map_json(m) for k, m in first.metric_maps.items()},
        "sources": {
            s: {
                "model_size": [_law_json(o) for o in f.model_fits],
                "data_size": [_law_json(o) for o in f.data_fits],
                "joint": _law_json(f.joint),
                "chinchilla": _law_json(f.chinchilla),
                "dimension": [_law_json(o) for o in f.dim_fits],
                "model_dimension": _law_json(f.model_dim),
                "oracle_ce": oracle.get(s),
                "chance_ce": f.chance_ce,
                "excluded": f.excluded,
                "include_unconverged": f.include_unconverged,
                "cells": [
                    {k: v for k, v in c.items() if k != "seen_bias"} | {"seen_bias": c["seen_bias"]}
                    for c in f.metrics
                ],
                "budget": f.budget,
                "budget_note": f.budget_note,
                "allocation": _alloc_json(f.allocation),
                "allocation_without_inference": _alloc_json(f.allocation_no_inference),
                "allocation_dimension": _alloc_json(f.allocation_dim),
                "memory_note": f.memory_note,
                "plots": files_by_source[s],
            }
            for s, f in all_fits.items()
        },
    }
    atomic_write_text(out / "fits.json", json.dumps(payload, indent=2) + "\n")

    lines = [
        "# Dense retrieval scaling-law report",
        "",
        (
            f"Generated {payload['generated']} from {len(recs)} result records; loss = contrastive "
            "entropy (CE, nats) on the test pairs; N = non-embedding parameters; D = annotated "
            "(query, passage) pairs; d = embedding dimension. Fits: Huber loss on log CE, "
            "L-BFGS-B from a grid of starts (`densescale.scaling`). Machine-readable values: "
            "[fits.json](fits.json)."
        ),
        "",
        "| source | cells | left out | runs | model sizes N | data sizes D | CE range (nats) | chance |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s, f in all_fits.items():
        cells = f.metrics
        ces = [c["ce"] for c in cells]
        ns = sorted({c["N"] for c in cells})
        ds = sorted({c["D"] for c in cells})
        chance = "-" if f.chance_ce is None else f"{f.chance_ce:.4f}"
        lines.append(
            f"| {s} | {len(cells)} | {len(f.excluded)} | {sum(c['runs'] for c in cells)} | "
            f"{len(ns)} ({_num(ns[0])} - {_num(ns[-1])}) | {len(ds)} ({_num(ds[0])} - "
            f"{_num(ds[-1])}) | {min(ces):.4f} - {max(ces):.4f} | {chance} |"
        )
    lines.append("")
    lines += _maps_section(first, maps_png)
    if curves_png:
        lines += ["## Training curves", "", f"![training curves]({curves_png})", ""]
    for s, f in all_fits.items():
        lines += _source_section(f, oracle.get(s), files_by_source[s], n_boot, refs)
    if sources_png is not None:
        at = f" at D = {common_d:,}" if common_d is not None else " at each source's largest D"
        lines += [
            "## Annotation sources compared",
            "",
            f"CE against N for every source{at}; lower curves mean better annotations.",
            "",
            "| source | alpha (joint) | beta (joint) | delta (joint) |",
            "|---|---|---|---|",
        ]
        for s, f in all_fits.items():
            if f.joint.law is None:
                lines.append(f"| {s} | - | - | - |")
            else:
                law = f.joint.law
                lines.append(
                    f"| {s} | {_with_ci(law, 'alpha')} | {_with_ci(law, 'beta')} "
                    f"| {_with_ci(law, 'delta')} |"
                )
        lines += ["", f"![sources]({sources_png})", ""]
    lines += ["## Cost model of the budget answers", ""] + _cost_table(cost) + [""]
    lines += [
        (
            "Training FLOPs = 6 N x tokens seen, inference FLOPs = 2 N x (corpus tokens + query "
            "tokens); dollars = FLOPs / achieved FLOP/s / 3600 x accelerator $/hour "
            "(`densescale.scaling.CostModel`)."
        ),
        "",
    ]
    return atomic_write_text(out / "summary.md", "\n".join(lines))
