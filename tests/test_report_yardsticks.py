"""Yardsticks of a study in the fits and the report: chance, oracle, convergence, flags, the
seen-passage bias, lexical baselines, embedding dimensions, and training curves."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from densescale.report import fit_study, plot_training_curves, write_report
from densescale.scaling import JointLaw

TRUE = JointLaw(A=3.6e4, B=7.1e3, alpha=0.56, beta=1.31, delta=0.03)
SIZES = [512_128, 3_422_208, 13_266_176, 25_875_712, 86_235_648]
CHANCE = math.log(257)


def _ce(n, d_size, dim):
    return float(TRUE.predict(n, d_size) + (20.0 / dim) ** 0.9)


def _mrr(ce):
    return float(1.0 / (1.0 + np.exp(3.0 * (ce - 0.6))))


def make_records(seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    recs = []
    cells = [(n, d, 768) for n in SIZES for d in (3000, 10000, 30000)]
    cells += [(n, 10000, dim) for n in SIZES[1:] for dim in (64, 128, 256)]
    for n, d_size, dim in cells:
        ce = _ce(n, d_size, dim) * float(np.exp(0.003 * rng.standard_normal()))
        recs.append(
            {
                "model": f"m{n}",
                "N": n,
                "D": d_size,
                "d": dim,
                "source": "human",
                "ce": ce,
                "metrics": {"mrr@10": _mrr(ce), "ndcg@10": min(1.0, 1.1 * _mrr(ce))},
                "chance_ce": CHANCE,
                "oracle_ce": 0.02,
                "converged": True,
                "near_chance": False,
                "flags": [],
                "checkpoint": None,
            }
        )
    # the smallest model at D = 30,000 stopped at the step cap
    for r in recs:
        if r["N"] == SIZES[0] and r["D"] == 30000:
            r["converged"] = False
            r["flags"] = ["not_converged"]
    # a fine-tuned checkpoint that learned nothing, and memorised its training positives
    recs.append(
        {
            "model": "minilm",
            "N": 11_090_304,
            "D": 10000,
            "d": 768,
            "source": "human",
            "ce": 5.7,
            "metrics": {"mrr@10": 0.004, "ndcg@10": 0.006},
            "chance_ce": CHANCE,
            "converged": True,
            "checkpoint": "sentence-transformers/all-MiniLM-L6-v2",
            "seen_bias": {
                "mean_score_seen": 41.2,
                "mean_score_unseen": 30.5,
                "mean_score_positive": 33.1,
                "top10_seen_fraction": 0.9,
                "corpus_seen_fraction": 0.05,
                "decides_ranking": True,
            },
        }
    )
    return recs


@pytest.fixture(scope="module")
def all_fits():
    return fit_study(make_records(), n_boot=10, seed=0)


@pytest.fixture(scope="module")
def fitted(all_fits):
    return all_fits["human"]


def test_near_chance_and_unconverged_cells_are_left_out_with_a_note(all_fits, fitted):
    # the fine-tuned checkpoint is a family of its own; it is left out there
    fine = all_fits["human (fine-tuned)"]
    assert len(fitted.excluded) == 1 and len(fine.excluded) == 1
    notes = " ".join(fitted.excluded + fine.excluded)
    assert "minilm" in notes and "near chance" in notes and "has not learned to rank" in notes
    assert "not converged" in notes
    assert 11_090_304 not in set(fitted.N.astype(int))
    at_30k = next(o for o in fitted.model_fits if o.fixed == {"D": 30000, "d": 768})
    assert at_30k.n_points == 4 and len(at_30k.excluded) == 1
    assert at_30k.excluded_line() == "1 cell(s) left out: 1 not converged"
    everything = fit_study(make_records(), n_boot=0, include_unconverged=True)["human"]
    at_30k = next(o for o in everything.model_fits if o.fixed == {"D": 30000, "d": 768})
    assert at_30k.n_points == 5 and not at_30k.excluded and not everything.excluded
    fine = fit_study(make_records(), n_boot=0, include_unconverged=True)["human (fine-tuned)"]
    assert len(fine.excluded) == 1  # near chance is never fitted


def test_laws_are_fitted_per_embedding_dimension(fitted):
    assert fitted.main_dim == 768 and fitted.joint.fixed == {"d": 768}
    assert fitted.joint.law is not None and fitted.joint.law.alpha == pytest.approx(0.56, rel=0.1)
    dims = [o for o in fitted.dim_fits if o.law is not None]
    assert {(o.fixed["N"], o.fixed["D"]) for o in dims} == {(n, 10000) for n in SIZES[1:]}
    for o in dims:
        assert o.law.gamma == pytest.approx(0.9, rel=0.1)
    md = fitted.model_dim
    assert md is not None and md.law is not None and md.law.D == 10000
    assert fitted.allocation_dim is not None and fitted.allocation_dim.d > 0


def test_describe_shows_forecasts_and_exclusions(fitted):
    text = fitted.describe()
    lines = text.splitlines()
    assert lines[0].startswith("[human] ") and "1 left out" in lines[0] and "5.549" in lines[0]
    assert "forecast of N = 8.62e+07 from smaller N" in text
    assert "inside the 95% interval" in text
    assert "1 cell(s) left out: 1 not converged" in text
    assert "dimension at N = " in text and "MRR@10 ~ " in text
    assert len(lines) <= 16


def test_metric_map_fitted_over_every_cell(fitted):
    m = fitted.metric_maps["mrr@10"]
    # every cell of the study counts for the map, the fine-tuned near-chance one too
    assert len(m.ce) == len(fitted.metrics) + 1
    assert m.kind == "logistic" and m.params["c"] == pytest.approx(0.6, abs=0.05)
    v, lo, hi = fitted.in_metrics(0.5, 0.45, 0.55)["mrr@10"]
    assert lo < v < hi and v == pytest.approx(_mrr(0.5), abs=0.02)


@pytest.fixture(scope="module")
def report(tmp_path_factory, all_fits):
    out = tmp_path_factory.mktemp("yardsticks")
    study = out / "study"
    for i, name in enumerate(("m512128-D3000", "m3422208-D3000")):
        cell = study / "cells" / name
        cell.mkdir(parents=True)
        rows = [
            {
                "step": s,
                "loss": 3.0 / (1 + s / 50) + i,
                "lr": 1e-4,
                "tokens_per_s": 900.0,
                "elapsed": s / 10,
            }
            | ({"dev_ce": 2.5 / (1 + s / 60)} if s % 100 == 0 else {})
            for s in range(0, 501, 25)
        ]
        text = "\n".join(json.dumps(r) for r in rows) + '\n{"step": 52'  # half-written last line
        (cell / "metrics.jsonl").write_text(text)
    baselines = {"BM25": {"metrics": {"mrr@10": 0.187, "ndcg@10": 0.234}, "split": "test"}}
    path = write_report(
        make_records(),
        out / "report",
        fits=all_fits,
        n_boot=10,
        baselines=baselines,
        study_dir=study,
    )
    return out / "report", path.read_text(), study


def test_report_shows_cells_with_yardsticks_and_bm25(report):
    _, summary, _ = report
    row = next(line for line in summary.splitlines() if line.startswith("| minilm |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "sentence-transformers/all-MiniLM-L6-v2" and cells[3] == "768"
    assert "near chance" in cells[6] and cells[7] == "5.5491"
    assert "seen_passage_bias" in cells[-1] and "left out of fits" in cells[-1]
    bm25 = next(line for line in summary.splitlines() if line.startswith("| **BM25**"))
    assert "0.1870" in bm25 and "0.2340" in bm25 and "test split" in bm25
    assert "worse than chance: this model has not learned to rank" in summary
    assert "Seen-passage bias decides the ranking" in summary
    assert "training* positives above the *test* positives" in summary
    assert "| **no** |" in summary  # the unconverged cell is marked
    assert "Left out of the law fits" in summary


def test_report_shows_maps_forecasts_dimension_law_and_metrics(report):
    out, summary, _ = report
    assert "## From contrastive entropy to ranking metrics" in summary
    assert "### Forecast check" in summary and "| observed MRR@10 |" in summary
    assert "### Embedding-dimension law" in summary and "trade of d against N" in summary
    assert "### What the laws predict, in the metrics people quote" in summary
    budget = next(line for line in summary.splitlines() if line.startswith("| with inference"))
    assert budget.count("[") >= 2  # CE and MRR@10 intervals
    for name in (
        "metrics_vs_ce.png",
        "loss_vs_dim_human.png",
        "forecast_human.png",
        "training_curves.png",
        "loss_vs_N_human.png",
    ):
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name
        assert f"]({name})" in summary
    fits = json.loads((out / "fits.json").read_text())
    human = fits["sources"]["human"]
    assert human["chance_ce"] == pytest.approx(CHANCE) and human["oracle_ce"] == 0.02
    assert fits["baselines"]["BM25"]["metrics"]["mrr@10"] == 0.187
    assert fits["metric_maps"]["mrr@10"]["kind"] == "logistic"
    forecast = human["joint"]["forecast"]
    assert len(forecast["inside"]) == 3 and forecast["holdout"] == "N"
    assert all(lo < hi for lo, hi in zip(forecast["lower"], forecast["upper"]))
    assert any(o.get("params") for o in human["dimension"])


def test_training_curves_from_a_study_or_cell_folders(report, tmp_path):
    _, _, study = report
    path = plot_training_curves(study, tmp_path / "curves.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    cells = sorted((study / "cells").iterdir())
    assert plot_training_curves(cells[:1], tmp_path / "one.png").exists()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        plot_training_curves(bad, tmp_path / "bad.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no metrics.jsonl"):
        plot_training_curves(tmp_path / "empty", tmp_path / "x.png")


def test_bad_yardstick_values_are_named(tmp_path):
    recs = make_records()
    with pytest.raises(TypeError, match=r"records\[0\]\['converged'\]"):
        fit_study([{**recs[0], "converged": "yes"}] + recs[1:], n_boot=0)
    with pytest.raises(ValueError, match=r"records\[0\]\['d'\]"):
        fit_study([{**recs[0], "d": 0}] + recs[1:], n_boot=0)
    with pytest.raises(TypeError, match=r"records\[0\]\['flags'\]"):
        fit_study([{**recs[0], "flags": "near_chance"}] + recs[1:], n_boot=0)
    with pytest.raises(TypeError, match=r"baselines\['BM25'\]\['metrics'\]\['mrr@10'\]"):
        write_report(
            recs, tmp_path / "r", n_boot=0, baselines={"BM25": {"metrics": {"mrr@10": "x"}}}
        )
    assert not (tmp_path / "r").exists()


def test_a_study_where_every_cell_is_near_chance_still_reports(tmp_path):
    # issue 8: every cell above chance; the report must say so, not crash or fit noise
    recs = [
        {
            "model": f"m{n}",
            "N": n,
            "D": 5000,
            "source": "human",
            "ce": 7.0 + 0.1 * i,
            "chance_ce": CHANCE,
            "metrics": {"mrr@10": 0.001 * (i + 1)},
        }
        for i, n in enumerate(SIZES)
    ]
    fits = fit_study(recs, n_boot=5)["human"]
    assert len(fits.ce) == 0 and len(fits.excluded) == 5
    assert "0 cells (no law fitted), 5 left out" in fits.describe()
    summary = write_report(recs, tmp_path / "r", n_boot=5, fits={"human": fits}).read_text()
    assert summary.count("worse than chance: this model has not learned to rank") == 5
    assert (tmp_path / "r" / "loss_vs_N_human.png").exists()


def test_describe_says_why_a_law_was_not_fitted():
    """Two data sizes cannot carry a data-size law: the terminal summary says so, not just 'no fit'."""
    law = JointLaw(A=3.6e4, B=7.1e3, alpha=0.56, beta=1.31, delta=0.03)
    recs = [
        {"model": f"m{n}", "N": n, "D": d, "source": "human", "ce": float(law.predict(n, d))}
        for n in SIZES
        for d in (3000, 30000)
    ]
    text = fit_study(recs, n_boot=5)["human"].describe()
    assert "data-size: no fit (skipped: 2 data size(s), need 3)" in text


def test_report_fitting_its_own_records_labels_fine_tuned_families_once(tmp_path):
    # write_report without `fits` fits the records itself: the fine-tuned family keeps one label
    path = write_report(make_records(), tmp_path / "rep", n_boot=0, seed=0)
    names = [p.name for p in path.parent.iterdir()]
    assert not [n for n in names if "fine-tuned_fine-tuned" in n], names
    assert "fine-tuned) (fine-tuned" not in path.read_text()


def test_near_chance_cell_with_ranking_signal_is_not_called_noise(tmp_path):
    recs = make_records()
    (fine,) = [r for r in recs if r["checkpoint"]]
    path = write_report(recs, tmp_path / "noise", n_boot=0, seed=0)
    assert "Its ranking metrics are noise" in path.read_text()
    # the same CE, but MRR@10 is 3 standard errors above a random ranking's: signal
    fine["metrics_above_chance"] = {"mrr@10": True, "ndcg@10": False}
    text = write_report(recs, tmp_path / "signal", n_boot=0, seed=0).read_text()
    assert "its mrr@10 are clearly above a random ranking's" in text
    assert "Its ranking metrics are noise" not in text
