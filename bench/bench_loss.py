"""Benchmark of the fused contrastive loss: providers side by side, modes forward / backward / full.

Providers (one axis, all on the same inputs in the same run):
  torch          eager ``q @ c.T * scale`` + ``F.cross_entropy`` (+ the transposed direction when
                 symmetric) and autograd: the baseline of SPEC 4.
  torch.compile  the same function through ``torch.compile`` (skipped with a note when it fails).
  api            ``densescale.contrastive_loss(q, p, scale=...)`` + ``.backward()``: the call a user
                 makes (checks, NaN/Inf detection, autograd plumbing, backend "auto"), timed next
                 to the kernel alone so the two cannot drift apart.
  ours-cpp       densescale.ops._loss_cpp (CPU only). forward = loss only; backward = the gradient
                 pass alone (recompute with weights from a loss-only forward); full = the training
                 path (forward computing the gradients in the same pass + backward scaling them).
  ours-triton    densescale.ops._loss_triton (CUDA only; skipped when the module is absent).
  inf-cl         ``inf_cl.cal_inf_loss`` where installed (CUDA only).
  st-mnrl        sentence-transformers MultipleNegativesRankingLoss (dot score) where installed.

Each row: median / p20 / p80 milliseconds, achieved TFLOP/s for the nominal FLOPs of the eager
algorithm (forward 2*B*N*D, backward 4*B*N*D, full 6*B*N*D) and its fraction of a matmul peak
measured in the same run, and the peak extra memory of one call: ``peak_extra_mib`` (above the
inputs, with the returned gradients), ``scratch_mib`` (beyond the gradients too when
``mem_excludes_grads``: backward / full) and ``mem_vs_eager`` = scratch / eager torch's scratch in
the same run (SPEC 4 asks for <= 1/8 at B = 4096, D = 768). Gradients a provider left in ``.grad``
are freed before its measured call, so every provider allocates its gradients inside it. Rows go to
bench/results/bench_loss-<device>-<stamp>.{csv,json} with device name, versions, shapes and date.

    python bench/bench_loss.py                       # CPU defaults: B=4096 D=768, D=256, B=16384
    python bench/bench_loss.py --device cuda         # GPU defaults: B=N=65536 D=768 bf16
    python bench/bench_loss.py --shapes 4096x768 --providers torch api ours-cpp --modes full
    python bench/bench_loss.py --dry-run             # tiny shapes: wiring and table only
Shapes are ``BxD`` or ``BxDxGxK`` (group size G, shared negatives K). Every row carries the CPU
model (/proc/cpuinfo "model name").
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

import _harness

from densescale.ops._loss_spec import LossInputs, LossOptions

PROVIDERS = ("torch", "torch.compile", "api", "ours-cpp", "ours-triton", "inf-cl", "st-mnrl")
MODES = ("forward", "backward", "full")
SCALE = 20.0
DEFAULT_SHAPES = {"cpu": ["4096x768", "4096x256", "16384x768"], "cuda": ["65536x768"]}


class Skip(Exception):
    """A provider that cannot run this point (not installed, wrong device, unsupported option)."""


def parse_shape(text: str) -> tuple[int, int, int, int]:
    parts = [int(x) for x in text.lower().split("x")]
    if len(parts) not in (2, 4) or min(parts[:2]) < 1 or min(parts) < 0:
        raise argparse.ArgumentTypeError(f"shape must be BxD or BxDxGxK, got {text!r}")
    B, D = parts[:2]
    G, K = (parts[2], parts[3]) if len(parts) == 4 else (1, 0)
    if G < 1:
        raise argparse.ArgumentTypeError(f"group size must be >= 1, got {text!r}")
    return B, D, G, K


def eager_loss(q, p, neg, scale, symmetric, G):
    """Plain torch: materialised scores + cross-entropy (mean over queries)."""
    c = p if neg is None else torch.cat([p, neg])
    scores = (q @ c.T).float() * scale
    target = torch.arange(q.shape[0], device=q.device) * G
    loss = F.cross_entropy(scores, target)
    if symmetric:
        pos = p[target]
        loss = 0.5 * (
            loss
            + F.cross_entropy(
                (pos @ q.T).float() * scale, torch.arange(q.shape[0], device=q.device)
            )
        )
    return loss


def _autograd_provider(loss_fn: Callable, q, p, neg):
    """forward / backward / full closures for a differentiable loss function of (q, p, neg)."""
    leaves = [t.detach().clone().requires_grad_() for t in (q, p) + (() if neg is None else (neg,))]

    def zero():
        for t in leaves:
            t.grad = None

    def forward():
        with torch.no_grad():
            return loss_fn(*leaves)

    state = {}

    def prepare_backward():
        zero()
        state["loss"] = loss_fn(*leaves)

    def backward():
        state["loss"].backward(retain_graph=True)

    def full():
        zero()
        loss_fn(*leaves).backward()

    return {
        "forward": forward,
        "backward": backward,
        "full": full,
        "prepare_backward": prepare_backward,
        # Gradients left in .grad by the previous call: freed before a memory measurement, so
        # the measured call allocates its gradients like every other provider (and the bytes
        # freed inside the call are not netted against its peak).
        "release": zero,
    }


def _protocol_provider(mod, q, p, neg, opts):
    """Closures over a densescale backend module (loss_forward / loss_backward protocol)."""
    B = q.shape[0]
    w = torch.full((B,), 1.0 / B, device=q.device)
    state = {}

    def forward():
        return mod.loss_forward(LossInputs(q, p, neg, None, SCALE, opts), False)[0].mean()

    def prepare_backward():
        state["saved"] = mod.loss_forward(LossInputs(q, p, neg, None, SCALE, opts), False)[1]

    def backward():
        return mod.loss_backward(LossInputs(q, p, neg, None, SCALE, opts), state["saved"], w, False)

    def full():
        loss, saved = mod.loss_forward(LossInputs(q, p, neg, None, SCALE, opts), True)
        loss.mean()
        return mod.loss_backward(LossInputs(q, p, neg, None, SCALE, opts), saved, w, True)

    return {
        "forward": forward,
        "backward": backward,
        "full": full,
        "prepare_backward": prepare_backward,
        "release": lambda: None,  # returns its gradients; holds none between calls
    }


def make_provider(name: str, device: str, q, p, neg, opts: LossOptions):
    G, sym = opts.group_size, opts.symmetric
    if name == "torch":
        return _autograd_provider(
            lambda a, b, *n: eager_loss(a, b, n[0] if n else None, SCALE, sym, G), q, p, neg
        )
    if name == "torch.compile":
        # Donated buffers forbid backward(retain_graph=True), which the backward mode needs.
        import torch._functorch.config as functorch_config

        functorch_config.donated_buffer = False
        compiled = torch.compile(lambda a, b, n: eager_loss(a, b, n, SCALE, sym, G))
        fns = _autograd_provider(lambda a, b, *n: compiled(a, b, n[0] if n else None), q, p, neg)
        try:  # compile now so a failure is a clean skip, not a crash mid-benchmark
            fns["full"]()
        except Exception as exc:  # any compiler failure means "not available here"
            raise Skip(f"torch.compile failed: {type(exc).__name__}: {str(exc)[:120]}") from exc
        return fns
    if name == "api":
        import densescale

        return _autograd_provider(
            lambda a, b, *n: densescale.contrastive_loss(
                a, b, negatives=n[0] if n else None, scale=SCALE, symmetric=sym
            ),
            q,
            p,
            neg,
        )
    if name == "ours-cpp":
        if device != "cpu":
            raise Skip("CPU only")
        from densescale._native import has_native

        if not has_native():
            raise Skip("densescale._C not built")
        return _protocol_provider(
            importlib.import_module("densescale.ops._loss_cpp"), q, p, neg, opts
        )
    if name == "ours-triton":
        if not device.startswith("cuda"):
            raise Skip("CUDA only")
        try:
            mod = importlib.import_module("densescale.ops._loss_triton")
        except ImportError as exc:
            raise Skip(f"densescale.ops._loss_triton unavailable: {exc}") from exc
        return _protocol_provider(mod, q, p, neg, opts)
    if name == "inf-cl":
        if not device.startswith("cuda"):
            raise Skip("CUDA only")
        if G != 1 or neg is not None:
            raise Skip("in-batch pairs only")
        try:
            from inf_cl import cal_inf_loss
        except ImportError as exc:
            raise Skip("inf-cl not installed") from exc

        # README usage: cal_inf_loss(q, k, scale=...), labels default to the diagonal.
        def inf_loss(a, b):
            loss = cal_inf_loss(a, b, scale=SCALE).mean()
            if sym:  # CLIP style: both directions, averaged
                loss = 0.5 * (loss + cal_inf_loss(b, a, scale=SCALE).mean())
            return loss

        return _autograd_provider(inf_loss, q, p, None)
    if name == "st-mnrl":
        if sym:
            raise Skip("benchmarked for the one-directional loss only")
        try:
            from sentence_transformers import util
            from sentence_transformers.losses import MultipleNegativesRankingLoss
        except ImportError as exc:
            raise Skip("sentence-transformers not installed") from exc
        try:
            mnrl = MultipleNegativesRankingLoss(
                torch.nn.Identity(), scale=SCALE, similarity_fct=util.dot_score
            )
        except Exception as exc:  # the constructor's contract differs between versions
            raise Skip(f"MNRL constructor: {exc}") from exc
        if G != 1:
            raise Skip("grouped layout not expressed as MNRL columns here")
        labels = torch.arange(q.shape[0], device=q.device)

        def mnrl_loss(a, b, *n):
            return mnrl.compute_loss_from_embeddings([a, b, *n], labels)

        return _autograd_provider(mnrl_loss, q, p, neg)
    raise Skip(f"unknown provider {name}")


def _embeddings(n: int, *, D: int, gen: torch.Generator, device: str, dtype: torch.dtype):
    return (torch.randn(n, D, generator=gen) * 0.05).to(device=device, dtype=dtype)


def matmul_peak(device: str, dtype: torch.dtype) -> float:
    """Achieved FLOP/s of one large matmul in ``dtype`` (the roofline every row is a fraction of)."""
    n, k = (8192, 8192) if device.startswith("cuda") else (4096, 768)
    a = torch.randn(n, k, device=device, dtype=dtype)
    b = torch.randn(n, k, device=device, dtype=dtype)
    t = _harness.measure(lambda: a @ b.T, device=device, warmup=2, rep=5)
    return 2.0 * n * n * k / (t["median_ms"] * 1e-3)


def _reexec_with_exact_malloc() -> None:
    """CPU memory is read from the resident-set size; glibc's adaptive mmap threshold keeps freed
    blocks of tens of MiB in the heap, so a second call would allocate without growing RSS. A
    fixed threshold makes every large block an mmap that is returned on free, so RSS tracks live
    memory. The variable must be set before the process starts, hence the re-exec."""
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ and sys.platform.startswith("linux"):
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    ap.add_argument("--shapes", nargs="+", type=parse_shape, default=None, help="BxD or BxDxGxK")
    ap.add_argument("--providers", nargs="+", default=list(PROVIDERS), choices=PROVIDERS)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument(
        "--dtype",
        default=None,
        choices=("float32", "float16", "bfloat16"),
        help="default float32 on cpu, bfloat16 on cuda",
    )
    ap.add_argument(
        "--symmetric",
        default=None,
        choices=("no", "yes", "both"),
        help="default no on cpu, both on cuda",
    )
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (torch and ours)")
    ap.add_argument("--rep", type=int, default=None, help="timed repetitions (CPU; default 5)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    ap.add_argument(
        "--dry-run",
        action="store_true",
        help="tiny shapes on the CPU, one repetition: checks the wiring and the table",
    )
    args = ap.parse_args(argv)
    if args.dry_run:
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            print(f"# dry run: {args.device} requested, no GPU here: running the CPU plumbing")
            args.device = "cpu"
        args.shapes = [parse_shape("64x32"), parse_shape("32x16x2x8")]
        args.rep, args.warmup, args.no_memory = 1, 0, True

    device = args.device
    if not device.startswith("cuda") and not args.no_memory and argv is None:
        _reexec_with_exact_malloc()
    if device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda but no CUDA device is available")
    on_gpu = device.startswith("cuda")
    dtype = getattr(torch, args.dtype or ("bfloat16" if on_gpu else "float32"))
    shapes = args.shapes or [parse_shape(s) for s in DEFAULT_SHAPES["cuda" if on_gpu else "cpu"]]
    sym_choice = args.symmetric or ("both" if on_gpu else "no")
    symmetrics = {"no": [False], "yes": [True], "both": [False, True]}[sym_choice]
    if not on_gpu:
        torch.set_num_threads(args.threads)
    rep = args.rep or (100 if on_gpu else 5)

    env = _harness.env_info(device)
    peak = matmul_peak(device, dtype)
    print(
        f"# {env['device_name']}  threads={env['threads']}  torch {env['torch']}  "
        f"{dtype} matmul peak {peak / 1e12:.3f} TFLOP/s"
    )
    rows: list[dict] = []
    try:
        run_points(args, device, dtype, shapes, symmetrics, rep, env, peak, rows)
    finally:  # rows measured so far are kept even when a long run is interrupted
        if rows:
            path = _harness.write_rows("bench_loss", rows, device)
            print(f"rows written to {path}")
    ok = [r for r in rows if r.get("status") == "ok"]
    if ok:
        _harness.print_table(
            ok,
            [
                "cpu",
                "provider",
                "B",
                "N",
                "D",
                "symmetric",
                "mode",
                "median_ms",
                "p20_ms",
                "p80_ms",
                "vs_torch",
                "frac_peak",
                "peak_extra_mib",
                "scratch_mib",
                "mem_excludes_grads",
                "mem_vs_eager",
            ],
        )
    return 0


def run_points(args, device, dtype, shapes, symmetrics, rep, env, peak, rows) -> None:
    """Time every (shape, symmetric, mode) point for all providers, one row per provider.

    On the CPU the providers of a point are timed in turn within each repetition
    (``measure_interleaved``), so load drift hits them alike and the ``vs_torch`` column (the
    median of per-round eager / provider ratios) is a side-by-side ratio; on a GPU each provider
    goes through triton's do_bench."""
    on_gpu = device.startswith("cuda")
    for B, D, G, K in shapes:
        for sym in symmetrics:
            gen = torch.Generator(device="cpu").manual_seed(0)
            mk = functools.partial(_embeddings, D=D, gen=gen, device=device, dtype=dtype)
            q, p = mk(B), mk(B * G)
            neg = mk(K) if K else None
            N = B * G + K
            opts = LossOptions(group_size=G, in_batch=True, symmetric=sym)
            base = {
                **env,
                "bench": "contrastive_loss",
                "B": B,
                "N": N,
                "D": D,
                "G": G,
                "K": K,
                "dtype": str(dtype).replace("torch.", ""),
                "symmetric": sym,
                "scale": SCALE,
                "peak_tflops": peak / 1e12,
            }
            providers = {}
            for prov in args.providers:
                try:
                    providers[prov] = make_provider(prov, device, q, p, neg, opts)
                except Skip as why:
                    rows.append(
                        {**base, "provider": prov, "mode": "all", "status": f"skipped: {why}"}
                    )
                    print(f"{prov:14s} B={B} D={D} sym={sym}: skipped ({why})")
            for mode in args.modes:
                timed = _time_mode(providers, mode, device, args.warmup, rep, rows, base)
                mems = {}
                if not args.no_memory:
                    for prov in timed:
                        providers[prov]["release"]()
                        gc.collect()
                        mems[prov] = _harness.peak_extra_memory(
                            providers[prov][mode], device=device
                        )
                # Every provider returns (or leaves in .grad) the gradients of q, p and negatives
                # in backward / full; `scratch_mib` is the peak beyond inputs and those gradients:
                # the loss's own working memory, the figure SPEC 4 bounds at 1/8 of eager's.
                grads = mode != "forward"
                grads_mib = (B + N) * D * dtype.itemsize / 2**20 if grads else 0.0
                own = {k: v / 2**20 - grads_mib for k, v in mems.items()}
                for prov, t in timed.items():
                    flops = {"forward": 2, "backward": 4, "full": 6}[mode] * B * N * D
                    tflops = flops / (t["median_ms"] * 1e-3) / 1e12
                    row = {**base, "provider": prov, "mode": mode, **t}
                    row.update(
                        status="ok",
                        tflops=tflops,
                        frac_peak=tflops * 1e12 / peak,
                        peak_extra_mib=mems[prov] / 2**20 if prov in mems else None,
                        grads_mib=grads_mib,
                        scratch_mib=own.get(prov),
                        mem_excludes_grads=grads,
                        # scratch / eager's scratch (peak extra memory beyond inputs and returned
                        # gradients, both measured in this run); SPEC 4 asks for <= 0.125
                        mem_vs_eager=own[prov] / own["torch"]
                        if prov in own and own.get("torch", 0) > 0
                        else None,
                    )
                    rows.append(row)
                    ratio = f"  {t['vs_torch']:.3f}x eager" if "vs_torch" in t else ""
                    if row["mem_vs_eager"] is not None:
                        ratio += f"  mem {row['mem_vs_eager']:.3f} of eager"
                    print(
                        f"{prov:14s} {mode:8s} B={B} N={N} D={D} sym={sym}: "
                        f"{t['median_ms']:9.2f} ms (p20 {t['p20_ms']:.2f}, p80 {t['p80_ms']:.2f})  "
                        f"{tflops * 1e3:7.1f} GFLOP/s = {tflops * 1e12 / peak:5.1%} of peak  "
                        f"scratch {own.get(prov, float('nan')):8.1f} MiB"
                        f"{' beyond grads' if grads else ''}{ratio}",
                        flush=True,
                    )
                if on_gpu:
                    torch.cuda.empty_cache()
            del providers
            gc.collect()


def _time_mode(providers: dict, mode: str, device: str, warmup: int, rep: int, rows, base) -> dict:
    """{provider: timing} for one mode; a provider that fails (OOM...) gets a failed row instead.

    On the CPU each provider is called once first (a failure shows there, not mid-rounds), then
    all are timed interleaved."""
    on_gpu = device.startswith("cuda")
    ok: dict = {}
    for prov, fns in providers.items():
        try:
            if mode == "backward":
                fns["prepare_backward"]()
            if on_gpu:
                ok[prov] = _harness.measure(fns[mode], device=device, warmup=warmup, rep=rep)
            else:
                fns[mode]()
                ok[prov] = fns[mode]
        except Exception as exc:  # noqa: BLE001 - OOM etc.: record it and go on
            status = f"failed: {type(exc).__name__}: {str(exc)[:160]}"
            rows.append({**base, "provider": prov, "mode": mode, "status": status})
            print(f"{prov:14s} {mode:8s} B={base['B']} D={base['D']}: {status}")
            if on_gpu:
                torch.cuda.empty_cache()
    if on_gpu or not ok:
        return ok
    baseline = "torch" if "torch" in ok else None
    return _harness.measure_interleaved(ok, warmup=warmup, rep=rep, baseline=baseline)


if __name__ == "__main__":
    raise SystemExit(main())
