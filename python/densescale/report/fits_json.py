"""``fits.json``: every fitted constant, interval, R^2, forecast check, CE-to-metric map, cell
and budget answer of a report, as plain JSON (what ``densescale budget --fits`` reads back).

Every law carries ``usable`` and, when false, ``failed_checks`` and ``usability`` (the one line
saying why, SPEC 7); its ``params`` stay for the record with ``params_status`` saying they
answer nothing. The joint laws also carry their bootstrap parameter sets (``bootstrap``) and the
sizes they were fitted on (``fitted_range``), so a budget answer read back from this file gets
its interval and its extrapolation factor; the model-size laws carry their bootstrap too (the
interval of a model's effective N, :mod:`densescale.eval.placement`). ``exchange`` holds, per source, its exchange rate
against human pairs (pair counts a source never reaches are null, with ``reaches`` false) or the
one line saying why there is none."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields

import numpy as np

from densescale.scaling import Allocation, CostModel, extrapolation

from .exchange import REFERENCE_SOURCE
from .outcomes import FitOutcome, SourceFits


def fits_payload(
    all_fits: Mapping[str, SourceFits],
    *,
    generated: str,
    n_records: int,
    cost: CostModel,
    baselines: Mapping[str, Mapping],
    oracle: Mapping[str, float],
    files_by_source: Mapping[str, dict],
) -> dict:
    """The content of ``fits.json`` (``generated``: the ISO time stamp of the report)."""
    first = next(iter(all_fits.values()))
    return {
        "generated": generated,
        "records": n_records,
        "cost_model": {f.name: getattr(cost, f.name) for f in fields(cost)},
        "cost_model_sources": first.cost_sources,
        "law_checks": {f.name: getattr(first.checks, f.name) for f in fields(first.checks)},
        "baselines": baselines,
        "metric_maps": {k: _map_json(m) for k, m in first.metric_maps.items()},
        "sources": {
            s: _source_json(f, oracle.get(s), files_by_source[s]) for s, f in all_fits.items()
        },
        # the exchange rate of every source against human pairs (densescale.report.exchange)
        "exchange": {
            "reference": REFERENCE_SOURCE,
            "sources": {s: f.exchange.to_json() for s, f in all_fits.items() if f.exchange},
        },
    }


def _source_json(f: SourceFits, oracle: float | None, plots: dict) -> dict:
    return {
        # with bootstrap: a placement's interval (densescale.eval.placement) reads it
        "model_size": [_law_json(o, bootstrap=True) for o in f.model_fits],
        "data_size": [_law_json(o, bootstrap=True) for o in f.data_fits],  # mixed budgets
        "joint": _law_json(f.joint, bootstrap=True),
        "chinchilla": _law_json(f.chinchilla, bootstrap=True),
        "dimension": [_law_json(o) for o in f.dim_fits],
        "model_dimension": _law_json(f.model_dim),
        "oracle_ce": oracle,
        "chance_ce": f.chance_ce,
        "excluded": f.excluded,
        "include_unconverged": f.include_unconverged,
        "cells": [
            {k: v for k, v in c.items() if k != "seen_bias"} | {"seen_bias": c["seen_bias"]}
            for c in f.metrics
        ],
        "budget": f.budget,
        "budget_note": f.budget_note,
        "allocation": _alloc_json(f.allocation, f.budget_law),
        "allocation_without_inference": _alloc_json(f.allocation_no_inference, f.budget_law),
        "allocation_dimension": _alloc_json(
            f.allocation_dim, None if f.model_dim is None else f.model_dim.usable_law
        ),
        "memory_note": f.memory_note,
        "plots": plots,
        # rank_agreement, metric_laws, seed_noise (densescale.report.yardsticks)
        **(f.yardsticks.to_json() if f.yardsticks is not None else {}),
    }


def _arr(x) -> list | None:
    return None if x is None else np.asarray(x, dtype=float).tolist()


def _law_json(o: FitOutcome | None, *, bootstrap: bool = False) -> dict | None:
    if o is None:
        return None
    d = {
        "kind": o.kind,
        "fixed": o.fixed,
        "points": o.n_points,
        "error": o.error,
        "excluded": list(o.excluded),
        "usable": o.usable,
    }
    if o.law is not None:
        u = o.usability
        d.update(
            formula=o.law.formula,
            params=o.law.params,
            ci={k: list(v) for k, v in o.law.ci.items()},
            r2=o.law.r2,
            usability=o.status,
            failed_checks=[] if u is None else list(u.failed),
        )
        if not o.usable:
            # kept for the record: these constants answer nothing (SPEC 7)
            d["params_status"] = "not usable: kept for the record only; see usability"
        if u is not None and not u.evidence:
            d["r2_is_evidence"] = False  # no more points than parameters by the margin
        if o.law.fit is not None and o.law.fit.x_range:
            d["fitted_range"] = {k: list(v) for k, v in o.law.fit.x_range.items()}
        if bootstrap and o.law.fit is not None and o.law.fit.bootstrap is not None:
            d["bootstrap"] = o.law.fit.bootstrap.tolist()
            d["ci_level"] = o.law.fit.ci_level
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


def _alloc_json(a: Allocation | None, law=None) -> dict | None:
    """A budget answer: its sizes, predicted loss (with its interval, when the law has a
    bootstrap), how far beyond the fitted sizes it lies, and its cost split (and memory, for
    (N, d))."""
    if a is None:
        return None
    out = _attributes(a, ("N", "D", "loss", "budget", "include_inference", "at_bound"))
    out["cost"] = _attributes(a.cost, ("annotation", "training", "inference", "total"))
    if a.d is not None:
        out |= _attributes(a, ("d", "memory_budget", "memory_bytes"))
    if law is not None:
        at = (a.N, a.d) if a.d is not None else (a.N, a.D)
        band = law.interval(*at)
        out["loss_interval"] = None if band is None else [float(band[0]), float(band[1])]
        ranges = {} if law.fit is None else law.fit.x_range
        names = ("N", "d") if a.d is not None else ("N", "D")
        out["extrapolation"] = {
            k: extrapolation(v, ranges[k]) for k, v in zip(names, at) if k in ranges
        }
    return out


def _attributes(obj, names: tuple[str, ...]) -> dict:
    return {name: getattr(obj, name) for name in names}


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
