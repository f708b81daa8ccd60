"""densescale.eval.evaluate end to end on a tiny random encoder and a made-up collection."""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest
import torch

from densescale.eval import contrastive_entropy, evaluate, ranking_metrics
from densescale.models import build_encoder, encode_texts, num_non_embedding_params, train_tokenizer

TOPICS = {
    "heart": "heart attack chest pain artery cholesterol blood pressure cardiac",
    "sugar": "diabetes insulin glucose sugar pancreas type diet",
    "lung": "asthma lung breath cough inhaler airway wheeze",
    "skin": "eczema rash itch skin cream dermatitis dry",
    "bone": "fracture bone calcium osteoporosis joint cast break",
}


def _collection(seed: int = 0):
    rng = random.Random(seed)
    corpus_ids, corpus_texts, topic_of = [], [], []
    for i in range(80):
        topic = rng.choice(sorted(TOPICS))
        words = TOPICS[topic].split()
        corpus_ids.append(f"p{i}")
        corpus_texts.append(" ".join(rng.choice(words) for _ in range(rng.randint(5, 25))))
        topic_of.append(topic)
    query_ids, query_texts, qrels = [], [], {}
    for j in range(14):
        qid = f"q{j}"
        target = rng.randrange(80)
        words = corpus_texts[target].split()
        query_ids.append(qid)
        query_texts.append(" ".join(rng.sample(words, min(4, len(words)))))
        qrels[qid] = {corpus_ids[target]: rng.choice([1, 2])}
        if j % 4 == 0:  # a second positive: the pair counts twice for CE
            qrels[qid][corpus_ids[(target + 1) % 80]] = 1
        if j % 5 == 0:  # a judged non-relevant passage: not a positive, stays in the pool
            qrels[qid][corpus_ids[(target + 2) % 80]] = 0
    query_ids.append("unjudged")  # queries outside the qrels are not evaluated
    query_texts.append("cough")
    return corpus_ids, corpus_texts, query_ids, query_texts, qrels


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    corpus_ids, corpus_texts, query_ids, query_texts, qrels = _collection()
    tok = train_tokenizer(
        corpus_texts + query_texts, 80, tmp_path_factory.mktemp("tok") / "wp", min_frequency=1
    )
    torch.manual_seed(0)
    model = build_encoder("L1-H32", len(tok), out_dim=24)
    data = {
        "corpus_ids": corpus_ids,
        "corpus_texts": corpus_texts,
        "query_ids": query_ids,
        "query_texts": query_texts,
        "qrels": qrels,
    }
    return model, tok, data


def test_evaluate_end_to_end(setup, tmp_path):
    model, tok, data = setup
    run_path = tmp_path / "runs" / "dev.trec"
    rec = evaluate(
        model,
        tok,
        **data,
        k=20,
        num_negatives=16,
        repeats=3,
        seed=4,
        run_path=run_path,
        query_max_length=8,
        passage_max_length=24,
        batch_size=16,
        metrics=("mrr@10", "ndcg@10", "recall@20", "map"),
    )
    qrels = data["qrels"]
    positives = [(q, d) for q, docs in qrels.items() for d, g in docs.items() if g >= 1]
    assert rec["N"] == num_non_embedding_params(model)
    assert rec["num_pairs"] == len(positives) > len(qrels)
    assert rec["num_queries"] == len(qrels) and rec["num_passages"] == 80
    assert rec["pool_size"] == 80 - len({d for _, d in positives})
    assert set(rec["time"]) == {"encode", "search", "ce", "metrics"}
    assert all(t >= 0 for t in rec["time"].values())
    json.dumps(rec)  # the record is JSON-ready

    # independent recomputation from encode_texts + brute force
    cid = data["corpus_ids"]
    c = encode_texts(model, tok, data["corpus_texts"], max_length=24)
    qids = list(qrels)
    qtext = dict(zip(data["query_ids"], data["query_texts"]))
    q = encode_texts(model, tok, [qtext[x] for x in qids], max_length=8)
    scores = q.double() @ c.double().T
    top = scores.topk(20, dim=1)
    run = {
        x: {cid[int(j)]: float(s) for s, j in zip(top.values[i], top.indices[i])}
        for i, x in enumerate(qids)
    }
    expected = ranking_metrics(qrels, run, ("mrr@10", "ndcg@10", "recall@20", "map"))
    assert rec["metrics"] == pytest.approx(expected, abs=1e-6)

    pos_rows = {cid.index(d) for _, d in positives}
    pool = [i for i in range(80) if i not in pos_rows]
    ce = contrastive_entropy(
        q[[qids.index(x) for x, _ in positives]],
        c[[cid.index(d) for _, d in positives]],
        c[pool],
        num_negatives=16,
        repeats=3,
        seed=4,
    )
    assert rec["ce"] == pytest.approx(ce.mean, rel=1e-5)
    assert rec["ce_stderr"] == pytest.approx(ce.stderr, rel=1e-4)
    assert 0 < rec["ce"] < 3 * math.log(17)

    # the TREC run: 20 lines per query, ranks 1..20, scores descending, the record's ranking
    lines = [line.split() for line in run_path.read_text().splitlines()]
    assert len(lines) == 20 * len(qids)
    by_q: dict = {}
    for qid, q0, docid, rank, score, tag in lines:
        assert q0 == "Q0" and tag == "densescale"
        by_q.setdefault(qid, []).append((int(rank), float(score), docid))
    assert set(by_q) == set(qids)
    for qid, rows in by_q.items():
        assert [r for r, _, _ in rows] == list(range(1, 21))
        assert all(a[1] >= b[1] for a, b in itertools.pairwise(rows))
        # same top-20 set as the fp64 brute force, up to near-ties at the cut
        kth = min(run[qid].values())
        sure = {d for d, sc in run[qid].items() if sc > kth + 1e-4}
        got = {d for _, _, d in rows}
        assert len(got) == 20 and sure <= got
    assert [p.name for p in run_path.parent.iterdir()] == ["dev.trec"]


def test_pool_cap_is_seeded(setup):
    model, tok, data = setup
    kw = {
        "k": 5,
        "num_negatives": 8,
        "repeats": 2,
        "query_max_length": 8,
        "passage_max_length": 16,
        "batch_size": 32,
    }
    a = evaluate(model, tok, **data, pool_size=20, seed=1, **kw)
    b = evaluate(model, tok, **data, pool_size=20, seed=1, **kw)
    c = evaluate(model, tok, **data, pool_size=None, seed=1, **kw)
    assert a["pool_size"] == 20 and c["pool_size"] > 20
    assert a["ce"] == b["ce"] and a["ce"] != c["ce"]
    assert a["metrics"] == c["metrics"]  # the cap only touches CE


def test_ce_only_encodes_positives_and_pool(setup, monkeypatch):
    model, tok, data = setup
    import densescale.models.encode as enc

    lengths = []
    real = enc.encode_texts

    def counting(model, tokenizer, texts, **kw):
        lengths.append(len(texts))
        return real(model, tokenizer, texts, **kw)

    monkeypatch.setattr(enc, "encode_texts", counting)
    kw = {"num_negatives": 8, "repeats": 2, "seed": 3, "pool_size": 12, "passage_max_length": 16}
    full = evaluate(model, tok, **data, k=5, **kw)
    ce_only = evaluate(model, tok, **data, metrics=(), **kw)
    num_pos = len({d for docs in data["qrels"].values() for d, g in docs.items() if g >= 1})
    assert lengths == [80, len(data["qrels"]), num_pos + 12, len(data["qrels"])]
    assert ce_only["metrics"] == {} and ce_only["time"]["search"] == 0.0
    assert ce_only["num_pairs"] == full["num_pairs"] and ce_only["pool_size"] == 12
    assert ce_only["ce"] == pytest.approx(full["ce"], rel=1e-5)
    with pytest.raises(ValueError, match="run_path"):
        evaluate(model, tok, **data, metrics=(), run_path="x.trec", **kw)


def test_bad_input_fails_before_work(setup, tmp_path, monkeypatch):
    model, tok, data = setup
    import densescale.models.encode as enc

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded before the input was checked")

    monkeypatch.setattr(enc, "encode_texts", no_encoding)
    run_path = tmp_path / "run.trec"
    base = dict(data, run_path=run_path, num_negatives=8)

    def bad(match, exc=ValueError, **change):
        with pytest.raises(exc, match=match):
            evaluate(model, tok, **{**base, **change})

    bad("qrels", qrels={"q0": {"nope": 1}})
    bad("qrels", qrels={"ghost": {"p1": 1}})
    bad("qrels", qrels={})
    bad("qrels", qrels={"q0": {"p1": 0}})
    bad("corpus_texts", corpus_texts=data["corpus_texts"][:-1])
    bad("query_texts", query_texts=data["query_texts"][:-1])
    bad("corpus_ids", corpus_ids=["p0"] * 80)
    bad("num_negatives", num_negatives=79)
    bad("num_negatives", pool_size=4)
    bad("k", k=0)
    bad("seed", seed=-1)
    bad("run_tag", run_tag="my run")
    bad("repeats", repeats=0)
    bad("num_negatives", num_negatives=0)
    bad("batch_size", batch_size=0)
    bad("query_max_length", query_max_length=10_000)
    bad("passage_max_length", passage_max_length=1)
    bad("dtype", dtype=torch.int32)
    bad("metrics", metrics=["bleu"])
    bad("run_path", run_path=tmp_path)
    bad("corpus_ids", exc=TypeError, corpus_ids="p0")
    assert not run_path.exists()


def test_evaluate_on_medquad_subset(medquad_path, tmp_path):
    """Real text and ids: MedQuAD dev questions against their answers plus 1,000 other passages;
    the record's metrics equal pytrec_eval's on the TREC run file the pipeline wrote."""
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels: dict = {}
    with open(medquad_path / "qrels" / "dev.tsv", encoding="utf-8") as f:
        next(f)
        for line in f:
            qid, did, grade = line.rstrip("\n").split("\t")
            if len(qrels) < 100 or qid in qrels:
                qrels.setdefault(qid, {})[did] = int(grade)
    positives = {d for docs in qrels.values() for d in docs}
    corpus = {}
    with open(medquad_path / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            corpus[row["_id"]] = (row.get("title", "") + " " + row["text"]).strip()
    rng = random.Random(0)
    others = rng.sample(sorted(set(corpus) - positives), 1000)
    corpus_ids = sorted(positives) + others
    corpus_texts = [corpus[d] for d in corpus_ids]
    queries = {}
    with open(medquad_path / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["_id"] in qrels:
                queries[row["_id"]] = row["text"]
    tok = train_tokenizer(corpus_texts, 3000, tmp_path / "tok")
    model = build_encoder("L1-H32", len(tok), out_dim=32)
    run_path = tmp_path / "medquad-dev.trec"
    rec = evaluate(
        model,
        tok,
        corpus_ids=corpus_ids,
        corpus_texts=corpus_texts,
        query_ids=list(queries),
        query_texts=list(queries.values()),
        qrels=qrels,
        k=100,
        passage_max_length=64,
        batch_size=64,
        run_path=run_path,
        seed=0,
    )
    assert rec["num_queries"] == len(qrels) and rec["num_pairs"] == sum(
        len(v) for v in qrels.values()
    )
    assert rec["pool_size"] == 1000 and rec["k"] == 100
    assert 0.0 < rec["ce"] < 2 * math.log(257) and math.isfinite(rec["ce_stderr"])
    run: dict = {}
    for line in run_path.read_text().splitlines():
        qid, _, did, _, score, _ = line.split()
        run.setdefault(qid, {})[did] = float(score)
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10", "recall_100", "map"}).evaluate(run)
    for ours, theirs in (("ndcg@10", "ndcg_cut_10"), ("recall@100", "recall_100"), ("map", "map")):
        expected = sum(ref[q][theirs] for q in qrels) / len(qrels)
        assert rec["metrics"][ours] == pytest.approx(expected, abs=1e-12)


def test_clean_subset_and_metric_chance_levels(setup):
    from densescale.eval import random_ranking_metrics

    model, tok, data = setup
    metrics = ("mrr@10", "ndcg@10", "recall@20", "map")
    kw = {"k": 20, "num_negatives": 16, "repeats": 3, "seed": 4, "metrics": metrics}
    kw.update(query_max_length=8, passage_max_length=24, batch_size=16)
    clean = ["q1", "q2", "q4", "q7"]  # q4 has two positives
    rec = evaluate(model, tok, **data, clean_queries=clean, **kw)
    full = evaluate(model, tok, **data, **kw)
    assert rec["ce"] == full["ce"] and rec["metrics"] == full["metrics"]
    # the clean subset equals an evaluation on those queries alone, with the same draws per pair
    only = evaluate(model, tok, **{**data, "qrels": {q: data["qrels"][q] for q in clean}}, **kw)
    assert rec["clean"]["num_queries"] == 4 and rec["clean"]["num_pairs"] == 5
    assert rec["clean"]["metrics"] == pytest.approx(only["metrics"], abs=1e-9)
    assert rec["clean"]["ce"] != pytest.approx(full["ce"])  # a real subset, not the whole
    # chance: the random-ranking expectation on the same corpus, at the search depth
    assert rec["metrics_chance"] == pytest.approx(
        random_ranking_metrics(data["qrels"], 80, metrics, depth=20)
    )
    assert 0 < rec["metrics_chance"]["mrr@10"] < 0.1  # 14 queries, 80 passages
    # standard errors over the 14 queries of qrels
    se = rec["metrics_stderr"]
    assert set(se) == set(metrics) and all(v is not None and v >= 0 for v in se.values())
    assert se["mrr@10"] > 0
    with pytest.raises(ValueError, match="clean_queries"):
        evaluate(model, tok, **data, clean_queries=["nope"], **kw)
