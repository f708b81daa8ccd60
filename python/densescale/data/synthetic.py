"""The embedded default collection: a seeded synthetic BEIR folder with a known generative model.

This module holds the generative model (``SyntheticConfig``, ``generate_synthetic``);
:mod:`densescale.data.synthetic_oracle` holds what is done with a generated collection (the
oracle scorer, the protocol's contrastive entropy, the folder ``synthetic()`` writes), re-exported
here so that one module is the public API.

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

Query quality (the annotation-quality axis with a known truth). With ``query_quality = q < 1``
each *training* query is drawn, as above, from its positive passage with probability q and
otherwise from a uniformly drawn other passage that is no dev or test positive (its topic and its
copied words come from there), while the qrels still name the positive: a share ~q of the
training pairs is right, and which ones is written to ``train_query_source.tsv`` (query id, the
passage its words came from). Dev and test queries stay clean, so the oracle below is unchanged.
The known answer: if a wrong pair teaches nothing, D pairs at quality q are worth qD clean pairs
(an exchange rate of 1/q); a wrong pair that misleads makes it worse. Either way the value of a
pair falls monotonically with q. The draw uses its own seeded stream: q = 1 writes exactly the
collection made without the knob.

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
import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

# the collection once generated: its oracle and its folder (re-exported: one public module)
from .synthetic_oracle import (
    FORMAT_VERSION,
    SPLITS,
    SyntheticData,
    load_synthetic,
    protocol_contrastive_entropy,
    read_oracle,
    sample_without_replacement,
    synthetic,
)

__all__ = [
    "FORMAT_VERSION",
    "SPLITS",
    "SyntheticConfig",
    "SyntheticData",
    "generate_synthetic",
    "load_synthetic",
    "make_vocabulary",
    "protocol_contrastive_entropy",
    "read_oracle",
    "sample_without_replacement",
    "synthetic",
]


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
    query_quality: float = 1.0
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
        if not 0.0 <= self.query_quality <= 1.0:
            raise ValueError(
                f"query_quality must be in [0, 1] (the share of training queries drawn from "
                f"their positive), got {self.query_quality}"
            )
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
    sources = {split: positives[split] for split in SPLITS}
    if c.query_quality < 1.0:
        sources["train"] = _query_sources(c, positives, np.random.default_rng([c.seed, 2]))
    for split in SPLITS:
        pos = positives[split]
        n = len(pos)
        qlen = rng.integers(c.min_query_words, c.max_query_words + 1, size=n)
        qtok_q = np.repeat(np.arange(n), qlen)
        qp = sources[split][qtok_q]  # the passage each query word is drawn from
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
        query_sources=sources,
    )


def _query_sources(c: SyntheticConfig, positives: dict, rng: np.random.Generator) -> np.ndarray:
    """The passage each training query is drawn from: its positive with probability
    ``query_quality``, otherwise a uniform other passage that is no dev or test positive."""
    pos = positives["train"]
    held = np.zeros(c.num_passages, dtype=bool)
    held[positives["dev"]] = held[positives["test"]] = True
    eligible = np.flatnonzero(~held)
    src = pos.copy()
    wrong = np.flatnonzero(rng.random(len(pos)) >= c.query_quality)
    while len(wrong):  # redraw the few that land on their own positive
        src[wrong] = eligible[rng.integers(0, len(eligible), size=len(wrong))]
        wrong = wrong[src[wrong] == pos[wrong]]
    return src
