"""The study rehearsal (``densescale study --rehearse``) and the MS MARCO-shaped collection."""

from __future__ import annotations

import json
import math

import pytest

from densescale.cli import main
from densescale.data.resolve import collection_table, open_collection
from densescale.study.rehearse import STEPS
from densescale.study.rehearse_cost import format_growth, growth


@pytest.fixture(scope="module")
def shaped(tmp_path_factory):
    out = tmp_path_factory.mktemp("msmarco-shaped")
    argv = ["data", "synth-msmarco", "--out", str(out), "--passages", "2500"]
    assert main([*argv, "--train-queries", "400", "--dev-queries", "60"]) == 0
    return out


def test_shaped_collection_reads_as_msmarco(shaped):
    table = collection_table(shaped)
    assert table["kind"] == "msmarco"
    col = open_collection(table, synthetic_dir=shaped / "unused")
    assert len(col.corpus) == 2500 and len(col.queries) == 460
    assert list(col.corpus.ids[:3]) == ["0", "1", "2"]
    assert len(col.qrels("train")) == 400 and len(col.qrels("dev")) == 60
    dev_positives = [d for docs in col.qrels("dev").values() for d in docs]
    assert len(set(dev_positives)) == 60  # distinct dev positives
    words = [len(col.corpus[i].split()) for i in range(0, 2500, 5)]
    assert 50 < sum(words) / len(words) < 66  # MS MARCO-like passage length
    # a query shares words with its positive (BM25 has something to find)
    qid, docs = next(iter(col.qrels("train").items()))
    q = set(col.queries[col.queries.index(qid)].split())
    assert q & set(col.corpus[col.corpus.index(next(iter(docs)))].split())


def test_shaped_collection_is_reused_and_checked(shaped, tmp_path):
    before = (shaped / "collection.tsv").stat().st_mtime_ns
    argv = ["data", "synth-msmarco", "--out", str(shaped), "--passages", "2500"]
    assert main([*argv, "--train-queries", "400", "--dev-queries", "60"]) == 0
    assert (shaped / "collection.tsv").stat().st_mtime_ns == before
    from densescale.data.msmarco_shaped import write_msmarco_shaped

    with pytest.raises(ValueError, match="dev_queries"):
        write_msmarco_shaped(tmp_path / "x", passages=10, dev_queries=11, progress=False)
    assert not (tmp_path / "x").exists()


def test_rehearsal_runs_every_step(shaped, tmp_path, capsys):
    out = tmp_path / "study"
    argv = ["study", "--preset", "msmarco-paper", "--collection", str(shaped), "--out", str(out)]
    assert main([*argv, "--rehearse"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "rehearsal" / "rehearsal.json").read_text())
    names = [r["name"] for r in result["rows"]]
    assert names == list(STEPS), f"steps skipped or out of order: {set(STEPS) - set(names)}"
    for row in result["rows"]:
        assert row["seconds"] >= 0 and row["peak_rss"] > 0, row
        assert row["name"] in printed
    by = {r["name"]: r for r in result["rows"]}
    assert by["load collection"]["disk_bytes"] > 0  # the parsed-collection cache
    assert by["encode eval corpus"]["seconds"] > 0
    assert result["sizes"]["passages"] == 2500 and result["sizes"]["eval_queries"] == 60
    assert result["sizes"]["train_pairs"] == 400
    assert 10 < result["sizes"]["mean_tokens"]["corpus passages"] <= 180
    assert (out / "rehearsal" / "run.dev.trec").is_file()
    # the search part writes the run file, and its row says so
    assert (
        by["exact top-k search"]["disk_bytes"]
        >= (out / "rehearsal" / "run.dev.trec").stat().st_size
    )
    assert all(0 < r["peak_anon"] <= r["peak_rss"] for r in result["rows"])
    assert not (out / "rehearsal" / "rehearsal.partial.json").exists()  # the full file replaces it
    assert "of it anonymous" in printed and "texts encoded per dev check" in printed
    assert (out / "bm25.dev.json").is_file()
    assert math.isfinite(result["eval"]["ce"])
    p = result["projection"]
    assert p["cells"] == 24 and p["gpu_hours"] > 0
    assert "measured:" in printed and "assumed:" in printed
    # the parsed collection, tokenizer and BM25 row are caches: a rerun reuses them
    assert main([*argv, "--rehearse"]) == 0
    again = json.loads((out / "rehearsal" / "rehearsal.json").read_text())
    rerun = {r["name"]: r for r in again["rows"]}
    assert rerun["load collection"]["disk_bytes"] == 0
    assert rerun["BM25 reference"]["seconds"] < by["BM25 reference"]["seconds"] + 1


def _fake(n: int, seconds: float, memory: float) -> dict:
    rows = [
        {
            "name": "linear",
            "seconds": seconds * n,
            "peak_rss": int(2e8 + memory * n),
            "rss_growth": int(memory * n),
            "disk_bytes": 0,
        },
        {
            "name": "quadratic",
            "seconds": seconds * n * n / 1e5,
            "peak_rss": int(2e8 + 64 * n),
            "rss_growth": int(64 * n),
            "disk_bytes": 0,
        },
    ]
    return {"sizes": {"passages": n}, "rows": rows}


def test_growth_exponents_and_verdicts(capsys):
    rows = growth([_fake(n, 1e-4, 4096) for n in (30_000, 100_000, 300_000, 1_000_000)])
    by = {r["step"]: r for r in rows}
    assert by["linear"]["time_exponent"] == pytest.approx(1.0, abs=1e-6)
    assert by["linear"]["memory_exponent"] == pytest.approx(1.0, abs=1e-3)
    assert by["quadratic"]["time_exponent"] == pytest.approx(2.0, abs=1e-6)
    text = format_growth(rows)
    line = {ln.split("|")[1].strip(): ln for ln in text.splitlines() if ln.startswith("| ")}
    assert "superlinear" in line["quadratic"]
    # 4 KiB a passage at 8.8M passages is ~34 GiB: it does not fit in 24 GiB
    assert "DOES NOT FIT" in line["linear"] and "at most linear" in line["linear"]
    assert "caution" not in text
    few = format_growth(growth([_fake(n, 1e-4, 4096) for n in (30_000, 100_000)]))
    assert "caution: 2 corpus sizes; b needs at least 4" in few
    with pytest.raises(ValueError, match="2 corpus sizes"):
        growth([_fake(1000, 1, 1)])


def test_evaluate_streams_corpus_embeddings_past_the_ram_cap(shaped, tmp_path, monkeypatch):
    """Above EMBEDDINGS_IN_RAM_BYTES the corpus is encoded shard by shard into a memory-mapped
    file (the 8.8M-passage fix); the record is the same as in RAM."""
    import importlib

    import torch

    from densescale.eval import evaluate
    from densescale.models import build_encoder, train_tokenizer

    pipeline = importlib.import_module("densescale.eval.pipeline")
    encode = importlib.import_module("densescale.models.encode")
    col = open_collection(collection_table(shaped), synthetic_dir=shaped / "unused")
    tok = train_tokenizer([col.corpus[i] for i in range(500)], 600, tmp_path / "tok")
    torch.manual_seed(0)
    model = build_encoder("L1-H8", vocab_size=tok.vocab_size, out_dim=16)
    qrels = col.qrels("dev")
    qids = sorted(qrels)
    kw = {
        "corpus_ids": col.corpus.ids,
        "corpus_texts": col.corpus,
        "query_ids": qids,
        "query_texts": [col.queries[col.queries.index(q)] for q in qids],
        "qrels": qrels,
        "k": 20,
        "num_negatives": 16,
        "repeats": 2,
        "passage_max_length": 64,
    }
    in_ram = evaluate(model, tok, **kw)
    calls, searched = [], []
    real = encode.encode_texts
    monkeypatch.setattr(encode, "encode_texts", lambda *a, **k: calls.append(1) or real(*a, **k))
    search_mod = importlib.import_module("densescale.ops.search")
    real_search = search_mod.search
    monkeypatch.setattr(
        search_mod, "search", lambda q, c, k: searched.append(c) or real_search(q, c, k)
    )
    monkeypatch.setattr(pipeline, "EMBEDDINGS_IN_RAM_BYTES", 0)
    monkeypatch.setattr(pipeline, "EMBEDDING_SHARD_BYTES", 16 * 4 * 700)
    streamed = evaluate(model, tok, **kw)
    assert len(calls) == 4 + 1  # 2500 passages in shards of 700, then the queries
    # searched as shards of the memory map (views, no copy), so a screening copy is per shard
    assert isinstance(searched[-1], list) and [len(c) for c in searched[-1]] == [700] * 3 + [400]
    assert all(isinstance(c, torch.Tensor) for c in searched[-1])
    assert streamed["ce"] == pytest.approx(in_ram["ce"], abs=1e-4)
    for name, value in in_ram["metrics"].items():
        assert streamed["metrics"][name] == pytest.approx(value, abs=1e-3), name


def test_bm25_run_indexes_in_chunks_as_bm25s_does(shaped, monkeypatch):
    """bm25_run builds its index a chunk of passages at a time (no Python list per passage);
    the run is the one bm25s gives from the whole corpus's token lists."""
    import importlib

    import bm25s
    import Stemmer

    from densescale.eval.bm25 import bm25_run

    col = open_collection(collection_table(shaped), synthetic_dir=shaped / "unused")
    texts = [col.corpus[i] for i in range(len(col.corpus))]
    texts[7] = "the and of"  # only stopwords: an empty passage
    ids = list(col.corpus.ids)
    qids = sorted(col.qrels("dev"))[:40]
    queries = [col.queries[col.queries.index(q)] for q in qids]
    tok = bm25s.tokenization.Tokenizer(stopwords="en", stemmer=Stemmer.Stemmer("english"))
    ref = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    ref.index(tok.tokenize(texts, return_as="ids", show_progress=False), show_progress=False)
    q = tok.tokenize(queries, update_vocab=False, return_as="ids", show_progress=False)
    rows, scores = ref.retrieve(q, k=50, show_progress=False)
    expected = {
        qid: {ids[d]: v for d, v in zip(r, s) if v != 0.0}
        for qid, r, s in zip(qids, rows.tolist(), scores.tolist())
    }
    monkeypatch.setattr(importlib.import_module("densescale.eval.bm25_index"), "CHUNK", 300)
    assert bm25_run(ids, texts, qids, queries, k=50) == expected
