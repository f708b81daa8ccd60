"""bench/gpu_suite.sh is wired end to end: its --dry-run (CPU, no GPU) runs every step at tiny sizes
through argument parsing, rows, result files and the table; the rehearsal does so in a venv built
with --no-index from a wheelhouse (torch and triton, plus the tools the GPU image has), behind a
dead proxy, so no step of the suite can reach for the network."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("wheels", "build", "peaks", "triton-tests", "loss", "step", "search", "loss-compile",
         "summary")  # fmt: skip
SUITE = ROOT / "bench" / "gpu_suite.sh"


def _check_suite_output(out: str) -> None:
    for step in STEPS:
        assert f"== step: {step}" in out, f"step {step} missing:\n{out[-3000:]}"
    for wired in ("65536x768", "--symmetric both", "inf-cl", "torch.compile", "no GPU"):
        assert wired in out, wired
    table = out[out.rindex("part  ") :]  # the one short table comes last
    for part in ("peak ", "loss ", "step ", "search "):
        assert f"\n{part}" in table, f"{part} rows missing:\n{table}"
    for case in ("stream-m8 ", "stream-m128", "batch-m1024", "batch-m8192", "msmarco-dev",
                 "d128-m1024", "B=N=64 D=32 sym"):  # fmt: skip
        assert case in table, case
    assert "faiss=no GPU" in table and "tf32=no GPU" in table
    assert "exit " not in out.split("== step: summary")[1].split("== results")[0], out[-3000:]


@pytest.mark.timeout(600)
def test_gpu_suite_dry_run_names_every_step():
    env = dict(os.environ, PY=sys.executable)
    env.pop("DENSESCALE_BENCH_RESULTS", None)
    before = set((ROOT / "bench" / "results").glob("*"))
    proc = subprocess.run(
        ["bash", str(SUITE), "--dry-run", "--no-install"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    _check_suite_output(out)
    assert "train step" in out  # the encoder step ran (transformers is in the dev venv)
    # dry rows never land in bench/results/
    assert set((ROOT / "bench" / "results").glob("*")) == before


SKIP_REHEARSAL = os.environ.get("DENSESCALE_SKIP_SUITE_REHEARSAL") == "1" and (
    os.environ.get("CI", "").lower() != "true"
)


@pytest.mark.skipif(SKIP_REHEARSAL, reason="DENSESCALE_SKIP_SUITE_REHEARSAL=1 (never in CI)")
@pytest.mark.timeout(420)
def test_gpu_suite_rehearsal_in_a_no_index_venv(tmp_path):
    """The GPU machine has no network: fill a wheelhouse (network allowed here), build a venv from
    it with --no-index, then run the whole suite --dry-run with that venv's python, pip's index
    off and a dead proxy: wheels, the editable build of the extension and every bench step must
    pass without the network."""
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    t0 = time.monotonic()
    fill = subprocess.run(
        ["bash", str(ROOT / "bench" / "make_wheelhouse.sh"), "--rehearsal", str(wheels)],
        cwd=ROOT, env=dict(os.environ, PY=sys.executable), capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert fill.returncode == 0, fill.stderr[-3000:]
    t_fill = time.monotonic() - t0
    offline = dict(os.environ, PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull, PIP_FIND_LINKS="",
                   http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
                   HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")  # fmt: skip
    offline.pop("DENSESCALE_BENCH_RESULTS", None)
    offline.pop("VIRTUAL_ENV", None)
    base_python = getattr(sys, "_base_executable", None) or shutil.which("python3")
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    names = ["torch==2.13.0", "triton", "numpy", "pytest", "pybind11", "scikit-build-core",
             "cmake", "ninja"]  # fmt: skip
    inst = subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", "--no-index", "--no-compile",
         "--find-links", str(wheels), *names],
        env=offline, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert inst.returncode == 0, inst.stderr[-3000:]
    t_venv = time.monotonic() - t0 - t_fill
    gpu_wheels = tmp_path / "wheelhouse"
    gpu_wheels.mkdir()
    for w in wheels.glob("inf_cl-*.whl"):
        shutil.copy(w, gpu_wheels)
    before = set((ROOT / "bench" / "results").glob("*"))
    env = dict(offline, PY=str(py), WHEELHOUSE=str(gpu_wheels),
               SUITE_BUILD_DIR=str(tmp_path / "build" / "{wheel_tag}"))  # fmt: skip
    proc = subprocess.run(
        ["bash", str(SUITE), "--dry-run"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    t_suite = time.monotonic() - t0 - t_fill - t_venv
    print(f"wheelhouse {t_fill:.0f}s, no-index venv {t_venv:.0f}s, suite --dry-run {t_suite:.0f}s")
    assert proc.returncode == 0, out[-4000:]
    _check_suite_output(out)
    for step in ("wheels: ok", "build: ok"):
        assert step in out, out[-4000:]
    assert "_C built: True" in out, out[-4000:]
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
