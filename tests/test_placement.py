"""A model placed on a study's law (issue 21, item 3): its effective N from a usable law only
(the model-size law at the largest D, else the usable joint law's slice there), with an interval
from the law's bootstrap and the CE's standard error; the marked point on the loss-vs-N figure
(`densescale report --place`)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from _cli import run_cli

from densescale.eval.placement import place_on_law
from densescale.report import write_report
from densescale.report.figures import sizes as sizes_figure
from densescale.report.placements import place_record
from densescale.scaling import JointLaw, ModelSizeLaw

TRUE = ModelSizeLaw(A=3716.0, alpha=0.5234, delta=0.239)
SIZES = [4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000]
EVALUATED = {"split": "test", "num_negatives": 256, "num_queries": 500, "num_passages": 6000}


def _entry(kind: str, law, usable: bool, fixed: dict, fitted: dict, boot=None) -> dict:
    e = {"kind": kind, "fixed": fixed, "points": 7, "usable": usable, "params": law.params}
    e["fitted_range"] = fitted
    if boot is not None:
        e["bootstrap"] = boot
    if not usable:
        e["usability"] = "not usable: forecast check failed: 1/2 held-out cell(s) outside"
    return e


def _boot(law, rel: float, n: int = 200) -> list[list[float]]:
    """Parameter sets scattered around ``law`` by a relative ``rel`` (a stand-in bootstrap)."""
    rng = np.random.default_rng(0)
    base = np.array(list(law.params.values()))
    return (base * (1 + rel * rng.standard_normal((n, len(base))))).tolist()


def test_effective_n_inverts_a_known_model_size_law_with_its_interval():
    N = 2.5e5
    ce = float(TRUE.predict(N))
    entry = _entry("model", TRUE, True, {"D": 64000, "d": 128}, {"N": [3e3, 1.3e5]})
    fits = {"sources": {"human": {"model_size": [entry]}}}
    p = place_on_law(fits, ce, ce_stderr=0.001)
    assert p.usable and p.N == pytest.approx(N, rel=1e-9) and p.basis == "model-size law"
    lo, hi = p.interval
    assert lo < N < hi and hi / lo < 1.2  # the CE's own error only: narrow
    # the law's bootstrap widens it
    entry["bootstrap"] = _boot(TRUE, 0.02)
    lo2, hi2 = place_on_law(fits, ce, ce_stderr=0.001).interval
    assert lo2 < lo and hi2 > hi
    assert "1.92x beyond the largest fitted N" in p.describe()
    # no interval at all without a bootstrap and a standard error: said, not invented
    del entry["bootstrap"]
    assert place_on_law(fits, ce).interval is None
    assert "no interval" in place_on_law(fits, ce).describe()
    # at or below the floor: out of reach of any size
    assert math.isinf(place_on_law(fits, 0.2).N)


def test_the_usable_joint_law_answers_when_the_model_size_law_is_not():
    joint = JointLaw(A=1707.0, B=1173.0, alpha=2.223, beta=2.058, delta=0.0851)
    D, N = 12_800, 5.0e4
    ce = float(joint.predict(N, D))
    model = _entry("model", TRUE, False, {"D": D, "d": 128}, {"N": [3e3, 3.7e4]})
    fits = {
        "sources": {
            "human": {
                "model_size": [model],
                "joint": _entry(
                    "joint",
                    joint,
                    True,
                    {"d": 128},
                    {"N": [3e3, 3.7e4], "D": [1600, D * (1 - 1e-12)]},  # as exp(log D)
                    boot=_boot(joint, 0.01),
                ),
            }
        }
    }
    p = place_on_law(fits, ce, ce_stderr=0.002)
    assert p.usable and p.N == pytest.approx(N, rel=1e-9) and p.fixed == {"D": D, "d": 128}
    assert p.basis == "model-size slice of the joint law"
    assert p.interval[0] < N < p.interval[1]
    text = p.describe()
    assert "model-size slice of the joint law" in text and "forecast check failed" in text
    assert "D = 12,800" in text
    # neither law usable: the reason names both, and no number is given
    fits["sources"]["human"]["joint"]["usable"] = False
    bad = place_on_law(fits, ce, ce_stderr=0.002)
    assert not bad.usable and bad.N is None and bad.interval is None
    assert "model-size law at D = 12,800" in bad.reason and "joint law" in bad.reason
    assert bad.describe().startswith("effective N: not given (") and "e+" not in bad.describe()


def _records() -> list[dict]:
    rng = np.random.default_rng(1)
    return [
        {
            "model": f"L1-H{i}",
            "N": n,
            "D": 12_800,
            "d": 128,
            "source": "human",
            "ce": float(TRUE.predict(n) * (1 + 0.002 * rng.standard_normal())),
            "chance_ce": math.log(257),
            "converged": True,
            **EVALUATED,
        }
        for i, n in enumerate(SIZES)
    ]


def test_the_report_marks_a_placed_model_on_the_loss_vs_n_figure(tmp_path, monkeypatch):
    drawn = {}
    save = sizes_figure.save_figure

    def keep(fig, path, **kw):
        drawn[path.name] = fig
        return save(fig, path, **kw)

    monkeypatch.setattr(sizes_figure, "save_figure", keep)
    placed = [
        {"model": "all-MiniLM-L6-v2", "ce": float(TRUE.predict(1.0e5)), "ce_stderr": 0.003,
         **EVALUATED},
        # evaluated over the whole corpus: its CE is on another scale, so it is not placed
        {"model": "other", "ce": 0.3, "ce_stderr": 0.003, **EVALUATED, "num_passages": 15809},
    ]  # fmt: skip
    out = tmp_path / "report"
    summary = write_report(_records(), out, n_boot=40, seed=0, placed=placed).read_text()
    payload = json.loads((out / "fits.json").read_text())
    mini, other = payload["placements"]["human"]
    assert mini["usable"] and mini["N"] == pytest.approx(1.0e5, rel=0.1)
    assert not other["usable"] and "passages = 15,809" in other["reason"]
    ax = drawn["loss_vs_N_human.png"].axes[0]
    (bar,) = [c for c in ax.containers if type(c).__name__ == "ErrorbarContainer"]
    x, y = bar.lines[0].get_xdata(), bar.lines[0].get_ydata()
    assert x[0] == pytest.approx(mini["N"]) and y[0] == pytest.approx(mini["ce"])
    lo, hi = ax.get_xlim()
    assert lo < mini["interval"][0] and mini["interval"][1] < hi  # the whole bar is in view
    assert "all-MiniLM-L6-v2" in [t.get_text() for t in ax.texts]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("all-MiniLM-L6-v2: effective N 1") for t in legend)
    assert any(t.startswith("other not placed: evaluated with passages") for t in legend)
    assert "## Placed models: effective N" in summary and "`other` (human" in summary
    # without a usable law: no point, and the figure says why in its legend
    drawn.clear()
    write_report(_records()[:3], tmp_path / "few", n_boot=10, seed=0, placed=placed[:1])
    ax = drawn["loss_vs_N_human.png"].axes[0]
    assert not [c for c in ax.containers if type(c).__name__ == "ErrorbarContainer"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("all-MiniLM-L6-v2 not placed: the model-size law") for t in legend)


def test_cli_report_place_prints_the_answer_and_refuses_a_bad_record(tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    (study / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _records()))
    rec = tmp_path / "eval.json"
    rec.write_text(json.dumps({"model": "mini", "ce": float(TRUE.predict(1.0e5)), **EVALUATED}))
    r = run_cli("report", str(study / "results.jsonl"), "--n-boot", "20", "--no-curves",
                "--place", str(rec))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "[human] mini (CE" in r.stdout and "effective N = 1" in r.stdout
    # `densescale eval --fits` places through place_record, which checks the study's cells
    fits = study / "report" / "fits.json"
    ok = place_record(json.loads(rec.read_text()), fits)
    assert ok.usable and ok.N == pytest.approx(1.0e5, rel=0.1)
    other = place_record({"model": "m", "ce": 0.3, **EVALUATED, "num_queries": 3000}, fits)
    assert not other.usable and other.N is None and "queries = 3,000" in other.reason
    (tmp_path / "bad.json").write_text(json.dumps({"model": "x"}))
    r = run_cli("report", str(study / "results.jsonl"), "--place", str(tmp_path / "bad.json"))
    assert r.returncode != 0 and "bad.json" in r.stderr and "`ce`" in r.stderr
    assert "Traceback" not in r.stderr
