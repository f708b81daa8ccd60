"""Step inputs for the trainer: token ids computed once per run, batches padded to their longest
member, and the next step's batch built in a background thread while the current one trains.

A training step needs the token ids of its queries, its (grouped) positives and its random
negatives. Calling the tokenizer on every step costs about a seventh of a small model's step on a
CPU, and most texts come back: every query and positive once per epoch, corpus passages whenever
they are drawn again as negatives. :class:`TokenCache` tokenises each text the first time it is
asked for and keeps its ids (truncated to ``max_length``, special tokens included) in a growing
``(rows, max_length)`` matrix, so a text is never tokenised twice in a run and memory follows the
texts actually touched, not the size of the corpus. :func:`shared_token_cache` keeps these caches
for the whole process, keyed by the tokenizer, the texts' content and ``max_length``, so the cells
of a study that one worker process trains in turn tokenise the corpus and the queries once between
them.

:meth:`TokenCache.batch` pads a batch to its longest member, on the tokenizer's padding side, which
is what ``tokenizer(texts, padding=True, truncation=True, max_length=T)`` gives: the tensors, and so
the losses, are exactly those of tokenising on every step.

:class:`StepPrefetcher` builds step ``s + 1`` in a worker thread while step ``s`` runs (the Rust
tokenizer and numpy release the GIL). Step inputs are a pure function of ``step`` (see
``trainer._Batches``) and the worker touches no torch RNG, so prefetching changes no result.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from densescale.models.encode import token_ids

_INITIAL_ROWS = 1024
_FILL_CHUNK = 8192  # texts tokenised per tokenizer call when many rows are new
# token caches kept per process (shared_token_cache): corpus, queries, positives of a few runs
_SHARED_MAX = 6
_SHARED: OrderedDict[tuple, TokenCache] = OrderedDict()
_SHARED_LOCK = threading.Lock()


class TokenCache:
    """Token ids of the texts ``get_text(0..size-1)``, tokenised on first use and kept for the run.

    ``batch(rows)`` returns ``{"input_ids": (n, T) int64, "attention_mask": (n, T) int64}`` with
    ``T`` the longest of the rows, equal to ``tokenizer([get_text(r) for r in rows],
    max_length=max_length, truncation=True, padding=True, return_tensors="pt")``. ``batch`` holds
    a lock, so threads may share a cache (the tokenizer itself must not be used by two at once).
    """

    def __init__(
        self, tokenizer, size: int, get_text: Callable[[int], str], max_length: int
    ) -> None:
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be a positive int, got {max_length!r}")
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        pad = getattr(tokenizer, "pad_token_id", None)
        if pad is None:
            raise ValueError("the tokenizer has no padding token (pad_token_id is None)")
        side = getattr(tokenizer, "padding_side", "right")
        if side not in ("right", "left"):
            raise ValueError(f"tokenizer.padding_side must be 'right' or 'left', got {side!r}")
        self.tokenizer, self.get_text, self.max_length = tokenizer, get_text, max_length
        self.pad_id, self.left = int(pad), side == "left"
        vocab = len(tokenizer) if hasattr(tokenizer, "__len__") else 2**31
        self._dtype = np.uint16 if vocab <= np.iinfo(np.uint16).max else np.int32
        self._slot = np.full(size, -1, dtype=np.int64)  # text row -> row of _ids, -1: not yet
        self._ids = np.full((0, max_length), self.pad_id, dtype=self._dtype)
        self._len = np.zeros(0, dtype=np.int64)
        self._used = 0
        self._lock = threading.Lock()
        self.tokenised = 0  # texts tokenised so far (each once)

    def __len__(self) -> int:
        return len(self._slot)

    def _grow(self, need: int) -> None:
        cap = len(self._len)
        if need <= cap:
            return
        # doubling, but never past one row per text (a full corpus cache is allocated once)
        new_cap = max(need, min(max(2 * cap, _INITIAL_ROWS), len(self._slot)))
        ids = np.full((new_cap, self.max_length), self.pad_id, dtype=self._dtype)
        ids[:cap] = self._ids
        lens = np.zeros(new_cap, dtype=np.int64)
        lens[:cap] = self._len
        self._ids, self._len = ids, lens

    def _fill(self, rows: np.ndarray) -> None:
        missing = np.unique(rows[self._slot[rows] < 0])
        # a bounded number of texts and id lists alive at once, however many rows are asked for
        self._grow(self._used + len(missing))
        for c0 in range(0, len(missing), _FILL_CHUNK):
            self._fill_chunk(missing[c0 : c0 + _FILL_CHUNK])

    def _fill_chunk(self, missing: np.ndarray) -> None:
        texts = []
        for r in missing:
            t = self.get_text(int(r))
            if not isinstance(t, str):
                raise TypeError(f"texts must be str, got {type(t).__name__} at row {int(r)}")
            texts.append(t)
        seqs = token_ids(self.tokenizer, texts, self.max_length)
        start = self._used
        self._grow(start + len(seqs))
        for k, s in enumerate(seqs):
            if len(s) > self.max_length:  # a tokenizer that ignored truncation
                raise ValueError(
                    f"the tokenizer returned {len(s)} ids for max_length={self.max_length}"
                )
            self._ids[start + k, : len(s)] = s
            self._len[start + k] = len(s)
        self._slot[missing] = np.arange(start, start + len(seqs))
        self._used = start + len(seqs)
        self.tokenised += len(seqs)

    def lengths(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Token count of each row's text (int64, special tokens included), tokenising any not
        yet seen."""
        rows = self._rows(rows)
        with self._lock:
            self._fill(rows)
            return self._len[self._slot[rows]].copy()

    def _rows(self, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self._slot)):
            raise IndexError(
                f"rows must lie in [0, {len(self._slot)}), got [{rows.min()}, {rows.max()}]"
            )
        return rows

    def batch(self, rows: Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
        rows = self._rows(rows)
        with self._lock:
            self._fill(rows)
            slots = self._slot[rows]
            lens = self._len[slots]
            width = int(lens.max()) if len(rows) else 0
            ids = self._ids[slots, :width].astype(np.int64)
        mask = np.arange(width)[None, :] < lens[:, None]
        if self.left:  # move each row's tokens to the right end
            shift = width - lens
            cols = (np.arange(width)[None, :] - shift[:, None]) % max(width, 1)
            ids = np.take_along_axis(ids, cols, axis=1)
            mask = mask[:, ::-1]
            ids[~mask] = self.pad_id
        return {
            "input_ids": torch.from_numpy(ids),
            "attention_mask": torch.from_numpy(mask.astype(np.int64)),
        }


def _tokenizer_key(tokenizer) -> str | None:
    """Digest of a fast tokenizer's full definition (vocabulary, normaliser, special tokens,
    post-processor) and padding side; None for tokenizers without one."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "to_str"):
        return None
    h = hashlib.blake2b(backend.to_str().encode(), digest_size=16)
    h.update(f"|{type(tokenizer).__name__}|{getattr(tokenizer, 'padding_side', 'right')}".encode())
    h.update(f"|{getattr(tokenizer, 'pad_token_id', None)}".encode())
    return h.hexdigest()


def _texts_key(texts) -> str | None:
    """Digest of the content of a ``densescale.data.Texts`` (its byte buffers); None otherwise."""
    buf, off = getattr(texts, "text_buffer", None), getattr(texts, "text_offsets", None)
    if not isinstance(buf, np.ndarray) or not isinstance(off, np.ndarray):
        return None
    h = hashlib.blake2b(digest_size=16)
    h.update(memoryview(np.ascontiguousarray(off)).cast("B"))
    h.update(memoryview(np.ascontiguousarray(buf)).cast("B"))
    return h.hexdigest()


def shared_token_cache(tokenizer, texts: Sequence[str], max_length: int) -> TokenCache:
    """The process-wide :class:`TokenCache` of ``texts`` for this tokenizer and ``max_length``.

    Runs that pass the same texts (equal content, e.g. a collection loaded again for the next
    cell) and an equal tokenizer get the same cache, so no text is tokenised twice in a process.
    Texts without a content digest (plain lists) or tokenizers without a definition to digest get
    a fresh cache. The last ``_SHARED_MAX`` caches are kept."""
    tk, xk = _tokenizer_key(tokenizer), _texts_key(texts)
    if tk is None or xk is None:
        return TokenCache(tokenizer, len(texts), texts.__getitem__, max_length)
    key = (tk, xk, len(texts), max_length)
    with _SHARED_LOCK:
        cache = _SHARED.get(key)
        if cache is None:
            cache = TokenCache(tokenizer, len(texts), texts.__getitem__, max_length)
            _SHARED[key] = cache
            while len(_SHARED) > _SHARED_MAX:
                _SHARED.popitem(last=False)
        else:
            _SHARED.move_to_end(key)
            # equal content: read from this run's objects, so earlier ones can be freed
            cache.tokenizer, cache.get_text = tokenizer, texts.__getitem__
        return cache


class _PairTexts:
    """Token batches of one text field of the pairs, by pair row: through the shared cache of the
    pairs' text buffer (``TrainingPairs``), else a cache of this run over pair rows."""

    def __init__(self, tokenizer, pairs: Sequence, field: str, max_length: int) -> None:
        texts = getattr(pairs, "queries" if field == "query" else "positives", None)
        rows = getattr(pairs, "query_rows" if field == "query" else "positive_rows", None)
        if _texts_key(texts) is not None and rows is not None:
            self.cache = shared_token_cache(tokenizer, texts, max_length)
            self.rows = np.asarray(rows, dtype=np.int64)
        else:
            self.cache = TokenCache(
                tokenizer, len(pairs), lambda i: getattr(pairs[i], field), max_length
            )
            self.rows = None

    def batch(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        return self.cache.batch(idx if self.rows is None else self.rows[idx])


@dataclass
class StepInputs:
    """Everything a step feeds the model and the loss, on the CPU.

    ``queries`` (B, Tq), ``passages`` (B * (1 + G), Tp) [positive, its G negatives] per query,
    ``negatives`` (K, Tp') or None, ``doc_ids`` (B * (1 + G) + K,) int64 corpus rows of every
    candidate (false-negative masking), ``tokens`` the non-padding tokens of all three."""

    step: int
    queries: dict[str, torch.Tensor]
    passages: dict[str, torch.Tensor]
    negatives: dict[str, torch.Tensor] | None
    doc_ids: torch.Tensor
    tokens: int

    def to(self, device: torch.device) -> StepInputs:
        if device.type == "cpu":
            return self
        move = lambda d: None if d is None else {k: v.to(device) for k, v in d.items()}
        return StepInputs(
            self.step,
            move(self.queries),
            move(self.passages),
            move(self.negatives),
            self.doc_ids.to(device),
            self.tokens,
        )


class StepBuilder:
    """``step -> StepInputs`` from a batch sampler (``step -> (pair rows, shared negative rows,
    (B, G) group negative rows)``), with token caches over the pairs' queries and positives and
    over the corpus."""

    def __init__(
        self,
        sampler: Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]],
        tokenizer,
        pairs: Sequence,
        corpus: Sequence[str],
        doc_index: np.ndarray,
        *,
        query_max_length: int,
        passage_max_length: int,
    ) -> None:
        self.sampler, self.doc_index = sampler, doc_index
        self.queries = _PairTexts(tokenizer, pairs, "query", query_max_length)
        self.positives = _PairTexts(tokenizer, pairs, "positive", passage_max_length)
        if _texts_key(corpus) is not None:
            self.corpus = shared_token_cache(tokenizer, corpus, passage_max_length)
        else:
            self.corpus = TokenCache(tokenizer, len(corpus), corpus.__getitem__, passage_max_length)
        self.pad_id = self.corpus.pad_id
        self.left = self.corpus.left

    def __call__(self, step: int) -> StepInputs:
        idx, shared, group = self.sampler(step)
        idx = np.asarray(idx, dtype=np.int64)
        group = np.asarray(group, dtype=np.int64).reshape(len(idx), -1)
        shared = np.asarray(shared, dtype=np.int64)
        q = self.queries.batch(idx)
        if group.shape[1]:
            # [positive, its group negatives] per query, in one batch padded to its longest
            pos = self.positives.batch(idx)
            neg = self.corpus.batch(group.reshape(-1))
            p = _interleave(pos, neg, group.shape[1], self.pad_id, self.left)
        else:
            p = self.positives.batch(idx)
        n = self.corpus.batch(shared) if len(shared) else None
        doc_ids = np.concatenate([self.doc_index[idx][:, None], group], axis=1).reshape(-1)
        doc_ids = torch.from_numpy(np.concatenate([doc_ids, shared]))
        tokens = int(q["attention_mask"].sum() + p["attention_mask"].sum())
        if n is not None:
            tokens += int(n["attention_mask"].sum())
        return StepInputs(step, q, p, n, doc_ids, tokens)


def _interleave(
    pos: dict[str, torch.Tensor], neg: dict[str, torch.Tensor], g: int, pad_id: int, left: bool
) -> dict[str, torch.Tensor]:
    """Rows ``[pos_0, neg_0 .. neg_{g-1}, pos_1, ...]`` padded to the longest of them."""
    b = len(pos["input_ids"])
    width = max(pos["input_ids"].shape[1], neg["input_ids"].shape[1])
    out = {}
    for key, fill in (("input_ids", pad_id), ("attention_mask", 0)):
        a, c = pos[key], neg[key]

        def widen(t: torch.Tensor, value: int) -> torch.Tensor:
            extra = width - t.shape[1]
            return torch.nn.functional.pad(t, (extra, 0) if left else (0, extra), value=value)

        rows = torch.cat([widen(a, fill).unsqueeze(1), widen(c, fill).view(b, g, width)], dim=1)
        out[key] = rows.reshape(b * (1 + g), width)
    return out


class StepPrefetcher:
    """Yields ``build(step)`` for consecutive steps, building the next one in a worker thread.

    ``get(step)`` returns the inputs of ``step``; when the previous call prefetched that step, its
    result is used, otherwise it is built now. ``close()`` drops any prefetched step."""

    def __init__(self, build: Callable[[int], StepInputs], *, enabled: bool = True) -> None:
        self.build = build
        self._pool = ThreadPoolExecutor(max_workers=1) if enabled else None
        self._pending: tuple[int, Future] | None = None

    def get(self, step: int, *, prefetch_next: bool = True) -> StepInputs:
        if self._pool is None:
            return self.build(step)
        if self._pending is not None and self._pending[0] == step:
            out = self._pending[1].result()
        else:
            if self._pending is not None:
                self._pending[1].cancel()
            out = self._pool.submit(self.build, step).result()
        self._pending = (
            (step + 1, self._pool.submit(self.build, step + 1)) if prefetch_next else None
        )
        return out

    def wait(self) -> None:
        """Block until the prefetched step is built (call before using the tokenizer elsewhere:
        a fast tokenizer's truncation settings are shared state, not safe across threads)."""
        if self._pending is not None:
            self._pending[1].exception()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending = None
