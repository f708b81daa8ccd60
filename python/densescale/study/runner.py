"""The study runner: prepare the collection and tokenizer once, run every grid cell (train + eval)
as an independent job, keep results in an append-only store, and write the scaling report.

Cells run in a local process pool by default, or as a SLURM job array through submitit. A rerun
skips finished cells; an interrupted cell resumes from its training checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from densescale.study.config import Cell, StudyConfig
from densescale.study.store import ResultsStore

RESULTS = "results.jsonl"


def study_paths(study: StudyConfig) -> dict[str, Path]:
    out = study.output
    col = study.collection
    collection = Path(col["path"]) if col.get("path") else out / "collection"
    return {
        "out": out,
        "collection": collection,
        "tokenizer": Path(study.tokenizer["path"])
        if study.tokenizer.get("path")
        else out / "tokenizer",
        "results": out / RESULTS,
        "cells": out / "cells",
        "report": out / "report",
    }


def load_collection(study: StudyConfig):
    from densescale import data

    col, paths = study.collection, study_paths(study)
    if col["kind"] == "synthetic":
        data.synthetic(paths["collection"], **col.get("synthetic", {}))
        return data.load_beir(paths["collection"])
    if col["kind"] == "beir":
        return data.load_beir(paths["collection"])
    return data.load_msmarco(
        col["collection"],
        col["queries"],
        {s: col[f"qrels_{s}"] for s in ("train", "dev", "test") if col.get(f"qrels_{s}")},
    )


def _training_pairs(study: StudyConfig, collection, source: str):
    from densescale import data

    return data.annotation_pairs(
        collection,
        source=source,
        split="train",
        seed=0,
        model_path=study.collection.get("doc2query_model"),
    )


def prepare(study: StudyConfig, *, progress: bool = True) -> dict:
    """Materialise the collection and tokenizer and check the grid fits the data, before any cell."""
    from densescale.models import load_tokenizer, train_tokenizer

    paths = study_paths(study)
    paths["out"].mkdir(parents=True, exist_ok=True)
    collection = load_collection(study)
    if "dev" not in collection.splits:
        raise ValueError(
            f"collection at {paths['collection']} has no dev split (needed to pick the best checkpoint)"
        )
    split = study.eval.get("split", "test")
    if split not in collection.splits:
        raise ValueError(
            f"eval.split={split!r} is not among the collection's splits {collection.splits}"
        )
    for source in study.sources:
        n = len(_training_pairs(study, collection, source))
        too_big = [d for d in study.data_sizes if d > n]
        if too_big:
            raise ValueError(
                f"grid.data_sizes {too_big} exceed the {n} training pairs of source {source!r}"
            )
    tok_path = paths["tokenizer"]
    if study.tokenizer.get("path"):
        load_tokenizer(tok_path)
    else:
        corpus = collection.corpus
        limit = min(len(corpus), int(study.tokenizer.get("train_texts", 200_000)))
        texts = (corpus[i] for i in range(limit))
        train_tokenizer(
            texts,
            int(study.tokenizer.get("vocab_size", 8000)),
            tok_path,
            cache_key=f"{paths['collection'].resolve()}:{len(corpus)}:{limit}",
        )
    oracle = None
    oracle_file = paths["collection"] / "oracle.json"
    if oracle_file.exists():
        oracle = json.loads(oracle_file.read_text())
    return {"oracle": oracle}


def run_cell(
    study: StudyConfig, cell: Cell, *, threads: int | None = None, progress: bool = False
) -> dict:
    """Train and evaluate one grid cell; append its record to the store and return it."""
    import dataclasses

    import torch

    from densescale import data
    from densescale.eval import evaluate
    from densescale.models import build_encoder, load_tokenizer, num_non_embedding_params
    from densescale.train import train

    store = ResultsStore(study_paths(study)["results"])
    for r in store.records():
        if r.get("key") == cell.key:
            return r
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    paths = study_paths(study)
    collection = load_collection(study)
    tokenizer = load_tokenizer(paths["tokenizer"])
    pairs = _training_pairs(study, collection, cell.source)
    sizes = sorted(study.data_sizes)
    subset = data.nested_subsets(len(pairs), sizes, seed=cell.seed)[sizes.index(cell.data_size)]
    train_pairs = [pairs[int(i)] for i in subset]
    dev_pairs = data.annotation_pairs(collection, source="human", split="dev", seed=0)

    cfg = dataclasses.replace(
        study.train,
        max_steps=study.steps_for(cell.data_size),
        lr=study.lr_for(cell.model),
        seed=cell.seed,
        batch_size=min(study.train.batch_size, cell.data_size),
    )
    torch.manual_seed(cell.seed)
    model = build_encoder(cell.model, vocab_size=tokenizer.vocab_size)
    cell_dir = paths["cells"] / cell.dirname
    result = train(
        model,
        tokenizer,
        train_pairs,
        collection.corpus,
        cell_dir,
        cfg,
        dev_pairs=dev_pairs,
        progress=progress,
    )
    model.load_state_dict(
        torch.load(cell_dir / "best_model.pt", map_location="cpu", weights_only=True)
    )

    ev = dict(study.eval)
    split = ev.pop("split", "test")
    qrels = collection.qrels(split)
    max_q = ev.pop("max_queries", None)
    qids = sorted(qrels)
    if max_q and len(qids) > max_q:
        import numpy as np

        keep = np.random.default_rng(0).choice(len(qids), max_q, replace=False)
        qids = [qids[i] for i in sorted(keep)]
        qrels = {q: qrels[q] for q in qids}
    queries = collection.queries
    corpus_ids, corpus_texts = _eval_corpus(collection.corpus, qrels, ev.pop("corpus_limit", None))
    record = evaluate(
        model,
        tokenizer,
        corpus_ids=corpus_ids,
        corpus_texts=corpus_texts,
        query_ids=qids,
        query_texts=[queries[queries.index(q)] for q in qids],
        qrels=qrels,
        k=ev.get("k", 100),
        num_negatives=ev.get("num_negatives", 256),
        repeats=ev.get("repeats", 10),
        seed=0,
        pool_size=ev.get("pool_size") or None,
        query_max_length=32,
        passage_max_length=cfg.passage_max_length,
        batch_size=ev.get("batch_size", 256),
        device=cfg.device
        if cfg.device != "auto"
        else ("cuda" if torch.cuda.is_available() else "cpu"),
        run_path=cell_dir / f"run.{split}.trec",
    )
    record.update(
        {
            "key": cell.key,
            "study": study.name,
            "model": cell.model,
            "N": num_non_embedding_params(model),
            "D": cell.data_size,
            "source": cell.source,
            "seed": cell.seed,
            "split": split,
            "train": {
                "steps": result.steps,
                "best_step": result.best_step,
                "best_dev_ce": result.best_dev_ce,
                "seconds": result.seconds,
            },
            "seconds": time.perf_counter() - t0,
        }
    )
    store.append(record)
    return record


def _eval_corpus(corpus, qrels: dict, limit: int | None):
    """The corpus a cell is evaluated on: all of it, or (``eval.corpus_limit``, for CPU-sized
    studies) every judged passage of the split plus a seeded uniform sample of the rest up to
    ``limit`` passages. Ranking metrics are then over that sub-corpus; the contrastive entropy is
    unaffected by the cap as long as the pool stays much larger than K."""
    import numpy as np

    if not limit or limit >= len(corpus):
        return corpus.ids, corpus
    judged = {r for rel in qrels.values() for d in rel if (r := corpus.find(d)) >= 0}
    if len(judged) > limit:
        raise ValueError(
            f"eval.corpus_limit={limit} is smaller than the {len(judged)} judged passages"
        )
    rng = np.random.default_rng(0)
    others = rng.choice(len(corpus), min(len(corpus), limit + len(judged)), replace=False)
    rows = sorted(judged) + [int(i) for i in others if int(i) not in judged][: limit - len(judged)]
    sub = corpus.select(sorted(rows))
    return sub.ids, sub


def _exit_with_parent() -> None:
    """Pool workers stop when the study process dies (killed, Ctrl-C), instead of training on as
    orphans beside the rerun that resumes their cells."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="densescale-parent-watch").start()


def _run_cell_job(study: StudyConfig, cell: Cell, threads: int | None) -> dict:
    """Entry point of a worker process or SLURM task (sets up torch.distributed under submitit
    when a cell spans several GPUs)."""
    if (
        os.environ.get("SUBMITIT_EXECUTOR") == "slurm"
        and int(os.environ.get("SLURM_NTASKS", "1")) > 1
    ):
        import submitit
        import torch

        env = submitit.helpers.TorchDistributedEnvironment().export()
        torch.distributed.init_process_group(
            "nccl" if torch.cuda.is_available() else "gloo",
            rank=env.rank,
            world_size=env.world_size,
        )
        torch.cuda.set_device(env.local_rank)
    return run_cell(study, cell, threads=threads)


def pending_cells(study: StudyConfig) -> list[Cell]:
    done = ResultsStore(study_paths(study)["results"]).keys()
    return [c for c in study.cells() if c.key not in done]


def run_study(study: StudyConfig, *, progress: bool = True, report: bool = True) -> dict:
    """Run every unfinished cell, then write the report; returns {"records", "report"}."""
    info = prepare(study, progress=progress)
    todo = pending_cells(study)
    ex = study.executor
    kind = ex.get("kind", "local")
    workers = int(ex.get("workers", 1))
    threads = ex.get("threads_per_worker")
    if progress:
        total = len(study.cells())
        print(
            f"study {study.name}: {total - len(todo)}/{total} cells done, running {len(todo)} "
            f"({kind}, {workers} worker(s)) -> {study.output}",
            flush=True,
        )
    if todo and kind == "submitit":
        _run_submitit(study, todo, threads)
    elif todo:
        _run_local(study, todo, workers, threads, progress)
    records = ResultsStore(study_paths(study)["results"]).records()
    out = {"records": records, "report": None}
    if report:
        out["report"] = write_study_report(study, records, info.get("oracle"))
    return out


def _run_local(study: StudyConfig, todo: list[Cell], workers: int, threads, progress: bool) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="cells", unit="cell", disable=not progress, dynamic_ncols=True)
    if workers == 1:
        for cell in todo:
            rec = run_cell(study, cell, threads=threads, progress=progress)
            bar.update(1)
            bar.write(_describe(rec))
        bar.close()
        return
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_exit_with_parent
    ) as pool:
        futures = {pool.submit(_run_cell_job, study, cell, threads): cell for cell in todo}
        for fut in as_completed(futures):
            rec = fut.result()
            bar.update(1)
            bar.write(_describe(rec))
    bar.close()


def _run_submitit(study: StudyConfig, todo: list[Cell], threads) -> None:
    import submitit

    opts = dict(study.executor.get("submitit", {}))
    cluster = opts.pop("cluster", None)
    executor = submitit.AutoExecutor(folder=study.output / "submitit", cluster=cluster)
    if opts:
        executor.update_parameters(**opts)
    jobs = executor.map_array(_run_cell_job, [study] * len(todo), todo, [threads] * len(todo))
    for job in jobs:
        job.result()


def _describe(rec: dict) -> str:
    return (
        f"  {rec['model']:>8s} D={rec['D']:<7d} {rec['source']:<6s} CE={rec['ce']:.4f} "
        f"N={rec['N']:,} ({rec['seconds']:.0f}s)"
    )


def write_study_report(study: StudyConfig, records: list[dict], oracle: dict | None) -> Path:
    """Fit every law per annotation source, print them, and write the report folder."""
    from densescale.scaling import fit_study, write_report

    split = study.eval.get("split", "test")
    oracle_ce = None
    if oracle:
        oracle_ce = oracle.get("splits", {}).get(split, {}).get("oracle_ce")
    fits = fit_study(records, n_boot=100, seed=0)
    print("\nfitted laws (contrastive entropy on the " + split + " split):")
    for f in fits.values():
        print(f.describe())
    if oracle_ce is not None:
        print(f"  oracle contrastive entropy of the collection: {oracle_ce:.4f}")
    return write_report(
        records, study_paths(study)["report"], oracle_ce=oracle_ce, n_boot=100, seed=0, fits=fits
    )


def estimate_gpu_hours(
    study: StudyConfig, *, corpus_size: int | None = None, flops_per_second: float = 0.4 * 989e12
) -> float:
    """Rough compute of a study in H100-hours: training ~ 6 * N * tokens seen (queries, positives
    and the shared negatives of every step), evaluation ~ 2 * N * corpus tokens per cell, at 40% of
    the bf16 datasheet peak. Used to warn before a study that needs a cluster."""
    from densescale.models import resolve_size

    cfg = study.train
    if corpus_size is None:
        corpus_size = 8_841_823 if study.collection["kind"] == "msmarco" else 100_000
    total = 0.0
    for cell in study.cells():
        n = resolve_size(cell.model).non_embedding_params()
        steps = study.steps_for(cell.data_size)
        tokens = steps * (
            cfg.batch_size
            * (cfg.query_max_length + cfg.passage_max_length * (1 + cfg.group_negatives))
            + cfg.num_negatives * cfg.passage_max_length
        )
        total += 6 * n * tokens + 2 * n * corpus_size * cfg.passage_max_length
    return total / flops_per_second / 3600
