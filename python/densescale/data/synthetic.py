"""The embedded default collection: a seeded synthetic BEIR folder with a known generative model.

Generative model (every number below is a field of ``SyntheticConfig``):

Vocabulary. ``vocab_size`` pronounceable pseudo-words (1-3 syllables of consonant + vowel
[+ n/r/s]), ranked so that frequent ranks get short words. Background distribution
``bg(w) ∝ (rank(w) + 1)^(-zipf_exponent)``. Ranks below ``num_stopwords`` are function words.

Topics. ``num_topics`` topics; topic t owns ``topic_size`` distinct non-function words with
weights ``∝ (k + 1)^(-topic_zipf)`` for its k-th word: ``topic_t(w)``.

Passages. Passage p draws ``m_p ~ U{1..max_topics_per_passage}`` topics with mixture weights
``theta_p ~ Dirichlet(topic_concentration)`` and ``rare_per_passage`` rare words uniformly from the
ranks ``>= rare_start`` (its passage-specific terms). Its word distribution is

    P(w | p) = lam_bg * bg(w) + lam_topic * sum_j theta_pj topic_{t_pj}(w) + lam_rare * R_p(w),

``R_p`` uniform over its rare words. Its length is ``U{min_passage_words..max_passage_words}``
words drawn i.i.d. from P(.|p), cut into sentences of ``U{min_sentence_words..max_sentence_words}``
words ending with ".".

Queries. Each split draws distinct positive passages (no passage is the positive of two queries or
two splits). A query of passage p has ``U{min_query_words..max_query_words}`` words, each drawn i.i.d.
from

    Q(w | p) = mu_copy * c_p(w) / n_p + mu_topic * T_p(w) + mu_noise * bg(w),

where ``c_p(w)`` counts w among the passage's *content* tokens (rank >= num_stopwords), ``n_p``
their number (when 0, the copy weight moves to the topic term), and
``T_p(w) = sum_j theta_pj topic_{t_pj}(w)``. One relevant passage per query (qrels score 1).

Oracle. The query length does not depend on p, so the Bayes-optimal score of a candidate is
``s(q, p) = log P(q | p) = sum_{w in q} log Q(w | p)``, and with a uniform prior over which
candidate is the positive, softmax over the candidates' ``s`` is the true posterior. ``oracle.json``
holds the contrastive entropy of this scorer under the SPEC 1.1 protocol (K = 256 negatives drawn
uniformly without replacement from the pool = corpus minus the split's positives, R = 10 draws,
mean over pairs) for the dev and test splits: a floor for any model (it uses the latent
parameters, which a model sees only through the text). Chance is ``ln(K + 1)``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

FORMAT_VERSION = 1
SPLITS = ("train", "dev", "test")
_BITMAP_BYTES = 1 << 26


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the generative model (see the module docstring)."""

    num_passages: int = 100_000
    num_train_queries: int = 60_000
    num_dev: int = 1_000
    num_test: int = 1_000
    seed: int = 0
    vocab_size: int = 10_000
    zipf_exponent: float = 1.05
    num_stopwords: int = 100
    num_topics: int = 400
    topic_size: int = 60
    topic_zipf: float = 0.8
    max_topics_per_passage: int = 3
    topic_concentration: float = 1.0
    rare_per_passage: int = 3
    rare_start: int = 2_000
    lam_bg: float = 0.45
    lam_topic: float = 0.45
    lam_rare: float = 0.10
    min_passage_words: int = 30
    max_passage_words: int = 60
    min_sentence_words: int = 6
    max_sentence_words: int = 14
    min_query_words: int = 4
    max_query_words: int = 10
    mu_copy: float = 0.35
    mu_topic: float = 0.35
    mu_noise: float = 0.30
    num_negatives: int = 256
    repeats: int = 10
    oracle_seed: int = 0

    def validate(self) -> None:
        ints = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.type == "int"}
        for name, v in ints.items():
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {type(v).__name__}")
            if name not in ("seed", "oracle_seed") and v < (
                0 if name in ("num_dev", "num_test") else 1
            ):
                raise ValueError(f"{name} must be positive, got {v}")
        for name in ("lam_bg", "lam_topic", "lam_rare", "mu_copy", "mu_topic", "mu_noise"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for group in (("lam_bg", "lam_topic", "lam_rare"), ("mu_copy", "mu_topic", "mu_noise")):
            total = sum(getattr(self, n) for n in group)
            if not math.isclose(total, 1.0, rel_tol=1e-9, abs_tol=1e-9):
                raise ValueError(f"{' + '.join(group)} must sum to 1, got {total}")
        if self.mu_noise <= 0:
            raise ValueError(
                f"mu_noise must be > 0 so every query has non-zero likelihood, got {self.mu_noise}"
            )
        need = self.num_train_queries + self.num_dev + self.num_test
        if need > self.num_passages:
            raise ValueError(
                f"num_train_queries + num_dev + num_test ({need}) must be <= num_passages "
                f"({self.num_passages}): each query has its own positive passage"
            )
        if not self.num_stopwords < self.vocab_size:
            raise ValueError(
                f"num_stopwords must be < vocab_size ({self.vocab_size}), got {self.num_stopwords}"
            )
        if self.topic_size > self.vocab_size - self.num_stopwords:
            raise ValueError(
                f"topic_size must be <= vocab_size - num_stopwords, got {self.topic_size}"
            )
        if not self.num_stopwords <= self.rare_start < self.vocab_size:
            raise ValueError(
                f"rare_start must be in [num_stopwords, vocab_size), got {self.rare_start}"
            )
        for lo, hi in (
            ("min_passage_words", "max_passage_words"),
            ("min_sentence_words", "max_sentence_words"),
            ("min_query_words", "max_query_words"),
        ):
            if getattr(self, lo) > getattr(self, hi):
                raise ValueError(
                    f"{lo} must be <= {hi}, got {getattr(self, lo)} > {getattr(self, hi)}"
                )
        for name in ("zipf_exponent", "topic_zipf", "topic_concentration"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


_ONSETS = list("bdfgklmnprstvz")
_VOWELS = list("aeiou")
_CODAS = ["", "n", "r", "s"]


def make_vocabulary(size: int, rng: np.random.Generator) -> list[str]:
    """``size`` distinct pseudo-words, shortest first (rank 0 = most frequent)."""
    syllables = [o + v + c for o in _ONSETS for v in _VOWELS for c in _CODAS]
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < size:
        n = size * 2
        nsyl = rng.choice([1, 2, 3], size=n, p=[0.1, 0.5, 0.4])
        parts = rng.integers(0, len(syllables), size=(n, 3))
        for k in range(n):
            w = "".join(syllables[j] for j in parts[k, : nsyl[k]])
            if w not in seen:
                seen.add(w)
                words.append(w)
                if len(words) == size:
                    break
    order = np.lexsort((rng.random(size), np.array([len(w) for w in words])))
    return [words[i] for i in order]


def _sample_cdf(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


@dataclass
class SyntheticData:
    """A generated collection in memory: latent parameters, token ids and the oracle scorer."""

    config: SyntheticConfig
    vocab: list[str]
    bg: np.ndarray  # (V,) background probabilities
    topic_words: np.ndarray  # (T, topic_size) word ids
    topic_probs: np.ndarray  # (T, V) dense topic distributions
    passage_topics: np.ndarray  # (P, m) topic ids
    passage_theta: np.ndarray  # (P, m) mixture weights (0 for unused slots)
    passage_rare: np.ndarray  # (P, r) rare word ids
    passage_tokens: np.ndarray  # (P, Lmax) int32, -1 padded
    passage_lengths: np.ndarray  # (P,)
    content_csr: sp.csr_matrix  # (P, V) counts of each word among a passage's content tokens
    content_csc: sp.csc_matrix  # the same as CSC: the postings (passages) of each word
    content_totals: np.ndarray  # (P,) number of content tokens
    positives: dict[str, np.ndarray]  # split -> (n,) passage row of each query
    query_tokens: dict[str, np.ndarray]  # split -> (n, Qmax) int32, -1 padded

    def passage_text(self, p: int) -> str:
        words = [self.vocab[t] for t in self.passage_tokens[p, : self.passage_lengths[p]].tolist()]
        return " ".join(words)

    def query_log_likelihood(
        self, split: str, query_rows: np.ndarray, passage_rows: np.ndarray
    ) -> np.ndarray:
        """``log P(q | p) = sum_{w in q} log Q(w | p)`` for pairs (query_rows[i] of ``split``,
        passage_rows[i]), float64 (M,).

        Computed sparsely: ``Q(w|p) = mu_noise * bg(w)`` unless p copies w or one of p's topics
        holds w, so ``log P(q|p) = sum_w log(mu_noise bg(w)) + sum over the few (w, p) with a copy
        or topic term of log(Q(w|p) / (mu_noise bg(w)))``. Pairs with neither are found without
        per-word work: topic hits through a per-query topic bitmap, copy hits through the
        postings of the query's content words.
        """
        c = self.config
        query_rows = np.asarray(query_rows, np.int64)
        pr = np.asarray(passage_rows, np.int64)
        if query_rows.shape != pr.shape or query_rows.ndim != 1:
            raise ValueError(
                f"query_rows and passage_rows must be 1-d of one length, got {query_rows.shape} "
                f"and {pr.shape}"
            )
        P, T = c.num_passages, self.topic_probs.shape[0]
        uq, inv = np.unique(query_rows, return_inverse=True)
        max_u = max(1, _BITMAP_BYTES // P)  # bounds the (distinct query, passage) bitmap
        if len(uq) > max_u:
            out = np.empty(len(pr), dtype=np.float64)
            group = inv // max_u
            for g in range(int(group.max()) + 1):
                sel = np.flatnonzero(group == g)
                out[sel] = self.query_log_likelihood(split, query_rows[sel], pr[sel])
            return out
        uqt = self.query_tokens[split][uq]  # (nu, Qmax)
        uvalid = uqt >= 0
        uw = np.where(uvalid, uqt, 0).astype(np.int64)
        log_noise = np.where(uvalid, np.log(c.mu_noise * self.bg[uw]), 0.0)  # (nu, Qmax)
        out = log_noise.sum(axis=1)[inv]
        # topic table of each distinct query: qtab[u * T + t] = topic_t(w) for its words
        qtab = np.ascontiguousarray(self.topic_probs[:, uw].transpose(1, 0, 2))  # (nu, T, Qmax)
        qtab[~np.broadcast_to(uvalid[:, None, :], qtab.shape)] = 0.0
        qhit = (qtab > 0).any(axis=2).ravel()  # (nu * T,)
        qtab = qtab.reshape(len(uq) * T, -1)
        slots = self.passage_topics.shape[1]
        keys = [inv * T + self.passage_topics[pr, j] for j in range(slots)]
        hit = np.zeros(len(pr), dtype=bool)
        for j in range(slots):
            hit |= qhit[keys[j]] & (self.passage_theta[pr, j] > 0)
        # copy hits: a (distinct query, passage) bitmap of the postings of each query's content words
        csc = self.content_csc
        lo, hi = csc.indptr[uw], csc.indptr[uw + 1]
        lengths = np.where(uvalid, hi - lo, 0).ravel()
        owner = np.repeat(np.repeat(np.arange(len(uq), dtype=np.int64), uw.shape[1]), lengths)
        starts = np.repeat(lo.ravel(), lengths)
        within = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(
            np.cumsum(lengths) - lengths, lengths
        )
        holds = np.zeros(len(uq) * P, dtype=bool)
        holds[owner * P + csc.indices[starts + within]] = True
        hit |= holds[inv * P + pr]
        rows = np.flatnonzero(hit)
        if len(rows) == 0:
            return out
        # exact terms for the hit pairs only
        prs, invs = pr[rows], inv[rows]
        w, valid = uw[invs], uvalid[invs]
        topic = np.zeros(w.shape, dtype=np.float64)
        for j in range(slots):
            topic += self.passage_theta[prs, j, None] * np.take(qtab, keys[j][rows], axis=0)
        counts = np.asarray(
            self.content_csr[np.repeat(prs, w.shape[1]), w.ravel()], dtype=np.float64
        ).reshape(w.shape)
        totals = self.content_totals[prs, None]
        has = totals > 0
        copy = np.where(has, counts / np.maximum(totals, 1), 0.0)
        mu_topic = np.where(has, c.mu_topic, c.mu_topic + c.mu_copy)
        noise = c.mu_noise * self.bg[w]
        extra = c.mu_copy * copy + mu_topic * topic
        out[rows] += np.where(valid & (extra > 0), np.log1p(extra / noise), 0.0).sum(axis=1)
        return out

    def pool(self, split: str) -> np.ndarray:
        """Negative pool of ``split``: every passage that is not one of its positives."""
        keep = np.ones(self.config.num_passages, dtype=bool)
        keep[self.positives[split]] = False
        return np.flatnonzero(keep)

    def contrastive_entropy(
        self,
        split: str,
        score_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
        *,
        num_negatives: int | None = None,
        repeats: int | None = None,
        seed: int | None = None,
    ) -> tuple[float, np.ndarray]:
        """SPEC 1.1 contrastive entropy of ``score_fn(query_rows, passage_rows) -> scores`` on
        ``split`` (default: the oracle ``query_log_likelihood``). Returns (mean, per-pair (n,))."""
        c = self.config
        fn = score_fn or (lambda q, p: self.query_log_likelihood(split, q, p))
        return protocol_contrastive_entropy(
            fn,
            self.positives[split],
            self.pool(split),
            num_negatives=c.num_negatives if num_negatives is None else num_negatives,
            repeats=c.repeats if repeats is None else repeats,
            seed=c.oracle_seed if seed is None else seed,
        )


def sample_without_replacement(
    rng: np.random.Generator, pool_size: int, rows: int, k: int
) -> np.ndarray:
    """(rows, k) int64; each row k distinct values uniform in [0, pool_size). Draws with
    replacement then redraws duplicates until none are left: the procedure is symmetric in the
    labels, so each row is a uniformly random k-subset (in random order)."""
    if k > pool_size:
        raise ValueError(f"num_negatives ({k}) must be <= the pool size ({pool_size})")
    idx = rng.integers(0, pool_size, size=(rows, k))
    while True:
        order = np.argsort(idx, axis=1, kind="stable")
        s = np.take_along_axis(idx, order, axis=1)
        dup_sorted = np.zeros_like(s, dtype=bool)
        dup_sorted[:, 1:] = s[:, 1:] == s[:, :-1]
        if not dup_sorted.any():
            return idx
        r, cpos = np.nonzero(dup_sorted)
        cols = order[r, cpos]
        idx[r, cols] = rng.integers(0, pool_size, size=len(r))


def protocol_contrastive_entropy(
    score_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    positive_rows: np.ndarray,
    pool_rows: np.ndarray,
    *,
    num_negatives: int = 256,
    repeats: int = 10,
    seed: int = 0,
    chunk_pairs: int = 256,
) -> tuple[float, np.ndarray]:
    """Contrastive entropy (SPEC 1.1) of an arbitrary scorer.

    For pair i (query row i, positive ``positive_rows[i]``) and each of ``repeats`` draws of
    ``num_negatives`` distinct passages from ``pool_rows``:
    ``CE = logsumexp(s(q, p+), s(q, n_1..n_K)) - s(q, p+)``; averaged over draws (per pair) and
    then over pairs. ``score_fn(query_rows (M,), passage_rows (M,)) -> (M,)`` scores.
    """
    positive_rows = np.asarray(positive_rows, np.int64)
    pool_rows = np.asarray(pool_rows, np.int64)
    n = len(positive_rows)
    if n == 0:
        raise ValueError("positive_rows must not be empty")
    rng = np.random.default_rng(seed)
    per_pair = np.empty(n, dtype=np.float64)
    K, R = num_negatives, repeats
    for a in range(0, n, chunk_pairs):
        b = min(n, a + chunk_pairs)
        m = b - a
        q = np.arange(a, b, dtype=np.int64)
        s_pos = np.asarray(score_fn(q, positive_rows[a:b]), np.float64)
        neg = pool_rows[sample_without_replacement(rng, len(pool_rows), m * R, K)]  # (m*R, K)
        s_neg = np.asarray(score_fn(np.repeat(q, R * K), neg.ravel()), np.float64).reshape(m, R, K)
        allscores = np.concatenate(
            [np.broadcast_to(s_pos[:, None, None], (m, R, 1)), s_neg], axis=2
        )
        top = allscores.max(axis=2, keepdims=True)
        lse = np.log(np.exp(allscores - top).sum(axis=2)) + top[..., 0]
        per_pair[a:b] = (lse - s_pos[:, None]).mean(axis=1)
    return float(per_pair.mean()), per_pair


def generate_synthetic(config: SyntheticConfig | None = None, **overrides) -> SyntheticData:
    """Sample a collection from the generative model (vectorised numpy, seeded by ``config.seed``)."""
    config = dataclasses.replace(config or SyntheticConfig(), **overrides)
    config.validate()
    c = config
    rng = np.random.default_rng(c.seed)
    V, P, T = c.vocab_size, c.num_passages, c.num_topics
    vocab = make_vocabulary(V, rng)
    bg = (np.arange(V) + 1.0) ** -c.zipf_exponent
    bg /= bg.sum()
    bg_cdf = np.cumsum(bg)

    # topics: distinct non-function words with Zipf weights by position
    topic_words = (
        np.argsort(rng.random((T, V - c.num_stopwords)), axis=1)[:, : c.topic_size]
        + c.num_stopwords
    )
    tw = (np.arange(c.topic_size) + 1.0) ** -c.topic_zipf
    tw /= tw.sum()
    tw_cdf = np.cumsum(tw)
    topic_probs = np.zeros((T, V))
    np.put_along_axis(topic_probs, topic_words, np.broadcast_to(tw, topic_words.shape), axis=1)

    # passages: topic mixtures and rare words
    M = c.max_topics_per_passage
    m_p = rng.integers(1, M + 1, size=P)
    passage_topics = rng.integers(0, T, size=(P, M))
    theta = rng.gamma(c.topic_concentration, size=(P, M)) * (np.arange(M) < m_p[:, None])
    theta /= theta.sum(axis=1, keepdims=True)
    theta_cdf = np.cumsum(theta, axis=1)
    passage_rare = rng.integers(c.rare_start, V, size=(P, c.rare_per_passage))

    def sample_topic_words(rows: np.ndarray) -> np.ndarray:
        slot = (theta_cdf[rows] <= rng.random(len(rows))[:, None]).sum(axis=1)
        slot = np.minimum(slot, M - 1)
        k = _sample_cdf(tw_cdf, rng.random(len(rows)))
        return topic_words[passage_topics[rows, slot], k]

    lengths = rng.integers(c.min_passage_words, c.max_passage_words + 1, size=P)
    tok_p = np.repeat(np.arange(P), lengths)
    comp = _sample_cdf(np.cumsum([c.lam_bg, c.lam_topic, c.lam_rare]), rng.random(len(tok_p)))
    tokens = np.empty(len(tok_p), dtype=np.int64)
    sel = comp == 0
    tokens[sel] = _sample_cdf(bg_cdf, rng.random(int(sel.sum())))
    sel = comp == 1
    tokens[sel] = sample_topic_words(tok_p[sel])
    sel = comp == 2
    tokens[sel] = passage_rare[tok_p[sel], rng.integers(0, c.rare_per_passage, size=int(sel.sum()))]
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    Lmax = int(lengths.max())
    passage_tokens = np.full((P, Lmax), -1, dtype=np.int32)
    col = np.arange(len(tok_p)) - starts[tok_p]
    passage_tokens[tok_p, col] = tokens

    # content-token counts per passage, as sorted keys p * V + w for vectorised lookups
    content = tokens >= c.num_stopwords
    keys, counts = np.unique(tok_p[content] * V + tokens[content], return_counts=True)
    content_csr = sp.csr_matrix((counts.astype(np.float64), (keys // V, keys % V)), shape=(P, V))
    content_csc = content_csr.tocsc()
    totals = np.bincount(tok_p[content], minlength=P)

    # queries: distinct positives per split
    need = c.num_train_queries + c.num_dev + c.num_test
    perm = rng.permutation(P)[:need]
    positives = {
        "test": np.sort(perm[: c.num_test]),
        "dev": np.sort(perm[c.num_test : c.num_test + c.num_dev]),
        "train": np.sort(perm[c.num_test + c.num_dev :]),
    }
    # content tokens of each passage, first in each row, to copy from
    content_first = np.argsort(~(passage_tokens >= c.num_stopwords), axis=1, kind="stable")
    query_tokens: dict[str, np.ndarray] = {}
    for split in SPLITS:
        pos = positives[split]
        n = len(pos)
        qlen = rng.integers(c.min_query_words, c.max_query_words + 1, size=n)
        qtok_q = np.repeat(np.arange(n), qlen)
        qp = pos[qtok_q]
        qcomp = _sample_cdf(np.cumsum([c.mu_copy, c.mu_topic, c.mu_noise]), rng.random(len(qtok_q)))
        qcomp[(qcomp == 0) & (totals[qp] == 0)] = (
            1  # nothing to copy: the topic term takes its weight
        )
        qtok = np.empty(len(qtok_q), dtype=np.int64)
        sel = qcomp == 0
        pick = (rng.random(int(sel.sum())) * totals[qp[sel]]).astype(np.int64)
        qtok[sel] = passage_tokens[qp[sel], content_first[qp[sel], pick]]
        sel = qcomp == 1
        qtok[sel] = sample_topic_words(qp[sel])
        sel = qcomp == 2
        qtok[sel] = _sample_cdf(bg_cdf, rng.random(int(sel.sum())))
        qstarts = np.concatenate(([0], np.cumsum(qlen)[:-1]))
        qt = np.full((n, c.max_query_words), -1, dtype=np.int32)
        qt[qtok_q, np.arange(len(qtok_q)) - qstarts[qtok_q]] = qtok
        query_tokens[split] = qt

    return SyntheticData(
        config=c,
        vocab=vocab,
        bg=bg,
        topic_words=topic_words,
        topic_probs=topic_probs,
        passage_topics=passage_topics,
        passage_theta=theta,
        passage_rare=passage_rare,
        passage_tokens=passage_tokens,
        passage_lengths=lengths,
        content_csr=content_csr,
        content_csc=content_csc,
        content_totals=totals,
        positives=positives,
        query_tokens=query_tokens,
    )


def _render_passages(data: SyntheticData, rng: np.random.Generator) -> list[str]:
    c = data.config
    vocab = data.vocab
    total = int(data.passage_lengths.sum())
    cuts = rng.integers(c.min_sentence_words, c.max_sentence_words + 1, size=total).tolist()
    texts = []
    ci = 0
    for p, tokens in enumerate(data.passage_tokens.tolist()):
        words = [vocab[t] for t in tokens[: data.passage_lengths[p]]]
        i = 0
        out = []
        while i < len(words):
            L = cuts[ci]
            ci += 1
            out.append(" ".join(words[i : i + L]) + ".")
            i += L
        texts.append(" ".join(out))
    return texts


def _write_folder(data: SyntheticData, folder: Path) -> None:
    c = data.config
    rng = np.random.default_rng([c.seed, 1])
    texts = _render_passages(data, rng)
    width = len(str(c.num_passages - 1))
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as f:
        f.writelines(
            json.dumps({"_id": f"p{i:0{width}d}", "title": "", "text": t}) + "\n"
            for i, t in enumerate(texts)
        )
    (folder / "qrels").mkdir()
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as fq:
        for split in SPLITS:
            lines = ["query-id\tcorpus-id\tscore\n"]
            for k, (row, p) in enumerate(
                zip(data.query_tokens[split].tolist(), data.positives[split].tolist())
            ):
                qid = f"{split}-q{k}"
                text = " ".join(data.vocab[t] for t in row if t >= 0)
                fq.write(
                    json.dumps({"_id": qid, "text": text, "metadata": {"split": split}}) + "\n"
                )
                lines.append(f"{qid}\tp{p:0{width}d}\t1\n")
            (folder / "qrels" / f"{split}.tsv").write_text("".join(lines), encoding="utf-8")
    oracle = {
        "format_version": FORMAT_VERSION,
        "config": dataclasses.asdict(c),
        "chance": math.log(c.num_negatives + 1),
        "splits": {},
    }
    for split in ("dev", "test"):
        if len(data.positives[split]) == 0:
            continue
        mean, per_pair = data.contrastive_entropy(split)
        oracle["splits"][split] = {
            "oracle_ce": mean,
            "oracle_ce_sem": float(per_pair.std(ddof=1) / math.sqrt(len(per_pair)))
            if len(per_pair) > 1
            else 0.0,
            "num_pairs": len(per_pair),
            "pool_size": len(data.pool(split)),
            "num_negatives": c.num_negatives,
            "repeats": c.repeats,
            "seed": c.oracle_seed,
        }
    (folder / "oracle.json").write_text(json.dumps(oracle, indent=2) + "\n", encoding="utf-8")


def _matches(folder: Path, config: SyntheticConfig) -> bool:
    try:
        meta = json.loads((folder / "oracle.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return meta.get("format_version") == FORMAT_VERSION and meta.get(
        "config"
    ) == dataclasses.asdict(config)


def synthetic(
    out_dir: str | os.PathLike,
    *,
    num_passages: int = 100_000,
    num_train_queries: int = 60_000,
    num_dev: int = 1_000,
    num_test: int = 1_000,
    seed: int = 0,
    **params,
) -> Path:
    """Write the synthetic BEIR folder ``out_dir`` (corpus.jsonl, queries.jsonl,
    qrels/{train,dev,test}.tsv, oracle.json) and return its path.

    ``params`` are further ``SyntheticConfig`` fields. Idempotent: a finished folder made with the
    same parameters is reused as is; one made with other parameters raises ``ValueError``. The
    folder is built in a temp folder beside it and renamed into place, so it is never half-written.
    """
    names = {f.name for f in dataclasses.fields(SyntheticConfig)}
    unknown = sorted(set(params) - names)
    if unknown:
        raise TypeError(
            f"unknown synthetic parameter(s) {unknown}; expected some of {sorted(names)}"
        )
    config = SyntheticConfig(
        num_passages=num_passages,
        num_train_queries=num_train_queries,
        num_dev=num_dev,
        num_test=num_test,
        seed=seed,
        **params,
    )
    config.validate()
    out = Path(out_dir)
    if out.exists():
        if _matches(out, config):
            return out
        if (out / "oracle.json").exists():
            raise ValueError(
                f"out_dir {out} holds a synthetic collection made with other parameters"
            )
        if out.is_file() or any(out.iterdir()):
            raise ValueError(f"out_dir {out} exists and is not a synthetic collection")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; the collection is ordinary data
    try:
        _write_folder(generate_synthetic(config), tmp)
        try:
            if out.exists():  # an empty folder: replace it
                out.rmdir()
            os.rename(tmp, out)
        except OSError:
            # another process finished first; reuse its folder when it matches
            if _matches(out, config):
                shutil.rmtree(tmp, ignore_errors=True)
                return out
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_synthetic(out_dir: str | os.PathLike, **kwargs):
    """``load_beir(synthetic(out_dir, **kwargs))``."""
    from .collection import load_beir

    return load_beir(synthetic(out_dir, **kwargs))


def read_oracle(path: str | os.PathLike) -> dict:
    """The ``oracle.json`` of a synthetic folder (``["splits"][split]["oracle_ce"]``, ``["chance"]``)."""
    f = Path(path) / "oracle.json"
    if not f.is_file():
        raise FileNotFoundError(f"{f} does not exist; is {path} a synthetic collection?")
    return json.loads(f.read_text(encoding="utf-8"))
