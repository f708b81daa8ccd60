"""densescale.models: the paper's dual encoder at every ladder size, its tokenizer, batch encoding."""

from __future__ import annotations

from .checkpoints import OFFLINE_MIRRORS, ModelSpec, load_checkpoint_tokenizer, resolve_model
from .encode import encode_texts
from .encoder import (
    DenseEncoder,
    DenseEncoderConfig,
    build_encoder,
    load_encoder,
    num_non_embedding_params,
    save_encoder,
)
from .export import export_sentence_transformers
from .sizes import (
    ALIASES,
    MINIATURES,
    SIZES,
    EncoderSize,
    non_embedding_params_formula,
    resolve_size,
)
from .st_encoder import SentenceTransformerEncoder, load_sentence_transformer
from .tokenizer import load_tokenizer, train_tokenizer
from .trained import TrainedModel, load_trained, select_cells

__all__ = [
    "ALIASES",
    "MINIATURES",
    "OFFLINE_MIRRORS",
    "SIZES",
    "DenseEncoder",
    "DenseEncoderConfig",
    "EncoderSize",
    "ModelSpec",
    "SentenceTransformerEncoder",
    "TrainedModel",
    "build_encoder",
    "encode_texts",
    "export_sentence_transformers",
    "load_checkpoint_tokenizer",
    "load_encoder",
    "load_sentence_transformer",
    "load_tokenizer",
    "load_trained",
    "non_embedding_params_formula",
    "num_non_embedding_params",
    "resolve_model",
    "resolve_size",
    "save_encoder",
    "select_cells",
    "train_tokenizer",
]
