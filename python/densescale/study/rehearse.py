"""Rehearse a study at its collection's real size: every step a cell and its preparation run,
except the optimiser steps, each measured (``densescale study ... --rehearse``).

The steps, in the order a real run meets them (:data:`STEPS`):

1. load the collection (parse, or memory-map the parsed cache) and fingerprint it;
2. carve / read the dev split and build every source's training pairs and the dev pairs;
3. the training negative pool (``train.negatives_from``);
4. the evaluation split (qrels sample, sub-corpus, train-positive overlap) and its CE pool check;
5. the tokenizer: the smallest model's own, or for a stand-in a WordPiece trained on the corpus;
6. the token caches training fills: the largest cell's queries and positives and every corpus
   passage (the shared negatives reach all of them over the epochs);
7. the BM25 reference row;
8-11. :func:`densescale.eval.evaluate` of the smallest model in the grid (or a random-init stand-in
   of its shape when its checkpoint cannot be loaded offline) on the evaluation split, exactly as a
   cell calls it: encode, exact top-k search and run file, ranking metrics, contrastive entropy
   with the real pool and repeats. Their times are evaluate's own; each one's peak memory is the
   largest RSS sampled inside its time span;
12. training's dev check (:func:`densescale.train.dev.dev_contrastive_entropy`) with the real
    ``train.dev_pairs`` / ``train.dev_pool`` / ``train.dev_repeats``, once;
13. the record and the rehearsal report (``<output>/rehearsal/``).

The projected GPU hours (:mod:`densescale.study.rehearse_cost`) come from these measurements and
the study's throughput assumptions; the report says which is which.
"""

from __future__ import annotations

import json
import math
import os
import time

from densescale.data.trec import atomic_write_text
from densescale.study.config import StudyConfig
from densescale.study.meter import StepMeter, folder_bytes
from densescale.study.prepare import (
    bm25_reference,
    check_eval_pool,
    collection_fingerprint,
    eval_split,
    evaluation_args,
    fit_grid_to_data,
    negative_pool,
    open_collection,
    relevance_level,
    training_pairs,
    with_dev_split,
)

STEPS = (
    "load collection",
    "dev split + training pairs",
    "negative pool",
    "evaluation split",
    "tokenizer",
    "token caches",
    "BM25 reference",
    "encode eval corpus",
    "exact top-k search",
    "ranking metrics",
    "contrastive entropy",
    "dev CE (training check)",
    "records + report",
)
_EVAL_PARTS = dict(zip(("encode", "search", "metrics", "ce"), STEPS[7:11]))
_TOKENIZE_BATCH = 8192
# random-init stand-in for a grid model whose checkpoint cannot be loaded (offline)
STAND_IN = "L1-H32"


def smallest_model(study: StudyConfig) -> str:
    """The grid's model with the fewest non-embedding parameters (shapes known without loading)."""
    from densescale.models import resolve_model

    known = [(resolve_model(m).shape(), m) for m in study.models]
    known = [(s.non_embedding_params(), m) for s, m in known if s is not None]
    if not known:
        return study.models[0]
    return min(known)[1]


def _encoder(study: StudyConfig, collection, folder, progress: bool):
    """(model, tokenizer, note): the smallest grid model, or the random-init :data:`STAND_IN` with
    a WordPiece tokenizer trained on the corpus when its checkpoint is not reachable."""
    import torch

    from densescale.models import build_encoder, resolve_model, train_tokenizer
    from densescale.models.checkpoints import load_checkpoint_tokenizer
    from densescale.models.sizes import resolve_size

    name = smallest_model(study)
    spec = resolve_model(name)
    if spec.pretrained:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # fail fast instead of retrying a hub
        try:
            tok = load_checkpoint_tokenizer(spec.checkpoint)
            model = build_encoder(None, None, pretrained=spec.checkpoint)
            return model, tok, f"{name} (its checkpoint)"
        except Exception as e:  # noqa: BLE001 - any load failure means: use the stand-in
            why = str(e).splitlines()[0][:120]
        # a tiny stand-in: the same tokenisation, batching, embedding width and search as the
        # real model, at a CPU cost that lets the rehearsal reach millions of passages; the
        # real model's GPU cost is projected from its FLOPs
        shape = resolve_size(STAND_IN)
    else:
        shape, why = spec.size, None
    corpus = collection.corpus
    limit = min(len(corpus), int(study.tokenizer_settings["train_texts"]))
    tok = train_tokenizer(
        (corpus[i] for i in range(limit)),
        int(study.tokenizer_settings["vocab_size"]),
        folder / "tokenizer",
        cache_key=f"rehearsal:{len(corpus)}:{limit}",
    )
    torch.manual_seed(0)  # the same stand-in at every corpus size
    model = build_encoder(shape, vocab_size=tok.vocab_size, norm_scale=study.norm_scale)
    note = f"{name}, random init"
    if why:
        note = f"tiny stand-in {shape.name} for {name} (its checkpoint is not loadable)"
        if progress:
            print(f"rehearsal encoder: {note}: {why}", flush=True)
    return model, tok, note


def _fill_token_caches(tokenizer, pairs, corpus, cfg, progress: bool) -> dict:
    """Tokenise what training tokenises (each text once, kept in numpy caches); returns counts
    and mean token lengths (measured, for the cost projection)."""
    import numpy as np
    from tqdm.auto import tqdm

    from densescale.train.batching import shared_token_cache

    plan = [
        ("training queries", pairs.queries, pairs.query_rows, cfg.query_max_length),
        ("corpus passages", corpus, np.arange(len(corpus)), cfg.passage_max_length),
    ]
    out = {}
    for what, texts, rows, length in plan:
        cache = shared_token_cache(tokenizer, texts, length)
        rows = np.unique(rows)
        bar = tqdm(total=len(rows), desc=f"tokenize {what}", unit="text", disable=not progress)
        tokens = 0
        for a in range(0, len(rows), _TOKENIZE_BATCH):
            batch = cache.batch(rows[a : a + _TOKENIZE_BATCH])
            tokens += int(batch["attention_mask"].sum())
            bar.update(len(batch["attention_mask"]))
        bar.close()
        out[what] = {"texts": len(rows), "mean_tokens": tokens / max(1, len(rows))}
    return out


def rehearse(study: StudyConfig, *, progress: bool = True, force: bool = False) -> dict:
    """Run every step of ``study`` but the optimiser steps at the collection's real size and
    measure each (wall seconds, peak RSS bytes, bytes written under the study folder).

    Writes ``<output>/rehearsal/rehearsal.json`` (rows, projection, sizes) and
    ``rehearsal.md`` (the table) atomically and returns the same dict with ``"table"``.
    Raises what the steps raise (e.g. ValueError for a grid the collection cannot feed)."""
    import torch

    from densescale import data
    from densescale.study import folder as study_folder
    from densescale.study import rehearse_cost
    from densescale.train.dev import dev_contrastive_entropy

    out = study.output / "rehearsal"
    out.mkdir(parents=True, exist_ok=True)
    sizes: dict = {"threads": torch.get_num_threads(), "cpus": os.cpu_count()}

    def save_partial(_row) -> None:  # an interrupted rehearsal keeps what it measured
        rows = [r.to_dict() for r in meter.rows]
        text = json.dumps({"study": study.name, "sizes": sizes, "rows": rows}, indent=2)
        atomic_write_text(out / "rehearsal.partial.json", text + "\n")

    meter = StepMeter([study.output], on_row=save_partial)
    level = relevance_level(study)
    try:
        with meter.step(STEPS[0]) as s:
            raw = open_collection(study)
            fingerprint = collection_fingerprint(raw)
            study_folder.check_folder(study, fingerprint, force=force, progress=progress)
            sizes.update(passages=len(raw.corpus), queries=len(raw.queries))
            s["note"] = f"{len(raw.corpus):,} passages, {len(raw.queries):,} queries"
        with meter.step(STEPS[1]) as s:
            collection = with_dev_split(study, raw, announce=progress)
            study = fit_grid_to_data(study, progress=progress, collection=collection)
            pairs = {src: training_pairs(study, collection, src) for src in study.sources}
            dev_pairs = data.annotation_pairs(
                collection, source="human", split="dev", seed=0, relevance_level=level
            )
            sizes.update(train_pairs=len(pairs[study.sources[0]]), dev_pairs=len(dev_pairs))
            s["note"] = f"{sizes['train_pairs']:,} training, {len(dev_pairs):,} dev pairs"
        with meter.step(STEPS[2]) as s:
            pool = negative_pool(study, collection)
            s["note"] = "whole corpus" if pool is None else f"{len(pool):,} passages"
        with meter.step(STEPS[3]) as s:
            ev = eval_split(study, collection)
            ce_pool = check_eval_pool(study, ev)
            sizes.update(eval_queries=len(ev["qids"]), eval_passages=len(ev["corpus_ids"]))
            s["note"] = f"{len(ev['qids']):,} queries, CE pool {ce_pool:,}"
        with meter.step(STEPS[4]) as s:
            model, tokenizer, s["note"] = _encoder(study, collection, out, progress)
        largest = max(study.data_sizes)
        source = study.sources[0]
        subset = data.nested_subsets(len(pairs[source]), sorted(study.data_sizes), seed=0)[-1]
        train_pairs = pairs[source].subset(subset)
        with meter.step(STEPS[5]) as s:
            lengths = _fill_token_caches(
                tokenizer, train_pairs, collection.corpus, study.train, progress
            )
            sizes["mean_tokens"] = {k: v["mean_tokens"] for k, v in lengths.items()}
            s["note"] = ", ".join(f"{v['texts']:,} {k}" for k, v in lengths.items())
        with meter.step(STEPS[6]) as s:
            bm25 = bm25_reference(study, collection, ev, fingerprint)
            s["note"] = ", ".join(f"{k} {v:.3f}" for k, v in bm25["metrics"].items())
        written = folder_bytes(meter.watch)
        record, t0, t1 = _evaluate(study, model, tokenizer, ev, train_pairs, out, progress)
        written = folder_bytes(meter.watch) - written  # the run file, written by the search part
        _split_evaluate(meter, record, t0, t1, len(ev["corpus_ids"]), written)
        with meter.step(STEPS[11]) as s:
            dev_ce = dev_contrastive_entropy(
                model, tokenizer, dev_pairs, collection.corpus, study.train, "cpu"
            )
            n_pool = min(study.train.dev_pool or len(collection.corpus), len(collection.corpus))
            sizes["dev_check_passages"] = n_pool + 2 * min(len(dev_pairs), study.train.dev_pairs)
            s["note"] = f"dev CE {dev_ce:.3f} over a {n_pool:,}-passage pool (untrained model)"
        with meter.step(STEPS[12]) as s:
            record.update(rehearsal=True, model=smallest_model(study), D=largest, source=source)
            atomic_write_text(out / "record.json", json.dumps(record, indent=2, default=str))
            result = _report(study, meter, sizes, record, out, rehearse_cost)
            s["note"] = str(out)
    finally:
        meter.close()
    # the report step is measured after its own file was written: rewrite it with that row
    result = _report(study, meter, sizes, record, out, rehearse_cost)
    missing = [name for name in STEPS if name not in {r.name for r in meter.rows}]
    if missing:  # every step must have run; a rehearsal that skipped one proves nothing
        raise RuntimeError(f"rehearsal steps did not run: {missing}")
    return result


def _evaluate(study, model, tokenizer, ev, train_pairs, out, progress):
    """evaluate() as run_cell calls it, with the cell's seen rows and clean subset."""
    from densescale.eval import evaluate
    from densescale.study.cell import EVAL_DEFAULTS

    cfg = {**EVAL_DEFAULTS, **study.eval}
    t0 = time.perf_counter()
    record = evaluate(
        model,
        tokenizer,
        **evaluation_args(ev, train_pairs),
        k=int(cfg["k"]),
        num_negatives=int(cfg["num_negatives"]),
        repeats=int(cfg["repeats"]),
        seed=0,
        pool_size=cfg["pool_size"] or None,
        query_max_length=min(32, model.config.max_position),
        passage_max_length=min(study.train.passage_max_length, model.config.max_position),
        batch_size=int(cfg["batch_size"]),
        device="cpu",
        run_path=out / f"run.{ev['split']}.trec",
        relevance_level=int(cfg["relevance_level"]),
        progress=progress,
    )
    return record, t0, time.perf_counter()


def _split_evaluate(
    meter: StepMeter, record: dict, t0: float, t1: float, n: int, written: int
) -> None:
    """One row per part of evaluate(), laid end to end from its own timings; the last part also
    takes what evaluate did outside them (checks, seen-passage bias, clean subset). ``written``
    bytes (the TREC run file) go to the search row, which writes it."""
    spans = record["time"]
    at = t0
    parts = list(_EVAL_PARTS.items())
    for i, (key, name) in enumerate(parts):
        end = t1 if i == len(parts) - 1 else at + spans[key]
        note = f"{n / spans['encode']:,.0f} passages/s" if key == "encode" else ""
        if key == "ce":
            note = f"CE {record['ce']:.3f} (chance {math.log(record['num_negatives'] + 1):.3f})"
        meter.add(name, at, end, disk=written if key == "search" else 0, note=note)
        at = end


def _report(study, meter, sizes, record, out, rehearse_cost) -> dict:
    projection = rehearse_cost.project(study, sizes, meter.rows)
    rows = [r.to_dict() for r in meter.rows]
    table = rehearse_cost.format_table(meter.rows, sizes, projection)
    result = {
        "study": study.name,
        "sizes": sizes,
        "rows": rows,
        "projection": projection,
        "table": table,
        "eval": {k: record.get(k) for k in ("ce", "metrics", "metrics_chance", "num_pairs")},
    }
    atomic_write_text(out / "rehearsal.json", json.dumps(result, indent=2, default=str) + "\n")
    atomic_write_text(out / "rehearsal.md", table + "\n")
    (out / "rehearsal.partial.json").unlink(missing_ok=True)  # rehearsal.json has it all now
    return result
