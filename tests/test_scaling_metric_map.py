"""The CE-to-ranking-metric map: recovered from noisy cells, monotone, with bands."""

from __future__ import annotations

import numpy as np
import pytest

from densescale.scaling import MetricMap, fit_metric_map


def _logistic(ce, c, b):
    return 1.0 / (1.0 + np.exp(b * (ce - c)))


def test_logistic_map_recovered_from_noisy_cells():
    rng = np.random.default_rng(0)
    ce = np.sort(rng.uniform(0.05, 5.5, 30))
    mrr = np.clip(_logistic(ce, 1.2, 2.5) + 0.01 * rng.standard_normal(30), 0, 1)
    m = fit_metric_map(ce, mrr, metric="mrr@10", n_boot=100, seed=0)
    assert isinstance(m, MetricMap) and m.kind == "logistic"
    assert m.params["c"] == pytest.approx(1.2, abs=0.05)
    assert m.params["b"] == pytest.approx(2.5, rel=0.1)
    assert m.rmse < 0.015
    grid = np.linspace(0, 6, 50)
    lo, hi = m.band(grid)
    truth = _logistic(grid, 1.2, 2.5)
    assert np.all(lo <= hi)
    assert np.mean((lo - 0.005 <= truth) & (truth <= hi + 0.005)) > 0.9
    v, vlo, vhi = m.interval(1.0, 0.9, 1.1)  # a CE with its own interval widens the band
    assert vlo < m.band(1.0)[0] and vhi > m.band(1.0)[1] and vlo < v < vhi
    assert "c = 1.2" in m.describe()


def test_isotonic_map_chosen_for_a_step():
    # a jump in ranking quality below a threshold (the paper reports one near 0.25 nats)
    rng = np.random.default_rng(1)
    ce = np.sort(rng.uniform(0.05, 1.0, 40))
    ndcg = np.where(ce < 0.25, 0.62, 0.18) + 0.01 * rng.standard_normal(40)
    m = fit_metric_map(ce, np.clip(ndcg, 0, 1), metric="ndcg@10", n_boot=50)
    assert m.kind == "isotonic"
    assert m.loo_rmse["isotonic"] < 0.8 * m.loo_rmse["logistic"]
    pred = m.predict(np.array([0.1, 0.5]))
    assert pred[0] == pytest.approx(0.62, abs=0.02) and pred[1] == pytest.approx(0.18, abs=0.02)
    x = np.linspace(0, 1.2, 300)
    assert np.all(np.diff(m.predict(x)) <= 1e-12)  # non-increasing everywhere
    forced = fit_metric_map(ce, np.clip(ndcg, 0, 1), kind="logistic", n_boot=0)
    assert forced.kind == "logistic" and forced.band(0.3) is None


def test_isotonic_pools_violators():
    ce = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    y = np.array([0.5, 0.6, 0.4, 0.3, 0.35])  # two violations of monotonicity
    m = fit_metric_map(ce, y, kind="isotonic", n_boot=0)
    assert m.params["knots_value"] == pytest.approx([0.55, 0.55, 0.4, 0.325, 0.325])


@pytest.mark.parametrize(
    "args, error, match",
    [
        (([0.1, 0.2], [0.5, 0.4]), ValueError, "at least 3 cells"),
        (([0.1, 0.1, 0.1], [0.5, 0.4, 0.3]), ValueError, "2 distinct CE"),
        (([0.1, 0.2, 0.3], [0.5, 1.4, 0.3]), ValueError, r"values must be finite and in \[0, 1\]"),
        (([0.1, -0.2, 0.3], [0.5, 0.4, 0.3]), ValueError, "ce must be finite and >= 0"),
        (([0.1, 0.2, 0.3], [0.5, 0.4]), ValueError, "same length"),
    ],
)
def test_bad_input(args, error, match):
    with pytest.raises(error, match=match):
        fit_metric_map(*args)
    with pytest.raises(ValueError, match="kind"):
        fit_metric_map([0.1, 0.2, 0.3], [0.5, 0.4, 0.3], kind="spline")
