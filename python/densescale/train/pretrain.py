"""Self-supervised pretraining of a ladder encoder on a collection's own corpus, before it is
fine-tuned on annotated pairs (issue 18).

Objectives, run in the order given, ``steps`` each:

- ``"mlm"``: masked language modelling (BERT; Devlin et al. 2019): 15% of the tokens are chosen,
  80% of them replaced by ``[MASK]``, 10% by a random token, 10% kept, and predicted through a
  transform + LayerNorm head whose decoder is tied to the word embeddings.
- ``"crop"``: contrastive pretraining on two independent random spans of the same passage, each
  ``crop_min``-``crop_max`` of its tokens (Contriever's "cropping"; Izacard et al. 2022), in-batch
  negatives, score = ``scale`` x cosine of the mean-pooled token states.
- ``"ict"``: the inverse cloze task (Lee et al. 2019): one sentence of a passage against the rest
  of it (the sentence is left in the key 10% of the time), same loss as ``"crop"``.

Only the BERT body is trained and kept (``encoder.pt``, a ``state_dict`` of ``DenseEncoder.bert``):
the retrieval projection is the fine-tuning's own. The data of step ``s`` is a function of
``(seed, s)`` and ``checkpoint.pt`` holds the whole state, so a killed run resumes to the same
result. Every ``log_every`` steps and every held-out evaluation append a line to ``metrics.jsonl``
(step, objective, loss, heldout_loss, lr, tokens, flops, elapsed).

Cost: ``flops = 6 * N_body * tokens + 6 * N_head * masked tokens`` (forward + backward, the usual
dense-transformer estimate, as ``scaling.budget``), with ``N_body`` the body's non-embedding
parameters and ``N_head = H^2 + H * vocab`` the MLM head run on the masked positions only;
``tokens`` counts the non-padding tokens fed to the body.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from densescale.data.trec import atomic_write_text
from densescale.train.config import reject_unknown_keys

OBJECTIVES = ("mlm", "crop", "ict")
CHECKPOINT = "checkpoint.pt"
ENCODER = "encoder.pt"
RESULT = "pretrain_result.json"
METRICS = "metrics.jsonl"
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class PretrainConfig:
    """How to pretrain: ``objectives`` in sequence, ``steps`` steps of ``batch_size`` passages each
    (cut to ``max_length`` tokens), AdamW at ``lr`` with ``warmup_steps`` of linear warm-up then a
    cosine decay to 0 within each objective. ``heldout`` passages are kept out and scored every
    ``eval_every`` steps (the curve); ``max_passages`` > 0 pretrains on a seeded sample of that many
    passages instead of the whole corpus."""

    objectives: tuple[str, ...] = ("mlm",)
    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    max_length: int = 64
    mask_prob: float = 0.15
    crop_min: float = 0.1
    crop_max: float = 0.5
    scale: float = 20.0
    heldout: int = 256
    max_passages: int = 0
    eval_every: int = 50
    log_every: int = 10
    checkpoint_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        objectives = self.objectives
        if isinstance(objectives, str) or not all(o in OBJECTIVES for o in objectives):
            raise ValueError(
                f"pretrain.objectives must be a list drawn from {OBJECTIVES}, got {objectives!r}"
            )
        if not objectives or len(set(objectives)) != len(objectives):
            raise ValueError(f"pretrain.objectives must be non-empty, no repeats: {objectives!r}")
        object.__setattr__(self, "objectives", tuple(objectives))
        for name in ("steps", "batch_size", "eval_every", "log_every", "checkpoint_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"pretrain.{name} must be an integer >= 1, got {v!r}")
        for name in ("warmup_steps", "heldout", "max_passages"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"pretrain.{name} must be an integer >= 0, got {v!r}")
        if self.max_length < 8:
            raise ValueError(f"pretrain.max_length must be >= 8 tokens, got {self.max_length}")
        if not self.lr > 0 or self.weight_decay < 0 or not self.scale > 0:
            raise ValueError(
                f"pretrain.lr and pretrain.scale must be > 0 and pretrain.weight_decay >= 0, got "
                f"{self.lr}, {self.scale}, {self.weight_decay}"
            )
        if not 0.0 < self.mask_prob < 1.0:
            raise ValueError(f"pretrain.mask_prob must be in (0, 1), got {self.mask_prob}")
        if not 0.0 < self.crop_min <= self.crop_max <= 1.0:
            raise ValueError(
                f"pretrain.crop_min / crop_max must satisfy 0 < min <= max <= 1, got "
                f"{self.crop_min}, {self.crop_max}"
            )

    @property
    def total_steps(self) -> int:
        return self.steps * len(self.objectives)

    @classmethod
    def from_dict(cls, values: dict) -> PretrainConfig:
        """Build from a ``[pretrain]`` TOML table; unknown keys are an error naming them."""
        reject_unknown_keys(cls, values, "key(s) in [pretrain]:")
        values = dict(values)
        if "objectives" in values and isinstance(values["objectives"], list):
            values["objectives"] = tuple(values["objectives"])
        return cls(**values)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["objectives"] = list(self.objectives)
        return d


class MLMHead(nn.Module):
    """BERT's prediction head: Linear(H, H) + GELU + LayerNorm, then logits against the tied word
    embeddings plus a bias. ``forward(h (m, H), embeddings (V, H)) -> (m, V)``."""

    def __init__(self, hidden: int, vocab_size: int) -> None:
        super().__init__()
        self.transform = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, h: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(F.gelu(self.transform(h))), embeddings, self.bias)


@dataclass
class PretrainResult:
    """What a finished pretraining reports (also ``pretrain_result.json``): steps, tokens and
    FLOPs spent (see the module docstring), wall seconds and the last held-out loss per objective."""

    steps: int
    tokens: int
    flops: float
    seconds: float
    heldout_loss: dict

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _sentences(tokenizer, texts: Sequence[str], limit: int) -> list[list[list[int]]]:
    """Each passage as its sentences' token ids (no special tokens), cut to ``limit`` tokens."""
    split = [[s for s in _SENTENCE.split(t.strip()) if s] or [t] for t in texts]
    flat = [s for parts in split for s in parts]
    # truncated at `limit` (the most any sentence keeps below): the same ids, and no warning
    # about sentences longer than the tokenizer's model_max_length
    ids = []
    if flat:
        ids = tokenizer(flat, add_special_tokens=False, truncation=True, max_length=limit)
        ids = ids["input_ids"]
    out, at = [], 0
    for parts in split:
        sents, used = [], 0
        for s in ids[at : at + len(parts)]:
            if used >= limit:
                break
            sents.append(s[: limit - used])
            used += len(sents[-1])
        out.append([s for s in sents if s] or [[tokenizer.unk_token_id]])
        at += len(parts)
    return out


class _Data:
    """Step -> model inputs, a pure function of (seed, step): MLM batches or contrastive pairs."""

    def __init__(self, tokenizer, passages: list[list[list[int]]], cfg: PretrainConfig):
        self.tok, self.passages, self.cfg = tokenizer, passages, cfg
        self.body = cfg.max_length - 2  # room for [CLS] and [SEP]
        self.special = {tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id}
        self.first_word = max(tokenizer.all_special_ids) + 1  # random replacements are words

    def _pad(self, rows: list[list[int]]) -> dict:
        width = max(len(r) for r in rows) + 2
        ids = torch.full((len(rows), width), self.tok.pad_token_id, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r) + 2] = torch.tensor([self.tok.cls_token_id, *r, self.tok.sep_token_id])
        return {"input_ids": ids, "attention_mask": (ids != self.tok.pad_token_id).long()}

    def _window(self, ids: list[int], rng) -> list[int]:
        start = int(rng.integers(0, max(1, len(ids) - self.body + 1)))
        return ids[start : start + self.body]

    def batch(self, objective: str, rows: np.ndarray, rng: np.random.Generator) -> dict:
        flat = [[t for s in self.passages[r] for t in s] for r in rows]
        if objective == "mlm":
            return self._masked(self._pad([self._window(ids, rng) for ids in flat]), rng)
        if objective == "crop":
            views = [[self._crop(ids, rng) for ids in flat] for _ in range(2)]
            return {"query": self._pad(views[0]), "key": self._pad(views[1])}
        queries, keys = [], []
        for r, ids in zip(rows, flat):
            sents = self.passages[r]
            if len(sents) < 2:  # one sentence: fall back to two crops of it
                queries.append(self._crop(ids, rng))
                keys.append(self._crop(ids, rng))
                continue
            i = int(rng.integers(len(sents)))
            keep = rng.random() < 0.1  # ICT keeps the sentence in its context 10% of the time
            queries.append(sents[i][: self.body])
            rest = [t for j, s in enumerate(sents) if keep or j != i for t in s]
            keys.append(self._window(rest, rng))
        return {"query": self._pad(queries), "key": self._pad(keys)}

    def _crop(self, ids: list[int], rng) -> list[int]:
        cfg = self.cfg
        n = max(1, round(len(ids) * rng.uniform(cfg.crop_min, cfg.crop_max)))
        start = int(rng.integers(0, len(ids) - n + 1))
        return ids[start : start + min(n, self.body)]

    def _masked(self, enc: dict, rng: np.random.Generator) -> dict:
        ids = enc["input_ids"].numpy().copy()
        can = ~np.isin(ids, list(self.special))
        chosen = can & (rng.random(ids.shape) < self.cfg.mask_prob)
        if not chosen.any():  # at least one target per batch
            r, c = np.argwhere(can)[0]
            chosen[r, c] = True
        labels = np.where(chosen, ids, -100)
        roll = rng.random(ids.shape)
        ids[chosen & (roll < 0.8)] = self.tok.mask_token_id
        swap = chosen & (roll >= 0.8) & (roll < 0.9)
        ids[swap] = rng.integers(self.first_word, len(self.tok), size=int(swap.sum()))
        return {
            "input_ids": torch.from_numpy(ids),
            "attention_mask": enc["attention_mask"],
            "labels": torch.from_numpy(labels),
        }


def _pooled(bert: nn.Module, enc: dict) -> torch.Tensor:
    """Unit-norm mean of the token states over non-padding tokens, (n, H)."""
    h = bert(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    return F.normalize((h * mask).sum(1) / mask.sum(1).clamp_min(1.0), dim=-1)


def _step_loss(
    bert, head, batch: dict, cfg: PretrainConfig, device
) -> tuple[torch.Tensor, int, int]:
    """Loss of one batch, non-padding tokens fed to the body, and masked tokens predicted."""
    if "labels" in batch:
        enc = {k: v.to(device) for k, v in batch.items()}
        h = bert(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        at = enc["labels"] != -100
        logits = head(h[at], bert.embeddings.word_embeddings.weight)
        tokens = int(enc["attention_mask"].sum())
        return F.cross_entropy(logits, enc["labels"][at]), tokens, int(at.sum())
    q, k = ({n: v.to(device) for n, v in batch[part].items()} for part in ("query", "key"))
    scores = cfg.scale * _pooled(bert, q) @ _pooled(bert, k).T
    tokens = int(q["attention_mask"].sum() + k["attention_mask"].sum())
    return F.cross_entropy(scores, torch.arange(len(scores), device=device)), tokens, 0


def _lr_factor(cfg: PretrainConfig):
    def factor(step: int) -> float:
        local = step % cfg.steps  # each objective warms up and decays on its own
        warm = min(1.0, (local + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        return warm * 0.5 * (1.0 + math.cos(math.pi * local / cfg.steps))

    return factor


def pretrain(
    model: nn.Module,
    tokenizer,
    corpus: Sequence[str],
    out_dir: str | os.PathLike,
    config: PretrainConfig,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> PretrainResult:
    """Pretrain ``model.bert`` (a :class:`~densescale.models.DenseEncoder`'s body) in place on
    ``corpus`` (passage texts) and return the result.

    Writes ``out_dir/encoder.pt`` (the body's ``state_dict``), ``pretrain_result.json``,
    ``metrics.jsonl`` and, while running, ``checkpoint.pt``. Called again on a finished folder it
    loads ``encoder.pt`` into the model and returns the stored result; on an interrupted one it
    resumes from the checkpoint. Raises ValueError when the corpus has fewer passages than
    ``batch_size + heldout`` or the tokenizer lacks ``[MASK]``."""
    from densescale.train.trainer import _MetricsLog, atomic_torch_save

    cfg = config
    if not isinstance(cfg, PretrainConfig):
        raise TypeError(f"config must be a PretrainConfig, got {type(cfg).__name__}")
    if tokenizer.mask_token_id is None:
        raise ValueError("the tokenizer has no [MASK] token; pretraining needs one")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bert = model.bert
    if (out / RESULT).exists():
        bert.load_state_dict(torch.load(out / ENCODER, map_location="cpu", weights_only=True))
        return PretrainResult(**json.loads((out / RESULT).read_text()))
    rows = np.random.default_rng([cfg.seed, 7]).permutation(len(corpus))
    if len(rows) < cfg.batch_size + cfg.heldout:
        raise ValueError(
            f"pretraining needs batch_size + heldout = {cfg.batch_size + cfg.heldout} passages, "
            f"the corpus has {len(rows)}"
        )
    held, rows = rows[: cfg.heldout], rows[cfg.heldout :]
    if cfg.max_passages:
        rows = rows[: cfg.max_passages]
    limit = 4 * cfg.max_length  # enough text for any window or crop
    data = _Data(
        tokenizer, _sentences(tokenizer, [corpus[int(r)] for r in np.r_[rows, held]], limit), cfg
    )
    train_rows, held_rows = np.arange(len(rows)), np.arange(len(rows), len(rows) + len(held))

    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    head = MLMHead(bert.config.hidden_size, bert.config.vocab_size).to(device)
    bert.to(device)
    params = [p for p in [*bert.parameters(), *head.parameters()] if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(cfg))
    n_body = sum(p.numel() for n, p in bert.named_parameters() if not n.startswith("embeddings"))
    n_head = (
        sum(p.numel() for p in head.parameters()) + bert.embeddings.word_embeddings.weight.numel()
    )
    state = {"step": 0, "tokens": 0, "flops": 0.0, "elapsed": 0.0, "heldout": {}}
    if (out / CHECKPOINT).exists():
        saved = torch.load(out / CHECKPOINT, map_location=device, weights_only=False)
        bert.load_state_dict(saved["bert"])
        head.load_state_dict(saved["head"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"])
        state = saved["state"]
    log = _MetricsLog(out / METRICS, state["step"], enabled=True, tensorboard=False)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.total_steps, initial=state["step"], desc=f"pretrain {out.name}")
    t0 = time.perf_counter()
    bert.train()
    try:
        while state["step"] < cfg.total_steps:
            step = state["step"]
            objective = cfg.objectives[step // cfg.steps]
            rng = np.random.default_rng([cfg.seed, step])
            batch = data.batch(
                objective, rng.choice(train_rows, cfg.batch_size, replace=False), rng
            )
            loss, tokens, masked = _step_loss(bert, head, batch, cfg, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            state["step"] = step = step + 1
            state["tokens"] += tokens
            state["flops"] += 6.0 * (n_body * tokens + n_head * masked)
            row = {"step": step, "objective": objective, "loss": float(loss.detach())}
            if not math.isfinite(row["loss"]):
                raise FloatingPointError(
                    f"pretraining loss became {row['loss']} at step {step}; lower pretrain.lr"
                )
            last_of_phase = step % cfg.steps == 0
            if held_rows.size and (step % cfg.eval_every == 0 or last_of_phase):
                row["heldout_loss"] = _heldout(bert, head, data, objective, held_rows, cfg, device)
                state["heldout"][objective] = row["heldout_loss"]
                bert.train()
            elapsed = state["elapsed"] + time.perf_counter() - t0
            if step % cfg.log_every == 0 or "heldout_loss" in row:
                row.update(
                    lr=scheduler.get_last_lr()[0],
                    tokens=state["tokens"],
                    flops=state["flops"],
                    elapsed=elapsed,
                )
                log.write(row)
            if bar is not None:
                bar.update(1)
            if step % cfg.checkpoint_every == 0 or step == cfg.total_steps:
                state["elapsed"], t0 = elapsed, time.perf_counter()
                saved = {
                    "bert": bert.state_dict(),
                    "head": head.state_dict(),
                    "state": state,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": torch.get_rng_state(),
                }
                atomic_torch_save(saved, out / CHECKPOINT)
    finally:
        log.close()
        if bar is not None:
            bar.close()
    state["elapsed"] += time.perf_counter() - t0
    bert.eval()
    atomic_torch_save({k: v.cpu() for k, v in bert.state_dict().items()}, out / ENCODER)
    result = PretrainResult(
        steps=state["step"],
        tokens=state["tokens"],
        flops=state["flops"],
        seconds=state["elapsed"],
        heldout_loss=dict(state["heldout"]),
    )
    atomic_write_text(out / RESULT, json.dumps(result.to_dict()) + "\n")
    (out / CHECKPOINT).unlink(missing_ok=True)  # the result and encoder.pt are all a reader needs
    return result


@torch.no_grad()
def _heldout(bert, head, data: _Data, objective: str, rows, cfg, device) -> float:
    """Mean loss of the objective on the held-out passages, with fixed masks / crops (seed 0)."""
    bert.eval()
    rng, losses, weights = np.random.default_rng([cfg.seed, 1 << 20]), [], []
    for start in range(0, len(rows), cfg.batch_size):
        part = rows[start : start + cfg.batch_size]
        if objective != "mlm" and len(part) < 2:
            continue
        loss, _, _ = _step_loss(bert, head, data.batch(objective, part, rng), cfg, device)
        losses.append(float(loss))
        weights.append(len(part))
    return float(np.average(losses, weights=weights)) if losses else float("nan")
