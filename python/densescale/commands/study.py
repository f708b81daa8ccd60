"""``densescale study`` and ``densescale report``."""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from pathlib import Path


def cmd_study(args) -> int:
    from densescale.study import StudyInterrupted, estimate_gpu_hours, load_study, run_study

    if getattr(args, "rehearse_growth", None):
        return _rehearse_growth(args.rehearse_growth)
    if args.file is None and args.preset is None:
        raise SystemExit("error: give a study file or --preset NAME")
    study = load_study(
        args.file, preset=args.preset if args.file is None else None, output=args.out
    )
    col = dict(study.collection)
    for key in ("collection", "queries", "qrels_train", "qrels_dev", "qrels_test"):
        value = getattr(args, f"{key}_file" if key in ("collection", "queries") else key, None)
        if value:
            col[key] = value
    if args.collection:
        from densescale.data.resolve import collection_table

        col = {**{k: v for k, v in col.items() if k == "doc2query_model"}}
        col.update(collection_table(args.collection))
    executor = dict(study.executor)
    if args.workers:
        executor["workers"] = args.workers
    if args.executor:
        executor["kind"] = args.executor
    study = dataclasses.replace(study, collection=col, executor=executor)
    if study.collection["kind"] == "msmarco" and not study.collection.get("path"):
        missing = [
            k for k in ("collection", "queries", "qrels_train", "qrels_dev") if not col.get(k)
        ]
        if missing:
            raise SystemExit(
                "error: the msmarco collection needs "
                + ", ".join(
                    f"--{m.replace('_', '-')}" + ("-file" if m in ("collection", "queries") else "")
                    for m in missing
                )
            )
    if getattr(args, "rehearse", False):
        from densescale.study.rehearse import rehearse

        print(rehearse(study, force=args.force)["table"])
        print(f"\nrehearsal: {study.output / 'rehearsal'}")
        return 0
    hours = estimate_gpu_hours(study)
    if hours >= 1.0:
        print(f"estimated compute: {hours:,.0f} GPU-hours (H100, bf16 at 40% of peak)")
        if not args.yes:
            print("re-run with --yes to start")
            return 2
    try:
        result = run_study(study, force=args.force)
    except KeyboardInterrupt as e:
        counted = isinstance(e, StudyInterrupted) and e.total
        done = f"{e.done}/{e.total} cells done; " if counted else ""
        argv = [a for a in getattr(args, "argv", None) or sys.argv[1:] if a != "--force"]
        print(
            f"\ninterrupted: {done}finished cells and training checkpoints are kept in "
            f"{study.output}.\nresume with: {shlex.join(['densescale', *argv])}",
            file=sys.stderr,
            flush=True,
        )
        return 130
    print(f"\nresults: {study.output / 'results.jsonl'}")
    if result["report"] is not None:
        print(f"report:  {result['report']}")
    return 0


def _rehearse_growth(files: list[str]) -> int:
    from densescale.study.rehearse_cost import format_growth, growth

    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise SystemExit(f"error: --rehearse-growth: {missing} do not exist (rehearsal.json files)")
    rows = growth([json.loads(Path(f).read_text()) for f in files])
    print(format_growth(rows))
    return 0


def cmd_report(args) -> int:
    from densescale.report import fit_study, write_report
    from densescale.scaling import LawChecks
    from densescale.study.store import ResultsStore

    results = Path(args.results)
    if not results.is_file():
        raise SystemExit(f"error: {results} does not exist (a study's results.jsonl)")
    records = ResultsStore(results).records()
    if not records:
        raise SystemExit(f"error: {results} holds no results")
    from densescale.report.placements import read_placed

    try:  # a bad --place file fails before any fit
        placed = read_placed(args.place or [])
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    out = Path(args.out) if args.out else results.parent / "report"
    # the study's BM25 reference rows sit beside its results (bm25.<split>.json)
    baselines = {}
    for f in sorted(results.parent.glob("bm25.*.json")):
        row = json.loads(f.read_text())
        if isinstance(row.get("settings"), dict) and "passages" in row["settings"]:
            from densescale.study.prepare import describe_bm25_corpus

            row["corpus"] = describe_bm25_corpus(row["settings"])
        baselines[row.get("name", "BM25")] = row
        m = row.get("metrics", {})
        on = f" (on {row['corpus']})" if row.get("corpus") else ""
        print(
            f"  {row.get('name', 'BM25')} reference{on}: "
            + ", ".join(f"{k} {v:.3f}" for k, v in m.items())
        )
    if not baselines:
        print(f"note: no bm25.<split>.json beside {results}: the report has no BM25 row")
    include = args.include_unconverged
    checks = LawChecks(
        min_r2=args.min_r2,
        min_points_over_params=args.min_points_over_params,
        max_ci_decades=args.max_ci_decades,
    )
    fits = fit_study(
        records, n_boot=args.n_boot, seed=0, include_unconverged=include, checks=checks
    )
    print(
        f"law checks (SPEC 7; a law failing any answers nothing): R^2 >= {checks.min_r2:g}, "
        f">= {checks.min_points_over_params:g} points per parameter, no parameter on a bound, "
        f"95% intervals within {checks.max_ci_decades:g} decades, forecast check passed"
    )
    for f in fits.values():
        print(f.describe())
    first = next(iter(fits.values()))
    if first.cost is not None:
        origin = first.cost_sources
        print(
            f"cost model: corpus_size = {first.cost.corpus_size:,.0f} passages "
            f"({origin.get('corpus_size', 'given')}); queries_served = "
            f"{first.cost.queries_served:.3g} ({origin.get('queries_served', 'given')})"
        )
    cells = results.parent / "cells"
    path = write_report(
        records,
        out,
        oracle_ce=args.oracle_ce,
        baselines=baselines or None,
        n_boot=args.n_boot,
        seed=0,
        fits=fits,
        include_unconverged=include,
        study_dir=cells if args.curves and cells.is_dir() else None,
        placed=placed,
    )
    if placed:
        from densescale.eval.placement import Placement

        for source, rows in json.loads((out / "fits.json").read_text())["placements"].items():
            for row in rows:
                p = Placement(**row)
                print(f"[{source}] {p.name} (CE {p.ce:.4f}): {p.describe()}")
    print(f"report: {path}")
    if (out / "training_curves.png").is_file():
        print(f"training curves: {out / 'training_curves.png'}")
    return 0


# The paper's published MS MARCO joint law (SPEC 1.4) and the sizes it was fitted on: N from
# BERT-Tiny to BERT-Base (SPEC 1.2); D at most the full MS MARCO training qrels (532,761 pairs;
# the paper does not publish its smallest D, so only the upper end is known).
