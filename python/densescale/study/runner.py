"""The study runner: a thin loop over the grid.

:func:`run_study` prepares once (:mod:`~densescale.study.prepare`: collection, folder check,
data checks, tokenizer, BM25), expands the grid, skips cells whose stored record has the current
config (:mod:`~densescale.study.folder`), hands the rest to an executor
(:mod:`~densescale.study.executors`, which runs :func:`~densescale.study.cell.run_cell` per cell)
and writes the report. A rerun skips finished cells; an interrupted cell resumes from its training
checkpoint; an interrupt raises :class:`StudyInterrupted`.
"""

from __future__ import annotations

from pathlib import Path

from densescale.study import executors, folder
from densescale.study.config import StudyConfig
from densescale.study.prepare import prepare
from densescale.study.store import ResultsStore


class StudyInterrupted(KeyboardInterrupt):
    """A study stopped by an interrupt; finished cells and checkpoints are kept."""

    def __init__(self, study: StudyConfig, done: int, total: int) -> None:
        super().__init__(f"{done}/{total} cells done")
        self.study, self.done, self.total = study, done, total


def run_study(
    study: StudyConfig, *, progress: bool = True, report: bool = True, force: bool = False
) -> dict:
    """Run every unfinished cell, then write the report; returns {"records", "report"}.

    Data sizes larger than the collection's training pairs are cut to them
    (:func:`~densescale.study.prepare.fit_grid_to_data`). ``force`` moves aside the results of a
    folder made from another collection instead of refusing it
    (:func:`~densescale.study.folder.check_folder`)."""
    plan: dict = {"hashes": {}}
    try:
        info = prepare(study, progress=progress, force=force, fit_grid=True)
        study = info["study"]
        plan = folder.plan_cells(study, study.cells(), info["fingerprint"])
        if progress:
            _announce(study, plan)
        if plan["todo"]:
            _run(study, plan["todo"], progress)
    except KeyboardInterrupt:
        done = folder.count_done(study, plan["hashes"])
        raise StudyInterrupted(study, done, len(plan["hashes"])) from None
    records = ResultsStore(study.paths()["results"]).records()
    out = {"records": records, "report": None}
    if report:
        out["report"] = write_study_report(study, records, info)
    return out


def _announce(study: StudyConfig, plan: dict) -> None:
    ex = study.executor
    print(
        f"study {study.name}: {len(plan['done'])}/{len(plan['hashes'])} cells done, running "
        f"{len(plan['todo'])} ({ex.get('kind', 'local')}, {int(ex.get('workers', 1))} "
        f"worker(s)) -> {study.output}",
        flush=True,
    )
    if plan["changed"]:
        what = sorted({s for settings in plan["changed"].values() for s in settings})
        print(
            f"  {len(plan['changed'])} stored record(s) made with another config "
            f"(changed: {', '.join(what)}) moved to {study.output / 'superseded.jsonl'}; "
            "their cells run again",
            flush=True,
        )


def _run(study: StudyConfig, todo: list, progress: bool) -> None:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="cells", unit="cell", disable=not progress, dynamic_ncols=True)

    def on_record(rec: dict) -> None:
        bar.update(1)
        bar.write(describe_record(rec))

    try:
        executors.make_executor(study, progress=progress).run(study, todo, on_record)
    finally:
        bar.close()


def write_study_report(study: StudyConfig, records: list[dict], info: dict) -> Path:
    """Fit every law per annotation source, print them, and write the report folder (``info``:
    what :func:`~densescale.study.prepare.prepare` returned: oracle, chance, baselines)."""
    from densescale.report import fit_study, write_report

    split = study.eval.get("split", "test")
    oracle_ce = (info.get("oracle") or {}).get("splits", {}).get(split, {}).get("oracle_ce")
    baselines = info.get("baselines")
    fits = fit_study(records, n_boot=100, seed=0)
    k = int(study.eval.get("num_negatives", 256))
    print(
        f"\nfitted laws (contrastive entropy on the {split} split; chance = ln({k}+1) = "
        f"{info['chance_ce']:.3f}):"
    )
    for f in fits.values():
        print(f.describe())
    if oracle_ce is not None:
        print(f"  oracle contrastive entropy of the collection: {oracle_ce:.4f}")
    for name, row in (baselines or {}).items():
        m = row.get("metrics", {})
        on = f" (on {row['corpus']})" if row.get("corpus") else ""
        print(f"  {name} reference{on}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items()))
    paths = study.paths()
    return write_report(
        records,
        paths["report"],
        oracle_ce=oracle_ce,
        baselines=baselines,
        n_boot=100,
        seed=0,
        fits=fits,
        study_dir=paths["cells"] if paths["cells"].is_dir() else None,
    )


_NOT_CONVERGED = {
    "peaked_early": "NOT CONVERGED (peaked early: best dev CE at step {best}, its first evaluations)",
    "memorising": "NOT CONVERGED (memorising: dev CE ended above chance)",
    "above_chance": "NOT CONVERGED (dev CE never went below chance)",
}


def describe_record(rec: dict) -> str:
    """One line per finished cell, with its yardsticks: chance, convergence, the flags."""
    tr = rec.get("train", {})
    chance = rec.get("chance_ce")
    line = (
        f"  {rec['model']:>8s} d={rec.get('d', 768):<4d} D={rec['D']:<7d} {rec['source']:<6s} "
        f"CE={rec['ce']:.4f}"
    )
    if chance is not None:
        line += f" (chance {chance:.2f})"
    mrr = rec.get("metrics", {}).get("mrr@10")
    if mrr is not None:
        line += f" MRR@10={mrr:.3f}"
        level = rec.get("metrics_chance", {}).get("mrr@10")
        if level is not None:
            line += f" (random {level:.3f})"
    line += f" N={rec['N']:,}"
    if "converged" in rec:
        state = rec.get("convergence") or tr.get("convergence")
        if rec["converged"]:
            line += f" converged@{tr.get('best_step')}"
        elif state in _NOT_CONVERGED:
            line += " " + _NOT_CONVERGED[state].format(best=tr.get("best_step"))
        else:
            line += f" NOT CONVERGED (stopped at the {tr.get('steps')}-step cap)"
    line += f" ({rec['seconds']:.0f}s)"
    clean = rec.get("clean")
    overlap = rec.get("overlap", {}).get("share")
    if clean and overlap and clean.get("ce") is not None:
        line += (
            f"\n      {overlap:.0%} of test pairs have a training positive; clean subset "
            f"({clean['num_queries']} queries): CE={clean['ce']:.4f}"
        )
        if clean.get("metrics", {}).get("mrr@10") is not None:
            line += f" MRR@10={clean['metrics']['mrr@10']:.3f}"
    if rec.get("near_chance"):
        if any(rec.get("metrics_above_chance", {}).values()):
            line += (
                "  !! CE AT OR ABOVE 0.9 x CHANCE (left out of CE fits), but its ranking metrics "
                "are clearly above a random ranking's"
            )
        else:
            line += (
                "  !! AT OR ABOVE 0.9 x CHANCE: this model has not learned to rank; left out of "
                "fits"
            )
    if "seen_passage_bias" in rec.get("flags", ()):
        line += "  !! seen-passage bias decides the ranking"
    if "dev_test_gap" in rec.get("flags", ()):
        dev = tr.get("best_dev_ce")
        line += (
            f"  !! dev CE {dev:.3f} and test CE {rec['ce']:.3f} disagree (by "
            f"{abs(rec['dev_test_gap']):.0%} of chance): dev does not predict test"
        )
    return line
