"""The paper's dual encoder (SPEC 1.2): a BERT encoder shared by queries and passages, mean pooling
over non-padding tokens, and a linear projection with bias to ``out_dim`` (768) dimensions.

    e(x) = W * mean_{t : mask_t = 1} h_t(x) + b,      s(q, p) = e(q) . e(p)

The BERT pooler is kept (as in the authors' model, and so that N counts it as SPEC 1.2 does) but is
frozen: mean pooling never reads it, and a parameter without gradient would trip DDP and AdamW.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .sizes import EncoderSize, resolve_size

_CONFIG_KEY = "densescale_encoder_config"


@dataclass(frozen=True)
class DenseEncoderConfig:
    """Everything needed to rebuild a :class:`DenseEncoder` (saved next to its weights)."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab_size: int
    out_dim: int = 768
    max_position: int = 512
    dropout: float = 0.1
    pad_token_id: int = 0
    norm_scale: float = 0.0

    @property
    def size(self) -> EncoderSize:
        return EncoderSize(self.layers, self.hidden, self.heads, self.intermediate)

    @property
    def non_embedding_params(self) -> int:
        """N of SPEC 1.2: encoder blocks + pooler + projection."""
        return self.size.non_embedding_params(self.out_dim)

    def to_bert_config(self):
        from transformers import BertConfig

        return BertConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            intermediate_size=self.intermediate,
            max_position_embeddings=self.max_position,
            hidden_dropout_prob=self.dropout,
            attention_probs_dropout_prob=self.dropout,
            pad_token_id=self.pad_token_id,
            type_vocab_size=2,
        )

    @classmethod
    def from_dict(cls, d: dict) -> DenseEncoderConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(
                f"encoder config has unknown keys {sorted(unknown)}; expected {sorted(names)}"
            )
        return cls(**d)


class DenseEncoder(nn.Module):
    """BERT + masked mean pooling + Linear(H -> out_dim, bias).

    ``forward(input_ids (n, T) int64, attention_mask (n, T)) -> (n, out_dim) float32``. Pooling and
    the projection run in fp32 even under autocast, so embeddings are fp32-accumulated.

    ``config.norm_scale = 0`` (the paper's model) returns raw embeddings, scored by dot product.
    ``norm_scale = s > 0`` returns ``sqrt(s) * e / |e|``, so that the dot product of two embeddings
    is ``s * cos(q, p)``: normalised embeddings with a fixed temperature 1/s, with every consumer
    (loss, search, contrastive entropy) unchanged. A norm cannot then encode "seen in training".
    """

    def __init__(self, config: DenseEncoderConfig, bert: nn.Module | None = None) -> None:
        super().__init__()
        if not isinstance(config, DenseEncoderConfig):
            raise TypeError(f"config must be a DenseEncoderConfig, got {type(config).__name__}")
        self.config = config
        if bert is None:
            from transformers import BertModel

            bert = BertModel(config.to_bert_config(), add_pooling_layer=True)
        self.bert = bert
        if getattr(self.bert, "pooler", None) is not None:
            self.bert.pooler.requires_grad_(False)
        self.proj = nn.Linear(config.hidden, config.out_dim, bias=True)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"input_ids and attention_mask must both be (n, T), got {tuple(input_ids.shape)} "
                f"and {tuple(attention_mask.shape)}"
            )
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(torch.float32)
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            summed = (hidden.float() * mask).sum(dim=1)
            # clamp: an all-padding row (empty text) pools to zeros instead of NaN.
            pooled = summed / mask.sum(dim=1).clamp_min(1.0)
            emb = F.linear(pooled, self.proj.weight.float(), self.proj.bias.float())
            if self.config.norm_scale > 0:
                emb = F.normalize(emb, dim=-1) * math.sqrt(self.config.norm_scale)
            return emb

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block's activations in backward (less memory, ~30% more compute)."""
        # transformers 5 renamed gradient_* to activation_*; the old names warn and will go in v6
        kwargs = {"use_reentrant": False}
        if hasattr(self.bert, "activation_checkpointing_enable"):
            if enabled:
                self.bert.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                self.bert.activation_checkpointing_disable()
        elif enabled:
            self.bert.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        else:
            self.bert.gradient_checkpointing_disable()

    @property
    def gradient_checkpointing(self) -> bool:
        """Whether block activations are recomputed in backward."""
        return any(getattr(m, "gradient_checkpointing", False) for m in self.bert.modules())

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def build_encoder(
    size: str | EncoderSize | None,
    vocab_size: int | None,
    out_dim: int = 768,
    pretrained: str | os.PathLike | None = None,
    max_position: int = 512,
    *,
    dropout: float = 0.1,
    pad_token_id: int = 0,
    norm_scale: float = 0.0,
    device: str | torch.device | None = None,
) -> DenseEncoder:
    """Build a :class:`DenseEncoder` of a ladder ``size`` with random init, or from a Hugging Face
    BERT checkpoint ``pretrained``: a local folder with ``config.json`` or a hub id that
    transformers resolves (online). The checkpoint's shape and vocabulary win; ``size`` and
    ``vocab_size``, when given, must agree with it; the projection to ``out_dim`` is new.
    ``norm_scale > 0`` normalises embeddings (see :class:`DenseEncoder`). ``device="meta"`` builds
    without memory (for counting parameters).
    """
    if pretrained is None:
        if size is None:
            raise ValueError("size must be given when pretrained is None, got None")
        shape = resolve_size(size)
        if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 1:
            raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
    if not isinstance(out_dim, int) or out_dim < 1:
        raise ValueError(f"out_dim must be a positive int, got {out_dim!r}")
    if not isinstance(max_position, int) or max_position < 1:
        raise ValueError(f"max_position must be a positive int, got {max_position!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if not float(norm_scale) >= 0.0:
        raise ValueError(f"norm_scale must be >= 0 (0 = raw dot products), got {norm_scale!r}")

    ctx = torch.device(device) if device is not None else contextlib.nullcontext()
    if pretrained is not None:
        path = Path(pretrained)
        from .checkpoints import _HUB_ID

        local = path.is_dir()
        if (local and not (path / "config.json").is_file()) or (
            not local and not _HUB_ID.match(str(pretrained))
        ):
            raise ValueError(
                "pretrained must be a local checkpoint directory with config.json or a hub id "
                f"(owner/name), got {str(path)!r}"
            )
        from transformers import BertModel

        try:
            bert = BertModel.from_pretrained(str(pretrained), add_pooling_layer=True)
        except OSError as e:
            from .checkpoints import _unreachable

            raise ValueError(_unreachable(str(pretrained), e)) from None
        bc = bert.config
        config = DenseEncoderConfig(
            layers=bc.num_hidden_layers,
            hidden=bc.hidden_size,
            heads=bc.num_attention_heads,
            intermediate=bc.intermediate_size,
            vocab_size=bc.vocab_size,
            out_dim=out_dim,
            max_position=bc.max_position_embeddings,
            dropout=bc.hidden_dropout_prob,
            pad_token_id=bc.pad_token_id if bc.pad_token_id is not None else 0,
            norm_scale=float(norm_scale),
        )
        if size is not None and resolve_size(size) != config.size:
            raise ValueError(
                f"size {size!r} does not match the checkpoint at {str(path)!r}, which is {config.size}"
            )
        if vocab_size is not None and vocab_size != config.vocab_size:
            raise ValueError(
                f"vocab_size must match the checkpoint's {config.vocab_size}, got {vocab_size}"
            )
        model = DenseEncoder(config, bert=bert)
        return model.to(device) if device is not None else model

    config = DenseEncoderConfig(
        layers=shape.layers,
        hidden=shape.hidden,
        heads=shape.heads,
        intermediate=shape.intermediate,
        vocab_size=vocab_size,
        out_dim=out_dim,
        max_position=max_position,
        dropout=float(dropout),
        pad_token_id=pad_token_id,
        norm_scale=float(norm_scale),
    )
    with ctx:
        return DenseEncoder(config)


def num_non_embedding_params(model: DenseEncoder | DenseEncoderConfig) -> int:
    """N of SPEC 1.2: every parameter except the embedding layer (word, position and token-type
    embeddings and their LayerNorm), i.e. encoder blocks + pooler + projection, counted from the
    model's real parameters (frozen ones included). A :class:`DenseEncoderConfig` gives the formula.
    """
    if isinstance(model, DenseEncoderConfig):
        return model.non_embedding_params
    if not isinstance(model, DenseEncoder):
        raise TypeError(
            f"model must be a DenseEncoder or DenseEncoderConfig, got {type(model).__name__}"
        )
    embedding = {id(p) for p in model.bert.embeddings.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in embedding)


def save_encoder(model: DenseEncoder, path: str | os.PathLike) -> Path:
    """Write weights and config into one safetensors file, atomically (temp file + os.replace)."""
    from safetensors.torch import save_file

    if not isinstance(model, DenseEncoder):
        raise TypeError(f"model must be a DenseEncoder, got {type(model).__name__}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(
            f"path must be a file path (e.g. model.safetensors), got directory {str(path)!r}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", _CONFIG_KEY: json.dumps(asdict(model.config))}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_encoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> DenseEncoder:
    """Rebuild a :class:`DenseEncoder` written by :func:`save_encoder`."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"path must be an existing file written by save_encoder, got {str(path)!r}"
        )
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if _CONFIG_KEY not in meta:
        raise ValueError(
            f"{str(path)!r} has no densescale encoder config; was it written by save_encoder?"
        )
    config = DenseEncoderConfig.from_dict(json.loads(meta[_CONFIG_KEY]))
    model = DenseEncoder(config)
    model.load_state_dict(load_file(str(path), device="cpu"), strict=True)
    return model.to(device)
