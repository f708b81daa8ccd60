"""The exchange rate between annotation sources (the study's third question): pairs of a source
that reach the CE of D human pairs, at one model size, with a bootstrap interval; recovered from
synthetic records whose laws are known, through the public API (fit_study, write_report), with
the "never reaches" and "law not usable" paths."""

from __future__ import annotations

import json

import numpy as np
import pytest

from densescale.report import fit_study, write_report
from densescale.scaling import DataSizeLaw, fit_data_law
from densescale.scaling.exchange import crossings, effective_data, exchange_rate, pairs_to_match

HUMAN = DataSizeLaw(B=2000.0, beta=0.8, delta=0.3)
WORSE = DataSizeLaw(B=6000.0, beta=0.7, delta=0.25)  # needs ~2.6-2.8x the pairs
FLOOR = DataSizeLaw(B=3000.0, beta=0.8, delta=0.6)  # its floor sits above human's large-D CE
SIZES = [1000, 2000, 4000, 8000, 16000, 32000, 64000]
N = 17_984


def _records(source: str, law: DataSizeLaw, sizes=SIZES, noise=0.01, seed=0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "model": "L1-H32",
            "N": N,
            "D": d,
            "source": source,
            "ce": float(law.predict(d) * np.exp(noise * rng.standard_normal())),
            "chance_ce": float(np.log(257)),
        }
        for d in sizes
    ]


@pytest.fixture(scope="module")
def study():
    records = (
        _records("human", HUMAN, seed=1)
        + _records("human-noise0.5", WORSE, seed=2)
        + _records("ict", FLOOR, seed=3)
        + _records("crop", WORSE, sizes=SIZES[:3], seed=4)  # 3 points: never usable
    )
    return records, fit_study(records, n_boot=100, seed=0)


# ---------------------------------------------------------------- the maths
def test_pairs_to_match_is_the_closed_form_and_inverts():
    d = np.array([1000.0, 5000.0])
    expected = WORSE.B / (HUMAN.predict(d) - WORSE.delta) ** (1 / WORSE.beta)
    np.testing.assert_allclose(pairs_to_match(HUMAN, WORSE, d), expected, rtol=1e-12)
    # the effective human data of those pairs is the D we started from
    back = effective_data(HUMAN, WORSE, expected)
    np.testing.assert_allclose(back.pairs, d, rtol=1e-9)
    assert not back.has_intervals and back.n_draws == 0  # laws without bootstrap: no interval
    # a source never reaches a loss at or below its floor
    assert np.isinf(pairs_to_match(HUMAN, FLOOR, 1e6))
    with pytest.raises(TypeError, match="source must be a DataSizeLaw"):
        exchange_rate(HUMAN, "ict", [1000])
    with pytest.raises(ValueError, match="D must be > 0"):
        exchange_rate(HUMAN, WORSE, [0.0])


def test_crossings_of_two_known_curves():
    # FLOOR is better than WORSE at small D and worse at large D: they cross once
    (at,) = crossings(WORSE, FLOOR, 100, 1e6)
    assert WORSE.predict(at) == pytest.approx(FLOOR.predict(at), rel=1e-8)
    assert 1e3 < at < 1e5
    assert len(crossings(HUMAN, WORSE, 100, 1e5)) == 0  # human is better up to 1e5 pairs
    # ... but WORSE has the lower floor: it overtakes human at large D (as the paper's LLM
    # queries overtake human ones)
    (late,) = crossings(HUMAN, WORSE, 100, 1e7)
    assert 2e5 < late < 3e5 and WORSE.predict(2 * late) < HUMAN.predict(2 * late)
    with pytest.raises(ValueError, match="hi must be > lo"):
        crossings(HUMAN, WORSE, 10.0, 5.0)


def test_interval_comes_from_both_bootstraps_and_covers_the_truth():
    rng = np.random.default_rng(7)
    d = np.array(SIZES, dtype=float)
    noise = 0.02 * rng.standard_normal((2, len(d)))
    human = fit_data_law(d, HUMAN.predict(d) * np.exp(noise[0]), n_boot=100)
    worse = fit_data_law(d, WORSE.predict(d) * np.exp(noise[1]), n_boot=100)
    r = exchange_rate(human, worse, [1000, 8000, 32000], seed=3)
    truth = pairs_to_match(HUMAN, WORSE, r.D)
    assert r.n_draws == 100 and r.has_intervals
    assert np.all((r.lower <= truth) & (truth <= r.upper))
    assert np.all(r.lower < r.pairs) and np.all(r.pairs < r.upper)
    np.testing.assert_allclose(r.rate, r.pairs / r.D)


# ---------------------------------------------------------------- through fit_study
def test_fit_study_recovers_a_known_exchange_rate(study):
    _, fits = study
    assert fits["human"].exchange is None  # the reference itself
    ex = fits["human-noise0.5"].exchange
    assert ex.answered and ex.fixed == {"N": N} and ex.note == ""
    r = ex.quoted
    np.testing.assert_allclose(r.D, [1000, 64000])
    truth = pairs_to_match(HUMAN, WORSE, r.D)
    assert np.all((r.lower <= truth) & (truth <= r.upper)), (r.lower, truth, r.upper)
    np.testing.assert_allclose(r.pairs, truth, rtol=0.15)
    assert np.all(r.rate > 2) and np.all(r.rate < 3.5)
    assert len(ex.crossings) == 0  # a worse source everywhere
    text = fits["human-noise0.5"].describe()
    assert f"effective human data at N = {N:,}:" in text
    assert "D = 1,000 human pairs" in text and "human-noise0.5 pairs (" in text


def test_never_reaches_is_said_and_has_no_number(study):
    _, fits = study
    ex = fits["ict"].exchange
    assert ex.answered
    r = ex.quoted
    assert r.reaches.tolist() == [True, False]  # reaches 1,000 human pairs' CE, not 64,000's
    assert np.isinf(r.pairs[1]) and np.isinf(r.upper[1]) and r.reach_share[1] < 0.025
    line = next(x for x in fits["ict"].describe().splitlines() if "D = 64,000 human" in x)
    assert "never reached by ict (its floor" in line


def test_unusable_law_gives_one_line_and_no_number(study):
    _, fits = study
    ex = fits["crop"].exchange
    assert not ex.answered and ex.quoted is None
    assert ex.note.startswith(f"no rate at N = {N:,}: the crop data-size law is not usable")
    assert "3 points for 3 parameters" in ex.note
    lines = [x for x in fits["crop"].describe().splitlines() if "effective human data" in x]
    assert lines == [f"  effective human data from the laws: {ex.note}"]


def test_no_human_source_no_exchange():
    records = _records("ict", FLOOR) + _records("crop", WORSE)
    fits = fit_study(records, n_boot=0)
    assert all(f.exchange is None for f in fits.values())


def test_report_section_figure_and_fits_json(study, tmp_path):
    records, fits = study
    path = write_report(records, tmp_path / "r", n_boot=100, fits=fits)
    summary = path.read_text()
    assert "## Annotation quality: the exchange rate against human pairs" in summary
    assert "![exchange rate](exchange.png)" in summary and (tmp_path / "r/exchange.png").is_file()
    assert "| ict | N = 17,984 | 64,000 |" in summary and "never reaches (floor" in summary
    assert "- crop: no rate at N = 17,984: the crop data-size law is not usable" in summary
    payload = json.loads((tmp_path / "r" / "fits.json").read_text())["exchange"]
    assert payload["reference"] == "human" and set(payload["sources"]) == {
        "human-noise0.5",
        "ict",
        "crop",
    }
    ict = payload["sources"]["ict"]
    assert ict["answered"] and ict["quoted"]["reaches"] == [True, False]
    assert ict["quoted"]["pairs"][1] is None and ict["quoted"]["upper"][1] is None
    crop = payload["sources"]["crop"]
    assert crop["answered"] is False and "quoted" not in crop and "not usable" in crop["note"]


def test_report_without_any_rate_still_draws_and_says_why(study, tmp_path):
    records = [r for r in study[0] if r["source"] in ("human", "crop")]
    path = write_report(records, tmp_path / "r", n_boot=20)
    summary = path.read_text()
    assert "- crop: no rate at N = 17,984" in summary
    # no rate from the laws; the reading off the cells has no interval (no CE standard errors)
    assert "Measured, with no law" in summary and "no interval (the records carry no" in summary
    assert (tmp_path / "r" / "exchange.png").is_file()


def test_bm25_line_is_the_ce_where_the_metric_map_reaches_its_mrr():
    """The CE panel draws BM25 at the CE where the CE-to-MRR@10 map gives BM25's MRR@10, and
    nothing outside the CE range the map was fitted on."""
    from densescale.report.figures.exchange import _ce_of_metric
    from densescale.scaling import fit_metric_map

    ce = np.linspace(0.2, 4.0, 12)
    mrr = 1 / (1 + np.exp(1.5 * (ce - 1.0)))
    m = fit_metric_map(ce, mrr, kind="logistic", n_boot=0)
    at = _ce_of_metric(m, 0.5)
    assert at == pytest.approx(1.0, abs=0.01) and m.predict(at) == pytest.approx(0.5, abs=1e-3)
    assert _ce_of_metric(m, 0.99) is None  # above every fitted cell's MRR@10: no line
