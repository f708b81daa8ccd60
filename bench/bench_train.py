"""Training throughput and steps-to-converge of ``densescale.train.train`` for one ladder size.

Providers, timed side by side on the SAME batches (the trainer's own sampler: pair rows and shared
random negatives are functions of (seed, step)) from the same initial weights:

* ``train``      the public API, ``densescale.train.train(model, tokenizer, pairs, corpus, ...)``,
                 with the process's token caches emptied first (a cold start, as a fresh process);
* ``train:warm``  the same with the token caches filled by an earlier run on these texts, as the
                 second and later cells of a study in one worker process;
* ``plain``      a plain PyTorch loop: ``transformers.BertModel`` + masked mean pooling + Linear
                 head, the tokenizer called on every step (same tokenizer, same max lengths),
                 ``F.cross_entropy`` over [positive, shared negatives] logits, AdamW, gradient
                 clipping, the trainer's dropout;
* ``train@REV``  (``--compare-rev REV``) ``train`` of ``python/densescale/train/trainer.py`` as it
                 was at git revision REV, for before/after figures in one run.

Throughput is non-padding tokens (queries + positives + shared negatives) per second of wall time
of the whole call (set-up and first-step warm-up included, data loading excluded); providers run
``--repeats`` times in alternating order and the median is reported, so a machine shared with other
jobs slows all of them alike. Steps-to-converge is one ``train`` run with a dev split and
``patience`` / ``min_delta`` / ``eval_every``: ``result.steps``, ``result.best_step``,
``result.converged``.

    .venv/bin/python bench/bench_train.py                      # L2-H64, 30 steps, 1 thread
    .venv/bin/python bench/bench_train.py --compare-rev HEAD~1 --no-converge
    .venv/bin/python bench/bench_train.py --smoke              # seconds; what the test runs

Rows go to bench/results/bench_train-cpu-<date>.{csv,json} (``--results DIR`` elsewhere).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

import _harness

from densescale import data
from densescale.models import build_encoder, train_tokenizer
from densescale.train import TrainConfig, batching, train
from densescale.train.trainer import _Batches

ROOT = Path(__file__).resolve().parents[1]
TRAINER = "python/densescale/train/trainer.py"

SMOKE = {
    "model": "L1-H32",
    "steps": 3,
    "batch_size": 8,
    "negatives": 8,
    "query_length": 12,
    "passage_length": 32,
    "num_passages": 600,
    "vocab_size": 500,
    "repeats": 1,
    "converge_max_steps": 8,
    "eval_every": 2,
    "patience": 2,
    "dev_pairs": 40,
    "dev_pool": 200,
}


# --------------------------------------------------------------------------------------- data


def prepare_data(args) -> tuple:
    """Synthetic collection + WordPiece tokenizer, both cached under ``args.data``."""
    root = Path(args.data)
    n = args.num_passages
    n_dev = max(20, n // 20)
    folder = data.synthetic(
        root / f"synthetic-{n}-s{args.data_seed}",
        num_passages=n,
        num_train_queries=n // 2,
        num_dev=n_dev,
        num_test=n_dev,
        seed=args.data_seed,
    )
    col = data.load_beir(folder)
    corpus = col.corpus
    tok = train_tokenizer(
        corpus,
        args.vocab_size,
        root / f"tokenizer-{n}-s{args.data_seed}-v{args.vocab_size}",
        cache_key=f"{folder.resolve()}:{len(corpus)}",
    )
    pairs = data.annotation_pairs(col, source="human", split="train")
    dev = data.annotation_pairs(col, source="human", split="dev")
    return col, tok, pairs, dev


# --------------------------------------------------------------------------------------- plain


class PlainEncoder(torch.nn.Module):
    """``transformers.BertModel`` + masked mean pooling + Linear head: the textbook dual encoder."""

    def __init__(self, bert_config, out_dim: int) -> None:
        super().__init__()
        from transformers import BertModel

        self.bert = BertModel(bert_config, add_pooling_layer=False)
        self.head = torch.nn.Linear(bert_config.hidden_size, out_dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).float()
        return self.head((h * m).sum(1) / m.sum(1).clamp_min(1.0))


def plain_from(model) -> PlainEncoder:
    """A PlainEncoder holding the same weights as a densescale DenseEncoder (pooler dropped)."""
    plain = PlainEncoder(model.config.to_bert_config(), model.config.out_dim)
    state = {k[len("bert.") :]: v for k, v in model.state_dict().items() if k.startswith("bert.")}
    state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    plain.bert.load_state_dict(state, strict=True)
    plain.head.load_state_dict(model.proj.state_dict())
    return plain


def plain_loop(plain, tok, pairs, corpus, cfg: TrainConfig, doc_index) -> dict:
    """``cfg.max_steps`` steps of the plain loop on the trainer's batches; tokens and losses."""
    batches = _Batches(len(pairs), len(corpus), cfg, 0, 1)
    torch.manual_seed(cfg.seed)  # as train() does: the same dropout masks, step by step
    opt = torch.optim.AdamW(plain.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    plain.train()

    def enc(texts, length):
        return tok(texts, max_length=length, truncation=True, padding=True, return_tensors="pt")

    tokens, losses = 0, []
    for step in range(cfg.max_steps):
        idx, shared, _ = batches(step)
        batch = [pairs[int(i)] for i in idx]
        q = enc([b.query for b in batch], cfg.query_max_length)
        p = enc([b.positive for b in batch], cfg.passage_max_length)
        n = enc([corpus[int(j)] for j in shared], cfg.passage_max_length)
        eq, ep, en = (plain(x["input_ids"], x["attention_mask"]) for x in (q, p, n))
        logits = torch.cat([(eq * ep).sum(-1, keepdim=True), eq @ en.T], dim=1) * cfg.scale
        # a shared negative that is the query's own positive is not a negative
        same = torch.as_tensor(doc_index[idx])[:, None] == torch.as_tensor(shared)[None, :]
        logits[:, 1:] = logits[:, 1:].masked_fill(same, -math.inf)
        loss = F.cross_entropy(logits, torch.zeros(len(idx), dtype=torch.long))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(plain.parameters(), cfg.grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
        tokens += int(q["attention_mask"].sum() + p["attention_mask"].sum())
        tokens += int(n["attention_mask"].sum())
    return {"tokens": tokens, "losses": losses}


# --------------------------------------------------------------------------------- providers


def trainer_at(rev: str):
    """``train`` from trainer.py as committed at git revision ``rev`` (a separate module)."""
    try:
        source = subprocess.run(
            ["git", "show", f"{rev}:{TRAINER}"], cwd=ROOT, check=True, capture_output=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"--compare-rev {rev!r}: cannot read {TRAINER} at that revision ({exc})")
    path = Path(tempfile.mkdtemp(prefix="bench_train_rev_")) / "trainer_at_rev.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location(f"_trainer_at_{abs(hash(rev))}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.train


def run_provider(name, init_model, tok, pairs, corpus, cfg, doc_index, train_fns, work) -> dict:
    """One timed run: returns seconds, cpu_s, tokens, losses."""
    if name == "train":
        batching._SHARED.clear()
    elif name == "train:warm" and not batching._SHARED:  # untimed run to fill the caches
        run_provider("train", init_model, tok, pairs, corpus, cfg, doc_index, train_fns, work)
    model = build_encoder(
        init_model.config.size,
        vocab_size=init_model.config.vocab_size,
        out_dim=init_model.config.out_dim,
    )
    model.load_state_dict(init_model.state_dict())
    if name == "plain":
        plain = plain_from(model)
        t0, c0 = time.perf_counter(), time.process_time()
        out = plain_loop(plain, tok, pairs, corpus, cfg, doc_index)
        return {"seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, **out}
    out_dir = Path(tempfile.mkdtemp(prefix="run_", dir=work))
    t0, c0 = time.perf_counter(), time.process_time()
    res = train_fns[name](model, tok, pairs, corpus, out_dir, cfg, progress=False)
    seconds, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    shutil.rmtree(out_dir, ignore_errors=True)
    return {
        "seconds": seconds,
        "cpu_s": cpu_s,
        "tokens": sum(h["tokens"] for h in res.history),
        "losses": [h["loss"] for h in res.history],
    }


def _doc_index(pairs):
    from densescale.train.dev import pair_doc_ids

    return pair_doc_ids(pairs)


def pct(values: list[float], f: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(f * len(v)))]


# ------------------------------------------------------------------------------------- main


def parse_args(argv):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="L2-H64", help="ladder size (default L2-H64)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per provider run")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--negatives", type=int, default=64, help="shared random negatives per step")
    ap.add_argument("--query-length", type=int, default=16, help="query max length (tokens)")
    ap.add_argument("--passage-length", type=int, default=64, help="passage max length (tokens)")
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a loaded machine more threads spin and stall)",
    )
    ap.add_argument("--repeats", type=int, default=2, help="runs per provider, alternating order")
    ap.add_argument("--providers", nargs="+", default=["train", "train:warm", "plain"])
    ap.add_argument("--compare-rev", default=None, help="also time train() of this git revision")
    ap.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "densescale-bench-train"))
    ap.add_argument("--num-passages", type=int, default=20000)
    ap.add_argument("--vocab-size", type=int, default=4000)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-converge", action="store_true", help="skip the steps-to-converge run")
    ap.add_argument("--converge-max-steps", type=int, default=600)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--min-delta", type=float, default=0.01)
    ap.add_argument("--dev-pairs", type=int, default=500)
    ap.add_argument("--dev-pool", type=int, default=2000)
    ap.add_argument("--results", default=None, help="folder for the rows (default bench/results)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: checks it runs")
    args = ap.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    for key in ("steps", "batch_size", "negatives", "threads", "repeats", "num_passages"):
        if getattr(args, key) < 1:
            ap.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    known = {"train", "train:warm", "plain"}
    bad = sorted(set(args.providers) - known)
    if bad:
        ap.error(f"unknown provider(s) {bad}; choose from {sorted(known)} (and --compare-rev)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.results:
        _harness.RESULTS = Path(args.results)
    env = _harness.env_info("cpu")
    stamp = f"cpu={env['device_name']!r} torch={env['torch']} threads={env['threads']}"
    print(f"# {stamp}", flush=True)

    col, tok, pairs, dev = prepare_data(args)
    corpus = col.corpus
    cfg = TrainConfig(
        protocol="paper",
        batch_size=args.batch_size,
        num_negatives=args.negatives,
        lr=args.lr,
        max_steps=args.steps,
        query_max_length=args.query_length,
        passage_max_length=args.passage_length,
        checkpoint_every=10**6,  # once, at the end: the timed loop is the steps
        log_every=10**6,
        seed=args.seed,
        device="cpu",
    )
    torch.manual_seed(args.seed)
    init = build_encoder(args.model, vocab_size=tok.vocab_size)
    doc_index = _doc_index(pairs)
    train_fns = {"train": train, "train:warm": train}
    providers = list(args.providers)
    if args.compare_rev:
        name = f"train@{args.compare_rev}"
        train_fns[name] = trainer_at(args.compare_rev)
        providers.append(name)

    base = {
        **env,
        "bench": "train",
        "model": args.model,
        "non_embedding_params": init.config.non_embedding_params,
        "batch_size": args.batch_size,
        "negatives": args.negatives,
        "query_max_length": args.query_length,
        "passage_max_length": args.passage_length,
        "steps": args.steps,
        "num_passages": args.num_passages,
        "repeats": args.repeats,
        "smoke": args.smoke,
    }
    rows: list[dict] = []
    runs: dict[str, list[dict]] = {p: [] for p in providers}
    with tempfile.TemporaryDirectory(prefix="bench_train_") as work:
        for r in range(args.repeats):
            for name in providers if r % 2 == 0 else providers[::-1]:
                out = run_provider(name, init, tok, pairs, corpus, cfg, doc_index, train_fns, work)
                runs[name].append(out)
                print(
                    f"{name:16s} run {r}: {out['tokens'] / out['seconds']:9.0f} tok/s  "
                    f"{out['tokens'] / out['cpu_s']:9.0f} tok/cpu-s  "
                    f"({out['seconds']:.2f} s, loss {out['losses'][0]:.4f} -> "
                    f"{out['losses'][-1]:.4f})  {stamp}",
                    flush=True,
                )
        ref = runs[providers[0]][0]
        tps = {
            name: statistics.median(o["tokens"] / o["seconds"] for o in outs)
            for name, outs in runs.items()
        }
        tpc = {
            name: statistics.median(o["tokens"] / o["cpu_s"] for o in outs)
            for name, outs in runs.items()
        }
        for name, outs in runs.items():
            speeds = [o["tokens"] / o["seconds"] for o in outs]
            diff = max(abs(a - b) for a, b in zip(outs[0]["losses"], ref["losses"]))
            rows.append(
                {
                    **base,
                    "provider": name,
                    "status": "ok",
                    "tokens_per_s": tps[name],
                    "p20_tokens_per_s": pct(speeds, 0.2),
                    "p80_tokens_per_s": pct(speeds, 0.8),
                    "step_ms": 1e3 * statistics.median(o["seconds"] for o in outs) / args.steps,
                    "tokens_per_step": outs[0]["tokens"] / args.steps,
                    "ratio_vs_plain": tps[name] / tps["plain"] if "plain" in tps else None,
                    # CPU seconds of the process (all threads): steadier than wall time on a
                    # machine shared with other jobs, and work moved to a thread still counts
                    "tokens_per_cpu_s": tpc[name],
                    "cpu_ratio_vs_plain": tpc[name] / tpc["plain"] if "plain" in tpc else None,
                    "first_loss": outs[0]["losses"][0],
                    "last_loss": outs[0]["losses"][-1],
                    f"max_loss_diff_vs_{providers[0]}": diff,
                }
            )

        if not args.no_converge:
            rows.append(converge_row(args, init, tok, pairs, dev, corpus, cfg, base, work))

    for row in rows:
        if row["bench"] == "train":
            print(
                f"{row['provider']:16s} {row['tokens_per_s']:9.0f} tok/s  "
                f"{row['step_ms']:8.1f} ms/step  x{row['ratio_vs_plain'] or float('nan'):.3f} "
                f"vs plain  {row['tokens_per_cpu_s']:9.0f} tok/cpu-s  "
                f"x{row['cpu_ratio_vs_plain'] or float('nan'):.3f} vs plain  {stamp}"
            )
        else:
            print(
                f"converge {row['model']}: steps {row['steps']}, best_step "
                f"{row['best_step']}, converged {row['converged']} ({row['convergence']}), "
                f"best dev CE {row['best_dev_ce']:.4f}, {row['seconds']:.1f} s  {stamp}"
            )
    path = _harness.write_rows("bench_train", rows, "cpu")
    print(f"rows written to {path}")
    return 0


def converge_row(args, init, tok, pairs, dev, corpus, cfg, base, work) -> dict:
    """Train until dev CE stops improving (or the cap) and report where it stopped."""
    ccfg = TrainConfig(
        **{
            **cfg.to_dict(),
            "max_steps": args.converge_max_steps,
            "eval_every": args.eval_every,
            "patience": args.patience,
            "min_delta": args.min_delta,
            "dev_pairs": args.dev_pairs,
            "dev_pool": args.dev_pool,
            "dev_repeats": 1,
            "checkpoint_every": max(args.eval_every, 100),
        }
    )
    model = build_encoder(init.config.size, vocab_size=init.config.vocab_size)
    model.load_state_dict(init.state_dict())
    t0 = time.perf_counter()
    res = train(
        model, tok, pairs, corpus, Path(work) / "converge", ccfg, dev_pairs=dev, progress=False
    )
    return {
        **base,
        "bench": "train_converge",
        "provider": "train",
        "status": "ok",
        "max_steps": args.converge_max_steps,
        "eval_every": args.eval_every,
        "patience": args.patience,
        "min_delta": args.min_delta,
        "steps": res.steps,
        "best_step": res.best_step,
        "converged": res.converged,
        "convergence": res.convergence,
        "stop_reason": res.stop_reason,
        "best_dev_ce": res.best_dev_ce,
        "tokens_per_s": res.tokens_per_second,
        "seconds": time.perf_counter() - t0,
    }


if __name__ == "__main__":
    raise SystemExit(main())
