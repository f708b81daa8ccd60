"""Everything a study needs before its first cell, and what each cell reads back.

:func:`prepare` runs once, before any cell: it opens the collection, checks the results folder
was made from the same one (:mod:`densescale.study.folder`), carves and records a dev split when
the collection ships none, runs every data check (eval split, data sizes against the training
pairs, the evaluation negatives against the pool they are drawn from), builds the tokenizer and
computes the BM25 reference row. :func:`cell_inputs` is what one cell reads: the same collection,
its training pairs and negative pool, the evaluation split and the yardsticks (chance, oracle).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path

from densescale.data.trec import atomic_write_text
from densescale.study.config import Cell, StudyConfig

# a cell whose test CE is at least this fraction of chance has not learned to rank (SPEC 6)
NEAR_CHANCE = 0.9
# collections whose texts are larger than this are fingerprinted from a sample of their bytes
_FULL_HASH_BYTES = 256 << 20


def chance_ce(k: int) -> float:
    """Contrastive entropy of a scorer that knows nothing: ln(K + 1) (SPEC 1.1)."""
    return math.log(k + 1)


# ---------------------------------------------------------------- the collection
def open_collection(study: StudyConfig):
    """The study's collection as it is on disk (no dev split carved yet)."""
    from densescale import data

    paths = study.paths()
    col = data.open_collection(
        study.collection, synthetic_dir=paths["collection"], cache_dir=paths["cache"]
    )
    if "train" not in col.splits:
        raise ValueError(
            f"collection {col.name!r} has no training pairs (no train qrels; splits "
            f"{list(col.splits)}): a study trains on annotated (query, passage) pairs"
        )
    return col


def with_dev_split(study: StudyConfig, collection, *, announce: bool = False):
    """``collection`` with a dev split carved from train (recorded in the study folder, so reruns
    see the same one) when it ships none; ``announce`` prints that."""
    from densescale import data
    from densescale.data.splits import SPLIT_RECORD

    if "dev" in collection.splits:
        return collection
    paths = study.paths()
    col = data.carve_dev_split(collection, paths["splits"], seed=0)
    if announce:
        rec = json.loads((paths["splits"] / SPLIT_RECORD).read_text())
        print(
            f"collection {col.name!r} ships no dev split: {rec['dev_queries']} of its training "
            f"queries are the dev split (whole groups sharing a positive; "
            f"{paths['splits'] / SPLIT_RECORD})",
            flush=True,
        )
    return col


def load_collection(study: StudyConfig, *, announce: bool = False):
    """The study's collection with its dev split (see :func:`with_dev_split`)."""
    return with_dev_split(study, open_collection(study), announce=announce)


def _hash_texts(h, texts) -> None:
    h.update(str(len(texts)).encode())
    for buf in (texts.id_offsets, texts.id_buffer, texts.text_offsets):
        h.update(memoryview(buf).cast("B"))
    body = memoryview(texts.text_buffer).cast("B")
    if len(body) <= _FULL_HASH_BYTES:
        h.update(body)
        return
    step = len(body) // 256
    for i in range(256):  # 256 slices of 64 KiB spread over the texts, plus the last one
        h.update(body[i * step : i * step + (64 << 10)])
    h.update(body[-(64 << 10) :])


def collection_fingerprint(collection) -> str:
    """A content fingerprint of a collection as opened (before a dev split is carved, which is a
    seeded function of it): every passage and query id and text length, the texts themselves
    (a spread sample of 16 MiB when they exceed 256 MiB) and every qrels file. It does not depend
    on paths or modification times, so a copied or touched collection keeps it."""
    h = hashlib.sha256()
    _hash_texts(h, collection.corpus)
    _hash_texts(h, collection.queries)
    for split in collection.splits:
        h.update(f"|{split}|".encode())
        h.update(Path(collection._qrels_files[split]).read_bytes())
    return h.hexdigest()[:16]


def relevance_level(study: StudyConfig) -> int:
    """The smallest qrels grade that counts as a positive, for training pairs, CE and metrics."""
    return int(study.eval.get("relevance_level", 1))


# ---------------------------------------------------------------- training data
def training_pairs(study: StudyConfig, collection, source: str):
    from densescale import data

    kind, _ = data.parse_source(source)
    return data.annotation_pairs(
        collection,
        source=source,
        split="train",
        seed=0,
        relevance_level=relevance_level(study),
        model_path=study.collection.get("llm_model" if kind == "llm" else "doc2query_model"),
        prompt_template=study.collection.get("llm_prompt") if kind == "llm" else None,
    )


def negative_pool(study: StudyConfig, collection):
    return negative_pool_of(collection, study.train.negatives_from)


def negative_pool_of(collection, negatives_from: str):
    """Corpus rows random training negatives come from: the corpus minus every dev and test
    positive (``negatives_from = "non-eval"``, the metric's own exclusion), or None for the
    whole corpus (``"corpus"``, the authors' sampling)."""
    import numpy as np

    if negatives_from == "corpus":
        return None
    held = [collection.positive_rows(s) for s in collection.splits if s != "train"]
    keep = np.ones(len(collection.corpus), dtype=bool)  # a mask: O(corpus), no sort
    for rows in held:
        keep[rows] = False
    pool = np.flatnonzero(keep).astype(np.int64)
    if len(pool) == 0:
        raise ValueError("every corpus passage is a dev or test positive: no negatives to train on")
    return pool


def fit_grid_to_data(study: StudyConfig, *, progress: bool = True, collection=None) -> StudyConfig:
    """The study with ``grid.data_sizes`` above the collection's training pairs replaced by that
    number (so a preset runs on a smaller collection: its largest cell then uses every pair), and
    a note printed saying so."""
    if collection is None:
        collection = load_collection(study)
    n = min(len(training_pairs(study, collection, s)) for s in study.sources)
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


# ---------------------------------------------------------------- evaluation
def eval_split(study: StudyConfig, collection) -> dict:
    """What every cell (and the BM25 row) is evaluated on: the split's qrels (a seeded sample of
    ``eval.max_queries`` queries) over the corpus (or the ``eval.corpus_limit`` sub-corpus)."""
    import numpy as np

    from densescale import data

    ev = study.eval
    split = ev.get("split", "test")
    if split not in collection.splits:
        raise ValueError(
            f"eval.split={split!r} is not among the collection's splits {collection.splits}"
        )
    qrels = collection.qrels(split)
    qids = sorted(qrels)
    max_q = ev.get("max_queries")
    if max_q and len(qids) > max_q:
        keep = np.random.default_rng(0).choice(len(qids), max_q, replace=False)
        qids = [qids[i] for i in sorted(keep)]
        qrels = {q: qrels[q] for q in qids}
    queries = collection.queries
    rows = eval_corpus_rows(collection.corpus, qrels, ev.get("corpus_limit"))
    sub = collection.corpus if rows is None else collection.corpus.select(rows)
    overlap = None
    if "train" in collection.splits and split != "train":
        overlap = data.positive_overlap(
            collection, split, relevance_level=relevance_level(study), queries=qids
        )
    return {
        "split": split,
        "sampled": len(qids) < len(collection.qrels(split)),
        "overlap": overlap,
        "qrels": qrels,
        "qids": qids,
        "query_texts": [queries[queries.index(q)] for q in qids],
        "corpus_ids": sub.ids,
        "corpus_texts": sub,
        "rows": rows,
    }


def eval_corpus_rows(corpus, qrels: dict, limit: int | None):
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
    # numpy, not Python ints: a corpus_limit of millions stays a few arrays
    judged_rows = np.fromiter(judged, dtype=np.int64, count=len(judged))
    others = others[~np.isin(others, judged_rows)][: limit - len(judged)]
    return np.sort(np.concatenate([judged_rows, others.astype(np.int64)]))


def seen_eval_rows(train_pairs, ev: dict):
    """Rows of the evaluated corpus (``ev`` from :func:`eval_split`) that are positives of
    ``train_pairs``: what the seen-passage bias compares (sorted int64)."""
    import numpy as np

    seen = np.unique(train_pairs.positive_indices[train_pairs.positive_indices >= 0])
    if ev["rows"] is not None:  # corpus rows -> rows of the evaluated sub-corpus
        at = np.searchsorted(ev["rows"], seen).clip(0, len(ev["rows"]) - 1)
        seen = at[ev["rows"][at] == seen]
    return seen


def evaluation_args(ev: dict, train_pairs) -> dict:
    """The keyword arguments of :func:`densescale.eval.evaluate` that ``ev`` (from
    :func:`eval_split`) and the cell's ``train_pairs`` fix: corpus, queries, qrels, the seen rows
    and the clean subset (only when some positive was trained towards)."""
    overlap = ev["overlap"]
    return {
        "corpus_ids": ev["corpus_ids"],
        "corpus_texts": ev["corpus_texts"],
        "query_ids": ev["qids"],
        "query_texts": ev["query_texts"],
        "qrels": ev["qrels"],
        "seen_rows": seen_eval_rows(train_pairs, ev),
        "clean_queries": overlap.clean_queries
        if overlap is not None and overlap.overlapping
        else None,
    }


def check_eval_pool(study: StudyConfig, ev: dict) -> int:
    """The evaluation draws ``eval.num_negatives`` distinct negatives per pair from the evaluated
    corpus minus the split's positives (capped by ``eval.pool_size``): refuse a setting that pool
    cannot feed, before any cell trains (``evaluate`` would refuse it only after training).
    Returns the pool size."""
    k = int(study.eval.get("num_negatives", 256))
    level = relevance_level(study)
    positives = {d for docs in ev["qrels"].values() for d, g in docs.items() if g >= level}
    pool = len(ev["corpus_ids"]) - len(positives)
    where = f"the {len(ev['corpus_ids'])} evaluated passages"
    if ev["rows"] is not None:
        where += f" (eval.corpus_limit={study.eval['corpus_limit']})"
    cap = study.eval.get("pool_size")
    if cap and cap < pool:
        pool, where = cap, where + f", capped by eval.pool_size={cap}"
    if k > pool:
        raise ValueError(
            f"eval.num_negatives={k} exceeds the evaluation pool of {pool} passages ({where} "
            f"minus the {len(positives)} positives of the {ev['split']} split): lower "
            "eval.num_negatives or raise eval.corpus_limit / eval.pool_size"
        )
    return pool


def describe_evaluation(study: StudyConfig, collection, ev: dict, pool: int) -> str:
    """What every cell is evaluated on, in a few lines: queries, corpus (full or sub-corpus), the
    CE pool against K, and the share of pairs whose positive is a training positive."""
    k = int(study.eval.get("num_negatives", 256))
    n, full = len(ev["corpus_ids"]), len(collection.corpus)
    corpus = f"{n:,} passages" + (
        " (the full corpus)" if ev["rows"] is None else f" (a sub-corpus of the {full:,})"
    )
    head = (
        f"evaluation: {len(ev['qids']):,} {ev['split']} queries over {corpus}; CE pool {pool:,} "
        f"passages ({pool / full:.1%} of the corpus) for K = {k} negatives per pair"
    )
    lines = [head]
    if pool < 4 * k:
        lines.append(
            f"  note: the CE pool is under 4 x K: the K negatives are {k / pool:.0%} of it, so CE "
            "compares each positive with nearly the same passages every draw"
        )
    ov = ev.get("overlap")
    among = f"evaluated {ev['split']} pairs" if ev.get("sampled") else f"{ev['split']} pairs"
    if ov is not None and ov.overlapping == 0:
        lines.append(
            f"  none of the {ov.pairs:,} {among} has a positive that is a training positive"
        )
    elif ov is not None:
        lines.append(
            f"  {ov.share:.1%} of the {ov.pairs:,} {among} have a positive that is a training "
            f"positive; the clean subset ({len(ov.clean_queries):,} queries without one) is "
            "evaluated beside them"
        )
    return "\n".join(lines)


def bm25_reference(study: StudyConfig, collection, ev: dict | None = None, fingerprint=None):
    """BM25 ranking metrics on exactly what the cells are evaluated on, computed once per study
    and kept in ``bm25.<split>.json`` (a lexical reference row for every report)."""
    from densescale.eval import DEFAULT_METRICS, ranking_metrics
    from densescale.eval.bm25 import bm25_run

    ev = ev or eval_split(study, collection)
    k = int(study.eval.get("k", 100))
    path = study.output / f"bm25.{ev['split']}.json"
    settings = {
        "split": ev["split"],
        "k": k,
        "queries": len(ev["qids"]),
        "passages": len(ev["corpus_ids"]),
        "corpus_passages": len(collection.corpus),
        "relevance_level": relevance_level(study),
        "collection": fingerprint or collection_fingerprint(collection),
    }
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("settings") == settings:
            return {**cached, "corpus": describe_bm25_corpus(settings)}
    t0 = time.perf_counter()
    run = bm25_run(ev["corpus_ids"], ev["corpus_texts"], ev["qids"], ev["query_texts"], k=k)
    row = {
        "name": "BM25",
        "settings": settings,
        "split": ev["split"],
        "metrics": ranking_metrics(
            ev["qrels"], run, DEFAULT_METRICS, relevance_level=relevance_level(study)
        ),
        "seconds": time.perf_counter() - t0,
    }
    atomic_write_text(path, json.dumps(row, indent=2) + "\n")
    return {**row, "corpus": describe_bm25_corpus(settings)}


def describe_bm25_corpus(settings: dict) -> str:
    """What a BM25 row was computed on, for the line next to it."""
    n, full = settings["passages"], settings.get("corpus_passages")
    where = "the full corpus" if full in (None, n) else f"a sub-corpus of the {full:,}"
    return f"{settings['queries']:,} {settings['split']} queries over {n:,} passages ({where})"


def _oracle(study: StudyConfig) -> dict | None:
    f = study.paths()["collection"] / "oracle.json"
    if study.collection["kind"] != "synthetic" or not f.exists():
        return None
    return json.loads(f.read_text())


# ---------------------------------------------------------------- once per study
def _build_tokenizer(study: StudyConfig, collection) -> None:
    from densescale.models import load_tokenizer, resolve_model, train_tokenizer

    paths = study.paths()
    if all(resolve_model(m).pretrained for m in study.models):
        return  # every model brings its tokenizer
    if study.tokenizer.get("path"):
        load_tokenizer(paths["tokenizer"])
        return
    corpus = collection.corpus
    limit = min(len(corpus), int(study.tokenizer_settings["train_texts"]))
    train_tokenizer(
        (corpus[i] for i in range(limit)),
        int(study.tokenizer_settings["vocab_size"]),
        paths["tokenizer"],
        cache_key=f"{paths['collection'].resolve()}:{len(corpus)}:{limit}",
    )


def prepare(
    study: StudyConfig, *, progress: bool = True, force: bool = False, fit_grid: bool = False
) -> dict:
    """Check the results folder against the collection, materialise the dev split and the
    tokenizer, run every data check and compute the BM25 reference row, all before any cell.

    ``fit_grid`` first cuts data sizes above the training pairs to them
    (:func:`fit_grid_to_data`); without it such a grid is refused. Returns ``{"study"`` (the
    study, fitted), ``"fingerprint"``, ``"oracle"``, ``"baselines"}``."""
    from densescale.study import folder

    raw = open_collection(study)
    fingerprint = collection_fingerprint(raw)
    folder.check_folder(study, fingerprint, force=force, progress=progress)
    collection = with_dev_split(study, raw, announce=progress)
    if fit_grid:
        study = fit_grid_to_data(study, progress=progress, collection=collection)
    ev = eval_split(study, collection)
    for source in study.sources:
        n = len(training_pairs(study, collection, source))
        too_big = [d for d in study.data_sizes if d > n]
        if too_big:
            raise ValueError(
                f"grid.data_sizes {too_big} exceed the {n} training pairs of source {source!r}"
            )
    pool = check_eval_pool(study, ev)
    if progress:
        print(describe_evaluation(study, collection, ev, pool), flush=True)
    _build_tokenizer(study, collection)
    return {
        "study": study,
        "fingerprint": fingerprint,
        "oracle": _oracle(study),
        "chance_ce": chance_ce(int(study.eval.get("num_negatives", 256))),
        "baselines": {"BM25": bm25_reference(study, collection, ev, fingerprint)},
    }


# ---------------------------------------------------------------- once per cell
def cell_inputs(study: StudyConfig, cell: Cell) -> dict:
    """What one cell reads, from the same collection :func:`prepare` checked: the tokenizer, the
    cell's nested subset of training pairs, the dev pairs, the negative pool, the evaluation
    split, the collection fingerprint and the yardsticks (``chance_ce``, ``oracle_ce``)."""
    from densescale import data
    from densescale.models import load_checkpoint_tokenizer, load_tokenizer, resolve_model
    from densescale.study.folder import recorded_fingerprint

    raw = open_collection(study)
    # prepare() checked the collection against the folder and recorded its fingerprint: a cell
    # reads it instead of hashing the whole collection again
    fingerprint = recorded_fingerprint(study) or collection_fingerprint(raw)
    collection = with_dev_split(study, raw)
    spec = resolve_model(cell.model)
    if spec.pretrained:
        tokenizer = load_checkpoint_tokenizer(spec.checkpoint)
    else:
        tokenizer = load_tokenizer(study.paths()["tokenizer"])
    pairs = training_pairs(study, collection, cell.source)
    sizes = sorted(study.data_sizes)
    subset = data.nested_subsets(len(pairs), sizes, seed=cell.seed)[sizes.index(cell.data_size)]
    ev = eval_split(study, collection)
    oracle = _oracle(study) or {}
    return {
        "fingerprint": fingerprint,
        "spec": spec,
        "tokenizer": tokenizer,
        "corpus": collection.corpus,
        "train_pairs": pairs.subset(subset),
        "dev_pairs": data.annotation_pairs(
            collection,
            source="human",
            split="dev",
            seed=0,
            relevance_level=relevance_level(study),
        ),
        "negative_pool": negative_pool(study, collection),
        "eval": ev,
        "chance_ce": chance_ce(int(study.eval.get("num_negatives", 256))),
        "oracle_ce": oracle.get("splits", {}).get(ev["split"], {}).get("oracle_ce"),
    }
