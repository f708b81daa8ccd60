"""Triton backend of the contrastive loss against the fp64 plain-torch reference.

Without a GPU these run in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1), so the
shapes stay small; forced 16-wide tiles make the online max / sum-exp merge, the partial column
statistics and the chunked gradient accumulation span many tiles.
"""

from __future__ import annotations

import pytest
import torch
from _cli import run_python

pytest.importorskip("triton")

from densescale.ops import _loss_triton as backend
from densescale.ops._loss_spec import LossInputs, LossOptions, reference_loss_per_query

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TINY = {"block_m": 16, "block_n": 16, "block_k": 16}
# Max error relative to the largest reference value. Losses accumulate in fp32 whatever the
# input dtype; gradients go through dS rounded to the input dtype (as on the GPU), so half
# types get that dtype's rounding on top.
LOSS_RTOL = {torch.float32: 1e-5, torch.float16: 1e-4, torch.bfloat16: 1e-4}
GRAD_RTOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}


def _inputs(
    B: int,
    G: int,
    K: int,
    D: int,
    *,
    b_total: int | None = None,
    dtype: torch.dtype = torch.float32,
    normalize: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    b_total = B if b_total is None else b_total
    q = torch.randn(B, D)
    p = torch.randn(b_total * G, D)
    neg = torch.randn(K, D) if K else None
    if normalize:
        q = torch.nn.functional.normalize(q, dim=1)
        p = torch.nn.functional.normalize(p, dim=1)
        neg = torch.nn.functional.normalize(neg, dim=1) if neg is not None else None
    else:
        # Spread the scores over a few units so the softmax is neither flat nor one-hot.
        q = q / D**0.25
        p = p / D**0.25
        neg = neg / D**0.25 if neg is not None else None
    to = {"dtype": dtype, "device": DEVICE}
    return q.to(**to), p.to(**to), neg.to(**to) if neg is not None else None


def _rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    got = got.detach().double().cpu()
    ref = ref.detach().double().cpu()
    return float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def _check(inputs: LossInputs, weights: torch.Tensor | None = None, **tiles: int) -> torch.Tensor:
    """Forward and every gradient of sum_i w_i loss_i vs fp64 autograd; returns the loss."""
    q, p, neg, doc_ids, scale, opts = inputs
    B = q.shape[0]
    if weights is None:
        weights = torch.rand(B, device=q.device) + 0.1
    loss, saved = backend.loss_forward(inputs, True, **tiles)
    dq, dp, dneg, dscale = backend.loss_backward(inputs, saved, weights, False, **tiles)

    q64 = q.double().requires_grad_()
    p64 = p.double().requires_grad_()
    n64 = neg.double().requires_grad_() if neg is not None else None
    s64 = torch.tensor(scale, dtype=torch.float64, device=q.device, requires_grad=True)
    ref = reference_loss_per_query(q64, p64, n64, doc_ids, s64, opts)
    (ref * weights.double()).sum().backward()

    assert loss.shape == (B,) and loss.dtype == torch.float32
    assert torch.isfinite(loss).all()
    lt, gt = LOSS_RTOL[q.dtype], GRAD_RTOL[q.dtype]
    assert _rel_err(loss, ref) < lt, ("loss", _rel_err(loss, ref))
    assert dq.shape == q.shape and dp.shape == p.shape
    assert _rel_err(dq, q64.grad) < gt, ("dq", _rel_err(dq, q64.grad))
    assert _rel_err(dp, p64.grad) < gt, ("dp", _rel_err(dp, p64.grad))
    if neg is None:
        assert dneg is None
    else:
        assert dneg.shape == neg.shape
        assert _rel_err(dneg, n64.grad) < gt, ("dneg", _rel_err(dneg, n64.grad))
    assert dscale.dim() == 0
    assert abs(float(dscale) - float(s64.grad)) < 3 * gt * max(1.0, abs(float(s64.grad))), (
        "dscale",
        float(dscale),
        float(s64.grad),
    )
    return loss


@pytest.mark.parametrize(("B", "D"), [(5, 8), (64, 48)])
def test_in_batch_pairs_default_tiles(B: int, D: int) -> None:
    # (5, 8) is smaller than one tile in every dimension, D included (masked D chunk);
    # B = 64 spans two row blocks and two column tiles.
    q, p, _ = _inputs(B, 1, 0, D)
    _check(LossInputs(q, p, None, None, 1.5, LossOptions()))


def test_empty_pool_behaves_like_none() -> None:
    q, p, _ = _inputs(6, 2, 0, 16)
    empty = torch.empty(0, 16, device=DEVICE)
    opts = LossOptions(group_size=2)
    loss, saved = backend.loss_forward(LossInputs(q, p, empty, None, 2.0, opts), True)
    ref, _ = backend.loss_forward(LossInputs(q, p, None, None, 2.0, opts), True)
    torch.testing.assert_close(loss, ref)
    _, _, dneg, _ = backend.loss_backward(
        LossInputs(q, p, empty, None, 2.0, opts), saved, torch.ones(6), True
    )
    assert dneg is not None and dneg.shape == (0, 16)


def test_odd_shapes_tiny_tiles() -> None:
    q, p, neg = _inputs(37, 3, 29, 123)
    _check(LossInputs(q, p, neg, None, 2.0, LossOptions(group_size=3)), **TINY)


@pytest.mark.parametrize("in_batch", [True, False])
def test_groups_pool_and_doc_ids(in_batch: bool) -> None:
    B, G, K = 24, 2, 20
    q, p, neg = _inputs(B, G, K, 32)
    doc_ids = torch.randint(0, 6, (B * G + K,), device=DEVICE)  # many duplicates
    _check(
        LossInputs(q, p, neg, doc_ids, 3.0, LossOptions(group_size=G, in_batch=in_batch)), **TINY
    )


def test_tiny_tiles_match_default_tiles() -> None:
    # The same problem through 16-wide and 32-wide tiles: only the merge order differs.
    q, p, neg = _inputs(40, 2, 24, 40)
    opts = LossOptions(group_size=2)
    a, _ = backend.loss_forward(LossInputs(q, p, neg, None, 2.0, opts), False, **TINY)
    b, _ = backend.loss_forward(LossInputs(q, p, neg, None, 2.0, opts), False)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_masks_leaving_only_the_positive() -> None:
    # Every candidate shares the positive's doc id: only the target column survives, so the
    # loss and every gradient are zero up to the exp2/log2 round trip (no NaN from all-masked
    # tiles, whose running max stays at the finite sentinel).
    B, G, K = 20, 2, 18
    q, p, neg = _inputs(B, G, K, 24)
    doc_ids = torch.zeros(B * G + K, dtype=torch.int64, device=DEVICE)
    layouts = [
        (neg, doc_ids, LossOptions(group_size=G)),
        (neg, doc_ids, LossOptions(group_size=G, in_batch=False)),
        (None, doc_ids[: B * G], LossOptions(group_size=G, symmetric=True)),
    ]
    for negatives, ids, opts in layouts:
        loss, saved = backend.loss_forward(
            LossInputs(q, p, negatives, ids, 2.0, opts), True, **TINY
        )
        assert float(loss.abs().max()) < 1e-6, opts
        grads = backend.loss_backward(
            LossInputs(q, p, negatives, ids, 2.0, opts),
            saved,
            torch.rand(B, device=DEVICE),
            False,
            **TINY,
        )
        for g in grads:
            if g is not None:
                assert torch.isfinite(g).all() and float(g.abs().max()) < 1e-5, opts
    # One duplicate besides the positive is enough to change the loss (the mask is not a no-op).
    ids = torch.arange(B * G + K, device=DEVICE)
    ids[1] = ids[0]
    _check(LossInputs(q, p, neg, ids, 2.0, LossOptions(group_size=G)), **TINY)


@pytest.mark.parametrize("G", [1, 3])
def test_symmetric(G: int) -> None:
    B = 37
    q, p, _ = _inputs(B, G, 0, 40)
    doc_ids = torch.randint(0, 12, (B * G,), device=DEVICE)
    loss = _check(
        LossInputs(q, p, None, doc_ids, 2.5, LossOptions(group_size=G, symmetric=True)), **TINY
    )
    # Both directions really are in there: the one-direction loss differs.
    row_only, _ = backend.loss_forward(
        LossInputs(q, p, None, doc_ids, 2.5, LossOptions(group_size=G)), False
    )
    assert (loss - row_only).abs().max() > 1e-3


@pytest.mark.parametrize("G", [1, 3])
@pytest.mark.parametrize("with_ids", [False, True])
def test_symmetric_with_negatives_pool(G: int, with_ids: bool) -> None:
    # Regression: the pool takes part in the (averaged) row direction only, so its dS must carry
    # the same 1/2 as p's row terms; without it dq, dneg and dscale came out wrong (dneg 2x).
    B, K = 21, 19
    q, p, neg = _inputs(B, G, K, 40)
    doc_ids = torch.randint(0, 8, (B * G + K,), device=DEVICE) if with_ids else None
    opts = LossOptions(group_size=G, symmetric=True)
    _check(LossInputs(q, p, neg, doc_ids, 2.5, opts), **TINY)


@pytest.mark.parametrize("in_batch", [True, False])
def test_row_offset_gathered_candidates(in_batch: bool) -> None:
    # Local queries are rows 7..7+B of a 3-rank gather; candidates of every rank are present.
    B, G, K, r = 12, 2, 10, 7
    q, p, neg = _inputs(B, G, K, 32, b_total=30)
    doc_ids = torch.randint(0, 8, (30 * G + K,), device=DEVICE)
    opts = LossOptions(group_size=G, in_batch=in_batch, row_offset=r)
    _check(LossInputs(q, p, neg, doc_ids, 2.0, opts), **TINY)


def test_scale_100_no_overflow() -> None:
    # Unit vectors with scale 100: raw exponentials would overflow fp32 (e^100 > 3.4e38).
    q, p, neg = _inputs(32, 2, 16, 32, normalize=True)
    _check(LossInputs(q, p, neg, None, 100.0, LossOptions(group_size=2)), **TINY)
    _check(LossInputs(q, p, None, None, 100.0, LossOptions(group_size=2, symmetric=True)), **TINY)


def test_uniform_and_zero_weights() -> None:
    q, p, neg = _inputs(20, 1, 8, 32)
    opts = LossOptions()
    _check(
        LossInputs(q, p, neg, None, 2.0, opts),
        weights=torch.full((20,), 0.05, device=DEVICE),
        **TINY,
    )
    _, saved = backend.loss_forward(LossInputs(q, p, neg, None, 2.0, opts), True)
    grads = backend.loss_backward(
        LossInputs(q, p, neg, None, 2.0, opts), saved, torch.zeros(20), True
    )
    for g in grads:
        assert torch.isfinite(g).all() and float(g.abs().max()) == 0.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs(dtype: torch.dtype) -> None:
    B, G, K = 32, 2, 24
    q, p, neg = _inputs(B, G, K, 48, dtype=dtype)
    doc_ids = torch.randint(0, 10, (B * G + K,), device=DEVICE)
    _check(LossInputs(q, p, neg, doc_ids, 4.0, LossOptions(group_size=G)), **TINY)
    _check(LossInputs(q, p, None, None, 4.0, LossOptions(group_size=G, symmetric=True)), **TINY)


@pytest.mark.parametrize("in_batch", [True, False])
def test_gpu_default_tiles_compile_constraints(
    monkeypatch: pytest.MonkeyPatch, in_batch: bool
) -> None:
    # What a GPU launch would use: powers of two, every tl.dot dimension >= 16.
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for cfg in backend.default_configs(dtype, in_batch):
            for v in (cfg.block_m, cfg.block_n, cfg.block_k):
                assert v >= 16 and v & (v - 1) == 0
            if dtype != torch.float32:  # tensor-core sized, not the test tiles
                assert cfg.block_m >= 64 and cfg.block_n >= 64 and cfg.block_k >= 32


# Runs in a fresh interpreter: Triton decides between interpreted and compiled kernels at import.
_COMPILE_SCRIPT = """
import json
import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from densescale.kernels import contrastive_loss as kern
from densescale.ops._loss_triton import default_configs

_, bdq, bdc = default_configs(torch.bfloat16, in_batch=False)
fwd_ib = default_configs(torch.bfloat16, in_batch=True)[0]
variant = {"IN_BATCH": False, "HAS_IDS": True, "DOT_F32": False, "PRECISION": "tf32"}
# Three launches cover every code path between them: symmetric column statistics with doc ids
# (forward), in_batch=False loop bounds with a pool and both symmetric dS branches (p and pool
# regions, dq), the transposed dot (dc).
jobs = [
    (kern._infonce_fwd_kernel, fwd_ib, {"HAS_NEG": False, "SYMMETRIC": True, "IN_BATCH": True}),
    (kern._infonce_bwd_dq_kernel, bdq, {"HAS_NEG": True, "SYMMETRIC": True}),
    (kern._infonce_bwd_dc_kernel, bdc, {"IS_P": True, "SYMMETRIC": False}),
]
for fn, cfg, extra in jobs:
    constexprs = {**variant, **extra, "BLOCK_M": cfg.block_m, "BLOCK_N": cfg.block_n,
                  "BLOCK_K": cfg.block_k}
    signature = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in ("q_ptr", "p_ptr", "neg_ptr", "c_ptr"):
            signature[name] = "*bf16"
        elif name == "ids_ptr":
            signature[name] = "*i64"
        elif name.endswith("_ptr"):
            signature[name] = "*fp32"
        else:
            signature[name] = "fp32" if name == "scale" else "i32"
    out = triton.compile(
        ASTSource(fn, signature, constexprs),
        target=GPUTarget("cuda", 90, 32),
        options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages},
    )
    print(json.dumps({"kernel": fn.__name__, "cubin": len(out.asm["cubin"]),
                      "wgmma": "warp_group_dot" in out.asm["ttgir"]}))
"""


def test_kernels_compile_for_h100() -> None:
    """Ahead-of-time compile to sm_90 cubin with the GPU tiles; no GPU needed.

    The interpreter accepts what the compiler rejects (non-constexpr globals, dots under 16,
    mixed dot dtypes); this catches it on a CPU-only machine.
    """
    import json
    import os
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(backend.__file__).resolve().parents[2]), env.get("PYTHONPATH", "")]
    )
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    run = run_python(_COMPILE_SCRIPT, env=env)
    if run.returncode != 0 and "ptxas" in run.stderr.lower() and "not found" in run.stderr.lower():
        pytest.skip("this triton build has no ptxas")
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 3
    for row in rows:
        assert row["cubin"] > 0 and row["wgmma"], row  # Hopper tensor-core dots


def _bad(**changes: object) -> LossInputs:
    q, p, neg = _inputs(4, 2, 3, 8)
    args = {
        "q": q,
        "p": p,
        "negatives": neg,
        "doc_ids": None,
        "scale": 1.0,
        "opts": LossOptions(group_size=2),
    }
    args.update(changes)
    return LossInputs(**args)


@pytest.mark.parametrize(
    ("changes", "exc", "word"),
    [
        ({"p": torch.randn(8, 7)}, ValueError, "p must have D"),
        ({"negatives": torch.randn(3, 9)}, ValueError, "negatives"),
        ({"opts": LossOptions(group_size=3)}, ValueError, "p must hold"),
        (
            {"opts": LossOptions(group_size=2, in_batch=False, symmetric=True)},
            ValueError,
            "symmetric",
        ),
        ({"q": torch.randn(4, 8, dtype=torch.float64)}, TypeError, "q must be float32"),
        ({"q": torch.ones(4, 8, dtype=torch.int32)}, TypeError, "q must be float32"),
        ({"doc_ids": torch.zeros(5, dtype=torch.int64)}, ValueError, "doc_ids"),
        ({"doc_ids": torch.zeros(11, dtype=torch.int32)}, TypeError, "doc_ids"),
        ({"q": torch.randn(0, 8)}, ValueError, "q must be non-empty"),
        ({"scale": float("nan")}, TypeError, "scale"),
    ],
)
def test_bad_inputs_name_the_argument(changes: dict, exc: type, word: str) -> None:
    if DEVICE == "cuda":
        changes = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in changes.items()}
    with pytest.raises(exc, match=word):
        backend.loss_forward(_bad(**changes), False)


def test_bad_tiles_and_device(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="block_n must be a power of two"):
        backend.loss_forward(_bad(), False, block_n=24)
    with pytest.raises(ValueError, match="block_k must be a power of two"):
        backend.loss_forward(_bad(), False, block_k=8)
    if DEVICE == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(ValueError, match="needs CUDA tensors"):
            backend.loss_forward(_bad(), False)
