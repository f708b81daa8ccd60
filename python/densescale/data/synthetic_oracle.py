"""The synthetic collection once generated (:mod:`densescale.data.synthetic`): its latent
parameters in memory with the Bayes-optimal scorer ``log P(q | p)``, the contrastive entropy of
any scorer under the SPEC 1.1 protocol, and the BEIR folder it is written as (corpus, queries,
qrels, ``oracle.json``; with ``query_quality < 1`` also ``train_query_source.tsv``, the passage
each training query was really drawn from)."""

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
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from .synthetic import SyntheticConfig

FORMAT_VERSION = 1
SPLITS = ("train", "dev", "test")
_BITMAP_BYTES = 1 << 26


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
    # split -> (n,) passage row each query was drawn from (its positive unless query_quality < 1)
    query_sources: dict[str, np.ndarray]

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
    if c.query_quality < 1.0:
        _write_query_sources(data, folder / "train_query_source.tsv", width)
    oracle = {
        "format_version": FORMAT_VERSION,
        "config": _config_json(c),
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
    if c.query_quality < 1.0:
        right = data.query_sources["train"] == data.positives["train"]
        oracle["query_quality"] = {
            "q": c.query_quality,
            "train_pairs": len(right),
            "right_pairs": int(right.sum()),
            "right_share": float(right.mean()) if len(right) else float("nan"),
            "sources": "train_query_source.tsv",
        }
    (folder / "oracle.json").write_text(json.dumps(oracle, indent=2) + "\n", encoding="utf-8")


def _config_json(c: SyntheticConfig) -> dict:
    """The config as ``oracle.json`` records it; ``query_quality`` only when below 1, so that a
    folder written before the knob existed still matches its parameters."""
    out = dataclasses.asdict(c)
    if out["query_quality"] == 1.0:
        del out["query_quality"]
    return out


def _write_query_sources(data: SyntheticData, path: Path, width: int) -> None:
    """``query-id <TAB> corpus-id`` of the passage each training query's words came from."""
    lines = ["query-id\tcorpus-id\n"] + [
        f"train-q{k}\tp{p:0{width}d}\n" for k, p in enumerate(data.query_sources["train"].tolist())
    ]
    path.write_text("".join(lines), encoding="utf-8")


def _matches(folder: Path, config: SyntheticConfig) -> bool:
    try:
        meta = json.loads((folder / "oracle.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return meta.get("format_version") == FORMAT_VERSION and meta.get("config") == _config_json(
        config
    )


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
    from .synthetic import SyntheticConfig, generate_synthetic

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
