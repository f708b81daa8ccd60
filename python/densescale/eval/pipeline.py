"""The evaluation pipeline: encode -> exact search -> TREC run -> ranking metrics -> contrastive
entropy -> one JSON-ready record."""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from densescale.data.texts import IdsView
from densescale.data.trec import write_trec_run

from .entropy import contrastive_entropy
from .metrics import DEFAULT_METRICS, parse_metrics, ranking_metrics


def exact_search(
    queries: torch.Tensor, corpus: torch.Tensor, k: int, *, shard_rows: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact inner-product top-k: (M, D), (N, D) -> scores (M, k) fp32, ids (M, k) int64.

    The one place the pipeline searches (``densescale.search``). ``shard_rows``: search the
    corpus as views of this many rows, for a memory-mapped corpus: the search's screening
    copy (bf16 or int8: 2 or 1 bytes an element, ops/_search_screen.py) is then made per shard and only the last few
    kept, instead of one anonymous copy of the whole corpus (13 GiB at 8.8M x 768). Same result:
    shards are searched as one corpus, ties broken by the smaller id."""
    from ..ops.search import search

    if shard_rows is not None and corpus.shape[0] > shard_rows:
        return search(queries, list(corpus.split(shard_rows)), k)
    return search(queries, corpus, k)


def _search_shard_rows(corpus: torch.Tensor) -> int | None:
    """Rows per search shard for a corpus past :data:`EMBEDDINGS_IN_RAM_BYTES` (None below)."""
    row_bytes = corpus.shape[1] * corpus.element_size()
    if corpus.shape[0] * row_bytes <= EMBEDDINGS_IN_RAM_BYTES:
        return None
    return max(1, EMBEDDING_SHARD_BYTES // row_bytes)


class _Rows:
    """A read-only view of ``seq`` at the given rows (for encoding part of a corpus)."""

    def __init__(self, seq, rows: np.ndarray) -> None:
        self._seq, self._rows = seq, rows

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._seq[int(r)] for r in self._rows[i]]
        return self._seq[int(self._rows[i])]


# corpus embeddings larger than this are written shard by shard to an unlinked memory-mapped
# file instead of one tensor in RAM: MS MARCO's 8.8M passages at d = 768 take 27 GiB in fp32,
# more than a 24 GiB host holds; the page cache then keeps what fits (search reads a memmap in
# place)
EMBEDDINGS_IN_RAM_BYTES = 8 << 30
EMBEDDING_SHARD_BYTES = 1 << 30


def _encode_corpus(model, tokenizer, texts, **kwargs) -> torch.Tensor:
    """encode_texts over ``texts``: one (N, d) fp32 tensor, in RAM up to
    :data:`EMBEDDINGS_IN_RAM_BYTES`, above it backed by a temporary file filled a shard of about
    :data:`EMBEDDING_SHARD_BYTES` at a time (peak RAM: one shard)."""
    import tempfile

    from ..models.encode import encode_texts

    n = len(texts)
    dim = getattr(getattr(model, "config", None), "out_dim", None)
    if dim is None or n * dim * 4 <= EMBEDDINGS_IN_RAM_BYTES:
        return encode_texts(model, tokenizer, texts, **kwargs)
    shard = max(1, EMBEDDING_SHARD_BYTES // (dim * 4))
    with tempfile.TemporaryFile(prefix="densescale-corpus-emb-") as f:  # unlinked already
        out = np.memmap(f, dtype=np.float32, mode="w+", shape=(n, dim))
    for a in range(0, n, shard):
        rows = np.arange(a, min(n, a + shard), dtype=np.int64)
        out[a : a + len(rows)] = encode_texts(
            model, tokenizer, _Rows(texts, rows), **kwargs
        ).numpy()
    return torch.from_numpy(out)


def _row_lookup(corpus_ids: Sequence[str]):
    """docid -> corpus row (-1 when absent). A ``Texts`` id view answers from its hashed index, so
    an 8.8M-passage corpus needs no dict of millions of Python strings; any other sequence gets a
    dict (and must hold unique ids)."""
    if isinstance(corpus_ids, IdsView):
        return corpus_ids.owner.find
    index = {d: i for i, d in enumerate(corpus_ids)}
    if len(index) != len(corpus_ids):
        raise ValueError("corpus_ids must be unique")
    return lambda d: index.get(d, -1)


def _positive_pairs(qrels: Mapping, relevance_level: int) -> list[tuple[str, str]]:
    return [
        (qid, d) for qid, docs in qrels.items() for d, g in docs.items() if g >= relevance_level
    ]


def evaluate(
    model,
    tokenizer,
    *,
    corpus_ids: Sequence[str],
    corpus_texts: Sequence[str],
    query_ids: Sequence[str],
    query_texts: Sequence[str],
    qrels: Mapping,
    k: int = 100,
    num_negatives: int = 256,
    repeats: int = 10,
    seed: int = 0,
    pool_size: int | None = None,
    query_max_length: int = 32,
    passage_max_length: int = 180,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    run_path: str | os.PathLike | None = None,
    run_tag: str = "densescale",
    metrics: Sequence[str] | None = DEFAULT_METRICS,
    relevance_level: int = 1,
    seen_rows: np.ndarray | None = None,
    clean_queries: Collection[str] | None = None,
    progress: bool = False,
) -> dict:
    """Evaluate a dense encoder on one collection split.

    Encodes the corpus (``passage_max_length``) and the queries that appear in ``qrels``
    (``query_max_length``), retrieves the exact top-``k`` by inner product, optionally writes the
    TREC run to ``run_path``, computes ``metrics`` (trec_eval conventions), and the contrastive
    entropy over every (q, p+) pair with grade >= ``relevance_level``; its pool is the corpus minus
    every such positive, capped to ``pool_size`` passages drawn with ``seed`` when given.
    ``metrics=()`` computes the contrastive entropy only (no search, no run; for dev evaluation
    during training) and encodes just the positives and the pool, so a ``pool_size`` cap makes it
    cheap.
    ``dtype`` float16/bfloat16 encodes under autocast (default: bfloat16 on CUDA, fp32 elsewhere).
    ``seen_rows`` (rows of ``corpus_ids`` that were training positives) adds ``"seen_bias"``, the
    seen-passage bias of :func:`densescale.eval.bias.seen_passage_bias`, from the same embeddings
    (needs a search, so ``metrics`` must not be empty).
    ``clean_queries`` (query ids of ``qrels`` none of whose positives was a training positive, see
    :func:`densescale.data.positive_overlap`) adds ``"clean"``: CE and metrics over just those
    queries, from the same embeddings, run and negative draws.

    Every record also carries ``"metrics_chance"``: each metric's expected value under a random
    ranking of the same corpus at the same depth (:mod:`densescale.eval.chance`), the level a
    ranking metric is judged against.

    Returns ``{"N", "metrics", "ce", "ce_stderr", "num_pairs", "num_queries", "num_passages",
    "pool_size", "k", "num_negatives", "repeats", "seed", "metrics_stderr" (standard error over
    queries), "metrics_chance", "time": {"encode",
    "search", "ce", "metrics"}}`` (seconds), plus ``"clean"`` and ``"seen_bias"`` when asked.
    """
    # ---- checks, all before any work ---------------------------------------------------------
    for name, seq in (
        ("corpus_ids", corpus_ids),
        ("corpus_texts", corpus_texts),
        ("query_ids", query_ids),
        ("query_texts", query_texts),
    ):
        if isinstance(seq, str) or not hasattr(seq, "__len__") or not hasattr(seq, "__getitem__"):
            raise TypeError(f"{name} must be a sequence, got {type(seq).__name__}")
    if len(corpus_ids) != len(corpus_texts):
        raise ValueError(
            f"corpus_texts must have len(corpus_ids)={len(corpus_ids)} items, got {len(corpus_texts)}"
        )
    if len(query_ids) != len(query_texts):
        raise ValueError(
            f"query_texts must have len(query_ids)={len(query_ids)} items, got {len(query_texts)}"
        )
    if len(corpus_ids) == 0:
        raise ValueError("corpus_ids must not be empty")
    if not isinstance(qrels, Mapping) or len(qrels) == 0:
        raise ValueError(
            f"qrels must be a non-empty mapping {{qid: {{docid: grade}}}}, got {qrels!r:.80}"
        )
    for name, value, minimum in (
        ("k", k, 1),
        ("num_negatives", num_negatives, 1),
        ("repeats", repeats, 1),
        ("seed", seed, 0),
        ("batch_size", batch_size, 1),
        ("relevance_level", relevance_level, 1),
        ("query_max_length", query_max_length, 2),
        ("passage_max_length", passage_max_length, 2),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    max_position = getattr(getattr(model, "config", None), "max_position", None)
    if max_position is not None:
        for name, value in (
            ("query_max_length", query_max_length),
            ("passage_max_length", passage_max_length),
        ):
            if value > max_position:
                raise ValueError(
                    f"{name} must be <= the model's max_position {max_position}, got {value}"
                )
    if dtype is not None and dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(
            f"dtype must be None, torch.float32, torch.float16 or torch.bfloat16, got {dtype!r}"
        )
    if metrics is None:
        metrics = ()
    if isinstance(metrics, str):
        metrics = (metrics,)
    ce_only = len(metrics) == 0
    if not ce_only:
        parse_metrics(metrics)
    elif run_path is not None:
        raise ValueError("run_path needs a search, but metrics is empty (contrastive entropy only)")
    if not isinstance(run_tag, str) or not run_tag or any(c.isspace() for c in run_tag):
        raise ValueError(f"run_tag must be a non-empty string without whitespace, got {run_tag!r}")
    if seen_rows is not None:
        if ce_only:
            raise ValueError("seen_rows needs a search, but metrics is empty")
        seen_rows = np.asarray(seen_rows, dtype=np.int64)
        if seen_rows.ndim != 1 or (
            len(seen_rows) and (seen_rows.min() < 0 or seen_rows.max() >= len(corpus_ids))
        ):
            raise ValueError(
                f"seen_rows must be a 1-d array of rows in [0, {len(corpus_ids)}), got shape "
                f"{seen_rows.shape}"
            )
    if clean_queries is not None:
        clean_queries = {str(q) for q in clean_queries}
        unknown = sorted(clean_queries - {str(q) for q in qrels})
        if unknown:
            raise ValueError(
                f"clean_queries must be query ids of qrels; {len(unknown)} are not, e.g. "
                f"{unknown[:3]}"
            )
    if run_path is not None and Path(run_path).is_dir():
        raise ValueError(f"run_path must be a file path, got directory {str(run_path)!r}")

    row_of = _row_lookup(corpus_ids)
    query_index = {q: i for i, q in enumerate(query_ids)}
    eval_qids = list(qrels)
    missing_q = [q for q in eval_qids if q not in query_index]
    if missing_q:
        raise ValueError(
            f"qrels names {len(missing_q)} queries not in query_ids, e.g. {missing_q[:3]}"
        )
    pairs = _positive_pairs(qrels, relevance_level)
    if not pairs:
        raise ValueError(f"qrels must hold at least one pair with grade >= {relevance_level}")
    rows = {d: row_of(d) for _, d in pairs}
    missing_d = sorted(d for d, r in rows.items() if r < 0)
    if missing_d:
        raise ValueError(
            f"qrels names {len(missing_d)} positive passages not in corpus_ids, e.g. {missing_d[:3]}"
        )
    positive_rows = np.fromiter(sorted(set(rows.values())), dtype=np.int64)
    pool_rows = np.setdiff1d(
        np.arange(len(corpus_ids), dtype=np.int64), positive_rows, assume_unique=True
    )
    if pool_size is not None:
        if not isinstance(pool_size, int) or isinstance(pool_size, bool) or pool_size < 1:
            raise ValueError(f"pool_size must be a positive int or None, got {pool_size!r}")
        if pool_size < len(pool_rows):
            rng = np.random.default_rng(seed)
            pool_rows = np.sort(rng.choice(pool_rows, size=pool_size, replace=False))
    if num_negatives > len(pool_rows):
        raise ValueError(
            f"num_negatives ({num_negatives}) must be <= the negative pool size "
            f"({len(pool_rows)} = corpus minus test positives, capped by pool_size)"
        )
    k_eff = min(k, len(corpus_ids))
    device = torch.device(device)
    if dtype is None and device.type == "cuda":
        dtype = torch.bfloat16

    from ..models.encode import encode_texts
    from ..models.encoder import DenseEncoder, num_non_embedding_params

    timings: dict[str, float] = {}
    # ---- encode ------------------------------------------------------------------------------
    t0 = time.perf_counter()
    # CE only: encode just the positives and the pool, not the whole corpus
    enc_rows = np.union1d(positive_rows, pool_rows) if ce_only else None
    corpus_emb = _encode_corpus(
        model,
        tokenizer,
        corpus_texts if enc_rows is None else _Rows(corpus_texts, enc_rows),
        max_length=passage_max_length,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        progress=progress,
    )
    eval_query_texts = [query_texts[query_index[q]] for q in eval_qids]
    query_emb = encode_texts(
        model,
        tokenizer,
        eval_query_texts,
        max_length=query_max_length,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        progress=progress,
    )
    timings["encode"] = time.perf_counter() - t0

    c_dev, q_dev = corpus_emb.to(device), query_emb.to(device)
    metric_values: dict[str, float] = {}
    metric_stderr: dict[str, float | None] = {}
    timings["search"] = timings["metrics"] = 0.0
    if not ce_only:
        # ---- search + run --------------------------------------------------------------------
        t0 = time.perf_counter()
        scores, ids = exact_search(q_dev, c_dev, k_eff, shard_rows=_search_shard_rows(c_dev))
        scores, ids = scores.float().cpu(), ids.cpu()
        if run_path is not None:
            write_trec_run(run_path, eval_qids, corpus_ids, scores, ids, run_tag)
        timings["search"] = time.perf_counter() - t0

        # ---- ranking metrics -----------------------------------------------------------------
        t0 = time.perf_counter()
        ids_np, scores_np = ids.numpy(), scores.numpy().astype(np.float64)
        run = {
            q: {corpus_ids[int(j)]: float(s) for j, s in zip(ids_np[i], scores_np[i]) if j >= 0}
            for i, q in enumerate(eval_qids)
        }
        metric_values, per_query = ranking_metrics(
            qrels, run, metrics, relevance_level=relevance_level, per_query=True
        )
        metric_stderr = _stderr_over_queries(per_query, qrels, metric_values)
        timings["metrics"] = time.perf_counter() - t0

    # ---- contrastive entropy -----------------------------------------------------------------
    t0 = time.perf_counter()
    qpos = {q: i for i, q in enumerate(eval_qids)}
    pair_q = torch.tensor([qpos[q] for q, _ in pairs], dtype=torch.long)
    pair_d = np.array([rows[d] for _, d in pairs], dtype=np.int64)
    local_pool = pool_rows
    if enc_rows is not None:  # corpus rows -> rows of the encoded subset
        pair_d = np.searchsorted(enc_rows, pair_d)
        local_pool = np.searchsorted(enc_rows, pool_rows)
    pair_d = torch.from_numpy(pair_d)
    ce = contrastive_entropy(
        q_dev[pair_q.to(device)],
        c_dev[pair_d.to(device)],
        c_dev,
        pool_rows=torch.from_numpy(local_pool),
        num_negatives=num_negatives,
        repeats=repeats,
        seed=seed,
    )
    timings["ce"] = time.perf_counter() - t0

    bias = None
    if seen_rows is not None:
        from .bias import seen_passage_bias

        seen = np.zeros(len(corpus_ids), dtype=bool)
        seen[seen_rows] = True
        eligible = np.ones(len(corpus_ids), dtype=bool)
        eligible[positive_rows] = False
        bias = seen_passage_bias(
            q_dev,
            pair_q.to(device),
            c_dev[pair_d.to(device)],
            c_dev,
            seen,
            eligible,
            ids_np[:, :10],
            num_negatives=num_negatives,
            seed=seed,
        )

    clean = None
    if clean_queries is not None:
        keep = np.array([q in clean_queries for q, _ in pairs], dtype=bool)
        clean_qrels = {q: qrels[q] for q in eval_qids if q in clean_queries}
        per_pair = ce.per_pair[keep]
        clean = {
            "num_queries": len(clean_qrels),
            "num_pairs": int(keep.sum()),
            "ce": float(per_pair.mean()) if len(per_pair) else None,
            "ce_stderr": float(per_pair.std(ddof=1) / np.sqrt(len(per_pair)))
            if len(per_pair) > 1
            else None,
            "metrics": ranking_metrics(clean_qrels, run, metrics, relevance_level=relevance_level)
            if clean_qrels and not ce_only
            else {},
        }

    n_params = num_non_embedding_params(model) if isinstance(model, DenseEncoder) else None
    return {
        "N": n_params,
        "metrics": metric_values,
        "metrics_stderr": metric_stderr,
        "ce": ce.mean,
        "ce_stderr": ce.stderr,
        "num_pairs": ce.num_pairs,
        "num_queries": len(eval_qids),
        "num_passages": len(corpus_ids),
        "pool_size": len(pool_rows),
        "k": k_eff,
        "num_negatives": num_negatives,
        "repeats": repeats,
        "seed": seed,
        "metrics_chance": _metrics_chance(qrels, len(corpus_ids), metrics, relevance_level, k_eff),
        "time": timings,
        **({"clean": clean} if clean is not None else {}),
        **({"seen_bias": bias} if bias is not None else {}),
    }


def _stderr_over_queries(per_query: dict, qrels: Mapping, means: dict) -> dict:
    """Standard error of each metric's mean over the queries of ``qrels`` (a query absent from
    the run scores 0, as in the mean); None with one query."""
    out: dict[str, float | None] = {}
    for name in means:
        v = np.array([per_query.get(str(q), {}).get(name, 0.0) for q in qrels], dtype=np.float64)
        out[name] = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None
    return out


def _metrics_chance(qrels, corpus_size: int, metrics, relevance_level: int, depth: int) -> dict:
    """Random-ranking expectation of every metric that has one (ir-measures-only names: none)."""
    from .chance import random_ranking_metrics
    from .metrics import _NAME_RE

    # parse_metrics already refused precision without a cutoff; ir-measures names have no level
    names = [m for m in metrics if _NAME_RE.match(m.strip().lower())]
    if not names:
        return {}
    return random_ranking_metrics(
        qrels, corpus_size, names, relevance_level=relevance_level, depth=depth
    )
