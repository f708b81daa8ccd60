"""densescale.contrastive_loss: every backend against an fp64 reference, the autograd plumbing of
the fused backends (through a protocol-conformant reference backend), dispatch, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from _loss_helpers import (
    BACKENDS,
    assert_no_worse_than_eager,
    eager_loss_in_dtype,
    fp32_noise_scales,
    make_case,
    make_reference_backend,
    run,
    select_backend,
)

import densescale
import densescale.ops.contrastive_loss as cl
from densescale.ops._loss_spec import LossOptions, reference_loss_per_query


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    return {"mean": loss.mean, "sum": loss.sum}.get(reduction, lambda: loss)()


def run_eager(case, reduction, grad_out):
    for t in case.leaves():
        t.grad = None
    loss = _reduce(eager_loss_in_dtype(case), reduction)
    loss.backward(grad_out.to(loss.dtype))
    return loss.detach(), [t.grad for t in case.leaves()]


def check_against_reference(case, backend, reduction="none", dtype=torch.float32, grad_out=None):
    """Run ``backend`` on ``case`` in ``dtype``; compare loss and every gradient with the fp64
    reference, allowing the error of an eager computation in ``dtype`` plus eps."""
    if grad_out is None:
        B = case.q.shape[0]
        shape = (B,) if reduction == "none" else ()
        grad_out = (
            torch.rand(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64) + 0.5
        )
    got_case, eager_case, ref_case = (
        case.cast(dtype),
        case.cast(dtype),
        case.cast(dtype).cast(torch.float64),
    )
    got, got_grads = run(got_case, backend, reduction, grad_out)
    ref, ref_grads = run(ref_case, "torch", reduction, grad_out)
    eag, eag_grads = run_eager(eager_case, reduction, grad_out)
    assert got.dtype == torch.float32
    B = case.q.shape[0]
    weights = grad_out.expand(B) / (B if reduction == "mean" else 1)
    rel_noise, dscale_noise = fp32_noise_scales(ref_case, weights)
    assert_no_worse_than_eager(got, ref, eag, dtype, "loss", rel_noise * ref.abs().max().item())
    names = ["dq", "dp"] + (["dneg"] if case.negatives is not None else []) + ["dscale"]
    for name, g, r, e, leaf in zip(names, got_grads, ref_grads, eag_grads, got_case.leaves()):
        assert g is not None and g.dtype == leaf.dtype, (
            f"{name}: dtype {None if g is None else g.dtype}"
        )
        noise = dscale_noise if name == "dscale" else rel_noise * r.abs().max().item()
        assert_no_worse_than_eager(g, r, e, dtype, name, noise)


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    name, _ = select_backend(request.param, monkeypatch)
    return name


# (B, G, K, D, in_batch, symmetric, doc_ids): tiny (below any tile), odd and above tile sizes.
LAYOUTS = {
    "pairs_tiny": (3, 1, 0, 8, True, False, None),
    "pairs_odd": (37, 1, 0, 123, True, False, None),
    "grouped": (37, 3, 0, 123, True, False, None),
    "grouped_pool": (37, 3, 29, 123, True, False, None),
    "paper_pool_only": (37, 1, 29, 123, False, False, None),
    "grouped_pool_own_group_only": (13, 3, 29, 64, False, False, None),
    "doc_ids_candidates": (37, 3, 29, 123, True, False, "short"),
    "doc_ids_with_pool": (37, 3, 29, 123, True, False, "full"),
    "doc_ids_own_group_only": (19, 2, 11, 40, False, False, "full"),
    "symmetric": (37, 1, 0, 123, True, True, None),
    "symmetric_grouped_pool_ids": (21, 2, 17, 48, True, True, "full"),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_forward_and_every_gradient_match_fp64_reference(backend, layout):
    B, G, K, D, in_batch, symmetric, ids = LAYOUTS[layout]
    case = make_case(B, G, K, D, in_batch=in_batch, symmetric=symmetric, doc_ids=ids)
    # reduction="none" with random per-row upstream weights: grad_output != 1 and non-uniform.
    check_against_reference(case, backend, reduction="none")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_reductions(backend, reduction):
    case = make_case(29, 2, 7, 33, doc_ids="short")
    grad_out = None if reduction == "none" else torch.tensor(0.7, dtype=torch.float64)
    check_against_reference(case, backend, reduction=reduction, grad_out=grad_out)
    loss = densescale.contrastive_loss(
        case.q, case.p, reduction=reduction, backend=backend, **case.kwargs()
    )
    assert loss.shape == ((29,) if reduction == "none" else ())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["grouped_pool", "symmetric"])
def test_half_precision_no_worse_than_eager(backend, dtype, layout):
    B, G, K, D, in_batch, symmetric, ids = LAYOUTS[layout]
    case = make_case(B, G, K, D, in_batch=in_batch, symmetric=symmetric, doc_ids=ids)
    check_against_reference(case, backend, reduction="mean", dtype=dtype)


@pytest.mark.parametrize("normalize", [True, False])
def test_scale_100_does_not_overflow(backend, normalize):
    # Unnormalised rows at D=64 give |scores| of several hundred times 100: exp() would overflow.
    case = make_case(17, 2, 5, 64, scale=100.0, normalize=normalize)
    check_against_reference(
        case, backend, reduction="mean", grad_out=torch.tensor(1.0, dtype=torch.float64)
    )
    check_against_reference(
        case,
        backend,
        reduction="mean",
        dtype=torch.bfloat16,
        grad_out=torch.tensor(1.0, dtype=torch.float64),
    )


def test_masks_leaving_only_the_positive_give_zero_loss(backend):
    case = make_case(9, 3, 4, 16, doc_ids=None)
    same_id = torch.zeros(27 + 4, dtype=torch.int64)  # every column duplicates every positive
    # Exactly 0 up to fp32 rounding of logits of size <= 20 * 1.5 (an unmasked negative would
    # add O(0.1) to the loss and O(1) to the gradients).
    loss, grads = run(_with(case, doc_ids=same_id), backend, "none")
    assert loss.abs().max().item() < 1e-5
    assert all(g.abs().max().item() < 1e-4 for g in grads)
    # Own group only, one candidate per query, no pool: the positive alone is left.
    case1 = make_case(9, 1, 0, 16, in_batch=False)
    loss, grads = run(case1, backend, "sum")
    assert abs(loss.item()) < 1e-4
    assert all(g.abs().max().item() < 1e-4 for g in grads)


def _with(case, **changes):
    out = case.cast(case.q.dtype)
    for k, v in changes.items():
        setattr(out, k, v)
    return out


def test_float_scale_and_scale_tensor_without_grad(backend):
    case = make_case(11, 2, 3, 20)
    ref = reference_loss_per_query(
        case.q.double(),
        case.p.double(),
        case.negatives.double(),
        None,
        20.0,
        LossOptions(group_size=2),
    ).mean()
    for scale in (20.0, 20, torch.tensor(20.0), torch.tensor([20.0])):
        c = _with(case)
        loss = densescale.contrastive_loss(
            c.q, c.p, negatives=c.negatives, scale=scale, backend=backend
        )
        loss.backward()
        assert abs(loss.item() - ref.item()) < 1e-4
        assert c.q.grad is not None and c.negatives.grad is not None


def test_one_element_scale_tensor_gets_gradient_of_its_shape(backend):
    case = make_case(11, 2, 3, 20)
    s1 = torch.tensor([20.0], requires_grad=True)
    s0 = torch.tensor(20.0, requires_grad=True)
    densescale.contrastive_loss(
        case.q, case.p, negatives=case.negatives, scale=s1, backend=backend
    ).backward()
    c = _with(case)
    densescale.contrastive_loss(
        c.q, c.p, negatives=c.negatives, scale=s0, backend="torch"
    ).backward()
    assert s1.grad.shape == (1,)
    assert torch.allclose(s1.grad[0], s0.grad, rtol=1e-4, atol=1e-6)


def test_non_contiguous_inputs_are_accepted(backend):
    case = make_case(10, 2, 6, 24)
    q_t = case.q.detach().T.contiguous().requires_grad_()  # (D, B): q_t.T is a non-contiguous view
    p_big = torch.zeros(40, 24, dtype=torch.float32)
    p_big[::2] = case.p.detach()
    p_big.requires_grad_()
    loss = densescale.contrastive_loss(
        q_t.T, p_big[::2], negatives=case.negatives, scale=20.0, backend=backend
    )
    loss.backward()
    c = _with(case)
    ref = densescale.contrastive_loss(c.q, c.p, negatives=c.negatives, scale=20.0, backend="torch")
    ref.backward()
    assert torch.allclose(loss, ref, rtol=1e-5, atol=1e-6)
    assert torch.allclose(q_t.grad.T, c.q.grad, rtol=1e-4, atol=1e-6)
    assert torch.allclose(p_big.grad[::2], c.p.grad, rtol=1e-4, atol=1e-6)
    assert p_big.grad[1::2].abs().max() == 0


@pytest.mark.parametrize("symmetric", [False, True])
def test_learnable_scale_module(backend, symmetric):
    case = make_case(15, 1 if symmetric else 2, 0 if symmetric else 5, 32)
    mod = densescale.ContrastiveLoss(
        10.0, learnable_scale=True, symmetric=symmetric, backend=backend
    )
    ref_mod = densescale.ContrastiveLoss(
        10.0, learnable_scale=True, symmetric=symmetric, backend="torch"
    ).double()
    loss = mod(case.q, case.p, case.negatives)
    loss.backward()
    c64 = case.cast(torch.float64)
    ref = ref_mod(c64.q, c64.p, c64.negatives)
    ref.backward()
    assert abs(loss.item() - ref.item()) < 1e-4 * max(1.0, abs(ref.item()))
    assert mod.log_scale.grad is not None
    assert torch.allclose(mod.log_scale.grad.double(), ref_mod.log_scale.grad, rtol=1e-3, atol=1e-6)
    assert torch.allclose(case.q.grad.double(), c64.q.grad, rtol=1e-3, atol=1e-6)
    assert mod.scale == pytest.approx(10.0)


def test_learnable_scale_is_clamped_like_clip():
    mod = densescale.ContrastiveLoss(10.0, learnable_scale=True, max_scale=50.0, backend="torch")
    with torch.no_grad():
        mod.log_scale.fill_(math.log(500.0))
    case = make_case(6, 1, 0, 8)
    loss = mod(case.q, case.p)
    loss.backward()
    assert mod.scale == pytest.approx(50.0)
    assert mod.log_scale.grad.item() == 0.0
    expect = densescale.contrastive_loss(
        case.q.detach(), case.p.detach(), scale=50.0, backend="torch"
    )
    assert torch.allclose(loss.detach(), expect)


def test_module_options_are_forwarded():
    case = make_case(8, 2, 3, 16, doc_ids="full")
    mod = densescale.ContrastiveLoss(5.0, in_batch=False, reduction="none", backend="torch")
    got = mod(case.q, case.p, case.negatives, doc_ids=case.doc_ids)
    want = densescale.contrastive_loss(
        case.q,
        case.p,
        negatives=case.negatives,
        doc_ids=case.doc_ids,
        scale=5.0,
        in_batch=False,
        reduction="none",
        backend="torch",
    )
    assert torch.equal(got, want)
    assert "learnable" not in repr(mod) and list(mod.parameters()) == []


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"scale": 20.0, "learnable_scale": True, "max_scale": 10.0}, ValueError, "max_scale"),
        ({"scale": -1.0, "learnable_scale": True}, ValueError, "positive"),
        ({"scale": "20"}, TypeError, "scale"),
        ({"reduction": "avg"}, ValueError, "reduction"),
        ({"backend": "gpu"}, ValueError, "backend"),
        ({"symmetric": True, "in_batch": False}, ValueError, "symmetric"),
    ],
)
def test_module_rejects_bad_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        densescale.ContrastiveLoss(**kwargs)


# ----------------------------------------------------------------------------------------------
# Autograd plumbing of the fused backends (reference backend behind the real Function)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction, uniform", [("mean", True), ("sum", True), ("none", False)])
def test_function_passes_weights_and_uniform_flag(monkeypatch, reduction, uniform):
    name, ref = select_backend("protocol", monkeypatch)
    case = make_case(7, 1, 2, 8)
    loss = densescale.contrastive_loss(
        case.q, case.p, negatives=case.negatives, reduction=reduction, backend=name
    )
    grad_out = torch.full(loss.shape, 0.5) if reduction != "none" else torch.arange(7.0)
    loss.backward(grad_out)
    fwd, bwd = ref.calls
    assert fwd["need_grad"] is True and bwd["uniform"] is uniform
    want = {
        "mean": torch.full((7,), 0.5 / 7),
        "sum": torch.full((7,), 0.5),
        "none": torch.arange(7.0),
    }
    assert torch.allclose(bwd["weights"], want[reduction])


def test_function_need_grad_false_without_grad(monkeypatch):
    name, ref = select_backend("protocol", monkeypatch)
    case = make_case(5, 1, 0, 8)
    with torch.no_grad():
        densescale.contrastive_loss(case.q, case.p, scale=case.scale, backend=name)
    densescale.contrastive_loss(case.q.detach(), case.p.detach(), scale=3.0, backend=name)
    assert [c["need_grad"] for c in ref.calls] == [False, False]
    # Only the scale requires grad: the backend still has to produce gradients.
    densescale.contrastive_loss(
        case.q.detach(), case.p.detach(), scale=case.scale, backend=name
    ).backward()
    assert ref.calls[2]["need_grad"] is True and case.scale.grad is not None


def test_function_casts_gradients_to_input_dtypes(monkeypatch):
    name, _ = select_backend("protocol", monkeypatch)
    case = make_case(6, 2, 3, 8).cast(torch.bfloat16)
    loss = densescale.contrastive_loss(
        case.q, case.p, negatives=case.negatives, scale=case.scale, backend=name
    )
    loss.backward()
    assert loss.dtype == torch.float32
    assert case.q.grad.dtype == case.p.grad.dtype == case.negatives.grad.dtype == torch.bfloat16
    assert case.scale.grad.dtype == torch.float32 and case.scale.grad.shape == ()


def test_function_gives_no_gradient_to_frozen_inputs(monkeypatch):
    name, _ = select_backend("protocol", monkeypatch)
    case = make_case(6, 1, 3, 8)
    p = case.p.detach()
    neg = case.negatives.detach()
    densescale.contrastive_loss(case.q, p, negatives=neg, backend=name).backward()
    assert case.q.grad is not None and p.grad is None and neg.grad is None


def test_protocol_backend_receives_padded_doc_ids_and_options(monkeypatch):
    name, ref = select_backend("protocol", monkeypatch)
    case = make_case(4, 3, 5, 8, in_batch=False)
    ids = torch.arange(12, dtype=torch.int64) + 10
    densescale.contrastive_loss(
        case.q, case.p, negatives=case.negatives, doc_ids=ids, in_batch=False, backend=name
    )
    assert ref.calls[0]["opts"] == LossOptions(
        group_size=3, in_batch=False, symmetric=False, row_offset=0
    )


def test_doc_id_padding_never_matches():
    ids = torch.tensor([5, 9, 7], dtype=torch.int64)
    padded = cl.pad_doc_ids(ids, 6)
    assert padded.tolist()[:3] == [5, 9, 7] and set(padded.tolist()[3:]) == {4}
    lo = torch.tensor([-(2**63), 3], dtype=torch.int64)
    assert cl.pad_doc_ids(lo, 3).tolist()[2] == 4
    assert cl.pad_doc_ids(ids, 3) is ids
    with pytest.raises(ValueError, match="whole int64 range"):
        cl.pad_doc_ids(torch.tensor([-(2**63), 2**63 - 1]), 3)


# ----------------------------------------------------------------------------------------------
# Dispatch
# ----------------------------------------------------------------------------------------------


def _missing(name):
    raise ImportError(f"no {name}")


def test_auto_on_cpu_uses_cpp_when_available(monkeypatch):
    ref = make_reference_backend()
    asked = []
    monkeypatch.setattr(cl, "load_backend", lambda name: asked.append(name) or ref)
    case = make_case(5, 1, 0, 8)
    densescale.contrastive_loss(case.q, case.p)
    assert asked[0] == "cpp" and ref.calls
    assert cl.resolve_backend("auto", torch.device("cpu"), torch.float16) == "cpp"


def test_auto_falls_back_to_torch(monkeypatch):
    monkeypatch.setattr(cl, "load_backend", _missing)
    case = make_case(5, 1, 0, 8)
    got = densescale.contrastive_loss(case.q, case.p, scale=2.0)
    want = densescale.contrastive_loss(case.q, case.p, scale=2.0, backend="torch")
    assert torch.equal(got, want)
    assert cl.resolve_backend("auto", torch.device("cpu"), torch.float32) == "torch"
    assert cl.resolve_backend("auto", torch.device("cuda"), torch.bfloat16) == "torch"


def test_auto_on_cuda_picks_triton_and_float64_picks_torch(monkeypatch):
    ref = make_reference_backend()
    monkeypatch.setattr(cl, "load_backend", lambda name: ref)
    assert cl.resolve_backend("auto", torch.device("cuda", 0), torch.bfloat16) == "triton"
    assert cl.resolve_backend("auto", torch.device("cpu"), torch.float64) == "torch"
    assert cl.resolve_backend("auto", torch.device("cuda"), torch.float64) == "torch"
    case = make_case(5, 1, 0, 8).cast(torch.float64)
    densescale.contrastive_loss(case.q, case.p)  # float64 on auto: reference, the stub untouched
    assert ref.calls == []


def test_explicit_backend_device_and_dtype_rules(monkeypatch):
    ref = make_reference_backend()
    monkeypatch.setattr(cl, "load_backend", lambda name: ref)
    with pytest.raises(ValueError, match="backend='cpp' runs on CPU tensors"):
        cl.resolve_backend("cpp", torch.device("cuda"), torch.float32)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        cl.resolve_backend("triton", torch.device("cpu"), torch.float32)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert cl.resolve_backend("triton", torch.device("cpu"), torch.float32) == "triton"
    assert cl.resolve_backend("triton", torch.device("cuda"), torch.float16) == "triton"
    for name in ("cpp", "triton"):
        with pytest.raises(TypeError, match="float64 runs on backend='torch' only"):
            cl.resolve_backend(name, torch.device("cpu"), torch.float64)
    assert cl.resolve_backend("torch", torch.device("cuda"), torch.float64) == "torch"


def test_missing_backend_module_names_how_to_get_it(monkeypatch):
    monkeypatch.setitem(cl._BACKEND_MODULES, "triton", "densescale.ops._no_such_backend")
    cl._import_backend.cache_clear()
    try:
        with pytest.raises(ImportError, match="pip install triton"):
            cl.load_backend("triton")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        case = make_case(5, 1, 0, 8)
        with pytest.raises(ImportError, match="backend='torch'"):
            densescale.contrastive_loss(case.q, case.p, backend="triton")
    finally:
        cl._import_backend.cache_clear()


def test_cpp_backend_needs_native_extension(monkeypatch):
    monkeypatch.setattr(cl, "has_native", lambda: False)
    cl._import_backend.cache_clear()
    try:
        with pytest.raises(ImportError, match="make dev"):
            cl.load_backend("cpp")
    finally:
        cl._import_backend.cache_clear()


# ----------------------------------------------------------------------------------------------
# Bad input (SPEC 5): clear errors naming the argument, raised before any work
# ----------------------------------------------------------------------------------------------


def _good():
    g = torch.Generator().manual_seed(0)
    return {
        "q": torch.randn(4, 8, generator=g),
        "p": torch.randn(8, 8, generator=g),
        "negatives": torch.randn(3, 8, generator=g),
        "doc_ids": torch.arange(8),
        "scale": 2.0,
    }


def _bad(exc: type[Exception], match: str, **changes) -> tuple[dict, type[Exception], str]:
    """A bad-input case: the arguments of ``_good()`` to replace, the error and its message."""
    return changes, exc, match


_GOOD = _good()
BAD = {
    "q_not_tensor": _bad(TypeError, "q must be a torch.Tensor", q=[[1.0, 2.0]]),
    "q_1d": _bad(ValueError, "q must have 2 dimensions", q=torch.randn(8)),
    "p_3d": _bad(ValueError, "p must have 2 dimensions", p=torch.randn(8, 8, 1)),
    "mismatched_D_p": _bad(ValueError, "p must have D=8", p=torch.randn(8, 7)),
    "mismatched_D_negatives": _bad(
        ValueError, "negatives must have D=8", negatives=torch.randn(3, 9)
    ),
    "wrong_group_size": _bad(ValueError, "positive multiple of B=4", p=torch.randn(6, 8)),
    "fewer_p_than_q": _bad(ValueError, "positive multiple", p=torch.randn(3, 8), doc_ids=None),
    "empty_batch": _bad(ValueError, "q must not be empty", q=torch.randn(0, 8)),
    "empty_D": _bad(ValueError, "q must not be empty", q=torch.randn(4, 0)),
    "empty_negatives": _bad(ValueError, "negatives must not be empty", negatives=torch.randn(0, 8)),
    "int_q": _bad(TypeError, "q must have dtype", q=torch.ones(4, 8, dtype=torch.int64)),
    "int_p": _bad(TypeError, "p must have dtype", p=torch.ones(8, 8, dtype=torch.int32)),
    "bool_negatives": _bad(TypeError, "negatives", negatives=torch.ones(3, 8, dtype=torch.bool)),
    "mixed_dtypes": _bad(TypeError, "share one dtype", p=_GOOD["p"].half()),
    "different_devices": _bad(ValueError, "share one device", p=torch.empty(8, 8, device="meta")),
    "doc_ids_float": _bad(TypeError, "doc_ids must have dtype int64", doc_ids=torch.arange(8.0)),
    "doc_ids_int32": _bad(TypeError, "int64", doc_ids=torch.arange(8, dtype=torch.int32)),
    "doc_ids_list": _bad(TypeError, "doc_ids must be a torch.Tensor", doc_ids=list(range(8))),
    "doc_ids_length": _bad(ValueError, "doc_ids must be 1-D with 8 or 11", doc_ids=torch.arange(9)),
    "doc_ids_2d": _bad(ValueError, "doc_ids must be 1-D", doc_ids=torch.arange(8)[None]),
    "doc_ids_device": _bad(
        ValueError, "doc_ids is on meta", doc_ids=torch.empty(8, dtype=torch.int64, device="meta")
    ),
    "doc_ids_no_free_pad": _bad(
        ValueError, "whole int64 range", doc_ids=torch.tensor([-(2**63), 2**63 - 1] * 4)
    ),
    "scale_nan": _bad(ValueError, "scale must be finite", scale=float("nan")),
    "scale_inf_tensor": _bad(ValueError, "scale must be finite", scale=torch.tensor(float("inf"))),
    "scale_str": _bad(TypeError, "scale must be a float", scale="20"),
    "scale_bool": _bad(TypeError, "scale must be a float", scale=True),
    "scale_int_tensor": _bad(TypeError, "floating tensor", scale=torch.tensor(2)),
    "scale_vector": _bad(ValueError, "scale must be a 0-d", scale=torch.ones(2)),
    "reduction": _bad(ValueError, "reduction must be one of", reduction="avg"),
    "backend": _bad(ValueError, "backend must be one of", backend="cuda"),
    "symmetric_without_in_batch": _bad(
        ValueError, "symmetric=True needs in_batch=True", symmetric=True, in_batch=False
    ),
    "in_batch_not_bool": _bad(TypeError, "in_batch must be a bool", in_batch="yes"),
    "float64_on_cpp": _bad(
        TypeError,
        "float64 runs on backend='torch' only",
        **{k: _GOOD[k].double() for k in ("q", "p", "negatives")},
        backend="cpp",
    ),
}


@pytest.mark.parametrize("bad", list(BAD))
def test_bad_input_is_rejected_before_any_work(monkeypatch, bad):
    change, exc, match = BAD[bad]

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the input was checked")

    monkeypatch.setattr(cl, "compute_loss", no_work)
    monkeypatch.setattr(cl, "load_backend", lambda name: make_reference_backend())
    args = {**_good(), **change}
    q, p = args.pop("q"), args.pop("p")
    with pytest.raises(exc, match=match):
        densescale.contrastive_loss(q, p, **args)


def test_good_input_of_bad_input_tests_is_accepted():
    args = _good()
    q, p = args.pop("q"), args.pop("p")
    loss = densescale.contrastive_loss(q, p, **args, backend="torch")
    assert torch.isfinite(loss)


def test_float64_reference_is_exact_cross_entropy():
    """The torch backend in float64 equals F.cross_entropy on the materialised, masked scores."""
    case = make_case(6, 2, 3, 10, doc_ids="full").cast(torch.float64)
    loss = densescale.contrastive_loss(
        case.q, case.p, reduction="sum", backend="torch", **case.kwargs()
    )
    cands = torch.cat([case.p, case.negatives])
    scores = case.q @ cands.T * case.scale.double()
    ids = case.doc_ids
    target = torch.arange(6) * 2
    dup = ids[None, :] == ids[target][:, None]
    dup[torch.arange(6), target] = False
    want = torch.nn.functional.cross_entropy(
        scores.masked_fill(dup, float("-inf")), target, reduction="sum"
    )
    assert torch.allclose(loss, want, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# NaN / Inf (issue 10, issue 11 item 3): found from the loss the kernel computes anyway, no extra
# pass over the embeddings, and the exact row is named
# ----------------------------------------------------------------------------------------------

_NAN_BACKENDS = ["torch", "cpp"] + (["cuda"] if torch.cuda.is_available() else [])


def _nan_case(B=40, G=1, K=45, D=16):
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(B, D, generator=g),
        torch.randn(B * G, D, generator=g),
        torch.randn(K, D, generator=g),
    )


@pytest.mark.parametrize("backend", _NAN_BACKENDS)
@pytest.mark.parametrize("name", ["q", "p", "negatives"])
@pytest.mark.parametrize("row,value", [(17, float("nan")), (33, float("inf")), (2, -float("inf"))])
@pytest.mark.parametrize("in_batch,symmetric", [(True, False), (True, True), (False, False)])
def test_nan_row_is_named_exactly(backend, name, row, value, in_batch, symmetric):
    q, p, neg = _nan_case()
    t = {"q": q, "p": p, "negatives": neg}
    t[name][row, 5] = value
    t[name][row + 3, 1] = float("nan")  # a later bad row: the first one is reported
    if backend == "cuda":  # "auto" on CUDA tensors: the Triton kernel
        q, p, neg, backend = q.cuda(), p.cuda(), neg.cuda(), "auto"
    with pytest.raises(ValueError, match=rf"^{name} row {row} holds NaN or Inf"):
        densescale.contrastive_loss(
            q.requires_grad_(), p, negatives=neg, in_batch=in_batch, symmetric=symmetric,
            backend=backend,
        )  # fmt: skip


def test_nan_in_column_masked_for_every_query_is_still_caught():
    # Every candidate has the same id: each query sees only its own positive (loss 0), so a NaN
    # in a hard negative leaves every loss finite but not the gradient (0 * NaN), which the fused
    # pass shows in d/dscale.
    q, p, _ = _nan_case(B=4, G=2, K=0)
    p[1, 0] = float("nan")
    ids = torch.zeros(8, dtype=torch.int64)
    with pytest.raises(ValueError, match="p row 1 holds NaN or Inf"):
        densescale.contrastive_loss(q.requires_grad_(), p, doc_ids=ids, backend="cpp")


def test_finite_loss_reads_no_input_for_checks(monkeypatch):
    """The public call spends no pass over the embeddings on NaN checks (issue 10)."""
    q, p, neg = _nan_case(B=64, K=50)
    real_isfinite = torch.isfinite

    def isfinite(t):
        assert t.numel() <= q.shape[0], "an input was scanned for NaN/Inf"
        return real_isfinite(t)

    monkeypatch.setattr(torch, "isfinite", isfinite)
    monkeypatch.setattr(torch, "aminmax", lambda *a, **k: pytest.fail("aminmax over an input"))
    loss = densescale.contrastive_loss(q.requires_grad_(), p, negatives=neg, backend="cpp")
    loss.backward()
    assert math.isfinite(float(loss))


def test_overflow_of_finite_inputs_is_named_as_such():
    q, p, _ = _nan_case(B=4, K=0)
    with pytest.raises(ValueError, match="overflows float32"):
        densescale.contrastive_loss(q * 1e19, p * 1e19, backend="cpp")
