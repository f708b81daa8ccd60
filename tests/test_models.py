"""densescale.models: size ladder and N, the encoder, save/load, tokenizer, batch encoding."""

from __future__ import annotations

import json

import pytest
import torch

from densescale.models import (
    ALIASES,
    MINIATURES,
    SIZES,
    DenseEncoder,
    EncoderSize,
    build_encoder,
    encode_texts,
    load_encoder,
    load_tokenizer,
    non_embedding_params_formula,
    num_non_embedding_params,
    resolve_size,
    save_encoder,
    train_tokenizer,
)

PAPER_N = {
    "tiny": 512_128,
    "mini": 3_422_208,
    "small": 13_266_176,
    "medium": 25_875_712,
    "base": 86_235_648,
}

WORDS = [
    "insulin",
    "diabetes",
    "glucose",
    "heart",
    "attack",
    "stroke",
    "blood",
    "pressure",
    "kidney",
    "liver",
    "cancer",
    "tumor",
    "therapy",
    "dose",
    "symptom",
    "fever",
    "cough",
    "infection",
    "virus",
    "bacteria",
    "vaccine",
]


def _corpus(n: int = 300, seed: int = 0) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(3, 30, (1,), generator=g))
        idx = torch.randint(0, len(WORDS), (length,), generator=g).tolist()
        out.append(" ".join(WORDS[i] for i in idx))
    return out


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return train_tokenizer(_corpus(), 120, tmp_path_factory.mktemp("tok") / "wp")


# ---- sizes and N -------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", sorted(PAPER_N))
def test_paper_models_N_exact(alias):
    model = build_encoder(alias, 30522, device="meta")
    assert num_non_embedding_params(model) == PAPER_N[alias]
    assert num_non_embedding_params(model.config) == PAPER_N[alias]
    shape = SIZES[ALIASES[alias]]
    assert non_embedding_params_formula(shape.layers, shape.hidden) == PAPER_N[alias]


def test_ladder_has_24_miniatures_with_formula_N():
    assert len(MINIATURES) == 24
    Ns = []
    for name in MINIATURES:
        s = SIZES[name]
        assert s.heads == s.hidden // 64 and s.intermediate == 4 * s.hidden
        model = build_encoder(name, 1000, device="meta")
        assert num_non_embedding_params(model) == non_embedding_params_formula(s.layers, s.hidden)
        Ns.append(num_non_embedding_params(model))
    assert Ns == sorted(Ns)
    assert {(SIZES[n].layers, SIZES[n].hidden) for n in MINIATURES} == {
        (L, H) for L in (2, 4, 6, 8, 10, 12) for H in (128, 256, 512, 768)
    }


@pytest.mark.parametrize("size", ["L1-H32", "L2-H64", "L2-H96", "tiny"])
def test_N_from_real_parameters(size):
    model = build_encoder(size, 500, out_dim=64)
    s = model.config.size
    embedding = sum(p.numel() for p in model.bert.embeddings.parameters())
    total = sum(p.numel() for p in model.parameters())
    assert num_non_embedding_params(model) == total - embedding
    assert num_non_embedding_params(model) == non_embedding_params_formula(
        s.layers, s.hidden, out_dim=64
    )


def test_resolve_size():
    assert resolve_size("BASE") == SIZES["L12-H768"]
    assert resolve_size("L6-H384") == EncoderSize(6, 384, 6, 1536)
    assert resolve_size(EncoderSize(1, 48, 3, 96)).heads == 3
    with pytest.raises(ValueError, match="size"):
        resolve_size("huge")
    with pytest.raises(ValueError, match="size"):
        resolve_size("L2-H100")
    with pytest.raises(ValueError, match="divisible"):
        resolve_size(EncoderSize(1, 50, 3, 200))
    with pytest.raises(TypeError, match="size"):
        resolve_size(12)


def test_build_encoder_bad_input():
    with pytest.raises(ValueError, match="vocab_size"):
        build_encoder("tiny", 0)
    with pytest.raises(ValueError, match="out_dim"):
        build_encoder("tiny", 100, out_dim=0)
    with pytest.raises(ValueError, match="size"):
        build_encoder(None, 100)
    with pytest.raises(ValueError, match="pretrained"):
        build_encoder(None, None, pretrained="/nonexistent/ckpt")


# ---- the encoder -------------------------------------------------------------------------------


def _manual_forward(model: DenseEncoder, ids, mask):
    h = model.bert(input_ids=ids, attention_mask=mask).last_hidden_state
    pooled = torch.stack([h[i, mask[i].bool()].mean(0) for i in range(h.shape[0])])
    return pooled @ model.proj.weight.T + model.proj.bias


def test_forward_mean_pooling_ignores_padding():
    model = build_encoder("L2-H64", 50, out_dim=16).eval()
    ids = torch.randint(5, 50, (3, 9))
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0
    mask[2, 7:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    out = model(ids, mask)
    assert out.shape == (3, 16) and out.dtype == torch.float32
    torch.testing.assert_close(out, _manual_forward(model, ids, mask), rtol=1e-5, atol=1e-5)
    # the same row without its padding gives the same embedding
    torch.testing.assert_close(model(ids[:1, :4], mask[:1, :4]), out[:1], rtol=1e-5, atol=1e-5)


def test_pooler_frozen_and_trainable_rest_gets_grads():
    model = build_encoder("L1-H32", 40, out_dim=8, dropout=0.0)
    ids = torch.randint(5, 40, (4, 6))
    model(ids, torch.ones_like(ids)).square().sum().backward()
    for name, p in model.named_parameters():
        if name.startswith("bert.pooler"):
            assert not p.requires_grad
        else:
            assert p.requires_grad
            if not name.startswith("bert.embeddings.token_type") and "position" not in name:
                assert p.grad is not None, name


def test_gradient_checkpointing_same_gradients():
    torch.manual_seed(1)
    model = build_encoder("L2-H32", 40, out_dim=8, dropout=0.0).train()
    ids = torch.randint(5, 40, (4, 6))
    mask = torch.ones_like(ids)
    model(ids, mask).square().sum().backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    model.set_gradient_checkpointing(True)
    assert model.gradient_checkpointing
    calls = []
    hook = model.bert.encoder.layer[0].attention.register_forward_hook(lambda *a: calls.append(1))
    model(ids, mask).square().sum().backward()
    hook.remove()
    assert len(calls) == 2  # the block ran again in backward: activations were recomputed
    for n, g in ref.items():
        torch.testing.assert_close(dict(model.named_parameters())[n].grad, g, rtol=1e-5, atol=1e-6)
    model.set_gradient_checkpointing(False)
    assert not model.gradient_checkpointing


def test_save_load_roundtrip_and_atomic(tmp_path, monkeypatch):
    model = build_encoder("L1-H32", 60, out_dim=12)
    path = save_encoder(model, tmp_path / "m.safetensors")
    loaded = load_encoder(path)
    assert loaded.config == model.config
    for (n1, a), (n2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(a, b)
    before = path.read_bytes()

    import safetensors.torch

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save_encoder(build_encoder("L1-H32", 60, out_dim=12), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    with pytest.raises(ValueError, match="path"):
        load_encoder(tmp_path / "missing.safetensors")


def test_pretrained_from_local_path(tmp_path):
    from transformers import BertConfig, BertModel

    cfg = BertConfig(
        vocab_size=70,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=256,
        max_position_embeddings=64,
    )
    BertModel(cfg).save_pretrained(tmp_path / "ckpt")
    ref = BertModel.from_pretrained(tmp_path / "ckpt")
    model = build_encoder(None, None, pretrained=tmp_path / "ckpt", out_dim=32)
    assert model.config.size == EncoderSize(2, 64, 2, 256) and model.config.vocab_size == 70
    for n, p in ref.state_dict().items():
        assert torch.equal(model.bert.state_dict()[n], p), n
    assert build_encoder("L2-H64", 70, pretrained=tmp_path / "ckpt").config.hidden == 64
    with pytest.raises(ValueError, match="size"):
        build_encoder("tiny", None, pretrained=tmp_path / "ckpt")
    with pytest.raises(ValueError, match="vocab_size"):
        build_encoder(None, 71, pretrained=tmp_path / "ckpt")


# ---- tokenizer ---------------------------------------------------------------------------------


def test_tokenizer_batch_encode_truncates(tokenizer):
    assert tokenizer.pad_token_id == 0
    assert 20 < len(tokenizer) <= 120
    batch = tokenizer(
        ["insulin dose", " ".join(["fever"] * 50)],
        padding=True,
        truncation=True,
        max_length=10,
        return_tensors="pt",
    )
    assert batch["input_ids"].shape == (2, 10)
    assert batch["attention_mask"][0].sum() < 10 and batch["attention_mask"][1].sum() == 10
    assert batch["input_ids"][0, 0] == tokenizer.cls_token_id
    assert tokenizer.unk_token_id not in batch["input_ids"][1].tolist()


def test_tokenizer_cache(tmp_path, monkeypatch):
    texts = _corpus(100, seed=1)
    out = tmp_path / "wp"
    train_tokenizer(texts, 80, out)
    stamp = json.loads((out / "densescale_tokenizer.json").read_text())
    mtime = (out / "tokenizer.json").stat().st_mtime_ns

    import tokenizers

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although the cache matched")

    with monkeypatch.context() as m:
        m.setattr(tokenizers.Tokenizer, "train_from_iterator", no_training, raising=False)
        m.setattr(tokenizers, "Tokenizer", type("T", (), {"__init__": no_training}))
        again = train_tokenizer(list(texts), 80, out)
    assert (out / "tokenizer.json").stat().st_mtime_ns == mtime
    assert len(again) == len(load_tokenizer(out))
    # different texts or settings: rebuilt, the stamp changes
    train_tokenizer(texts[:-1] + ["zebra"], 80, out)
    assert (
        json.loads((out / "densescale_tokenizer.json").read_text())["fingerprint"]
        != stamp["fingerprint"]
    )
    train_tokenizer(texts, 90, out)
    assert (
        json.loads((out / "densescale_tokenizer.json").read_text())["settings"]["vocab_size"] == 90
    )
    assert not [p for p in tmp_path.iterdir() if p.name != "wp"]


def test_tokenizer_iterators_and_bad_input(tmp_path):
    texts = _corpus(50, seed=2)
    with pytest.raises(TypeError, match="cache_key"):
        train_tokenizer(iter(texts), 60, tmp_path / "a")
    tok = train_tokenizer((t for t in texts), 60, tmp_path / "a", cache_key="corpus-v1")
    assert tok.pad_token_id == 0
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(texts, 3, tmp_path / "b")
    with pytest.raises(TypeError, match="texts"):
        train_tokenizer("just one string", 60, tmp_path / "b")
    with pytest.raises(TypeError, match="str"):
        train_tokenizer(["ok", 3], 60, tmp_path / "b")
    with pytest.raises(ValueError, match="path"):
        load_tokenizer(tmp_path / "nope")


# ---- encode_texts ------------------------------------------------------------------------------


class _IndexOnly:
    """A sequence with len and integer indexing only (no slicing)."""

    def __init__(self, items):
        self._items = items

    def __len__(self):
        return len(self._items)

    def __getitem__(self, i):
        if not isinstance(i, int):
            raise TypeError("int indices only")
        return self._items[i]


def test_encode_texts_matches_forward_in_order(tokenizer):
    model = build_encoder("L1-H32", len(tokenizer), out_dim=16).train()
    texts = _corpus(37, seed=3)
    emb = encode_texts(model, tokenizer, texts, max_length=12, batch_size=5)
    assert model.training  # mode restored
    assert emb.shape == (37, 16) and emb.dtype == torch.float32 and emb.device.type == "cpu"
    model.eval()
    with torch.no_grad():
        for i in (0, 11, 36):
            b = tokenizer([texts[i]], truncation=True, max_length=12, return_tensors="pt")
            torch.testing.assert_close(
                emb[i], model(b["input_ids"], b["attention_mask"])[0], rtol=1e-5, atol=1e-5
            )
    other = encode_texts(model, tokenizer, _IndexOnly(texts), max_length=12, batch_size=64)
    torch.testing.assert_close(other, emb, rtol=1e-5, atol=1e-5)
    half = encode_texts(model, tokenizer, texts, max_length=12, batch_size=8, dtype=torch.bfloat16)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, emb, rtol=0.05, atol=0.05)
    assert encode_texts(model, tokenizer, [], max_length=12).shape == (0, 16)


def test_encode_texts_bad_input(tokenizer):
    model = build_encoder("L1-H32", len(tokenizer), out_dim=16, max_position=32)
    with pytest.raises(ValueError, match="max_length"):
        encode_texts(model, tokenizer, ["a"], max_length=64)
    with pytest.raises(ValueError, match="batch_size"):
        encode_texts(model, tokenizer, ["a"], max_length=8, batch_size=0)
    with pytest.raises(TypeError, match="texts"):
        encode_texts(model, tokenizer, "a string", max_length=8)
    with pytest.raises(TypeError, match="str"):
        encode_texts(model, tokenizer, ["a", None], max_length=8)
    with pytest.raises(ValueError, match="dtype"):
        encode_texts(model, tokenizer, ["a"], max_length=8, dtype=torch.int8)


def test_tokenize_cut_long_texts_is_exact(tokenizer):
    from densescale.models.encode import _can_cut, _tokenize

    assert _can_cut(tokenizer)
    words = " ".join(_corpus(40, seed=5)).split()
    texts = [" ".join(words[i : i + 60 + 13 * i]) for i in range(20)]  # 60..307 words
    texts += ["x" * 500 + " fever", "", "insulin"]  # one long word, empty, short
    for max_length in (4, 16, 64):
        expected = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        assert _tokenize(tokenizer, texts, max_length) == expected
