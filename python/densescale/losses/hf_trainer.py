"""Hugging Face ``transformers.Trainer`` recipe: train a dual encoder with densescale's loss.

The recipe is one override, ``compute_loss``: encode the query and passage inputs of the batch
with the (shared) model, pool, and return ``densescale.ContrastiveLoss`` on the embeddings::

    from transformers import AutoModel, AutoTokenizer, TrainingArguments
    from densescale import ContrastiveLoss
    from densescale.losses import ContrastiveTrainer

    model = AutoModel.from_pretrained(...)            # any encoder returning last_hidden_state
    tok = AutoTokenizer.from_pretrained(...)
    rows = [{"query": "...", "positive": "...", "negatives": ["...", "..."]}, ...]
    trainer = ContrastiveTrainer(
        model=model,
        args=TrainingArguments("out", report_to=[]),
        train_dataset=rows,
        processing_class=tok,                         # builds a ContrastiveDataCollator
        loss=ContrastiveLoss(scale=20.0),             # in-batch + hard negatives, fused
        pooling="mean", normalize=True,
    )
    trainer.train()

Batches carry ``query_input_ids``/``query_attention_mask`` (B, Lq) and ``passage_input_ids``/
``passage_attention_mask`` (B*G, Lp), passages grouped per query (positive first, then its G-1
hard negatives), which is the layout ``contrastive_loss`` expects. The loss is a per-batch mean
(``loss_is_scaled_for_ga = False``: the Trainer divides it for gradient accumulation).

A learnable scale (``ContrastiveLoss(learnable_scale=True)``) is trained only if its parameter
reaches the optimizer: attach the loss to the model (``model.contrastive_loss = loss``) before
building the Trainer. Requires ``transformers`` with ``accelerate`` (as any Trainer does).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer

from densescale.losses.contrastive import ContrastiveLoss

__all__ = ["ContrastiveDataCollator", "ContrastiveTrainer", "pool_hidden_states"]

POOLINGS = ("mean", "cls")


def pool_hidden_states(
    hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str
) -> torch.Tensor:
    """(B, L, H) token states -> (B, H): mean over non-padding tokens, or the first ([CLS]) token."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


class ContrastiveDataCollator:
    """Tokenise rows ``{"query": str, "positive": str, "negatives": [str, ...]}`` (negatives
    optional, the same number in every row) into the tensors ``ContrastiveTrainer`` reads."""

    def __init__(
        self, tokenizer: Any, query_max_length: int = 32, passage_max_length: int = 180
    ) -> None:
        self.tokenizer = tokenizer
        self.query_max_length = query_max_length
        self.passage_max_length = passage_max_length

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        for i, row in enumerate(rows):
            missing = {"query", "positive"} - set(row)
            if missing:
                raise ValueError(
                    f"row {i} of the batch lacks {sorted(missing)}; rows need 'query' and 'positive'"
                )
        n_neg = {len(row.get("negatives", ())) for row in rows}
        if len(n_neg) > 1:
            raise ValueError(
                f"every row needs the same number of 'negatives', got counts {sorted(n_neg)}"
            )
        passages = [text for row in rows for text in [row["positive"], *row.get("negatives", ())]]
        q = self.tokenizer(
            [row["query"] for row in rows],
            padding=True,
            truncation=True,
            max_length=self.query_max_length,
            return_tensors="pt",
        )
        p = self.tokenizer(
            passages,
            padding=True,
            truncation=True,
            max_length=self.passage_max_length,
            return_tensors="pt",
        )
        return {
            "query_input_ids": q["input_ids"],
            "query_attention_mask": q["attention_mask"],
            "passage_input_ids": p["input_ids"],
            "passage_attention_mask": p["attention_mask"],
        }


class ContrastiveTrainer(Trainer):
    """``transformers.Trainer`` whose ``compute_loss`` is densescale's contrastive loss.

    Extra keyword arguments: ``loss`` (a ``ContrastiveLoss``; default scale 1, in-batch),
    ``pooling`` ("mean" or "cls") and ``normalize`` (unit-length embeddings, i.e. cosine scores).
    ``remove_unused_columns`` is switched off: the batch keys are not the model's arguments.
    """

    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

    def __init__(
        self,
        *args: Any,
        loss: ContrastiveLoss | None = None,
        pooling: str = "mean",
        normalize: bool = False,
        **kwargs: Any,
    ) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if loss is not None and not isinstance(loss, nn.Module):
            raise TypeError(
                f"loss must be a densescale ContrastiveLoss (nn.Module), got {type(loss).__name__}"
            )
        if kwargs.get("data_collator") is None and kwargs.get("processing_class") is not None:
            kwargs["data_collator"] = ContrastiveDataCollator(kwargs["processing_class"])
        super().__init__(*args, **kwargs)
        self.args.remove_unused_columns = False
        self.contrastive_loss = loss if loss is not None else ContrastiveLoss()
        self.pooling = pooling
        self.normalize = normalize

    def encode(
        self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """(B, L) token ids -> (B, H) embeddings: model's last hidden state, pooled (and normalised)."""
        out = model(input_ids=input_ids, attention_mask=attention_mask)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        emb = pool_hidden_states(hidden, attention_mask, self.pooling)
        return F.normalize(emb, dim=-1) if self.normalize else emb

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        q = self.encode(model, inputs["query_input_ids"], inputs["query_attention_mask"])
        p = self.encode(model, inputs["passage_input_ids"], inputs["passage_attention_mask"])
        loss = self.contrastive_loss(q, p)
        return (loss, {"query_embeddings": q, "passage_embeddings": p}) if return_outputs else loss
