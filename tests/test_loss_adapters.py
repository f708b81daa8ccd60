"""Trainer adapters: FusedMultipleNegativesRankingLoss equals sentence-transformers' MNRL (value and
gradients), and the HF Trainer recipe trains a tiny random BERT for a few steps on the CPU."""

from __future__ import annotations

import pytest
import torch
from _loss_helpers import BACKENDS, select_backend
from torch import nn

st = pytest.importorskip("sentence_transformers")
from sentence_transformers import SentenceTransformer, util

from densescale.losses import FusedMultipleNegativesRankingLoss

try:  # sentence-transformers >= 6
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
except ImportError:
    from sentence_transformers.losses import MultipleNegativesRankingLoss

VOCAB = 60


class TinyEncoder(nn.Module):
    """Mean of token embeddings over the attention mask, then a linear map (no dropout)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 24)
        self.proj = nn.Linear(24, 16)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mask = features["attention_mask"].unsqueeze(-1).float()
        pooled = (self.emb(features["input_ids"]) * mask).sum(1) / mask.sum(1)
        features["sentence_embedding"] = self.proj(pooled)
        return features


def _st_model(seed: int = 0) -> SentenceTransformer:
    torch.manual_seed(seed)
    return SentenceTransformer(modules=[TinyEncoder()], device="cpu")


def _features(columns: int, batch: int = 6, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for c in range(columns):
        length = 5 + c  # columns of different widths, like queries vs passages
        mask = torch.ones(batch, length, dtype=torch.long)
        mask[::2, -2:] = 0  # some padding
        out.append(
            {
                "input_ids": torch.randint(1, VOCAB, (batch, length), generator=g),
                "attention_mask": mask,
            }
        )
    return out


def _loss_and_grads(loss_fn, model, columns):
    model.zero_grad()
    loss = loss_fn(_features(columns), None)
    loss.backward()
    return loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("hard_negatives", [0, 1, 2])
@pytest.mark.parametrize(
    "similarity, scale, directions",
    [
        ("cos", 20.0, ("query_to_doc",)),
        ("dot", 1.0, ("query_to_doc",)),
        ("cos", 20.0, ("query_to_doc", "doc_to_query")),
    ],
)
def test_equals_sentence_transformers_mnrl(
    monkeypatch, backend_name, hard_negatives, similarity, scale, directions
):
    backend, _ = select_backend(backend_name, monkeypatch)
    fct = util.cos_sim if similarity == "cos" else util.dot_score
    mode = "per_direction" if len(directions) > 1 else "joint"
    model = _st_model()
    theirs = MultipleNegativesRankingLoss(
        model, scale=scale, similarity_fct=fct, directions=directions, partition_mode=mode
    )
    ours = FusedMultipleNegativesRankingLoss(
        model,
        scale=scale,
        similarity_fct=fct,
        directions=directions,
        partition_mode=mode,
        backend=backend,
    )
    want, want_grads = _loss_and_grads(theirs, model, 2 + hard_negatives)
    got, got_grads = _loss_and_grads(ours, model, 2 + hard_negatives)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), (got, want)
    for name, g in want_grads.items():
        assert torch.allclose(got_grads[name], g, rtol=1e-4, atol=1e-6), name


def test_contract_config_and_citation():
    model = _st_model()
    loss = FusedMultipleNegativesRankingLoss(model)
    assert loss.get_config_dict() == {
        "scale": 20.0,
        "similarity_fct": "cos_sim",
        "gather_across_devices": False,
        "directions": ("query_to_doc",),
        "partition_mode": "joint",
        "backend": "auto",
    }
    assert loss.temperature == pytest.approx(0.05)
    assert "1807.03748" in loss.citation
    assert loss.model is model
    # model.similarity resolves through the model's similarity_fn_name.
    dot_model = SentenceTransformer(modules=[TinyEncoder()], device="cpu", similarity_fn_name="dot")
    dot = FusedMultipleNegativesRankingLoss(
        dot_model, scale=1.0, similarity_fct=dot_model.similarity, backend="torch"
    )
    theirs = MultipleNegativesRankingLoss(dot_model, scale=1.0, similarity_fct=dot_model.similarity)
    assert torch.allclose(dot(_features(3), None), theirs(_features(3), None), rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"scale": 0.0}, ValueError, "scale must be a positive"),
        ({"similarity_fct": util.manhattan_sim}, ValueError, "similarity_fct must be cosine"),
        ({"directions": ("query_to_doc", "query_to_query")}, ValueError, "directions must be"),
        (
            {"directions": ("query_to_doc", "doc_to_query"), "partition_mode": "joint"},
            ValueError,
            "per_direction",
        ),
        ({"partition_mode": "both"}, ValueError, "partition_mode"),
        ({"backend": "fast"}, ValueError, "backend"),
    ],
)
def test_rejects_what_it_cannot_fuse(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        FusedMultipleNegativesRankingLoss(_st_model(), **kwargs)


def test_needs_anchor_and_positive():
    loss = FusedMultipleNegativesRankingLoss(_st_model(), backend="torch")
    with pytest.raises(ValueError, match="at least 2 columns"):
        loss(_features(1), None)


# ----------------------------------------------------------------------------------------------
# HF Trainer recipe
# ----------------------------------------------------------------------------------------------

WORDS = [f"w{i}" for i in range(40)]


def _tokenizer(tmp_path):
    from transformers import BertTokenizerFast

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return BertTokenizerFast(vocab_file=str(vocab))


def _tiny_bert(vocab_size):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return BertModel(cfg)


def _rows(n, negatives, seed=0):
    g = torch.Generator().manual_seed(seed)

    def text(k):
        return " ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (k,), generator=g).tolist())

    return [
        {"query": text(4), "positive": text(9), "negatives": [text(9) for _ in range(negatives)]}
        for _ in range(n)
    ]


def test_hf_trainer_recipe_trains_with_densescale_loss(tmp_path):
    pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate")
    from transformers import TrainingArguments

    import densescale
    from densescale.losses import ContrastiveDataCollator, ContrastiveTrainer

    class RecordingLoss(densescale.ContrastiveLoss):
        def forward(self, q, p, negatives=None, doc_ids=None):
            out = super().forward(q, p, negatives, doc_ids)
            self.seen.append((tuple(q.shape), tuple(p.shape), out.item()))
            return out

    tok = _tokenizer(tmp_path)
    model = _tiny_bert(tok.vocab_size)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = RecordingLoss(scale=20.0)
    loss.seen = []
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        seed=0,
    )
    trainer = ContrastiveTrainer(
        model=model,
        args=args,
        train_dataset=_rows(12, negatives=1),
        processing_class=tok,
        loss=loss,
        pooling="mean",
        normalize=True,
    )
    assert isinstance(trainer.data_collator, ContrastiveDataCollator)
    trainer.train()

    # 3 steps, each a batch of 4 queries against 4 x (positive + 1 hard negative) passages.
    assert [s[:2] for s in loss.seen] == [((4, 32), (8, 32))] * 3
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 3
    assert logged == pytest.approx([s[2] for s in loss.seen], rel=1e-4)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert len(changed) > 10

    # compute_loss is exactly densescale's loss on pooled, normalised embeddings.
    batch = trainer.data_collator(_rows(5, negatives=2, seed=1))
    model.eval()
    with torch.no_grad():
        got = trainer.compute_loss(model, batch)
        out_q = model(
            input_ids=batch["query_input_ids"], attention_mask=batch["query_attention_mask"]
        )
        out_p = model(
            input_ids=batch["passage_input_ids"], attention_mask=batch["passage_attention_mask"]
        )

        def pool(h, m):
            m = m.unsqueeze(-1).float()
            return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)

        q = pool(out_q.last_hidden_state, batch["query_attention_mask"])
        p = pool(out_p.last_hidden_state, batch["passage_attention_mask"])
        want = densescale.contrastive_loss(q, p, scale=20.0, backend="torch")
    assert p.shape[0] == 15 and torch.allclose(got, want, rtol=1e-5)


def test_collator_checks_rows(tmp_path):
    from densescale.losses import ContrastiveDataCollator

    collate = ContrastiveDataCollator(
        _tokenizer(tmp_path), query_max_length=8, passage_max_length=16
    )
    batch = collate(_rows(3, negatives=2))
    assert batch["query_input_ids"].shape[0] == 3 and batch["passage_input_ids"].shape[0] == 9
    assert batch["query_input_ids"].shape[1] <= 8 and batch["passage_input_ids"].shape[1] <= 16
    rows = _rows(2, negatives=1)
    rows[1]["negatives"] = []
    with pytest.raises(ValueError, match="same number of 'negatives'"):
        collate(rows)
    with pytest.raises(ValueError, match="lacks \\['positive'\\]"):
        collate([{"query": "w1"}])
