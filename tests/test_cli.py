"""The `densescale` command end to end on a small BEIR folder: data, train, eval, search, budget."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _cli import run_cli as _cli

from densescale import data


@pytest.fixture(scope="module")
def beir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return data.synthetic(
        root / "col", num_passages=1200, num_train_queries=600, num_dev=80, num_test=80, seed=7
    )


def test_train_then_eval_from_the_cli(beir, tmp_path):
    run = tmp_path / "run"
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        "[train]\nquery_max_length = 12\npassage_max_length = 32\neval_every = 5\n"
        "dev_pairs = 40\ndev_pool = 300\ndev_repeats = 1\n[eval]\nnum_negatives = 64\n"
        "repeats = 2\n"
    )
    r = _cli(
        "train",
        "--collection",
        str(beir),
        "--config",
        str(cfg),
        "--model",
        "L1-H32",
        "--data-size",
        "300",
        "--out",
        str(run),
        "--vocab-size",
        "500",
        "--max-steps",
        "10",
        "--batch-size",
        "16",
        "--num-negatives",
        "32",
        "--lr",
        "2e-3",
    )
    assert r.returncode == 0, r.stderr
    assert "N = 39,104" in r.stdout and (run / "best_model.pt").exists()
    r = _cli(
        "eval",
        "--collection",
        str(beir),
        "--config",
        str(cfg),
        "--model-dir",
        str(run),
        "--split",
        "test",
        "-k",
        "20",
    )
    assert r.returncode == 0, r.stderr
    rec = json.loads((run / "eval.test.json").read_text())
    assert rec["N"] == 39_104 and rec["D"] == 300 and 0 < rec["ce"] < 20
    assert set(rec["metrics"]) >= {"mrr@10", "ndcg@10", "map"}
    assert set(rec["time"]) == {"encode", "search", "ce", "metrics"}
    assert (run / "eval.test.trec").exists()


def test_bad_flags_fail_before_any_work(beir, tmp_path):
    r = _cli("train", "--collection", str(beir), "--model", "L99-H7", "--out", str(tmp_path / "x"))
    assert r.returncode != 0 and "L99-H7" in (r.stderr + r.stdout)
    r = _cli(
        "train", "--collection", str(beir), "--data-size", "10000000", "--out", str(tmp_path / "y")
    )
    assert r.returncode != 0 and "exceeds" in r.stderr
    assert not (tmp_path / "y" / "checkpoint.pt").exists()


def test_search_writes_a_trec_run(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "q.npy", rng.standard_normal((5, 16), dtype=np.float32))
    np.save(tmp_path / "c.npy", rng.standard_normal((50, 16), dtype=np.float32))
    r = _cli(
        "search",
        str(tmp_path / "q.npy"),
        str(tmp_path / "c.npy"),
        "-k",
        "3",
        "--out",
        str(tmp_path / "run.trec"),
    )
    assert r.returncode == 0, r.stderr
    run = data.read_trec_run(tmp_path / "run.trec")
    assert len(run) == 5 and all(len(v) == 3 for v in run.values())


def test_budget_with_the_paper_law():
    r = _cli("budget", "50000")
    assert r.returncode == 0, r.stderr
    assert "with inference cost" in r.stdout and "without inference cost" in r.stdout
