"""The study report on disk: :func:`write_report` fits the study (:func:`~densescale.report.fit_study`)
unless given the fits, draws every figure (:mod:`densescale.report.figures`), then writes
``fits.json`` (:mod:`densescale.report.fits_json`) and ``summary.md`` last
(:mod:`densescale.report.summary`, one function per section), each file atomically.

What ``summary.md`` holds, in order: an overview per source; the CE-to-ranking-metric maps
(every cell, with bands); then per source: the cells (with chance, converged, flags and the
lexical baselines as reference rows, and a plain sentence for every cell whose numbers mean
nothing), the model-size, data-size, joint and embedding-dimension laws, the rank agreement of CE
and the ranking metrics per slice (with the laws in 1 - metric), the seed noise against the gaps
between sizes, the forecast checks, the laws' predictions in MRR@10 / NDCG@10, the irreducible
loss against the oracle, and the budget answers; last the cost model.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from densescale.scaling import CostModel, LawChecks
from densescale.scaling.fitting import DEFAULT_N_BOOT

from ._io import atomic_write_json, atomic_write_text
from .figures import (
    plot_budget,
    plot_exchange,
    plot_forecasts,
    plot_loss_vs_d,
    plot_loss_vs_dim,
    plot_loss_vs_n,
    plot_metric_maps,
    plot_residuals,
    plot_sources,
    plot_training_curves,
)
from .fits import fit_study
from .fits_json import fits_payload
from .outcomes import SourceFits
from .placements import place_in_study, placements_markdown
from .records import check_baselines, check_oracle, check_records
from .summary import summary_markdown
from .yardsticks import YardstickOptions


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
    yardsticks: YardstickOptions | None = None,
    checks: LawChecks | None = None,
    placed: Sequence[Mapping] | None = None,
) -> Path:
    """Fit every law of ``records`` and write a report folder; returns the path of summary.md.

    Writes into ``out_dir`` (created if needed), each file atomically:
    ``loss_vs_N_<source>.png``, ``loss_vs_D_<source>.png``, ``residuals_<source>.png``,
    ``forecast_<source>.png`` (when a law has a forecast check), ``loss_vs_dim_<source>.png``
    (when the study varies d), ``budget_<source>.png`` (when a joint law fitted),
    ``sources.png`` (two or more sources), ``exchange.png`` (sources against ``human``: CE vs D
    per source and the exchange rate), ``metrics_vs_ce.png`` (the CE-to-metric maps),
    ``training_curves.png`` (when ``study_dir`` holds ``metrics.jsonl`` files), ``fits.json``
    (every fitted constant, interval, R^2, forecast check, map, cell and budget answer) and
    ``summary.md`` last (tables, with the plots linked).

    Args:
        records: result records, see :mod:`densescale.report.records`.
        out_dir: report folder.
        oracle_ce: the collection's oracle contrastive entropy (one float, or per source), to
            compare with the fitted irreducible term; default: the records' ``oracle_ce``.
        cost: cost model of the budget answer (default ``CostModel()`` with the corpus size of
            the records' evaluated corpus when they give one, see :func:`fit_study`).
        checks: the :class:`~densescale.scaling.LawChecks` a law must pass before it answers
            (when ``fits`` is None; default ``LawChecks()``).
        budget: dollars (default: the cost of the largest measured cell).
        n_boot, seed: bootstrap refits per fit and their seed.
        fits: the result of ``fit_study(records, cost=cost, budget=budget, n_boot=n_boot,
            seed=seed, include_unconverged=...)`` when already computed (e.g. to print it
            first); fitted here otherwise.
        baselines: reference rows, e.g. ``{"BM25": {"metrics": {"mrr@10": 0.4, "ndcg@10":
            0.45}, "split": "test"}}``, shown in every cell table and metric figure.
        include_unconverged: passed to :func:`fit_study` (when ``fits`` is None).
        placed: evaluation records of ``densescale eval`` (:func:`~densescale.report.placements.read_placed`)
            to place on each source's law: marked on ``loss_vs_N_<source>.png`` at their
            effective N, listed in ``summary.md`` and under ``"placements"`` in ``fits.json``
            (with the one-line reason when no usable law answers).
        study_dir: a study folder whose cells' ``metrics.jsonl`` are drawn as training curves.
        yardsticks: thresholds of the rank agreement and seed noise, passed to
            :func:`fit_study` (when ``fits`` is None).
    """
    recs = check_records(records)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir must be a folder, got the file {str(out)!r}")
    sources = sorted({r["source"] for r in recs})
    oracle = check_oracle(oracle_ce, sources)
    refs = check_baselines(baselines)
    if study_dir is not None and not Path(study_dir).is_dir():
        raise ValueError(f"study_dir must be a folder, got {str(study_dir)!r}")
    if checks is not None and not isinstance(checks, LawChecks):
        raise TypeError(f"checks must be a LawChecks or None, got {type(checks).__name__}")
    if fits is None:
        all_fits = fit_study(
            records,  # raw: fit_study checks them itself (checked records would be relabelled)
            checks=checks,
            cost=cost,
            budget=budget,
            n_boot=n_boot,
            seed=seed,
            include_unconverged=include_unconverged,
            yardsticks=yardsticks,
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
    # the cost model the budget answers used (its corpus size from the records, when known)
    cost = cost if cost is not None else next(iter(all_fits.values())).cost or CostModel()
    for s, f in all_fits.items():
        if s not in oracle and f.oracle_ce is not None:
            oracle[s] = f.oracle_ce
    out.mkdir(parents=True, exist_ok=True)
    # the raw records keep what each was evaluated on (split, K, queries, passages)
    evaluated = [{**raw, "source": rec["source"]} for raw, rec in zip(records, recs)]
    placements = place_in_study(placed or (), all_fits, evaluated)

    files_by_source = {
        s: _source_figures(f, out, cost, oracle.get(s), placements.get(s, ()))
        for s, f in all_fits.items()
    }
    figures, common_d = _study_figures(all_fits, out, oracle, refs, study_dir)
    # what fits.json and summary.md both say
    shared = {
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "n_records": len(recs),
        "cost": cost,
        "baselines": refs,
        "oracle": oracle,
        "files_by_source": files_by_source,
    }
    payload = fits_payload(all_fits, **shared)
    if placed:
        payload["placements"] = {s: [asdict(p) for p in ps] for s, ps in placements.items()}
    atomic_write_json(out / "fits.json", payload)
    text = summary_markdown(all_fits, figures=figures, common_d=common_d, n_boot=n_boot, **shared)
    return atomic_write_text(out / "summary.md", text + placements_markdown(placements))


def _source_figures(
    fits: SourceFits, out: Path, cost: CostModel, oracle: float | None, placed=()
) -> dict:
    """Draw every figure of one source into ``out``; returns figure name -> PNG file name."""
    s = fits.source
    slug = _slug(s)
    files = {
        "loss_vs_N": f"loss_vs_N_{slug}.png",
        "loss_vs_D": f"loss_vs_D_{slug}.png",
        "residuals": f"residuals_{slug}.png",
    }
    plot_loss_vs_n(fits, out / files["loss_vs_N"], oracle_ce=oracle, placed=placed)
    plot_loss_vs_d(fits, out / files["loss_vs_D"], oracle_ce=oracle)
    plot_residuals(fits, out / files["residuals"])
    if plot_forecasts(fits, out / f"forecast_{slug}.png"):
        files["forecast"] = f"forecast_{slug}.png"
    if fits.dim_fits or fits.model_dim is not None:
        files["loss_vs_dim"] = f"loss_vs_dim_{slug}.png"
        plot_loss_vs_dim(fits, out / files["loss_vs_dim"], oracle_ce=oracle)
    if fits.allocation is not None:
        files["budget"] = f"budget_{slug}.png"
        plot_budget(
            fits.budget_law,
            cost,
            fits.budget,
            out / files["budget"],
            title=f"Budget ${fits.budget:,.0f} ({s} annotations): predicted CE (nats)",
            **fits.search_box,
        )
    return files


def _study_figures(all_fits, out: Path, oracle: dict, refs: dict, study_dir):
    """Draw the study-wide figures; returns (figure name -> PNG file name, the D of the sources
    figure or None)."""
    figures, common_d = {}, None
    if len(all_fits) >= 2:
        figures["sources"] = "sources.png"
        common_d = plot_sources(
            all_fits, out / "sources.png", oracle_ce=next(iter(oracle.values()), None)
        )
        if plot_exchange(
            all_fits,
            out / "exchange.png",
            oracle_ce=next(iter(oracle.values()), None),
            baselines=refs,
        ):
            figures["exchange"] = "exchange.png"
    if plot_metric_maps(all_fits, out / "metrics_vs_ce.png", baselines=refs):
        figures["metrics_vs_ce"] = "metrics_vs_ce.png"
    if study_dir is not None:
        try:
            plot_training_curves(study_dir, out / "training_curves.png")
            figures["training_curves"] = "training_curves.png"
        except ValueError:
            pass
    return figures, common_d


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "source"
