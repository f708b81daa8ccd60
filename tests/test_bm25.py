"""densescale.eval.bm25: BM25 runs through bm25s, checked by hand, and the study's baseline row."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from densescale.data import Collection, Texts, load_medquad, write_qrels
from densescale.eval.bm25 import bm25_baseline, bm25_run

pytest.importorskip("bm25s")

CORPUS = {
    "d1": "apple banana apple",
    "d2": "banana cherry",
    "d3": "cherry date elderberry fig",
    "d4": "apple",
}


def _lucene_bm25(query: list[str], docs: dict[str, list[str]], k1=1.5, b=0.75) -> dict:
    """The module docstring's formula, written out."""
    n = len(docs)
    avgdl = sum(map(len, docs.values())) / n
    out = {}
    for d, toks in docs.items():
        s = 0.0
        for t in query:
            tf = toks.count(t)
            if tf:
                df = sum(t in x for x in docs.values())
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                s += idf * tf / (tf + k1 * (1 - b + b * len(toks) / avgdl))
        if s:
            out[d] = s
    return out


def test_scores_equal_the_lucene_formula_and_zero_scores_are_left_out():
    ids, texts = list(CORPUS), list(CORPUS.values())
    queries = {"qa": "apple cherry", "qb": "zzz banana", "qc": "nothing matches", "qd": "Date FIG"}
    run = bm25_run(
        ids, texts, list(queries), list(queries.values()), k=10, stopwords=None, stemmer=None
    )
    docs = {d: t.split() for d, t in CORPUS.items()}
    for qid, text in queries.items():
        expected = _lucene_bm25(text.lower().split(), docs)
        assert run[qid].keys() == expected.keys(), qid
        for d, v in expected.items():
            assert run[qid][d] == pytest.approx(v, rel=1e-6)
    assert run["qc"] == {}
    # the known order: d4 (short, apple) > d1 (apple twice, longer) > d2 > d3
    assert sorted(run["qa"], key=run["qa"].get, reverse=True) == ["d4", "d1", "d2", "d3"]
    # k cuts the run; k above the corpus size is cut to it
    top2 = bm25_run(ids, texts, ["qa"], ["apple cherry"], k=2, stopwords=None, stemmer=None)
    assert list(top2["qa"]) == ["d4", "d1"]
    assert len(bm25_run(ids, texts, ["qa"], ["apple cherry"], k=1000)["qa"]) == 4
    # parameters reach the scorer: b = 0 ignores length, so d1's two apples beat d4's one
    flat = bm25_run(ids, texts, ["q"], ["apple"], b=0.0, stopwords=None, stemmer=None)
    assert flat["q"]["d1"] > flat["q"]["d4"]
    assert flat["q"]["d1"] == pytest.approx(_lucene_bm25(["apple"], docs, b=0.0)["d1"], rel=1e-6)


def test_default_tokenizer_stems_and_drops_stopwords():
    ids = ["run", "walk"]
    texts = ["The runner was running the races", "a walk in the park"]
    stemmed = bm25_run(ids, texts, ["q"], ["runs race"])
    assert list(stemmed["q"]) == ["run"]
    plain = bm25_run(ids, texts, ["q"], ["runs race"], stemmer=None)
    assert plain["q"] == {}  # no exact token in common
    # "the" is a stopword: it matches nothing by default, both documents without stopwords
    assert bm25_run(ids, texts, ["q"], ["the"])["q"] == {}
    assert set(bm25_run(ids, texts, ["q"], ["the"], stopwords=None)["q"]) == {"run", "walk"}


def test_ids_of_ints_are_strings_and_bad_input_is_named():
    run = bm25_run([10, np.int64(11)], ["red fox", "blue whale"], [1], ["whale"])
    assert run == {"1": {"11": pytest.approx(run["1"]["11"])}}
    ok = (["a", "b"], ["x y", "y z"], ["q"], ["y"])
    with pytest.raises(ValueError, match="corpus_ids must be unique"):
        bm25_run(["a", "a"], *ok[1:])
    with pytest.raises(ValueError, match="query_ids must be unique"):
        bm25_run(ok[0], ok[1], ["q", "q"], ["y", "z"])
    with pytest.raises(TypeError, match="corpus_ids"):
        bm25_run([1.5, "b"], *ok[1:])
    with pytest.raises(ValueError, match="corpus_texts must have one text per entry"):
        bm25_run(ok[0], ["x"], *ok[2:])
    with pytest.raises(TypeError, match=r"query_texts\[0\]"):
        bm25_run(ok[0], ok[1], ["q"], [None])
    with pytest.raises(TypeError, match="query_texts"):
        bm25_run(ok[0], ok[1], ["q"], "y")
    with pytest.raises(ValueError, match="corpus_ids must hold at least one"):
        bm25_run([], [], ["q"], ["y"])
    for bad in (
        {"k": 0},
        {"k": 2.0},
        {"k1": -1},
        {"b": 1.5},
        {"method": "okapi"},
        {"n_threads": -2},
    ):
        name = next(iter(bad))
        with pytest.raises(ValueError, match=name):
            bm25_run(*ok, **bad)
    with pytest.raises(ValueError, match="stemmer"):
        bm25_run(*ok, stemmer="klingon")
    assert bm25_run(ok[0], ok[1], [], []) == {}


def _toy_collection(tmp_path: Path) -> Collection:
    corpus = Texts.from_pairs(
        ["p1", "p2", "p3", "p4", "p5"],
        [
            "aspirin relieves headache and fever",
            "insulin lowers blood sugar in diabetes",
            "influenza is a viral infection of the lungs",
            "a broken bone needs a cast",
            "vitamin c and the common cold",
        ],
        name="corpus",
    )
    queries = Texts.from_pairs(
        ["q1", "q2", "q3", "q4"],
        [
            "what relieves a headache",  # p1 first
            "blood sugar in diabetes",  # p2 first
            "viral lungs infection",  # p3 first, but judged relevant: p5 (not retrieved)
            "broken cast",  # training query, not in the test split
        ],
        name="queries",
    )
    files = {
        "train": write_qrels(tmp_path / "qrels" / "train.tsv", {"q4": {"p4": 1}}),
        "test": write_qrels(
            tmp_path / "qrels" / "test.tsv",
            {"q1": {"p1": 1}, "q2": {"p2": 1, "p3": 0}, "q3": {"p5": 1}},
        ),
    }
    return Collection("toy", tmp_path, corpus, queries, files)


def test_baseline_on_a_hand_made_collection(tmp_path: Path):
    coll = _toy_collection(tmp_path)
    row = bm25_baseline(coll, "test", k=10, metrics=("mrr@10", "recall@100", "P@1"))
    assert row["name"] == "BM25" and row["split"] == "test"
    assert row["metrics"] == pytest.approx({"mrr@10": 2 / 3, "recall@100": 2 / 3, "P@1": 2 / 3})
    assert row["num_queries"] == 3 and row["corpus_size"] == 5 and row["k"] == 10
    assert row["seconds"] > 0
    assert row["params"] == {
        "b": 0.75,
        "delta": 0.5,
        "k1": 1.5,
        "method": "lucene",
        "stemmer": "english",
        "stopwords": "en",
    }
    assert row["library"].startswith("bm25s ")
    # a smaller corpus (e.g. the evaluation pool) and other parameters
    sub = bm25_baseline(
        coll, "test", corpus_ids=["p2", "p5"], corpus_texts=[coll.corpus[1], coll.corpus[4]], k1=0.9
    )
    assert sub["corpus_size"] == 2 and sub["params"]["k1"] == 0.9
    assert sub["metrics"]["mrr@10"] == pytest.approx(1 / 3)  # only q2 finds its passage

    with pytest.raises(ValueError, match="metrics"):
        bm25_baseline(coll, "test", metrics=["bleu"])
    with pytest.raises(ValueError, match="split"):
        bm25_baseline(coll, "dev")
    with pytest.raises(ValueError, match="corpus_ids and corpus_texts"):
        bm25_baseline(coll, "test", corpus_ids=["p1"])
    with pytest.raises(TypeError, match="unknown BM25 parameters"):
        bm25_baseline(coll, "test", kl=1.2)
    with pytest.raises(TypeError, match="collection"):
        bm25_baseline({"test": {}}, "test")


def test_baseline_on_medquad_test(medquad_path):
    """BM25 on the real collection (15,809 passages, 1,498 test questions): a few seconds."""
    row = bm25_baseline(load_medquad(medquad_path), "test")
    print(f"BM25 on medquad test: {row['metrics']} in {row['seconds']:.1f} s")
    assert row["num_queries"] == 1498 and row["corpus_size"] == 15809
    # measured 0.484 (bm25s 0.3.16, PyStemmer 3.1); the band allows tokenizer changes
    assert 0.45 < row["metrics"]["mrr@10"] < 0.52
    assert row["metrics"]["recall@100"] > 0.9
