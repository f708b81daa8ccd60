"""BM25, the lexical baseline of every study (SPEC 6), through the ``bm25s`` package.

``bm25s`` (Lu, "BM25S: Orders of magnitude faster lexical search via eager sparse scoring",
2024) precomputes each (term, document) score into a sparse matrix, so a query is a sum of a few
sparse rows. With its default ``method="lucene"`` (Lucene >= 8, after Robertson et al., Okapi at
TREC-3, 1994) the score of document d for query q is

    score(q, d) = sum_{t in q} idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t)      = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

(N documents, df(t) of them contain t, |d| tokens in d, avgdl the mean |d|; Lucene drops the
rank-neutral (k1 + 1) factor of the original). Text is lower-cased, split into runs of >= 2 word
characters, English stopwords removed and, when PyStemmer is installed, Snowball-stemmed
(``stemmer="english"``), the set-up of the bm25s BEIR baselines.

Documents that share no term with a query (score 0) are left out of its run, so a query can
have fewer than ``k`` results.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from densescale.data.texts import IdsView

from .metrics import DEFAULT_METRICS, parse_metrics, ranking_metrics

_METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")


def _bm25s():
    try:
        import bm25s
        from bm25s.tokenization import Tokenizer
    except ImportError:  # pragma: no cover - a declared dependency
        raise ImportError("densescale BM25 needs the bm25s package: pip install bm25s") from None
    return bm25s, Tokenizer


def _stemmer(name: str | None):
    if name is None:
        return None
    if not isinstance(name, str):
        raise TypeError(f"stemmer must be a Snowball language name (str) or None, got {name!r}")
    try:
        import Stemmer
    except ImportError:
        raise ImportError(
            f"stemmer={name!r} needs the PyStemmer package (pip install PyStemmer), or pass "
            "stemmer=None"
        ) from None
    try:
        return Stemmer.Stemmer(name)
    except KeyError:
        raise ValueError(
            f"stemmer must be one of {sorted(Stemmer.algorithms())} or None, got {name!r}"
        ) from None


def _ids(name: str, ids: Iterable[object]) -> list[str]:
    out = []
    for i in ids:
        if isinstance(i, str):
            out.append(i)
        elif isinstance(i, (int, np.integer)) and not isinstance(i, bool):
            out.append(str(int(i)))
        else:
            raise TypeError(f"{name} entries must be str or int, got {type(i).__name__} {i!r}")
    if len(set(out)) != len(out):
        seen: set[str] = set()
        dup = next(x for x in out if x in seen or seen.add(x))
        raise ValueError(f"{name} must be unique, {dup!r} appears twice")
    return out


def _texts(name: str, texts: Sequence[str], n: int, ids_name: str) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a sequence of str, got one str")
    out = list(texts)
    if len(out) != n:
        raise ValueError(f"{name} must have one text per entry of {ids_name} ({n}), got {len(out)}")
    for j, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{j}] must be str, got {type(t).__name__}")
    return out


def bm25_run(
    corpus_ids: Sequence[str],
    corpus_texts: Sequence[str],
    query_ids: Sequence[str],
    query_texts: Sequence[str],
    k: int = 100,
    *,
    k1: float = 1.5,
    b: float = 0.75,
    delta: float = 0.5,
    method: str = "lucene",
    stopwords: str | list[str] | None = "en",
    stemmer: str | None = "english",
    n_threads: int = 0,
) -> dict[str, dict[str, float]]:
    """Top-``k`` BM25 run of each query over a corpus, ``{qid: {docid: score}}``.

    corpus_ids, corpus_texts: N ids (``str``; ints are written as ``str``) and texts (a ``Texts``
    or any sequence of ``str``). query_ids, query_texts: M ids and texts. k: results per query,
    1 <= k (cut to N). k1, b: term-frequency saturation and length normalisation (formula in the
    module docstring); delta: for the bm25l / bm25+ methods; method: one of lucene, robertson,
    atire, bm25l, bm25+. stopwords: a bm25s language code (``"en"``), a list of words, or None;
    stemmer: a Snowball language (PyStemmer) or None. n_threads: bm25s query threads (0 = none).

    Scores are float (bm25s computes in float32); documents scoring 0 are left out. Raises
    ``TypeError``/``ValueError`` naming the argument for ids that are not str/int or repeat,
    texts of the wrong count or type, an empty corpus, k < 1, or a bad parameter, before any
    indexing (with the default Lucene method, whose index is built 100k passages at a time by
    :mod:`densescale.eval.bm25_index`, a corpus text that is not a str is found by its chunk).
    """
    bm25s, tokenizer_cls = _bm25s()
    # a Texts' ids are checked by the Texts; listing them would hold a str per passage
    cids = corpus_ids if isinstance(corpus_ids, IdsView) else _ids("corpus_ids", corpus_ids)
    chunked = method == "lucene"  # the index built a chunk at a time (bm25_index)
    if chunked:
        if isinstance(corpus_texts, str) or len(corpus_texts) != len(cids):
            _texts("corpus_texts", corpus_texts, len(cids), "corpus_ids")  # raises, naming it
        ctexts = corpus_texts
    else:
        ctexts = _texts("corpus_texts", corpus_texts, len(cids), "corpus_ids")
    qids = _ids("query_ids", query_ids)
    qtexts = _texts("query_texts", query_texts, len(qids), "query_ids")
    if len(cids) == 0:
        raise ValueError("corpus_ids must hold at least one document, got none")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    for arg, v in (("k1", k1), ("b", b), ("delta", delta)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise ValueError(f"{arg} must be a number >= 0, got {v!r}")
    if b > 1:
        raise ValueError(f"b must lie in [0, 1], got {b!r}")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if isinstance(n_threads, bool) or not isinstance(n_threads, int) or n_threads < -1:
        raise ValueError(f"n_threads must be an int >= -1, got {n_threads!r}")
    stem = _stemmer(stemmer)
    if not qids:
        return {}

    tokenizer = tokenizer_cls(stopwords=stopwords if stopwords is not None else [], stemmer=stem)
    model = bm25s.BM25(k1=float(k1), b=float(b), delta=float(delta), method=method)
    if chunked:
        from . import bm25_index

        bm25_index.index_in_chunks(
            model, tokenizer, ctexts, k1=float(k1), b=float(b), chunk=bm25_index.CHUNK
        )
    else:
        corpus_tokens = tokenizer.tokenize(
            ctexts, update_vocab=True, return_as="ids", show_progress=False
        )
        model.index(corpus_tokens, show_progress=False)
    query_tokens = tokenizer.tokenize(
        qtexts, update_vocab=False, return_as="ids", show_progress=False
    )
    rows, scores = model.retrieve(
        query_tokens, k=min(k, len(cids)), show_progress=False, n_threads=n_threads
    )
    run: dict[str, dict[str, float]] = {}
    names: dict[int, str] = {}  # one id string per retrieved passage, shared by the queries
    for qid, r, s in zip(qids, rows.tolist(), scores.tolist()):
        run[qid] = {
            (names.get(d) or names.setdefault(d, cids[d])): v for d, v in zip(r, s) if v != 0.0
        }
    return run


def bm25_baseline(
    collection: Any,
    split: str,
    k: int = 100,
    metrics: Iterable[str] = DEFAULT_METRICS,
    corpus_ids: Sequence[str] | None = None,
    corpus_texts: Sequence[str] | None = None,
    *,
    relevance_level: int = 1,
    query_ids: Sequence[str] | None = None,
    **params: Any,
) -> dict[str, Any]:
    """BM25's ranking metrics on one split of a collection: the reference row of a study report.

    collection: a ``densescale.data.Collection``; split: one of its splits; the queries are those
    of ``collection.qrels(split)``. corpus_ids, corpus_texts: the passages to rank (both or
    neither; default the whole ``collection.corpus``). k, params (``k1``, ``b``, ``method``,
    ``stopwords``, ``stemmer``, ...): as ``bm25_run``. metrics, relevance_level: as
    ``ranking_metrics``, over every query of the split's qrels (or of ``query_ids``, a sample of
    them, as a study's ``eval.max_queries`` takes).

    Returns ``{"name": "BM25", "split", "metrics": {name: mean}, "num_queries", "corpus_size",
    "k", "seconds" (wall time of indexing + retrieval + scoring), "params": {...}, "library"}``.
    Metric names, the split and the corpus are checked before any indexing.
    """
    bm25s, _ = _bm25s()
    parse_metrics(metrics, relevance_level)
    if (corpus_ids is None) != (corpus_texts is None):
        raise ValueError("corpus_ids and corpus_texts must be given together (or neither)")
    for attr in ("qrels", "queries", "corpus", "splits"):
        if not hasattr(collection, attr):
            raise TypeError(
                f"collection must be a densescale Collection, got {type(collection).__name__}"
            )
    qrels: Mapping[str, Mapping[str, int]] = collection.qrels(split)
    if query_ids is not None:
        unknown_q = [q for q in query_ids if q not in qrels]
        if unknown_q:
            raise ValueError(f"query_ids must be queries of the {split} qrels, got {unknown_q[:3]}")
        qrels = {q: qrels[q] for q in query_ids}
    if corpus_ids is None:
        corpus_ids, corpus_texts = collection.corpus.ids, collection.corpus
    qids = list(qrels)
    rows = collection.queries.indices(qids)
    qtexts = collection.queries.take(rows)
    settings = {
        "k1": 1.5,
        "b": 0.75,
        "delta": 0.5,
        "method": "lucene",
        "stopwords": "en",
        "stemmer": "english",
        "n_threads": 0,
    }
    unknown = set(params) - set(settings)
    if unknown:
        raise TypeError(
            f"bm25_baseline got unknown BM25 parameters {sorted(unknown)}; expected {sorted(settings)}"
        )
    settings.update(params)
    start = time.perf_counter()
    run = bm25_run(corpus_ids, corpus_texts, qids, qtexts, k, **settings)
    values = ranking_metrics(qrels, run, metrics, relevance_level=relevance_level)
    seconds = time.perf_counter() - start
    return {
        "name": "BM25",
        "split": split,
        "metrics": values,
        "num_queries": len(qids),
        "corpus_size": len(corpus_ids),
        "k": k,
        "seconds": seconds,
        "params": {key: settings[key] for key in sorted(settings) if key != "n_threads"},
        "library": f"bm25s {getattr(bm25s, '__version__', '?')}",
    }
