"""Batch encoding of texts into embeddings (inference only)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

from .encoder import DenseEncoder

# Texts are tokenised this many batches at a time, then sorted by length inside that window so each
# batch pads to similar lengths; the window bounds memory on corpora of millions of passages.
_SORT_WINDOW_BATCHES = 32
_HALF_DTYPES = (torch.float16, torch.bfloat16)
# Pre-tokenizers that split on whitespace before anything else: for them the tokens of a text cut
# at a space are a prefix of the tokens of the whole text, so long texts can be cut before
# tokenising (tokenisation cost grows with the text, truncation only happens after it).
_WHITESPACE_SPLITTING = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit"}
# Characters kept per allowed token when cutting; a cut that yields too few tokens is redone whole.
_CHARS_PER_TOKEN = 8


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


def _can_cut(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre = getattr(backend, "pre_tokenizer", None)
    return pre is not None and type(pre).__name__ in _WHITESPACE_SPLITTING


def token_ids(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Ids of each text truncated to ``max_length`` (special tokens included), unpadded: one call
    of the Hugging Face ``tokenizer`` (also what training's token caches store)."""
    enc = tokenizer(
        texts,
        truncation=True,
        max_length=max_length,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    return enc["input_ids"]


def _tokenize(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids of each text truncated to ``max_length`` (special tokens included), exactly as
    ``tokenizer(texts, truncation=True, max_length=max_length)`` gives them, but cutting long texts
    at a space first when the tokenizer splits on whitespace (see ``_WHITESPACE_SPLITTING``)."""

    def run(batch: list[str]) -> list[list[int]]:
        return token_ids(tokenizer, batch, max_length)

    if not _can_cut(tokenizer):
        return run(texts)
    budget = max_length * _CHARS_PER_TOKEN
    cut_at = {}
    short = list(texts)
    for i, t in enumerate(texts):
        if len(t) > budget:
            j = t.rfind(" ", 0, budget)
            if j > 0:
                cut_at[i] = j
                short[i] = t[:j]
    ids = run(short)
    # exact only when the cut text alone already fills max_length (its tokens are a prefix of the
    # whole text's); otherwise tokenise the whole text
    redo = [i for i in cut_at if len(ids[i]) < max_length]
    if redo:
        for i, r in zip(redo, run([texts[i] for i in redo])):
            ids[i] = r
    return ids


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
    starts = list(range(0, n, window))

    def tokenize_window(w0: int) -> list[list[int]]:
        return _tokenize(tokenizer, _take(texts, w0, min(n, w0 + window)), max_length)

    # one worker tokenises the next window while the model encodes this one (the Rust tokenizer
    # releases the GIL)
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        pending = pool.submit(tokenize_window, starts[0])
        with torch.inference_mode():
            for wi, w0 in enumerate(starts):
                ids = pending.result()
                if wi + 1 < len(starts):
                    pending = pool.submit(tokenize_window, starts[wi + 1])
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
        pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
        model.train(was_training)
    return out
