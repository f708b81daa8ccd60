"""The exchange rate read off the measured cells, with no law (densescale.scaling.
measured_exchange): a known shift between two sources is recovered inside the measured range,
censored outside it, noise in the cells is smoothed, and fit_study / write_report carry it beside
the law-based rate, also where the laws are not usable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from densescale.report import fit_study, write_report
from densescale.scaling import DataSizeLaw, MeasuredExchange, measured_exchange

HUMAN = DataSizeLaw(B=2000.0, beta=0.8, delta=0.3)
SIZES = np.array([1000, 2000, 4000, 8000, 16000, 32000, 64000], dtype=float)
N = 17_984


def _shifted(factor: float, D) -> np.ndarray:
    """A source that needs ``factor`` times the human pairs for the same CE: L_S(D) = L_H(D/f)."""
    return HUMAN.predict(np.asarray(D, dtype=float) / factor)


def test_a_known_shift_is_recovered_inside_the_range_and_censored_outside():
    h = HUMAN.predict(SIZES)
    s = _shifted(3.0, SIZES)
    m = measured_exchange(SIZES, h, SIZES, s)
    assert isinstance(m, MeasuredExchange) and m.lower is None and m.n_draws == 0
    inside = SIZES * 3 <= SIZES.max()
    assert m.status == tuple("reached" if ok else "not reached" for ok in inside)
    # straight lines in log-log between cells of a power law + floor: within a few per cent
    np.testing.assert_allclose(m.rate[inside], 3.0, rtol=0.05)
    assert np.all(np.isnan(m.pairs[~inside]))
    np.testing.assert_allclose(m.loss, h, rtol=1e-12)
    assert "not reached by ict within its 64,000 measured pairs" in m.text(6, source="ict")
    # the other way round: the better source reaches human's first CE with fewer pairs than its
    # smallest measured D
    back = measured_exchange(SIZES, s, SIZES, h)
    assert back.status[:2] == ("at most", "at most") and "or fewer" in back.text(0)  # D/3 < 1,000
    np.testing.assert_allclose(back.rate[2:], 1 / 3, rtol=0.05)


def test_the_interval_covers_the_truth_and_says_what_it_covers():
    rng = np.random.default_rng(0)
    se = 0.02
    h = HUMAN.predict(SIZES) * np.exp(se * rng.standard_normal(len(SIZES)))
    s = _shifted(2.0, SIZES) * np.exp(se * rng.standard_normal(len(SIZES)))
    m = measured_exchange(
        SIZES, h, SIZES, s, D=[2000, 8000], reference_se=se * h, source_se=se * s, n_boot=400
    )
    assert m.n_draws == 400 and m.status == ("reached", "reached")
    truth = 2.0 * m.D
    assert np.all((m.lower <= truth) & (truth <= m.upper)), (m.lower, m.upper)
    assert np.all(m.lower < m.pairs) and np.all(m.pairs < m.upper)
    assert "one training seed per cell, so the seed spread is not in it" in m.interval_note
    assert "[" in m.text(0) and m.text(0).endswith(f"source pairs ({m.rate[0]:.3g}x)")


def test_a_rise_between_cells_is_smoothed_and_bad_input_is_named():
    h = HUMAN.predict(SIZES)
    s = _shifted(2.0, SIZES)
    s[3] = s[2] * 1.1  # noise: more data, higher CE
    m = measured_exchange(SIZES, h, SIZES, s)
    ok = np.array([st == "reached" for st in m.status])
    assert ok[:4].all() and np.all(np.diff(m.pairs[ok]) > 0)  # still monotone in D
    with pytest.raises(ValueError, match="within the reference's measured range"):
        measured_exchange(SIZES, h, SIZES, s, D=[500])
    with pytest.raises(ValueError, match="source_D and source_ce must have the same length"):
        measured_exchange(SIZES, h, SIZES[:3], s)
    with pytest.raises(ValueError, match="source_se must be 7 finite numbers >= 0"):
        measured_exchange(SIZES, h, SIZES, s, reference_se=0.01 * h, source_se=-s)
    with pytest.raises(ValueError, match=r"reference_ce must be > 0, got min -"):
        measured_exchange(SIZES, -h, SIZES, s)
    with pytest.raises(ValueError, match="source_D must not repeat a size"):
        measured_exchange(SIZES, h, [1000, 1000, 2700], [1.5, 0.2, 0.6])
    with pytest.raises(ValueError, match="must be given together"):
        measured_exchange(SIZES, h, SIZES, s, reference_se=0.01 * h)


def _records(source: str, ce, sizes=SIZES) -> list[dict]:
    return [
        {"model": "L1-H32", "N": N, "D": int(d), "source": source, "ce": float(c),
         "ce_stderr": 0.01 * float(c), "chance_ce": float(np.log(257))}
        for d, c in zip(sizes, ce)
    ]  # fmt: skip


def test_fit_study_and_the_report_carry_the_measured_rate(tmp_path):
    # human keeps falling with no floor in sight (a pure power law: its delta sits on its
    # bound, so no law-based rate), and a source at half the value of a pair
    pure = DataSizeLaw(B=2000.0, beta=0.5, delta=1e-9)
    records = _records("human", pure.predict(SIZES)) + _records(
        "human-noise0.5", pure.predict(SIZES / 2.0)
    )
    fits = fit_study(records, n_boot=50, seed=0)
    ex = fits["human-noise0.5"].exchange
    assert not ex.answered and "human data-size law is not usable" in ex.note
    m = ex.measured
    assert m is not None and m.lower is not None
    reached = np.array([st == "reached" for st in m.status])
    np.testing.assert_allclose(m.rate[reached], 2.0, rtol=0.03)
    assert np.all((m.lower[reached] <= 2 * m.D[reached]) & (2 * m.D[reached] <= m.upper[reached]))
    # what the source's most pairs are worth in human pairs: half of them
    assert ex.worth.D.tolist() == [64000.0] and ex.worth.pairs[0] == pytest.approx(32000, rel=0.03)
    text = fits["human-noise0.5"].describe()
    assert f"measured at N = {N:,} (read off the cells, no law" in text
    assert "D = 1,000 human pairs (CE" in text and "human-noise0.5 pairs (2" in text
    assert "64,000 human-noise0.5 pairs (CE" in text and "are worth ~ 32," in text
    path = write_report(records, tmp_path / "r", n_boot=50, fits=fits)
    summary = path.read_text()
    assert (
        "Measured, with no law" in summary and "| human-noise0.5 | N = 17,984 | 1,000 |" in summary
    )
    payload = json.loads((tmp_path / "r" / "fits.json").read_text())["exchange"]["sources"]
    measured = payload["human-noise0.5"]["measured"]
    assert measured["status"][0] == "reached" and measured["rate"][0] == pytest.approx(2, rel=0.03)
    assert measured["status"][-1] == "not reached" and measured["pairs"][-1] is None
    assert measured["worth"]["pairs"][0] == pytest.approx(32000, rel=0.03)
