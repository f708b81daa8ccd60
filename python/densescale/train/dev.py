"""Dev contrastive entropy during training: SPEC 1.1 on a seeded sample of the dev pairs against
a fixed pool of corpus passages that excludes every dev positive (what patience and the best
checkpoint are judged by)."""

from __future__ import annotations

import numpy as np
import torch

from densescale.train.config import TrainConfig

# negatives per dev pair for dev CE (fewer when the dev pool is smaller)
DEV_NEGATIVES = 256


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


def dev_negatives(dev_pairs, corpus, cfg: TrainConfig) -> int:
    """K of dev CE: 256, or the dev pool when smaller (corpus minus the dev positives, capped at
    ``cfg.dev_pool``); the pool ``dev_contrastive_entropy`` draws always has this size."""
    positives = {int(i) for i in pair_doc_ids(dev_pairs) if i >= 0}
    pool_size = min(cfg.dev_pool or len(corpus), len(corpus), len(corpus) - len(positives))
    return min(DEV_NEGATIVES, pool_size)


@torch.no_grad()
def dev_contrastive_entropy(model, tokenizer, dev_pairs, corpus, cfg: TrainConfig, device) -> float:
    """Contrastive entropy on (a seeded sample of) the dev pairs, SPEC 1.1 with ``cfg.dev_repeats``
    draws, against a fixed pool of corpus passages that excludes every dev positive."""
    from densescale.eval import contrastive_entropy
    from densescale.models import encode_texts

    rng = np.random.default_rng([cfg.seed, 2])
    sel = np.arange(len(dev_pairs))
    if cfg.dev_pairs and len(sel) > cfg.dev_pairs:
        sel = np.sort(rng.choice(len(sel), cfg.dev_pairs, replace=False))
    chosen = [dev_pairs[int(i)] for i in sel]
    positives = {int(i) for i in pair_doc_ids(dev_pairs) if i >= 0}
    pool_size = min(cfg.dev_pool or len(corpus), len(corpus))
    cand = rng.choice(len(corpus), min(len(corpus), pool_size + len(positives)), replace=False)
    pool = [int(i) for i in cand if int(i) not in positives][:pool_size]
    if not pool:
        raise ValueError("the dev pool is empty: every corpus passage is a dev positive")
    model.eval()
    kw = {"device": device, "batch_size": 256}
    q = encode_texts(
        model, tokenizer, [p.query for p in chosen], max_length=cfg.query_max_length, **kw
    )
    pos = encode_texts(
        model, tokenizer, [p.positive for p in chosen], max_length=cfg.passage_max_length, **kw
    )
    pool_emb = encode_texts(
        model, tokenizer, [corpus[i] for i in pool], max_length=cfg.passage_max_length, **kw
    )
    k = min(DEV_NEGATIVES, len(pool))
    return float(
        contrastive_entropy(
            q, pos, pool_emb, num_negatives=k, repeats=cfg.dev_repeats, seed=cfg.seed
        ).mean
    )
