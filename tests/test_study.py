"""Study runner: config validation, resume after a kill, the submitit path, the CLI."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from densescale.study import ResultsStore, load_study, parse_study, run_study

# The tiny training and evaluation settings every study test shares (test_study_folder too).
TINY_TRAIN_EVAL = """\
query_max_length = 12
passage_max_length = 32
eval_every = 4
dev_pairs = 64
dev_pool = 300
dev_repeats = 1
checkpoint_every = 2
loss_backend = "torch"

[eval]
k = 10
num_negatives = 64
repeats = 2
max_queries = 40
"""

STUDY = (
    """
name = "tiny"
output = "{out}"

[collection]
kind = "synthetic"
path = "{col}"

[collection.synthetic]
num_passages = 1500
num_train_queries = 800
num_dev = 100
num_test = 100
seed = 3

[grid]
models = ["L1-H32", "L2-H32"]
data_sizes = [100, 300]
design = "cross"

[tokenizer]
vocab_size = 600

[train]
batch_size = 16
num_negatives = 32
lr = 2e-3
max_steps = 8
"""
    + TINY_TRAIN_EVAL
    + """

[executor]
kind = "{executor}"
workers = 1
{extra}
"""
)


def write_study(tmp_path: Path, out: Path, executor: str = "local", extra: str = "") -> Path:
    f = tmp_path / f"{out.name}.toml"
    f.write_text(STUDY.format(out=out, col=tmp_path / "col", executor=executor, extra=extra))
    return f


def _ce_by_key(results: Path) -> dict[str, float]:
    return {r["key"]: r["ce"] for r in ResultsStore(results).records()}


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"grid": {"models": ["L1-H32"], "data_sizes": [10], "bogus": 1}}, "unknown key"),
        ({"grid": {"models": ["L99-H1"], "data_sizes": [10]}}, "neither a ladder size"),
        ({"grid": {"models": ["L1-H32"], "data_sizes": [0]}}, "positive integers"),
        ({"grid": {"models": ["L1-H32"], "data_sizes": [10], "sources": ["gpt"]}}, "sources"),
        ({"train": {"lr": -1.0}}, "lr"),
        ({"collection": {"kind": "tsv"}}, "collection.kind"),
    ],
)
def test_bad_study_files_fail_before_any_work(patch, message):
    raw = {
        "name": "x",
        "collection": {"kind": "synthetic"},
        "grid": {"models": ["L1-H32"], "data_sizes": [10]},
    }
    for k, v in patch.items():
        raw[k] = {**raw.get(k, {}), **v} if k != "grid" else v
    with pytest.raises(ValueError, match=message):
        parse_study(raw)


def test_presets_parse():
    from densescale.study.config import PRESETS

    for preset in PRESETS:
        study = load_study(preset=preset)
        assert study.cells()
    demo = load_study(preset="demo")
    assert demo.collection["kind"] == "synthetic"


def test_cpu_paper_preset_is_a_full_grid_the_collection_can_feed():
    """cpu-paper fits the joint law: every model at every data size, and the largest D fits in
    the synthetic collection's training queries."""
    from densescale.data.synthetic import SyntheticConfig

    study = load_study(preset="cpu-paper")
    cells = study.cells()
    assert len(cells) == len(study.models) * len(study.data_sizes) * len(study.seeds) == 70
    assert {(c.model, c.data_size) for c in cells} == {
        (m, d) for m in study.models for d in study.data_sizes
    }
    synth = SyntheticConfig(**study.collection["synthetic"])
    synth.validate()
    assert max(study.data_sizes) <= synth.num_train_queries


def test_data_size_beyond_the_training_pairs_is_rejected_by_prepare(tmp_path):
    """prepare() refuses such a grid; run_study first cuts it to the pairs (test_study_real)."""
    import dataclasses

    from densescale.study.prepare import prepare

    study = load_study(write_study(tmp_path, tmp_path / "big"))
    study = dataclasses.replace(study, data_sizes=(100, 10**7))
    with pytest.raises(ValueError, match="exceed"):
        prepare(study, progress=False)


def test_killed_study_resumes_to_identical_results(tmp_path):
    ref = load_study(write_study(tmp_path, tmp_path / "ref"))
    out = run_study(ref, progress=False)
    assert len(out["records"]) == 3
    assert Path(out["report"]).exists()

    f = write_study(tmp_path, tmp_path / "killed")
    cmd = [sys.executable, "-m", "densescale.cli", "study", str(f)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = tmp_path / "killed" / "results.jsonl"
    deadline = time.time() + 300
    # kill in the middle of the second cell: one record stored, a checkpoint of the next cell written
    while not (
        results.exists()
        and len(ResultsStore(results).records()) >= 1
        and any((tmp_path / "killed" / "cells").glob("*/checkpoint.pt"))
        and sum(1 for _ in (tmp_path / "killed" / "cells").glob("*/checkpoint.pt")) >= 2
    ):
        assert proc.poll() is None, "study finished before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert len(ResultsStore(results).records()) < 3
    rc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert rc.returncode == 0, rc.stderr
    assert "report" in rc.stdout
    assert _ce_by_key(results) == pytest.approx(
        _ce_by_key(tmp_path / "ref" / "results.jsonl"), rel=1e-6
    )
    # a third run finds nothing to do and leaves the store as it is
    before = results.read_text()
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    assert results.read_text() == before


def test_submitit_local_executor(tmp_path):
    pytest.importorskip("submitit")
    f = write_study(
        tmp_path,
        tmp_path / "sub",
        executor="submitit",
        extra='[executor.submitit]\ncluster = "local"\ntimeout_min = 10\n',
    )
    study = load_study(f)
    out = run_study(study, progress=False)
    assert len(out["records"]) == 3
    assert any((tmp_path / "sub" / "submitit").iterdir())


def test_cli_help_for_every_subcommand():
    for sub in ("data", "train", "eval", "search", "study", "report", "budget"):
        rc = subprocess.run(
            [sys.executable, "-m", "densescale.cli", sub, "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert rc.returncode == 0 and "usage" in rc.stdout


def test_cli_report_on_a_results_store(tmp_path):
    import math

    rows = []
    for n in (1e5, 4e5, 1.6e6, 6.4e6):
        for d in (1e3, 4e3, 1.6e4):
            ce = ((3e4 / n) ** (0.5 / 1.0) + 2e3 / d) ** 1.0 + 0.1
            rows.append(
                {
                    "key": f"{n}|{d}",
                    "model": f"m{int(n)}",
                    "N": int(n),
                    "D": int(d),
                    "source": "human",
                    "ce": ce * (1 + 0.005 * math.sin(n + d)),
                    "metrics": {},
                }
            )
    store = ResultsStore(tmp_path / "results.jsonl")
    for r in rows:
        store.append(r)
    rc = subprocess.run(
        [sys.executable, "-m", "densescale.cli", "report", str(store.path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert rc.returncode == 0, rc.stderr
    assert (tmp_path / "report" / "summary.md").exists()


def test_medquad_preset_runs_on_the_real_collection(medquad_path, tmp_path):
    """The medquad preset end to end on ../shared/data/medquad, shrunk to two short cells."""
    import dataclasses

    study = load_study(preset="medquad", output=tmp_path / "mq")
    assert study.collection["kind"] == "beir"
    study = dataclasses.replace(
        study,
        collection={**study.collection, "path": str(medquad_path)},
        models=("L1-H32",),
        data_sizes=(200, 400),
        tokenizer={"vocab_size": 2000, "train_texts": 3000},
        train=dataclasses.replace(
            study.train,
            max_steps=6,
            batch_size=16,
            num_negatives=16,
            eval_every=3,
            dev_pairs=64,
            dev_pool=500,
            dev_repeats=1,
            passage_max_length=48,
        ),
        epochs=0.0,
        eval={**study.eval, "max_queries": 60, "corpus_limit": 1500, "repeats": 2},
        executor={"kind": "local", "workers": 1},
    )
    out = run_study(study, progress=False)
    recs = out["records"]
    assert sorted(r["D"] for r in recs) == [200, 400]
    for r in recs:
        assert 0 < r["ce"] < 20 and set(r["metrics"]) >= {"mrr@10", "ndcg@10", "recall@100", "map"}
        assert r["N"] == 17_984 and r["d"] == 128 and r["num_queries"] == 60  # L1-H32, 128-d head
        assert r["chance_ce"] > 0 and "converged" in r and "seen_bias" in r
    assert Path(out["report"]).exists()


def test_pool_workers_stop_when_the_study_process_is_killed(tmp_path):
    import os
    import signal

    f = write_study(tmp_path, tmp_path / "orphans")
    f.write_text(f.read_text().replace("workers = 1", "workers = 2"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "densescale.cli", "study", str(f)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not any((tmp_path / "orphans" / "cells").glob("*/checkpoint.pt")):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    children = [
        int(p)
        for p in subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
    ]
    assert children
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        with open(f"/proc/{pid}/stat") as fh:  # a zombie waiting to be reaped is not running
            return fh.read().split(") ", 1)[1][0] != "Z"

    while any(alive(p) for p in children):
        assert time.time() < deadline, "pool workers outlived the killed study"
        time.sleep(0.2)


def test_medquad_sources_preset_is_one_data_size_law_per_source():
    """medquad-sources (the annotation-quality study): every source at the same six data sizes
    with one model and one test split, so each source gets a data-size law that can pass the
    usability checks (5 points for 3 parameters, with one left to spare for a weak source's
    smallest D near chance) and an exchange rate against human."""
    from densescale.data.annotations import parse_source
    from densescale.scaling import LawChecks

    study = load_study(preset="medquad-sources")
    assert study.collection == {"kind": "beir", "path": "../shared/data/medquad"}
    assert study.sources == ("human", "human-noise0.25", "human-noise0.5", "ict", "crop")
    kinds = [parse_source(s) for s in study.sources]
    assert [k for k, _ in kinds] == ["human", "human", "human", "ict", "crop"]
    assert [p.get("noise") for _, p in kinds] == [None, 0.25, 0.5, None, None]
    cells = study.cells()
    assert len(cells) == len(study.sources) * len(study.data_sizes) == 30
    for source in study.sources:
        sizes = sorted(c.data_size for c in cells if c.source == source)
        assert sizes == sorted(study.data_sizes) and len(sizes) > LawChecks().min_points(3)
    assert {(c.model, c.out_dim, c.seed) for c in cells} == {("L1-H32", 128, 0)}
    assert study.eval["split"] == "test" and study.train.patience * study.train.eval_every == 150


def test_medquad_sources_data_sizes_fit_every_source(medquad_path):
    """The largest D exists for every source on MedQuAD: human pairs, and ICT / crop pairs from
    the passages that are not dev or test positives."""
    from densescale.data import annotation_pairs
    from densescale.data.medquad import load_medquad

    study = load_study(preset="medquad-sources")
    collection = load_medquad(medquad_path)
    for source in study.sources:
        assert len(annotation_pairs(collection, source, "train")) >= max(study.data_sizes), source
