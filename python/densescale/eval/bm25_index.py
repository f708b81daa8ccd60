"""The BM25 index of a large corpus, built a chunk of texts at a time.

``bm25s.BM25.index`` takes the whole corpus as Python lists of token ids (one list per passage):
for MS MARCO's 8.8M passages that is ~400M Python references on top of a list of 8.8M text
strings, all alive at once. :func:`index_in_chunks` tokenises ``chunk`` texts at a time with the
same ``bm25s`` tokenizer (its vocabulary grows chunk by chunk, giving the ids a whole-corpus call
would), reduces each chunk at once to numpy ``(passage, token, tf)`` triples, and builds the
score matrix from those arrays. Memory is then the triples (12 bytes per distinct (passage,
token)) and the matrix, never a Python object per passage or token.

The scores are the Lucene variant's (the ``bm25_run`` default; Kamphuis et al., "Which BM25 do
you mean?", ECIR 2020), computed in the same order and precisions as ``bm25s`` 0.3 computes them
(idf in float32, the term-frequency component in float64, their product stored in float32)::

    idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))
    score(t, d) = idf(t) * tf / (tf + k1 * ((1 - b) + b * |d| / avgdl))

so a run is the same as ``BM25.index`` of the whole token lists would give.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

CHUNK = 100_000


def _chunk_triples(tokenizer, texts: list[str], first: int):
    """(passage rows, token ids, tf, token counts per passage) of one chunk, as numpy."""
    ids = tokenizer.tokenize(texts, update_vocab=True, return_as="ids", show_progress=False)
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
    del ids
    rows = np.repeat(np.arange(first, first + len(texts), dtype=np.int64), lengths)
    key, tf = np.unique((rows << 32) | flat, return_counts=True)
    return (key >> 32).astype(np.int32), (key & 0xFFFFFFFF).astype(np.int32), tf, lengths


def index_in_chunks(
    model, tokenizer, texts: Sequence[str], *, k1: float, b: float, chunk: int = CHUNK
) -> None:
    """Build ``model``'s (a ``bm25s.BM25`` with ``method="lucene"``) score matrix over ``texts``
    (N strings: a ``Texts`` or any sequence) with ``tokenizer`` (a ``bm25s`` tokenizer, its
    vocabulary empty or grown by earlier calls), ``chunk`` texts at a time, and set its
    ``scores``, ``vocab_dict`` and ``unique_token_ids_set`` as ``model.index`` would for those
    token ids. Raises TypeError naming the row of a text that is not a str."""
    import scipy.sparse as sp

    n = len(texts)
    parts, lengths = [], np.zeros(n, dtype=np.int64)
    for a in range(0, n, chunk):
        batch = texts[a : min(n, a + chunk)]
        for j, t in enumerate(batch):
            if not isinstance(t, str):
                raise TypeError(f"corpus_texts[{a + j}] must be str, got {type(t).__name__}")
        rows, tokens, tf, counts = _chunk_triples(tokenizer, list(batch), a)
        lengths[a : a + len(counts)] = counts
        parts.append((rows, tokens, tf))
    rows = np.concatenate([p[0] for p in parts])
    tokens = np.concatenate([p[1] for p in parts])
    tf = np.concatenate([p[2] for p in parts]).astype(np.float64)
    del parts
    # bm25s numbers the columns by the token ids seen, plus one empty token (id 0 when unused)
    used = int(tokens.max()) + 1 if len(tokens) else 1
    ncols = used + 1 if len(tokens) and (tokens == 0).any() else max(used, 1)
    df = np.bincount(tokens, minlength=ncols)
    idf = np.array([math.log(1 + (n - d + 0.5) / (d + 0.5)) for d in df.tolist()], dtype=np.float32)
    avgdl = lengths.mean()
    norm = k1 * ((1 - b) + (b * lengths) / avgdl)  # per passage, float64
    scores = (idf[tokens].astype(np.float64) * (tf / (tf + norm[rows]))).astype(np.float32)
    del tf
    matrix = sp.csc_matrix((scores, (rows, tokens)), shape=(n, ncols), dtype=np.float32)
    model.scores = {
        "data": matrix.data,
        "indices": matrix.indices,
        "indptr": matrix.indptr,
        "num_docs": n,
    }
    model.nonoccurrence_array = None
    model.vocab_dict = {i: i for i in range(ncols)}
    model.unique_token_ids_set = set(model.vocab_dict.values())
