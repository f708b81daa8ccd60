"""The study runner: prepare the collection and tokenizer once, run every grid cell (train + eval)
as an independent job, keep results in an append-only store, and write the scaling report.

Cells run in a local process pool by default, or as a SLURM job array through submitit. A rerun
skips finished cells; an interrupted cell resumes from its training checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from densescale.data.trec import atomic_write_text
from densescale.study.config import Cell, StudyConfig
from densescale.study.store import ResultsStore

RESULTS = "results.jsonl"
# a cell whose test CE is at least this fraction of chance has not learned to rank (SPEC 6)
NEAR_CHANCE = 0.9


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
        "splits": out / "splits",
        "cache": out / "cache",
    }


def load_collection(study: StudyConfig, *, announce: bool = False):
    """The study's collection, with a dev split carved from train (recorded in the study folder,
    so reruns see the same one) when the collection ships none; ``announce`` prints that."""
    from densescale import data
    from densescale.data.splits import SPLIT_RECORD

    paths = study_paths(study)
    col = data.open_collection(
        study.collection, synthetic_dir=paths["collection"], cache_dir=paths["cache"]
    )
    if "train" not in col.splits:
        raise ValueError(
            f"collection {col.name!r} has no training pairs (no train qrels; splits "
            f"{list(col.splits)}): a study trains on annotated (query, passage) pairs"
        )
    if "dev" not in col.splits:
        col = data.carve_dev_split(col, paths["splits"], seed=0)
        if announce:
            rec = json.loads((paths["splits"] / SPLIT_RECORD).read_text())
            print(
                f"collection {col.name!r} ships no dev split: {rec['dev_queries']} of its training "
                f"queries are the dev split (whole groups sharing a positive; "
                f"{paths['splits'] / SPLIT_RECORD})",
                flush=True,
            )
    return col


def _training_pairs(study: StudyConfig, collection, source: str):
    from densescale import data

    return data.annotation_pairs(
        collection,
        source=source,
        split="train",
        seed=0,
        model_path=study.collection.get("doc2query_model"),
    )


def _negative_pool(study: StudyConfig, collection):
    return _negative_pool_of(collection, study.train.negatives_from)


def _negative_pool_of(collection, negatives_from: str):
    """Corpus rows random training negatives come from: the corpus minus every dev and test
    positive (``negatives_from = "non-eval"``, the metric's own exclusion), or None for the
    whole corpus (``"corpus"``, the authors' sampling)."""
    import numpy as np

    if negatives_from == "corpus":
        return None
    held = [collection.positive_rows(s) for s in collection.splits if s != "train"]
    excluded = np.unique(np.concatenate(held)) if held else np.zeros(0, np.int64)
    pool = np.setdiff1d(np.arange(len(collection.corpus), dtype=np.int64), excluded)
    if len(pool) == 0:
        raise ValueError("every corpus passage is a dev or test positive: no negatives to train on")
    return pool


def fit_lengths(cfg, model):
    """``cfg`` with its query / passage lengths cut to what the model can embed (a checkpoint
    may have fewer positions than the study's passage length)."""
    import dataclasses

    cap = model.config.max_position
    if cfg.query_max_length <= cap and cfg.passage_max_length <= cap:
        return cfg
    print(f"  lengths cut to the model's {cap} positions", flush=True)
    return dataclasses.replace(
        cfg,
        query_max_length=min(cfg.query_max_length, cap),
        passage_max_length=min(cfg.passage_max_length, cap),
    )


def _chance(k: int) -> float:
    """Contrastive entropy of a scorer that knows nothing: ln(K + 1) (SPEC 1.1)."""
    return math.log(k + 1)


def prepare(study: StudyConfig, *, progress: bool = True) -> dict:
    """Materialise the collection, the dev split and the tokenizer, check the grid fits the data,
    and compute the BM25 reference row, before any cell."""
    from densescale.models import load_tokenizer, resolve_model, train_tokenizer

    paths = study_paths(study)
    paths["out"].mkdir(parents=True, exist_ok=True)
    collection = load_collection(study, announce=progress)
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
    if all(resolve_model(m).pretrained for m in study.models):
        pass  # every model brings its tokenizer
    elif study.tokenizer.get("path"):
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
    if study.collection["kind"] == "synthetic" and oracle_file.exists():
        oracle = json.loads(oracle_file.read_text())
    return {"oracle": oracle, "baselines": {"BM25": bm25_reference(study, collection)}}


def _eval_split(study: StudyConfig, collection) -> dict:
    """What every cell (and the BM25 row) is evaluated on: the split's qrels (a seeded sample of
    ``eval.max_queries`` queries) over the corpus (or the ``eval.corpus_limit`` sub-corpus)."""
    import numpy as np

    ev = study.eval
    split = ev.get("split", "test")
    qrels = collection.qrels(split)
    qids = sorted(qrels)
    max_q = ev.get("max_queries")
    if max_q and len(qids) > max_q:
        keep = np.random.default_rng(0).choice(len(qids), max_q, replace=False)
        qids = [qids[i] for i in sorted(keep)]
        qrels = {q: qrels[q] for q in qids}
    queries = collection.queries
    rows = _eval_corpus_rows(collection.corpus, qrels, ev.get("corpus_limit"))
    sub = collection.corpus if rows is None else collection.corpus.select(rows)
    return {
        "split": split,
        "qrels": qrels,
        "qids": qids,
        "query_texts": [queries[queries.index(q)] for q in qids],
        "corpus_ids": sub.ids,
        "corpus_texts": sub,
        "rows": rows,
    }


def bm25_reference(study: StudyConfig, collection) -> dict:
    """BM25 ranking metrics on exactly what the cells are evaluated on, computed once per study
    and kept in ``bm25.<split>.json`` (a lexical reference row for every report)."""
    from densescale.eval import DEFAULT_METRICS, ranking_metrics
    from densescale.eval.bm25 import bm25_run

    ev = _eval_split(study, collection)
    k = int(study.eval.get("k", 100))
    path = study.output / f"bm25.{ev['split']}.json"
    settings = {
        "split": ev["split"],
        "k": k,
        "queries": len(ev["qids"]),
        "passages": len(ev["corpus_ids"]),
    }
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("settings") == settings:
            return cached
    t0 = time.perf_counter()
    run = bm25_run(ev["corpus_ids"], ev["corpus_texts"], ev["qids"], ev["query_texts"], k=k)
    row = {
        "name": "BM25",
        "settings": settings,
        "split": ev["split"],
        "metrics": ranking_metrics(ev["qrels"], run, DEFAULT_METRICS),
        "seconds": time.perf_counter() - t0,
    }
    atomic_write_text(path, json.dumps(row, indent=2) + "\n")
    return row


def run_cell(
    study: StudyConfig, cell: Cell, *, threads: int | None = None, progress: bool = False
) -> dict:
    """Train and evaluate one grid cell; append its record to the store and return it.

    The record carries its yardsticks: ``chance_ce`` (ln(K+1)), ``oracle_ce`` where the collection
    knows it, ``converged`` (dev CE stopped improving before the step cap), ``near_chance``
    (CE >= 0.9 x chance: the model has not learned to rank), the seen-passage bias, and
    ``flags`` naming what is wrong."""
    import dataclasses

    import numpy as np
    import torch

    from densescale import data
    from densescale.eval import evaluate
    from densescale.models import (
        build_encoder,
        load_checkpoint_tokenizer,
        load_tokenizer,
        num_non_embedding_params,
        resolve_model,
    )
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
    spec = resolve_model(cell.model)
    if spec.pretrained:
        tokenizer = load_checkpoint_tokenizer(spec.checkpoint)
    else:
        tokenizer = load_tokenizer(paths["tokenizer"])
    pairs = _training_pairs(study, collection, cell.source)
    sizes = sorted(study.data_sizes)
    subset = data.nested_subsets(len(pairs), sizes, seed=cell.seed)[sizes.index(cell.data_size)]
    train_pairs = pairs.subset(subset)
    dev_pairs = data.annotation_pairs(collection, source="human", split="dev", seed=0)

    cfg = dataclasses.replace(
        study.train,
        max_steps=study.steps_for(cell.data_size),
        lr=study.lr_for(cell.model),
        seed=cell.seed,
        batch_size=min(study.train.batch_size, cell.data_size),
    )
    torch.manual_seed(cell.seed)
    model = build_encoder(
        spec.size,
        vocab_size=None if spec.pretrained else tokenizer.vocab_size,
        out_dim=cell.out_dim,
        pretrained=spec.checkpoint,
        norm_scale=study.norm_scale,
    )
    cfg = fit_lengths(cfg, model)
    cell_dir = paths["cells"] / cell.dirname
    result = train(
        model,
        tokenizer,
        train_pairs,
        collection.corpus,
        cell_dir,
        cfg,
        dev_pairs=dev_pairs,
        negative_pool=_negative_pool(study, collection),
        progress=progress,
    )
    model.load_state_dict(
        torch.load(cell_dir / "best_model.pt", map_location="cpu", weights_only=True)
    )

    ev = _eval_split(study, collection)
    k_neg = int(study.eval.get("num_negatives", 256))
    seen = np.unique(train_pairs.positive_indices[train_pairs.positive_indices >= 0])
    if ev["rows"] is not None:  # corpus rows -> rows of the evaluated sub-corpus
        at = np.searchsorted(ev["rows"], seen).clip(0, len(ev["rows"]) - 1)
        seen = at[ev["rows"][at] == seen]
    record = evaluate(
        model,
        tokenizer,
        corpus_ids=ev["corpus_ids"],
        corpus_texts=ev["corpus_texts"],
        query_ids=ev["qids"],
        query_texts=ev["query_texts"],
        qrels=ev["qrels"],
        k=study.eval.get("k", 100),
        num_negatives=k_neg,
        repeats=study.eval.get("repeats", 10),
        seed=0,
        pool_size=study.eval.get("pool_size") or None,
        query_max_length=min(32, model.config.max_position),
        passage_max_length=cfg.passage_max_length,
        batch_size=study.eval.get("batch_size", 256),
        device=cfg.device
        if cfg.device != "auto"
        else ("cuda" if torch.cuda.is_available() else "cpu"),
        run_path=cell_dir / f"run.{ev['split']}.trec",
        seen_rows=seen,
    )
    chance = _chance(k_neg)
    oracle = _oracle_ce(study, ev["split"])
    near_chance = record["ce"] >= NEAR_CHANCE * chance
    flags = []
    if near_chance:
        flags.append("near_chance")
    if not result.converged:
        flags.append("not_converged")
    if record.get("seen_bias", {}).get("decides_ranking"):
        flags.append("seen_passage_bias")
    record.update(
        {
            "key": cell.key,
            "study": study.name,
            "model": cell.model,
            "checkpoint": cell.model if spec.pretrained else None,
            "N": num_non_embedding_params(model),
            "d": cell.out_dim,
            "D": cell.data_size,
            "source": cell.source,
            "seed": cell.seed,
            "split": ev["split"],
            "chance_ce": chance,
            "oracle_ce": oracle,
            "near_chance": near_chance,
            "converged": result.converged,
            "flags": flags,
            "train": {
                "steps": result.steps,
                "best_step": result.best_step,
                "best_dev_ce": result.best_dev_ce,
                "stop_reason": result.stop_reason,
                "max_steps": cfg.max_steps,
                "lr": cfg.lr,
                "tokens_per_second": result.tokens_per_second,
                "seconds": result.seconds,
            },
            "seconds": time.perf_counter() - t0,
        }
    )
    store.append(record)
    return record


def _oracle_ce(study: StudyConfig, split: str) -> float | None:
    if study.collection["kind"] != "synthetic":
        return None
    f = study_paths(study)["collection"] / "oracle.json"
    if not f.exists():
        return None
    return json.loads(f.read_text()).get("splits", {}).get(split, {}).get("oracle_ce")


def _eval_corpus_rows(corpus, qrels: dict, limit: int | None):
    """Rows of the corpus a cell is evaluated on: None for all of it, or (``eval.corpus_limit``,
    for CPU-sized studies) every judged passage of the split plus a seeded uniform sample of the
    rest, ``limit`` passages in all, sorted. Ranking metrics are then over that sub-corpus; the
    contrastive entropy is unaffected by the cap as long as the pool stays much larger than K."""
    import numpy as np

    if not limit or limit >= len(corpus):
        return None
    judged = {r for rel in qrels.values() for d in rel if (r := corpus.find(d)) >= 0}
    if len(judged) > limit:
        raise ValueError(
            f"eval.corpus_limit={limit} is smaller than the {len(judged)} judged passages"
        )
    rng = np.random.default_rng(0)
    others = rng.choice(len(corpus), min(len(corpus), limit + len(judged)), replace=False)
    rows = sorted(judged) + [int(i) for i in others if int(i) not in judged][: limit - len(judged)]
    return np.array(sorted(rows), dtype=np.int64)


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


def fit_grid_to_data(study: StudyConfig, *, progress: bool = True) -> StudyConfig:
    """The study with ``grid.data_sizes`` above the collection's training pairs replaced by that
    number (so a preset runs on a smaller collection: its largest cell then uses every pair), and
    a note printed saying so."""
    import dataclasses

    collection = load_collection(study)
    n = min(len(_training_pairs(study, collection, s)) for s in study.sources)
    if max(study.data_sizes) <= n:
        return study
    sizes = tuple(sorted({min(d, n) for d in study.data_sizes}))
    if progress:
        print(
            f"note: the collection has {n:,} training pairs; grid.data_sizes "
            f"{list(study.data_sizes)} become {list(sizes)}",
            flush=True,
        )
    return dataclasses.replace(study, data_sizes=sizes)


def run_study(study: StudyConfig, *, progress: bool = True, report: bool = True) -> dict:
    """Run every unfinished cell, then write the report; returns {"records", "report"}.

    Data sizes larger than the collection's training pairs are cut to them
    (:func:`fit_grid_to_data`)."""
    study = fit_grid_to_data(study, progress=progress)
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
        out["report"] = write_study_report(
            study, records, info.get("oracle"), info.get("baselines")
        )
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
    line += f" N={rec['N']:,}"
    if "converged" in rec:
        line += (
            f" converged@{tr.get('best_step')}"
            if rec["converged"]
            else f" NOT CONVERGED (stopped at the {tr.get('steps')}-step cap)"
        )
    line += f" ({rec['seconds']:.0f}s)"
    if rec.get("near_chance"):
        line += (
            "  !! AT OR ABOVE 0.9 x CHANCE: this model has not learned to rank; left out of fits"
        )
    if "seen_passage_bias" in rec.get("flags", ()):
        line += "  !! seen-passage bias decides the ranking"
    return line


def write_study_report(
    study: StudyConfig, records: list[dict], oracle: dict | None, baselines: dict | None = None
) -> Path:
    """Fit every law per annotation source, print them, and write the report folder."""
    from densescale.scaling import fit_study, write_report

    split = study.eval.get("split", "test")
    oracle_ce = None
    if oracle:
        oracle_ce = oracle.get("splits", {}).get(split, {}).get("oracle_ce")
    fits = fit_study(records, n_boot=100, seed=0)
    k = int(study.eval.get("num_negatives", 256))
    print(
        f"\nfitted laws (contrastive entropy on the {split} split; chance = ln({k}+1) = "
        f"{_chance(k):.3f}):"
    )
    for f in fits.values():
        print(f.describe())
    if oracle_ce is not None:
        print(f"  oracle contrastive entropy of the collection: {oracle_ce:.4f}")
    for name, row in (baselines or {}).items():
        m = row.get("metrics", {})
        print(f"  {name} reference: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items()))
    return write_report(
        records,
        study_paths(study)["report"],
        oracle_ce=oracle_ce,
        baselines=baselines,
        n_boot=100,
        seed=0,
        fits=fits,
        study_dir=study_paths(study)["cells"] if study_paths(study)["cells"].is_dir() else None,
    )


def estimate_gpu_hours(
    study: StudyConfig, *, corpus_size: int | None = None, flops_per_second: float = 0.4 * 989e12
) -> float:
    """Rough compute of a study in H100-hours: training ~ 6 * N * tokens seen (queries, positives
    and the shared negatives of every step), evaluation ~ 2 * N * corpus tokens per cell, at 40% of
    the bf16 datasheet peak. Used to warn before a study that needs a cluster."""
    from densescale.models import resolve_model

    cfg = study.train
    if corpus_size is None:
        corpus_size = 8_841_823 if study.collection["kind"] == "msmarco" else 100_000
    total = 0.0
    for cell in study.cells():
        shape = resolve_model(cell.model).shape()
        if shape is None:
            continue  # a hub checkpoint of unknown shape: not counted
        n = shape.non_embedding_params(cell.out_dim)
        steps = study.steps_for(cell.data_size)
        tokens = steps * (
            cfg.batch_size
            * (cfg.query_max_length + cfg.passage_max_length * (1 + cfg.group_negatives))
            + cfg.num_negatives * cfg.passage_max_length
        )
        total += 6 * n * tokens + 2 * n * corpus_size * cfg.passage_max_length
    return total / flops_per_second / 3600
