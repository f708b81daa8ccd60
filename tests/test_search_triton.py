"""Triton top-k search and candidate scoring against fp64 brute force (interpreter on CPU, or a GPU).

Sizes are small (the interpreter runs every program in Python); block sizes and splits are forced
where needed so that tile edges, the threshold skip, the split merge and the large-k path all run.
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton")

from densescale.ops import _search_triton as st

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and TRITON_INTERPRET is not set", allow_module_level=True)

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _data(m: int, n: int, d: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(m * 1000003 + n * 101 + d)
    q = torch.randn(m, d, generator=g).to(dtype)
    c = torch.randn(n, d, generator=g).to(dtype)
    return q.to(DEVICE), c.to(DEVICE)


def _stable_topk(
    q: torch.Tensor, c: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fp64 brute force: (top-k scores, top-k ids with ties by smaller id, full score matrix)."""
    full = q.double().cpu() @ c.double().cpu().T
    scores, ids = torch.sort(full, dim=1, descending=True, stable=True)
    return scores[:, :k], ids[:, :k], full


def _tolerance(q: torch.Tensor, c: torch.Tensor, full: torch.Tensor) -> float:
    """A few times plain fp32 matmul's own error on the same stored values, plus a relative floor."""
    torch_err = (q.float().cpu() @ c.float().cpu().T - full).abs().max().item()
    return 4 * torch_err + 1e-5 * (1.0 + full.abs().max().item())


def _check_topk(
    scores: torch.Tensor, ids: torch.Tensor, q: torch.Tensor, c: torch.Tensor, k: int
) -> None:
    """Tie-aware comparison with fp64 brute force (faiss contrib/evaluation style)."""
    m, n = q.shape[0], c.shape[0]
    assert scores.shape == (m, k) and ids.shape == (m, k)
    assert scores.dtype == torch.float32 and ids.dtype == torch.int64
    scores, ids = scores.cpu().double(), ids.cpu()
    ref_scores, ref_ids, full = _stable_topk(q, c, k)
    tol = _tolerance(q, c, full)
    assert bool(((ids >= 0) & (ids < n)).all()), "ids out of range"
    assert all(len(set(row.tolist())) == k for row in ids), "duplicate ids in a row"
    # Each returned score is the true score of the returned id, and the values are the top-k values.
    torch.testing.assert_close(scores, full.gather(1, ids), atol=tol, rtol=0)
    torch.testing.assert_close(scores, ref_scores, atol=tol, rtol=0)
    assert bool((scores[:, :-1] >= scores[:, 1:]).all()), "scores not sorted descending"
    # Where a reference score is separated from every other candidate's by more than the tolerance
    # (including the first one left out), the id must be the same.
    nxt = torch.sort(full, dim=1, descending=True).values[:, : k + 1]
    if nxt.shape[1] == k:
        nxt = torch.cat((nxt, torch.full((m, 1), float("-inf"), dtype=nxt.dtype)), dim=1)
    gap_below = nxt[:, :k] - nxt[:, 1 : k + 1]
    gap_above = torch.cat(
        (torch.full((m, 1), float("inf"), dtype=nxt.dtype), gap_below[:, :-1]), dim=1
    )
    distinct = (gap_below > 2 * tol) & (gap_above > 2 * tol)
    assert distinct.float().mean() > 0.5, "test data has too many near ties to check ids"
    assert torch.equal(ids[distinct], ref_ids[distinct])


# (M, N, D, k, launcher overrides): M = 1 / not a multiple of the block, corpus within one tile or
# spanning many tiles and splits, ragged D, k = 1, 7, 100 and the whole corpus.
CASES = [
    (1, 50, 16, 1, {}),
    (19, 100, 24, 7, {}),
    (5, 130, 32, 100, {}),
    (3, 40, 16, 40, {}),
    (17, 200, 16, 5, {"block_n": 16, "splits": 5}),
    (2, 520, 16, 3, {}),
    (9, 700, 16, 40, {"block_n": 64, "splits": 1}),  # k pads to 64: later tiles select few
]


# Every dtype on the smaller shapes; the tile / split / merge logic is dtype-blind, so the larger
# shapes run in fp32 only (keeps the interpreter time down).
TOPK_PARAMS = [
    pytest.param(*case, dtype, id=f"M{case[0]}-N{case[1]}-D{case[2]}-k{case[3]}-{str(dtype)[6:]}")
    for case in CASES
    for dtype in DTYPES
    if case[1] < 200 or dtype == torch.float32
]


@pytest.mark.parametrize(("m", "n", "d", "k", "overrides", "dtype"), TOPK_PARAMS)
def test_topk_matches_fp64(
    m: int, n: int, d: int, k: int, overrides: dict, dtype: torch.dtype
) -> None:
    q, c = _data(m, n, d, dtype)
    scores, ids = st.topk(q, c, k, **overrides)
    _check_topk(scores, ids, q, c, k)


def test_topk_non_contiguous_inputs() -> None:
    q, c = _data(17, 90, 24, torch.float32)
    q_t = q.T.contiguous().T  # same values, column-major strides
    c_pad = torch.zeros(90, 40, device=DEVICE)
    c_pad[:, 3:27] = c
    c_view = c_pad[:, 3:27]  # row stride 40
    scores, ids = st.topk(q_t, c_view, 9)
    _check_topk(scores, ids, q, c, 9)


def _tied_data(m: int, n: int, d: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Small integer vectors (exact in every dtype and in fp32 sums) with rows repeated across the corpus."""
    g = torch.Generator().manual_seed(7)
    base = torch.randint(-2, 3, (n // 4, d), generator=g).float()
    c = base[torch.randint(0, base.shape[0], (n,), generator=g)]
    c[::11] = 0.0  # zero rows: many exact-zero scores
    q = torch.randint(-2, 3, (m, d), generator=g).float()
    return q.to(dtype).to(DEVICE), c.to(dtype).to(DEVICE)


@pytest.mark.parametrize(
    ("k", "overrides"),
    [
        (1, {}),
        (5, {"block_n": 16, "splits": 9}),
        (37, {"splits": 3}),
        (150, {"block_n": 256, "few": 4}),
        (300, {}),
    ],
    ids=["k1", "k5-splits", "k37-splits", "k150", "k300-fallback"],
)
def test_exact_ties_go_to_smaller_id(k: int, overrides: dict) -> None:
    q, c = _tied_data(17, 400, 16, torch.bfloat16)
    scores, ids = st.topk(q, c, k, **overrides)
    ref_scores, ref_ids, _ = _stable_topk(q, c, k)
    # Integer data: every score is exact, so the whole result is determined, ties included.
    assert torch.equal(scores.cpu().double(), ref_scores)
    assert torch.equal(ids.cpu(), ref_ids)


@pytest.mark.skipif(DEVICE == "cuda", reason="counts calls inside the interpreter")
def test_select_few_path_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cases above exercise the select-few merge, not only the full one (interpreter hook)."""
    from densescale.kernels import search as ks

    calls = []
    pad_front = ks._pad_front
    monkeypatch.setattr(ks, "_pad_front", lambda *a, **kw: calls.append(1) or pad_front(*a, **kw))
    q, c = _tied_data(17, 400, 16, torch.bfloat16)
    scores, ids = st.topk(q, c, 60, block_n=64, splits=1, few=8)
    assert calls, "no tile took the select-few path"
    ref_scores, ref_ids, _ = _stable_topk(q, c, 60)
    assert torch.equal(ids.cpu(), ref_ids)
    assert torch.equal(scores.cpu().double(), ref_scores)


def test_zero_scores_tie_by_id() -> None:
    q = torch.zeros(2, 16, device=DEVICE)
    q[1, 0] = -1.0  # -1 * 0 products: -0.0 and +0.0 must count as one score
    c = torch.zeros(70, 16, device=DEVICE)
    c[5, 0] = -1.0  # query 1 scores row 5 at +1, query 0 scores every row at 0
    scores, ids = st.topk(q, c, 4, splits=2, block_n=16)
    assert ids.cpu().tolist() == [[0, 1, 2, 3], [5, 0, 1, 2]]
    assert scores.cpu().tolist() == [[0.0] * 4, [1.0, 0.0, 0.0, 0.0]]


@pytest.mark.parametrize("k_pad", [1, 8])
def test_tree_merge_of_many_splits(k_pad: int) -> None:
    """9 sorted lists merged 2 per program per round (9 -> 5 -> 3 -> 2 -> 1) equal one global sort."""
    g = torch.Generator().manual_seed(5)
    num_lists, m, k = 9, 3, min(k_pad, 5)
    raw = torch.randint(-3, 4, (num_lists, m, k_pad), generator=g).float()  # many equal scores
    ids = torch.randperm(num_lists * m * k_pad, generator=g).view(num_lists, m, k_pad)
    keys = torch.sort(st._pack_keys_torch(raw, ids), dim=2, descending=True).values
    expected = torch.sort(keys.permute(1, 0, 2).reshape(m, -1), dim=1, descending=True).values[
        :, :k
    ]
    exp_scores, exp_ids = st._unpack_keys_torch(expected)
    scores = torch.empty(m, k, device=DEVICE)
    out_ids = torch.empty(m, k, dtype=torch.int64, device=DEVICE)
    st._merge_splits(keys.to(DEVICE), scores, out_ids, k, k_pad, group=2)
    assert torch.equal(out_ids.cpu(), exp_ids)
    assert torch.equal(scores.cpu(), exp_scores)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
def test_large_k_fallback(dtype: torch.dtype) -> None:
    q, c = _data(6, 300, 16, dtype)
    k = 269  # above the register limit, below N
    assert st._next_pow2(k) > st.MAX_KERNEL_K
    scores, ids = st.topk(q, c, k)
    _check_topk(scores, ids, q, c, k)
    scores, ids = st.topk(q, c, 300)  # k = corpus size
    _check_topk(scores, ids, q, c, 300)


def test_chunked_merge_across_chunks() -> None:
    q, c = _data(11, 500, 16, torch.float32)
    scores, ids = st.topk_chunked(q, c, 60, query_chunk=4, corpus_chunk=64)
    _check_topk(scores, ids, q, c, 60)
    qt, ct = _tied_data(5, 200, 16, torch.float16)
    scores, ids = st.topk_chunked(qt, ct, 33, query_chunk=2, corpus_chunk=40)
    ref_scores, ref_ids, _ = _stable_topk(qt, ct, 33)
    assert torch.equal(ids.cpu(), ref_ids)
    assert torch.equal(scores.cpu().double(), ref_scores)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
def test_score_candidates(dtype: torch.dtype) -> None:
    m, n, d, cands = 5, 80, 40, 37
    q, c = _data(m, n, d, dtype)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, n, (m, cands), generator=g)
    ids[torch.rand(m, cands, generator=g) < 0.3] = -1
    ids[2] = -1  # a row of padding only
    ids[3, :5] = 11  # repeated candidate
    ids = ids.to(DEVICE)
    out = st.score_candidates(q, c, ids, block_c=16, block_d=16)
    assert out.shape == (m, cands) and out.dtype == torch.float32
    ref = torch.einsum("md,mcd->mc", q.double().cpu(), c.double().cpu()[ids.cpu().clamp_min(0)])
    pad = ids.cpu() < 0
    assert bool(torch.isneginf(out.cpu()[pad]).all())
    assert bool(torch.isfinite(out.cpu()[~pad]).all())
    torch_err = (
        (torch.einsum("md,mcd->mc", q.float().cpu(), c.float().cpu()[ids.cpu().clamp_min(0)]) - ref)
        .abs()
        .max()
    )
    torch.testing.assert_close(
        out.cpu().double()[~pad], ref[~pad], atol=4 * torch_err.item() + 1e-5, rtol=0
    )


def test_score_candidates_default_blocks_and_empty_c() -> None:
    q, c = _data(3, 20, 16, torch.float32)
    ids = torch.tensor([[0, 19, -1], [5, 5, 5], [-1, -1, 7]], device=DEVICE)
    out = st.score_candidates(q, c, ids).cpu()
    ref = (
        (q.cpu() @ c.cpu().T)
        .gather(1, ids.cpu().clamp_min(0))
        .masked_fill(ids.cpu() < 0, float("-inf"))
    )
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    assert st.score_candidates(q, c, torch.empty(3, 0, dtype=torch.int64, device=DEVICE)).shape == (
        3,
        0,
    )


def test_bad_input() -> None:
    q, c = _data(4, 30, 16, torch.float32)
    with pytest.raises(ValueError, match="k must be in"):
        st.topk(q, c, 0)
    with pytest.raises(ValueError, match="k must be in"):
        st.topk(q, c, 31)
    with pytest.raises(TypeError, match="k must be an int"):
        st.topk(q, c, 2.0)
    with pytest.raises(TypeError, match="k must be an int"):
        st.topk(q, c, True)
    with pytest.raises(TypeError, match="corpus has dtype"):
        st.topk(q, c.half(), 3)
    with pytest.raises(ValueError, match="D = 16"):
        st.topk(q, c[:, :8], 3)
    with pytest.raises(TypeError, match="queries must be float32"):
        st.topk(q.double(), c, 3)
    with pytest.raises(ValueError, match="corpus must not be empty"):
        st.topk(q, c[:0], 1)
    with pytest.raises(ValueError, match="block_n must be a power of two >= 32"):
        st.topk(q, c, 20, block_n=16)  # k pads to 32 > block_n
    with pytest.raises(ValueError, match="block_m"):
        st.topk(q, c, 2, block_m=8)  # tl.dot needs >= 16
    with pytest.raises(TypeError, match="candidate_ids must be int64"):
        st.score_candidates(q, c, torch.zeros(4, 2, dtype=torch.int32, device=DEVICE))
    with pytest.raises(ValueError, match=r"candidate_ids must have shape \(4, C\)"):
        st.score_candidates(q, c, torch.zeros(3, 2, dtype=torch.int64, device=DEVICE))


_COMPILE_SCRIPT = r"""
import sys
from triton import compile as triton_compile
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from densescale.kernels import search as ks

target = GPUTarget("cuda", 90, 32)


def build(fn, sig, consts, num_warps):
    sig = {**sig, **{name: "constexpr" for name in consts}}
    kernel = triton_compile(ASTSource(fn, sig, consts), target=target, options={"num_warps": num_warps})
    assert kernel.asm["cubin"], fn.__name__
    print("compiled", fn.__name__)


tiles_sig = dict(
    q_ptr="*bf16", c_ptr="*bf16", keys_ptr="*i64", scores_ptr="*fp32", ids_ptr="*i64",
    bad_ptr="*i32", M="i32", N="i32", D="i32", k="i32", tiles_per_split="i32",
    stride_qm="i64", stride_qd="i64", stride_cn="i64", stride_cd="i64",
)
# Small blocks keep the compile short; every branch (skip, select-few, full merge) is present.
tiles = dict(
    BLOCK_M=16, BLOCK_N=32, BLOCK_D=16, K_PAD=32, FEW=8, WRITE_KEYS=True, UPCAST=False, PRECISION="ieee"
)
build(ks._topk_tiles_kernel, tiles_sig, tiles, 4)
# The JIT turns integer arguments equal to 1 into constants: one query, k = 1, one tile per split.
ones = dict(M=1, k=1, tiles_per_split=1)
build(ks._topk_tiles_kernel, tiles_sig, {**tiles, **ones, "K_PAD": 1, "FEW": 1}, 4)
merge_sig = dict(
    keys_ptr="*i64", out_keys_ptr="*i64", scores_ptr="*fp32", ids_ptr="*i64",
    M="i32", k="i32", num_lists="i32", group="i32",
)
build(ks._topk_merge_kernel, merge_sig, dict(BLOCK_M=16, K_PAD=8, WRITE_KEYS=False), 4)
build(ks._topk_merge_kernel, merge_sig, dict(BLOCK_M=16, K_PAD=8, WRITE_KEYS=True), 4)
build(ks._topk_merge_kernel, merge_sig, dict(BLOCK_M=16, K_PAD=1, WRITE_KEYS=False, M=1, k=1, group=1), 4)
cand_sig = dict(
    q_ptr="*fp32", c_ptr="*fp32", cand_ptr="*i64", out_ptr="*fp32", C="i32", D="i32",
    stride_qm="i64", stride_qd="i64", stride_cn="i64", stride_cd="i64", stride_im="i64", stride_ic="i64",
)
build(ks._score_candidates_kernel, cand_sig, dict(BLOCK_C=32, BLOCK_D=128), 4)
build(ks._score_candidates_kernel, cand_sig, dict(BLOCK_C=32, BLOCK_D=128, C=1), 4)
"""


def test_kernels_compile_for_h100(tmp_path) -> None:
    """The bodies lower to an sm_90 cubin (dot tiles, reshapes, branches), without a GPU.

    Runs in a subprocess: under TRITON_INTERPRET=1 the kernels are interpreter objects, not JIT ones.
    """
    if DEVICE == "cuda":
        pytest.skip("on a GPU every other test compiles the kernels for real")
    import subprocess
    import sys

    try:
        from triton.backends.nvidia.compiler import CUDABackend  # noqa: F401
    except ImportError:
        pytest.skip("triton is installed without its NVIDIA backend")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")  # a private cache: no shared state
    pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(st.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (pkg_root, env.get("PYTHONPATH"))))
    proc = subprocess.run(
        [sys.executable, "-c", _COMPILE_SCRIPT],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("compiled") == 7
