"""Report generation from a small set of result records drawn from a known joint law."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from densescale.report import fit_study, write_report
from densescale.scaling import CostModel, JointLaw

TRUE = JointLaw(A=3.6e4, B=7.1e3, alpha=0.56, beta=1.31, delta=0.03)
SHAPES = [(2, 128), (4, 256), (4, 512), (8, 512), (12, 768)]
D_VALUES = [1000, 3000, 10000, 30000, 100000]


def bert_n(layers: int, hidden: int) -> int:
    return layers * (12 * hidden**2 + 13 * hidden) + (hidden**2 + hidden) + (768 * hidden + 768)


def make_records(seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    records = []
    for source, factor, runs in (("human", 1.0, 2), ("ict", 1.5, 1)):
        # the second source on a smaller grid (keeps the test fast; still every law)
        shapes = SHAPES if source == "human" else SHAPES[2:]
        for layers, hidden in shapes:
            n = bert_n(layers, hidden)
            for d in D_VALUES if source == "human" else D_VALUES[2:]:
                for _ in range(runs):
                    ce = float(TRUE.predict(n, d) * factor * (1 + 0.005 * rng.standard_normal()))
                    records.append(
                        {
                            "model": f"bert-L{layers}-H{hidden}",
                            "N": n,
                            "D": d,
                            "source": source,
                            "ce": ce,
                            "metrics": {"mrr@10": 0.2 + 0.01 * layers},
                            "seed": _,
                        }
                    )
    # a source with too few points for any fit, and one whose model-size fit must fail
    records.append({"model": "a", "N": 10**6, "D": 1000, "source": "crop", "ce": 2.0})
    records.append({"model": "b", "N": 10**7, "D": 1000, "source": "crop", "ce": 1.5})
    for n in (10**6, 10**7, 10**8, 10**9):  # a pure power law: no irreducible term
        ce = float((3e4 / n) ** 0.5)
        records.append({"model": f"m{n}", "N": n, "D": 5000, "source": "powerlaw", "ce": ce})
    return records


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "study"
    records = make_records()
    fits = fit_study(records, n_boot=12, seed=0)  # fitted once, printed, then reported
    text = fits["human"].describe()
    assert "joint: L(N, D) = [(" in text and "budget $" in text
    path = write_report(records, out, oracle_ce={"human": 0.03}, n_boot=12, seed=0, fits=fits)
    return out, path, path.read_text()


def _table_row(summary: str, section: str, startswith: str) -> list[str]:
    body = summary.split(f"## Source `{section}`", 1)[1].split("\n## ", 1)[0]
    for line in body.splitlines():
        if line.startswith(startswith):
            return [c.strip() for c in line.strip("|").split("|")]
    raise AssertionError(f"no row starting {startswith!r} in section {section}")


def _value(cell: str) -> float:
    return float(cell.split(" [")[0])


def test_report_files_exist_and_are_linked(report):
    out, path, summary = report
    assert path == out / "summary.md"
    for name in ("human", "ict"):
        for kind in ("loss_vs_N", "loss_vs_D", "residuals"):
            data = (out / f"{kind}_{name}.png").read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "budget_human.png").read_bytes()[:4] == b"\x89PNG"
    # the ict joint law (9 cells, 5 parameters) leaves its floor unidentified (a delta interval
    # spanning several decades): not usable, so no budget answer and no budget figure (SPEC 7)
    assert not (out / "budget_ict.png").exists()
    ict = summary.split("## Source `ict`", 1)[1].split("\n## ", 1)[0]
    assert "no budget answer: the joint law (paper form) is not usable" in ict
    assert (out / "sources.png").exists() and (out / "fits.json").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    for link in re.findall(r"\]\(([^)]+)\)", summary):
        assert (out / link).exists(), link


def test_summary_holds_the_fitted_joint_law(report):
    out, _, summary = report
    fits = json.loads((out / "fits.json").read_text())["sources"]["human"]["joint"]
    row = _table_row(summary, "human", "| `L(N, D) = [(A/N)")
    alpha, beta, delta = _value(row[4]), _value(row[5]), _value(row[6])
    assert alpha == pytest.approx(fits["params"]["alpha"], rel=1e-3)
    assert alpha == pytest.approx(0.56, rel=0.08)
    assert beta == pytest.approx(1.31, rel=0.03)
    assert delta == pytest.approx(0.03, rel=0.15)
    assert float(row[7]) > 0.999  # R^2
    assert "held out N" in row[8]
    lo, hi = fits["ci"]["beta"]
    assert lo < fits["params"]["beta"] < hi
    # the worse source (1.5x the loss, so 1.5x the floor) is fitted with a higher floor
    ict = json.loads((out / "fits.json").read_text())["sources"]["ict"]["joint"]["params"]
    assert ict["delta"] > fits["params"]["delta"]


def test_summary_per_size_fits_seeds_and_oracle(report):
    _, _, summary = report
    row = _table_row(summary, "human", "| 100,000 |")  # model-size law at D = 1e5
    assert row[1] == "5" and float(row[5]) > 0.99
    measured = _table_row(summary, "human", "| bert-L2-H128 | - | 512,128 | - | 1,000 |")
    assert measured[5] == "2"  # two seeds averaged into one cell
    oracle_row = _table_row(summary, "human", "| joint law (paper form) |")
    assert float(oracle_row[2]) == pytest.approx(0.03)
    assert float(oracle_row[3]) == pytest.approx(_value(oracle_row[1]) - 0.03, abs=2e-4)
    budget = _table_row(summary, "human", "| with inference cost |")
    without = _table_row(summary, "human", "| without inference cost |")
    assert float(budget[1]) < float(without[1])  # inference cost: a smaller model


def test_too_few_points_and_fit_errors_are_noted_not_raised(report):
    _, _, summary = report
    crop = summary.split("## Source `crop`", 1)[1].split("\n## ", 1)[0]
    assert "skipped: 2 model size(s), need 3" in crop
    assert "no joint law could be fitted" in crop
    powerlaw = summary.split("## Source `powerlaw`", 1)[1].split("\n## ", 1)[0]
    # a pure power law (floor pinned at its lower bound) is kept as a boundary fit, flagged
    assert "delta at its lower bound" in powerlaw and "pure power law" in powerlaw


def test_budget_given_and_infeasible():
    records = [
        r for r in make_records() if r["source"] == "human" and r["D"] >= 3000 and r["N"] > 10**6
    ]
    fits = fit_study(records, cost=CostModel(), budget=2e5, n_boot=0)["human"]
    assert fits.allocation.cost.total == pytest.approx(2e5, rel=1e-6)
    tiny = fit_study(records, budget=1.0, n_boot=0)["human"]
    assert tiny.allocation is None and "infeasible" in tiny.budget_note


@pytest.mark.parametrize(
    "mutate, error, match",
    [
        (lambda rs: [], ValueError, "must not be empty"),
        (lambda rs: {"a": 1}, TypeError, "list of dicts"),
        (lambda rs: rs[:3] + [{**rs[3], "ce": -0.1}], ValueError, r"records\[3\]\['ce'\]"),
        (
            lambda rs: rs[:2] + [{k: v for k, v in rs[2].items() if k != "D"}],
            ValueError,
            r"records\[2\] is missing the key 'D'",
        ),
        (lambda rs: [{**rs[0], "N": 1.5e6}], ValueError, r"records\[0\]\['N'\]"),
        (lambda rs: [{**rs[0], "source": ""}], TypeError, "source"),
        (lambda rs: [{**rs[0], "metrics": {"mrr": "high"}}], TypeError, "metrics"),
    ],
)
def test_bad_records_fail_before_anything_is_written(tmp_path, mutate, error, match):
    out = tmp_path / "never"
    with pytest.raises(error, match=match):
        write_report(mutate(make_records()), out, n_boot=0)
    assert not out.exists()


def test_bad_options(tmp_path):
    records = make_records()[:5]
    with pytest.raises(ValueError, match="oracle_ce"):
        write_report(records, tmp_path / "r", oracle_ce=-1.0)
    with pytest.raises(TypeError, match="cost"):
        fit_study(records, cost={"dollars_per_annotation": 1})
    with pytest.raises(ValueError, match="fits covers sources"):
        write_report(records, tmp_path / "r", fits={})
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="out_dir"):
        write_report(records, tmp_path / "file")


def test_dimension_law_of_one_encoder_whose_n_grows_with_its_head():
    """N counts the projection (SPEC 1.2), so one encoder at four d has four N: the dimension
    law must still see them as one slice (grouped by model), not four single points."""
    recs = []
    for d in (8, 16, 32, 128):
        ce = (12.0 / d) ** 0.9 + 2.1
        recs.append(
            {
                "model": "L1-H64",
                "N": 50_000 + 65 * d,
                "D": 8000,
                "d": d,
                "source": "human",
                "ce": ce,
                "metrics": {},
                "converged": True,
            }
        )
    fits = fit_study(recs, n_boot=0)["human"]
    (o,) = [o for o in fits.dim_fits if o.law is not None]
    assert o.n_points == 4 and o.fixed == {"N": 50_000 + 65 * 128, "D": 8000}
    assert o.law.gamma == pytest.approx(0.9, rel=0.05)
