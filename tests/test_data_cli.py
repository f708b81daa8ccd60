"""``densescale data`` subcommand (run through densescale.data.cli.main)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from densescale.data import read_oracle
from densescale.data.cli import main

SMALL = [
    "--num-passages",
    "2000",
    "--num-train-queries",
    "500",
    "--num-dev",
    "50",
    "--num-test",
    "50",
    "--set",
    "vocab_size=1500",
    "--set",
    "num_topics=40",
    "--set",
    "rare_start=400",
    "--set",
    "repeats=2",
]


def test_synthetic_then_info(tmp_path: Path, capsys):
    out = tmp_path / "syn"
    assert main(["data", "synthetic", str(out), *SMALL]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["path"] == str(out)
    assert made["oracle_ce"]["test"] == read_oracle(out)["splits"]["test"]["oracle_ce"]
    assert read_oracle(out)["config"]["vocab_size"] == 1500
    assert main(["data", "info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["passages"] == 2000 and info["queries"] == 600
    assert info["splits"]["train"]["queries"] == 500 and info["splits"]["train"]["pairs"] == 500
    assert info["splits"]["train"]["grades"] == {"1": 500}
    assert "train_positive_overlap" in info["splits"]["test"]
    assert info["oracle_ce"] == made["oracle_ce"]


def test_bad_arguments(tmp_path: Path, capsys):
    with pytest.raises(SystemExit):
        main(["data", "synthetic", str(tmp_path / "x"), "--set", "nonsense=1"])
    assert "FIELD=VALUE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "info", str(tmp_path / "absent")])
    assert "does not exist" in capsys.readouterr().err


def _beir(root: Path, qrels: dict[str, list[tuple[str, str, int]]]) -> Path:
    """A tiny BEIR folder with 10 passages and 8 queries, and the given qrels per split."""
    (root / "qrels").mkdir(parents=True)
    corpus = [{"_id": f"d{i}", "title": "", "text": f"passage {i}"} for i in range(10)]
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    queries = [{"_id": f"q{i}", "text": f"query {i}"} for i in range(8)]
    (root / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    for split, rows in qrels.items():
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{r}" for q, d, r in rows]
        (root / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_info_measures_overlap_with_training_and_grades(tmp_path: Path, capsys):
    from densescale import data

    path = _beir(
        tmp_path / "c",
        {
            "train": [("q0", "d0", 1), ("q1", "d1", 2), ("q2", "d2", 1)],
            # q3 -> d0 is a training positive, q4 -> d5 is not, q5 has one of each;
            # q6 -> d1 is judged 1 only (below relevance level 2)
            "test": [
                ("q3", "d0", 2),
                ("q4", "d5", 2),
                ("q5", "d6", 1),
                ("q5", "d2", 2),
                ("q6", "d1", 1),
            ],
        },
    )
    col = data.load_beir(path)
    ov = data.positive_overlap(col, "test")
    assert (ov.pairs, ov.overlapping, ov.clean_queries) == (5, 3, ("q4",))
    assert ov.share == pytest.approx(0.6)
    strict = data.positive_overlap(col, "test", relevance_level=2)
    # at level 2 the training positives are {d1}; test positives d0, d5, d2: none overlaps
    assert (strict.pairs, strict.overlapping) == (3, 0)
    assert strict.clean_queries == ("q3", "q4", "q5")
    with pytest.raises(ValueError, match="relevance_level"):
        data.positive_overlap(col, "test", relevance_level=0)
    assert main(["data", "info", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["splits"]["test"]["grades"] == {"1": 2, "2": 3}
    assert info["splits"]["test"]["train_positive_overlap"]["share"] == pytest.approx(0.6)
    assert main(["data", "info", str(path), "--relevance-level", "2"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["splits"]["test"]["pairs"] == 3
    assert info["splits"]["test"]["train_positive_overlap"]["overlapping_pairs"] == 0
