"""Any sentence-transformers model as an encoder that densescale can evaluate without training.

:func:`load_sentence_transformer` loads a sentence-transformers folder (an exported densescale
model, or any model saved with ``save_pretrained``) or a hub id, and wraps it as
:class:`SentenceTransformerEncoder`: ``forward(input_ids (n, T), attention_mask (n, T)) -> (n, d)``
like :class:`~densescale.models.DenseEncoder`, so :func:`densescale.eval.evaluate` and
:func:`densescale.models.encode_texts` run it under the collection's own protocol (lengths,
negatives, metrics). The score is the dot product of what the model returns, as densescale scores
every model; a model whose similarity is cosine and that does not normalise gets a note.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class _Config:
    """What densescale's evaluation reads from a model's ``config``."""

    max_position: int
    out_dim: int
    norm_scale: float = 0.0


class SentenceTransformerEncoder(nn.Module):
    """A ``SentenceTransformer`` called with token ids: ``(n, T), (n, T) -> (n, d)`` float32.

    ``prompts`` holds the model's ``query`` and ``document`` prompts (empty when it has none);
    the caller prepends them to the texts, as ``encode_query`` / ``encode_document`` do.
    """

    def __init__(self, st, name: str, score_scale: float = 0.0) -> None:
        self.exported_n: int | None = None  # N recorded by densescale export
        super().__init__()
        if not float(score_scale) >= 0.0:
            raise ValueError(
                f"score_scale must be >= 0 (0 = as the model gives), got {score_scale}"
            )
        self.st = st
        self.name = name
        self.score_scale = float(score_scale)
        first = st[0]
        max_len = getattr(st, "max_seq_length", None) or 512
        # renamed in sentence-transformers 6 (get_embedding_dimension); 5 has the old name only
        get_dim = (
            getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        )
        dim = get_dim()
        self.config = _Config(
            max_position=int(max_len), out_dim=int(dim), norm_scale=self.score_scale
        )
        inputs = getattr(getattr(first, "tokenizer", None), "model_input_names", ())
        self._token_types = "token_type_ids" in inputs
        prompts = getattr(st, "prompts", None) or {}
        self.prompts = {
            "query": prompts.get("query", ""),
            "document": prompts.get("document", prompts.get("passage", "")),
        }

    @property
    def tokenizer(self):
        return self.st.tokenizer

    @property
    def similarity(self) -> str:
        return str(getattr(self.st, "similarity_fn_name", "cosine") or "cosine")

    def non_embedding_params(self) -> int:
        """N as SPEC 1.2 counts it: every parameter but the transformer's embedding layer. A
        folder written by ``densescale export`` carries its N (``densescale.json``): its fixed
        sqrt(s) x I scaling layer is not a trained parameter."""
        if self.exported_n is not None:
            return int(self.exported_n)
        auto = getattr(self.st[0], "auto_model", None)
        emb = getattr(auto, "embeddings", None)
        skip = {id(p) for p in emb.parameters()} if emb is not None else set()
        return sum(p.numel() for p in self.st.parameters() if id(p) not in skip)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        features = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self._token_types:
            features["token_type_ids"] = torch.zeros_like(input_ids)
        emb = self.st(features)["sentence_embedding"].float()
        if self.score_scale > 0:  # scores s * cos(q, p), as a norm_scale model of densescale
            emb = torch.nn.functional.normalize(emb, dim=-1) * math.sqrt(self.score_scale)
        return emb

    @property
    def normalises(self) -> bool:
        """Whether the model's last module is a Normalize (its dot product is a cosine in
        [-1, 1]; an exported ``norm_scale`` model scales after normalising and is not one)."""
        modules = list(self.st)
        return bool(modules) and type(modules[-1]).__name__ == "Normalize"


def is_sentence_transformers_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / "modules.json").is_file()


def _check_hub(name: str) -> None:
    """Fail at once when the hub cannot serve ``name``: not cached and offline (HF_HUB_OFFLINE, or
    no route to the endpoint), instead of after the hub client's retries (a minute or more)."""
    from urllib.parse import urlparse

    try:
        from huggingface_hub import snapshot_download

        snapshot_download(name, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached (any reason): ask the hub below
        cached = False
    else:
        cached = True
    if cached:
        return
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ValueError(
            f"model {name!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
        )
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return  # reachable only through the proxy: let the hub client try
    import socket

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or 443
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as e:
        raise ValueError(
            f"model {name!r} is not a local folder, not in the local Hugging Face cache, and the "
            f"hub ({host}) cannot be reached: {e}"
        ) from None


def load_sentence_transformer(
    name: str | os.PathLike, device: str = "cpu", *, score_scale: float = 0.0
) -> SentenceTransformerEncoder:
    """Load a sentence-transformers folder or hub id (a hub id with an offline mirror, see
    :data:`~densescale.models.OFFLINE_MIRRORS`, loads from it). Raises ValueError naming the model
    when it cannot be loaded (no such folder, a hub that cannot be reached), before any other
    work. ``score_scale = s > 0`` scores ``s * cos(q, p)`` (embeddings ``sqrt(s) e/|e|``), the
    temperature a cosine model was trained with (sentence-transformers' MultipleNegativesRankingLoss
    uses 20); 0 keeps the model's own embeddings, scored by dot product."""
    from .checkpoints import _HUB_ID, _mirror, _unreachable

    text = os.fspath(name)
    path = Path(text).expanduser()
    if path.is_dir():
        if not is_sentence_transformers_folder(path) and not (path / "config.json").is_file():
            raise ValueError(
                f"model {text!r} is a folder without modules.json or config.json: not a "
                "sentence-transformers or Hugging Face model folder"
            )
        target = str(path.resolve())
    elif _HUB_ID.match(text):
        target = _mirror(text) or text
        if target == text:
            _check_hub(text)
    else:
        raise ValueError(
            f"model {text!r} is neither an existing folder nor a hub id of the form owner/name"
        )
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:  # pragma: no cover - an optional dependency
        raise ValueError(
            "zero-shot evaluation needs sentence-transformers (pip install sentence-transformers)"
        ) from e
    try:
        st = SentenceTransformer(target, device=device)
    # offline hub, missing repository, broken folder: one clear line whatever the library raised
    except Exception as e:  # noqa: BLE001
        raise ValueError(_unreachable(text, e)) from None
    st.eval()
    enc = SentenceTransformerEncoder(st, text, score_scale)
    meta = path / "densescale.json" if path.is_dir() else None
    if meta is not None and meta.is_file():
        enc.exported_n = json.loads(meta.read_text()).get("N")
    return enc
