"""Batch encoding of texts into embeddings (inference only)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .encoder import DenseEncoder

# Texts are tokenised this many batches at a time, then sorted by length inside that window so each
# batch pads to similar lengths; the window bounds memory on corpora of millions of passages.
_SORT_WINDOW_BATCHES = 32
_HALF_DTYPES = (torch.float16, torch.bfloat16)


def _take(texts, start: int, stop: int) -> list[str]:
    try:
        chunk = texts[start:stop]
    except (TypeError, KeyError):
        chunk = None
    if chunk is None or isinstance(chunk, str):
        chunk = [texts[i] for i in range(start, stop)]
    chunk = list(chunk)
    for i, t in enumerate(chunk):
        if not isinstance(t, str):
            raise TypeError(f"texts must hold str, got {type(t).__name__} at index {start + i}")
    return chunk


def encode_texts(
    model: DenseEncoder,
    tokenizer,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Embed ``texts`` with ``model``: returns ``(n, out_dim)`` float32 on the CPU, row i = text i.

    Texts are truncated to ``max_length`` tokens; batches are formed from length-sorted windows
    (fewer pad tokens) and the original order restored. Runs under ``torch.inference_mode`` with the
    model in eval mode (its previous mode is restored). ``dtype`` float16/bfloat16 turns on autocast
    (pooling and projection stay fp32); ``device`` (default: the model's) is where the model runs
    (the model is moved there). ``texts`` is any sequence with ``len`` and slicing or indexing.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(texts, str) or not hasattr(texts, "__len__") or not hasattr(texts, "__getitem__"):
        raise TypeError(
            f"texts must be a sequence of str with len and indexing, got {type(texts).__name__}"
        )
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
        raise ValueError(
            f"max_length must be an int >= 2 ([CLS] and [SEP] take two), got {max_length!r}"
        )
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if dtype is not None and dtype not in (*_HALF_DTYPES, torch.float32):
        raise ValueError(
            f"dtype must be None, torch.float32, torch.float16 or torch.bfloat16, got {dtype!r}"
        )
    if not callable(tokenizer):
        raise TypeError(
            f"tokenizer must be a callable (transformers) tokenizer, got {type(tokenizer).__name__}"
        )
    max_pos = getattr(getattr(model, "config", None), "max_position", None)
    if max_pos is not None and max_length > max_pos:
        raise ValueError(
            f"max_length must be <= the model's max_position {max_pos}, got {max_length}"
        )
    device = torch.device(device) if device is not None else next(model.parameters()).device
    out_dim = getattr(getattr(model, "config", None), "out_dim", None)
    n = len(texts)
    if n == 0:
        if out_dim is None:
            raise ValueError("texts must not be empty")
        return torch.empty(0, out_dim, dtype=torch.float32)

    use_autocast = dtype in _HALF_DTYPES
    was_training = model.training
    model.to(device)
    model.eval()
    window = batch_size * _SORT_WINDOW_BATCHES
    out: torch.Tensor | None = None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="encode", unit="text")
    try:
        with torch.inference_mode():
            for w0 in range(0, n, window):
                w1 = min(n, w0 + window)
                chunk = _take(texts, w0, w1)
                enc = tokenizer(
                    chunk,
                    truncation=True,
                    max_length=max_length,
                    padding=False,
                    return_attention_mask=False,
                    return_token_type_ids=False,
                )
                ids = enc["input_ids"]
                # longest first: the first batch is the most memory-hungry, so OOM shows at once
                order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
                for b0 in range(0, len(order), batch_size):
                    rows = order[b0 : b0 + batch_size]
                    seqs = [ids[i] for i in rows]
                    width = max(len(s) for s in seqs)
                    input_ids = torch.full(
                        (len(seqs), width), tokenizer.pad_token_id, dtype=torch.long
                    )
                    mask = torch.zeros((len(seqs), width), dtype=torch.long)
                    for r, s in enumerate(seqs):
                        input_ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
                        mask[r, : len(s)] = 1
                    input_ids = input_ids.to(device, non_blocking=True)
                    mask = mask.to(device, non_blocking=True)
                    with torch.autocast(
                        device_type=device.type, dtype=dtype or torch.float32, enabled=use_autocast
                    ):
                        emb = model(input_ids, mask).float()
                    if out is None:
                        out = torch.empty(n, emb.shape[1], dtype=torch.float32)
                    out[torch.tensor(rows, dtype=torch.long) + w0] = emb.to("cpu")
                    if bar is not None:
                        bar.update(len(rows))
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    return out
