"""Annotation sources for the annotation-quality study (SPEC 1.5), all in one pair format.

``annotation_pairs(collection, source, ...) -> TrainingPairs``, a sequence of
``TrainingPair(query, positive, positive_index)`` held in ``Texts`` buffers plus int64 arrays:

- ``"human"``: the split's qrels with relevance > 0; a query with two positives gives two pairs.
  ``positive_index`` is the corpus row of the judged passage.
- ``"ict"`` (inverse cloze task, as the paper describes it): one pair per passage; a sentence of
  the passage, chosen uniformly at random, is the query and the rest of the passage (the other
  sentences, in order) the positive. Passages with one sentence: the first 20 words are the query
  and the last 20 words the positive. Sentences end at ``.``, ``!`` or ``?`` followed by space.
- ``"crop"`` (random cropping, Contriever-style independent cropping): two spans of the passage's
  whitespace words are drawn independently, each of length ``max(1, round(r * n))`` words with
  ``r ~ U(min_ratio, max_ratio)`` (default 0.1 .. 0.5) and a uniform start; one is the query and
  the other the positive (the spans may overlap, as in Contriever).
- ``"doc2query"``: pseudo-queries generated from each passage by a local seq2seq model
  (docT5query-style: ``transformers`` ``AutoModelForSeq2SeqLM`` + tokenizer loaded from
  ``model_path``, top-k sampling with k = 10); the positive is the passage itself.

For ict, crop and doc2query the passages come from the corpus minus the positives of the other
splits (so dev/test passages never leak into training); ``max_pairs`` takes a seeded random subset
of them. ICT and crop positives are not corpus passages: ``positive_index`` is -1 and
``source_indices`` holds the corpus row the pair was made from (for false-negative masking).
Passages with fewer than two words give no ICT/crop pair; empty generated queries are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple, overload

import numpy as np

from .collection import Collection
from .texts import Texts, TextsBuilder

SOURCES = ("human", "ict", "crop", "doc2query")
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
    max_new_tokens: int = 64,
    device: str = "cpu",
    generate_kwargs: Mapping[str, Any] | None = None,
) -> TrainingPairs:
    """Training pairs from one annotation source (see the module docstring for each source).

    collection: a ``Collection``; split: the qrels split of human pairs (and the split whose
    passages the other sources may use); seed: drives every random choice; model_path: local
    seq2seq model folder, required for ``"doc2query"``; max_pairs: cap on ict/crop/doc2query
    passages (seeded subset). Returns ``TrainingPairs`` (a sequence of ``TrainingPair``).
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
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
    if source == "doc2query" and model_path is None:
        raise ValueError(
            "model_path must name a local seq2seq model folder for source='doc2query', got None"
        )
    if queries_per_passage < 1:
        raise ValueError(f"queries_per_passage must be >= 1, got {queries_per_passage}")
    rng = np.random.default_rng(seed)
    if source == "human":
        return _human(collection, split)
    rows = _pick(_eligible_rows(collection, split, exclude_splits), max_pairs, rng)
    if source == "doc2query":
        return _doc2query(
            collection,
            rows,
            model_path,
            seed,
            queries_per_passage,
            batch_size,
            max_input_length,
            max_new_tokens,
            device,
            generate_kwargs or {},
        )
    qb, pb = TextsBuilder(f"{source}-queries"), TextsBuilder(f"{source}-positives")
    kept: list[int] = []
    if source == "ict":
        us = rng.random(len(rows))
    else:
        ratios = rng.uniform(min_ratio, max_ratio, size=(len(rows), 2))
        starts = rng.random((len(rows), 2))
    corpus = collection.corpus
    for k, row in enumerate(rows.tolist()):
        text = corpus[row]
        pair = (
            ict_pair(text, float(us[k]))
            if source == "ict"
            else crop_pair(text, ratios[k], starts[k])
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


def _human(collection: Collection, split: str) -> TrainingPairs:
    qrels = collection.qrels(split)
    qids: list[str] = []
    docids: list[str] = []
    for qid, docs in qrels.items():
        for docid, rel in docs.items():
            if rel > 0:
                qids.append(qid)
                docids.append(docid)
    if not qids:
        raise ValueError(f"split {split!r} has no judgement with relevance > 0")
    qrows = collection.queries.indices(qids)
    drows = collection.corpus.indices(docids)
    return TrainingPairs(
        "human", collection.queries, qrows, collection.corpus, drows, drows.copy(), drows.copy()
    )


def _doc2query(
    collection: Collection,
    rows: np.ndarray,
    model_path: str,
    seed: int,
    per_passage: int,
    batch_size: int,
    max_input_length: int,
    max_new_tokens: int,
    device: str,
    generate_kwargs: Mapping[str, Any],
) -> TrainingPairs:
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    model = (
        AutoModelForSeq2SeqLM.from_pretrained(model_path, local_files_only=True).to(device).eval()
    )
    kwargs = {
        "do_sample": True,
        "top_k": 10,
        "max_new_tokens": max_new_tokens,
        "num_return_sequences": per_passage,
        **generate_kwargs,
    }
    qb = TextsBuilder("doc2query-queries")
    kept: list[int] = []
    corpus = collection.corpus
    with torch.random.fork_rng(devices=[]), torch.inference_mode():
        torch.manual_seed(seed)
        for b in range(0, len(rows), batch_size):
            chunk = rows[b : b + batch_size].tolist()
            enc = tokenizer(
                [corpus[r] for r in chunk],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max_input_length,
            ).to(device)
            enc.pop("token_type_ids", None)
            out = model.generate(**enc, **kwargs)
            texts = tokenizer.batch_decode(out, skip_special_tokens=True)
            for j, q in enumerate(texts):
                q = " ".join(q.split())
                if not q:
                    continue
                row = chunk[j // per_passage]
                qb.add(f"d2q-{corpus.id(row)}-{j % per_passage}".encode(), q.encode("utf-8"))
                kept.append(row)
    idx = np.asarray(kept, np.int64)
    return TrainingPairs(
        "doc2query",
        qb.build(),
        np.arange(len(idx), dtype=np.int64),
        corpus,
        idx,
        idx.copy(),
        idx.copy(),
    )
