"""bench/bench_train.py runs (--smoke) and writes a row per provider plus a convergence row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_train.py"

THROUGHPUT_KEYS = {
    "bench",
    "provider",
    "device_name",
    "torch",
    "threads",
    "model",
    "batch_size",
    "negatives",
    "query_max_length",
    "passage_max_length",
    "steps",
    "tokens_per_s",
    "step_ms",
    "tokens_per_step",
    "ratio_vs_plain",
    "first_loss",
    "tokens_per_cpu_s",
    "cpu_ratio_vs_plain",
}
CONVERGE_KEYS = {"bench", "model", "steps", "best_step", "converged", "convergence", "stop_reason"}
CONVERGE_KEYS |= {"best_dev_ce"}


def test_bench_train_smoke_writes_rows(tmp_path):
    res = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--data", str(tmp_path / "data")]
        + ["--results", str(res)],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(res.glob("bench_train-cpu-*.json"))
    assert len(files) == 1 and files[0].with_suffix(".csv").exists()
    rows = json.loads(files[0].read_text())
    speed = {r["provider"]: r for r in rows if r["bench"] == "train"}
    assert set(speed) == {"train", "train:warm", "plain"}
    for row in speed.values():
        assert THROUGHPUT_KEYS <= set(row), THROUGHPUT_KEYS - set(row)
        assert row["tokens_per_s"] > 0 and row["tokens_per_step"] > 0
    # same batches, same initial weights, same dropout masks: the plain loop is the same training
    for name in ("plain", "train:warm"):
        assert speed[name]["tokens_per_step"] == speed["train"]["tokens_per_step"]
        assert abs(speed[name]["first_loss"] - speed["train"]["first_loss"]) < 1e-4
    assert speed["plain"]["ratio_vs_plain"] == 1.0
    (conv,) = [r for r in rows if r["bench"] == "train_converge"]
    assert CONVERGE_KEYS <= set(conv), CONVERGE_KEYS - set(conv)
    assert 1 <= conv["best_step"] <= conv["steps"] <= 8
    assert conv["converged"] == (conv["convergence"] == "converged")
    assert conv["convergence"] != "converged" or conv["stop_reason"] == "patience"
    # the CPU model and torch version are on every printed row
    lines = [line for line in proc.stdout.splitlines() if "tok/s" in line or "converge" in line]
    assert lines and all("torch=" in line and "cpu=" in line for line in lines)
