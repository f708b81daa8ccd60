"""FlatIndex: an exact (brute-force) vector index over densescale.search, faiss-compatible.

Vectors are kept as a list of shards in the storage dtype (fp32 / fp16 / bf16); ``metric="cos"``
stores them unit-normalised, so every search is an inner product. ``save`` writes one ``.npy`` per
shard plus ``meta.json`` into a temporary directory and renames it into place; ``load`` maps the
shards (``mmap_mode="r"``), so a corpus larger than RAM is streamed shard by shard. Results equal
``faiss.IndexFlatIP`` on the same data up to the order of ties (here: smaller id first). On a CPU
with AVX2 or AVX-512, each shard gets a bf16 (AMX) or int8 (the other engines) screening copy on
the first search (+2 or +1 bytes per element, kept while the shard lives, however many shards;
see densescale.ops.search): the results stay those of the exact kernel.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from densescale._validation import check_choice, check_finite
from densescale.ops.search import (
    METRICS,
    SEARCH_BACKENDS,
    _as_tensor,
    _check_matrix,
    _normalize,
    keep_screen_copy,
)
from densescale.ops.search import search as _search

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_FORMAT = "densescale.FlatIndex/1"
# add() appends to the last in-memory shard while it is shorter than this (fewer, larger shards).
_COALESCE_ROWS = 1 << 16


class FlatIndex:
    """Exact top-k index: ``add`` vectors (N, dim), ``search`` queries (M, dim) -> (scores, ids).

    On a CPU with AVX2 or AVX-512 the first search makes a low-precision screening copy of every
    shard of at least 16,384 rows (+2 bytes per element for bf16 / AMX, +1 for int8; ~0.4 s per
    200,000 x 768), kept while the shard lives and reused by every later search; results stay
    the exact fp32 kernel's.

    Args:
        dim: vector dimension D.
        metric: "ip" (inner product) or "cos" (vectors and queries are normalised).
        dtype: storage dtype, "float32", "float16" or "bfloat16" (scores are always fp32).
    """

    def __init__(self, dim: int, metric: str = "ip", dtype: str = "float32") -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            got = (
                f"a {type(dim).__name__}"
                if isinstance(dim, (torch.Tensor, np.ndarray))
                else repr(dim)
            )
            raise ValueError(f"dim must be a positive int (the vectors go to add()), got {got}")
        check_choice("metric", metric, METRICS)
        check_choice("dtype", dtype, tuple(_DTYPES))
        self.dim = int(dim)
        self.metric = metric
        self.dtype = dtype
        self._shards: list[torch.Tensor] = []
        self._owned: list[bool] = []  # False for memory-mapped shards (never appended to)

    def __len__(self) -> int:
        return sum(s.shape[0] for s in self._shards)

    def __repr__(self) -> str:
        return f"FlatIndex(dim={self.dim}, metric={self.metric!r}, dtype={self.dtype!r}, ntotal={len(self)})"

    @property
    def shards(self) -> list[torch.Tensor]:
        """The stored (rows, dim) shards, in id order (read-only views for loaded indexes)."""
        return list(self._shards)

    def add(self, vectors: torch.Tensor | np.ndarray) -> None:
        """Append (n, dim) vectors; they get ids len(self) .. len(self) + n - 1."""
        v = given = _as_tensor("vectors", vectors)
        _check_matrix("vectors", v)
        if v.shape[1] != self.dim:
            raise ValueError(f"vectors must have dim {self.dim}, got shape {tuple(v.shape)}")
        check_finite("vectors", v)
        v = v.detach().cpu()
        if self.metric == "cos":
            v = _normalize(v)
        v = v.to(_DTYPES[self.dtype]).contiguous()
        if v.data_ptr() == given.data_ptr():
            v = v.clone()  # own the storage: later edits to the caller's array must not leak in
        if self._shards and self._owned[-1] and self._shards[-1].shape[0] < _COALESCE_ROWS:
            self._shards[-1] = torch.cat([self._shards[-1], v])
        else:
            self._shards.append(v)
            self._owned.append(True)

    def search(
        self,
        queries: torch.Tensor | np.ndarray,
        k: int,
        *,
        backend: str = "auto",
        threads: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-k of queries (M, dim): (scores (M, k) fp32, ids (M, k) int64), best first.

        Same as ``densescale.search(queries, <all added vectors>, k, metric=self.metric)``; the
        stored vectors were checked for NaN/Inf once, when added (one min/max pass, naming the
        row); queries are checked from their scores at no extra cost.
        """
        check_choice("backend", backend, SEARCH_BACKENDS)
        if not self._shards:
            raise ValueError("the index is empty: add vectors before searching")
        q = _as_tensor("queries", queries)
        _check_matrix("queries", q)
        if q.shape[1] != self.dim:
            raise ValueError(f"queries must have dim {self.dim}, got shape {tuple(q.shape)}")
        if self.metric == "cos":
            q = _normalize(q)  # a NaN/Inf query stays non-finite and is reported by the search
        for shard in self._shards:  # the index lives long: its screening copy pays off
            keep_screen_copy(shard)
        return _search(q, self._shards, k, metric="ip", backend=backend, threads=threads)

    # ---- persistence ----

    def save(self, path: str | os.PathLike) -> None:
        """Write the index to directory ``path`` atomically (temp dir, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        try:
            files = []
            for s, shard in enumerate(self._shards):
                name = f"shard_{s:05d}.npy"
                arr = (
                    shard.view(torch.int16).numpy().view(np.uint16)
                    if self.dtype == "bfloat16"
                    else shard.numpy()
                )
                np.save(tmp / name, arr)
                files.append({"file": name, "rows": int(shard.shape[0])})
            meta = {"format": _FORMAT, "dim": self.dim, "metric": self.metric, "dtype": self.dtype,
                    "ntotal": len(self), "shards": files}  # fmt: skip
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            _swap_dir(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike, *, mmap: bool = True) -> FlatIndex:
        """Read an index written by ``save``; shards are memory-mapped unless ``mmap=False``."""
        path = Path(path)
        meta_file = path / "meta.json"
        if not meta_file.exists():
            raise ValueError(
                f"path must be a directory written by FlatIndex.save, no meta.json in {path}"
            )
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{meta_file}: format must be {_FORMAT!r}, got {meta.get('format')!r}")
        index = cls(meta["dim"], metric=meta["metric"], dtype=meta["dtype"])
        for entry in meta["shards"]:
            arr = np.load(path / entry["file"], mmap_mode="r" if mmap else None)
            if arr.ndim != 2 or arr.shape != (entry["rows"], index.dim):
                raise ValueError(
                    f"{path / entry['file']}: expected shape ({entry['rows']}, {index.dim}), got {arr.shape}"
                )
            with warnings.catch_warnings():  # read-only map: the index never writes through it
                warnings.simplefilter("ignore", UserWarning)
                t = torch.from_numpy(arr)
            if index.dtype == "bfloat16":
                t = t.view(torch.bfloat16)
            elif t.dtype != _DTYPES[index.dtype]:
                raise ValueError(f"{path / entry['file']}: expected {index.dtype}, got {arr.dtype}")
            index._shards.append(t)
            index._owned.append(not mmap)
        if len(index) != meta["ntotal"]:
            raise ValueError(
                f"{meta_file}: ntotal {meta['ntotal']} but shards hold {len(index)} rows"
            )
        return index

    # ---- faiss interop ----

    @classmethod
    def from_faiss(cls, index, *, dtype: str = "float32") -> FlatIndex:
        """Copy a faiss ``IndexFlatIP`` (or ``IndexFlat`` with inner-product metric)."""
        import faiss

        if (
            not isinstance(index, faiss.IndexFlat)
            or index.metric_type != faiss.METRIC_INNER_PRODUCT
        ):
            raise TypeError(f"index must be a faiss IndexFlatIP, got {type(index).__name__}")
        out = cls(index.d, metric="ip", dtype=dtype)
        if index.ntotal:
            out.add(index.reconstruct_n(0, index.ntotal))
        return out

    def to_faiss(self):
        """A faiss ``IndexFlatIP`` holding the same vectors (fp32; normalised ones for "cos")."""
        import faiss

        out = faiss.IndexFlatIP(self.dim)
        for shard in self._shards:
            for r in range(0, shard.shape[0], 1 << 16):
                out.add(np.ascontiguousarray(shard[r : r + (1 << 16)].float().numpy()))
        return out


def _swap_dir(tmp: Path, path: Path) -> None:
    """Put directory ``tmp`` at ``path``; an existing index stays whole until the new one is in."""
    if not path.exists():
        os.replace(tmp, path)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    os.rmdir(old)
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)
