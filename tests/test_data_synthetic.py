"""The synthetic collection: determinism, idempotence, consistency of files and model, oracle CE."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from densescale.data import (
    SyntheticConfig,
    SyntheticData,
    generate_synthetic,
    load_beir,
    protocol_contrastive_entropy,
    read_oracle,
    synthetic,
)
from densescale.data.synthetic import sample_without_replacement

SMALL = {
    "num_passages": 3000,
    "num_train_queries": 1000,
    "num_dev": 100,
    "num_test": 200,
    "vocab_size": 2000,
    "num_topics": 50,
    "rare_start": 500,
    "repeats": 3,
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return synthetic(tmp_path_factory.mktemp("syn") / "small", **SMALL)


def _files(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def test_defaults_are_large_enough():
    c = SyntheticConfig()
    assert c.num_passages >= 100_000 and c.num_train_queries >= 50_000
    assert c.num_negatives == 256 and c.repeats == 10
    assert (
        5_000 <= c.vocab_size <= 20_000 and 30 <= c.min_passage_words and c.max_passage_words <= 60
    )
    assert 4 <= c.min_query_words and c.max_query_words <= 10


def test_deterministic_and_seeded(folder: Path, tmp_path: Path):
    twin = synthetic(tmp_path / "twin", **SMALL)
    assert _files(twin) == _files(folder)
    other = synthetic(tmp_path / "other", **{**SMALL, "seed": 1})
    assert (other / "corpus.jsonl").read_bytes() != (folder / "corpus.jsonl").read_bytes()


def test_idempotent_and_atomic(folder: Path, tmp_path: Path):
    stamp = (folder / "corpus.jsonl").stat().st_mtime_ns
    assert synthetic(folder, **SMALL) == folder
    assert (folder / "corpus.jsonl").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="other parameters"):
        synthetic(folder, **{**SMALL, "seed": 5})
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="not a synthetic collection"):
        synthetic(junk, **SMALL)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (synthetic(empty, **SMALL) / "oracle.json").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no temp folders left
    with pytest.raises(TypeError, match="unknown synthetic parameter"):
        synthetic(tmp_path / "x", num_pasages=10)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_train_queries": 3000}, "must be <= num_passages"),
        ({"lam_bg": 0.9}, "must sum to 1"),
        ({"mu_copy": 0.7, "mu_topic": 0.3, "mu_noise": 0.0}, "mu_noise must be > 0"),
        ({"min_query_words": 11}, "min_query_words must be <= max_query_words"),
        ({"rare_start": 5000}, "rare_start"),
        ({"num_passages": 0}, "num_passages must be positive"),
    ],
)
def test_bad_parameters(tmp_path: Path, overrides: dict, message: str):
    with pytest.raises(ValueError, match=message):
        synthetic(tmp_path / "bad", **{**SMALL, **overrides})
    assert not (tmp_path / "bad").exists()


def test_beir_layout_and_statistics(folder: Path):
    c = load_beir(folder)
    cfg = SyntheticConfig(**SMALL)
    assert len(c.corpus) == cfg.num_passages
    assert len(c.queries) == cfg.num_train_queries + cfg.num_dev + cfg.num_test
    assert c.splits == ("train", "dev", "test")
    positives = {}
    for split, n in (
        ("train", cfg.num_train_queries),
        ("dev", cfg.num_dev),
        ("test", cfg.num_test),
    ):
        qrels = c.qrels(split)
        assert len(qrels) == n and all(list(d.values()) == [1] for d in qrels.values())
        positives[split] = {d for docs in qrels.values() for d in docs}
        assert len(positives[split]) == n
    assert not (positives["train"] & positives["test"]) and not (
        positives["dev"] & positives["test"]
    )
    qlens = np.array([len(q.split()) for q in c.queries])
    assert qlens.min() >= cfg.min_query_words and qlens.max() <= cfg.max_query_words
    plens = np.array([len(p.split()) for p in c.corpus])
    assert plens.min() >= cfg.min_passage_words and plens.max() <= cfg.max_passage_words
    assert all(p.endswith(".") for p in c.corpus.batch(0, 50))


def test_oracle_matches_a_recomputation_from_the_files(folder: Path):
    """log P(q | p) recomputed from the written texts (copy counts from the passage text) and the
    model's latent parameters equals the oracle scorer's value."""
    data = generate_synthetic(SyntheticConfig(**SMALL))
    c = load_beir(folder)
    cfg = data.config
    word_id = {w: i for i, w in enumerate(data.vocab)}
    qrels = c.qrels("test")
    rng = np.random.default_rng(0)
    qids = sorted(qrels)[:5]
    for qid in qids:
        k = int(qid.split("-q")[1])
        q_words = [word_id[w] for w in c.queries[c.queries.index(qid)].split()]
        for p in [c.corpus.index(next(iter(qrels[qid])))] + rng.integers(
            0, cfg.num_passages, 3
        ).tolist():
            tokens = [word_id[w.rstrip(".")] for w in c.corpus[p].split()]
            content = [t for t in tokens if t >= cfg.num_stopwords]
            expected = 0.0
            for w in q_words:
                topic = sum(
                    data.passage_theta[p, j] * data.topic_probs[data.passage_topics[p, j], w]
                    for j in range(data.passage_topics.shape[1])
                )
                if content:
                    prob = cfg.mu_copy * content.count(w) / len(content) + cfg.mu_topic * topic
                else:
                    prob = (cfg.mu_copy + cfg.mu_topic) * topic
                expected += math.log(prob + cfg.mu_noise * data.bg[w])
            got = data.query_log_likelihood("test", np.array([k]), np.array([p]))[0]
            assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_oracle_is_below_chance_and_beats_worse_scorers(folder: Path):
    oracle = read_oracle(folder)
    chance = math.log(257)
    assert oracle["chance"] == pytest.approx(chance)
    data = generate_synthetic(SyntheticConfig(**SMALL))
    for split in ("dev", "test"):
        rec = oracle["splits"][split]
        assert 0 < rec["oracle_ce"] < chance - 1.0
        mean, per_pair = data.contrastive_entropy(split)
        assert mean == pytest.approx(rec["oracle_ce"])  # the file holds what the model computes
        assert rec["num_pairs"] == len(per_pair) and rec["pool_size"] == 3000 - len(per_pair)
    rng = np.random.default_rng(0)
    random_ce, _ = data.contrastive_entropy("test", lambda q, p: rng.standard_normal(len(q)))
    # a scorer that only knows the topics (no copy term) is worse than the oracle, better than chance
    topical = generate_synthetic(SyntheticConfig(**SMALL))
    topical.content_totals = np.zeros_like(topical.content_totals)
    topic_ce, _ = data.contrastive_entropy(
        "test", lambda q, p: topical.query_log_likelihood("test", q, p)
    )
    oracle_ce = oracle["splits"]["test"]["oracle_ce"]
    assert oracle_ce < topic_ce < chance < random_ce
    assert topic_ce - oracle_ce > 0.1


def test_likelihood_is_the_same_in_query_groups(monkeypatch):
    """Many distinct queries are scored in groups (to bound memory); grouping changes nothing."""
    # the scorer's module (densescale.data.synthetic_oracle), reached through sys.modules
    synthetic_module = sys.modules[SyntheticData.__module__]
    data = generate_synthetic(SyntheticConfig(**SMALL))
    rng = np.random.default_rng(0)
    q = rng.integers(0, SMALL["num_train_queries"], 5000)
    p = rng.integers(0, SMALL["num_passages"], 5000)
    whole = data.query_log_likelihood("train", q, p)
    monkeypatch.setattr(synthetic_module, "_BITMAP_BYTES", 7 * SMALL["num_passages"])
    grouped = data.query_log_likelihood("train", q, p)
    np.testing.assert_array_equal(whole, grouped)
    one_by_one = [
        data.query_log_likelihood("train", q[i : i + 1], p[i : i + 1])[0] for i in range(50)
    ]
    np.testing.assert_allclose(whole[:50], one_by_one, rtol=1e-13)


def test_protocol_analytic_cases():
    K = 16
    pos = np.arange(20)
    pool = np.arange(100, 200)
    mean, per = protocol_contrastive_entropy(
        lambda q, p: np.zeros(len(q)), pos, pool, num_negatives=K, repeats=4
    )
    assert mean == pytest.approx(math.log(K + 1)) and np.allclose(per, math.log(K + 1))
    margin = 2.5
    mean, _ = protocol_contrastive_entropy(
        lambda q, p: np.where(p < 100, margin, 0.0), pos, pool, num_negatives=K
    )
    assert mean == pytest.approx(math.log(math.exp(margin) + K) - margin)
    with pytest.raises(ValueError, match="num_negatives"):
        protocol_contrastive_entropy(lambda q, p: np.zeros(len(q)), pos, pool[:5], num_negatives=K)


def test_negatives_are_distinct_and_uniform():
    rng = np.random.default_rng(0)
    draws = sample_without_replacement(rng, 40, 2000, 30)
    assert all(len(set(row)) == 30 for row in draws.tolist())
    counts = np.bincount(draws.ravel(), minlength=40)
    expected = 2000 * 30 / 40
    assert np.abs(counts - expected).max() < 0.1 * expected


def test_oracle_json_records_the_config(folder: Path):
    meta = json.loads((folder / "oracle.json").read_text())
    assert meta["config"]["num_passages"] == 3000 and meta["config"]["repeats"] == 3
