"""densescale.eval.ranking_metrics against pytrec_eval (trec_eval conventions) and by hand."""

from __future__ import annotations

import math
import random

import pytest

from densescale.eval import rank_run, ranking_metrics

pytrec_eval = pytest.importorskip("pytrec_eval")

# our name -> pytrec_eval measure
PAIRS = {
    "ndcg@10": "ndcg_cut_10",
    "ndcg@5": "ndcg_cut_5",
    "ndcg": "ndcg",
    "recall@100": "recall_100",
    "recall@10": "recall_10",
    "map": "map",
    "map@20": "map_cut_20",
    "precision@5": "P_5",
    "p@10": "P_10",
}


def _random_case(seed: int):
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(120)]
    qrels, run = {}, {}
    for qi in range(40):
        qid = f"q{qi}"
        judged = rng.sample(docs, rng.randint(1, 8))
        # grades 0..3: zero grades are judged non-relevant; some queries have no relevant doc at all
        qrels[qid] = {d: rng.choice([0, 0, 1, 2, 3]) for d in judged}
        if qi % 7 == 3:
            continue  # missing from the run: scores 0
        retrieved = rng.sample(docs, rng.randint(1, 60)) + rng.sample(
            judged, rng.randint(0, len(judged))
        )
        # few distinct score values: many ties, broken the trec_eval way
        run[qid] = {d: float(rng.randint(0, 6)) / 2 for d in retrieved}
    run["extra"] = {"d1": 1.0}  # a run query absent from qrels is ignored
    return qrels, run


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_pytrec_eval_on_random_runs(seed):
    qrels, run = _random_case(seed)
    means, per = ranking_metrics(qrels, run, list(PAIRS), per_query=True)
    ref = pytrec_eval.RelevanceEvaluator(qrels, set(PAIRS.values())).evaluate(run)
    assert set(per) == set(qrels)
    for qid in qrels:
        for ours, theirs in PAIRS.items():
            expected = ref[qid][theirs] if qid in ref else 0.0
            assert per[qid][ours] == pytest.approx(expected, abs=1e-12), (qid, ours)
    for ours, theirs in PAIRS.items():
        expected = sum(ref[q][theirs] if q in ref else 0.0 for q in qrels) / len(qrels)
        assert means[ours] == pytest.approx(expected, abs=1e-12)
    assert any(q not in run for q in qrels)


@pytest.mark.parametrize("seed", [3, 4])
def test_mrr_equals_recip_rank(seed):
    qrels, run = _random_case(seed)
    # runs of at most 10 docs: mrr@10 is trec_eval's recip_rank
    short = {q: dict(sorted(d.items())[:10]) for q, d in run.items()}
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(short)
    _, per = ranking_metrics(qrels, short, ["mrr@10", "mrr"], per_query=True)
    for qid in qrels:
        expected = ref[qid]["recip_rank"] if qid in ref else 0.0
        assert per[qid]["mrr@10"] == pytest.approx(expected, abs=1e-12)
        assert per[qid]["mrr"] == pytest.approx(expected, abs=1e-12)
    # longer runs: mrr (no cut) still equals recip_rank; mrr@10 equals it on the top 10 only
    ref_full = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(run)
    top10 = {q: {d: docs[d] for d in rank_run(docs)[:10]} for q, docs in run.items()}
    ref_top = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    _, per = ranking_metrics(qrels, run, ["mrr@10", "mrr"], per_query=True)
    for qid in ref_full:
        assert per[qid]["mrr"] == pytest.approx(ref_full[qid]["recip_rank"], abs=1e-12)
        assert per[qid]["mrr@10"] == pytest.approx(ref_top[qid]["recip_rank"], abs=1e-12)


def test_by_hand():
    qrels = {"a": {"x": 2, "y": 1, "z": 0}, "b": {"w": 1}, "c": {"v": 1}}
    # ties at 1.0: trec_eval orders by docid descending, so z, y, x; then u
    run = {"a": {"x": 1.0, "y": 1.0, "z": 1.0, "u": 0.5}, "b": {"u": 3.0, "w": 2.0}}
    assert rank_run(run["a"]) == ["z", "y", "x", "u"]
    _, per = ranking_metrics(
        qrels, run, ["mrr@10", "mrr@1", "map", "ndcg@10", "recall@2", "precision@2"], per_query=True
    )
    assert per["a"]["mrr@10"] == pytest.approx(1 / 2)
    assert per["a"]["mrr@1"] == 0.0
    assert per["a"]["map"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    dcg = 1 / math.log2(3) + 2 / math.log2(4)
    idcg = 2 + 1 / math.log2(3)
    assert per["a"]["ndcg@10"] == pytest.approx(dcg / idcg)
    assert per["a"]["recall@2"] == pytest.approx(1 / 2)
    assert per["a"]["precision@2"] == pytest.approx(1 / 2)
    assert per["b"]["mrr@10"] == pytest.approx(1 / 2)
    assert per["c"] == {m: 0.0 for m in per["c"]}
    # a relevant doc at rank 11 counts for mrr but not mrr@10
    long_run = {"b": {f"n{i:02d}": 100.0 - i for i in range(10)} | {"w": 1.0}}
    means = ranking_metrics({"b": {"w": 1}}, long_run, ["mrr@10", "mrr", "recall@10", "recall@11"])
    assert means == pytest.approx(
        {"mrr@10": 0.0, "mrr": 1 / 11, "recall@10": 0.0, "recall@11": 1.0}
    )


def test_default_metrics_and_bad_input():
    qrels = {"a": {"x": 1}}
    assert set(ranking_metrics(qrels, {"a": {"x": 1.0}})) == {
        "mrr@10",
        "ndcg@10",
        "recall@100",
        "map",
    }
    with pytest.raises(ValueError, match="metrics"):
        ranking_metrics(qrels, {}, ["bleu"])
    with pytest.raises(ValueError, match="metrics"):
        ranking_metrics(qrels, {}, ["ndcg@0"])
    with pytest.raises(ValueError, match="metrics"):
        ranking_metrics(qrels, {}, ["precision"])
    with pytest.raises(ValueError, match="qrels"):
        ranking_metrics({}, {"a": {"x": 1.0}})
    with pytest.raises(TypeError, match="qrels"):
        ranking_metrics({"a": {"x": 1.5}}, {})
    with pytest.raises(TypeError, match="run"):
        ranking_metrics(qrels, {"a": {"x": "high"}})
    with pytest.raises(ValueError, match="run"):
        ranking_metrics(qrels, {"a": {"x": float("nan")}})
    with pytest.raises(TypeError, match="run"):
        ranking_metrics(qrels, [("a", "x", 1.0)])
