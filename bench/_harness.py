"""Shared benchmark plumbing: timing (median, p20, p80), peak memory, environment, result rows.

Every bench script puts implementations on a provider axis, times them side by side in one run and
writes one row per (provider, shape, mode) to bench/results/<name>-<device>-<date>.{csv,json}.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(
    fn: Callable[[], object], *, device: str = "cpu", warmup: int = 2, rep: int = 10
) -> dict:
    """Median / 20th / 80th percentile wall time of ``fn`` in milliseconds."""
    if device.startswith("cuda"):
        import triton.testing

        q = triton.testing.do_bench(fn, warmup=25 * warmup, rep=25 * rep, quantiles=[0.5, 0.2, 0.8])
        return {"median_ms": q[0], "p20_ms": q[1], "p80_ms": q[2]}
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(rep):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    pick = lambda f: times[min(len(times) - 1, int(f * len(times)))]
    return {"median_ms": statistics.median(times), "p20_ms": pick(0.2), "p80_ms": pick(0.8)}


def measure_interleaved(
    fns: dict[str, Callable[[], object]],
    *,
    warmup: int = 1,
    rep: int = 5,
    baseline: str | None = None,
) -> dict[str, dict]:
    """Median / p20 / p80 ms per provider (CPU), timing the providers in turn within each round.

    On a CPU shared with other jobs the load drifts over minutes; interleaving exposes every
    provider to the same drift, so ratios stay meaningful when absolute times move. The order is
    rotated every round so no provider always runs right after another's cache footprint. With
    ``baseline``, each provider also gets ``vs_<baseline>``: the median over rounds of
    baseline_ms / provider_ms measured in the same round (> 1: faster than the baseline).
    """
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + rep):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            fns[name]()
            if r >= warmup:
                times[name].append((time.perf_counter() - t0) * 1e3)
    out = {}
    for name in names:
        ts = sorted(times[name])
        pick = lambda f, ts=ts: ts[min(len(ts) - 1, int(f * len(ts)))]
        out[name] = {"median_ms": statistics.median(ts), "p20_ms": pick(0.2), "p80_ms": pick(0.8)}
        if baseline in times:
            ratios = [b / t for b, t in zip(times[baseline], times[name])]
            out[name][f"vs_{baseline}"] = statistics.median(ratios)
    return out


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_extra_memory(fn: Callable[[], object], *, device: str = "cpu") -> int:
    """Peak memory ``fn`` needs above what was allocated before it ran, in bytes.

    CUDA: the caching allocator's peak. CPU: resident-set size sampled every 0.5 ms in a thread
    (torch's CPU allocator returns large blocks to the OS, so RSS tracks live tensors).
    """
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    base = _rss_bytes()
    peak = base
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _rss_bytes())
            time.sleep(0.0005)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        fn()
    finally:
        stop.set()
        t.join()
    return max(0, max(peak, _rss_bytes()) - base)


def _version(mod: str) -> str | None:
    try:
        return __import__(mod).__version__
    except (ImportError, AttributeError):
        return None


def env_info(device: str) -> dict:
    """Device name, library versions, threads and date: stamped on every row."""
    cpu = cpu_model()
    name = torch.cuda.get_device_name() if device.startswith("cuda") else cpu
    return {
        "device": device,
        "device_name": name,
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "faiss": _version("faiss"),
        "numpy": _version("numpy"),
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def cpu_model() -> str:
    """The CPU's 'model name' from /proc/cpuinfo (printed in every benchmark row)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        return platform.processor() or "cpu"


def results_dir() -> Path:
    """bench/results/, or $DENSESCALE_BENCH_RESULTS (dry runs write to a scratch folder)."""
    return Path(os.environ.get("DENSESCALE_BENCH_RESULTS") or RESULTS)


def write_rows(name: str, rows: list[dict], device: str) -> Path:
    """Write rows as CSV and JSON under results_dir() (atomically) and return the CSV path."""
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = out / f"{name}-{device.split(':')[0]}-{stamp}"
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    tmp = base.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, base.with_suffix(".csv"))
    tmp = base.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rows, indent=1))
    os.replace(tmp, base.with_suffix(".json"))
    return base.with_suffix(".csv")


def print_table(rows: list[dict], cols: list[str]) -> None:
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(w) for c, w in zip(cols, widths)))


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}"
    return "" if v is None else str(v)


def gpu_summary(paths: list[str | Path]) -> list[dict]:
    """One table over bench_loss / bench_search GPU result files: every timed row with its fraction
    of the matmul peak and of the copy bandwidth measured in the same run (gpu_suite.sh prints it).
    """
    rows: list[dict] = []
    for path in paths:
        data = json.loads(Path(path).read_text())
        for r in data:
            if r.get("status", "ok") not in ("ok", "dry-run") or "median_ms" not in r:
                continue
            rows.append(
                {
                    "bench": Path(path).name.split("-")[0],
                    "case": r.get("case") or f"B={r.get('B')} sym={r.get('symmetric')}",
                    "provider": r.get("provider"),
                    "mode": r.get("mode", ""),
                    "M": r.get("M", r.get("B")),
                    "median_ms": r["median_ms"],
                    "frac_peak_flops": r.get("frac_peak_flops", r.get("frac_peak")),
                    "frac_copy_bw": r.get("frac_copy_bw"),
                    "status": r.get("status", "ok"),
                    "device_name": r.get("device_name"),
                }
            )
    return rows


def chunked_topk(q: torch.Tensor, c: torch.Tensor, k: int, chunk: int, dtype=None) -> tuple:
    """Plain top-k baseline: ``q @ chunk.T`` + torch.topk per corpus chunk, running merge (ties in
    torch's order). ``dtype``: each chunk is converted to it first (fp64 for a reference)."""
    best_s = best_i = None
    for r in range(0, c.shape[0], chunk):
        part = c[r : r + chunk] if dtype is None else c[r : r + chunk].to(dtype)
        s, i = torch.topk(q @ part.T, min(k, part.shape[0]), dim=1)
        i = i + r
        if best_s is not None:
            s, j = torch.topk(torch.cat([best_s, s], 1), k, dim=1)
            i = torch.cat([best_i, i], 1).gather(1, j)
        best_s, best_i = s, i
    return best_s, best_i


if __name__ == "__main__":
    import sys

    if len(sys.argv) < 2 or sys.argv[1] != "summary":
        raise SystemExit("usage: python bench/_harness.py summary RESULT.json [...]")
    table = gpu_summary(sys.argv[2:])
    if not table:
        raise SystemExit("no timed rows in " + " ".join(sys.argv[2:]))
    print_table(table, list(table[0]))
