"""A study folder never mixes results, an interrupt stops a study, and every check runs before any
cell (issue 16, items 5-7): all through the `densescale study` command on tiny synthetic data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_study import TINY_TRAIN_EVAL
from test_study_real import write_beir_without_dev

from densescale.cli import main
from densescale.study import ResultsStore, parse_study

STUDY = (
    """
name = "folder"
output = "{out}"

[collection]
kind = "beir"
path = "{col}"

[grid]
models = ["L1-H32"]
data_sizes = {sizes}

[tokenizer]
vocab_size = 500

[train]
batch_size = 16
num_negatives = 32
lr = {lr}
epochs = {epochs}
max_steps = {max_steps}
device = "cpu"
"""
    + TINY_TRAIN_EVAL
    + """{eval_extra}

[executor]
kind = "local"
workers = {workers}
threads_per_worker = 1
"""
)


def _beir_without_dev(root: Path, seed: int) -> Path:
    sizes = {"num_passages": 1200, "num_train_queries": 600, "num_dev": 60, "num_test": 60}
    return write_beir_without_dev(root, seed, **sizes)


@pytest.fixture(scope="module")
def collections(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder-cols")
    return _beir_without_dev(root, 3), _beir_without_dev(root, 4)


def _write(path: Path, out: Path, col: Path, **kw) -> Path:
    values = {"sizes": "[100]", "lr": "2e-3", "max_steps": 8, "workers": 1, "eval_extra": ""}
    values["epochs"] = 1.0
    values.update(kw)
    path.write_text(STUDY.format(out=out, col=col, **values))
    return path


def _records(out: Path) -> dict[str, dict]:
    return {r["key"]: r for r in ResultsStore(out / "results.jsonl").records()}


def test_changed_config_recomputes_exactly_the_cells_it_changes(tmp_path, collections, capsys):
    out = tmp_path / "study"
    f = _write(tmp_path / "s.toml", out, collections[0], sizes="[100, 300]")
    assert main(["study", str(f)]) == 0
    first = _records(out)
    assert len(first) == 2 and all(r["config_hash"] and r["densescale"] for r in first.values())
    capsys.readouterr()

    # epochs = 1 at batch 16: D=100 trains 7 steps, D=300 is capped at max_steps; raising the
    # cap changes the D=300 cell only
    _write(f, out, collections[0], sizes="[100, 300]", max_steps=10)
    assert main(["study", str(f)]) == 0
    said = capsys.readouterr().out
    assert "1/2 cells done" in said and "changed: train.max_steps" in said
    second = _records(out)
    small, large = sorted(second, key=lambda k: second[k]["D"])
    assert second[small] == first[small]
    assert second[large]["config_hash"] != first[large]["config_hash"]
    assert second[large]["train"]["max_steps"] == 10
    old = [json.loads(x) for x in (out / "superseded.jsonl").read_text().splitlines()]
    assert old == [first[large]]
    assert any((out / "superseded").iterdir())  # the old cell folder, moved aside
    cell_dirs = {
        p.name: json.loads((p / "cell.json").read_text()) for p in (out / "cells").iterdir()
    }
    assert {c["config_hash"] for c in cell_dirs.values()} == {
        r["config_hash"] for r in second.values()
    }

    # lr and norm_scale (the reported case): every cell runs again, none is reported stale
    _write(f, out, collections[0], sizes="[100, 300]", max_steps=10, lr="3e-3")
    f.write_text(f.read_text().replace("lr = 3e-3", "lr = 3e-3\nnorm_scale = 20.0"))
    assert main(["study", str(f)]) == 0
    said = capsys.readouterr().out
    assert "0/2 cells done" in said and "train.lr" in said and "norm_scale" in said
    third = _records(out)
    assert all(
        r["train"]["lr"] == 3e-3 and r["config"]["norm_scale"] == 20.0 for r in third.values()
    )
    # unchanged: nothing runs, nothing is rewritten
    before = (out / "results.jsonl").read_text()
    assert main(["study", str(f)]) == 0
    assert "2/2 cells done" in capsys.readouterr().out
    assert (out / "results.jsonl").read_text() == before


def test_another_collection_is_refused_then_moved_aside_with_force(tmp_path, collections, capsys):
    out = tmp_path / "study"
    f = _write(tmp_path / "s.toml", out, collections[0])
    assert main(["study", str(f)]) == 0
    results = (out / "results.jsonl").read_text()
    dev = (out / "splits" / "qrels" / "dev.tsv").read_text()
    bm25 = (out / "bm25.test.json").read_text()
    capsys.readouterr()

    assert main(["study", str(f), "--collection", str(collections[1])]) == 2
    err = capsys.readouterr().err
    assert "another collection" in err and "--force" in err and "--out" in err
    # nothing was touched: results, dev split and BM25 row are the first collection's
    assert (out / "results.jsonl").read_text() == results
    assert (out / "splits" / "qrels" / "dev.tsv").read_text() == dev
    assert (out / "bm25.test.json").read_text() == bm25

    assert main(["study", str(f), "--collection", str(collections[1]), "--force"]) == 0
    assert "moved to" in capsys.readouterr().out
    (prev,) = (out / "previous").iterdir()
    assert (prev / "results.jsonl").read_text() == results
    assert (prev / "splits" / "qrels" / "dev.tsv").read_text() == dev
    assert (prev / "bm25.test.json").read_text() == bm25 and (prev / "cells").is_dir()
    (rec,) = _records(out).values()
    manifest = json.loads((out / "study.json").read_text())
    assert rec["config"]["collection"]["fingerprint"] == manifest["fingerprint"]
    assert json.loads(bm25)["settings"]["collection"] != manifest["fingerprint"]
    assert (
        json.loads((out / "bm25.test.json").read_text())["settings"]["collection"]
        == (manifest["fingerprint"])
    )


def test_a_folder_without_a_record_of_its_collection_is_refused(tmp_path, collections, capsys):
    out = tmp_path / "study"
    ResultsStore(out / "results.jsonl").append({"key": "L1-H32|D=100|human|seed=0", "ce": 1.0})
    f = _write(tmp_path / "s.toml", out, collections[0])
    assert main(["study", str(f)]) == 2
    assert "did not record which collection" in capsys.readouterr().err
    assert not (out / "cells").exists()


def test_bad_eval_setting_is_caught_before_any_training(tmp_path, collections, capsys):
    out = tmp_path / "study"
    # 60 evaluated passages minus the judged ones cannot feed 64 negatives per pair
    f = _write(tmp_path / "s.toml", out, collections[0], eval_extra="corpus_limit = 60")
    assert main(["study", str(f)]) == 2
    err = capsys.readouterr().err
    assert "eval.num_negatives=64 exceeds the evaluation pool" in err
    assert not (out / "cells").exists() and not list(out.rglob("checkpoint.pt"))
    assert not (out / "results.jsonl").exists()
    with pytest.raises(ValueError, match="pool_size"):
        parse_study(
            {
                "collection": {"kind": "synthetic"},
                "grid": {"models": ["L1-H32"], "data_sizes": [10]},
                "eval": {"num_negatives": 64, "pool_size": 10},
            }
        )


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:  # a zombie waiting to be reaped is not running
            return fh.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def _wait_for(cond, proc, timeout=300.0) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert proc.poll() is None, "the study finished before it could be interrupted"
        assert time.time() < deadline
        time.sleep(0.05)


@pytest.mark.parametrize("workers", [1, 2])
def test_interrupt_stops_the_study_and_a_rerun_resumes(tmp_path, collections, workers):
    """SIGINT while a cell trains: exit 130 within seconds with the resume command, finished cells
    and checkpoints intact, nothing queued runs on; the rerun finishes the study. With a pool the
    whole process group gets the signal, as from a terminal's Ctrl-C or `timeout -s INT`."""
    out = tmp_path / "study"
    f = _write(
        tmp_path / "s.toml",
        out,
        collections[0],
        sizes="[100, 200, 300]",
        max_steps=40,
        epochs=3.0,
        workers=workers,
    )
    cmd = [sys.executable, "-m", "densescale.cli", "study", str(f)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    results = out / "results.jsonl"

    def training() -> bool:
        done = len(ResultsStore(results).records()) if results.exists() else 0
        return done >= 1 and len(list((out / "cells").glob("*/checkpoint.pt"))) > done

    _wait_for(training, proc)
    children = subprocess.run(
        ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    t0 = time.time()
    if workers == 1:
        proc.send_signal(signal.SIGINT)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert time.time() - t0 < 20
    assert "Traceback" not in stderr
    assert f"resume with: densescale study {f}" in stderr
    done = ResultsStore(results).records()  # parses: no half-written line
    assert 1 <= len(done) < 3
    # every finished cell keeps its checkpoint, and so does a cell stopped while training (with two
    # workers a second cell may finish between the check above and the signal: >=, not >)
    assert len(list((out / "cells").glob("*/checkpoint.pt"))) >= len(done)
    deadline = time.time() + 10
    while any(_running(int(p)) for p in children):  # no pool worker trains on
        assert time.time() < deadline, "pool workers outlived the interrupted study"
        time.sleep(0.2)
    time.sleep(2)
    assert len(ResultsStore(results).records()) == len(done)

    rc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert rc.returncode == 0, rc.stderr
    assert f"{len(done)}/3 cells done" in rc.stdout
    after = _records(out)
    assert len(after) == 3 and all(after[r["key"]] == r for r in done)
