"""The C++ path of exact search: the exact kernel (csrc/search_kernel.h) per shard, and the
low-precision screen in front of it (csrc/screen.h: the bound, its derivation and the exactness
proof; engines: AMX (bf16), AVX512-VNNI, AVX512-BF16, AVX-512BW and AVX2 (int8), chosen at run
time), its cached corpus copies and fallbacks."""

from __future__ import annotations

import itertools
import os
import sys
import warnings
import weakref
from dataclasses import dataclass

import torch

from densescale._native import native
from densescale.ops._search_common import (
    _CPP_TYPE,
    _chunk_rows,
    _NonFinite,
    _row_chunks,
    _shard_inverse_norms,
    merge_topk,
)


def _search_cpp(q, shards, k, cos, threads, isa=""):
    C = native()
    q = q.float().contiguous()
    parts = []
    bad = _NonFinite(hints={})
    screen_stats.update(candidates=0, queries=0, fallbacks=0)
    call = next(_calls)
    for si, shard in enumerate(shards):
        c = shard.data
        if c.device.type != "cpu":
            raise ValueError(f"backend='cpp' needs a CPU corpus, got a shard on {c.device}")
        if c.dtype not in _CPP_TYPE:
            c = c.float()
        if c.stride(1) != 1 or c.stride(0) < c.shape[1]:
            c = c.contiguous()
        n = c.shape[0]
        ks = min(k, n)
        # The screen runs on the public path only (isa="": the active ISA, whose arithmetic its
        # rescoring reproduces); an explicit isa pins the exact kernel of that ISA.
        screen = None
        if not isa:
            cacheable = c is shard.data
            screen = _screen_copy(c, cacheable, q.shape[0], ks, cos, threads, call, shard.offset)
        scale = screen.scale if screen is not None else (_shard_inverse_norms(c) if cos else None)
        s = torch.empty(q.shape[0], ks, dtype=torch.float32)
        i = torch.empty(q.shape[0], ks, dtype=torch.int64)
        bad_q = bad_row = -1
        if screen is not None:
            bad_q, bad_row = _search_screened(C, q, c, screen, ks, shard.offset, s, i, threads)
        if screen is None or bad_row >= 0:  # NaN/Inf scores: the exact kernel names the row
            bad_q, bad_row = C.search_topk(
                q.data_ptr(), q.shape[0], q.shape[1], c.data_ptr(), n, c.stride(0),
                _CPP_TYPE[c.dtype], 0 if scale is None else scale.data_ptr(), ks, shard.offset,
                s.data_ptr(), i.data_ptr(), threads, isa,
            )  # fmt: skip
        if bad_row >= 0:
            bad.hints[si] = bad_row
            bad.query = bad_q if bad.query < 0 else min(bad.query, bad_q)
            break  # the call raises: the remaining shards need not be scored
        parts = [merge_topk(parts + [(s, i)], k)] if parts else [(s, i)]
    return (*parts[0], bad) if parts else (None, None, bad)


# ---- low-precision screen (csrc/screen.h: the bound, its derivation and the exactness proof) ----
#
# On a CPU with AVX2 or AVX-512 the C++ path screens the whole corpus in bf16 (AMX, AVX512-BF16) or
# int8 (AVX512-VNNI, AVX-512BW, AVX2) against a copy made once per corpus tensor (cached below, 2
# or 1 bytes per element plus 16 bytes per row), keeps the rows whose upper bound reaches the k-th
# largest lower bound, and rescores only those with the exact fp32 kernel: the result is
# search_topk's, bit for bit. Queries for which the bound keeps too many rows (more than
# ``cand_frac`` of the shard and ``min_cand_limit``, or 12 k for int8, whose bound is ~4x wider)
# run the exact kernel instead. A copy is keyed on the tensor object, the metric, the format and
# torch's version counter (in-place torch ops invalidate it; inference tensors have none and are
# never cached); writes that bypass torch, such as through a numpy view of the same memory, are
# not seen: make a new tensor (or FlatIndex) after such writes.

_SCREEN = {
    "min_rows": 16384,  # smaller shards: the exact kernel (the screen would not pay off)
    "max_k_frac": 1 / 16,  # k above this fraction of the shard: exact kernel
    # int8 screens only k up to this: at k = 1,000 on 200k Gaussian rows its wider bound keeps
    # ~8,500 rows per query on AVX512-VNNI (~12,000 on AVX-512BW / AVX2, whose queries are
    # coarser) and the screen was slower than the exact kernel (VNNI 1.45-1.59 s against 1.40 s,
    # AVX2 3.2-3.6 s against 2.9-3.0 s)
    "int8_max_k": 256,
    "cand_frac": 1 / 64,  # per query, more candidates than this fraction: exact kernel
    "min_cand_limit": 4096,  # ... but never fewer than this many
    "pack_min_queries": 256,  # a copy is made on first sight only for batches this large
    "engine": None,  # None: the CPU's (screen_engine()); "off"; "amx", "avx512vnni", "avx512bf16",
    # "avx512bw", "avx2" pin one; tests set "emulated" / "emulated-int8" (portable, slow)
    "bound_scale": 1.0,  # tests only: a wrong (shrunk) bound must be caught by them
    # copies of plain corpus tensors kept (least recently used dropped); a FlatIndex's shards and
    # the shards of the call in progress are never dropped for room
    "cache_size": 4,
}
# Counters of the last screened call (for the benchmark and tests): candidates rescored,
# queries screened, queries sent to the exact kernel.
screen_stats = {"candidates": 0, "queries": 0, "fallbacks": 0}


@dataclass
class _ScreenCopy:
    """Low-precision copy of one corpus tensor plus the per-row bound factors: bf16 in AMX tile
    layout (which the AVX512-BF16 engine reads as VDPBF16PS operands too) or int8 in VPDPBUSD
    layout (csrc/screen.h, "The int8 format")."""

    cpack: torch.Tensor  # (Np * Dp,) int16 (bf16 bits) or uint8 (int8 + 128)
    meta: torch.Tensor  # (4 * Np,) fp32
    Np: int
    Dp: int
    scale: torch.Tensor | None  # fp32 inverse norms (cosine) the copy and the rescoring use
    key: tuple
    ok: bool  # False: some row is NaN/Inf or out of the screen's range -> exact kernel
    format: str = "bf16"

    @property
    def nbytes(self) -> int:
        return self.cpack.numel() * self.cpack.element_size() + self.meta.numel() * 4


# (id(tensor), cos, format) -> [weakref to the tensor, its copy, the search call that last used it]
_screen_cache: dict[tuple[int, bool, str], list] = {}
_calls = itertools.count()  # numbers the _search_cpp calls


def _screen_engine() -> str | None:
    if _SCREEN["engine"] == "off":
        return None
    if _SCREEN["engine"] is not None:
        return _SCREEN["engine"]
    env = os.environ.get("DENSESCALE_SCREEN", "").lower()
    if env in ("0", "off", "none"):
        return None
    C = native()
    if env in ("", "on", "auto"):
        default = C.screen_engine()
        return None if default == "none" else default
    usable = list(C.screen_engines())
    if env not in usable:
        capped = (
            f" (DENSESCALE_ISA caps this process at {C.isa()})"
            if C.isa() != C.detected_isa()
            else ""
        )
        runs = usable or "(none)"
        raise ValueError(
            f"DENSESCALE_SCREEN must be off, auto or an engine this process can run {runs}, "
            f"got {env!r}{capped}"
        )
    return env


def search_engine() -> str:
    """The low-precision screen the CPU search uses now: "amx" (bf16 tiles), "avx512vnni" (int8),
    "avx512bf16", "avx512bw" (int8 on AVX-512 without VNNI), "avx2" (int8, where AVX2 is the
    widest ISA), or "off" (the exact fp32 kernel only: no AVX2, ``DENSESCALE_ISA=generic``, or
    ``DENSESCALE_SCREEN=off``). ``DENSESCALE_SCREEN=<engine>`` pins one; a value
    this process cannot run raises ``ValueError``. Whatever the engine, results are the exact
    kernel's (csrc/screen.h)."""
    return _screen_engine() or "off"


def _screen_copy(c, cacheable, M, k, cos, threads, call=-1, offset=0) -> _ScreenCopy | None:
    """The cached screening copy of corpus tensor ``c`` (made now if it pays off), or None when
    the exact kernel should run: no screen on this CPU, a small shard, a large k, or a corpus
    the screen does not take (NaN/Inf or norms outside [2^-40, 2^40]). ``call`` numbers the
    search call, whose other shards' copies are not dropped to make room for this one; ``offset``
    is the shard's first id (for the warning that names a row out of range)."""
    engine = _screen_engine()
    n = c.shape[0]
    if engine is None or n < _SCREEN["min_rows"] or k > n * _SCREEN["max_k_frac"] or n >= 2**31:
        return None
    fmt = native().screen_format(engine)
    if fmt == "int8" and (k > _SCREEN["int8_max_k"] or c.shape[1] > 65536):  # (int32 sums)
        return None
    if c.is_inference():  # no version counter: in-place changes could not be seen, no caching
        cacheable = False
    key = (c.data_ptr(), tuple(c.shape), tuple(c.stride()), c.dtype, cos)
    key += (c._version,) if cacheable else ()
    ident = (id(c), cos, fmt)  # a pinned engine of the other format keeps its own copy
    hit = _screen_cache.get(ident) if cacheable else None
    if hit is not None and hit[0]() is c and hit[1].key == key:
        _screen_cache[ident] = _screen_cache.pop(ident)  # most recently used last
        hit[2] = call
        return hit[1] if hit[1].ok else None
    if M < _SCREEN["pack_min_queries"] and not (cacheable and _is_long_lived(c)):
        return None  # a copy for a small batch costs more than the screen saves
    copy = _make_screen_copy(c, key, cos, threads, fmt)
    if not copy.ok:
        _warn_out_of_range(c, offset)
    if cacheable:
        _screen_cache.pop(ident, None)
        _make_room(call)
        ref = weakref.ref(c, lambda _r, ident=ident: _drop_screen_copy(ident, _r))
        _screen_cache[ident] = [ref, copy, call]
    return copy if copy.ok else None


def _make_room(call: int) -> None:
    """Drop the least recently used copies of plain tensors until fewer than ``cache_size`` are
    left. Copies of long-lived tensors (a FlatIndex's shards: kept while the shard lives) and of
    this call's other shards stay: a corpus of more shards than ``cache_size`` would otherwise
    remake every copy on every search."""
    plain = [
        ident
        for ident, (ref, _, last) in _screen_cache.items()
        if last != call and not (ref() is not None and _is_long_lived(ref()))
    ]
    for ident in plain[: max(0, len(plain) - _SCREEN["cache_size"] + 1)]:
        del _screen_cache[ident]


_long_lived: dict[int, weakref.ref] = {}


def keep_screen_copy(t: torch.Tensor) -> None:
    """Mark a corpus tensor as long-lived (a ``FlatIndex`` shard): its screening copy is made on
    the first search whatever the batch size, since later searches reuse it."""
    ident = id(t)
    _long_lived[ident] = weakref.ref(t, lambda _r, ident=ident: _long_lived.pop(ident, None))


def _is_long_lived(t: torch.Tensor) -> bool:
    ref = _long_lived.get(id(t))
    return ref is not None and ref() is t


def _drop_screen_copy(ident: tuple[int, bool, str], ref: weakref.ref) -> None:
    hit = _screen_cache.get(ident)
    if hit is not None and hit[0] is ref:
        del _screen_cache[ident]


def _caller_outside_package() -> int:
    """The ``stacklevel`` (as seen from its caller) of the first frame outside densescale: a
    warning then points at the user's search / FlatIndex.search line, however deep the call."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    level, frame = 2, sys._getframe(2)  # frame 2 is stacklevel 2 of the warn() in our caller
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def _warn_out_of_range(c: torch.Tensor, offset: int) -> None:
    """Say once per copy why a corpus is not screened when a row's nonzero norm lies outside
    [2^-40, 2^40] (a NaN/Inf row is an error the search itself raises). Runs only when the copy
    was refused: one more pass over the shard, in chunks."""
    for start, chunk in _row_chunks(c, _chunk_rows(c.shape[1])):
        norms = torch.linalg.vector_norm(chunk.double(), dim=1)
        bad = ((norms > 0) & ((norms < 2.0**-40) | (norms > 2.0**40))).nonzero()
        if len(bad):
            j = int(bad[0])
            warnings.warn(
                f"corpus row {offset + start + j} has norm {float(norms[j]):.3g}, outside the "
                "low-precision screen's range [2^-40, 2^40]: this corpus (shard) is searched by "
                "the exact fp32 kernel only (same results, slower); rescale it to screen it",
                RuntimeWarning,
                stacklevel=_caller_outside_package(),
            )
            return


def _make_screen_copy(c, key, cos, threads, fmt="bf16") -> _ScreenCopy:
    n, d = c.shape
    align = 64 if fmt == "int8" else 32
    Np, Dp = -(-n // 32) * 32, -(-d // align) * align
    scale = _shard_inverse_norms(c) if cos else None
    cpack = torch.empty(Np * Dp, dtype=torch.uint8 if fmt == "int8" else torch.int16)
    meta = torch.empty(4 * Np, dtype=torch.float32)
    ok = native().screen_pack(
        c.data_ptr(), n, d, c.stride(0), _CPP_TYPE[c.dtype],
        0 if scale is None else scale.data_ptr(), cpack.data_ptr(), meta.data_ptr(), Np, Dp,
        threads, fmt,
    )  # fmt: skip
    return _ScreenCopy(cpack, meta, Np, Dp, scale, key, bool(ok), fmt)


def _search_screened(C, q, c, copy, k, offset, s, i, threads):
    """Screened top-k of one shard into (s, i); queries the screen gives up on run the exact
    kernel. Returns (bad_query, bad_row) as search_topk (>= 0: NaN/Inf scores were seen)."""
    M, D = q.shape
    n = c.shape[0]
    # At least 4,096 rows: rescoring them costs less than the exact kernel's pass over the corpus
    # that a fallback query needs (64 queries on tight clusters of ~3,100 rows: 57 ms screened,
    # 107 ms with 29 of them sent to the exact kernel). int8's wider bound keeps more rows (~8 k
    # per query at k = 1,000 on Gaussian rows, bf16 ~1.7 k): at least 12 k there.
    limit = max((12 if copy.format == "int8" else 2) * k, int(n * _SCREEN["cand_frac"]))
    limit = min(max(limit, _SCREEN["min_cand_limit"]), n)
    fb = torch.zeros(M, dtype=torch.uint8)
    scale = copy.scale
    bad_q, bad_row, cands, n_fb = C.search_topk_screened(
        q.data_ptr(), M, D, copy.cpack.data_ptr(), copy.meta.data_ptr(), copy.Np, copy.Dp,
        c.data_ptr(), n, c.stride(0), _CPP_TYPE[c.dtype], 0 if scale is None else scale.data_ptr(),
        k, offset, s.data_ptr(), i.data_ptr(), fb.data_ptr(), threads,
        _screen_engine(), float(_SCREEN["bound_scale"]), limit,
    )  # fmt: skip
    screen_stats["candidates"] += cands
    screen_stats["queries"] += M - n_fb
    screen_stats["fallbacks"] += n_fb
    if bad_row >= 0 or not n_fb:
        return bad_q, bad_row
    rows = fb.nonzero()[:, 0]
    qf = q[rows].contiguous()
    sf = torch.empty(len(rows), k, dtype=torch.float32)
    i_f = torch.empty(len(rows), k, dtype=torch.int64)
    bad_q, bad_row = C.search_topk(
        qf.data_ptr(), len(rows), D, c.data_ptr(), n, c.stride(0), _CPP_TYPE[c.dtype],
        0 if scale is None else scale.data_ptr(), k, offset, sf.data_ptr(), i_f.data_ptr(),
        threads, "",
    )  # fmt: skip
    s[rows], i[rows] = sf, i_f
    return (int(rows[bad_q]) if bad_q >= 0 else -1), bad_row
