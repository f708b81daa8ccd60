"""Laws and their fits: formulas, recovery of known parameters, the paper's table, FitError."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from densescale.scaling import (
    ChinchillaLaw,
    DataSizeLaw,
    FitError,
    JointLaw,
    ModelSizeLaw,
    extrapolation_check,
    fit_data_law,
    fit_joint_law,
    fit_model_law,
)
from densescale.scaling import fitting as fitting_module

PYTHON_DIR = Path(__file__).resolve().parents[1] / "python"


def bert_n(layers: int, hidden: int) -> int:
    """SPEC 1.2: non-embedding parameters of a BERT encoder with a 768-d projection head."""
    return layers * (12 * hidden**2 + 13 * hidden) + (hidden**2 + hidden) + (768 * hidden + 768)


BERT_24 = np.array([bert_n(l, h) for l in (2, 4, 6, 8, 10, 12) for h in (128, 256, 512, 768)])
# Figure 1 of the paper (SPEC 1.4): Tiny, Mini, Small, Medium, Base on MS MARCO dev
FIG1_N = np.array([bert_n(2, 128), bert_n(4, 256), bert_n(4, 512), bert_n(8, 512), bert_n(12, 768)])
FIG1_CE = np.array([0.278, 0.119, 0.077, 0.074, 0.056])
PAPER_JOINT = JointLaw(A=3.6e4, B=7.1e3, alpha=0.56, beta=1.31, delta=0.03)


def test_import_does_not_pull_torch():
    code = (
        "import sys, densescale.scaling\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported before any plot'"
    )
    env = {**os.environ, "PYTHONPATH": str(PYTHON_DIR)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_bert_sizes_match_spec():
    assert FIG1_N.tolist() == [512128, 3422208, 13266176, 25875712, 86235648]


# ----------------------------------------------------------------------------- formulas


def test_predictions_match_the_formulas():
    n = np.array([1e6, 3e7, 1e9])
    d = np.array([1e3, 1e4, 1e6])
    m = ModelSizeLaw(A=3.22e4, alpha=0.53, delta=0.04)
    np.testing.assert_allclose(m.predict(n), (3.22e4 / n) ** 0.53 + 0.04, rtol=1e-12)
    s = DataSizeLaw(B=3.49e3, beta=1.05, delta=0.04)
    np.testing.assert_allclose(s.predict(d), (3.49e3 / d) ** 1.05 + 0.04, rtol=1e-12)
    j = PAPER_JOINT
    ref = ((3.6e4 / n) ** (0.56 / 1.31) + 7.1e3 / d) ** 1.31 + 0.03
    np.testing.assert_allclose(j.predict(n, d), ref, rtol=1e-12)
    c = ChinchillaLaw(A=400.0, B=900.0, alpha=0.34, beta=0.28, delta=1.7)
    np.testing.assert_allclose(c.predict(n, d), 1.7 + 400 / n**0.34 + 900 / d**0.28, rtol=1e-12)
    assert isinstance(m.predict(1e6), float)
    # stable far outside the data: no overflow for tiny N, the floor for huge N
    assert np.isfinite(m.predict(1.0)) and m.predict(1e30) == pytest.approx(0.04)


def test_joint_law_limits_and_inverses():
    j = PAPER_JOINT
    assert j.predict(1e8, 1e30) == pytest.approx(j.at_infinite_data().predict(1e8), rel=1e-9)
    assert j.predict(1e30, 1e4) == pytest.approx(j.at_infinite_model().predict(1e4), rel=1e-9)
    target = float(j.predict(2e7, 5e4))
    assert j.D_for_loss(target, 2e7) == pytest.approx(5e4, rel=1e-9)
    assert j.N_for_loss(target, 5e4) == pytest.approx(2e7, rel=1e-9)
    assert j.N_for_loss(0.02, 5e4) == np.inf  # below delta: out of reach
    assert j.N_for_loss(float(j.at_infinite_model().predict(5e4)) * 0.99, 5e4) == np.inf
    m = ModelSizeLaw(A=3.22e4, alpha=0.53, delta=0.04)
    assert m.N_for_loss(m.predict(1e7)) == pytest.approx(1e7, rel=1e-9)
    s = DataSizeLaw(B=3.49e3, beta=1.05, delta=0.04)
    assert s.D_for_loss(s.predict(1e5)) == pytest.approx(1e5, rel=1e-9)
    c = ChinchillaLaw(A=400.0, B=900.0, alpha=0.34, beta=0.28, delta=1.7)
    t = float(c.predict(1e8, 1e9))
    assert c.N_for_loss(t, 1e9) == pytest.approx(1e8, rel=1e-8)
    assert c.D_for_loss(t, 1e8) == pytest.approx(1e9, rel=1e-8)


@pytest.mark.parametrize(
    "law",
    [
        ModelSizeLaw(A=3.22e4, alpha=0.53, delta=0.04),
        DataSizeLaw(B=3.49e3, beta=1.05, delta=0.04),
        PAPER_JOINT,
        ChinchillaLaw(A=400.0, B=900.0, alpha=0.34, beta=0.28, delta=1.7),
    ],
)
def test_log_space_jacobian_matches_finite_differences(law):
    log_n = np.log(np.geomspace(1e5, 1e9, 7))
    log_d = np.log(np.geomspace(1e2, 1e6, 7))
    theta = law._theta()
    _, jac = law._log_predict(theta, log_n, log_d)
    eps = 1e-6
    for k in range(len(theta)):
        step = np.zeros_like(theta)
        step[k] = eps
        hi, _ = law._log_predict(theta + step, log_n, log_d)
        lo, _ = law._log_predict(theta - step, log_n, log_d)
        np.testing.assert_allclose(jac[:, k], (hi - lo) / (2 * eps), rtol=1e-5, atol=1e-8)
    back = type(law)._from_theta(theta).params
    assert all(back[k] == pytest.approx(v, rel=1e-12) for k, v in law.params.items())


def test_laws_are_frozen_and_validated():
    m = ModelSizeLaw(A=1.0, alpha=0.5, delta=0.1)
    with pytest.raises(AttributeError):
        m.alpha = 0.3  # type: ignore[misc]
    with pytest.raises(ValueError, match="delta"):
        ModelSizeLaw(A=1.0, alpha=0.5, delta=-0.1)
    with pytest.raises(ValueError, match="N must be > 0"):
        m.predict([1.0, 0.0])
    assert m.params == {"A": 1.0, "alpha": 0.5, "delta": 0.1}
    assert m.r2 is None and m.ci == {} and m.residuals is None


# ----------------------------------------------------------------------------- paper's table


def test_figure1_ms_marco_points_recover_model_size_constants():
    """The five Figure-1 points give the paper's model-size law within the readings' precision.

    Tolerance: the CE values are read off a figure to +-0.005 (SPEC 1.4). Refitting with every
    reading moved by -0.005/0/+0.005 (3^5 combinations) spans alpha in about [0.47, 0.71] and
    delta in [0.029, 0.055], so alpha and delta can only be pinned to about +-0.1 and +-0.01:
    those are the tolerances. The paper's (0.53, 0.04) must also lie inside our bootstrap
    intervals, and the two laws must agree to 0.01 CE over the sizes measured (SPEC 1.4).
    """
    law = fit_model_law(FIG1_N, FIG1_CE, n_boot=60, seed=0)
    assert abs(law.alpha - 0.53) <= 0.1
    assert abs(law.delta - 0.04) <= 0.01
    assert law.ci["alpha"][0] <= 0.53 <= law.ci["alpha"][1]
    assert law.ci["delta"][0] <= 0.04 <= law.ci["delta"][1]
    assert law.r2 >= 0.99  # paper: 0.991
    # Medium (0.074) sits above the curve by ~0.007 (it barely improves on Small): within the
    # 0.01 CE to which the paper's table can be compared (SPEC 1.4)
    assert np.max(np.abs(law.residuals)) <= 0.01
    paper = ModelSizeLaw(A=3.22e4, alpha=0.53, delta=0.04)
    grid = np.geomspace(FIG1_N[0], FIG1_N[-1], 50)
    assert np.max(np.abs(law.predict(grid) - paper.predict(grid))) <= 0.01


def _paper_joint_points(seed: int, noise: float = 0.01):
    d_values = np.array([1e3, 3e3, 1e4, 3e4, 1e5, 5e5])
    n, d = (a.ravel() for a in np.meshgrid(BERT_24, d_values))
    rng = np.random.default_rng(seed)
    loss = PAPER_JOINT.predict(n, d) * (1 + noise * rng.standard_normal(n.size))
    return n, d, loss


def test_published_joint_law_recovered_within_bootstrap_intervals():
    n, d, loss = _paper_joint_points(seed=1)
    law = fit_joint_law(n, d, loss, n_boot=60, seed=0)
    for name in ("alpha", "beta"):
        lo, hi = law.ci[name]
        assert lo <= PAPER_JOINT.params[name] <= hi, (name, law.params[name], law.ci[name])
        assert hi - lo < 0.1 * PAPER_JOINT.params[name]  # and the intervals are informative
    assert law.delta == pytest.approx(0.03, rel=0.1)
    assert law.r2 > 0.999


# ----------------------------------------------------------------------------- recovery


def test_model_law_recovery_from_noisy_points():
    true = ModelSizeLaw(A=5e4, alpha=0.45, delta=0.08)
    n = np.repeat(BERT_24, 2)
    rng = np.random.default_rng(2)
    loss = true.predict(n) * (1 + 0.01 * rng.standard_normal(n.size))
    law = fit_model_law(n, loss, n_boot=40, seed=3)
    assert law.alpha == pytest.approx(0.45, rel=0.1)
    assert law.delta == pytest.approx(0.08, rel=0.1)
    for name in ("A", "alpha", "delta"):
        lo, hi = law.ci[name]
        assert lo <= law.params[name] <= hi
    assert law.ci["alpha"][0] <= 0.45 <= law.ci["alpha"][1]
    assert law.residuals.shape == (n.size,)
    assert law.r2 > 0.99


def test_data_law_recovery_from_noisy_points():
    true = DataSizeLaw(B=3.49e3, beta=1.05, delta=0.04)
    d = np.geomspace(1e3, 1e6, 12)
    rng = np.random.default_rng(4)
    loss = true.predict(d) * (1 + 0.01 * rng.standard_normal(d.size))
    law = fit_data_law(d, loss, n_boot=40, seed=0)
    assert law.beta == pytest.approx(1.05, rel=0.05)
    assert law.B == pytest.approx(3.49e3, rel=0.1)
    assert law.delta == pytest.approx(0.04, rel=0.1)
    assert law.ci["beta"][0] <= 1.05 <= law.ci["beta"][1]


def test_chinchilla_form_recovery_from_noisy_points():
    true = ChinchillaLaw(A=60.0, B=40.0, alpha=0.35, beta=0.45, delta=0.05)
    n, d = (a.ravel() for a in np.meshgrid(BERT_24[::2], np.geomspace(1e3, 1e6, 6)))
    rng = np.random.default_rng(5)
    loss = true.predict(n, d) * (1 + 0.005 * rng.standard_normal(n.size))
    law = fit_joint_law(n, d, loss, form="chinchilla", n_boot=30, seed=0)
    assert isinstance(law, ChinchillaLaw)
    assert law.alpha == pytest.approx(0.35, rel=0.1)
    assert law.beta == pytest.approx(0.45, rel=0.1)
    assert law.delta == pytest.approx(0.05, rel=0.15)
    assert law.ci["beta"][0] <= 0.45 <= law.ci["beta"][1]


def test_bootstrap_is_seeded_and_pairs_mode_runs():
    n, d, loss = _paper_joint_points(seed=6)
    a = fit_joint_law(n, d, loss, n_boot=10, seed=7)
    b = fit_joint_law(n, d, loss, n_boot=10, seed=7)
    assert a.ci == b.ci and a.fit.n_boot == 10
    p = fit_model_law(FIG1_N, FIG1_CE, n_boot=10, seed=0, bootstrap="pairs")
    assert set(p.ci) == {"A", "alpha", "delta"}
    assert fit_model_law(FIG1_N, FIG1_CE, n_boot=0).ci == {}


def test_extrapolation_check_predicts_the_largest_sizes():
    true = ModelSizeLaw(A=5e4, alpha=0.45, delta=0.08)
    rng = np.random.default_rng(8)
    loss = true.predict(BERT_24) * (1 + 0.005 * rng.standard_normal(BERT_24.size))
    check = extrapolation_check(loss, N=BERT_24)
    assert check.holdout == "N" and check.held_out_values.tolist() == [BERT_24.max()]
    assert check.mean_abs_relative_error < 0.03
    np.testing.assert_allclose(
        check.relative_error, (check.predicted - check.observed) / check.observed
    )
    n, d, joint_loss = _paper_joint_points(seed=9)
    joint = extrapolation_check(joint_loss, N=n, D=d, holdout="D")
    assert joint.D.tolist() == [5e5] * 24 and joint.max_abs_relative_error < 0.05
    # a law that does not hold is caught: a loss that stops improving at large N
    bent = np.where(BERT_24 > 5e7, true.predict(5e7) * 1.5, loss)
    assert extrapolation_check(bent, N=BERT_24).mean_abs_relative_error > 0.2


# ----------------------------------------------------------------------------- errors


def test_fit_error_when_the_floor_vanishes():
    # a pure power law: the irreducible term runs to its lower bound
    n = np.geomspace(1e5, 1e9, 8)
    loss = (3e4 / n) ** 0.5
    with pytest.raises(FitError, match="delta .* lower bound") as info:
        fit_model_law(n, loss, n_boot=0)
    assert isinstance(info.value.law, ModelSizeLaw)
    assert info.value.law.r2 > 0.99  # the best fit is still reported


def test_fit_error_when_the_loss_does_not_fall_with_size():
    n = np.geomspace(1e5, 1e8, 6)
    with pytest.raises(FitError, match="no scaling"):
        fit_model_law(n, [0.5, 0.52, 0.55, 0.6, 0.61, 0.7], n_boot=0)


def test_fit_error_when_the_optimiser_does_not_converge(monkeypatch):
    real = fitting_module._minimize

    def stalled(problem, start):
        res = real(problem, start)
        res.success = False
        res.jac = np.ones_like(res.x)  # a large gradient: not at an optimum
        return res

    monkeypatch.setattr(fitting_module, "_minimize", stalled)
    with pytest.raises(FitError, match="did not converge"):
        fit_model_law(FIG1_N, FIG1_CE, n_boot=0)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: fit_model_law([1e6, 1e7], [0.3, 0.2]), ValueError, "at least 3 distinct"),
        (
            lambda: fit_model_law([1e6, 1e6, 1e6, 1e7], [0.3, 0.3, 0.3, 0.2]),
            ValueError,
            "at least 3 distinct",
        ),
        (lambda: fit_model_law(FIG1_N, [0.2, 0.1, -0.1, 0.05, 0.04]), ValueError, "L must be > 0"),
        (lambda: fit_model_law(FIG1_N, [0.2, 0.1, 0.0, 0.05, 0.04]), ValueError, "L must be > 0"),
        (lambda: fit_model_law(FIG1_N, [0.2, 0.1, np.nan, 0.05, 0.04]), ValueError, "NaN"),
        (lambda: fit_model_law(FIG1_N, FIG1_CE[:4]), ValueError, "same length"),
        (lambda: fit_model_law([0, 1e6, 1e7], [0.3, 0.2, 0.1]), ValueError, "N must be > 0"),
        (lambda: fit_model_law("1e6", FIG1_CE), TypeError, "N must be a sequence"),
        (lambda: fit_model_law(FIG1_N, FIG1_CE, n_boot=-1), ValueError, "n_boot"),
        (lambda: fit_model_law(FIG1_N, FIG1_CE, ci_level=1.5), ValueError, "ci_level"),
        (lambda: fit_model_law(FIG1_N, FIG1_CE, bootstrap="jackknife"), ValueError, "bootstrap"),
        (lambda: fit_data_law([1e3, 1e4], [1.0, 0.5]), ValueError, "at least 3 distinct"),
        (
            lambda: fit_joint_law([1e6] * 6, np.geomspace(1e3, 1e5, 6), np.ones(6)),
            ValueError,
            "2 distinct values of N",
        ),
        (
            lambda: fit_joint_law([1e6, 1e7, 1e6, 1e7], [1e3, 1e3, 1e4, 1e4], np.ones(4)),
            ValueError,
            "at least 5 distinct",
        ),
        (lambda: fit_joint_law(FIG1_N, FIG1_N, FIG1_CE, form="additive"), ValueError, "form"),
        (lambda: extrapolation_check(FIG1_CE), ValueError, "N, D or both"),
        (
            lambda: extrapolation_check(FIG1_CE, N=FIG1_N, n_holdout=3),
            ValueError,
            "at least 3 distinct",
        ),
        (lambda: extrapolation_check(FIG1_CE, N=FIG1_N, holdout="D"), ValueError, "holdout"),
    ],
)
def test_bad_input_is_rejected_before_fitting(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_describe_shows_the_fitted_formula():
    law = fit_model_law(FIG1_N, FIG1_CE, n_boot=0)
    text = law.describe()
    assert text.startswith("L(N) = (") and "R^2" in text and str(law) == text
    assert list(itertools.islice(law.params, 3)) == ["A", "alpha", "delta"]
