"""Annotation sources for the annotation-quality study (SPEC 1.5), all in one pair format.

``annotation_pairs(collection, source, ...) -> TrainingPairs``, a sequence of
``TrainingPair(query, positive, positive_index)`` held in ``Texts`` buffers plus int64 arrays.
A source is a plain string (a study file lists it as written); ``parse_source(spec) ->
(kind, params)`` checks it and is what a study config calls before any work:

- ``"human"``: the split's qrels with grade >= ``relevance_level`` (default 1, any positive
  grade); a query with two positives gives two pairs.
  ``positive_index`` is the corpus row of the judged passage.
- ``"human-noise<f>"`` with ``0 <= f <= 1`` (e.g. ``"human-noise0.25"``; ``parse_source`` gives
  ``("human", {"noise": 0.25})``): controlled label noise, this project's quality axis with a
  known truth. The human pairs, in the same order, where ``floor(f * n + 1/2)`` of the ``n``
  pairs get a random passage as their positive instead of the judged one. With ``rng`` seeded by
  ``seed``: a permutation ``pi`` of the pairs marks pairs ``pi[:floor(f * n + 1/2)]`` noisy, and
  pair ``i``'s replacement ``r_i`` is drawn uniformly from the training-eligible corpus rows (the
  corpus minus the other splits' positives) minus the judged positives of pair ``i``'s query, so
  it is never a dev/test positive nor a passage the query is judged relevant to. ``pi`` and every
  ``r_i`` are drawn before ``f`` is used, so for one seed the noisy pairs of a smaller ``f`` are a
  subset of those of a larger ``f``, with the same replacements (a nested quality axis);
  ``f = 0`` is ``"human"``. ``positive_index`` and ``source_indices`` of a noisy pair are
  ``r_i`` (so false-negative masking treats the replacement as the pair's passage).
- ``"ict"`` (inverse cloze task; Lee, Chang & Toutanova 2019, "Latent Retrieval for Weakly
  Supervised Open Domain Question Answering", as the paper describes it): one pair per passage; a
  sentence of the passage, chosen uniformly at random, is the query and the rest of the passage
  (the other sentences, in order) the positive. Passages with one sentence: the first 20 words are
  the query and the last 20 words the positive. Sentences end at ``.``, ``!`` or ``?`` followed by
  space.
- ``"crop"`` (random cropping, Contriever-style independent cropping; Izacard et al. 2022): two
  spans of the passage's whitespace words are drawn independently, each of length
  ``max(1, round(r * n))`` words with ``r ~ U(min_ratio, max_ratio)`` (default 0.1 .. 0.5) and a
  uniform start; one is the query and the other the positive (the spans may overlap, as in
  Contriever).
- ``"doc2query"`` (docT5query; Nogueira & Lin 2019, "From doc2query to docTTTTTquery"):
  pseudo-queries generated from each passage by a local seq2seq model (``transformers``
  ``AutoModelForSeq2SeqLM`` + tokenizer loaded from ``model_path``, e.g.
  ``castorini/doc2query-t5-base-msmarco`` downloaded to a folder; top-k sampling with k = 10);
  the positive is the passage itself. See ``densescale.data.generate``.
- ``"llm"`` (LLM-generated queries, the paper's fourth source): any local decoder-only
  ``AutoModelForCausalLM`` + tokenizer in ``model_path`` writes one query per passage from
  ``prompt_template`` (``{passage}`` is replaced by the passage; default
  ``generate.DEFAULT_LLM_PROMPT``), greedy unless ``generate_kwargs`` asks for seeded sampling,
  batched with left padding, the continuation cut at its first newline. The positive is the
  passage itself.

For ict, crop, doc2query and llm the passages come from the corpus minus the positives of the
other splits (so dev/test passages never leak into training); ``max_pairs`` takes a seeded random
subset of them. ICT and crop positives are not corpus passages: ``positive_index`` is -1 and
``source_indices`` holds the corpus row the pair was made from (for false-negative masking).
Passages with fewer than two words give no ICT/crop pair; empty generated queries are dropped.
Generated queries are cached on disk, once per (generator folder, prompt, generation options,
seed, passages), and read back by later calls, e.g. every cell of a study
(:mod:`densescale.data.query_cache`; ``cache_dir`` picks the folder, ``False`` turns it off).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple, overload

import numpy as np

from .collection import Collection
from .texts import Texts, TextsBuilder

SOURCES = ("human", "ict", "crop", "doc2query", "llm")  # the kinds parse_source returns
GENERATOR_SOURCES = ("doc2query", "llm")  # the kinds that need model_path
SOURCE_FORMS = (
    '"human"',
    '"human-noise<f>" with 0 <= f <= 1',
    '"ict"',
    '"crop"',
    '"doc2query"',
    '"llm"',
)
_NOISE_STREAM = 0x6E6F697365  # "noise": the label-noise draws' own seed stream
_NOISE = re.compile(r"human-noise(\d+(?:\.\d*)?|\.\d+)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class TrainingPair(NamedTuple):
    query: str
    positive: str
    positive_index: int  # corpus row of the positive, -1 when the positive is not a corpus passage


class TrainingPairs(Sequence[TrainingPair]):
    """Array-backed list of ``TrainingPair``. Pair i is ``(queries[query_rows[i]],
    positives[positive_rows[i]], positive_indices[i])``; ``source_indices[i]`` is the corpus row
    the pair belongs to (= ``positive_indices[i]`` for human and doc2query pairs)."""

    def __init__(
        self,
        source: str,
        queries: Texts,
        query_rows: np.ndarray,
        positives: Texts,
        positive_rows: np.ndarray,
        positive_indices: np.ndarray,
        source_indices: np.ndarray,
    ) -> None:
        n = len(query_rows)
        for name, arr in (
            ("positive_rows", positive_rows),
            ("positive_indices", positive_indices),
            ("source_indices", source_indices),
        ):
            if len(arr) != n:
                raise ValueError(f"{name} must have {n} entries like query_rows, got {len(arr)}")
        self.source = source
        self.queries = queries
        self.positives = positives
        self.query_rows = np.asarray(query_rows, np.int64)
        self.positive_rows = np.asarray(positive_rows, np.int64)
        self.positive_indices = np.asarray(positive_indices, np.int64)
        self.source_indices = np.asarray(source_indices, np.int64)

    def __len__(self) -> int:
        return len(self.query_rows)

    def __repr__(self) -> str:
        return f"TrainingPairs(source={self.source!r}, n={len(self)})"

    @overload
    def __getitem__(self, i: int) -> TrainingPair: ...
    @overload
    def __getitem__(self, i: slice) -> TrainingPairs: ...
    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.subset(np.arange(len(self))[i])
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"index must be an int or slice, got {type(i).__name__}")
        if not -len(self) <= i < len(self):
            raise IndexError(f"pair {i} out of range for {len(self)} pairs")
        i = int(i) % len(self)
        return TrainingPair(
            self.queries[int(self.query_rows[i])],
            self.positives[int(self.positive_rows[i])],
            int(self.positive_indices[i]),
        )

    def __iter__(self) -> Iterator[TrainingPair]:
        return (self[i] for i in range(len(self)))

    def query_id(self, i: int) -> str:
        return self.queries.id(int(self.query_rows[i]))

    def subset(self, rows: Sequence[int] | np.ndarray) -> TrainingPairs:
        """Pairs ``rows`` (e.g. one of ``nested_subsets``), sharing the text buffers."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1:
            raise ValueError(f"rows must be 1-d, got shape {rows.shape}")
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise ValueError(f"rows must lie in [0, {len(self)}), got [{rows.min()}, {rows.max()}]")
        return TrainingPairs(
            self.source,
            self.queries,
            self.query_rows[rows],
            self.positives,
            self.positive_rows[rows],
            self.positive_indices[rows],
            self.source_indices[rows],
        )

    def query_texts(self, rows: Sequence[int] | np.ndarray) -> list[str]:
        return self.queries.take(self.query_rows[np.asarray(rows, np.int64)])

    def positive_texts(self, rows: Sequence[int] | np.ndarray) -> list[str]:
        return self.positives.take(self.positive_rows[np.asarray(rows, np.int64)])


def _eligible_rows(
    collection: Collection, split: str, exclude_splits: Sequence[str] | None
) -> np.ndarray:
    if exclude_splits is None:
        exclude_splits = [s for s in collection.splits if s != split]
    for s in exclude_splits:
        if s not in collection.splits:
            raise ValueError(f"exclude_splits entries must be among {collection.splits}, got {s!r}")
    keep = np.ones(len(collection.corpus), dtype=bool)
    for s in exclude_splits:
        keep[collection.positive_rows(s)] = False
    return np.flatnonzero(keep)


def _pick(rows: np.ndarray, max_pairs: int | None, rng: np.random.Generator) -> np.ndarray:
    if max_pairs is None or max_pairs >= len(rows):
        return rows
    return np.sort(rng.choice(rows, size=max_pairs, replace=False))


def ict_pair(text: str, u: float) -> tuple[str, str] | None:
    """The ICT pair of one passage; ``u`` in [0, 1) picks the sentence. None when < 2 words."""
    sentences = [s for s in _SENTENCE_END.split(text.strip()) if s]
    if len(sentences) >= 2:
        k = min(int(u * len(sentences)), len(sentences) - 1)
        return sentences[k], " ".join(sentences[:k] + sentences[k + 1 :])
    words = text.split()
    if len(words) < 2:
        return None
    return " ".join(words[:20]), " ".join(words[-20:])


def crop_pair(text: str, r: np.ndarray, s: np.ndarray) -> tuple[str, str] | None:
    """Two independent random spans; ``r`` (2,) are length ratios, ``s`` (2,) uniforms for starts."""
    words = text.split()
    n = len(words)
    if n < 2:
        return None
    spans = []
    for ratio, u in zip(r.tolist(), s.tolist()):
        length = min(n, max(1, round(ratio * n)))
        start = min(int(u * (n - length + 1)), n - length)
        spans.append(" ".join(words[start : start + length]))
    return spans[0], spans[1]


def parse_source(spec: str) -> tuple[str, dict[str, float]]:
    """``(kind, params)`` of a source string: ``"human" -> ("human", {})``,
    ``"human-noise0.25" -> ("human", {"noise": 0.25})``, ``"llm" -> ("llm", {})``. ``kind`` is one
    of ``SOURCES``. Raises ``ValueError`` naming the source and the accepted forms."""
    if not isinstance(spec, str):
        raise TypeError(f"source must be a str, got {type(spec).__name__}")
    if spec in SOURCES:
        return spec, {}
    m = _NOISE.fullmatch(spec)
    if m is not None and 0.0 <= float(m.group(1)) <= 1.0:
        return "human", {"noise": float(m.group(1))}
    why = " (the noise fraction must lie in [0, 1])" if m is not None else ""
    raise ValueError(f"source must be one of {', '.join(SOURCE_FORMS)}, got {spec!r}{why}")


def annotation_pairs(
    collection: Collection,
    source: str = "human",
    split: str = "train",
    seed: int = 0,
    model_path: str | None = None,
    *,
    max_pairs: int | None = None,
    exclude_splits: Sequence[str] | None = None,
    min_ratio: float = 0.1,
    max_ratio: float = 0.5,
    queries_per_passage: int = 1,
    batch_size: int = 32,
    max_input_length: int = 512,
    max_new_tokens: int | None = None,
    device: str = "cpu",
    generate_kwargs: Mapping[str, Any] | None = None,
    prompt_template: str | None = None,
    progress: bool | None = None,
    relevance_level: int = 1,
    cache_dir: str | os.PathLike | bool | None = None,
) -> TrainingPairs:
    """Training pairs from one annotation source (see the module docstring for each source).

    collection: a ``Collection``; source: a source string (``parse_source``); split: the qrels
    split of human pairs (and the split whose passages the other sources may use); seed: drives
    every random choice (noise, ICT sentences, crops, subsets, sampling); model_path: local model
    folder, required for ``"doc2query"`` (seq2seq) and ``"llm"`` (causal LM); max_pairs: cap on
    ict/crop/doc2query/llm passages (seeded subset). Generator options: queries_per_passage,
    batch_size, max_input_length (passage tokens), max_new_tokens (default 64 for doc2query, 32
    for llm), device, generate_kwargs (passed to ``generate``), prompt_template (llm only,
    contains ``{passage}``), progress (None: a bar from 1000 passages on); relevance_level: the
    smallest qrels grade that makes a human pair (graded qrels, e.g. 2 of 0/1/2); cache_dir:
    where generated queries are cached (None: ``$DENSESCALE_QUERY_CACHE`` or
    ``~/.cache/densescale/queries``; False: no cache; see ``data.query_cache``). Returns
    ``TrainingPairs`` (a sequence of ``TrainingPair``) whose ``source`` is ``source`` as given.
    """
    kind, params = parse_source(source)
    if not isinstance(collection, Collection):
        raise TypeError(
            f"collection must be a densescale.data.Collection, got {type(collection).__name__}"
        )
    if max_pairs is not None and (
        isinstance(max_pairs, bool) or not isinstance(max_pairs, int) or max_pairs < 1
    ):
        raise ValueError(f"max_pairs must be None or an int >= 1, got {max_pairs!r}")
    if not 0 < min_ratio <= max_ratio <= 1:
        raise ValueError(
            f"need 0 < min_ratio <= max_ratio <= 1, got min_ratio={min_ratio}, max_ratio={max_ratio}"
        )
    if kind in GENERATOR_SOURCES and model_path is None:
        what = "seq2seq (docT5query)" if kind == "doc2query" else "causal LM"
        raise ValueError(
            f"model_path must name a local {what} model folder for source={source!r}, got None"
        )
    if prompt_template is not None and kind != "llm":
        raise ValueError(f"prompt_template applies to source 'llm' only, got source={source!r}")
    if queries_per_passage < 1:
        raise ValueError(f"queries_per_passage must be >= 1, got {queries_per_passage}")
    if isinstance(relevance_level, bool) or not isinstance(relevance_level, int):
        raise TypeError(f"relevance_level must be an int >= 1, got {relevance_level!r}")
    if relevance_level < 1:
        raise ValueError(f"relevance_level must be an int >= 1, got {relevance_level!r}")
    rng = np.random.default_rng(seed)
    if kind == "human":
        pairs = _human(collection, split, relevance_level)
        if "noise" not in params:
            return pairs
        eligible = _eligible_rows(collection, split, exclude_splits)
        # its own stream: rng's first draw, permutation(n), is the one nested_subsets(n, seed)
        # draws, so the noisy pairs would be exactly the first pairs of every data-size subset
        noise_rng = np.random.default_rng((_NOISE_STREAM, seed))
        return _with_label_noise(pairs, eligible, params["noise"], noise_rng, source)
    rows = _pick(_eligible_rows(collection, split, exclude_splits), max_pairs, rng)
    if kind in GENERATOR_SOURCES:
        from . import generate
        from .query_cache import cached_queries

        passages = _RowTexts(collection.corpus, rows)
        common = {
            "seed": seed,
            "queries_per_passage": queries_per_passage,
            "batch_size": batch_size,
            "max_input_length": max_input_length,
            "device": device,
            "generate_kwargs": generate_kwargs,
        }
        if kind == "doc2query":
            options = {**common, "max_new_tokens": max_new_tokens or 64}
            run = generate.generate_queries_seq2seq
        else:
            options = {
                **common,
                "max_new_tokens": max_new_tokens or 32,
                "prompt_template": prompt_template or generate.DEFAULT_LLM_PROMPT,
            }
            run = generate.generate_queries_causal
        queries = cached_queries(
            kind,
            model_path,
            options,
            passages,
            lambda: run(passages, model_path, progress=progress, **options),
            cache_dir,
        )
        return _generated_pairs(collection, rows, queries, source)
    qb, pb = TextsBuilder(f"{source}-queries"), TextsBuilder(f"{source}-positives")
    kept: list[int] = []
    if kind == "ict":
        us = rng.random(len(rows))
    else:
        ratios = rng.uniform(min_ratio, max_ratio, size=(len(rows), 2))
        starts = rng.random((len(rows), 2))
    corpus = collection.corpus
    for k, row in enumerate(rows.tolist()):
        text = corpus[row]
        pair = (
            ict_pair(text, float(us[k])) if kind == "ict" else crop_pair(text, ratios[k], starts[k])
        )
        if pair is None:
            continue
        pid = f"{source}-{corpus.id(row)}".encode()
        qb.add(pid, pair[0].encode("utf-8"))
        pb.add(pid, pair[1].encode("utf-8"))
        kept.append(row)
    n = len(kept)
    ar = np.arange(n, dtype=np.int64)
    return TrainingPairs(
        source,
        qb.build(),
        ar,
        pb.build(),
        ar.copy(),
        np.full(n, -1, np.int64),
        np.asarray(kept, np.int64),
    )


def _human(collection: Collection, split: str, relevance_level: int = 1) -> TrainingPairs:
    qrels = collection.qrels(split)
    qids: list[str] = []
    docids: list[str] = []
    for qid, docs in qrels.items():
        for docid, rel in docs.items():
            if rel >= relevance_level:
                qids.append(qid)
                docids.append(docid)
    if not qids:
        raise ValueError(f"split {split!r} has no judgement with relevance >= {relevance_level}")
    qrows = collection.queries.indices(qids)
    drows = collection.corpus.indices(docids)
    return TrainingPairs(
        "human", collection.queries, qrows, collection.corpus, drows, drows.copy(), drows.copy()
    )


def _with_label_noise(
    pairs: TrainingPairs,
    eligible: np.ndarray,
    fraction: float,
    rng: np.random.Generator,
    source: str,
) -> TrainingPairs:
    """Human ``pairs`` with ``floor(fraction * n + 1/2)`` positives replaced by random eligible
    passages (module docstring: the permutation and every replacement are drawn before
    ``fraction`` is used, so noisy sets are nested across fractions for one seed)."""
    n = len(pairs)
    n_noisy = int(np.floor(fraction * n + 0.5))
    n_corpus = len(pairs.positives)
    if n_noisy == 0:
        rows = pairs.positive_rows
        return TrainingPairs(
            source, pairs.queries, pairs.query_rows, pairs.positives, rows, rows.copy(), rows.copy()
        )
    qrows, drows = pairs.query_rows, pairs.positive_rows
    # judged (query, passage) keys: a replacement is never one of its query's judged positives
    judged = np.unique(qrows * n_corpus + drows)
    in_pool = judged[np.isin(judged % n_corpus, eligible)]
    q_of, per_query = np.unique(in_pool // n_corpus, return_counts=True)
    if len(eligible) == 0 or (per_query >= len(eligible)).any():
        bad = pairs.queries.id(int(q_of[per_query >= len(eligible)][0])) if len(q_of) else "?"
        raise ValueError(
            f"source {source!r}: no training-eligible passage is left to replace the positives of "
            f"query {bad!r} ({len(eligible)} eligible corpus rows)"
        )
    order = rng.permutation(n)
    repl = eligible[rng.integers(len(eligible), size=n)]
    clash = np.isin(qrows * n_corpus + repl, in_pool)
    while clash.any():  # resample clashes; ends with probability 1 (checked above)
        repl[clash] = eligible[rng.integers(len(eligible), size=int(clash.sum()))]
        clash = np.isin(qrows * n_corpus + repl, in_pool)
    noisy = order[:n_noisy]
    new = drows.copy()
    new[noisy] = repl[noisy]
    return TrainingPairs(source, pairs.queries, qrows, pairs.positives, new, new.copy(), new.copy())


class _RowTexts(Sequence[str]):
    """Corpus rows ``rows`` as a lazy sequence of passage texts."""

    def __init__(self, corpus: Texts, rows: np.ndarray) -> None:
        self.corpus, self.rows = corpus, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.corpus.take(self.rows[i])
        return self.corpus[int(self.rows[i])]


def _generated_pairs(
    collection: Collection, rows: np.ndarray, queries: Sequence[Sequence[str]], source: str
) -> TrainingPairs:
    """Pairs (generated query, its passage): passage ``rows[k]`` with each of ``queries[k]``."""
    corpus = collection.corpus
    prefix = "d2q" if source == "doc2query" else source
    qb = TextsBuilder(f"{source}-queries")
    kept: list[int] = []
    for row, qs in zip(rows.tolist(), queries):
        for j, q in enumerate(qs):
            qb.add(f"{prefix}-{corpus.id(row)}-{j}".encode(), q.encode("utf-8"))
            kept.append(row)
    idx = np.asarray(kept, np.int64)
    return TrainingPairs(
        source,
        qb.build(),
        np.arange(len(idx), dtype=np.int64),
        corpus,
        idx,
        idx.copy(),
        idx.copy(),
    )
