"""bench/gpu_suite.sh is wired end to end: its --dry-run (CPU, no GPU) names every step and runs
the bench scripts' own --dry-run through argument parsing, rows, result files and the table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("install", "triton-tests", "bench-loss", "bench-search", "summary")


@pytest.mark.timeout(600)
def test_gpu_suite_dry_run_names_every_step():
    env = dict(os.environ, PY=sys.executable)
    env.pop("DENSESCALE_BENCH_RESULTS", None)
    before = set((ROOT / "bench" / "results").glob("*"))
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_suite.sh"), "--dry-run"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    for step in STEPS:
        assert f"== step: {step}" in out, f"step {step} missing:\n{out[-3000:]}"
    for wired in ("faiss-gpu-cu12", "inf-cl", "65536x768", "--gpu-ms 8 128 1024 8192"):
        assert wired in out, wired
    assert "frac_peak_flops" in out and "frac_copy_bw" in out  # the one summary table
    assert "gpu-m8192-k100" in out and "bench_loss" in out
    # dry rows never land in bench/results/
    assert set((ROOT / "bench" / "results").glob("*")) == before


def test_bench_scripts_take_dry_run(tmp_path):
    env = dict(os.environ, DENSESCALE_BENCH_RESULTS=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_search.py"), "--dry-run"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the public call next to the kernel alone, the CPU model in every row
    for col in ("search-fp32", "kernel-fp32", "search-fp16", "kernel-fp16", "api_overhead"):
        assert col in proc.stdout
    with open("/proc/cpuinfo") as f:
        model = next((ln.split(":", 1)[1].strip() for ln in f if "model name" in ln), None)
    if model:
        rows = [line for line in proc.stdout.splitlines() if line.startswith("topk-")]
        assert rows and all(model in line for line in rows)
    assert list(tmp_path.glob("bench_search-*.json"))
