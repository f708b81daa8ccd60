"""The study report on disk: ``summary.md`` (tables, plots linked) and ``fits.json``.

:func:`write_report` fits the study (:mod:`densescale.scaling.study_fits`) unless given the fits,
draws every figure (:mod:`densescale.scaling.plots`) and writes the Markdown and JSON here.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
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
from .plots import plot_budget, plot_loss_vs_d, plot_loss_vs_n, plot_residuals, plot_sources
from .records import check_oracle, check_records
from .study_fits import FitOutcome, SourceFits, fit_study


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


def _extrap_text(o: FitOutcome) -> str:
    if o.extrapolation is None:
        return f"n/a ({o.extrapolation_note})" if o.extrapolation_note else "n/a"
    e = o.extrapolation
    held = ", ".join(_num(v) for v in e.held_out_values)
    return (
        f"{100 * e.mean_abs_relative_error:.1f}% mean, {100 * e.max_abs_relative_error:.1f}% "
        f"max (held out {e.holdout} = {held})"
    )


def _law_table(outcomes: list[FitOutcome], key: str, names: tuple[str, ...]) -> list[str]:
    head = f"| {key} | points | " + " | ".join(names) + " | R^2 | extrapolation error |"
    lines = [head, "|" + "---|" * (len(names) + 4)]
    notes = []
    for o in outcomes:
        label = f"{o.fixed[key]:,}" if key in o.fixed else "-"
        if o.law is None:
            notes.append(f"- {key} = {label}: {o.error}")
            continue
        cells = " | ".join(_with_ci(o.law, n) for n in names)
        lines.append(f"| {label} | {o.n_points} | {cells} | {o.law.r2:.4f} | {_extrap_text(o)} |")
        if o.caveat:
            notes.append(f"- {key} = {label}: {o.caveat}")
    if len(lines) == 2:
        lines = ["(no fit)"]
    return lines + ([""] + notes if notes else [])


def _source_section(fits: SourceFits, oracle: float | None, files: dict, n_boot: int) -> list[str]:
    s = fits.source
    out = [f"## Source `{s}`", ""]
    metric_names = sorted({k for c in fits.metrics for k in c["metrics"]})
    out += [
        "### Measurements (mean over runs)",
        "",
        "| model | N | D | runs | CE (nats) |" + "".join(f" {k} |" for k in metric_names),
        "|" + "---|" * (5 + len(metric_names)),
    ]
    for c in fits.metrics:
        extra = "".join(f" {_num(c['metrics'].get(k, float('nan')))} |" for k in metric_names)
        out.append(
            f"| {c['model']} | {c['N']:,} | {c['D']:,} | {c['runs']} | {c['ce']:.4f} |{extra}"
        )
    intervals = (
        f"Values in brackets are 95% bootstrap intervals ({n_boot} residual-bootstrap refits; "
        "none where a fit has no more points than parameters)"
        if n_boot
        else "No bootstrap intervals (n_boot = 0)"
    )
    out += [
        "",
        (
            f"{intervals}; extrapolation error = |predicted - observed| / observed on the held-out "
            "largest size, fitting without it."
        ),
        "",
        "### Model-size law `L(N) = (A/N)^alpha + delta`, per D",
        "",
    ]
    out += _law_table(fits.model_fits, "D", ("A", "alpha", "delta"))
    out += ["", f"![loss vs model size]({files['loss_vs_N']})", ""]
    out += ["### Data-size law `L(D) = (B/D)^beta + delta`, per N", ""]
    out += _law_table(fits.data_fits, "N", ("B", "beta", "delta"))
    out += ["", f"![loss vs annotations]({files['loss_vs_D']})", ""]
    out += ["### Joint laws", ""]
    names = ("A", "B", "alpha", "beta", "delta")
    out += [
        "| form | points | " + " | ".join(names) + " | R^2 | extrapolation error |",
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
                f"| `{formula}` | {o.n_points} | {cells} | {o.law.r2:.4f} | {_extrap_text(o)} |"
            )
    out += ["", f"![residuals]({files['residuals']})", ""]

    out += ["### Irreducible loss", ""]
    rows = []
    if fits.joint.law is not None:
        rows.append(("joint law (paper form)", fits.joint.law))
    largest = [o for o in fits.model_fits if o.law is not None]
    if largest:
        o = max(largest, key=lambda o: o.fixed["D"])
        rows.append((f"model-size law at D = {o.fixed['D']:,}", o.law))
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
        out += [
            f"Minimise the {law_name} subject to cost <= ${fits.budget:,.2f}"
            + (f" ({fits.budget_note})" if fits.budget_note else "")
            + f"; N searched in [{_num(fits.search_box['N_bounds'][0])}, "
            f"{_num(fits.search_box['N_bounds'][1])}], D in "
            f"[{_num(fits.search_box['D_bounds'][0])}, {_num(fits.search_box['D_bounds'][1])}].",
            "",
            (
                "| | N | D | predicted CE | annotation $ | training $ | inference $ | total $ "
                "| on search bound |"
            ),
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for label, x in (("with inference cost", a), ("without inference cost", b)):
            out.append(
                f"| {label} | {x.N:.3g} | {x.D:.3g} | {x.loss:.4f} | {x.cost.annotation:,.2f} "
                f"| {x.cost.training:,.2f} | {x.cost.inference:,.2f} | {x.cost.total:,.2f} "
                f"| {x.at_bound or 'no'} |"
            )
        out += ["", f"![budget]({files['budget']})", ""]
    return out


def _cost_table(cost: CostModel) -> list[str]:
    lines = ["| parameter | value |", "|---|---|"]
    for f in fields(cost):
        lines.append(f"| {f.name} | {getattr(cost, f.name)} |")
    return lines


def _law_json(o: FitOutcome) -> dict:
    d = {"kind": o.kind, "fixed": o.fixed, "points": o.n_points, "error": o.error}
    if o.law is not None:
        d.update(
            formula=o.law.formula,
            params=o.law.params,
            ci={k: list(v) for k, v in o.law.ci.items()},
            r2=o.law.r2,
        )
    if o.extrapolation is not None:
        e = o.extrapolation
        d["extrapolation"] = {
            "holdout": e.holdout,
            "held_out_values": e.held_out_values.tolist(),
            "mean_abs_relative_error": e.mean_abs_relative_error,
            "max_abs_relative_error": e.max_abs_relative_error,
        }
    return d


def _alloc_json(a: Allocation | None) -> dict | None:
    if a is None:
        return None
    return {
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


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "source"


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
) -> Path:
    """Fit every law of ``records`` and write a report folder; returns the path of summary.md.

    Writes into ``out_dir`` (created if needed), each file atomically:
    ``loss_vs_N_<source>.png``, ``loss_vs_D_<source>.png``, ``residuals_<source>.png``,
    ``budget_<source>.png`` (when a joint law fitted), ``sources.png`` (two or more sources),
    ``fits.json`` (every fitted constant, interval, R^2, extrapolation error, budget answer) and
    ``summary.md`` last (tables, with the plots linked).

    Args:
        records: result records, see the module docstring.
        out_dir: report folder.
        oracle_ce: the collection's oracle contrastive entropy (one float, or per source), to
            compare with the fitted irreducible term.
        cost: cost model of the budget answer (default ``CostModel()``).
        budget: dollars (default: the cost of the largest measured cell).
        n_boot, seed: bootstrap refits per fit and their seed.
        fits: the result of ``fit_study(records, cost=cost, budget=budget, n_boot=n_boot,
            seed=seed)`` when already computed (e.g. to print it first); fitted here otherwise.
    """
    recs = check_records(records)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir must be a folder, got the file {str(out)!r}")
    sources = sorted({r["source"] for r in recs})
    oracle = check_oracle(oracle_ce, sources)
    cost = cost if cost is not None else CostModel()
    if fits is None:
        all_fits = fit_study(recs, cost=cost, budget=budget, n_boot=n_boot, seed=seed)
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
    out.mkdir(parents=True, exist_ok=True)

    files_by_source = {}
    for s, source_fits in all_fits.items():
        slug = _slug(s)
        files = {
            "loss_vs_N": f"loss_vs_N_{slug}.png",
            "loss_vs_D": f"loss_vs_D_{slug}.png",
            "residuals": f"residuals_{slug}.png",
        }
        plot_loss_vs_n(source_fits, out / files["loss_vs_N"])
        plot_loss_vs_d(source_fits, out / files["loss_vs_D"])
        plot_residuals(source_fits, out / files["residuals"])
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
        common_d = plot_sources(all_fits, out / sources_png)

    payload = {
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "records": len(recs),
        "cost_model": {f.name: getattr(cost, f.name) for f in fields(cost)},
        "sources": {
            s: {
                "model_size": [_law_json(o) for o in f.model_fits],
                "data_size": [_law_json(o) for o in f.data_fits],
                "joint": _law_json(f.joint),
                "chinchilla": _law_json(f.chinchilla),
                "oracle_ce": oracle.get(s),
                "budget": f.budget,
                "budget_note": f.budget_note,
                "allocation": _alloc_json(f.allocation),
                "allocation_without_inference": _alloc_json(f.allocation_no_inference),
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
            "(query, passage) pairs. Fits: Huber loss on log CE, L-BFGS-B from a grid of starts "
            "(`densescale.scaling`). Machine-readable values: [fits.json](fits.json)."
        ),
        "",
        "| source | cells | runs | model sizes N | data sizes D | CE range (nats) |",
        "|---|---|---|---|---|---|",
    ]
    for s, f in all_fits.items():
        lines.append(
            f"| {s} | {len(f.ce)} | {int(f.runs.sum())} | {len(np.unique(f.N))} "
            f"({_num(f.N.min())} - {_num(f.N.max())}) | {len(np.unique(f.D))} "
            f"({_num(f.D.min())} - {_num(f.D.max())}) | {f.ce.min():.4f} - {f.ce.max():.4f} |"
        )
    lines.append("")
    for s, f in all_fits.items():
        lines += _source_section(f, oracle.get(s), files_by_source[s], n_boot)
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
