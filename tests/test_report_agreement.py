"""Agreement and noise as yardsticks (issue 17, item 5): the rank agreement of CE and the ranking
metrics per slice, the laws fitted in 1 - metric beside the CE law, and the seed spread of the
cells against the gaps between adjacent sizes, in describe(), summary.md and fits.json."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from densescale.report import YardstickOptions, fit_study, rank_agreement, write_report
from densescale.scaling import ModelSizeLaw

CHANCE = math.log(257)

# what users saw on SQuAD (D = 10,689): MRR@10 rises with N, CE does not
SQUAD = [
    ("L1-H8", 2_096, 4.539, 0.015),
    ("L1-H12", 3_704, 3.871, 0.051),
    ("L1-H16", 5_728, 3.902, 0.074),
    ("L1-H24", 11_024, 4.000, 0.098),
    ("L1-H32", 17_984, 3.793, 0.086),
    ("L1-H48", 36_896, 4.312, 0.120),
]


def squad_records() -> list[dict]:
    return [
        {
            "model": model,
            "N": n,
            "D": 10_689,
            "source": "squad",
            "seed": 0,
            "ce": ce,
            "metrics": {"mrr@10": mrr},
            "chance_ce": CHANCE,
            "converged": True,
        }
        for model, n, ce, mrr in SQUAD
    ]


LAW = ModelSizeLaw(A=3.2e4, alpha=0.53, delta=0.04)
SIZES = [512_128, 3_422_208, 13_266_176, 25_875_712, 86_235_648]


def _mrr(ce: float) -> float:
    return float(1.0 / (1.0 + np.exp(3.0 * (ce - 0.6))))


def law_records(seeds=(0, 1), jitter: float = 0.002, source: str = "human") -> list[dict]:
    """A model-size ladder at D = 10,000 that follows LAW, MRR@10 a monotone map of CE, with a
    small seed-to-seed jitter (far below the gaps between sizes)."""
    rng = np.random.default_rng(0)
    recs = []
    for n in SIZES:
        for s in seeds:
            ce = float(LAW.predict(n)) * float(np.exp(jitter * rng.standard_normal()))
            recs.append(
                {
                    "model": f"m{n}",
                    "N": n,
                    "D": 10_000,
                    "source": source,
                    "seed": s,
                    "ce": ce,
                    "metrics": {"mrr@10": _mrr(ce), "ndcg@10": min(1.0, 1.1 * _mrr(ce))},
                    "chance_ce": CHANCE,
                    "converged": True,
                }
            )
    return recs


def scifact_records() -> list[dict]:
    """Two seeds per cell (data orders) whose CE falls 0.243 nats apart (3.043 vs 3.286, as one
    SciFact cell did between two studies), while adjacent sizes differ by about 0.03."""
    means = [3.30, 3.25, 3.22, 3.19, 3.16]
    recs = []
    for (n, mean), model in zip(zip(SIZES, means), ["a", "b", "c", "d", "e"]):
        for s, shift in ((0, -0.1215), (1, 0.1215)):
            ce = mean + shift
            recs.append(
                {
                    "model": model,
                    "N": n,
                    "D": 919,
                    "source": "scifact",
                    "seed": s,
                    "ce": ce,
                    "metrics": {"mrr@10": _mrr(ce / 5)},
                    "chance_ce": CHANCE,
                    "converged": True,
                }
            )
    return recs


@pytest.fixture(scope="module")
def squad(tmp_path_factory):
    recs = squad_records()
    fits = fit_study(recs, n_boot=0)
    out = tmp_path_factory.mktemp("squad")
    write_report(recs, out, fits=fits, n_boot=0)
    return (
        fits["squad"],
        (out / "summary.md").read_text(),
        json.loads((out / "fits.json").read_text()),
    )


def test_squad_disagreement_is_flagged_in_describe(squad):
    fits, _, _ = squad
    lines = fits.describe().splitlines()
    flagged = [line for line in lines if line.lstrip().startswith("!!")]
    assert len(flagged) == 1
    line = flagged[0]
    assert line.startswith(
        "  !! model sizes at D = 10,689: CE and MRR@10 DISAGREE on the order of models "
        "(tau -0.07 < 0.5, 6 cells)"
    )
    assert "best by CE L1-H32 (CE 3.793" in line and "best by MRR@10 L1-H48 (CE 4.312" in line
    # the law in 1 - MRR@10 holds where the CE law does not (unfitted, or fitted but unusable)
    ce_r2, mrr_r2 = line.split("law R^2: CE ")[1].split(", 1 - MRR@10 ")
    assert ce_r2 == "law not fitted" or ce_r2.endswith("(not usable)")
    assert float(mrr_r2) > 0.9
    # one seed: the spread is said to be unknown, not left out
    assert "seed spread unknown (one run per cell)" in fits.describe()


def test_squad_disagreement_in_fits_json_and_summary(squad):
    _, summary, payload = squad
    src = payload["sources"]["squad"]
    (ag,) = src["rank_agreement"]["slices"]
    assert ag["kind"] == "model" and ag["fixed"] == {"D": 10_689} and ag["flagged"]
    mrr = ag["agreement"]["mrr@10"]
    assert mrr["tau"] == pytest.approx(-1 / 15) and mrr["cells"] == 6 and not mrr["agree"]
    assert 0 < mrr["p_value"] <= 1
    assert mrr["best_by_ce"] == "L1-H32" and mrr["best_by_metric"] == "L1-H48"
    assert src["rank_agreement"]["min_tau"] == 0.5
    (law,) = src["metric_laws"]["slices"]
    assert law["laws"]["mrr@10"]["transform"] == "1 - m" and law["laws"]["mrr@10"]["r2"] > 0.9
    assert law["ce_law_r2"] is None or law["ce_law_r2"] < 0.9
    assert src["seed_noise"]["known"] is False and src["seed_noise"]["cells"] == []
    assert "unknown" in src["seed_noise"]["summary"]

    assert "### Rank agreement of CE and the ranking metrics" in summary
    section = summary.split("### Rank agreement of CE and the ranking metrics")[1].split("\n### ")[
        0
    ]
    row = next(line for line in section.splitlines() if line.startswith("| model sizes at D"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:8] == [
        "model sizes at D = 10,689",
        "6",
        "MRR@10",
        "-0.07",
        cells[4],
        "L1-H32",
        "L1-H48",
        cells[7],
    ]
    assert cells[7] == "not fitted" or cells[7].endswith("(not usable)")
    assert float(cells[8].split()[0]) > 0.9 and cells[9] == "**!! disagree**"
    assert "- **!!** model sizes at D = 10,689: CE and MRR@10 DISAGREE" in section
    noise = summary.split("### Seed noise against the gaps between sizes")[1].split("\n### ")[0]
    assert "the seed spread is unknown" in noise


def test_agreeing_slices_with_resolved_sizes(tmp_path):
    recs = law_records()
    fits = fit_study(recs, n_boot=0)["human"]
    text = fits.describe()
    assert "!!" not in text
    assert (
        "  model sizes at D = 10,000: CE and MRR@10 agree on order (tau 1.00, 5 cells); "
        "CE and NDCG@10 agree on order (tau 1.00, 5 cells)" in text.splitlines()
    )
    assert "adjacent sizes resolved in all 1 slices" in text
    (s,) = fits.yardsticks.slices
    assert s.agree and s.resolved and s.ce_r2 > 0.99
    assert s.metric_laws["mrr@10"].r2 is not None
    # each cell reports its seed spread
    assert all(c.runs == 2 and 0 < c.ce_range < 0.05 for c in fits.yardsticks.spreads)

    write_report(recs, tmp_path, n_boot=0)
    summary = (tmp_path / "summary.md").read_text()
    assert "agree on the order of the cells in all 1 slices" in summary
    noise = summary.split("### Seed noise against the gaps between sizes")[1].split("\n### ")[0]
    assert "| m512128 | 512,128 | 10,000 | - | 2 |" in noise
    assert "| model sizes at D = 10,000 | CE (nats) |" in noise and "| resolved |" in noise
    payload = json.loads((tmp_path / "fits.json").read_text())["sources"]["human"]
    assert payload["seed_noise"]["known"] and len(payload["seed_noise"]["cells"]) == 5
    ce = payload["seed_noise"]["slices"][0]["quantities"]["ce"]
    assert ce["resolved"] and ce["unresolved"] == 0 and len(ce["adjacent"]) == 4


def test_seed_spread_larger_than_the_gap_is_flagged(tmp_path):
    recs = scifact_records()
    fits = fit_study(recs, n_boot=0)["scifact"]
    spread = {c.model: c for c in fits.yardsticks.spreads}
    assert spread["a"].ce_range == pytest.approx(0.243)
    assert spread["a"].ce_std == pytest.approx(0.243 / math.sqrt(2))
    assert "mrr@10" in spread["a"].metric_range and "mrr@10" in spread["a"].metric_std
    text = fits.describe()
    line = next(x for x in text.splitlines() if "adjacent sizes are not resolved:" in x)
    assert line.startswith("  !! model sizes at D = 919: CE and MRR@10 agree on order")
    assert "adjacent sizes are not resolved: seed spread 0.243 nats >= gap 0.03" in line
    assert "(N = 3,422,208 -> 13,266,176; 4 of 4 adjacent pairs)" in line
    assert "adjacent sizes are not resolved in MRR@10: seed spread 0.0363" in line
    assert "adjacent sizes not resolved in 1 of 1 slices" in text

    write_report(recs, tmp_path, fits={"scifact": fits}, n_boot=0)
    summary = (tmp_path / "summary.md").read_text()
    noise = summary.split("### Seed noise against the gaps between sizes")[1].split("\n### ")[0]
    assert "| a | 512,128 | 919 | - | 2 | 0.2430 | 0.1718 |" in noise
    assert "**!! adjacent sizes are not resolved: seed spread 0.243 nats >= gap 0.03" in noise
    payload = json.loads((tmp_path / "fits.json").read_text())["sources"]["scifact"]
    assert payload["seed_noise"]["median_spread"]["ce"] == pytest.approx(0.243)
    assert payload["seed_noise"]["slices"][0]["resolved"] is False


def test_thresholds_are_parameters():
    lenient = YardstickOptions(min_tau=-1.0, same_best=False)
    fits = fit_study(squad_records(), n_boot=0, yardsticks=lenient)["squad"]
    assert "!!" not in fits.describe()
    assert "CE and MRR@10 agree on order (tau -0.07, 6 cells; 8 of 15 pairs swapped: " in (
        fits.describe()
    )
    # a factor of 10 asks every gap to exceed ten times the spread: no longer resolved
    strict = fit_study(
        law_records(jitter=0.02), n_boot=0, yardsticks=YardstickOptions(resolve_factor=10.0)
    )
    assert not strict["human"].yardsticks.slices[0].resolved
    with pytest.raises(ValueError, match="min_tau"):
        YardstickOptions(min_tau=2.0)
    with pytest.raises(TypeError, match="yardsticks"):
        fit_study(squad_records(), n_boot=0, yardsticks={"min_tau": 0.5})


def test_rank_agreement_is_a_pure_function():
    a = rank_agreement([4.5, 3.9, 3.8], [0.1, 0.2, 0.3], metric="mrr@10", labels=["x", "y", "z"])
    assert a.agree and a.tau == pytest.approx(1.0) and a.best_by_ce == a.best_by_metric == "z"
    assert a.describe("models") == "CE and MRR@10 agree on order (tau 1.00, 3 cells)"
    flat = rank_agreement([4.5, 3.9, 3.8], [0.0, 0.0, 0.0], metric="ndcg@10")
    assert not flat.agree and math.isnan(flat.tau) and "orders nothing" in flat.reason
    with pytest.raises(ValueError, match="ce must hold >= 3 cells"):
        rank_agreement([1.0, 2.0], [0.2, 0.1])


def test_swapped_pairs_name_what_keeps_tau_below_one():
    """One adjacent pair ordered oppositely (the medquad-pretrained case: tau 0.87 over 6 sizes)
    is named in describe(), in the JSON and in the summary's verdict."""
    labels = ["L1-H8", "L1-H16", "L1-H32", "L1-H48", "L2-H32", "L2-H48"]
    ce = [0.30, 0.20, 0.21, 0.10, 0.15, 0.12]
    mrr = [0.60, 0.80, 0.81, 0.95, 0.86, 0.90]
    a = rank_agreement(ce, mrr, metric="mrr@10", labels=labels)
    assert a.agree and a.tau == pytest.approx(13 / 15)
    assert a.swapped == (("L1-H16", "L1-H32"),)
    assert a.describe("models") == (
        "CE and MRR@10 agree on order (tau 0.87, 6 cells; "
        "1 of 15 pairs swapped: L1-H16 by CE, L1-H32 by MRR@10)"
    )
    assert a.to_json()["swapped"] == [["L1-H16", "L1-H32"]]
    same = rank_agreement(ce, [-c for c in ce], labels=labels)
    assert same.swapped == () and same.swapped_text() == ""


def test_a_swap_within_the_seed_spread_is_not_evidence_of_disagreement():
    """The medquad-pretrained case with two seeds: the two largest sizes swap, by less than the
    seed spread in both CE and MRR@10. The swap is named as within the noise, tau over the
    pairs the noise resolves is 1, and the best cells count as the same."""
    labels = ["L1-H8", "L1-H12", "L1-H16", "L1-H24", "L1-H32", "L1-H48"]
    ce = [0.83, 0.33, 0.22, 0.12, 0.1085, 0.1102]
    mrr = [0.63, 0.81, 0.85, 0.89, 0.896, 0.900]
    plain = rank_agreement(ce, mrr, labels=labels)
    assert not plain.agree and "best by CE L1-H32" in plain.reason  # without the noise: flagged
    a = rank_agreement(ce, mrr, labels=labels, ce_noise=0.03, metric_noise=0.01)
    assert a.agree and a.tau == pytest.approx(plain.tau)  # tau itself is unchanged
    assert a.swapped == a.within_noise == (("L1-H32", "L1-H48"),)
    assert a.tau_resolved == pytest.approx(1.0)
    assert "L1-H32 by CE, L1-H48 by MRR@10 (within the seed spread); tau 1.00 over the pairs" in (
        a.describe("models")
    )
    assert a.to_json()["within_noise"] == [["L1-H32", "L1-H48"]]
    # a swap larger than the noise in both is a real one: counted against tau_resolved
    b = rank_agreement(ce, mrr, labels=labels, ce_noise=0.001, metric_noise=0.001)
    assert b.within_noise == () and b.tau_resolved == pytest.approx(13 / 15)
    with pytest.raises(ValueError, match="ce_noise and metric_noise must be given together"):
        rank_agreement(ce, mrr, ce_noise=0.1)
    with pytest.raises(ValueError, match="must be finite numbers >= 0"):
        rank_agreement(ce, mrr, ce_noise=-1.0, metric_noise=0.1)
