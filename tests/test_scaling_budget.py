"""Budget allocation: the cost model and the constrained optimum (its plot: test_report_figures)."""

from __future__ import annotations

import numpy as np
import pytest

from densescale.scaling import (
    CostModel,
    JointLaw,
    ModelSizeLaw,
    optimal_allocation,
)

PAPER_JOINT = JointLaw(A=3.6e4, B=7.1e3, alpha=0.56, beta=1.31, delta=0.03)
# compute dear enough that N matters: a modest accelerator, many epochs, heavy serving
COST = CostModel(
    dollars_per_annotation=0.5,
    accelerator_dollars_per_hour=3.0,
    achieved_flops=2e13,
    train_tokens_per_example=565.0,
    epochs=20.0,
    corpus_size=8.8e6,
    tokens_per_passage=80.0,
    queries_served=1e9,
    tokens_per_query=10.0,
)


def test_cost_model_follows_its_documented_formula():
    c = COST
    n, d = 2e7, 5e4
    per_flop = 3.0 / (3600 * 2e13)
    split = c.split(n, d)
    assert split.annotation == pytest.approx(0.5 * d)
    assert split.training == pytest.approx(per_flop * 6 * n * 565.0 * 20.0 * d)
    assert split.inference == pytest.approx(per_flop * 2 * n * (8.8e6 * 80 + 1e9 * 10))
    assert split.total == pytest.approx(c.cost(n, d))
    assert c.cost(n, d, include_inference=False) == pytest.approx(split.total - split.inference)
    fixed = CostModel(train_examples=1e6)  # steps x batch fixed: training cost ignores D
    assert fixed.split(n, 1e3).training == pytest.approx(fixed.split(n, 1e5).training)
    grid = c.cost(np.array([1e6, 1e7]), np.array([[1e3], [1e4]]))
    assert grid.shape == (2, 2)


def test_optimum_spends_the_budget_and_beats_a_brute_force_grid():
    budget = 5e4
    a = optimal_allocation(PAPER_JOINT, COST, budget)
    assert a.cost.total <= budget * (1 + 1e-9)
    assert a.cost.total == pytest.approx(budget, rel=1e-6)
    assert a.loss == pytest.approx(PAPER_JOINT.predict(a.N, a.D))
    assert a.at_bound == ""
    n, d = np.meshgrid(np.geomspace(1e5, 1e11, 300), np.geomspace(1e2, 1e9, 300))
    feasible = COST.cost(n, d) <= budget
    assert a.loss <= PAPER_JOINT.predict(n[feasible], d[feasible]).min() + 1e-9


def test_loss_at_the_optimum_decreases_with_budget():
    budgets = [2e3, 1e4, 5e4, 2.5e5, 1e6]
    losses = [optimal_allocation(PAPER_JOINT, COST, b).loss for b in budgets]
    assert np.all(np.diff(losses) < 0), losses


def test_inference_cost_moves_the_optimum_to_smaller_models():
    for budget in (1e4, 5e4, 2.5e5):
        with_inf = optimal_allocation(PAPER_JOINT, COST, budget, include_inference=True)
        without = optimal_allocation(PAPER_JOINT, COST, budget, include_inference=False)
        assert with_inf.N < 0.7 * without.N, budget
        assert without.cost.inference == 0.0 and with_inf.cost.inference > 0.0
        assert with_inf.loss >= without.loss  # paying for inference can only cost loss


def test_infeasible_budget_is_a_clear_error():
    with pytest.raises(ValueError, match=r"infeasible.*already costs \$"):
        optimal_allocation(PAPER_JOINT, COST, 1.0)


def test_bad_arguments():
    with pytest.raises(TypeError, match="law must be a JointLaw"):
        optimal_allocation(ModelSizeLaw(A=1.0, alpha=0.5, delta=0.1), COST, 1e4)
    with pytest.raises(TypeError, match="cost must be a CostModel"):
        optimal_allocation(PAPER_JOINT, {"dollars_per_annotation": 1.0}, 1e4)
    with pytest.raises(ValueError, match="budget"):
        optimal_allocation(PAPER_JOINT, COST, -5.0)
    with pytest.raises(ValueError, match="N_bounds"):
        optimal_allocation(PAPER_JOINT, COST, 1e4, N_bounds=(1e9, 1e6))
    with pytest.raises(ValueError, match="achieved_flops"):
        CostModel(achieved_flops=0.0)
    with pytest.raises(ValueError, match="dollars_per_annotation"):
        CostModel(dollars_per_annotation=-1.0)


def test_optimum_on_the_search_box_is_flagged():
    # compute nearly free: the law wants ever larger models, the box stops it
    cheap = CostModel(accelerator_dollars_per_hour=1e-6, queries_served=0.0, corpus_size=0.0)
    a = optimal_allocation(PAPER_JOINT, cheap, 1e5, N_bounds=(1e5, 1e9))
    assert "N upper bound" in a.at_bound and a.N == pytest.approx(1e9)
