"""densescale.eval.ranking_metrics against pytrec_eval (trec_eval conventions) and by hand."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from densescale.eval import rank_run, ranking_metrics
from densescale.eval.metrics import parse_metrics

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


# --- ir-measures names, relevance levels, ties ----------------------------------------------------

IR_PAIRS = {
    "nDCG@10": "ndcg_cut_10",
    "R@1000": "recall_1000",
    "R@10": "recall_10",
    "P@5": "P_5",
    "AP": "map",
    "AP@20": "map_cut_20",
    "nDCG": "ndcg",
    "recall": "set_recall",
    "Success@10": "success_10",
}


@pytest.mark.parametrize("relevance_level", [1, 2])
def test_ir_measures_names_equal_pytrec_eval(relevance_level):
    qrels, run = _random_case(5)
    means, per = ranking_metrics(
        qrels, run, list(IR_PAIRS), relevance_level=relevance_level, per_query=True
    )
    assert list(means) == list(IR_PAIRS)  # returned under the names given, in that order
    ref = pytrec_eval.RelevanceEvaluator(
        qrels, set(IR_PAIRS.values()), relevance_level=relevance_level
    ).evaluate(run)
    for qid in qrels:
        for ours, theirs in IR_PAIRS.items():
            expected = ref[qid][theirs] if qid in ref else 0.0
            assert per[qid][ours] == pytest.approx(expected, abs=1e-12), (qid, ours)


@pytest.mark.parametrize("relevance_level", [1, 2, 3])
def test_rr_at_k_is_recip_rank_of_the_cut_run(relevance_level):
    qrels, run = _random_case(6)
    top10 = {q: {d: docs[d] for d in rank_run(docs)[:10]} for q, docs in run.items()}
    ref = pytrec_eval.RelevanceEvaluator(
        qrels, {"recip_rank"}, relevance_level=relevance_level
    ).evaluate(top10)
    _, per = ranking_metrics(
        qrels, run, ["RR@10", "mrr@10"], relevance_level=relevance_level, per_query=True
    )
    for qid in qrels:
        expected = ref[qid]["recip_rank"] if qid in ref else 0.0
        assert per[qid]["RR@10"] == pytest.approx(expected, abs=1e-12)
        assert per[qid]["mrr@10"] == per[qid]["RR@10"]
    # a rel= in the name wins over relevance_level
    both = ranking_metrics(qrels, run, ["AP(rel=2)", "map"], relevance_level=1)
    assert both["AP(rel=2)"] == pytest.approx(
        ranking_metrics(qrels, run, ["map"], relevance_level=2)["map"]
    )


def test_ties_broken_the_trec_eval_way_for_every_measure():
    # all scores tie: trec_eval orders by docid descending -> c, b, a
    qrels = {"q": {"a": 1, "c": 0}}
    run = {"q": {"a": 1.0, "b": 1.0, "c": 1.0}}
    got = ranking_metrics(
        qrels, run, ["RR@10", "RR@2", "mrr", "P@1", "Judged@1", "Judged@2", "nDCG@10"]
    )
    assert got == pytest.approx(
        {
            "RR@10": 1 / 3,
            "RR@2": 0.0,
            "mrr": 1 / 3,
            "P@1": 0.0,
            "Judged@1": 1.0,  # c is judged (grade 0)
            "Judged@2": 0.5,  # b is not
            "nDCG@10": 0.5,  # 1 / log2(4)
        }
    )


def test_judged_by_hand_and_query_missing_from_run():
    qrels = {"a": {"x": 1, "y": 0}, "b": {"z": 1}}
    run = {"a": {"x": 3.0, "u": 2.0, "y": 1.0, "v": 0.5}}
    means, per = ranking_metrics(qrels, run, ["Judged@2", "Judged@4", "P@5"], per_query=True)
    assert per["a"] == pytest.approx({"Judged@2": 0.5, "Judged@4": 0.5, "P@5": 0.2})
    assert per["b"] == {"Judged@2": 0.0, "Judged@4": 0.0, "P@5": 0.0}
    assert means == pytest.approx({"Judged@2": 0.25, "Judged@4": 0.25, "P@5": 0.1})


def test_parse_metrics_resolves_names_before_any_work():
    parsed = parse_metrics(["mrr@10", "nDCG@10", "recall", "map", "P@5", "AP(rel=2)"], 2)
    assert [p.name for p in parsed] == ["mrr@10", "nDCG@10", "recall", "map", "P@5", "AP(rel=2)"]
    assert [str(p.measure) for p in parsed] == [
        "RR(rel=2)@10",
        "nDCG@10",
        "SetR(rel=2)",
        "AP(rel=2)",
        "P(rel=2)@5",
        "AP(rel=2)",
    ]
    for bad in (["bleu"], ["nDCG@0"], ["P"], ["RR@10(rel=2)"], ["precision"], []):
        with pytest.raises(ValueError, match="metrics"):
            parse_metrics(bad)
    with pytest.raises(TypeError, match="metrics"):
        parse_metrics([10])
    with pytest.raises(ValueError, match="relevance_level"):
        parse_metrics(["map"], 0)
    with pytest.raises(ValueError, match="relevance_level"):
        ranking_metrics({"a": {"x": 1}}, {"a": {"x": 1.0}}, relevance_level=0)


# --- ids of mixed types ---------------------------------------------------------------------------

MIXED_EXPECTED = {
    "mrr@10": 0.75,  # q1: rank 1; q2: rank 2
    "ndcg@10": (1.0 + 1 / math.log2(3)) / 2,
    "recall@100": 1.0,
    "map": 0.75,
}


def test_int_ids_in_qrels_str_ids_in_run():
    qrels = {1: {10: 1, 11: 0}, 2: {20: 1}}
    run = {"1": {"10": 0.9, "12": 0.5}, "2": {"21": 0.4, "20": 0.3}}
    assert ranking_metrics(qrels, run) == pytest.approx(MIXED_EXPECTED)


def test_str_ids_in_qrels_int_ids_in_run():
    qrels = {"1": {"10": 1, "11": 0}, "2": {"20": 1}}
    run = {1: {10: 0.9, 12: 0.5}, 2: {21: 0.4, 20: 0.3}}
    assert ranking_metrics(qrels, run) == pytest.approx(MIXED_EXPECTED)


def test_numpy_ids_and_values_and_mixed_within_one_mapping():
    qrels = {np.int64(1): {np.int32(10): np.int64(1), "11": 0}, "2": {np.uint16(20): 1}}
    run = {
        "1": {10: np.float32(0.9), np.int64(12): 0.5},
        np.int32(2): {"21": np.float64(0.4), 20: 0.3},
    }
    means, per = ranking_metrics(qrels, run, per_query=True)
    assert means == pytest.approx(MIXED_EXPECTED)
    assert set(per) == {"1", "2"}  # per-query results are keyed by the str id


@pytest.mark.parametrize("bad_id", [1.0, None, ("a",), b"1", True])
def test_other_id_types_are_a_type_error_naming_the_argument(bad_id):
    good_qrels = {"1": {"10": 1}}
    good_run = {"1": {"10": 1.0}}
    with pytest.raises(TypeError, match="qrels"):
        ranking_metrics({bad_id: {"10": 1}}, good_run)
    with pytest.raises(TypeError, match="qrels"):
        ranking_metrics({"1": {bad_id: 1}}, good_run)
    with pytest.raises(TypeError, match="run"):
        ranking_metrics(good_qrels, {bad_id: {"10": 1.0}})
    with pytest.raises(TypeError, match="run"):
        ranking_metrics(good_qrels, {"1": {bad_id: 1.0}})


def test_an_int_and_its_string_in_one_mapping_is_an_error():
    with pytest.raises(ValueError, match="qrels.*'1' twice"):
        ranking_metrics({1: {"x": 1}, "1": {"y": 1}}, {})
    with pytest.raises(ValueError, match="run"):
        ranking_metrics({"1": {"x": 1}}, {"1": {5: 1.0, "5": 2.0}})
    with pytest.raises(TypeError, match="qrels"):
        ranking_metrics({"1": {"x": True}}, {})
    with pytest.raises(TypeError, match="run"):
        ranking_metrics({"1": {"x": 1}}, {"1": {"x": "0.5"}})
