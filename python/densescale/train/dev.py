"""Dev contrastive entropy during training: SPEC 1.1 on a seeded sample of the dev pairs against
a fixed pool of corpus passages that excludes every dev positive (what patience and the best
checkpoint are judged by).

The pool is the same at every dev check of a run, so :class:`DevCheck` draws it once (numpy rows,
no per-passage Python objects) and tokenises its passages once, through the process-wide corpus
token cache the trainer's negatives use; a dev check then only runs the model. At the paper's
scale (a 1,000,000-passage pool, SPEC 6) retokenising the pool at every check would cost more
host time than the check's forward passes."""

from __future__ import annotations

import numpy as np
import torch

from densescale.train.config import TrainConfig

# negatives per dev pair for dev CE (fewer when the dev pool is smaller)
DEV_NEGATIVES = 256
_ENCODE_BATCH = 256


def pair_doc_ids(pairs) -> np.ndarray:
    """Corpus row each pair's positive comes from, used as doc id to mask false negatives: the
    source passage for ICT / cropping pairs, a unique negative id when a pair has none."""
    src = getattr(pairs, "source_indices", None)
    ids = np.asarray(
        src if src is not None else [p.positive_index for p in pairs], dtype=np.int64
    ).copy()
    missing = ids < 0
    ids[missing] = -2 - np.nonzero(missing)[0]
    return ids


def _dev_positives(dev_pairs) -> np.ndarray:
    """Sorted unique corpus rows of the dev positives (int64)."""
    ids = pair_doc_ids(dev_pairs)
    return np.unique(ids[ids >= 0])


def dev_negatives(dev_pairs, corpus, cfg: TrainConfig) -> int:
    """K of dev CE: 256, or the dev pool when smaller (corpus minus the dev positives, capped at
    ``cfg.dev_pool``); the pool ``dev_contrastive_entropy`` draws always has this size."""
    n_pos = len(_dev_positives(dev_pairs))
    pool_size = min(cfg.dev_pool or len(corpus), len(corpus), len(corpus) - n_pos)
    return min(DEV_NEGATIVES, pool_size)


class DevCheck:
    """The dev check of one run: ``check(model, device) -> float`` dev CE.

    Built once per run: the seeded sample of ``cfg.dev_pairs`` dev pairs, and the pool of
    ``min(cfg.dev_pool, len(corpus))`` corpus rows drawn with ``default_rng([cfg.seed, 2])`` minus
    every dev positive (int64 array). The pool passages are tokenised on the first check and kept
    (``passage_max_length`` ids per passage, uint16 for vocabularies under 65,536).
    Raises ValueError when every corpus passage is a dev positive."""

    def __init__(self, tokenizer, dev_pairs, corpus, cfg: TrainConfig) -> None:
        from densescale.train.batching import TokenCache, shared_token_cache

        rng = np.random.default_rng([cfg.seed, 2])
        sel = np.arange(len(dev_pairs))
        if cfg.dev_pairs and len(sel) > cfg.dev_pairs:
            sel = np.sort(rng.choice(len(sel), cfg.dev_pairs, replace=False))
        self.queries = [dev_pairs[int(i)].query for i in sel]
        self.positives = [dev_pairs[int(i)].positive for i in sel]
        positives = _dev_positives(dev_pairs)
        pool_size = min(cfg.dev_pool or len(corpus), len(corpus))
        cand = rng.choice(len(corpus), min(len(corpus), pool_size + len(positives)), replace=False)
        self.pool = cand[~np.isin(cand, positives)][:pool_size].astype(np.int64)
        if not len(self.pool):
            raise ValueError("the dev pool is empty: every corpus passage is a dev positive")
        self.tokenizer, self.cfg = tokenizer, cfg
        if hasattr(corpus, "text_buffer"):  # the trainer's negatives share these ids
            self.cache = shared_token_cache(tokenizer, corpus, cfg.passage_max_length)
        else:
            self.cache = TokenCache(
                tokenizer, len(corpus), corpus.__getitem__, cfg.passage_max_length
            )
        self._order: np.ndarray | None = None  # pool rows, longest first (fewer pad tokens)

    @torch.no_grad()
    def __call__(self, model, device) -> float:
        from densescale.eval import contrastive_entropy
        from densescale.models import encode_texts

        cfg = self.cfg
        was_training = model.training
        model.eval()
        kw = {"device": device, "batch_size": _ENCODE_BATCH}
        q = encode_texts(model, self.tokenizer, self.queries, max_length=cfg.query_max_length, **kw)
        pos = encode_texts(
            model, self.tokenizer, self.positives, max_length=cfg.passage_max_length, **kw
        )
        pool_emb = self._encode_pool(model, torch.device(device))
        model.train(was_training)
        k = min(DEV_NEGATIVES, len(self.pool))
        ce = contrastive_entropy(
            q, pos, pool_emb, num_negatives=k, repeats=cfg.dev_repeats, seed=cfg.seed
        )
        return float(ce.mean)

    def _encode_pool(self, model, device: torch.device) -> torch.Tensor:
        if self._order is None:
            lengths = self.cache.lengths(self.pool)  # tokenises the pool once
            self._order = np.argsort(-lengths, kind="stable")
        out = None
        for b0 in range(0, len(self._order), _ENCODE_BATCH):
            at = self._order[b0 : b0 + _ENCODE_BATCH]
            batch = self.cache.batch(self.pool[at])
            emb = model(batch["input_ids"].to(device), batch["attention_mask"].to(device)).float()
            if out is None:
                out = torch.empty(len(self.pool), emb.shape[1], dtype=torch.float32)
            out[torch.from_numpy(at)] = emb.cpu()
        return out


def dev_contrastive_entropy(model, tokenizer, dev_pairs, corpus, cfg: TrainConfig, device) -> float:
    """Contrastive entropy on (a seeded sample of) the dev pairs, SPEC 1.1 with ``cfg.dev_repeats``
    draws, against a fixed pool of corpus passages that excludes every dev positive. One check;
    a run that checks repeatedly builds one :class:`DevCheck` and calls it."""
    return DevCheck(tokenizer, dev_pairs, corpus, cfg)(model, device)
