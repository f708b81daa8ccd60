"""TREC qrels and run files: reading, writing, round trip, malformed lines, atomic writes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from densescale.data import Texts, read_qrels, read_trec_run, write_qrels, write_trec_run


def test_read_trec_and_beir_qrels(tmp_path: Path):
    trec = tmp_path / "qrels.trec"
    trec.write_text("q1 0 d1 1\nq1 0 d2 0\n\nq2 Q0 d3 2\n")
    beir = tmp_path / "test.tsv"
    beir.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\nq2\td3\t2\n")
    expected = {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2}}
    assert read_qrels(trec) == expected
    assert read_qrels(beir) == expected


@pytest.mark.parametrize("fmt", ["beir", "trec"])
def test_qrels_round_trip(tmp_path: Path, fmt: str):
    qrels = {"q1": {"d1": 1, "d7": 0}, "q2": {"d3": 2}}
    assert read_qrels(write_qrels(tmp_path / "q.tsv", qrels, format=fmt)) == qrels


@pytest.mark.parametrize(
    ("reader", "content", "line", "message"),
    [
        (read_qrels, "q1 0 d1 1\nq1 0 d2\n", 2, "expected 4 fields"),
        (read_qrels, "q1 0 d1 1\nq1 0 d2 high\n", 2, "relevance must be an integer"),
        (read_qrels, "q1 0 d1 1\nq1 0 d1 2\n", 2, r"\(q1, d1\) listed again"),
        (read_qrels, "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\n", 3, "expected 3 fields"),
        (read_qrels, "q1 d1\n", 1, "expected 4 fields"),
        (read_trec_run, "q1 Q0 d1 1 0.5 t\nq1 Q0 d2 2 0.4\n", 2, "expected 6 fields"),
        (read_trec_run, "q1 Q0 d1 1 abc t\n", 1, "score must be a number"),
        (read_trec_run, "q1 Q0 d1 x 0.5 t\n", 1, "rank must be an integer"),
        (read_trec_run, "q1 Q0 d1 1 0.5 t\nq1 Q0 d1 2 0.4 t\n", 2, "document .d1. appears twice"),
        (read_trec_run, "q1 Q0 d1 1 nan t\n", 1, "score must be finite"),
    ],
)
def test_malformed_line_is_named(tmp_path: Path, reader, content: str, line: int, message: str):
    """Qrels and run readers name the file and line of the first malformed row."""
    p = tmp_path / "input.txt"
    p.write_text(content)
    with pytest.raises(ValueError, match=rf"input\.txt:{line}: {message}"):
        reader(p)


def test_qrels_empty(tmp_path: Path):
    p = tmp_path / "qrels.txt"
    p.write_text("query-id\tcorpus-id\tscore\n")
    with pytest.raises(ValueError, match="no judgements"):
        read_qrels(p)


def test_write_and_read_run_round_trip(tmp_path: Path):
    rng = np.random.default_rng(0)
    docids = Texts.from_pairs([f"doc{i}" for i in range(50)], ["t"] * 50).ids
    scores = np.sort(rng.standard_normal((3, 5)).astype(np.float32), axis=1)[:, ::-1].copy()
    ids = rng.choice(50, size=(3, 5), replace=False).astype(np.int64)
    ids[1, 3:] = -1  # fewer than k results for q2
    path = write_trec_run(tmp_path / "run.trec", ["q1", "q2", "q3"], docids, scores, ids, tag="t1")
    lines = path.read_text().splitlines()
    assert len(lines) == 13
    first = lines[0].split()
    assert first[:4] == ["q1", "Q0", f"doc{ids[0, 0]}", "1"] and first[5] == "t1"
    run = read_trec_run(path)
    assert set(run) == {"q1", "q2", "q3"} and len(run["q2"]) == 3
    for r, qid in enumerate(["q1", "q2", "q3"]):
        for j in range(5):
            if ids[r, j] >= 0:
                assert (
                    np.float32(run[qid][f"doc{ids[r, j]}"]) == scores[r, j]
                )  # float32 round-trips
    # torch tensors are accepted and give the same file
    again = write_trec_run(
        tmp_path / "run2.trec",
        ["q1", "q2", "q3"],
        docids,
        torch.from_numpy(scores),
        torch.from_numpy(ids),
        tag="t1",
    )
    assert again.read_text() == path.read_text()


def test_write_run_agrees_with_pytrec_eval_parse(tmp_path: Path):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    docids = [f"d{i}" for i in range(4)]
    scores = np.array([[3.0, 2.0, 1.0]], dtype=np.float64)
    ids = np.array([[2, 0, 3]])
    run = read_trec_run(write_trec_run(tmp_path / "r.trec", ["q"], docids, scores, ids))
    qrels = {"q": {"d0": 1}}
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"})
    assert ev.evaluate(run)["q"]["recip_rank"] == pytest.approx(0.5)


def test_write_run_bad_input_leaves_old_file(tmp_path: Path):
    path = tmp_path / "run.trec"
    path.write_text("old content\n")
    docids = ["a", "b"]
    s = np.zeros((1, 2), np.float32)
    with pytest.raises(ValueError, match="ids must be -1 or rows of docids"):
        write_trec_run(path, ["q"], docids, s, np.array([[0, 2]]))
    with pytest.raises(ValueError, match="ids must have the shape"):
        write_trec_run(path, ["q"], docids, s, np.array([0, 1]))
    with pytest.raises(ValueError, match="qids must have one entry"):
        write_trec_run(path, ["q", "r"], docids, s, np.array([[0, 1]]))
    with pytest.raises(TypeError, match="ids must be integers"):
        write_trec_run(path, ["q"], docids, s, s)
    with pytest.raises(ValueError, match="finite"):
        write_trec_run(path, ["q"], docids, np.array([[np.nan, 0.0]]), np.array([[0, 1]]))
    with pytest.raises(ValueError, match="qids must be unique"):
        write_trec_run(path, ["q", "q"], docids, np.zeros((2, 1)), np.zeros((2, 1), np.int64))
    assert path.read_text() == "old content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["run.trec"]  # no temp files left


def _write_refused(tmp_path: Path, docids, ids, match: str, qids=("q",)):
    """The call raises ValueError matching ``match``; no file is created, an existing one kept."""
    new = tmp_path / "new.trec"
    old = tmp_path / "old.trec"
    old.write_text("old content\n")
    ids = np.asarray(ids, dtype=np.int64)
    scores = np.linspace(1.0, 0.0, ids.size, dtype=np.float32).reshape(ids.shape)
    for path in (new, old):
        with pytest.raises(ValueError, match=match):
            write_trec_run(path, list(qids), docids, scores, ids)
    assert not new.exists()
    assert old.read_text() == "old content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.trec"]  # no temp files left


def test_write_run_refuses_a_docid_twice_in_one_query(tmp_path: Path):
    # two rows of docids hold the same string
    _write_refused(tmp_path, ["A", "B", "A"], [[0, 1, 2]], r"docids: .*'A' twice.*\[0, 2\]")
    # the same row twice
    _write_refused(
        tmp_path, ["A", "B", "C"], [[1, 0, 1]], r"docids: .*'B' twice.*\[1\] of docids repeated"
    )
    # in the second query only, with -1 padding around
    _write_refused(
        tmp_path,
        Texts.from_pairs(["x", "y", "z", "y"], ["t"] * 4).ids,
        [[0, 1, -1], [3, -1, 1]],
        r"docids: query 'q2' \(row 1\) .*'y' twice",
        qids=("q1", "q2"),
    )


def test_write_run_duplicate_strings_in_different_queries_are_fine(tmp_path: Path):
    # "A" at rows 0 and 2 of docids, but each query lists it once
    path = write_trec_run(
        tmp_path / "r.trec", ["q1", "q2"], ["A", "B", "A"], np.ones((2, 2)), [[0, 1], [2, -1]]
    )
    assert read_trec_run(path) == {"q1": {"A": 1.0, "B": 1.0}, "q2": {"A": 1.0}}


@pytest.mark.parametrize(
    "bad", ["IPCC report, 1992", "tab\there", "new\nline", "", " lead", "nbsp\u00a0x", "cr\r"]
)
def test_write_run_refuses_docids_that_are_not_tokens(tmp_path: Path, bad: str):
    docids = ["ok1", bad, "ok2"]
    _write_refused(
        tmp_path,
        docids,
        [[0, 1, 2]],
        rf"docids\[1\] must be a non-empty string.*{re.escape(repr(bad))}",
    )


def test_write_run_refuses_non_string_docids_and_qids(tmp_path: Path):
    _write_refused(tmp_path, ["a", 7], [[1, 0]], r"docids\[1\] .* got 7")
    _write_refused(tmp_path, ["a", None], [[0, 1]], r"docids\[1\] .* got None")
    for bad in ("q 1", "", "q\t", 3):
        _write_refused(
            tmp_path, ["a", "b"], [[0, 1]], r"qids entry must be a non-empty string", qids=(bad,)
        )


def test_write_run_checks_only_the_docids_it_references(tmp_path: Path):
    class Counting(list):
        reads = 0

        def __getitem__(self, k):
            Counting.reads += 1
            return super().__getitem__(k)

    # unreferenced entries may be anything; each referenced one is read once
    docids = Counting(["a", "b c", "", "d", None] + [f"x{i}" for i in range(1000)])
    ids = np.array([[0, 3, 5], [5, 3, -1], [0, 6, 3]])
    path = write_trec_run(tmp_path / "r.trec", ["q1", "q2", "q3"], docids, np.ones(ids.shape), ids)
    assert Counting.reads == 4  # rows 0, 3, 5, 6
    assert read_trec_run(path)["q3"] == {"a": 1.0, "x1": 1.0, "d": 1.0}
