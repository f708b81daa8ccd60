"""Random-ranking metrics (densescale.eval.chance) against random runs scored by ranking_metrics."""

from __future__ import annotations

import numpy as np
import pytest

from densescale import ranking_metrics
from densescale.eval.chance import random_ranking_metrics

METRICS = ("mrr@5", "ndcg@5", "recall@3", "map", "map@4", "precision@5", "mrr")


@pytest.mark.parametrize("depth", [None, 7])
def test_expectations_match_random_runs(depth):
    rng = np.random.default_rng(0)
    n, queries, draws = 12, 6, 600
    # graded qrels with 1-4 judged passages, grade 0 included (judged, not relevant)
    qrels = {
        f"q{i}": {
            f"d{j}": int(g) for j, g in zip(rng.choice(n, m, replace=False), rng.integers(0, 3, m))
        }
        for i, m in enumerate(rng.integers(2, 7, queries))
    }
    qrels["q0"]["d11"] = 2  # at least one relevant passage everywhere it matters
    big_qrels, run = {}, {}
    for t in range(draws):
        for qid, docs in qrels.items():
            key = f"{qid}-{t}"
            big_qrels[key] = docs
            order = rng.permutation(n)[: depth or n]
            run[key] = {f"d{j}": float(len(order) - r) for r, j in enumerate(order)}
    observed, per_query = ranking_metrics(big_qrels, run, METRICS, per_query=True)
    expected = random_ranking_metrics(qrels, n, METRICS, depth=depth)
    for name in METRICS:
        values = np.array([per_query[k][name] for k in big_qrels])
        se = values.std() / np.sqrt(len(values))
        assert abs(observed[name] - expected[name]) <= 4 * se + 1e-9, (name, observed, expected)


def test_closed_forms_on_one_relevant_passage():
    # one relevant among n: MRR@k = H_k / n, recall@k = k / n, AP = H_n / n
    n = 1000
    out = random_ranking_metrics({"q": {"d": 1}}, n, ("mrr@10", "recall@100", "map"))
    assert out["mrr@10"] == pytest.approx(sum(1 / r for r in range(1, 11)) / n)
    assert out["recall@100"] == pytest.approx(0.1)
    assert out["map"] == pytest.approx(sum(1 / r for r in range(1, n + 1)) / n)


def test_relevance_level_and_unjudged_queries():
    qrels = {"a": {"x": 1, "y": 2}, "b": {"z": 0}}
    strict = random_ranking_metrics(qrels, 10, ("recall@5",), relevance_level=2)
    assert strict["recall@5"] == pytest.approx(0.5 * 0.5)  # b has nothing relevant: scores 0


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="corpus_size"):
        random_ranking_metrics({"q": {"d": 1}}, 0)
    with pytest.raises(ValueError, match="qrels"):
        random_ranking_metrics({}, 10)
    with pytest.raises(ValueError, match="metrics"):
        random_ranking_metrics({"q": {"d": 1}}, 10, ("Judged@10",))
    with pytest.raises(ValueError, match=r"qrels\['q'\]"):
        random_ranking_metrics({"q": {"a": 1, "b": 1}}, 1)


def test_above_chance_needs_z_standard_errors():
    from densescale.eval import above_chance

    metrics = {"mrr@10": 0.05, "ndcg@10": 0.2, "map": 0.3}
    stderr = {"mrr@10": 0.02, "ndcg@10": 0.01, "map": None}
    chance = {"mrr@10": 0.01, "ndcg@10": 0.02}
    # mrr: 0.04 above chance is 2 standard errors, not 3; ndcg: 18; map has no standard error
    assert above_chance(metrics, stderr, chance) == {"mrr@10": False, "ndcg@10": True}
    assert above_chance(metrics, stderr, chance, z=1.5)["mrr@10"] is True
