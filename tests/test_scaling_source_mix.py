"""A budget spent on a mix of annotation sources: the answer of densescale.scaling.source_mix
checked against a brute-force grid written from the formulas (fixed N and with a joint law),
against the single-source budget answer, and through ``densescale budget --price`` on a report
whose laws are known (only usable laws answer; an unusable source gets one line, no number)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _cli import run_cli
from test_report_exchange import _records

from densescale.report import fit_study, write_report
from densescale.scaling import CostModel, DataSizeLaw, JointLaw, fit_data_law, optimal_allocation
from densescale.scaling.source_mix import effective_pairs, mix_loss, optimal_mix

HUMAN = DataSizeLaw(B=2000.0, beta=0.8, delta=0.3)
ICT = DataSizeLaw(B=20000.0, beta=0.6, delta=0.35)  # cheap, weaker, floor above human's
CROP = DataSizeLaw(B=50000.0, beta=0.5, delta=0.5)
LAWS = {"human": HUMAN, "ict": ICT, "crop": CROP}
PRICES = {"human": 1.0, "ict": 0.02, "crop": 0.01}
N0 = 17_984
# training costs something per pair (10 epochs of 565 tokens at N0), inference a fixed sum
COST = CostModel(achieved_flops=1e8, corpus_size=1e5, queries_served=1e6)


def _h(law: DataSizeLaw, d: np.ndarray) -> np.ndarray:
    """Effective human pairs, written out: B_R / (L_S(D) - delta_R)^(1/beta_R)."""
    gap = (law.B / d) ** law.beta + law.delta - HUMAN.delta
    return np.where(gap > 0, HUMAN.B / np.maximum(gap, 1e-300) ** (1 / HUMAN.beta), np.inf)


def _brute_fixed_n(budget: float, step: int = 300):
    """Every share vector on a 1/step lattice; the pairs it buys at N0; its loss and argmin."""
    dpf = COST.dollars_per_flop
    per_pair_train = dpf * 6 * N0 * COST.train_tokens_per_example * COST.epochs
    money = budget - dpf * 2 * N0 * COST.inference_tokens
    names = list(PRICES)
    i, j = np.meshgrid(np.arange(step + 1), np.arange(step + 1))
    keep = i + j <= step
    shares = np.stack([i[keep], j[keep], step - i[keep] - j[keep]], axis=1) / step
    d = shares * money / (np.array([PRICES[s] for s in names]) + per_pair_train)
    with np.errstate(divide="ignore"):
        own = np.where(d > 0, (np.array([[LAWS[s].B for s in names]]) / d), np.inf)
        own = own ** np.array([LAWS[s].beta for s in names]) + [LAWS[s].delta for s in names]
        eff = sum(np.where(d[:, k] > 0, _h(LAWS[s], d[:, k]), 0.0) for k, s in enumerate(names))
        loss = np.minimum((HUMAN.B / eff) ** HUMAN.beta + HUMAN.delta, own.min(axis=1))
    k = int(np.argmin(loss))
    return float(loss[k]), dict(zip(names, d[k]))


@pytest.mark.parametrize("budget", [800.0, 3000.0, 20000.0])
def test_fixed_n_mix_matches_a_brute_force_grid(budget):
    a = optimal_mix(LAWS, PRICES, COST, budget, N=N0)
    brute_loss, brute_pairs = _brute_fixed_n(budget)
    assert a.N == N0 and a.N_fixed
    assert a.loss <= brute_loss + 1e-9  # never worse than the lattice
    assert a.loss == pytest.approx(brute_loss, rel=2e-3)
    spent = sum(a.annotation.values()) + a.training + a.inference
    assert spent == pytest.approx(budget, rel=1e-6) and a.total == pytest.approx(spent)
    money = sum(a.annotation.values())
    for s, price in PRICES.items():  # the same mix, up to the lattice's resolution
        brute_share = price * brute_pairs[s] / money
        assert a.shares[s] == pytest.approx(brute_share, abs=0.03), (s, a.shares, brute_pairs)
    np.testing.assert_allclose(
        a.effective_pairs, sum(_h(LAWS[s], v) if v > 0 else 0 for s, v in a.pairs.items())
    )


def test_mix_beats_every_single_source_and_buys_the_cheap_source_first():
    a = optimal_mix(LAWS, PRICES, COST, 3000.0, N=N0)
    for s, price in PRICES.items():
        alone = optimal_mix(LAWS, {s: price}, COST, 3000.0, N=N0)
        assert a.loss <= alone.loss + 1e-12
    assert a.pairs["ict"] > 0  # at 1/50 of the price, ICT is worth buying at this budget
    # a free budget's worth of human pairs beats ICT's floor: at a large budget humans come in
    rich = optimal_mix(LAWS, PRICES, COST, 1e6, N=N0)
    assert rich.pairs["human"] > 0 and rich.loss < ICT.delta


def test_joint_law_mix_matches_a_brute_force_grid_over_n_and_shares():
    joint = JointLaw(A=3e4, B=2000.0, alpha=0.6, beta=0.8, delta=0.3)
    laws = {"human": HUMAN, "ict": ICT}
    prices = {"human": 1.0, "ict": 0.02}
    budget = 5000.0
    a = optimal_mix(laws, prices, COST, budget, N=N0, joint=joint, N_bounds=(1e3, 1e8))
    assert not a.N_fixed and a.at_bound == ""
    dpf = COST.dollars_per_flop
    n = np.geomspace(1e3, 1e8, 300)[:, None]
    money = budget - dpf * 2 * n * COST.inference_tokens
    per_pair_train = dpf * 6 * n * COST.train_tokens_per_example * COST.epochs
    share = np.linspace(0, 1, 401)[None, :]  # of human
    human, ict = (
        share * money / (1.0 + per_pair_train),
        (1 - share) * money / (0.02 + per_pair_train),
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        eff = human + np.where(ict > 0, _h(ICT, ict), 0.0)
        loss = ((joint.A / n) ** (joint.alpha / joint.beta) + joint.B / eff) ** joint.beta
    best = float(np.nanmin(np.where(money > 0, loss + joint.delta, np.inf)))
    assert a.loss <= best + 1e-9 and a.loss == pytest.approx(best, rel=2e-3)


def test_one_source_with_a_joint_law_is_the_single_source_budget_answer():
    joint = JointLaw(A=3e4, B=2000.0, alpha=0.6, beta=0.8, delta=0.3)
    cost = CostModel(dollars_per_annotation=0.5, achieved_flops=1e8, corpus_size=1e5)
    box = (1e3, 1e8)
    mix = optimal_mix(
        {"human": HUMAN}, {"human": 0.5}, cost, 4000.0, N=N0, joint=joint, N_bounds=box
    )
    one = optimal_allocation(joint, cost, 4000.0, N_bounds=box, D_bounds=(1.0, 1e12))
    assert mix.loss == pytest.approx(one.loss, rel=1e-5)
    assert mix.N == pytest.approx(one.N, rel=2e-2) and mix.pairs["human"] == pytest.approx(
        one.D, rel=2e-2
    )


def test_mix_loss_and_effective_pairs_are_the_stated_formulas():
    d = np.array([0.0, 500.0, 5e4])
    np.testing.assert_allclose(effective_pairs(HUMAN, ICT, d), [0.0, *_h(ICT, d[1:])])
    np.testing.assert_allclose(effective_pairs(HUMAN, HUMAN, d), d)
    # ICT far below human's floor? no: ICT's floor is above it, so h stays finite
    loss = mix_loss(LAWS, {"human": 1000.0, "ict": 2e4})
    assert float(loss) == pytest.approx(float(HUMAN.predict(1000.0 + _h(ICT, 2e4))))
    better = DataSizeLaw(B=100.0, beta=0.8, delta=0.1)  # below human's floor at large D
    laws = {"human": HUMAN, "llm": better}
    assert np.isinf(effective_pairs(HUMAN, better, 1e6))
    assert float(mix_loss(laws, {"human": 10.0, "llm": 1e6})) == pytest.approx(better.predict(1e6))


def test_interval_comes_from_the_bootstraps_and_covers_the_point():
    rng = np.random.default_rng(0)
    sizes = np.array([1000, 2000, 4000, 8000, 16000, 32000])
    fitted = {
        s: fit_data_law(
            sizes, law.predict(sizes) * np.exp(0.01 * rng.standard_normal(6)), n_boot=60
        )
        for s, law in (("human", HUMAN), ("ict", ICT))
    }
    a = optimal_mix(fitted, {"human": 1.0, "ict": 0.02}, COST, 3000.0, N=N0)
    lo, hi = a.interval
    assert lo < a.loss < hi and hi / lo < 1.5
    truth = float(mix_loss(LAWS, {s: a.pairs[s] for s in ("human", "ict")}))
    assert lo * 0.97 <= truth <= hi * 1.03
    assert a.extrapolation["ict"] > 1.0  # it buys more ICT than was fitted: says how far
    assert optimal_mix(LAWS, {"ict": 0.02}, COST, 3000.0, N=N0).interval is None


def test_bad_arguments_are_named():
    with pytest.raises(KeyError, match="without a usable data-size law"):
        optimal_mix(LAWS, {"llm": 1.0}, COST, 100.0, N=N0)
    with pytest.raises(KeyError, match="reference source 'human'"):
        optimal_mix({"ict": ICT}, {"ict": 1.0}, COST, 100.0, N=N0)
    with pytest.raises(ValueError, match="price of ict"):
        optimal_mix(LAWS, {"ict": -1.0}, COST, 100.0, N=N0)
    with pytest.raises(ValueError, match=r"\['ict'\] cost nothing per pair"):
        optimal_mix(LAWS, {"ict": 0.0}, CostModel(train_examples=1e3), 100.0, N=N0)
    with pytest.raises(ValueError, match="buys no pair"):
        optimal_mix(LAWS, PRICES, COST, 1e-3, N=N0)
    with pytest.raises(ValueError, match="N_bounds"):
        optimal_mix(LAWS, PRICES, COST, 100.0, N=N0, joint=JointLaw(1, 1, 1, 1, 0.1))


# ---------------------------------------------------------------- through the CLI
@pytest.fixture(scope="module")
def report(tmp_path_factory):
    sizes = [1000, 2000, 4000, 8000, 16000, 32000, 64000]
    records = (
        _records("human", HUMAN, sizes, seed=1)
        # a curve whose floor the fit pins down (usable); below human's floor at large D
        + _records("ict", DataSizeLaw(B=6000.0, beta=0.7, delta=0.25), sizes, seed=2)
        + _records("crop", CROP, sizes[:3], seed=3)  # 3 points: never usable
    )
    out = tmp_path_factory.mktemp("mix") / "r"
    write_report(records, out, n_boot=60, fits=fit_study(records, n_boot=60, seed=0))
    return out / "fits.json"


def test_cli_budget_with_prices_answers_from_usable_laws_only(report):
    payload = json.loads(report.read_text())
    assert payload["sources"]["ict"]["data_size"][0]["bootstrap"]  # what the answer reads back
    r = run_cli(
        "budget", "3000", "--fits", str(report), "--price", "human=1", "--price", "ict=0.02",
        "--price", "crop=0.01", "--achieved-flops", "1e8",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"mixed sources: data-size laws at N = {N0:,}")
    crop = [x for x in lines if x.strip().startswith("crop:")]
    # three sizes, two of them worse than chance (left out of the fits): one line, no number
    assert crop[0].strip().startswith("crop: not used: the data-size law at N = 17,984 ")
    assert "not fitted: skipped" in crop[0] and all("pairs" not in x for x in crop)
    answer = next(x for x in lines if x.startswith("with inference cost:"))
    assert "N = 17,984 (fixed: " in answer and "predicted CE " in answer and "[" in answer
    assert "chance 5.549" in answer
    ict = [x for x in lines if x.strip().startswith("ict:") and "pairs (" in x]
    assert ict and "human pairs" in ict[0] and ("outside" in ict[0] or "within" in ict[0])
    # the same answer the module gives from the laws read back
    loss = float(answer.split("predicted CE ")[1].split()[0])
    assert 0.3 < loss < 1.5


def test_cli_price_errors_name_the_argument(report):
    r = run_cli("budget", "3000", "--fits", str(report), "--price", "human")
    assert r.returncode != 0 and "--price 'human': expected SOURCE=DOLLARS_PER_PAIR" in r.stderr
    r = run_cli("budget", "3000", "--price", "human=1")
    assert r.returncode != 0 and "--price needs --fits" in r.stderr
    r = run_cli("budget", "3000", "--fits", str(report), "--price", "human=1", "--plot", "x.png")
    assert r.returncode != 0 and "--plot and --source answer for one source" in r.stderr
    r = run_cli("budget", "3000", "--fits", str(report), "--price", "human=1", "--price", "foo=1")
    assert r.returncode != 0 and "'foo' is not a source of" in r.stderr and "ict" in r.stderr
    r = run_cli("budget", "3000", "--fits", str(report), "--price", "crop=0.01")
    assert r.returncode == 1
    assert "no priced source has a usable data-size law" in r.stdout
    assert "predicted CE" not in r.stdout


def test_cli_without_a_usable_human_law_says_why_in_one_line(tmp_path):
    sizes = [1000, 2000, 4000, 8000]  # 4 points for 3 parameters: never usable
    records = _records("human", HUMAN, sizes, seed=1) + _records("ict", ICT, sizes, seed=2)
    write_report(records, tmp_path / "r", n_boot=20, fits=fit_study(records, n_boot=20))
    r = run_cli("budget", "3000", "--fits", str(tmp_path / "r/fits.json"), "--price", "ict=0.02")
    assert r.returncode == 1, r.stderr
    line, ict, *_ = r.stdout.splitlines()  # one line for the reference, one per priced source
    assert line.startswith("no mixed-source answer (") and "the human data-size law at N = " in line
    assert "not usable: 4 points for 3 parameters" in line
    assert ict.strip().startswith("ict: not used: the data-size law at N = ")
    assert "is not usable: " in ict and "predicted CE" not in r.stdout
