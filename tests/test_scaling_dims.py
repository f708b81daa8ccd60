"""Embedding dimension as a study axis: L(d), L(N, d), the forecast check and the memory answer."""

from __future__ import annotations

import numpy as np
import pytest

from densescale.scaling import (
    CostModel,
    EmbeddingDimLaw,
    FitError,
    ModelDimLaw,
    fit_dim_law,
    fit_model_dim_law,
    forecast_check,
    optimal_allocation,
    optimal_dim_allocation,
)

DIM_TRUE = EmbeddingDimLaw(C=24.0, gamma=0.8, delta=0.12)
JOINT_TRUE = ModelDimLaw(A=3.0e4, C=30.0, alpha=0.55, gamma=0.9, delta=0.05)
DIMS = np.array([16, 32, 64, 128, 256, 512, 768, 1024])
SIZES = np.array([5e5, 3.4e6, 1.3e7, 2.6e7, 8.6e7])


def test_dimension_law_formula_and_inverse():
    d = np.array([32.0, 256.0])
    assert DIM_TRUE.predict(d) == pytest.approx((24.0 / d) ** 0.8 + 0.12)
    assert DIM_TRUE.d_for_loss(DIM_TRUE.predict(100.0)) == pytest.approx(100.0)
    assert DIM_TRUE.d_for_loss(0.1) == np.inf  # below the floor
    # the joint law reduces to its one-axis laws
    assert JOINT_TRUE.predict(1e30, 128.0) == pytest.approx(
        JOINT_TRUE.at_infinite_model().predict(128.0), rel=1e-9
    )
    assert JOINT_TRUE.predict(1e6, 1e30) == pytest.approx(
        JOINT_TRUE.at_infinite_dim().predict(1e6), rel=1e-9
    )
    with pytest.raises(ValueError, match="gamma"):
        EmbeddingDimLaw(C=1.0, gamma=-1.0, delta=0.1)


def test_dimension_law_recovered_from_noisy_points():
    rng = np.random.default_rng(3)
    L = DIM_TRUE.predict(DIMS) * np.exp(0.01 * rng.standard_normal(len(DIMS)))
    law = fit_dim_law(DIMS, L, n_boot=40, seed=0)
    assert law.gamma == pytest.approx(0.8, rel=0.12)
    assert law.delta == pytest.approx(0.12, rel=0.12)
    assert law.C == pytest.approx(24.0, rel=0.35)
    assert law.r2 > 0.995
    for name, true in DIM_TRUE.params.items():
        lo, hi = law.ci[name]
        assert lo <= true <= hi, (name, lo, true, hi)
    assert "L(d) = (" in law.describe()


def test_model_dim_law_recovered_from_noisy_grid():
    rng = np.random.default_rng(4)
    NN, dd = np.meshgrid(SIZES, DIMS[1::2])
    N, d = NN.ravel(), dd.ravel().astype(float)
    L = JOINT_TRUE.predict(N, d) * np.exp(0.005 * rng.standard_normal(len(N)))
    law = fit_model_dim_law(N, d, L, D=10_000, n_boot=0)
    assert law.alpha == pytest.approx(0.55, rel=0.1)
    assert law.gamma == pytest.approx(0.9, rel=0.1)
    assert law.delta == pytest.approx(0.05, rel=0.15)
    assert law.D == 10_000
    with pytest.raises(ValueError, match="2 distinct values of d"):
        fit_model_dim_law(SIZES, np.full(5, 64.0), np.ones(5))


def test_dimension_law_fit_errors():
    with pytest.raises(ValueError, match="at least 3 distinct"):
        fit_dim_law([64, 128], [1.0, 0.9])
    with pytest.raises(ValueError, match="d must be > 0"):
        fit_dim_law([64, 0, 128], [1.0, 0.9, 0.8])
    flat = np.full(len(DIMS), 0.5)
    with pytest.raises(FitError):
        fit_dim_law(DIMS, flat, n_boot=0)


def test_forecast_check_intervals_catch_a_wrong_extrapolation():
    rng = np.random.default_rng(5)
    L = DIM_TRUE.predict(DIMS) * np.exp(0.01 * rng.standard_normal(len(DIMS)))
    good = forecast_check(L, d=DIMS, n_holdout=2, n_boot=40, seed=0)
    assert good.holdout == "d" and list(good.held_out_values) == [768, 1024]
    assert good.has_intervals and good.all_inside
    assert np.all(good.lower < good.predicted) and np.all(good.predicted < good.upper)
    line = good.describe()
    assert line.startswith("forecast of d = 768, 1.02e+03 from smaller d: 2/2 inside the 95%")
    # the largest dimensions stop helping (a bottleneck elsewhere): the law cannot know
    bent = L.copy()
    bent[-2:] = L[-3] * 1.25
    bad = forecast_check(bent, d=DIMS, n_holdout=2, n_boot=40, seed=0)
    assert bad.all_inside is False and "0/2 inside" in bad.describe()
    # without a bootstrap there are no intervals, and the line says the error instead
    plain = forecast_check(L, d=DIMS, n_boot=0)
    assert plain.inside is None and "mean error" in plain.describe()
    with pytest.raises(ValueError, match="one axis"):
        forecast_check(L, D=DIMS, d=DIMS)


COST = CostModel(corpus_size=1e6)


def test_memory_budget_trades_dimension_against_model_size():
    memory = 2e9  # bytes: 1e6 passages, fp32 -> 4 MB per dimension, 4 bytes per parameter
    a = optimal_allocation(JOINT_TRUE, COST, None, memory_budget=memory, d_bounds=(8, 2048))
    assert a.d is not None and a.memory_bytes == pytest.approx(memory, rel=1e-6)
    assert a.loss == pytest.approx(float(JOINT_TRUE.predict(a.N, a.d)))
    # brute force over d: N takes the memory the index leaves
    dims = np.geomspace(8, 2048, 4000)
    n = (memory - COST.corpus_size * dims * COST.bytes_per_value) / COST.bytes_per_param
    ok = n > 1e5
    best = np.min(JOINT_TRUE.predict(n[ok], dims[ok]))
    assert a.loss <= best * (1 + 1e-6)
    assert 8 < a.d < 2048 and not a.at_bound  # an interior trade-off
    # fp16 vectors halve the bytes per dimension: the answer keeps more dimensions
    half = optimal_dim_allocation(
        JOINT_TRUE, CostModel(corpus_size=1e6, bytes_per_value=2.0), memory, d_bounds=(8, 2048)
    )
    assert half.d > a.d and half.loss < a.loss
    # a dollar budget at the law's D caps N as well
    law = ModelDimLaw(**JOINT_TRUE.params, D=1e4)
    capped = optimal_dim_allocation(law, COST, memory, budget=5002.0, d_bounds=(8, 2048))
    assert capped.cost.total <= 5002.0 * (1 + 1e-9) and capped.N < a.N


def test_memory_budget_bad_arguments():
    with pytest.raises(ValueError, match="memory_budget"):
        optimal_dim_allocation(JOINT_TRUE, COST, None)
    with pytest.raises(ValueError, match="infeasible"):
        optimal_dim_allocation(JOINT_TRUE, COST, 1e3)
    with pytest.raises(ValueError, match="pass D"):
        optimal_dim_allocation(JOINT_TRUE, COST, 2e9, budget=10.0)
    with pytest.raises(TypeError, match="ModelDimLaw"):
        optimal_dim_allocation(DIM_TRUE, COST, 2e9)
