"""What a study's numbers mean on a real collection: graded qrels under a relevance level, test
positives that are also training positives (with the clean subset beside), ranking metrics
against a random ranking, the evaluation corpus named next to BM25, and cells that stopped by
patience without converging."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_study_real import TINY_TRAIN

from densescale import data
from densescale.study import parse_study, run_study
from densescale.study.runner import describe_record


@pytest.fixture(scope="module")
def graded_overlapping(tmp_path_factory) -> Path:
    """A synthetic collection rewritten with graded qrels (every other training pair grade 2, the
    rest 1) and test queries whose positive is, for a third of them, a training positive."""
    root = tmp_path_factory.mktemp("graded")
    src = data.synthetic(
        root / "src", num_passages=1500, num_train_queries=800, num_dev=100, num_test=90, seed=7
    )
    dst = root / "col"
    (dst / "qrels").mkdir(parents=True)
    for f in ("corpus.jsonl", "queries.jsonl"):
        shutil.copy(src / f, dst / f)
    header = "query-id\tcorpus-id\tscore"

    def rows(split: str) -> list[list[str]]:
        lines = (src / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]
        return [line.split("\t") for line in lines if line.strip()]

    train = rows("train")
    for i, r in enumerate(train):
        r[2] = "2" if i % 2 == 0 else "1"
    test = rows("test")
    for i, r in enumerate(test):
        if i % 3 == 0:  # this test query's positive becomes a grade-2 training positive
            r[1] = train[2 * i][1]
        r[2] = "2"
    for split, rs in (("train", train), ("test", test)):
        text = "\n".join([header] + ["\t".join(r) for r in rs]) + "\n"
        (dst / "qrels" / f"{split}.tsv").write_text(text)
    return dst


def _study(tmp_path: Path, col: Path, **over) -> dict:
    raw = {
        "name": "honest",
        "output": str(tmp_path / "study"),
        "collection": {"kind": "beir", "path": str(col)},
        "grid": {"models": ["L1-H32"], "data_sizes": [600]},
        "tokenizer": {"vocab_size": 500},
        "train": dict(TINY_TRAIN),
        "eval": {"k": 10, "num_negatives": 64, "repeats": 2, "relevance_level": 2},
        "executor": {"kind": "local", "workers": 1},
    }
    for key, value in over.items():
        raw[key].update(value)
    return raw


def test_relevance_level_overlap_and_chance_reach_every_record(
    tmp_path, graded_overlapping, capsys
):
    out = run_study(parse_study(_study(tmp_path, graded_overlapping)), progress=True)
    printed = capsys.readouterr().out
    # relevance level 2 halves the training pairs: the 600-pair size is cut to the 400 there are
    (rec,) = out["records"]
    assert rec["config"]["eval"]["relevance_level"] == 2
    # relevance level 2 keeps half the training pairs (of the train split left after the carved
    # dev split): the 600-pair size is cut to them
    col = data.carve_dev_split(data.load_beir(graded_overlapping), tmp_path / "study" / "splits")
    n2 = len(data.annotation_pairs(col, "human", relevance_level=2))
    n1 = len(data.annotation_pairs(col, "human"))
    assert n2 < 0.6 * n1 and rec["D"] == n2
    assert f"the collection has {n2} training pairs" in printed

    ov = data.positive_overlap(col, "test", relevance_level=2)
    assert 0.25 <= ov.share <= 0.35
    assert rec["overlap"]["share"] == pytest.approx(ov.share, abs=1e-6)
    assert rec["clean"]["num_queries"] == len(ov.clean_queries) > 50
    assert rec["clean"]["ce"] is not None and set(rec["clean"]["metrics"]) == set(rec["metrics"])
    assert f"{ov.share:.1%} of the 90 test pairs have a positive that is a training positive" in (
        printed
    )
    assert "CE pool" in printed and "for K = 64 negatives per pair" in printed
    # ranking metrics judged against a random ranking of the same 1,500 passages at depth 10
    assert 0 < rec["metrics_chance"]["mrr@10"] < 0.01
    assert set(rec["metrics_above_chance"]) == set(rec["metrics_stderr"]) == set(rec["metrics"])
    line = describe_record(rec)
    assert "(random 0.00" in line and f"clean subset ({len(ov.clean_queries)} queries)" in line
    # the BM25 row names what it was computed on, in the CLI and the report
    assert "BM25 reference (on 90 test queries over 1,500 passages (the full corpus))" in printed
    summary = Path(out["report"]).read_text()
    assert "90 test queries over 1,500 passages" in summary
    # the report says what the cells were evaluated on: the pool, the overlap, the clean subset
    section = summary.split("## What the cells were evaluated on")[1].split("\n## ")[0]
    assert f"CE pool: {rec['pool_size']:,} passages of the 1,500 evaluated, for K = 64" in section
    assert f"{ov.share:.1%} of the evaluated pairs have a positive that is also a training" in (
        section
    )
    assert f"| {rec['ce']:.4f} | {rec['clean']['ce']:.4f} |" in section


def test_a_cell_stopped_by_patience_at_its_first_evaluations_is_not_converged(
    tmp_path, graded_overlapping
):
    # a huge min_delta: no evaluation after the first counts as an improvement
    raw = _study(
        tmp_path,
        graded_overlapping,
        train={"max_steps": 40, "eval_every": 4, "patience": 2, "min_delta": 100.0},
    )
    (rec,) = run_study(parse_study(raw), progress=False)["records"]
    assert rec["train"]["stop_reason"] == "patience" and rec["train"]["best_step"] == 4
    assert rec["convergence"] in ("peaked_early", "above_chance", "memorising")
    assert rec["converged"] is False and rec["convergence"] in rec["flags"]
    assert "NOT CONVERGED (" in describe_record(rec) and "converged@" not in describe_record(rec)
