"""Helpers of bench/gpu_suite.sh: peaks, the encoder step row, the loss wrapper, env, summary.

    python bench/gpu_suite.py env                  # device, driver, library versions (JSON row)
    python bench/gpu_suite.py peaks [--dry-run]    # bf16 matmul peak + device-copy bandwidth
    python bench/gpu_suite.py step  [--dry-run]    # one training step, L2-H128 at a large batch
    python bench/gpu_suite.py loss -- ARGS...      # bench/bench_loss.py ARGS, with a one-process
                                                   # torch.distributed group (inf-cl needs one)
    python bench/gpu_suite.py summary FILE.json... # the suite's one short table

Every subcommand that measures writes bench/results/<name>-<device>-<stamp>.{csv,json} (or under
$DENSESCALE_BENCH_RESULTS) with device name, driver and library versions in every row. Without a
GPU (--dry-run) the same code runs at tiny sizes on the CPU; rows that only a GPU can produce are
written with status "skipped: no GPU".
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

NO_GPU = "skipped: no GPU"


def ensure_densescale() -> None:
    """Import densescale from the install, else from the source tree (python/)."""
    try:
        import densescale  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(ROOT / "python"))


# --------------------------------------------------------------------------------- environment


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _driver() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout  # fmt: skip
        return out.strip().splitlines()[0] if out.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def _git_commit() -> str | None:
    if os.environ.get("SUITE_COMMIT"):
        return os.environ["SUITE_COMMIT"]
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
            timeout=10, check=True,
        ).stdout.strip() or None  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: str) -> dict:
    """Stamped on every row: device, driver, CUDA, library versions, date."""
    on_gpu = device.startswith("cuda")
    cpu = "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "device": device,
        "device_name": torch.cuda.get_device_name() if on_gpu else cpu,
        "driver": _driver() if on_gpu else None,
        "cuda": torch.version.cuda,
        "cpu": cpu,
        "torch": torch.__version__,
        "triton": _dist_version("triton"),
        "numpy": _dist_version("numpy"),
        "inf_cl": _dist_version("inf-cl"),
        "faiss": _dist_version("faiss-gpu-cu12")
        or _dist_version("faiss-gpu")
        or _dist_version("faiss-cpu"),
        "densescale_commit": _git_commit(),
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


# ----------------------------------------------------------------------------------- writing


def results_dir() -> Path:
    return Path(os.environ.get("DENSESCALE_BENCH_RESULTS") or HERE / "results")


class RowFile:
    """One result file pair, rewritten (atomically) after every row: a run stopped by its time
    limit keeps what it measured."""

    def __init__(self, name: str, device: str) -> None:
        out = results_dir()
        out.mkdir(parents=True, exist_ok=True)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.base = out / f"{name}-{device.split(':')[0]}-{stamp}"
        self.rows: list[dict] = []

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self.flush()

    def flush(self) -> None:
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        tmp = self.base.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.rows)
        os.replace(tmp, self.base.with_suffix(".csv"))
        tmp = self.base.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.rows, indent=1, default=str))
        os.replace(tmp, self.base.with_suffix(".json"))


# ------------------------------------------------------------------------------------ timing


def time_ms(fn, device: str, *, warmup: int = 1, reps: int = 3) -> dict:
    """Median / min / max milliseconds of ``fn`` (CUDA events on a GPU), after ``warmup`` calls."""
    on_gpu = device.startswith("cuda")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if on_gpu:
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times),
            "reps": reps}  # fmt: skip


def measure_peaks(device: str, *, small: bool = False) -> dict:
    """Achieved bf16 matmul FLOP/s (random operands, never zeros) and device-copy bytes/s
    (bytes read + bytes written), measured now: every row's fractions refer to these."""
    on_gpu = device.startswith("cuda")
    n = 8192 if on_gpu and not small else 512
    g = torch.Generator(device=device).manual_seed(1)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=g)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=g)
    t_mm = time_ms(lambda: a @ b, device, warmup=3, reps=10)
    a = b = None  # freed before the copy buffers
    nbytes = (2 << 30) if on_gpu and not small else (32 << 20)
    src = torch.randint(0, 255, (nbytes,), device=device, dtype=torch.uint8, generator=g)
    dst = torch.empty_like(src)
    t_cp = time_ms(lambda: dst.copy_(src), device, warmup=2, reps=10)
    src = dst = None
    if on_gpu:
        torch.cuda.empty_cache()
    return {
        "peak_bf16_tflops": 2.0 * n**3 / (t_mm["median_ms"] * 1e-3) / 1e12,
        "copy_GBps": 2.0 * nbytes / (t_cp["median_ms"] * 1e-3) / 1e9,
        "peak_matmul_n": n,
        "copy_bytes": nbytes,
        "peak_matmul_ms": t_mm["median_ms"],
        "copy_ms": t_cp["median_ms"],
    }


def _device(dry: bool) -> str:
    if torch.cuda.is_available():
        return "cuda"
    if not dry:
        raise SystemExit("no CUDA device (use --dry-run for the CPU rehearsal)")
    return "cpu"


def cmd_env(args) -> None:
    print(json.dumps(environment(_device(True)), indent=1))


def cmd_peaks(args) -> None:
    device = _device(args.dry_run)
    env = environment(device)
    out = RowFile("bench_peaks", device)
    p = measure_peaks(device, small=args.dry_run)
    status = "ok" if device == "cuda" else "dry-run (CPU)"
    out.add(
        {
            "bench": "peaks",
            "case": "bf16-matmul",
            "provider": "torch",
            "status": status,
            "median_ms": p["peak_matmul_ms"],
            "tflops": p["peak_bf16_tflops"],
            **p,
            **env,
        }
    )
    out.add({"bench": "peaks", "case": "device-copy", "provider": "torch", "status": status,
             "median_ms": p["copy_ms"], "GBps": p["copy_GBps"], **p, **env})  # fmt: skip
    print(f"peaks on {env['device_name']} (driver {env['driver']}, torch {env['torch']}, "
          f"CUDA {env['cuda']}, triton {env['triton']}): bf16 matmul {p['peak_bf16_tflops']:.1f} "
          f"TFLOP/s, copy {p['copy_GBps']:.0f} GB/s")  # fmt: skip
    print(out.base.with_suffix(".json"))


# -------------------------------------------------------------------------------------- step


def cmd_step(args) -> None:
    """Per-step time of one training step of a small encoder at a large batch: the encoder's
    forward + backward + AdamW with the loss computed by eager torch or by
    densescale.contrastive_loss (the public call), in bf16 autocast as the trainer runs it."""
    ensure_densescale()
    device = _device(args.dry_run)
    env = environment(device)
    out = RowFile("bench_step", device)
    B, Lq, Lp, vocab = args.batch, args.query_length, args.passage_length, args.vocab
    if args.dry_run:
        B, Lq, Lp, vocab = 64, 8, 16, 500
    base = {"bench": "step", "case": f"{args.model}-B{B}", "model": args.model, "B": B, "N": B,
            "query_length": Lq, "passage_length": Lp, **env}  # fmt: skip
    try:
        import transformers  # noqa: F401

        import densescale
        from densescale.models import build_encoder
    except ImportError as exc:
        for prov in ("eager-loss", "api-loss"):
            out.add({**base, "provider": prov, "status": f"skipped: {exc}"})
        print(f"step: skipped ({exc})")
        return
    torch.manual_seed(0)
    model = build_encoder(args.model, vocab_size=vocab, out_dim=768).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    q_ids = torch.randint(1, vocab, (B, Lq), generator=g).to(device)
    p_ids = torch.randint(1, vocab, (B, Lp), generator=g).to(device)
    q_mask, p_mask = torch.ones_like(q_ids), torch.ones_like(p_ids)
    use_bf16 = device == "cuda"
    target = torch.arange(B, device=device)

    def eager(eq, ep):
        return torch.nn.functional.cross_entropy((eq @ ep.T).float() * 20.0, target)

    def api(eq, ep):
        return densescale.contrastive_loss(eq, ep, scale=20.0)

    def step(loss_fn):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=use_bf16):
            eq = model(q_ids, q_mask)
            ep = model(p_ids, p_mask)
        if use_bf16:
            eq, ep = eq.bfloat16(), ep.bfloat16()
        loss = loss_fn(eq, ep)
        loss.backward()
        opt.step()
        return loss

    reps = 2 if args.dry_run else args.reps
    for prov, fn in (("eager-loss", eager), ("api-loss", api)):
        try:
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t = time_ms(lambda fn=fn: step(fn), device, warmup=1 if args.dry_run else 2, reps=reps)
            mem = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
            status = "ok" if device == "cuda" else "dry-run (CPU)"
            row = {**base, "provider": prov, "status": status, **t, "peak_mib": mem,
                   "pairs_per_s": B / (t["median_ms"] * 1e-3)}  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - OOM etc.: recorded, the suite goes on
            row = {**base, "provider": prov, "status": f"failed: {type(exc).__name__}: {exc}"[:200]}
            if device == "cuda":
                torch.cuda.empty_cache()
        out.add(row)
        print(f"step {prov:10s} {base['case']}: {row.get('median_ms', float('nan')):.2f} ms  "
              f"{row['status']}", flush=True)  # fmt: skip
    print(out.base.with_suffix(".json"))


# -------------------------------------------------------------------------------------- loss


def cmd_loss(args) -> None:
    """bench/bench_loss.py with the given arguments in this process, after a one-process
    torch.distributed group is set up on a GPU: inf-cl's cal_inf_loss calls dist.get_rank()."""
    ensure_densescale()
    if torch.cuda.is_available() and "--dry-run" not in args.rest:
        import socket

        import torch.distributed as dist

        if dist.is_available() and not dist.is_initialized():
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            torch.cuda.set_device(0)
            try:
                dist.init_process_group(
                    "nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1
                )
            except Exception as exc:  # noqa: BLE001 - inf-cl rows then fail, the rest runs
                print(f"# no process group ({exc}): inf-cl rows will fail")
    import runpy

    sys.argv = [str(HERE / "bench_loss.py"), *args.rest]
    try:
        runpy.run_path(str(HERE / "bench_loss.py"), run_name="__main__")
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


# ----------------------------------------------------------------------------------- summary


def _load(paths: list[str]) -> dict[str, list[dict]]:
    by: dict[str, list[dict]] = {}
    for p in paths:
        name = Path(p).name.split("-")[0]
        try:
            by.setdefault(name, []).extend(json.loads(Path(p).read_text()))
        except (OSError, ValueError) as exc:
            print(f"# cannot read {p}: {exc}")
    return by


def _f(v, digits: int = 3) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.{digits}g}" if abs(v) < 10**digits else f"{v:.0f}"
    return str(v)


def _status_word(r: dict) -> str:
    s = str(r.get("status", "ok"))
    if s.startswith("ok"):
        return ""
    return s.split(":")[0] if not s.startswith("skipped: no GPU") else "no GPU"


SHORT = {"ours-triton": "triton", "torch.compile": "compile", "inf-cl": "infcl",
         "search": "ours", "torch-bf16": "bf16", "torch-tf32": "tf32", "torch-fp32": "fp32",
         "faiss-gpu": "faiss"}  # fmt: skip


def summary_rows(by: dict[str, list[dict]]) -> tuple[list[str], list[list[str]]]:
    """One table: a line per (part, case, variant), providers' median ms side by side."""
    head = ["part", "case", "variant", "ours_ms", "base_ms", "x_base", "frac_flops", "frac_bw",
            "others_ms", "recall", "note"]  # fmt: skip
    lines: list[list[str]] = []
    for src, rows in by.items():
        for r in rows:
            if r.get("bench") != "peaks":
                continue
            tf = r["case"] == "bf16-matmul"
            val = r.get("peak_bf16_tflops") if tf else r.get("copy_GBps")
            lines.append(["peak", r["case"], src.replace("bench_", ""), "", "", "", "", "", "",
                          "", f"{_f(val, 4)} {'TFLOP/s' if tf else 'GB/s'} "
                          f"{_status_word(r) or ''}".rstrip()])  # fmt: skip
    # loss: ours = api (public call); base = eager torch; others = ours-triton, compile, inf-cl
    loss = [r for r in by.get("bench_loss", []) if r.get("mode") not in (None, "all")]
    skipped = {}
    for r in by.get("bench_loss", []):
        if r.get("mode") == "all":
            skipped.setdefault(r.get("provider"), str(r.get("status")))
    keys = sorted({(r["B"], r["D"], bool(r["symmetric"]), r["mode"]) for r in loss},
                  key=lambda t: (t[0], t[1], t[2], t[3] != "full"))  # fmt: skip
    for B, D, sym, mode in keys:
        pts = {
            r["provider"]: r
            for r in loss
            if (r["B"], r["D"], bool(r["symmetric"]), r["mode"]) == (B, D, sym, mode)
        }
        ours, base = pts.get("api", {}), pts.get("torch", {})
        oms, bms = ours.get("median_ms"), base.get("median_ms")
        others = [
            f"{SHORT[p]}={_f(pts[p].get('median_ms'))}"
            if "median_ms" in pts[p]
            else f"{SHORT[p]}={_status_word(pts[p])}"
            for p in ("ours-triton", "torch.compile", "inf-cl")
            if p in pts
        ]
        others += [f"{SHORT[p]}=skipped" for p in ("ours-triton", "torch.compile", "inf-cl")
                   if p not in pts and p in skipped]  # fmt: skip
        others = " ".join(others)
        mem = ours.get("peak_extra_mib")
        lines.append(["loss", f"B=N={B} D={D}{' sym' if sym else ''}", mode, _f(oms), _f(bms),
                      _f(bms / oms) if oms and bms else "-", _f(ours.get("frac_peak")), "",
                      others, "", f"api {_f(mem)} MiB" if mem is not None else
                      (_status_word(ours) or _status_word(base))])  # fmt: skip
    for p, why in skipped.items():
        lines.append(["loss", "", p, "", "", "", "", "", "", "", why[:48]])
    step = {r["provider"]: r for r in by.get("bench_step", [])}
    if step:
        o, b = step.get("api-loss", {}), step.get("eager-loss", {})
        oms, bms = o.get("median_ms"), b.get("median_ms")
        lines.append(["step", o.get("case") or b.get("case") or "", "train step", _f(oms),
                      _f(bms), _f(bms / oms) if oms and bms else "-", "", "", "", "",
                      _status_word(o) or (f"{_f(o.get('pairs_per_s'), 4)} pairs/s")])  # fmt: skip
    srch = by.get("bench_search_gpu", [])
    cases = []
    for r in srch:
        key = (r.get("case"), r.get("dtype"), r.get("k"))
        if r.get("case") and key not in cases and r.get("bench") == "search":
            cases.append(key)
    for case, dtype, k in cases:
        pts = {r["provider"]: r for r in srch if (r.get("case"), r.get("dtype"), r.get("k"))
               == (case, dtype, k)}  # fmt: skip
        bf = next((r for r in srch if (r.get("case"), r.get("k"), r.get("provider"))
                   == (case, k, "torch-bf16") and "median_ms" in r), {})  # fmt: skip
        ours = pts.get("search", {})
        oms, bms = ours.get("median_ms"), bf.get("median_ms")
        others = " ".join(
            f"{SHORT.get(p, p)}={_f(r.get('median_ms'))}"
            if "median_ms" in r
            else f"{SHORT.get(p, p)}={_status_word(r)}"
            for p, r in pts.items()
            if p not in ("search", "torch-bf16")
        )
        rec = [
            f"{SHORT.get(p, p)}={_f(r.get('recall'), 4)}"
            for p, r in pts.items()
            if r.get("recall") is not None
        ]
        lines.append(["search", case, f"{dtype} k={k}", _f(oms), _f(bms),
                      _f(bms / oms) if oms and bms else "-", _f(ours.get("frac_peak_flops")),
                      _f(ours.get("frac_copy_bw")), others, " ".join(rec),
                      _status_word(ours)])  # fmt: skip
    return head, lines


def cmd_summary(args) -> None:
    by = _load(args.files)
    env = next((r for rows in by.values() for r in rows if r.get("device_name")), {})
    print(f"# {env.get('device_name', '?')}  driver {env.get('driver') or '-'}  torch "
          f"{env.get('torch', '?')}  CUDA {env.get('cuda') or '-'}  triton {env.get('triton')}  "
          f"inf-cl {env.get('inf_cl') or '-'}  faiss {env.get('faiss') or '-'}")  # fmt: skip
    print("# ours = public call (contrastive_loss / search); base = eager torch (loss, step) or "
          "bf16 torch.matmul + torch.topk (search); x_base = base_ms / ours_ms; fractions of the "
          "peaks measured in this run")  # fmt: skip
    head, lines = summary_rows(by)
    if not lines:
        raise SystemExit("no rows in " + " ".join(args.files))
    widths = [max(len(h), *(len(ln[i]) for ln in lines)) for i, h in enumerate(head)]
    text = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip()]
    text += ["  ".join(c.ljust(w) for c, w in zip(ln, widths)).rstrip() for ln in lines]
    print("\n".join(text))
    if args.out:
        Path(args.out).write_text("\n".join(text) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("env")
    p = sub.add_parser("peaks")
    p.add_argument("--dry-run", action="store_true")
    p = sub.add_parser("step")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--model", default="L2-H128")
    p.add_argument("--batch", type=int, default=16384)
    p.add_argument("--query-length", type=int, default=32)
    p.add_argument("--passage-length", type=int, default=128)
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--reps", type=int, default=5)
    p = sub.add_parser("loss")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p = sub.add_parser("summary")
    p.add_argument("files", nargs="+")
    p.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.cmd == "loss" and args.rest[:1] == ["--"]:
        args.rest = args.rest[1:]
    {"env": cmd_env, "peaks": cmd_peaks, "step": cmd_step, "loss": cmd_loss,
     "summary": cmd_summary}[args.cmd](args)  # fmt: skip


if __name__ == "__main__":
    main()
