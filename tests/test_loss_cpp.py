"""The fused C++ contrastive-loss kernel (backend "cpp") against the fp64 plain-torch reference.

Each case checks the per-query loss and every gradient (q, p, negatives, scale) of a weighted sum
``sum_i w_i loss_i`` with non-uniform weights; the kernel's error must stay within a small multiple
of what plain fp32 torch gets on the same inputs (plus a floor), on every SIMD path.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from _cli import run_python

from densescale._native import has_native, native
from densescale.ops._loss_spec import LossInputs, LossOptions, reference_loss_per_query

pytestmark = pytest.mark.skipif(not has_native(), reason="densescale._C is not built")

if has_native():
    from densescale.ops import _loss_cpp

ISAS = ["generic", "avx2", "avx512"]


def _supported(isa: str) -> bool:
    return native().contrastive_loss_isa(_loss_cpp.ISA_CODES[isa]) == isa


def _make(B, G, K, D, dtype=torch.float32, b_total=None, spread=1.0):
    b_total = b_total or B
    q = (torch.randn(B, D) * spread).to(dtype)
    p = (torch.randn(b_total * G, D) * spread).to(dtype)
    neg = (torch.randn(K, D) * spread).to(dtype) if K else None
    return q, p, neg


def _grads(q, p, neg, ids, scale, opts, w, acc):
    """Loss and gradients of sum_i w_i loss_i through the plain reference in dtype ``acc``."""
    qd = q.detach().to(acc).clone().requires_grad_()
    pd = p.detach().to(acc).clone().requires_grad_()
    nd = None if neg is None else neg.detach().to(acc).clone().requires_grad_()
    sd = torch.tensor(float(scale), dtype=acc, requires_grad=True)
    loss = reference_loss_per_query(qd, pd, nd, ids, sd, opts)
    (loss * w.to(acc)).sum().backward()
    return [loss.detach(), qd.grad, pd.grad, None if nd is None else nd.grad, sd.grad]


def _assert_close(name, ours, ref64, ref32, floor):
    if ref64 is None:
        assert ours is None, name
        return
    ours, ref64, ref32 = (torch.as_tensor(t).double() for t in (ours, ref64, ref32))
    assert torch.isfinite(ours).all(), f"{name}: non-finite values"
    err = (ours - ref64).abs().max().item()
    torch_err = (ref32 - ref64).abs().max().item()
    tol = 8 * torch_err + floor * max(1.0, ref64.abs().max().item())
    assert err <= tol, (
        f"{name}: error {err:.3g} > tolerance {tol:.3g} (fp32 torch error {torch_err:.3g})"
    )


def _check(
    q, p, neg, ids, scale, opts, *, isa=None, block_rows=0, threads=None, floor=2e-5, weights=None
):
    B = q.shape[0]
    w = torch.rand(B) + 0.5 if weights is None else weights
    out = _loss_cpp.run(
        LossInputs(q, p, neg, ids, scale, opts),
        need_grad=True,
        weights=w,
        isa=isa,
        block_rows=block_rows,
        threads=threads,
    )
    ref64 = _grads(q, p, neg, ids, scale, opts, w, torch.float64)
    ref32 = _grads(q, p, neg, ids, scale, opts, w, torch.float32)
    n_p = p.shape[0]
    ours = [
        out["loss"],
        out["dq"],
        out["dc"][:n_p],
        None if neg is None else out["dc"][n_p:],
        out["dscale"],
    ]
    for name, o, r64, r32 in zip(("loss", "dq", "dp", "dneg", "dscale"), ours, ref64, ref32):
        _assert_close(name, o, r64, r32, floor)
    return out


CASES = {
    # name: (B, G, K, D, options, block_rows, doc-id kind)
    "odd_shapes_grouped_pool": (37, 3, 29, 123, {}, 16, None),
    "pairs_single_block": (37, 1, 0, 123, {}, 0, None),
    "no_in_batch": (37, 3, 29, 123, {"in_batch": False}, 8, None),
    "no_in_batch_no_pool": (21, 4, 0, 40, {"in_batch": False}, 16, None),
    "symmetric_pairs_pool": (37, 1, 5, 64, {"symmetric": True}, 16, None),
    "symmetric_grouped": (29, 2, 0, 33, {"symmetric": True}, 16, None),
    "doc_ids": (37, 3, 29, 123, {}, 16, "random"),
    "doc_ids_no_in_batch": (37, 3, 29, 123, {"in_batch": False}, 16, "random"),
    "doc_ids_symmetric": (37, 1, 5, 64, {"symmetric": True}, 16, "random"),
    "only_positive_left": (19, 2, 7, 31, {}, 16, "all_same"),
    "only_positive_left_no_in_batch": (19, 2, 7, 31, {"in_batch": False}, 16, "all_same"),
    "tiny": (1, 1, 0, 3, {}, 0, None),
    "tiny_pool": (2, 1, 1, 5, {}, 1, None),
}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_fp64_reference(case, isa):
    if not _supported(isa):
        pytest.skip(f"{isa} not available on this CPU")
    B, G, K, D, kw, block_rows, ids_kind = CASES[case]
    q, p, neg = _make(B, G, K, D)
    N = B * G + K
    ids = None
    if ids_kind == "random":
        ids = torch.randint(0, 12, (N,))
    elif ids_kind == "all_same":
        ids = torch.zeros(N, dtype=torch.int64)
    opts = LossOptions(group_size=G, **kw)
    out = _check(q, p, neg, ids, 2.5, opts, isa=isa, block_rows=block_rows)
    if ids_kind == "all_same":  # every candidate but the positive is masked: loss exactly 0
        assert out["loss"].abs().max().item() < 1e-6
        assert out["dq"].abs().max().item() < 1e-6


@pytest.mark.parametrize("isa", ISAS)
def test_row_offset(isa):
    if not _supported(isa):
        pytest.skip(f"{isa} not available on this CPU")
    q, p, neg = _make(20, 2, 3, 50, b_total=45)
    for in_batch in (True, False):
        _check(
            q,
            p,
            neg,
            None,
            1.5,
            LossOptions(group_size=2, in_batch=in_batch, row_offset=17),
            isa=isa,
            block_rows=16,
        )


@pytest.mark.parametrize("isa", ISAS)
def test_large_scale_does_not_overflow(isa):
    if not _supported(isa):
        pytest.skip(f"{isa} not available on this CPU")
    q, p, neg = _make(37, 1, 5, 64)
    for opts in (LossOptions(), LossOptions(symmetric=True)):
        _check(q, p, neg, None, 100.0, opts, isa=isa, block_rows=16, floor=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs(dtype):
    q, p, neg = _make(37, 3, 29, 123, dtype=dtype, spread=0.5)
    ids = torch.randint(0, 12, (37 * 3 + 29,))
    _check(q, p, neg, ids, 3.0, LossOptions(group_size=3), block_rows=16)
    _check(q, p[: 37 * 1], None, None, 3.0, LossOptions(symmetric=True), block_rows=16)


def test_multi_block_many_threads_agree():
    """Row blocks and column splits change only the summation order."""
    q, p, neg = _make(70, 2, 13, 77)
    opts = LossOptions(group_size=2)
    base = _loss_cpp.run(
        LossInputs(q, p, neg, None, 2.0, opts), need_grad=True, threads=1, block_rows=70
    )
    for threads, block_rows in ((2, 16), (3, 32), (2, 0)):
        out = _loss_cpp.run(
            LossInputs(q, p, neg, None, 2.0, opts),
            need_grad=True,
            threads=threads,
            block_rows=block_rows,
        )
        for key in ("loss", "dq", "dc"):
            torch.testing.assert_close(out[key], base[key], rtol=1e-4, atol=1e-4)
        assert out["dscale"] == pytest.approx(base["dscale"], rel=1e-4, abs=1e-4)


BLAS_CASES = {
    # name: (B, G, K, D, row_offset): in-batch fp32 layouts the BLAS-blocked schedule takes
    "pairs": (37, 1, 0, 123, 0),
    "grouped_pool": (37, 3, 29, 77, 0),
    "pool_row_offset": (21, 2, 5, 40, 3),
    "tiny": (1, 1, 0, 3, 0),
}


@pytest.mark.parametrize("case", sorted(BLAS_CASES))
def test_blas_blocked_schedule_matches_fp64_reference(case, monkeypatch):
    """Forced at small sizes with several row blocks: loss and every gradient, weighted."""
    monkeypatch.setattr(_loss_cpp, "_BLAS_WORK", 0)
    monkeypatch.setattr(_loss_cpp, "_BLAS_MAX_ROWS", 16)
    B, G, K, D, offset = BLAS_CASES[case]
    q, p, neg = _make(B, G, K, D, b_total=B + offset)
    opts = LossOptions(group_size=G, row_offset=offset)
    assert _loss_cpp._blas_schedule_applies(q, None, opts, None, None, 0, None, 1)
    _check(q, p, neg, None, 2.5, opts)
    out = _loss_cpp.run(LossInputs(q, p, neg, None, 2.5, opts), need_loss=True, need_grad=False)
    ref = _grads(q, p, neg, None, 2.5, opts, torch.ones(B), torch.float64)[0]
    torch.testing.assert_close(out["loss"].double(), ref, rtol=1e-5, atol=1e-5)
    assert out["dq"] is None and out["dscale"] is None


def test_blas_schedule_leaves_the_other_layouts_to_the_kernel():
    q, _, _ = _make(8, 1, 0, 4)
    big = 1 << 30
    takes = lambda **kw: _loss_cpp._blas_schedule_applies(
        kw.get("q", q), kw.get("ids"), kw.get("opts", LossOptions()), None,
        kw.get("threads"), 0, None, kw.get("work", big),
    )  # fmt: skip
    assert takes()
    assert not takes(work=1000)
    assert not takes(q=q.half())
    assert not takes(opts=LossOptions(symmetric=True))
    assert not takes(opts=LossOptions(in_batch=False))
    assert not takes(ids=torch.zeros(8, dtype=torch.int64))
    assert not takes(threads=1)


@pytest.mark.parametrize("symmetric,blas", [(False, False), (True, False), (False, True)])
def test_protocol_forward_backward(symmetric, blas, monkeypatch):
    """loss_forward/loss_backward: unit-weight gradients scaled when uniform, recomputed otherwise
    (on the C++ kernel, and on the BLAS-blocked schedule forced at this size)."""
    if blas:
        monkeypatch.setattr(_loss_cpp, "_BLAS_WORK", 0)
        monkeypatch.setattr(_loss_cpp, "_BLAS_MAX_ROWS", 16)
    B = 23
    q, p, neg = _make(B, 1, 6, 40)
    opts = LossOptions(symmetric=symmetric)
    ref64 = lambda w: _grads(q, p, neg, None, 1.7, opts, w, torch.float64)

    loss, saved = _loss_cpp.loss_forward(LossInputs(q, p, neg, None, 1.7, opts), True)
    assert loss.dtype == torch.float32 and loss.shape == (B,)
    w = torch.full((B,), 1.0 / B)
    for _ in range(2):  # a second call (retain_graph) must not scale twice
        dq, dp, dneg, dscale = _loss_cpp.loss_backward(
            LossInputs(q, p, neg, None, 1.7, opts), saved, w, True
        )
    r = ref64(w)
    torch.testing.assert_close(loss.double(), r[0], rtol=1e-5, atol=1e-5)
    for got, want in zip((dq, dp, dneg, dscale), r[1:]):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)
    assert dscale.dim() == 0

    w2 = torch.rand(B)
    loss2, saved2 = _loss_cpp.loss_forward(LossInputs(q, p, neg, None, 1.7, opts), False)
    torch.testing.assert_close(loss2, loss)
    dq, dp, dneg, dscale = _loss_cpp.loss_backward(
        LossInputs(q, p, neg, None, 1.7, opts), saved2, w2, False
    )
    r = ref64(w2)
    for got, want in zip((dq, dp, dneg, dscale), r[1:]):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


def test_bad_inputs_raise_before_work():
    q, p, neg = _make(4, 1, 2, 8)
    opts = LossOptions()
    with pytest.raises(TypeError, match="q"):
        _loss_cpp.run(LossInputs(q.double(), p.double(), None, None, 1.0, opts))
    with pytest.raises(TypeError, match="negatives"):
        _loss_cpp.run(LossInputs(q, p, neg.half(), None, 1.0, opts))
    with pytest.raises(ValueError, match="doc_ids"):
        _loss_cpp.run(LossInputs(q, p, neg, torch.zeros(3, dtype=torch.int64), 1.0, opts))
    with pytest.raises(ValueError, match="p must have"):
        _loss_cpp.run(LossInputs(q, p[:3], None, None, 1.0, opts))
    with pytest.raises(ValueError, match="isa"):
        _loss_cpp.run(LossInputs(q, p, None, None, 1.0, opts), isa="sse9")
    with pytest.raises(ValueError, match="contiguous"):
        _loss_cpp.run(LossInputs(q.t().contiguous().t(), p, None, None, 1.0, opts))


def test_isa_environment_cap():
    """DENSESCALE_ISA caps the SIMD path chosen at run time (a fresh process reads it once)."""
    code = (
        "import torch; from densescale._native import native; "
        "from densescale.ops import _loss_cpp; "
        "from densescale.ops._loss_spec import LossInputs, LossOptions; "
        "torch.manual_seed(0); q = torch.randn(9, 20); p = torch.randn(9, 20); "
        "l = _loss_cpp.run(LossInputs(q, p, None, None, 1.0, LossOptions()))['loss']; "
        "print(native().isa(), native().contrastive_loss_isa(-1), float(l.sum()))"
    )
    root = Path(__file__).resolve().parents[1]
    env = dict(
        os.environ,
        DENSESCALE_ISA="generic",
        PYTHONPATH=os.pathsep.join([str(root / "python"), os.environ.get("PYTHONPATH", "")]),
    )
    res = run_python(code, env=env)
    assert res.returncode == 0, res.stderr
    isa, kernels, total = res.stdout.split()
    assert isa == "generic" and kernels == "generic"
    torch.manual_seed(0)
    q, p = torch.randn(9, 20), torch.randn(9, 20)
    want = reference_loss_per_query(q.double(), p.double(), None, None, 1.0, LossOptions()).sum()
    assert float(total) == pytest.approx(want.item(), rel=1e-5)


def test_public_contrastive_loss_on_the_blas_schedule(monkeypatch):
    """densescale.contrastive_loss (backend "cpp") on the BLAS-blocked schedule: loss, grads of q,
    p, negatives and a learnable scale equal the plain torch backend; NaN rows still named."""
    import densescale

    monkeypatch.setattr(_loss_cpp, "_BLAS_WORK", 0)
    monkeypatch.setattr(_loss_cpp, "_BLAS_MAX_ROWS", 16)
    calls = []
    blocked = _loss_cpp._run_blas_blocked
    monkeypatch.setattr(
        _loss_cpp, "_run_blas_blocked", lambda *a, **k: calls.append(1) or blocked(*a, **k)
    )
    q, p, neg = _make(37, 2, 11, 29)
    outs = {}
    for backend in ("cpp", "torch"):
        leaves = [t.clone().requires_grad_() for t in (q, p, neg)]
        scale = torch.tensor(3.0, requires_grad=True)
        loss = densescale.contrastive_loss(
            leaves[0], leaves[1], negatives=leaves[2], scale=scale, backend=backend
        )
        loss.backward()
        outs[backend] = [loss.detach()] + [t.grad for t in leaves] + [scale.grad]
    assert calls, "the BLAS schedule did not run"
    for got, want in zip(outs["cpp"], outs["torch"]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    bad = p.clone()
    bad[5, 3] = float("nan")
    with pytest.raises(ValueError, match="p row 5"):
        densescale.contrastive_loss(q, bad, negatives=neg, scale=3.0, backend="cpp")


def test_blas_block_rows_bound_the_score_block():
    """One block of scores (R x N fp32) is the schedule's only working memory: at most B / 8
    rows (eager torch holds >= 2 B x N matrices, so that is <= 1/16 of it) and at most 8 MiB,
    with a floor of 16 rows; never more rows than B."""
    for B, N in ((4096, 4096), (1024, 1024), (16384, 16384), (4096, 65536), (65536, 4096)):
        R = _loss_cpp._blas_block_rows(B, N)
        assert 1 <= R <= B
        assert R <= max(16, B // _loss_cpp._BLAS_ROW_FRACTION), (B, N, R)
        assert R * N * 4 <= max(16 * N * 4, _loss_cpp._BLAS_MAX_SCORE_BYTES), (B, N, R)
    assert _loss_cpp._blas_block_rows(4096, 4096) == 512
    assert _loss_cpp._blas_block_rows(5, 100) == 5


def _peak_allocated_bytes(fn) -> int:
    """Peak of the bytes live through torch's CPU allocator while ``fn`` runs (allocations inside
    ops included, e.g. a temporary of logsumexp), from the profiler's allocation events."""
    from torch.profiler import ProfilerActivity, profile

    try:
        from torch._C._profiler import _EventType
    except ImportError:  # private API: a torch without it cannot run this check
        pytest.skip("torch profiler allocation events unavailable")
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = []

    def walk(nodes):
        for node in nodes:
            if node.tag == _EventType.Allocation:
                events.append((node.start_time_ns, node.extra_fields.alloc_size))
            walk(node.children)

    walk(prof.profiler.kineto_results.experimental_event_tree())
    live = peak = 0
    for _, size in sorted(events):
        live += size
        peak = max(peak, live)
    return peak


@pytest.mark.parametrize("call", ["run", "run_weighted", "public_api"])
def test_blas_schedule_peak_memory_is_bounded(call):
    """SPEC 4 memory target on the BLAS schedule (B = N = 1024, D = 128 takes it by size): the
    peak beyond inputs and returned gradients is one R x N score block plus O(R) vectors, and at
    most 1/8 of eager torch's measured the same way. Any B x N temporary (a score matrix, an
    out-of-place exp / softmax / logsumexp over it) fails this, and so does a copy of a gradient
    (through the public API, autograd copies a gradient the backend still references)."""
    import torch.nn.functional as F

    import densescale

    torch.manual_seed(0)
    B = N = 1024
    D = 128
    q, p = torch.randn(B, D) * 0.1, torch.randn(N, D) * 0.1
    opts = LossOptions()
    assert _loss_cpp._blas_schedule_applies(q, None, opts, None, None, 0, None, B * N * D)
    kept = []
    if call == "public_api":
        ql, pl = q.clone().requires_grad_(), p.clone().requires_grad_()
        fn = lambda: densescale.contrastive_loss(ql, pl, scale=20.0, backend="cpp").backward()
        outputs = (B + N) * D * 4 + B * 4  # gradients + the per-query loss
    else:
        w = torch.rand(B) if call == "run_weighted" else None
        fn = lambda: kept.append(
            _loss_cpp.run(LossInputs(q, p, None, None, 20.0, opts), need_loss=w is None,
                          need_grad=True, weights=w)
        )  # fmt: skip
        outputs = (B + N) * D * 4 + (0 if w is not None else B * 4)
    ours = _peak_allocated_bytes(fn)
    if call == "public_api":
        assert ql.grad.shape == (B, D) and pl.grad.shape == (N, D)
    else:
        assert kept[0]["dq"].shape == (B, D) and kept[0]["dc"].shape == (N, D)
    R = _loss_cpp._blas_block_rows(B, N)
    ours_scratch = ours - outputs
    assert ours_scratch <= R * N * 4 + 64 * R + (64 << 10), (ours_scratch, R * N * 4)

    ql, pl = q.clone().requires_grad_(), p.clone().requires_grad_()
    eager = _peak_allocated_bytes(
        lambda: F.cross_entropy(ql @ pl.T * 20.0, torch.arange(B)).backward()
    )
    eager_scratch = eager - (B + N) * D * 4
    assert eager_scratch >= 2 * B * N * 4  # the measurement sees eager's B x N matrices
    assert ours_scratch <= eager_scratch / 8, (ours_scratch, eager_scratch)


def test_repeated_backward_with_other_weights():
    """retain_graph: a second backward with another upstream gradient accumulates the right
    gradients (the first one is handed to autograd, not rescaled in place afterwards)."""
    import densescale

    q0, p0, _ = _make(40, 1, 0, 12)
    grads = {}
    for backend in ("cpp", "torch"):
        q, p = q0.clone().requires_grad_(), p0.clone().requires_grad_()
        scale = torch.tensor(2.0, requires_grad=True)
        loss = densescale.contrastive_loss(q, p, scale=scale, backend=backend)
        loss.backward(torch.tensor(1.0), retain_graph=True)
        loss.backward(torch.tensor(-2.5))
        grads[backend] = (q.grad, p.grad, scale.grad)
    for got, want in zip(grads["cpp"], grads["torch"]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
