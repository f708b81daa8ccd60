"""Usable laws only (SPEC 7): a law answers (budget, forecast, metric prediction, drawn curve)
only when it passes the checks of ``LawChecks``; otherwise one line says which check failed and
no number comes from it. Each "no answer" path is triggered by a small synthetic record set
through the public API (fit_study, write_report, the CLI), and one law that passes still answers.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from _cli import run_cli as _cli

from densescale.report import fit_study, write_report
from densescale.report.figures import plot_loss_vs_n
from densescale.scaling import JointLaw, LawChecks, ModelSizeLaw

SIZES = [512_128, 3_422_208, 13_266_176, 25_875_712, 41_000_000, 86_235_648]
MODEL = ModelSizeLaw(A=3.2e4, alpha=0.53, delta=0.04)
JOINT = JointLaw(A=3.6e4, B=7.1e3, alpha=0.56, beta=1.31, delta=0.03)
CHANCE = math.log(257)


def _slice(ces, *, sizes=SIZES, D=10_000, source="s", **extra) -> list[dict]:
    """One model-size slice: a record per (N, CE)."""
    return [
        {"model": f"m{n}", "N": n, "D": D, "source": source, "ce": float(c), **extra}
        for n, c in zip(sizes, ces)
    ]


def _base(sizes=SIZES) -> np.ndarray:
    return np.asarray(MODEL.predict(np.array(sizes, dtype=float)))


def _noisy(seed: int, scale: float) -> np.ndarray:
    return _base() * np.exp(scale * np.random.default_rng(seed).standard_normal(len(SIZES)))


def _model_fit(records, n_boot):
    fits = fit_study(records, n_boot=n_boot, seed=0)["s"]
    (o,) = fits.model_fits
    return fits, o


def _joint_records(noise: float, seed: int, source: str = "s", **extra) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "model": f"m{n}",
            "N": n,
            "D": d,
            "source": source,
            "ce": float(JOINT.predict(n, d) * np.exp(noise * rng.standard_normal())),
            "metrics": {"mrr@10": float(1 / (1 + np.exp(3 * (JOINT.predict(n, d) - 0.6))))},
            **extra,
        }
        for n in SIZES[:5]
        for d in (1000, 3000, 10_000, 30_000)
    ]


# ---------------------------------------------------------------- the checks themselves
def test_checks_and_their_documented_defaults():
    checks = LawChecks()
    assert (checks.min_r2, checks.min_points_over_params, checks.max_ci_decades) == (0.95, 1.5, 2.0)
    assert checks.forecast and not checks.require_intervals and checks.forecast_max_outside == 0.25
    assert checks.min_points(3) == 5 and checks.min_points(5) == 8  # never n <= p + 1
    with pytest.raises(ValueError, match="min_r2"):
        LawChecks(min_r2=1.5)
    with pytest.raises(TypeError, match="checks"):
        fit_study(_slice(_base()), checks={"min_r2": 0.9})


# ---------------------------------------------------------------- each "no answer" path
def test_r2_too_low_is_not_usable_and_says_so():
    fits, o = _model_fit(_slice(_noisy(6, 0.2)), n_boot=0)
    assert o.law is not None and o.usability.failed == ("r2",)
    assert o.usable_law is None and "R^2 = 0.93" in o.status and "< 0.95" in o.status
    text = fits.describe()
    line = next(x for x in text.splitlines() if "model-size at D = 10,000" in x)
    assert line.endswith(o.status) and "L(N) = (" not in line  # no constants, one line
    # the same law under a looser threshold passes: the checks are configurable
    looser = fit_study(_slice(_noisy(6, 0.2)), n_boot=0, checks=LawChecks(min_r2=0.9))["s"]
    assert looser.model_fits[0].usable


def test_parameter_on_its_bound_is_kept_for_the_record_but_answers_nothing(tmp_path):
    pure = [(3e4 / n) ** 0.5 for n in SIZES]  # no irreducible loss: delta runs to its bound
    records = _slice(pure)
    fits, o = _model_fit(records, n_boot=10)
    assert "bound" in o.usability.failed and not o.usable
    assert "delta at its lower bound" in o.status and "pure power law" in o.status
    path = write_report(records, tmp_path / "r", n_boot=10, fits={"s": fits})
    law = json.loads((tmp_path / "r" / "fits.json").read_text())["sources"]["s"]["model_size"][0]
    assert law["usable"] is False and "bound" in law["failed_checks"]
    assert set(law["params"]) == {"A", "alpha", "delta"} and "record" in law["params_status"]
    summary = path.read_text()
    assert "| 10,000 | 6 |" not in summary  # no table row of constants for it
    assert "- D = 10,000 (6 points): not usable: delta at its lower bound" in summary
    assert "- model-size law at D = 10,000: not usable" in summary  # no prediction from it


def test_too_few_points_is_never_usable_and_its_r2_is_not_shown(tmp_path):
    sizes = SIZES[:3]
    records = _slice(_base(sizes), sizes=sizes)  # 3 points, 3 parameters: R^2 = 1 by design
    fits, o = _model_fit(records, n_boot=10)
    assert o.law is not None and o.law.r2 == pytest.approx(1.0)
    assert o.usability.failed == ("points",) and not o.usability.evidence
    assert "3 points for 3 parameters (need >= 5)" in o.status
    assert "R^2" not in fits.describe()
    write_report(records, tmp_path / "r", n_boot=10, fits={"s": fits})
    law = json.loads((tmp_path / "r" / "fits.json").read_text())["sources"]["s"]["model_size"][0]
    assert law["r2_is_evidence"] is False and law["failed_checks"] == ["points"]
    assert "1.0000" not in (tmp_path / "r" / "summary.md").read_text().split("### Model-size")[1]


def test_huge_parameter_intervals_are_not_usable():
    flat = ModelSizeLaw(A=3.2e4, alpha=0.15, delta=0.01)  # the floor is far below every point
    ces = flat.predict(np.array(SIZES, dtype=float)) * np.exp(
        0.01 * np.random.default_rng(2).standard_normal(len(SIZES))
    )
    fits, o = _model_fit(_slice(ces), n_boot=40)
    assert o.law.r2 > 0.99 and o.usability.failed == ("intervals",)
    assert "95% interval wider than 2 decades: delta in [" in o.status
    assert "95% intervals:" not in fits.describe()  # an unusable law shows its reason only


def test_failed_forecast_is_not_usable_and_forecasts_nothing(tmp_path):
    kinked = _base().copy()
    kinked[-2:] *= 1.12  # the two largest models fall off the trend of the smaller ones
    records = _slice(kinked, metrics={"mrr@10": 0.3})
    fits, o = _model_fit(records, n_boot=40)
    assert o.law.r2 > 0.99 and o.usability.failed == ("forecast",)
    assert "forecast check failed: 2/2 held-out cell(s)" in o.status
    summary = write_report(records, tmp_path / "r", n_boot=40, fits={"s": fits}).read_text()
    predictions = summary.split("### What the laws predict", 1)[1].split("\n### ", 1)[0]
    assert "| model-size law" not in predictions  # no forecast row, no MRR@10 from it
    assert "- model-size law at D = 10,000: not usable: forecast check failed" in predictions


def test_describe_gives_the_failing_slice_its_own_reason():
    """A 1-size slice is skipped; the 6-size slice hits a bound: the line names the latter."""
    pure = [(3e4 / n) ** 0.5 for n in SIZES]
    records = _slice(pure) + _slice([0.9], sizes=SIZES[:1], D=1000)
    text = fit_study(records, n_boot=0)["s"].describe()
    line = next(x for x in text.splitlines() if x.startswith("  model-size"))
    assert line.startswith("  model-size at D = 10,000: not usable: delta at its lower bound")
    assert "skipped: 1 model size" not in line


# ---------------------------------------------------------------- budget answers
def test_unusable_joint_law_gives_no_budget_answer_anywhere(tmp_path):
    records = _joint_records(0.3, seed=3)  # R^2 ~0.5 and the floor on its bound
    fits = fit_study(records, n_boot=10, seed=0)["s"]
    assert not fits.joint.usable and fits.budget_law is None and fits.allocation is None
    assert fits.budget_note.startswith("no budget answer: the joint law (paper form) is not usable")
    text = fits.describe()
    assert "budget $" not in text and "  budget: no budget answer" in text
    path = write_report(records, tmp_path / "r", n_boot=10, fits={"s": fits})
    summary = path.read_text()
    assert "| with inference cost |" not in summary and "no budget answer" in summary
    assert not (tmp_path / "r" / "budget_s.png").exists()
    payload = json.loads((tmp_path / "r" / "fits.json").read_text())["sources"]["s"]
    assert payload["allocation"] is None and payload["joint"]["usable"] is False
    assert "params" in payload["joint"] and payload["joint"]["failed_checks"]


@pytest.fixture(scope="module")
def usable_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("usable")
    records = _joint_records(0.01, seed=0, num_passages=50_000, chance_ce=CHANCE)
    fits = fit_study(records, n_boot=20, seed=0)
    write_report(records, out / "r", n_boot=20, fits=fits)
    return out / "r", fits["s"], records


def test_usable_joint_law_answers_with_its_interval_and_extrapolation(usable_report):
    out, fits, _ = usable_report
    assert fits.joint.usable and fits.allocation is not None
    text = fits.describe()
    assert "95% intervals: A [" in text and "forecast of N = " in text
    budget = next(x for x in text.splitlines() if x.startswith("  budget $"))
    assert "predicted CE " in budget and budget.count("[") >= 1
    assert "beyond the largest fitted" in budget or "within the fitted range" in budget
    a = json.loads((out / "fits.json").read_text())["sources"]["s"]["allocation"]
    lo, hi = a["loss_interval"]
    assert lo <= a["loss"] <= hi and set(a["extrapolation"]) == {"N", "D"}
    assert a["extrapolation"]["N"] == pytest.approx(max(a["N"] / SIZES[4], 1.0))
    summary = (out / "summary.md").read_text()
    assert "| beyond the fitted sizes |" in summary and "| with inference cost |" in summary


def test_cost_model_takes_the_corpus_size_of_the_records(usable_report):
    out, fits, _ = usable_report
    assert fits.cost.corpus_size == 50_000 and "records" in fits.cost_sources["corpus_size"]
    assert "assumption" in fits.cost_sources["queries_served"]
    summary = (out / "summary.md").read_text()
    row = next(x for x in summary.splitlines() if x.startswith("| corpus_size |"))
    assert "50000" in row and "records" in row
    assert "assumption" in next(x for x in summary.splitlines() if x.startswith("| queries_served"))


# ---------------------------------------------------------------- figures
def _captured_axes(monkeypatch, fits, tmp_path):
    from densescale.report.figures import sizes

    seen = []
    monkeypatch.setattr(sizes, "save_figure", lambda fig, path: seen.append(fig))
    plot_loss_vs_n(fits, tmp_path / "n.png")
    (fig,) = seen
    return fig.axes[0]


def test_figure_draws_points_but_no_curve_of_an_unusable_law(monkeypatch, tmp_path):
    pure = [(3e4 / n) ** 0.5 for n in SIZES]
    fits = fit_study(_slice(pure, chance_ce=CHANCE), n_boot=0)["s"]
    ax = _captured_axes(monkeypatch, fits, tmp_path)
    curves = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 200]
    assert not curves  # points only
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("no curve: delta at its lower bound" in t for t in labels)


def test_figure_limits_come_from_data_and_yardsticks_not_curves(
    monkeypatch, tmp_path, usable_report
):
    _, fits, _ = usable_report
    ax = _captured_axes(monkeypatch, fits, tmp_path)
    assert [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 200]  # usable: curves drawn
    lo, hi = ax.get_ylim()
    ces = [c["ce"] for c in fits.metrics] + [CHANCE, 0.9 * CHANCE]
    assert lo == pytest.approx(min(ces) / 1.25) and hi == pytest.approx(max(ces) * 1.25)


# ---------------------------------------------------------------- the CLI
def test_cli_budget_with_the_paper_law_says_so_and_gives_its_extrapolation():
    r = _cli("budget", "50000")
    assert r.returncode == 0, r.stderr
    assert "the paper's published MS MARCO joint law (SPEC 1.4" in r.stdout
    assert "no parameter intervals" in r.stdout
    assert "x beyond the largest fitted, 8.62e+07" in r.stdout
    assert "queries_served = 1e+09 (assumption" in r.stdout


def test_cli_budget_from_fits_answers_only_from_a_usable_law(usable_report, tmp_path):
    out, _, _ = usable_report
    r = _cli("budget", "5000", "--fits", str(out / "fits.json"))
    assert r.returncode == 0, r.stderr
    assert "usable" in r.stdout and "95% intervals: A [" in r.stdout
    assert "corpus_size = 50,000 passages (from the records" in r.stdout
    answer = next(x for x in r.stdout.splitlines() if x.startswith("with inference cost"))
    assert "predicted CE " in answer and "[" in answer and "fitted" in answer

    bad = _joint_records(0.3, seed=3)
    write_report(bad, tmp_path / "bad", n_boot=5)
    r = _cli("budget", "5000", "--fits", str(tmp_path / "bad" / "fits.json"))
    assert r.returncode == 1
    (line,) = r.stdout.strip().splitlines()  # one line, no number from the law
    assert line.startswith("no budget answer for source 's'") and "not usable" in line
    assert "N = " not in line and "predicted CE" not in line


def test_cli_report_prints_the_checks_and_each_verdict(tmp_path):
    results = tmp_path / "study" / "results.jsonl"
    results.parent.mkdir()
    pure = [(3e4 / n) ** 0.5 for n in SIZES]
    rows = _slice(pure, source="bad") + _joint_records(0.01, seed=0, source="good")
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = _cli("report", str(results), "--n-boot", "10", "--no-curves")
    assert r.returncode == 0, r.stderr
    assert "law checks (SPEC 7" in r.stdout and "R^2 >= 0.95" in r.stdout
    assert "model-size at D = 10,000: not usable: delta at its lower bound" in r.stdout
    assert "95% intervals:" in r.stdout  # the good source's laws
