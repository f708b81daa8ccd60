"""Training: config validation, a short run that learns, and resume after a kill."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from densescale import data
from densescale.models import build_encoder, train_tokenizer
from densescale.train import TrainConfig, train

TINY = {
    "protocol": "paper",
    "batch_size": 16,
    "num_negatives": 32,
    "lr": 2e-3,
    "max_steps": 12,
    "query_max_length": 12,
    "passage_max_length": 32,
    "eval_every": 6,
    "dev_pairs": 64,
    "dev_pool": 300,
    "dev_repeats": 1,
    "checkpoint_every": 3,
    "loss_backend": "torch",
    "device": "cpu",
}


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    path = data.synthetic(
        root / "col", num_passages=1500, num_train_queries=800, num_dev=100, num_test=100, seed=3
    )
    col = data.load_beir(path)
    tok = train_tokenizer([col.corpus[i] for i in range(len(col.corpus))], 600, root / "tok")
    pairs = data.annotation_pairs(col, source="human", split="train")[:400]
    dev = data.annotation_pairs(col, source="human", split="dev")
    return root, path, col, tok, pairs, dev


def _history_losses(run_dir: Path) -> list[float]:
    return [h["loss"] for h in json.loads((run_dir / "train_result.json").read_text())["history"]]


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="protocol"):
        TrainConfig(protocol="nope")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=-1.0)
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({"lrr": 1e-3})


def test_training_lowers_dev_ce_and_writes_files(tiny_setup, tmp_path):
    _, _, col, tok, pairs, dev = tiny_setup
    torch.manual_seed(0)
    model = build_encoder("L1-H32", vocab_size=tok.vocab_size)
    cfg = TrainConfig(**{**TINY, "max_steps": 30, "eval_every": 10})
    res = train(model, tok, pairs, col.corpus, tmp_path / "run", cfg, dev_pairs=dev, progress=False)
    assert res.steps == 30
    ces = [h["dev_ce"] for h in res.history if "dev_ce" in h]
    assert len(ces) == 3 and ces[-1] < ces[0]
    assert res.best_dev_ce == min(ces)
    for name in ("checkpoint.pt", "best_model.pt", "train_result.json"):
        assert (tmp_path / "run" / name).exists()
    again = train(
        model, tok, pairs, col.corpus, tmp_path / "run", cfg, dev_pairs=dev, progress=False
    )
    assert again.steps == res.steps and again.best_dev_ce == res.best_dev_ce


def test_batch_larger_than_data_is_a_clear_error(tiny_setup, tmp_path):
    _, _, col, tok, pairs, _ = tiny_setup
    model = build_encoder("L1-H32", vocab_size=tok.vocab_size)
    with pytest.raises(ValueError, match="batch_size"):
        train(
            model, tok, pairs[:4], col.corpus, tmp_path / "r", TrainConfig(**TINY), progress=False
        )


SCRIPT = """
import sys, torch
from densescale import data
from densescale.models import build_encoder, load_tokenizer
from densescale.train import TrainConfig, train
cfg = TrainConfig(**{cfg!r})
col = data.load_beir({col!r})
tok = load_tokenizer({tok!r})
pairs = data.annotation_pairs(col, source="human", split="train")[:400]
dev = data.annotation_pairs(col, source="human", split="dev")
torch.manual_seed(0)
model = build_encoder("L1-H32", vocab_size=tok.vocab_size)
train(model, tok, pairs, col.corpus, {out!r}, cfg, dev_pairs=dev, progress=False)
"""


def test_killed_run_resumes_to_the_same_result(tiny_setup, tmp_path):
    root, path, *_ = tiny_setup
    cfg = dict(TINY)
    script = lambda out: SCRIPT.format(cfg=cfg, col=str(path), tok=str(root / "tok"), out=str(out))
    # uninterrupted reference
    subprocess.run([sys.executable, "-c", script(tmp_path / "a")], check=True, timeout=300)
    # killed as soon as its first checkpoint exists, then resumed
    proc = subprocess.Popen([sys.executable, "-c", script(tmp_path / "b")])
    deadline = time.time() + 240
    while not (tmp_path / "b" / "checkpoint.pt").exists():
        assert proc.poll() is None, "run finished before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert not (tmp_path / "b" / "train_result.json").exists()
    subprocess.run([sys.executable, "-c", script(tmp_path / "b")], check=True, timeout=300)
    a, b = _history_losses(tmp_path / "a"), _history_losses(tmp_path / "b")
    assert len(a) == len(b) == cfg["max_steps"]
    assert a == pytest.approx(b, rel=1e-5)
