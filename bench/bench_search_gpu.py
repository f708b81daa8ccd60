"""Exact top-k on a GPU (issue 25): densescale.search against the baselines users compare with.

    python bench/bench_search_gpu.py                 # on the GPU: every case below, ~5 minutes
    python bench/bench_search_gpu.py --quick         # k=100 only, one timed rep, smaller MS MARCO
    python bench/bench_search_gpu.py --dry-run       # anywhere: tiny shapes on the CPU
    python bench/bench_search_gpu.py --budget-s 300  # cases left when time is up: "skipped: budget"

Cases (queries M x dim D x corpus N), corpus in device memory as fp32 and as bf16, k in 10/100/1000:
  stream-m8 / stream-m128   M = 8 / 128,      D = 768, N = 8,841,823 (memory-bound: frac_copy_bw)
  batch-m1024 / batch-m8192 M = 1024 / 8192,  D = 768, N = 1,000,000 (matmul-bound: frac_flops)
  msmarco-dev               M = 6,980,        D = 768, N = 8,841,823, bf16, k = 1000 (random data)
  d128-m1024                M = 1024,         D = 128, N = 10,000,000
Providers (all on the same buffers, same run):
  search      ``densescale.search(q, corpus, k)``, the public call (q in the corpus dtype)
  torch-bf16  bf16 ``q @ chunk.T`` + ``torch.topk`` per corpus chunk, merged (bf16 corpus): the
              baseline of SPEC 4; its scores are bf16, so it is not exact
  torch-tf32  fp32 corpus, matmul with TF32 allowed, + topk
  torch-fp32  fp32 corpus, TF32 off, + topk
  faiss-gpu   ``faiss.knn_gpu`` on the fp32 corpus, when a faiss with GPU support is importable
Every row: median ms (CUDA events), fraction of the bf16 matmul peak (2*M*N*D FLOP) and of the
device-copy bandwidth (the corpus read once) measured at the start of this run, and recall@k and
the largest score error against an fp64 reference on a subsample of the queries (computed on the
GPU from the stored values, chunk by chunk). Rows are rewritten to
bench/results/bench_search_gpu-<device>-<stamp>.{csv,json} after every case.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_suite as S
from _harness import chunked_topk

MSMARCO_N = 8_841_823


def plan(args) -> list[dict]:
    ks = [100] if args.quick else [10, 100, 1000]
    both = ("float32", "bfloat16")
    cases = [
        {"case": "stream-m8", "M": 8, "N": MSMARCO_N, "D": 768, "ks": ks, "dtypes": both},
        {"case": "stream-m128", "M": 128, "N": MSMARCO_N, "D": 768, "ks": ks, "dtypes": both},
        {"case": "batch-m1024", "M": 1024, "N": 1_000_000, "D": 768, "ks": ks, "dtypes": both},
        {"case": "batch-m8192", "M": 8192, "N": 1_000_000, "D": 768, "ks": ks, "dtypes": both},
        {
            "case": "msmarco-dev",
            "M": 1024 if args.quick else 6980,
            "N": MSMARCO_N,
            "D": 768,
            "ks": [1000],
            "dtypes": ("bfloat16",),
        },
        {"case": "d128-m1024", "M": 1024, "N": 10_000_000, "D": 128, "ks": ks, "dtypes": both},
    ]
    if args.cases:
        cases = [c for c in cases if c["case"] in args.cases]
    if args.dry_run:  # the same cases, shrunk: every code path, seconds on a CPU
        for c in cases:
            c["M"] = min(c["M"], 64)
            c["N"] = max(1200, c["N"] // 4000)
            c["D"] = 32 if c["D"] == 768 else 16
    return cases


def reference(q: torch.Tensor, c: torch.Tensor, k: int, chunk: int = 1 << 18):
    """fp64 top-k of the stored values (queries and corpus upcast exactly), chunk by chunk."""
    return chunked_topk(q.double(), c, k, chunk, dtype=torch.float64)


def recall_and_error(out, ref, rows: torch.Tensor, k: int) -> tuple[float, float]:
    s, i = out
    s, i = s[rows].double(), i[rows].long()
    rs, ri = ref[0][:, :k], ref[1][:, :k]
    hits = (i[:, :, None] == ri[:, None, :]).any(-1).sum().item()
    err = (s.sort(1, descending=True).values - rs).abs().max().item()
    return hits / (k * i.shape[0]), err


def _chunk(M: int, N: int) -> int:
    """Corpus rows per chunk of the torch baselines: about 2 GiB of fp32 scores."""
    return max(4096, min(N, (1 << 29) // max(M, 1)))


def _faiss_gpu():
    try:
        import faiss
    except ImportError:
        return None, "faiss not installed"
    if not hasattr(faiss, "knn_gpu") or faiss.get_num_gpus() < 1:
        return None, "faiss has no GPU support here"
    import faiss.contrib.torch_utils  # lets knn_gpu take torch tensors

    return faiss, None


def run(args) -> None:
    S.ensure_densescale()
    import densescale

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.dry_run:
        raise SystemExit("no CUDA device: use --dry-run for the CPU rehearsal")
    on_gpu = device == "cuda"
    deadline = time.monotonic() + args.budget_s
    env = S.environment(device)
    out = S.RowFile("bench_search_gpu", device)
    peaks = S.measure_peaks(device, small=args.dry_run)
    peak_flops, copy_bw = peaks["peak_bf16_tflops"] * 1e12, peaks["copy_GBps"] * 1e9
    print(f"# {env['device_name']}: bf16 matmul {peaks['peak_bf16_tflops']:.1f} TFLOP/s, "
          f"copy {peaks['copy_GBps']:.0f} GB/s (measured now)", flush=True)  # fmt: skip
    ok = "ok" if on_gpu else "dry-run (CPU)"
    for name, val in (
        ("bf16-matmul", peaks["peak_bf16_tflops"]),
        ("device-copy", peaks["copy_GBps"]),
    ):
        out.add({"bench": "peaks", "case": name, "provider": "torch", "status": ok, "value": val,
                 **peaks, **env})  # fmt: skip
    faiss, faiss_why = _faiss_gpu() if on_gpu else (None, "no GPU")
    if faiss is None and on_gpu:
        print(f"# faiss-gpu: {faiss_why}: comparing against torch only", flush=True)
    res = faiss.StandardGpuResources() if faiss is not None else None
    reps, warmup = (1 if args.quick else args.reps), 1
    g = torch.Generator(device=device).manual_seed(0)
    corpora: dict[tuple, torch.Tensor] = {}
    for spec in plan(args):
        case, M, N, D = spec["case"], spec["M"], spec["N"], spec["D"]
        # corpora of one shape are kept for the next case of the same shape, freed otherwise
        for key in [key for key in corpora if key[:2] != (N, D)]:
            del corpora[key]
        gc.collect()
        if on_gpu:
            torch.cuda.empty_cache()
        base = {"bench": "search", "case": case, "M": M, "N": N, "D": D, **env}
        if time.monotonic() > deadline:
            for dt in spec["dtypes"]:
                for k in spec["ks"]:
                    out.add({**base, "dtype": dt, "k": k, "provider": "search",
                             "status": "skipped: budget"})  # fmt: skip
            print(f"  {case}: skipped (the {args.budget_s}s budget is spent)", flush=True)
            continue
        for dt in spec["dtypes"]:
            if (N, D, dt) not in corpora:
                if dt == "float32" or (N, D, "float32") not in corpora:
                    c = torch.randn(N, D, device=device, generator=g)
                    corpora[(N, D, dt)] = c if dt == "float32" else c.bfloat16()
                    del c
                else:
                    corpora[(N, D, dt)] = corpora[(N, D, "float32")].bfloat16()
        q32 = torch.randn(M, D, device=device, generator=g)
        sub = torch.linspace(0, M - 1, min(M, args.subsample), device=device).long()
        kmax = max(spec["ks"])
        refs = {dt: reference(q32.to(getattr(torch, dt))[sub], corpora[(N, D, dt)], kmax)
                for dt in spec["dtypes"]}  # fmt: skip
        chunk = _chunk(M, N)
        for k in spec["ks"]:
            for dt in spec["dtypes"]:
                corpus = corpora[(N, D, dt)]
                q = q32.to(corpus.dtype)
                provs = [("search", lambda q=q, c=corpus, k=k: densescale.search(q, c, k))]
                if dt == "bfloat16":
                    provs.append(("torch-bf16", lambda q=q, c=corpus, k=k, n=chunk:
                                  chunked_topk(q, c, k, n)))  # fmt: skip
                else:
                    provs.append(("torch-tf32", lambda q=q, c=corpus, k=k, n=chunk:
                                  _tf32(True, chunked_topk, q, c, k, n)))  # fmt: skip
                    provs.append(("torch-fp32", lambda q=q, c=corpus, k=k, n=chunk:
                                  _tf32(False, chunked_topk, q, c, k, n)))  # fmt: skip
                    if faiss is not None:
                        provs.append(("faiss-gpu", lambda q=q, c=corpus, k=k: faiss.knn_gpu(
                            res, q, c, k, metric=faiss.METRIC_INNER_PRODUCT)))  # fmt: skip
                row0 = {**base, "dtype": dt, "k": k}
                for name, fn in provs:
                    if name == "torch-tf32" and not on_gpu:
                        out.add({**row0, "provider": name, "status": S.NO_GPU})
                        continue
                    if time.monotonic() > deadline:
                        out.add({**row0, "provider": name, "status": "skipped: budget"})
                        continue
                    out.add(_measure(name, fn, row0, refs[dt], sub, k, device, warmup, reps,
                                     peak_flops, copy_bw, ok))  # fmt: skip
                if dt == "float32" and faiss is None:
                    out.add({**row0, "provider": "faiss-gpu", "status": f"skipped: {faiss_why}"})
        del q32, refs
    print(out.base.with_suffix(".json"))


def _tf32(allow: bool, fn, *a):
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allow
    try:
        return fn(*a)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def _measure(name, fn, row0, ref, sub, k, device, warmup, reps, peak_flops, copy_bw, ok):
    M, N, D = row0["M"], row0["N"], row0["D"]
    try:
        result = fn()
        rec, err = recall_and_error(result, ref, sub, k)
        del result
        t = S.time_ms(fn, device, warmup=warmup - 1 if warmup else 0, reps=reps)
    except Exception as exc:  # noqa: BLE001 - OOM, unsupported k...: recorded, the run goes on
        if device == "cuda":
            torch.cuda.empty_cache()
        print(f"  {row0['case']:12s} {row0['dtype']:8s} k={k:<5d} {name:11s} failed: {exc}",
              flush=True)  # fmt: skip
        return {**row0, "provider": name, "status": f"failed: {type(exc).__name__}: {exc}"[:200]}
    sec = t["median_ms"] * 1e-3
    corpus_bytes = N * D * (4 if row0["dtype"] == "float32" else 2)
    row = {**row0, "provider": name, "status": ok, **t,
           "tflops": 2.0 * M * N * D / sec / 1e12,
           "frac_peak_flops": 2.0 * M * N * D / sec / peak_flops,
           "stream_GBps": corpus_bytes / sec / 1e9, "frac_copy_bw": corpus_bytes / sec / copy_bw,
           "recall": rec, "max_score_err": err, "recall_queries": int(sub.numel())}  # fmt: skip
    print(f"  {row0['case']:12s} {row0['dtype']:8s} k={k:<5d} {name:11s} {t['median_ms']:9.3f} ms"
          f"  flops {row['frac_peak_flops']:6.1%}  bw {row['frac_copy_bw']:6.1%}  recall "
          f"{rec:.4f}  err {err:.2e}", flush=True)  # fmt: skip
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU")
    ap.add_argument("--quick", action="store_true", help="k=100 only, one rep, MS MARCO M=1024")
    ap.add_argument("--reps", type=int, default=3, help="timed calls per provider (median)")
    ap.add_argument("--subsample", type=int, default=16, help="queries checked against fp64")
    ap.add_argument("--budget-s", type=float, default=420.0, help="skip cases once this is spent")
    ap.add_argument("--cases", nargs="+", default=None, help="a subset of the case names")
    run(ap.parse_args(argv))


if __name__ == "__main__":
    main()
