"""Every saved model carries its whole config (issue 21, item 4): a study cell writes model.json
(encoder config, tokenizer, scoring), loads and evaluates with nothing copied from the study
file, and a norm_scale / out_dim that contradicts the saved config is an error naming both."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from _cli import run_cli
from test_study import STUDY

from densescale.models import encode_texts
from densescale.models.trained import load_trained
from densescale.study import load_study, run_study

# the tiny study of test_study, one cell: normalised 16-d embeddings (score = 20 cos)
STUDY = STUDY.replace(
    'models = ["L1-H32", "L2-H32"]\ndata_sizes = [100, 300]',
    'models = ["L1-H32"]\ndata_sizes = [300]\ndims = [16]',
).replace("max_steps = 8\n", "max_steps = 8\nnorm_scale = 20.0\n")
PROBES = ["what raises eye pressure", "blood sugar over years", "x"]


@pytest.fixture(scope="module")
def cell(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cfg")
    f = root / "study.toml"
    text = STUDY.format(out=root / "study", col=root / "col", executor="local", extra="")
    assert "dims = [16]" in text and "norm_scale = 20.0" in text
    f.write_text(text)
    run_study(load_study(f), progress=False)
    (cell,) = (root / "study" / "cells").iterdir()
    return cell


def test_a_cell_writes_its_whole_config(cell):
    meta = json.loads((cell / "model.json").read_text())
    assert meta["scoring"] == {"similarity": "scaled_cosine", "norm_scale": 20.0, "out_dim": 16}
    assert meta["encoder"]["norm_scale"] == 20.0 and meta["encoder"]["out_dim"] == 16
    assert meta["encoder"]["hidden"] == 32 and meta["encoder"]["vocab_size"] > 0
    assert meta["model"] == "L1-H32" and meta["D"] == 300 and meta["key"]
    assert (cell / meta["tokenizer"] / "tokenizer.json").is_file()


def test_a_cell_loads_alone_with_nothing_from_its_study(cell, tmp_path):
    ref = load_trained(cell)
    # the cell folder on its own, away from its study (no study tokenizer, no results.jsonl)
    alone = tmp_path / "elsewhere" / "cells" / cell.name
    shutil.copytree(cell, alone)
    tm = load_trained(alone)
    assert tm.norm_scale == 20.0 and tm.model.config.out_dim == 16
    a = encode_texts(ref.model, ref.tokenizer, PROBES, max_length=32)
    b = encode_texts(tm.model, tm.tokenizer, PROBES, max_length=32)
    assert torch.equal(a, b)
    assert torch.allclose(b.norm(dim=-1), torch.full((3,), 20.0**0.5), atol=1e-5)


def test_a_contradicting_norm_scale_or_out_dim_is_an_error(cell):
    assert load_trained(cell, norm_scale=20.0, out_dim=16).norm_scale == 20.0  # agreeing: fine
    with pytest.raises(ValueError, match=r"norm_scale = 5 .*norm_scale = 20 \(model.json\)"):
        load_trained(cell, norm_scale=5.0)
    with pytest.raises(ValueError, match=r"out_dim = 768 .*out_dim = 16"):
        load_trained(cell, out_dim=768)
    # model.json and cell.json that disagree: the folder was tampered with, refuse it
    meta = json.loads((cell / "model.json").read_text())
    bad = cell.parent / "tampered"
    shutil.copytree(cell, bad)
    meta["encoder"]["norm_scale"] = 1.0
    (bad / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"norm_scale = 20 \(cell.json\).*norm_scale = 1 "):
        load_trained(bad)
    shutil.rmtree(bad)


def test_eval_of_a_cell_needs_no_settings_and_checks_score_scale(cell, tmp_path):
    col = cell.parent.parent.parent / "col"
    out = tmp_path / "rec.json"
    r = run_cli("eval", "--collection", str(col), "--model-dir", str(cell), "-k", "10",
                "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.read_text())
    assert rec["model"] == "L1-H32" and rec["D"] == 300 and 0 < rec["ce"] < rec["chance_ce"]
    r = run_cli("eval", "--collection", str(col), "--model-dir", str(cell),
                "--score-scale", "5", "--out", str(out))  # fmt: skip
    assert r.returncode != 0 and "norm_scale = 5" in r.stderr and "norm_scale = 20" in r.stderr
    assert "Traceback" not in r.stderr
    # without --collection a cell is not silently evaluated on the default synthetic collection
    r = run_cli("eval", "--model-dir", str(cell))
    assert r.returncode != 0 and "--collection" in r.stderr and str(col) in r.stderr
    # a study folder is not one model: the advice names a real cell, not a flag eval lacks
    r = run_cli("eval", "--collection", str(col), "--model-dir", str(cell.parent.parent))
    assert r.returncode != 0 and "is a study folder" in r.stderr and cell.name in r.stderr


def test_an_older_cell_without_model_json_still_loads(cell, tmp_path):
    old = cell.parent / "old_cell"
    shutil.copytree(cell, old)
    (old / "model.json").unlink()
    shutil.rmtree(old / "tokenizer")
    try:
        tm = load_trained(old)  # cell.json, the study's tokenizer and the weights' shapes
        ref = load_trained(cell)
        assert tm.norm_scale == 20.0 and tm.model.config == ref.model.config
        a = encode_texts(ref.model, ref.tokenizer, PROBES, max_length=32)
        assert torch.equal(a, encode_texts(tm.model, tm.tokenizer, PROBES, max_length=32))
        with pytest.raises(ValueError, match=r"norm_scale = 0 .*norm_scale = 20 \(cell.json\)"):
            load_trained(old, norm_scale=0.0)
    finally:
        shutil.rmtree(old)
