"""Convergence: a tiny encoder trained a few steps with each fused backend and with the plain torch
reference gives the same losses step by step (fp32, rtol 1e-4)."""

from __future__ import annotations

import functools

import pytest
import torch
from _loss_helpers import select_backend
from torch import nn

import densescale

VOCAB, WIDTH, DIM = 200, 48, 32
STEPS = 10


class TinyEncoder(nn.Module):
    """Bag of token embeddings -> linear projection."""

    def __init__(self) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(VOCAB, WIDTH, mode="mean")
        self.proj = nn.Linear(WIDTH, DIM)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(self.bag(tokens))


def _batches(B, G, K):
    """Synthetic retrieval data: a passage shares tokens with its query."""
    g = torch.Generator().manual_seed(7)
    out = []
    for _ in range(STEPS):
        q = torch.randint(0, VOCAB, (B, 6), generator=g)
        p = torch.randint(0, VOCAB, (B * G, 12), generator=g)
        p[::G, :6] = q
        neg = torch.randint(0, VOCAB, (K, 12), generator=g) if K else None
        out.append((q, p, neg))
    return out


def _train(backend, *, B, G, K, symmetric, learnable):
    torch.manual_seed(0)
    enc = TinyEncoder()
    loss_fn = densescale.ContrastiveLoss(
        10.0, learnable_scale=learnable, symmetric=symmetric, backend=backend
    )
    opt = torch.optim.AdamW(list(enc.parameters()) + list(loss_fn.parameters()), lr=1e-2)
    losses = []
    for q_tok, p_tok, n_tok in _batches(B, G, K):
        q = nn.functional.normalize(enc(q_tok), dim=-1)
        p = nn.functional.normalize(enc(p_tok), dim=-1)
        neg = None if n_tok is None else nn.functional.normalize(enc(n_tok), dim=-1)
        loss = loss_fn(q, p, neg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, loss_fn.scale


@functools.cache
def _reference(setup: str):
    """The torch-backend run of ``setup``, computed once for all fused backends."""
    return _train("torch", **SETUPS[setup])


SETUPS = {
    "in_batch_pairs": {"B": 16, "G": 1, "K": 0, "symmetric": False, "learnable": False},
    "grouped_pool_learnable_scale": {
        "B": 12,
        "G": 2,
        "K": 8,
        "symmetric": False,
        "learnable": True,
    },
    "symmetric": {"B": 16, "G": 1, "K": 0, "symmetric": True, "learnable": True},
}


@pytest.mark.parametrize("backend_name", ["protocol", "cpp", "triton"])
@pytest.mark.parametrize("setup", list(SETUPS))
def test_fused_training_follows_reference_step_by_step(monkeypatch, backend_name, setup):
    backend, _ = select_backend(backend_name, monkeypatch)
    ref, ref_scale = _reference(setup)
    got, got_scale = _train(backend, **SETUPS[setup])
    assert ref[-1] < ref[0] * 0.9, f"the reference did not learn: {ref}"
    assert got == pytest.approx(ref, rel=1e-4), f"{backend_name}: {got} vs {ref}"
    assert got_scale == pytest.approx(ref_scale, rel=1e-4)
