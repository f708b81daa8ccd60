"""The pretraining stage (issue 18): its config, its loop (curves, resume, cost) and the study's
cache (one pretraining per size and seed, reused, counted in the records and the cost model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_study import write_study

import densescale.train.pretrain as pretrain_module
from densescale.models import build_encoder
from densescale.models.tokenizer import train_tokenizer
from densescale.scaling import CostModel
from densescale.study import ResultsStore, load_study, parse_study, run_study
from densescale.study.config import estimate_gpu_hours
from densescale.train.pretrain import PretrainConfig, pretrain

PRETRAIN = """
[pretrain]
objectives = ["mlm", "crop"]
steps = 4
batch_size = 8
heldout = 16
eval_every = 2
log_every = 1
checkpoint_every = 2
max_length = 24
"""

WORDS = [
    "fever",
    "cough",
    "rash",
    "pain",
    "joint",
    "liver",
    "kidney",
    "heart",
    "lung",
    "blood",
    "skin",
    "bone",
    "nerve",
    "eye",
    "ear",
]


def _corpus(n: int = 60) -> list[str]:
    return [
        " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(12 + i % 9))
        + f". Sentence two of passage {i}. And three."
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return train_tokenizer(_corpus(), 200, tmp_path_factory.mktemp("tok"))


def _model(tokenizer):
    torch.manual_seed(0)
    return build_encoder("L1-H16", vocab_size=tokenizer.vocab_size, out_dim=16)


@pytest.mark.parametrize(
    "table, message",
    [
        ("objectives = ['mlm']\nstep = 3", "unknown key(s) in [pretrain]: ['step']"),
        ("objectives = ['mask']", "pretrain.objectives must be a list drawn from"),
        ("objectives = []", "pretrain.objectives must be non-empty"),
        ("steps = 0", "pretrain.steps must be an integer >= 1"),
        ("mask_prob = 1.5", "pretrain.mask_prob must be in (0, 1)"),
        ("crop_min = 0.6\ncrop_max = 0.5", "pretrain.crop_min / crop_max"),
    ],
)
def test_bad_pretrain_tables_fail_naming_the_key(table, message):
    raw = {"collection": {"kind": "synthetic"}, "grid": {"models": ["L1-H8"], "data_sizes": [10]}}
    import tomllib

    raw["pretrain"] = tomllib.loads(table)
    with pytest.raises(ValueError) as e:
        parse_study(raw)
    assert message in str(e.value)


@pytest.mark.parametrize("objective", ["mlm", "crop", "ict"])
def test_pretraining_writes_its_curve_and_cost(tmp_path, tokenizer, objective):
    model = _model(tokenizer)
    before = {k: v.clone() for k, v in model.bert.state_dict().items()}
    cfg = PretrainConfig(
        objectives=(objective,),
        steps=4,
        batch_size=8,
        heldout=16,
        eval_every=2,
        log_every=1,
        max_length=24,
    )
    result = pretrain(model, tokenizer, _corpus(), tmp_path, cfg)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(r["objective"] == objective for r in rows)
    assert [r["step"] for r in rows if "heldout_loss" in r] == [2, 4]
    assert result.steps == 4 and result.tokens == rows[-1]["tokens"] > 0
    assert result.flops == pytest.approx(rows[-1]["flops"]) and result.flops > 6 * result.tokens
    assert set(result.heldout_loss) == {objective}
    assert any(not torch.equal(before[k], v) for k, v in model.bert.state_dict().items())
    # a finished folder is read, not retrained
    again = _model(tokenizer)
    assert pretrain(again, tokenizer, _corpus(), tmp_path, cfg).to_dict() == result.to_dict()
    for k, v in model.bert.state_dict().items():
        assert torch.equal(v.cpu(), again.bert.state_dict()[k])


def test_killed_pretraining_resumes_to_the_same_weights(tmp_path, tokenizer, monkeypatch):
    cfg = PretrainConfig(
        objectives=("mlm", "ict"),
        steps=3,
        batch_size=8,
        heldout=16,
        checkpoint_every=2,
        max_length=24,
    )
    ref = _model(tokenizer)
    pretrain(ref, tokenizer, _corpus(), tmp_path / "ref", cfg)

    real, calls = pretrain_module._step_loss, []

    def dies_at_step_5(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pretrain_module, "_step_loss", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_model(tokenizer), tokenizer, _corpus(), tmp_path / "killed", cfg)
    assert (tmp_path / "killed" / "checkpoint.pt").exists()
    monkeypatch.setattr(pretrain_module, "_step_loss", real)
    resumed = _model(tokenizer)
    result = pretrain(resumed, tokenizer, _corpus(), tmp_path / "killed", cfg)
    assert result.steps == 6
    steps = [json.loads(x)["step"] for x in (tmp_path / "killed" / "metrics.jsonl").open()]
    assert steps == sorted(set(steps))  # no line of the lost step 5 twice
    for k, v in ref.bert.state_dict().items():
        torch.testing.assert_close(resumed.bert.state_dict()[k], v)


def test_pretrained_cells_share_one_cached_pretraining(tmp_path):
    study = load_study(write_study(tmp_path, tmp_path / "pre", extra=PRETRAIN))
    out = run_study(study, progress=False)
    records = {r["key"]: r for r in out["records"]}
    assert len(records) == 3  # L2-H32 at D = 300 and 100, L1-H32 at D = 300
    entries = sorted((tmp_path / "pre" / "cache" / "pretrain").glob("*_s0_*/pretrain_result.json"))
    assert [p.parent.name.split("_")[0] for p in entries] == ["L1-H32", "L2-H32"]
    big = [r for r in records.values() if r["model"] == "L2-H32"]
    assert {r["pretrain"]["key"] for r in big} == {big[0]["pretrain"]["key"]}
    assert sorted(r["pretrain"]["reused"] for r in big) == [False, True]
    for r in records.values():
        pre = r["pretrain"]
        assert pre["steps"] == 8 and pre["tokens"] > 0 and pre["flops"] > 0
        assert pre["objectives"] == ["mlm", "crop"]
        assert r["config"]["pretrain"]["cache_key"] == pre["key"]
        assert Path(pre["path"], "metrics.jsonl").is_file()
    # the stage enters the cell's hash: the same grid without it is another config
    plain = load_study(write_study(tmp_path, tmp_path / "plain"))
    from densescale.study.cell import cell_config

    cell = plain.cells()[0]
    assert cell_config(plain, cell, "f")[1] != cell_config(study, cell, "f")[1]
    # ... the study's compute estimate and the report's budget cost model count it
    assert estimate_gpu_hours(study) > estimate_gpu_hours(plain)
    from densescale.report.fits import collection_cost

    cost, said = collection_cost(list(records.values()), None)
    assert cost.pretrain_tokens == max(r["pretrain"]["tokens"] for r in records.values())
    assert "pretrain_tokens" in said
    # a rerun reuses everything and leaves the store as it is
    before = (tmp_path / "pre" / "results.jsonl").read_text()
    run_study(study, progress=False)
    assert (tmp_path / "pre" / "results.jsonl").read_text() == before
    assert len(ResultsStore(tmp_path / "pre" / "results.jsonl").records()) == 3


def test_cost_model_counts_pretraining_once_whatever_d():
    plain, pre = CostModel(), CostModel(pretrain_tokens=1e9)
    extra = pre.split(1e6, [1e3, 1e5]).pretraining
    assert extra == pytest.approx([pre.dollars_per_flop * 6 * 1e6 * 1e9] * 2)
    assert pre.cost(1e6, 1e3) - plain.cost(1e6, 1e3) == pytest.approx(extra[0])
    assert plain.split(1e6, 1e3).pretraining == 0
