"""The torch (reference), faiss and Triton backends of exact search: each scores the corpus chunk
by chunk and merges the per-chunk top-k lists (densescale.ops.search)."""

from __future__ import annotations

import os

import numpy as np
import torch

from densescale.ops._search_common import (
    _chunk_rows,
    _finite_flag,
    _inverse_norms,
    _NonFinite,
    _row_chunks,
    merge_topk,
    sort_pairs,
    topk_exact,
)


def _search_torch(q, shards, k, cos, chunk_rows=None):
    q = q.float()
    rows = chunk_rows or _chunk_rows(q.shape[1], 1 + q.shape[0] // q.shape[1])
    best = None
    for shard in shards:
        for r, chunk in _row_chunks(shard.data, rows):
            c = chunk.to(q.device, non_blocking=True).float()
            scores = q @ c.T
            if cos:
                scores *= _inverse_norms(c)[None, :]
            # One sync per chunk (~256 MiB of work): NaN scores would break the exact top-k.
            bad = ~_finite_flag(scores)
            if bool(bad):
                return None, None, _NonFinite(flag=bad)
            part = topk_exact(scores, k, shard.offset + r)
            best = part if best is None else merge_topk([best, part], k)
    return (*best, _NonFinite())


def _search_faiss(q, shards, k, cos, threads, chunk_rows=None):
    try:
        import faiss
    except ImportError as e:
        raise ImportError("backend='faiss' needs faiss (pip install faiss-cpu)") from e
    faiss.omp_set_num_threads(threads)
    qn = np.ascontiguousarray(q.float().cpu().numpy())
    rows = chunk_rows or _chunk_rows(q.shape[1])
    best = None
    ok = _finite_flag(q)
    for shard in shards:
        for r, chunk in _row_chunks(shard.data, rows):
            c = chunk.cpu().float()
            # faiss drops NaN scores (they never beat the heap), so its inputs are checked instead.
            ok &= _finite_flag(c)
            if cos:
                c = c * _inverse_norms(c)[:, None]
            index = faiss.IndexFlatIP(q.shape[1])
            index.add(np.ascontiguousarray(c.numpy()))
            ks = min(k, c.shape[0])
            dist, idx = index.search(qn, ks)
            part = sort_pairs(torch.from_numpy(dist), torch.from_numpy(idx) + shard.offset + r)
            best = part if best is None else merge_topk([best, part], k)
    return best[0].to(q.device), best[1].to(q.device), _NonFinite(flag=~ok)


def _triton_module():
    try:
        from densescale.ops import _search_triton
    except ImportError as e:
        raise ImportError(
            "backend='triton' needs triton and densescale.ops._search_triton; use backend='torch'"
        ) from e
    return _search_triton


def _triton_device_ok(device: torch.device) -> bool:
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def _search_triton(q, shards, k, cos, chunk_rows=None):
    mod = _triton_module()
    if not _triton_device_ok(q.device):
        raise ValueError(f"backend='triton' needs CUDA queries, got queries on {q.device}")
    q = q.float().contiguous()
    best = None
    bad = torch.zeros((), dtype=torch.bool, device=q.device)
    for shard in shards:
        # A shard already on the device is scored whole (the kernel never materialises scores);
        # others are streamed: copy a chunk, score it, keep only its top-k.
        on_device = shard.data.device == q.device
        rows = chunk_rows or (shard.data.shape[0] if on_device else _chunk_rows(q.shape[1]))
        for r, chunk in _row_chunks(shard.data, rows):
            c = chunk.to(q.device, non_blocking=True)
            if c.dtype == torch.float64:
                c = c.float()
            if cos:
                c = (c.float() * _inverse_norms(c)[:, None]).to(c.dtype)
            s, i, b = mod.topk(
                q.to(c.dtype) if c.dtype != torch.float32 else q,
                c.contiguous(),
                min(k, c.shape[0]),
                return_nonfinite=True,
            )
            bad |= b
            part = (s.float(), i + (shard.offset + r))
            best = part if best is None else merge_topk([best, part], k)
    return (*best, _NonFinite(flag=bad))
