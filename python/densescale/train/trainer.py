"""Training loop for dual encoders with the fused contrastive loss.

Resumable by construction: the data order and the random negatives of step ``s`` are functions of
``(seed, s)``, and a checkpoint (model, optimiser, scheduler, loss scale, torch RNG, history) is
written atomically every ``checkpoint_every`` steps, so a run killed at any point continues from its
last checkpoint and ends with the same result as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from densescale.losses import ContrastiveLoss
from densescale.train.batching import StepBuilder, StepPrefetcher
from densescale.train.config import TrainConfig
from densescale.train.dev import DevCheck, dev_negatives, pair_doc_ids
from densescale.train.result import TrainResult, convergence_of

CHECKPOINT = "checkpoint.pt"
BEST = "best_model.pt"
RESULT = "train_result.json"
METRICS = "metrics.jsonl"


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available")
    return torch.device(device)


def atomic_torch_save(obj: object, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def tokenize(tokenizer, texts: Sequence[str], max_length: int, device: torch.device) -> dict:
    enc = tokenizer(
        list(texts), max_length=max_length, truncation=True, padding=True, return_tensors="pt"
    )
    return {
        "input_ids": enc["input_ids"].to(device),
        "attention_mask": enc["attention_mask"].to(device),
    }


def _lr_lambda(cfg: TrainConfig, plateau: list[float] | None = None):
    """Schedule factor of step ``step``, times ``plateau[0]`` (the product of the decays applied
    on dev-CE plateaus so far; a list so the loop can change it)."""
    plateau = plateau if plateau is not None else [1.0]

    def factor(step: int) -> float:
        return plateau[0] * _schedule(step)

    def _schedule(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        progress = min(max(progress, 0.0), 1.0)
        if cfg.schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


class _Batches:
    """Step -> (pair indices, negative corpus indices), a pure function of (seed, step, rank).

    Negatives are drawn uniformly from ``pool`` (corpus rows), or from the whole corpus."""

    def __init__(
        self,
        num_pairs: int,
        corpus_size: int,
        cfg: TrainConfig,
        rank: int,
        world: int,
        pool: np.ndarray | None = None,
    ):
        if num_pairs < cfg.batch_size:
            raise ValueError(
                f"batch_size={cfg.batch_size} is larger than the number of training pairs ({num_pairs})"
            )
        if cfg.batch_size % world:
            raise ValueError(
                f"batch_size={cfg.batch_size} must be divisible by the world size {world}"
            )
        self.n, self.corpus, self.cfg, self.rank, self.world = (
            num_pairs,
            corpus_size,
            cfg,
            rank,
            world,
        )
        self.steps_per_epoch = num_pairs // cfg.batch_size
        self._epoch, self._perm = -1, None
        self.pool = pool

    def __call__(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cfg = self.cfg
        epoch, offset = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._perm = np.random.default_rng([cfg.seed, 0, epoch]).permutation(self.n)
            self._epoch = epoch
        batch = self._perm[offset * cfg.batch_size : (offset + 1) * cfg.batch_size]
        local = cfg.batch_size // self.world
        batch = batch[self.rank * local : (self.rank + 1) * local]
        rng = np.random.default_rng([cfg.seed, 1, step, self.rank])
        k_shared = cfg.num_negatives // self.world if cfg.num_negatives else 0
        n = self.corpus if self.pool is None else len(self.pool)
        shared = rng.integers(0, n, size=k_shared)
        group = rng.integers(0, n, size=(len(batch), cfg.group_negatives))
        if self.pool is not None:
            shared, group = self.pool[shared], self.pool[group]
        return batch, shared, group


def train(
    model: nn.Module,
    tokenizer,
    pairs: Sequence,
    corpus,
    out_dir: str | os.PathLike,
    config: TrainConfig,
    *,
    dev_pairs: Sequence | None = None,
    negative_pool: np.ndarray | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` on annotated ``pairs`` (query, positive text, positive corpus index) and return
    the result; random negatives are drawn from ``corpus`` (a sequence of passage texts).

    Writes ``out_dir/checkpoint.pt`` (resume state), ``out_dir/best_model.pt`` (the model state with
    the best dev contrastive entropy, or the last one without dev pairs) and
    ``out_dir/train_result.json``. Calling it again on a finished folder returns the stored result;
    on an interrupted one it resumes from the checkpoint. Under ``torchrun`` (torch.distributed
    initialised) every rank trains on its slice of each batch and negatives are gathered across
    ranks by the loss (``gather=True``); rank 0 writes the files.

    ``negative_pool`` (int64 corpus rows) restricts the random negatives to those passages; the
    study passes the corpus minus every dev and test positive, so training never pushes down the
    passages it is evaluated on (SPEC 6). Default: the whole corpus.

    Training stops when dev CE has not improved by ``config.min_delta`` for ``config.patience``
    evaluations (``result.converged``), or at ``config.max_steps``. Every ``config.log_every`` steps
    and every evaluation append a line to ``out_dir/metrics.jsonl`` (step, loss, dev_ce, lr,
    tokens_per_s, elapsed), so a run can be watched while it trains.

    Each text is tokenised once per process (``batching.shared_token_cache``: ids kept per
    tokenizer, text content and max length) and each batch is padded to its longest member, as
    tokenising on every step would give; the next step's batch is built in a thread while this
    one trains. Neither changes a result.
    """
    cfg = config
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(cfg).__name__}")
    if len(pairs) == 0:
        raise ValueError("pairs must not be empty")
    if len(corpus) == 0:
        raise ValueError("corpus must not be empty")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    max_position = getattr(getattr(model, "config", None), "max_position", None)
    for name in ("query_max_length", "passage_max_length"):
        if max_position is not None and getattr(cfg, name) > max_position:
            raise ValueError(
                f"config.{name}={getattr(cfg, name)} exceeds the model's {max_position} positions"
            )
    if negative_pool is not None:
        negative_pool = np.asarray(negative_pool, dtype=np.int64)
        if negative_pool.ndim != 1 or len(negative_pool) == 0:
            raise ValueError(
                f"negative_pool must be a non-empty 1-d array of corpus rows, got shape "
                f"{negative_pool.shape}"
            )
        if negative_pool.min() < 0 or negative_pool.max() >= len(corpus):
            raise ValueError(
                f"negative_pool rows must lie in [0, {len(corpus)}), got "
                f"[{negative_pool.min()}, {negative_pool.max()}]"
            )
    if (out / RESULT).exists():
        return TrainResult.from_dict(json.loads((out / RESULT).read_text()))

    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if distributed else 0
    world = torch.distributed.get_world_size() if distributed else 1
    device = resolve_device(cfg.device)
    use_bf16 = cfg.bf16 if cfg.bf16 is not None else device.type == "cuda"
    batches = _Batches(len(pairs), len(corpus), cfg, rank, world, negative_pool)
    doc_index = pair_doc_ids(pairs)

    torch.manual_seed(cfg.seed)
    model.to(device)
    if cfg.gradient_checkpointing:
        if not hasattr(model, "set_gradient_checkpointing"):
            raise ValueError(
                "gradient_checkpointing=True needs a DenseEncoder (set_gradient_checkpointing)"
            )
        model.set_gradient_checkpointing(True)
    net: nn.Module = model
    if distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    loss_fn = ContrastiveLoss(
        scale=cfg.scale,
        learnable_scale=cfg.learnable_scale,
        in_batch=cfg.protocol == "inbatch",
        backend=cfg.loss_backend,
        gather=distributed,
    ).to(device)
    params = list(model.parameters()) + list(loss_fn.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    plateau = [1.0]  # lr factor from plateau decays (cfg.plateau_factor ** decays)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, plateau))

    step, best_step, best_ce, bad_evals, history, elapsed = 0, 0, None, 0, [], 0.0
    decays = 0
    ckpt_path = out / CHECKPOINT
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        loss_fn.load_state_dict(state["loss"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        step, best_step, best_ce = state["step"], state["best_step"], state["best_ce"]
        bad_evals, history, elapsed = state["bad_evals"], state["history"], state["elapsed"]
        decays = state.get("decays", 0)
        plateau[0] = cfg.plateau_factor**decays if decays else 1.0
    tokens_seen = sum(h.get("tokens", 0) for h in history)
    log = _MetricsLog(out / METRICS, step, enabled=rank == 0, tensorboard=cfg.tensorboard)

    def save_checkpoint() -> None:
        if rank != 0:
            return
        atomic_torch_save(
            {
                "model": model.state_dict(),
                "loss": loss_fn.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(),
                "step": step,
                "best_step": best_step,
                "best_ce": best_ce,
                "bad_evals": bad_evals,
                "decays": decays,
                "history": history,
                "elapsed": elapsed,
                "config": cfg.to_dict(),
            },
            ckpt_path,
        )

    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=cfg.max_steps,
            initial=step,
            desc=f"train {out.name}",
            unit="step",
            dynamic_ncols=True,
            leave=False,
        )
    model.train()
    t_start, stop_early, last_loss = time.perf_counter(), False, float("nan")
    last_dev = next((h["dev_ce"] for h in reversed(history) if "dev_ce" in h), None)
    build = StepBuilder(
        batches,
        tokenizer,
        pairs,
        corpus,
        doc_index,
        query_max_length=cfg.query_max_length,
        passage_max_length=cfg.passage_max_length,
    )
    prefetcher = StepPrefetcher(build)
    dev_check = None
    try:
        while step < cfg.max_steps and not stop_early:
            inputs = prefetcher.get(step, prefetch_next=step + 1 < cfg.max_steps).to(device)
            q, p, n = inputs.queries, inputs.passages, inputs.negatives
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                q_emb, p_emb, n_emb = _encode_step(net, q, p, n, one_call=distributed)
            loss = loss_fn(
                q_emb.float(),
                p_emb.float(),
                negatives=None if n_emb is None else n_emb.float(),
                doc_ids=inputs.doc_ids,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            last_loss = float(loss.detach())
            if not math.isfinite(last_loss):
                raise FloatingPointError(
                    f"training loss became {last_loss} at step {step}; lower lr"
                )
            n_tokens = inputs.tokens
            tokens_seen += n_tokens
            entry = {"step": step, "loss": last_loss, "lr": scheduler.get_last_lr()[0]}
            entry["tokens"] = n_tokens
            if dev_pairs is not None and (step % cfg.eval_every == 0 or step == cfg.max_steps):
                prefetcher.wait()  # the evaluation tokenises too; the tokenizer is not thread-safe
                if dev_check is None:  # pool drawn and tokenised once per run
                    dev_check = DevCheck(tokenizer, dev_pairs, corpus, cfg)
                entry["dev_ce"] = last_dev = dev_check(model, device)
                model.train()
                if best_ce is None or entry["dev_ce"] < best_ce - cfg.min_delta:
                    best_ce, best_step, bad_evals = entry["dev_ce"], step, 0
                    if rank == 0:
                        atomic_torch_save(model.state_dict(), out / BEST)
                else:
                    bad_evals += 1
                    plateaued = cfg.patience > 0 and bad_evals >= cfg.patience
                    if plateaued and decays < cfg.plateau_decays:
                        # a plateau at this lr: lower it and look again (ReduceLROnPlateau)
                        decays, bad_evals = decays + 1, 0
                        plateau[0] = cfg.plateau_factor**decays
                    else:
                        stop_early = plateaued
            history.append(entry)
            run_time = elapsed + time.perf_counter() - t_start
            if (
                step % cfg.log_every == 0
                or "dev_ce" in entry
                or step == cfg.max_steps
                or stop_early
            ):
                log.write(
                    {
                        "step": step,
                        "loss": last_loss,
                        **({"dev_ce": entry["dev_ce"]} if "dev_ce" in entry else {}),
                        "lr": entry["lr"],
                        "tokens_per_s": tokens_seen / max(run_time, 1e-9),
                        "elapsed": run_time,
                    }
                )
            if bar is not None:
                bar.set_postfix(
                    loss=f"{last_loss:.3f}",
                    tok_s=f"{tokens_seen / max(run_time, 1e-9):.0f}",
                    **({"dev_ce": f"{last_dev:.3f}"} if last_dev is not None else {}),
                )
                bar.update(1)
            if step % cfg.checkpoint_every == 0 or step == cfg.max_steps or stop_early:
                elapsed_now = elapsed + time.perf_counter() - t_start
                elapsed, t_start = elapsed_now, time.perf_counter()
                save_checkpoint()
    finally:
        prefetcher.close()
    if bar is not None:
        bar.close()
    log.close()
    elapsed += time.perf_counter() - t_start
    if dev_pairs is None:
        reason = "no_dev"
    elif stop_early or (cfg.patience > 0 and bad_evals >= cfg.patience):
        reason = "patience"
    else:
        reason = "max_steps"
    dev_chance = None if dev_pairs is None else math.log(dev_negatives(dev_pairs, corpus, cfg) + 1)
    result = TrainResult(
        steps=step,
        best_step=best_step,
        best_dev_ce=best_ce,
        final_loss=last_loss,
        seconds=elapsed,
        history=history,
        stop_reason=reason,
        tokens_per_second=tokens_seen / max(elapsed, 1e-9),
        convergence=convergence_of(reason, best_step, history, cfg, dev_chance),
        dev_chance=dev_chance,
    )
    if rank == 0:
        if dev_pairs is None:
            result.best_step = step
            atomic_torch_save(model.state_dict(), out / BEST)
        atomic_write_text(out / RESULT, json.dumps(result.to_dict()))
    return result


class _MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl`` (flushed, so ``tail -f`` shows it),
    and optionally to a TensorBoard writer. On resume, lines past the checkpoint's step (written
    after it, then lost with the process) are dropped first, so the file matches the run."""

    def __init__(self, path: Path, resume_step: int, *, enabled: bool, tensorboard: bool) -> None:
        self.file = self.writer = None
        if not enabled:
            return
        if path.exists():
            kept = [
                line
                for line in path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_step
            ]
            atomic_write_text(path, "".join(line + "\n" for line in kept))
        self.file = open(path, "a", buffering=1)  # noqa: SIM115 - open for the run, closed in close()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ValueError(
                    "tensorboard=True needs the tensorboard package (pip install tensorboard)"
                ) from e
            self.writer = SummaryWriter(str(path.parent / "tensorboard"))

    def write(self, row: dict) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in row.items():
                if key != "step":
                    self.writer.add_scalar(key, value, row["step"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.writer is not None:
            self.writer.close()


def _encode_step(net, q: dict, p: dict, n: dict | None, *, one_call: bool):
    """Embed the step's queries, grouped passages and shared negatives. Under DDP the three go
    through the model in one call (padded to one length), since DDP expects one forward per
    backward; otherwise in three calls, so queries are not padded to passage length."""
    parts = [x for x in (q, p, n) if x is not None]
    if not one_call:
        out = [net(**x) for x in parts]
    else:
        width = max(x["input_ids"].shape[1] for x in parts)

        def pad(t: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.pad(t, (0, width - t.shape[1]))

        ids = torch.cat([pad(x["input_ids"]) for x in parts])
        mask = torch.cat([pad(x["attention_mask"]) for x in parts])
        out = list(
            net(input_ids=ids, attention_mask=mask).split([len(x["input_ids"]) for x in parts])
        )
    return out[0], out[1], (out[2] if n is not None else None)
